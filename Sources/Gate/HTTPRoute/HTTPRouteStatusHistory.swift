import Foundation
import Glibc
import Logging
import Synchronization

/// What the status needs to know of an object's generation: `metadata.generation` when the
/// manifest has one, and a digest of its `spec` (to notice changes across reloads when not).
public struct ObjectGeneration: Sendable, Equatable {
    /// `metadata.generation` (≥ 1), nil when the manifest has none.
    public var declared: Int?
    /// `spec` with its mappings' keys sorted, as text: equal for equal specs.
    public var specDigest: String

    /// A canonical text of a YAML value as Yams loads it (mappings with sorted keys, lists,
    /// scalars with their type), so two specs compare equal exactly when their content does.
    static func digest(_ value: Any) -> String {
        switch value {
        case let map as [String: Any]:
            return "{" + map.keys.sorted().map { "\($0.debugDescription):\(digest(map[$0]!))" }.joined(separator: ",") + "}"
        case let list as [Any]:
            return "[" + list.map(digest).joined(separator: ",") + "]"
        case let text as String:
            return text.debugDescription
        case is NSNull:
            return "null"
        default:
            return "\(type(of: value))(\(value))"
        }
    }
}

/// Gateway API status bookkeeping across reloads (ugate has no API server to keep it): each
/// object's generation and each condition's `lastTransitionTime`.
///
/// * `observedGeneration` on every condition of an object: its `metadata.generation` when
///   the manifest has one, else a counter that starts at 1 and is bumped on every reload that
///   changes the object's `spec`;
/// * `lastTransitionTime` (RFC 3339, seconds): when the condition last changed `status`
///   (True / False / Unknown) as seen by `stamp` — at a reload, a reload tick or a status
///   request; a changed reason or message alone keeps the time.
///
/// Objects and conditions that disappear are forgotten (one that comes back starts afresh).
///
/// With a `file` (the running node: `httproute-status.json` in its state directory) the
/// history survives restarts: it is read at start and written whenever a counter or a
/// condition's status changes — a JSON object (`version`, `objects`: key → spec digest and
/// counter, `conditions`: key → status and `since` in seconds since 1970) written to a
/// temporary file next to it and renamed over it, so a crash leaves the old or the new file,
/// never half of one. A file that cannot be read or decoded is logged (warning) and the history
/// starts afresh (and replaces it on the next write).
public final class StatusHistory: Sendable {
    private struct Seen: Codable, Equatable {
        var digest: String
        var counter: Int
    }

    private struct Condition: Codable, Equatable {
        var status: String
        var since: Date
    }

    private struct State: Codable {
        var version = 1
        var objects: [String: Seen] = [:]
        var conditions: [String: Condition] = [:]
    }

    private let state: Mutex<State>
    private let file: String?
    private let log: Logger
    /// Bumped under `state`'s lock on every change; a write of an older snapshot is skipped.
    private let changes = Mutex(0)
    private let written = Mutex(0)

    /// - Parameters:
    ///   - file: where the history is kept across restarts (nil: in memory only).
    ///   - log: where a file that cannot be read or written is reported.
    public init(file: String? = nil, log: Logger = Logger(label: "ugate.httproute")) {
        self.file = file
        self.log = log
        state = Mutex(Self.load(file, log: log))
    }

    /// The saved history of `file`; empty when there is none, or (logged) when it is unusable.
    private static func load(_ file: String?, log: Logger) -> State {
        guard let file, FileManager.default.fileExists(atPath: file) else { return State() }
        do {
            let decoder = JSONDecoder()
            decoder.dateDecodingStrategy = .secondsSince1970
            let saved = try decoder.decode(State.self, from: Data(contentsOf: URL(fileURLWithPath: file)))
            guard saved.version == 1 else { throw GateError(.config, "unknown version \(saved.version)") }
            return saved
        } catch {
            log.warning("httproute status history not readable, starting afresh", metadata: ["file": "\(file)", "error": "\(error)"])
            return State()
        }
    }

