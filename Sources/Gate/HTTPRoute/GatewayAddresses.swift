import CLinux
import Dispatch
import Glibc
import Synchronization

/// What the configured listeners serving a Gateway bind, from its `spec.addresses`: each
/// `IPAddress` as it is, each `Hostname` as its latest lookup answered (`getaddrinfo`, as the
/// node's resolver answers: `/etc/hosts`, DNS, mDNS when configured; looked up off the reload
/// queue by `GatewayHostnameLookups`) to the addresses it names that belong to this node (an
/// interface's, `getifaddrs`; loopback included). A Hostname that does not resolve, names no
/// address of this node, or whose first lookup is still running gives nothing to bind and a
/// problem for the Gateway's status (`Programmed: False`, `AddressNotAssigned` /
/// `AddressNotUsable` / `Pending`).
struct GatewayBindAddresses: Equatable, Sendable {
    /// The IP addresses to bind, in order, once each.
    var hosts: [String]
    /// Why a Hostname gives nothing to bind.
    var problems: [AddressProblem] = []

    /// One Hostname that gives nothing to bind: the Gateway API's reason
    /// (`AddressNotAssigned`: it does not resolve; `AddressNotUsable`: no address it resolves
    /// to is this node's; `Pending`: its first lookup has not answered yet) and a message
    /// naming it.
    struct AddressProblem: Equatable, Sendable {
        var reason: String
        var message: String
    }

    /// A name's addresses, or why it does not resolve.
    typealias Resolver = @Sendable (String) -> Result<[String], ResolveError>

    struct ResolveError: Error, Equatable {
        var message: String
    }

    /// `ips` as they are, then the local addresses of each of `hostnames`; `resolve` gives a
    /// name's answer (nil: its first lookup has not answered yet) — the node's resolver,
    /// blocking, unless given (the service gives its `GatewayHostnameLookups`' answers, tests
    /// their own); `local` gives the node's interface addresses (given for tests). Every
    /// address of 127.0.0.0/8 is this node's: Linux routes that whole net to `lo`.
    static func resolve(
        ips: [String], hostnames: [String], resolve: (String) -> Result<[String], ResolveError>? = { GatewayBindAddresses.getaddrinfo($0) },
        local: () -> Set<String> = GatewayBindAddresses.interfaceAddresses
    ) -> GatewayBindAddresses {
        var result = GatewayBindAddresses(hosts: ips)
        guard !hostnames.isEmpty else { return result }
        let own = local()
        for hostname in hostnames {
            switch resolve(hostname) {
            case nil:
                result.problems.append(AddressProblem(reason: "Pending", message: "Hostname \(hostname) is being resolved"))
            case .failure(let error):
                result.problems.append(AddressProblem(reason: "AddressNotAssigned", message: "Hostname \(hostname) does not resolve: \(error.message)"))
            case .success(let addresses):
                let usable = addresses.filter { own.contains($0) || $0.hasPrefix("127.") }
                guard !usable.isEmpty else {
                    result.problems.append(
                        AddressProblem(
                            reason: "AddressNotUsable",
                            message: "Hostname \(hostname) resolves to \(addresses.joined(separator: ", ")): no address of this node"))
                    continue
                }
                for address in usable where !result.hosts.contains(address) { result.hosts.append(address) }
            }
        }
        return result
    }

    /// The node's resolver: the IPv4 and IPv6 addresses of `hostname`, in its order, once each.
    static let getaddrinfo: Resolver = { hostname in
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        let status = Glibc.getaddrinfo(hostname, nil, &hints, &list)
        guard status == 0 else { return .failure(ResolveError(message: String(cString: gai_strerror(status)))) }
        defer { freeaddrinfo(list) }
        var addresses: [String] = []
        var entry = list
        while let info = entry {
            if let address = info.pointee.ai_addr.flatMap(numericHost), !addresses.contains(address) { addresses.append(address) }
            entry = info.pointee.ai_next
        }
        return addresses.isEmpty ? .failure(ResolveError(message: "no IPv4 or IPv6 address")) : .success(addresses)
    }

    /// The addresses of this node's interfaces (`getifaddrs`), as `numericHost` writes them.
    static func interfaceAddresses() -> Set<String> {
        var list: UnsafeMutablePointer<ifaddrs>?
        guard getifaddrs(&list) == 0 else { return [] }
        defer { freeifaddrs(list) }
        var addresses: Set<String> = []
        var entry = list
        while let item = entry {
            if let address = item.pointee.ifa_addr.flatMap(numericHost) { addresses.insert(address) }
            entry = item.pointee.ifa_next
        }
        return addresses
    }

    /// An IPv4 or IPv6 socket address as text (as `SocketAddress` has it: no port, no IPv6
    /// scope); nil for other families.
    private static func numericHost(_ address: UnsafeMutablePointer<sockaddr>) -> String? {
        SocketAddress(storage: UnsafeRawPointer(address).assumingMemoryBound(to: sockaddr_storage.self))?.host
    }
}

