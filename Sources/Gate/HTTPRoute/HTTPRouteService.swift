import Foundation
import Logging
import NIOPosix
import Synchronization

/// The `httproute` section of ugate.json: which ports serve the HTTPRoute gateway, where the
/// manifests are, and the TLS certificates.
///
/// ```json
/// "httproute": {
///   "manifests": "/etc/ugate/routes",
///   "services": {"default/store-v1": "10.0.0.5:8080"},
///   "listeners": [
///     {"name": "http", "port": 80},
///     {"name": "https", "port": 443, "tls": {"certificateDir": "/etc/ugate/certs",
///      "passthrough": {"db.example.com": "10.0.0.9:443"}}}
///   ]
/// }
/// ```
public struct HTTPRouteConfig: Codable, Sendable, Equatable {
    /// Folder of HTTPRoute / Gateway YAML manifests (watched; changes apply without
    /// dropping connections).
    public var manifests: String
    /// Backend name (`ns/name` or `name`) → `host` or `host:port`.
    public var services: [String: String] = [:]
    public var listeners: [HTTPRouteListenerConfig] = []
    /// Seconds between checks of the manifest folder.
    public var reloadInterval: Double = 1
    /// Seconds for a request whose rule has no `timeouts.request`.
    public var requestTimeout: Double = 30
    /// Seconds a kept-alive HTTP/1.1 client connection may stay idle between requests.
    public var keepAliveTimeout: Double = 60
    /// Seconds an HTTP/2 client connection (h2c or h2) may stay without open streams before
    /// it is closed with GOAWAY.
    public var http2IdleTimeout: Double = 60
    /// Seconds response bytes may wait for a client's socket without any being written (a
    /// client that stopped reading) before the connection is closed, its backend connections
    /// with it (counted in `ugate_httproute_send_timeouts_total`).
    public var sendTimeout: Double = 60
    /// Seconds an HTTP/2 client has to acknowledge the gateway's SETTINGS before the
    /// connection is closed with GOAWAY SETTINGS_TIMEOUT (RFC 9113 §6.5.3).
    public var http2SettingsTimeout: Double = 10
    /// Seconds to connect to a backend (directly or through a mesh upstream) before trying
    /// the rule's next backend (503 when none is left); capped by the rule's deadline.
    public var connectTimeout: Double = 10
    /// Largest request body (bytes) copied to RequestMirror backends; a request with a larger
    /// body is served but not mirrored (counted in `ugate_httproute_mirror_skipped_total`).
    public var mirrorBodyLimit: Int = 1 << 20
    /// Largest request body (bytes) kept so that the request can be sent again (a retry, the
    /// stale kept-alive race); a request with a larger body is never replayed. Envoy's
    /// `per_request_buffer_limit_in_bytes`. Each request holds up to this much beyond the
    /// flow-control windows while it is forwarded.
    public var retryBodyLimit: Int = Self.defaultRetryBodyLimit
    /// Seconds a graceful shutdown (`ugate run` on SIGTERM/SIGINT) waits for the connections
    /// being drained to finish their requests; what is left then is closed.
    public var shutdownTimeout: Double = 30
    /// Seconds between lookups of a Gateway `Hostname` address that resolves (an address that
    /// moves, e.g. by DHCP, is bound anew and the old one stops listening), and the longest
    /// wait between lookups of one that does not (1 s, doubling with each failure up to this).
    /// Checked on the reload ticks (`reloadInterval`).
    public var hostnameRefreshInterval: Double = 30

    public init(manifests: String, services: [String: String] = [:], listeners: [HTTPRouteListenerConfig] = []) {
        self.manifests = manifests
        self.services = services
        self.listeners = listeners
    }

    private enum CodingKeys: String, CodingKey, CaseIterable {
        case manifests, services, listeners, reloadInterval, requestTimeout, keepAliveTimeout, http2IdleTimeout, connectTimeout, mirrorBodyLimit
        case shutdownTimeout, sendTimeout, http2SettingsTimeout, retryBodyLimit, hostnameRefreshInterval
    }