    /// Writes `snapshot` (change number `change`) atomically: temporary file, then `rename`.
    private func save(_ snapshot: State, change: Int) {
        guard let file else { return }
        written.withLock { last in
            guard change > last else { return }
            let encoder = JSONEncoder()
            encoder.dateEncodingStrategy = .secondsSince1970
            encoder.outputFormatting = [.sortedKeys]
            let temporary = file + ".tmp"
            do {
                try encoder.encode(snapshot).write(to: URL(fileURLWithPath: temporary))
                guard rename(temporary, file) == 0 else { throw GateError(.syscall, "rename \(temporary) to \(file)", errno: errno) }
                last = change
            } catch {
                log.warning("httproute status history not saved", metadata: ["file": "\(file)", "error": "\(error)"])
            }
        }
    }

    /// Runs `body` on the state under its lock; saves it afterwards when it changed.
    private func update(_ body: (inout State) -> Void) {
        let (snapshot, change): (State?, Int) = state.withLock { state in
            let before = (state.objects, state.conditions)
            body(&state)
            guard file != nil, before.0 != state.objects || before.1 != state.conditions else { return (nil, 0) }
            return (state, changes.withLock { n in
                n += 1
                return n
            })
        }
        if let snapshot { save(snapshot, change: change) }
    }

    /// Notes the objects of a newly loaded set of manifests (bumps the counter of each object
    /// whose spec changed since the previous set).
    public func observe(_ manifests: RouteManifests) {
        update { state in
            var objects: [String: Seen] = [:]
            for (key, generation) in manifests.generations {
                let previous = state.objects[key]
                let counter = previous.map { $0.digest == generation.specDigest ? $0.counter : $0.counter + 1 } ?? 1
                objects[key] = Seen(digest: generation.specDigest, counter: counter)
            }
            state.objects = objects
        }
    }

    /// `report` (computed from `manifests`) with `observedGeneration` and `lastTransitionTime`
    /// on every condition; a condition whose status differs from the last one stamped (or that
    /// is new) transitions at `now`.
    public func stamp(_ report: HTTPRouteStatusReport, manifests: RouteManifests, now: Date = Date()) -> HTTPRouteStatusReport {
        var report = report
        update { state in
            var conditions: [String: Condition] = [:]
            func stamp(_ list: inout [RouteCondition], object: String, scope: String, generation: Int) {
                for c in list.indices {
                    let key = "\(object)|\(scope)|\(list[c].type)"
                    var seen = state.conditions[key] ?? Condition(status: list[c].status, since: now)
                    if seen.status != list[c].status { seen = Condition(status: list[c].status, since: now) }
                    conditions[key] = seen
                    list[c].observedGeneration = generation
                    list[c].lastTransitionTime = Self.format(seen.since)
                }
            }
            func generation(_ object: String) -> Int {
                manifests.generations[object]?.declared ?? state.objects[object]?.counter ?? 1
            }
            for g in report.gateways.indices {
                let object = "Gateway \(report.gateways[g].namespace)/\(report.gateways[g].name)"
                let number = generation(object)
                stamp(&report.gateways[g].conditions, object: object, scope: "", generation: number)
                for l in report.gateways[g].listeners.indices {
                    let scope = "listener \(report.gateways[g].listeners[l].name)"
                    stamp(&report.gateways[g].listeners[l].conditions, object: object, scope: scope, generation: number)
                }
            }
            for r in report.routes.indices {
                let object = "\(report.routes[r].kind) \(report.routes[r].namespace)/\(report.routes[r].name)"
                let number = generation(object)
                for p in report.routes[r].parents.indices {
                    let scope = "parent \(report.routes[r].parents[p].parent)"
                    stamp(&report.routes[r].parents[p].conditions, object: object, scope: scope, generation: number)
                }
            }
            for p in report.policies.indices {
                let object = "\(report.policies[p].kind) \(report.policies[p].namespace)/\(report.policies[p].name)"
                let number = generation(object)
                for a in report.policies[p].ancestors.indices {
                    let scope = "ancestor \(report.policies[p].ancestors[a].ancestor)"
                    stamp(&report.policies[p].ancestors[a].conditions, object: object, scope: scope, generation: number)
                }
            }
            state.conditions = conditions
        }
        return report
    }

    /// RFC 3339 in UTC with seconds, as Kubernetes writes `metav1.Time`. A format style (a value),
    /// not an `ISO8601DateFormatter` made per call: the reload timer stamps every condition once a
    /// second, and making a formatter each time cost about 0.4 M instructions a second at rest.
    static func format(_ date: Date) -> String {
        date.formatted(Date.ISO8601FormatStyle())
    }
}