/// When each Gateway `Hostname` is looked up, as a value (no clock, no thread): a name is due
/// at once when first listed, `interval` seconds after a lookup that answered with addresses
/// (a DHCP address that moves is followed), and after one that failed 1 s later (`interval`
/// when that is shorter), doubling with each failure in a row up to `interval` (a name that
/// does not resolve costs one lookup per `interval` at most, however short the reload tick).
/// At most one lookup of a name is in flight; a name no longer listed is forgotten (when its
/// lookup in flight answers).
struct HostnameLookupSchedule: Equatable, Sendable {
    typealias Answer = Result<[String], GatewayBindAddresses.ResolveError>

    struct Entry: Equatable, Sendable {
        /// What the latest lookup answered (nil: none has yet).
        var answer: Answer?
        var inFlight = false
        /// When the next lookup is due (seconds, on the caller's clock).
        var due: Double
        /// Lookups that failed in a row.
        var failures = 0
        /// Whether the latest `due(_:now:)` listed it.
        var listed = true
    }

    /// Seconds between lookups of a name that resolves, and the longest wait after failures.
    let interval: Double
    private(set) var entries: [String: Entry] = [:]

    init(interval: Double) {
        self.interval = interval
    }

    /// The names of `names` whose lookup is to start now (marked in flight); the others known
    /// are marked unlisted (forgotten now when idle, else when their lookup answers).
    mutating func due(_ names: [String], now: Double) -> [String] {
        for (name, entry) in entries where !names.contains(name) {
            if entry.inFlight { entries[name]!.listed = false } else { entries[name] = nil }
        }
        var start: [String] = []
        for name in names where !start.contains(name) {
            var entry = entries[name] ?? Entry(due: now)
            entry.listed = true
            if !entry.inFlight, entry.due <= now {
                entry.inFlight = true
                start.append(name)
            }
            entries[name] = entry
        }
        return start
    }

    /// A lookup of `name` answered at `now`: whether that changed its known answer (a name
    /// no longer listed is forgotten: false).
    mutating func answered(_ name: String, _ answer: Answer, now: Double) -> Bool {
        guard var entry = entries[name] else { return false }
        guard entry.listed else {
            entries[name] = nil
            return false
        }
        let changed = entry.answer != answer
        entry.inFlight = false
        entry.answer = answer
        switch answer {
        case .success:
            entry.failures = 0
            entry.due = now + interval
        case .failure:
            entry.failures += 1
            let first = min(1, interval)
            entry.due = now + min(first * Double(1 << min(entry.failures - 1, 30)), interval)
        }
        entries[name] = entry
        return changed
    }
}

/// The Gateways' `Hostname` addresses, looked up off the reload queue: `refresh` (called on
/// the reload queue at start, on every reload tick and manifest reload) starts the lookups
/// that are due (`HostnameLookupSchedule`) on a queue of their own and returns at once;
/// `answer` gives what the latest lookup of a name said. A lookup that changes a name's
/// answer calls `refresh`'s `changed` on the lookup's thread (the service hands it back to the
/// reload queue, which re-reads the answers and binds or stops addresses).
///
/// Threads: the blocking `resolve` (`getaddrinfo`) runs only on the concurrent queue
/// `ugate.httproute.resolver`, at most one lookup per name at a time (so at most as many
/// threads block there as there are Hostnames, each until the resolver's own timeout); the
/// schedule is behind a mutex, shared by the reload queue and those lookups.
final class GatewayHostnameLookups: Sendable {
    private struct State {
        var schedule: HostnameLookupSchedule
        var stopped = false
    }

    private let state: Mutex<State>
    private let resolve: GatewayBindAddresses.Resolver
    private let now: @Sendable () -> Double
    private let queue = DispatchQueue(label: "ugate.httproute.resolver", attributes: .concurrent)

    /// `resolve`: the node's resolver (blocking); `interval`: seconds between lookups of a name
    /// that resolves (`HostnameLookupSchedule`); `now`: the clock, in seconds (monotonic;
    /// tests give their own).
    init(resolve: @escaping GatewayBindAddresses.Resolver, interval: Double, now: @escaping @Sendable () -> Double = GatewayHostnameLookups.uptime) {
        self.resolve = resolve
        self.now = now
        state = Mutex(State(schedule: HostnameLookupSchedule(interval: interval)))
    }

    /// Seconds on the monotonic clock (the gate loops' `GateLoop.monotonicMillis`).
    static let uptime: @Sendable () -> Double = { Double(GateLoop.monotonicMillis()) / 1000 }

    /// What the latest lookup of `name` answered; nil when none has yet.
    func answer(_ name: String) -> Result<[String], GatewayBindAddresses.ResolveError>? {
        state.withLock { $0.schedule.entries[name]?.answer }
    }

    /// Starts the lookups of `names` that are due and forgets names no longer listed; never
    /// waits for a lookup. `changed` is called (on the lookup's thread) after a lookup whose
    /// answer differs from the name's previous one.
    func refresh(_ names: [String], changed: @escaping @Sendable () -> Void) {
        let time = now()
        let start = state.withLock { state in state.stopped ? [] : state.schedule.due(names, now: time) }
        for name in start {
            queue.async { [self] in
                let answer = resolve(name)
                let time = now()
                let differs = state.withLock { state in state.schedule.answered(name, answer, now: time) && !state.stopped }
                if differs { changed() }
            }
        }
    }

    /// Starts no more lookups and reports no more answers (lookups in flight run out).
    func stop() {
        state.withLock { $0.stopped = true }
    }
}