    public init(from decoder: any Decoder) throws {
        try ConfigKey.rejectUnknown(decoder, CodingKeys.allCases.map(\.rawValue))
        let c = try decoder.container(keyedBy: CodingKeys.self)
        manifests = try c.decode(String.self, forKey: .manifests)
        services = try c.decodeIfPresent([String: String].self, forKey: .services) ?? [:]
        listeners = try c.decodeIfPresent([HTTPRouteListenerConfig].self, forKey: .listeners) ?? []
        reloadInterval = try c.decodeIfPresent(Double.self, forKey: .reloadInterval) ?? 1
        requestTimeout = try c.decodeIfPresent(Double.self, forKey: .requestTimeout) ?? 30
        keepAliveTimeout = try c.decodeIfPresent(Double.self, forKey: .keepAliveTimeout) ?? 60
        http2IdleTimeout = try c.decodeIfPresent(Double.self, forKey: .http2IdleTimeout) ?? 60
        sendTimeout = try c.decodeIfPresent(Double.self, forKey: .sendTimeout) ?? 60
        http2SettingsTimeout = try c.decodeIfPresent(Double.self, forKey: .http2SettingsTimeout) ?? 10
        connectTimeout = try c.decodeIfPresent(Double.self, forKey: .connectTimeout) ?? 10
        mirrorBodyLimit = try c.decodeIfPresent(Int.self, forKey: .mirrorBodyLimit) ?? 1 << 20
        shutdownTimeout = try c.decodeIfPresent(Double.self, forKey: .shutdownTimeout) ?? 30
        retryBodyLimit = try c.decodeIfPresent(Int.self, forKey: .retryBodyLimit) ?? Self.defaultRetryBodyLimit
        hostnameRefreshInterval = try c.decodeIfPresent(Double.self, forKey: .hostnameRefreshInterval) ?? 30
        guard hostnameRefreshInterval > 0 else {
            throw DecodingError.dataCorruptedError(
                forKey: .hostnameRefreshInterval, in: c, debugDescription: "hostnameRefreshInterval \(hostnameRefreshInterval) is not a positive number of seconds")
        }
        guard (0...Self.maxRetryBodyLimit).contains(retryBodyLimit) else {
            throw DecodingError.dataCorruptedError(
                forKey: .retryBodyLimit, in: c, debugDescription: "retryBodyLimit \(retryBodyLimit) outside 0…\(Self.maxRetryBodyLimit) bytes")
        }
    }

    /// The largest `retryBodyLimit` (16 MiB): what a request may hold for a replay.
    public static let maxRetryBodyLimit = 16 << 20
    /// `retryBodyLimit` when the config has none (64 KiB).
    public static let defaultRetryBodyLimit = 65536
}

/// One port of the gateway. Plain listeners serve HTTP/1.1 and h2c (prior knowledge);
/// TLS listeners terminate TLS by SNI (HTTP/2 or HTTP/1.1 by ALPN) or pass it through.
public struct HTTPRouteListenerConfig: Codable, Sendable, Equatable {
    /// Listener name: a route's `parentRefs[].sectionName` selects it.
    public var name: String
    /// Bind address (default: the config's `bind`).
    public var host: String?
    /// Port (0: ephemeral).
    public var port: Int
    /// `namespace/name` of the Gateway this listener belongs to: routes attach when their
    /// `parentRefs` name it (routes without parentRefs attach everywhere); the Gateway
    /// manifest's listener of the same `name`, when present, adds its hostname and
    /// `allowedRoutes` (see `routes(in:)`). Without it every route attaches.
    public var gateway: String?
    public var tls: HTTPRouteTLSConfig?

    public init(name: String, host: String? = nil, port: Int, gateway: String? = nil, tls: HTTPRouteTLSConfig? = nil) {
        self.name = name
        self.host = host
        self.port = port
        self.gateway = gateway
        self.tls = tls
    }

    private enum CodingKeys: String, CodingKey, CaseIterable { case name, host, port, gateway, tls }

