#if DEBUG
import Synchronization

/// Debug builds only (the tests): how many objects of some per-connection classes are alive —
/// `HTTP2RouteHandler`, `HTTP2RouteStream`, `NIOBackendConnection` —, so a test can show that
/// the strong references that replaced weak ones (a weak reference puts every retain and
/// release of its object on the runtime's slow path; see docs/httproute.md, *Hot-path
/// notes*) leave no cycle behind once the connections close.
enum LiveObjects {
    private static let counts = Mutex<[String: Int]>([:])

    static func add(_ type: String, _ delta: Int) {
        counts.withLock { $0[type, default: 0] += delta }
    }

    static func count(_ type: String) -> Int {
        counts.withLock { $0[type] ?? 0 }
    }

    /// A stored property of a counted object: counts it while it lives.
    final class Token {
        let type: String

        init(_ type: String) {
            self.type = type
            LiveObjects.add(type, 1)
        }

        deinit { LiveObjects.add(type, -1) }
    }
}
#endif
