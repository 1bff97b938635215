import CNice
import Synchronization

/// Live agent cores keyed by the integer id handed to libnice as callback user data.
///
/// A libnice callback turns its user data back into an id and looks the core up here; an agent
/// removed at close is simply not found, so a late callback does nothing.
enum AgentRegistry {
    private static let live = Mutex<[Int: AgentCore]>([:])
    private static let counter = Atomic<Int>(0)

    static func newID() -> Int { counter.add(1, ordering: .relaxed).newValue }

    static func register(_ core: AgentCore) { live.withLock { $0[core.id] = core } }

    static func remove(_ id: Int) { _ = live.withLock { $0.removeValue(forKey: id) } }

    static func lookup(_ data: gpointer?) -> AgentCore? {
        let id = Int(bitPattern: data)
        return live.withLock { $0[id] }
    }

    static var count: Int { live.withLock { $0.count } }

    static func userData(_ id: Int) -> gpointer? { gpointer(bitPattern: id) }
}