    public init(from decoder: any Decoder) throws {
        try ConfigKey.rejectUnknown(decoder, CodingKeys.allCases.map(\.rawValue))
        let c = try decoder.container(keyedBy: CodingKeys.self)
        name = try c.decode(String.self, forKey: .name)
        host = try c.decodeIfPresent(String.self, forKey: .host)
        port = try c.decode(Int.self, forKey: .port)
        gateway = try c.decodeIfPresent(String.self, forKey: .gateway)
        tls = try c.decodeIfPresent(HTTPRouteTLSConfig.self, forKey: .tls)
    }

}

/// Certificates and passthrough of a TLS listener.
public struct HTTPRouteTLSConfig: Codable, Sendable, Equatable {
    /// Hostname (or `*.domain`) → PEM certificate chain and key files.
    public var certificates: [String: CertificateFiles] = [:]
    /// Folder of `<hostname>.crt` + `<hostname>.key` pairs (`_.example.com.crt` is
    /// `*.example.com`); entries of `certificates` win.
    public var certificateDir: String?
    /// Hostname of the certificate for clients whose SNI matches nothing (nil: close them).
    public var defaultCertificate: String?
    /// SNI hostname → `host:port`: such TLS connections are relayed untouched.
    public var passthrough: [String: String] = [:]

    public init(
        certificates: [String: CertificateFiles] = [:], certificateDir: String? = nil, defaultCertificate: String? = nil,
        passthrough: [String: String] = [:]
    ) {
        self.certificates = certificates
        self.certificateDir = certificateDir
        self.defaultCertificate = defaultCertificate
        self.passthrough = passthrough
    }

    private enum CodingKeys: String, CodingKey, CaseIterable { case certificates, certificateDir, defaultCertificate, passthrough }

    public init(from decoder: any Decoder) throws {
        try ConfigKey.rejectUnknown(decoder, CodingKeys.allCases.map(\.rawValue))
        let c = try decoder.container(keyedBy: CodingKeys.self)
        certificates = try c.decodeIfPresent([String: CertificateFiles].self, forKey: .certificates) ?? [:]
        certificateDir = try c.decodeIfPresent(String.self, forKey: .certificateDir)
        defaultCertificate = try c.decodeIfPresent(String.self, forKey: .defaultCertificate)
        passthrough = try c.decodeIfPresent([String: String].self, forKey: .passthrough) ?? [:]
    }
}

/// A PEM certificate chain file and its PEM private key file.
public struct CertificateFiles: Codable, Sendable, Equatable {
    public var cert: String
    public var key: String

    public init(cert: String, key: String) {
        self.cert = cert
        self.key = key
    }
}

/// The HTTPRoute gateway of a node: one `HTTPGateway` per configured listener, all fed from
/// one manifest folder that is watched and re-applied without dropping connections.
///
/// A listener whose port cannot be bound does not stop the others: it is logged, reported
/// (Gateway listener status `Accepted: False / PortUnavailable`, `Programmed: False`) and
/// bound again on every reload tick until it succeeds.
public final class HTTPRouteService: Sendable {
    private let slots: [ListenerSlot]
    private let reloader: HTTPRouteReloader
    /// The lookups of the Gateways' Hostname addresses.
    private let lookups: GatewayHostnameLookups
    /// The manifests in force, for `status()` and to notice removed Gateway listeners.
    private let current: RouteManifestsBox
    private let shutdownTimeout: Double
    /// The status of the manifests in force, stamped by the `StatusHistory` (generations and
    /// condition transition times across reloads).
    private let report: @Sendable () -> HTTPRouteStatusReport

    /// Listener name and bound address (with the real port) of every listener bound so far,
    /// in configuration order (a listener whose Gateway has several `addresses` once per address).
    public var bound: [(name: String, address: SocketAddress, tls: Bool)] {
        slots.flatMap { slot in slot.gateways.map { (name: slot.config.name, address: $0.address, tls: slot.config.tls != nil) } }
    }

    /// The file in the node's state directory that keeps the status history across restarts.
    public static let statusHistoryFile = "httproute-status.json"

    /// Loads the manifests (an invalid folder refuses to start) and binds every listener.
    /// - Parameter stateDirectory: the node's state directory (`ugate run`: its identity
    ///   directory); the status history (`observedGeneration` counters, `lastTransitionTime`)
    ///   is kept there in `httproute-status.json` across restarts. nil: in memory only.
    public convenience init(
        config: HTTPRouteConfig, bind: String, loops: GateLoopGroup, log: Logger = Logger(label: "ugate.httproute"),
        accessLog: Logger = Logger(label: "ugate.httproute.access"), router: Router? = nil, stateDirectory: String? = nil
    ) throws {
        try self.init(
            config: config, bind: bind, loops: loops, log: log, accessLog: accessLog, router: router, stateDirectory: stateDirectory,
            resolve: GatewayBindAddresses.getaddrinfo)
    }

    /// `resolve`: how a Gateway's Hostname addresses are resolved (the node's resolver; tests
    /// give their own), `clock`: the clock of their lookups' schedule, in seconds (tests give
    /// their own).
    ///
    /// Threads: the caller's thread builds and binds the listeners, then hands over to the
    /// reload queue (`ugate.httproute.reloader`, serial), which from then on is the only one
    /// that changes what a listener binds (`ListenerSlot.setAddresses`, `bind`): on every
    /// reload tick, on every manifest reload, and when a Hostname lookup's answer changes. The
    /// lookups themselves block on their own queue (`GatewayHostnameLookups`), never on the
    /// reload queue: a slow resolver delays no certificate reload, bind or manifest reload.
    init(
        config: HTTPRouteConfig, bind: String, loops: GateLoopGroup, log: Logger, accessLog: Logger, router: Router?, stateDirectory: String?,
        resolve: @escaping GatewayBindAddresses.Resolver, clock: @escaping @Sendable () -> Double = GatewayHostnameLookups.uptime
    ) throws {
        let loader = HTTPRouteLoader(services: config.services)
        let manifests = try loader.load(directory: config.manifests)
        let lookups = GatewayHostnameLookups(resolve: resolve, interval: config.hostnameRefreshInterval, now: clock)
        var slots: [ListenerSlot] = []
        // One budget per route and per Service for the whole node: every listener counts in it.
        let retryBudgets = RetryBudgets()
        for listener in config.listeners {
            guard (0...65535).contains(listener.port) else {
                throw GateError(.config, "httproute listener \(listener.name): port \(listener.port) out of range")
            }
            let tls = try HTTPRouteTLS(listener: listener, manifests: manifests, log: log)
            slots.append(
                ListenerSlot(
                    config: listener, tls: tls, table: RouteTable(routes: listener.routes(in: manifests)),
                    addresses: listener.bindAddresses(in: manifests, bind: bind, resolve: lookups.answer), log: log
                ) { table, host in
                    try HTTPGateway(
                        table: table, host: host, port: UInt16(listener.port), loops: loops, defaultTimeout: config.requestTimeout,
                        keepAliveTimeout: config.keepAliveTimeout, http2IdleTimeout: config.http2IdleTimeout, sendTimeout: config.sendTimeout,
                        http2SettingsTimeout: config.http2SettingsTimeout,
                        connectTimeout: config.connectTimeout, mirrorBodyLimit: config.mirrorBodyLimit,
                        retryBodyLimit: config.retryBodyLimit, accessLog: accessLog, log: log,
                        tls: tls, name: listener.name, router: router, retryBudgets: retryBudgets)
                })
        }
        slots.forEach { $0.bind() }
        let serving = slots
        let current = RouteManifestsBox(manifests)
        let history = StatusHistory(file: stateDirectory.map { "\($0)/\(Self.statusHistoryFile)" }, log: log)
        history.observe(manifests)
        // Swapping the manifests (and observing them) and stamping a status computed from them
        // do not interleave: a status is never stamped from manifests older than the history's.
        let statusLock = Mutex(())
        let report: @Sendable () -> HTTPRouteStatusReport = {
            statusLock.withLock { _ in HTTPRouteStatusReport.compute(current.manifests, listeners: serving.map(\.runtime), history: history) }
        }
        // Conditions are recorded on every tick and reload, so a transition's time is when it happened.
        let record: @Sendable () -> Void = { _ = report() }
        record()
        // The Gateway's addresses changed (or what its Hostnames resolve to, or this node's
        // interface addresses): new ones are bound by the next `bind()`, removed ones stop
        // listening and their connections close gracefully. On the reload queue.
        let readdress: @Sendable (ListenerSlot, RouteManifests) -> Void = { slot, manifests in
            for gateway in slot.setAddresses(slot.config.bindAddresses(in: manifests, bind: bind, resolve: lookups.answer)) {
                log.info("Gateway address removed, draining its connections", metadata: ["listener": "\(slot.config.name)", "address": "\(gateway.address)"])
                gateway.stop()
                gateway.drain(permanently: true, closePassthroughAfter: config.shutdownTimeout)
            }
        }
        let queue = DispatchQueue(label: "ugate.httproute.reloader")
        // A lookup whose answer changed: its addresses are bound (or stop listening) at once,
        // on the reload queue.
        let answered: @Sendable () -> Void = {
            queue.async {
                for slot in serving {
                    readdress(slot, current.manifests)
                    slot.bind()
                }
                record()
            }
        }
        // Starts the Hostname lookups that are due; never waits for one.
        let lookUp: @Sendable (RouteManifests) -> Void = { manifests in
            var names: [String] = []
            for slot in serving { names += slot.config.addressHostnames(in: manifests) }
            lookups.refresh(names, changed: answered)
        }
        reloader = HTTPRouteReloader(
            directory: config.manifests, loader: loader, interval: config.reloadInterval, log: log, queue: queue,
            tick: {
                let manifests = current.manifests
                // Names that are due: looked up again (a name that did not resolve, with
                // backoff; one that did, every `hostnameRefreshInterval`).
                lookUp(manifests)
                for slot in serving {
                    slot.tls?.reloadCertificates()
                    // The answers known, against this node's addresses now.
                    readdress(slot, manifests)
                    slot.bind()
                }
                record()
            }
        ) { manifests in
            let previous = current.manifests
            // A new Hostname is looked up at once; it is bound when its lookup answers.
            lookUp(manifests)
            for slot in serving {
                slot.update(RouteTable(routes: slot.config.routes(in: manifests)))
                slot.tls?.update(manifests)
                readdress(slot, manifests)
                slot.bind()
                // Its Gateway listener is gone: connections made under it close gracefully
                // (clients reconnect and get what the listener serves now).
                if slot.config.gatewayListener(in: previous) != nil, slot.config.gatewayListener(in: manifests) == nil {
                    log.info("Gateway listener removed, draining its connections", metadata: ["listener": "\(slot.config.name)"])
                    slot.gateways.forEach { $0.drain(closePassthroughAfter: config.shutdownTimeout) }
                }
            }
            statusLock.withLock { _ in
                current.manifests = manifests
                history.observe(manifests)
            }
            record()
        }
        // The first lookups, started from the reload queue like all later ones.
        queue.async { lookUp(current.manifests) }
        self.current = current
        self.report = report
        self.slots = slots
        self.lookups = lookups
        shutdownTimeout = config.shutdownTimeout
    }

    /// The gateway of a node config's `httproute` section; nil when it has none.
    /// - Parameter router: the node's route table, through which backends are dialled (so a
    ///   backend routed to `mesh:<peer>` is reached through that peer).
    /// - Parameter stateDirectory: where the status history is kept across restarts.
    public static func start(_ config: GateConfig, loops: GateLoopGroup, router: Router? = nil, stateDirectory: String? = nil) throws -> HTTPRouteService? {
        guard let section = config.httproute else { return nil }
        do {
            return try HTTPRouteService(config: section, bind: config.bind, loops: loops, router: router, stateDirectory: stateDirectory)
        } catch {
            throw GateError(.config, "httproute: \(error)")
        }
    }

    /// The Gateway API status of every Gateway listener (Accepted, Programmed, ResolvedRefs,
    /// Conflicted, attachedRoutes) and route (Accepted, ResolvedRefs) in force.
    public func status() -> HTTPRouteStatusReport {
        report()
    }

    /// Client connections (served by NIO) still open on all listeners.
    public var openConnections: Int {
        slots.reduce(0) { $0 + $1.gateways.reduce(0) { $0 + $1.openConnections } }
    }

    /// TLS passthrough streams still open on all listeners.
    public var openPassthroughStreams: Int {
        slots.reduce(0) { $0 + $1.gateways.reduce(0) { $0 + $1.openPassthroughStreams } }
    }

    /// Stops watching and closes the listening sockets (connections being served continue).
    public func stop() {
        reloader.stop()
        lookups.stop()
        slots.forEach { $0.stop() }
    }

    /// Graceful shutdown: stops watching and accepting, drains every connection (HTTP/2: the
    /// two-step GOAWAY, streams in flight finish; HTTP/1.1: the response in progress ends with
    /// `Connection: close`, idle ones close at once; TLS passthrough streams run on until they
    /// end) and returns when all have closed, or after `timeout` seconds (default: the
    /// config's `shutdownTimeout`) with the rest closed abruptly.
    public func shutdown(timeout: Double? = nil) async {
        stop()
        slots.forEach { $0.gateways.forEach { $0.drain(permanently: true) } }
        let deadline = ContinuousClock.now + .milliseconds(Int64((timeout ?? shutdownTimeout) * 1000))
        while openConnections + openPassthroughStreams > 0, ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(20))
        }
        slots.forEach { $0.gateways.forEach { $0.closeConnections() } }
    }
}

/// One configured listener of the service: its TLS, its current route table, and one gateway
/// per address it binds (the config's `host`, or its Gateway's `spec.addresses`) once bound
/// (`bind()` is called at start and on every reload tick until each address is bound). The
/// creator (until it hands over) and then the reload queue are the only callers of `bind()`
/// and `setAddresses`.
final class ListenerSlot: Sendable {
    let config: HTTPRouteListenerConfig
    let tls: HTTPRouteTLS?
    private let log: Logger
    private let make: @Sendable (RouteTable, String) throws -> HTTPGateway

    /// One address: its gateway once bound, else the last bind error.
    private struct Address {
        var host: String
        var gateway: HTTPGateway?
        var error: String?
    }

    private struct State {
        var addresses: [Address]
        /// The Gateway's Hostnames that give nothing to bind (`GatewayBindAddresses`).
        var problems: [GatewayBindAddresses.AddressProblem]
        var table: RouteTable
        var stopped = false
    }

    private let state: Mutex<State>

    init(
        config: HTTPRouteListenerConfig, tls: HTTPRouteTLS?, table: RouteTable, addresses: GatewayBindAddresses, log: Logger,
        make: @escaping @Sendable (RouteTable, String) throws -> HTTPGateway
    ) {
        self.config = config
        self.tls = tls
        self.log = log
        self.make = make
        state = Mutex(State(addresses: addresses.hosts.map { Address(host: $0) }, problems: addresses.problems, table: table))
        logProblems(addresses.problems)
    }

    /// Logs the Hostnames that do not resolve or name no address of this node (not those
    /// whose first lookup is still running).
    private func logProblems(_ problems: [GatewayBindAddresses.AddressProblem]) {
        for problem in problems where problem.reason != "Pending" {
            log.error(
                "Gateway address not bound, resolving it again later",
                metadata: ["listener": "\(config.name)", "reason": "\(problem.reason)", "error": "\(problem.message)"])
        }
    }

    /// The gateways of the addresses bound so far.
    var gateways: [HTTPGateway] { state.withLock { $0.addresses.compactMap(\.gateway) } }

    /// Binds the addresses not bound yet; a failure is logged (once per distinct error) and
    /// kept for the status.
    func bind() {
        let (table, pending) = state.withLock { state in
            (state.table, state.stopped ? [] : state.addresses.filter { $0.gateway == nil }.map(\.host))
        }
        for host in pending {
            do {
                let gateway = try make(table, host)
                let kept = state.withLock { state in
                    guard !state.stopped, let index = state.addresses.firstIndex(where: { $0.host == host && $0.gateway == nil }) else { return false }
                    state.addresses[index].gateway = gateway
                    state.addresses[index].error = nil
                    // A table that changed while binding.
                    gateway.update(state.table)
                    return true
                }
                if kept {
                    log.info("httproute listener bound", metadata: ["listener": "\(config.name)", "address": "\(gateway.address)"])
                } else {
                    gateway.stop()
                }
            } catch {
                let message = "\(error)"
                let changed = state.withLock { state in
                    guard let index = state.addresses.firstIndex(where: { $0.host == host }) else { return false }
                    defer { state.addresses[index].error = message }
                    return state.addresses[index].error != message
                }
                if changed {
                    log.error(
                        "httproute listener not bound, retrying on every reload tick",
                        metadata: ["listener": "\(config.name)", "host": "\(host)", "port": "\(config.port)", "error": "\(message)"])
                }
            }
        }
    }

    /// Sets the addresses to bind (the Gateway's `spec.addresses` changed, or what its
    /// Hostnames resolve to): kept ones stay bound, new ones are bound by the next `bind()`;
    /// returns the gateways of removed ones (the caller stops and drains them). New problems
    /// are logged.
    func setAddresses(_ addresses: GatewayBindAddresses) -> [HTTPGateway] {
        let hosts = addresses.hosts
        let (removed, newProblems) = state.withLock { state in
            let newProblems = addresses.problems.filter { !state.problems.contains($0) }
            state.problems = addresses.problems
            guard hosts != state.addresses.map(\.host) else { return ([HTTPGateway](), newProblems) }
            let removed = state.addresses.filter { !hosts.contains($0.host) }.compactMap(\.gateway)
            state.addresses = hosts.map { host in state.addresses.first { $0.host == host } ?? Address(host: host) }
            return (removed, newProblems)
        }
        logProblems(newProblems)
        return removed
    }

    func update(_ table: RouteTable) {
        let gateways = state.withLock { state in
            state.table = table
            return state.addresses.compactMap(\.gateway)
        }
        gateways.forEach { $0.update(table) }
    }

    func stop() {
        state.withLock { state in
            state.stopped = true
            return state.addresses.compactMap(\.gateway)
        }.forEach { $0.stop() }
    }

    /// What the status knows of this listener: bound when every address is (the addresses
    /// reported in the Gateway status), else the first failure and its address.
    var runtime: ConfiguredListenerState {
        let (binding, addresses, unbound, problems) = state.withLock { state in
            let bound = state.addresses.compactMap(\.gateway)
            let addresses = bound.map(\.address.host)
            if bound.count == state.addresses.count, !bound.isEmpty {
                return (ConfiguredListenerState.Binding.bound(bound.map { "\($0.address)" }.joined(separator: ", ")), addresses, String?.none, state.problems)
            }
            guard let failed = state.addresses.first(where: { $0.gateway == nil }) else {
                let why = state.problems.isEmpty ? "not bound" : "no address to bind: " + state.problems.map(\.message).joined(separator: "; ")
                return (.failed(why), addresses, nil, state.problems)
            }
            return (.failed(failed.error ?? "not bound"), addresses, failed.host, state.problems)
        }
        let tls = tls
        var runtime = ConfiguredListenerState(config: config, binding: binding) { files in
            tls?.certificateState(files) ?? (false, "the listener has no tls")
        }
        runtime.addresses = addresses
        runtime.unboundHost = unbound
        runtime.addressProblems = problems
        return runtime
    }
}
