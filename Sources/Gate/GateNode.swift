import Foundation
import Logging
import NIOCore

/// A running gate: the data-path loops, every capture listener of the config, and the
/// admin routes (/metrics, /debug/streams, status page). Mesh transports plug in through
/// `upstreams` (route targets by name); nothing here knows how they work.
public final class GateNode: Sendable {
    public let config: GateConfig
    public let loops: GateLoopGroup
    let context: GateContext
    /// The route table (rules, hosts, named upstreams) every listener of the node dials through.
    public var router: Router { context.router }
    private let listeners: [TCPListener]
    private let udpListeners: [UDPForwarder]
    private let metrics: PrometheusMetrics?

    /// What a listener bound: its name (`socks5`, `http`, `redirect-out`, `redirect-in`,
    /// or its config key) and the address with the real port.
    public struct BoundListener: Sendable {
        public var name: String
        public var proto: ListenerProto
        public var address: SocketAddress
    }

    /// Binds every listener (nothing is accepted until `start`).
    /// - Parameters:
    ///   - upstreams: named upstreams route rules may target (mesh transports).
    ///   - metrics: the Prometheus backend the executable bootstrapped, for /metrics.
    public init(
        config: GateConfig, upstreams: [String: any Upstream] = [:], metrics: PrometheusMetrics? = nil,
        logger: Logger = Logger(label: "ugate.gate"), accessLog: Logger = Logger(label: "ugate.access")
    ) throws {
        try config.validate()
        self.config = config
        self.metrics = metrics
        loops = try GateLoopGroup(
            count: config.loops > 0 ? config.loops : System.coreCount, bufferSize: config.bufferSize, pipeSize: config.pipeSize)
        do {
            let direct = DirectUpstream(loops: loops, connectTimeout: config.connectTimeout)
            let router = try Router(rules: config.routes, hosts: config.hosts, direct: direct, upstreams: upstreams)
            context = GateContext(config: config, router: router, loops: loops, accessLog: accessLog, log: logger)
            var tcp: [TCPListener] = []
            var udp: [UDPForwarder] = []
            for spec in try GateNode.listenerSpecs(config) {
                do {
                    if spec.udp {
                        let target = spec.proto == .tproxy ? nil : try router.resolveForward(spec.config.forwardTo ?? "")
                        udp.append(try UDPForwarder(name: spec.name, address: spec.address, target: target, context: context))
                    } else {
                        tcp.append(try GateNode.makeListener(spec, context: context))
                    }
                } catch let error as GateError where spec.optional {
                    logger.warning("listener not started", metadata: ["listener": "\(spec.name)", "error": "\(error)"])
                }
            }
            listeners = tcp
            udpListeners = udp
        } catch {
            loops.shutdown()
            throw error
        }
    }

    struct ListenerSpec {
        var name: String
        var proto: ListenerProto
        var address: SocketAddress
        var config: ListenerConfig
        /// A `udp://` key: `udp` forward or TPROXY UDP.
        var udp = false
        /// Failing to bind it (TPROXY without CAP_NET_ADMIN) is a warning, not an error.
        var optional = false
    }

    /// The base-port listeners plus the config's `listeners`.
    static func listenerSpecs(_ config: GateConfig) throws -> [ListenerSpec] {
        var specs: [ListenerSpec] = []
        if config.defaultListeners {
            let port = { (offset: Int) -> UInt16 in config.basePort == 0 ? 0 : UInt16(config.basePort + offset) }
            let bind = config.bind
            specs.append(ListenerSpec(name: "redirect-out", proto: .redirect, address: try SocketAddress(host: bind, port: port(1)), config: ListenerConfig(proto: .redirect)))
            specs.append(ListenerSpec(name: "http", proto: .http, address: try SocketAddress(host: bind, port: port(2)), config: ListenerConfig(proto: .http)))
            specs.append(ListenerSpec(name: "socks5", proto: .socks5, address: try SocketAddress(host: bind, port: port(5)), config: ListenerConfig(proto: .socks5)))
            specs.append(ListenerSpec(name: "redirect-in", proto: .redirect, address: try SocketAddress(host: bind, port: port(6)), config: ListenerConfig(proto: .redirect)))
        }
        for key in config.listeners.keys.sorted() {
            let listener = config.listeners[key]!
            let parsed = try ListenerAddress(key: key, bind: config.bind)
            let proto = parsed.udp && listener.proto != .tproxy ? .udp : listener.proto
            specs.append(ListenerSpec(name: key, proto: proto, address: parsed.address, config: listener, udp: parsed.udp))
        }
        return specs
    }

    private static func makeListener(_ spec: ListenerSpec, context: GateContext) throws -> TCPListener {
        let mode = spec.config.forwarder ?? context.config.forwarder
        let front: any CaptureFront
        switch spec.proto {
        case .tcp:
            let destination = try context.router.resolveForward(spec.config.forwardTo ?? "")
            front = PortForwardFront(name: spec.name, destination: destination, mode: mode, sniff: spec.config.sniff ?? false, context: context)
        case .redirect, .tproxy:
            let transparent = spec.proto == .tproxy
            return try TCPListener(name: spec.name, proto: spec.proto, address: spec.address, transparent: transparent, context: context) { bound in
                CaptureRedirectFront(name: spec.name, listenAddress: bound, transparent: transparent, mode: mode, sniff: spec.config.sniff ?? true, context: context)
            }
        case .socks5:
            front = SOCKS5Front(name: spec.name, mode: mode, context: context)
        case .http:
            front = HTTPProxyFront(name: spec.name, mode: mode, context: context)
        case .udp:
            throw GateError(.config, "udp listener \(spec.name) is not a TCP listener")
        }
        return try TCPListener(name: spec.name, proto: spec.proto, address: spec.address, context: context) { _ in front }
    }

    /// Starts accepting; returns every bound listener with its real port.
    @discardableResult
    public func start() -> [BoundListener] {
        for l in listeners { l.start() }
        for u in udpListeners { u.start() }
        let sweeper = loops.loops[0]
        sweeper.execute { [context] in context.sweepCarried(on: sweeper) }
        return bound
    }

    public var bound: [BoundListener] {
        listeners.map { BoundListener(name: $0.name, proto: $0.proto, address: $0.address) }
            + udpListeners.map { BoundListener(name: $0.name, proto: $0.proto, address: $0.address) }
    }

    /// The bound address of a listener by name.
    public func address(of name: String) -> SocketAddress? {
        bound.first { $0.name == name }?.address
    }

    /// Stops listening, resets every live stream — the relays on their loops, the streams
    /// upstreams carry (`CarriedStreams.closeAll`, each logged `end=shutdown`) — and stops the
    /// loops. The resets complete asynchronously on the threads that own the streams.
    public func stop() {
        for l in listeners { l.stop() }
        for u in udpListeners { u.stop() }
        context.carried.closeAll()
        loops.shutdown()
    }

    /// Snapshots of every live stream: the relays, collected on each loop's own thread, and
    /// the streams upstreams carry (mode `stream`); by ID.
    public func streams() async -> [StreamSnapshot] {
        let relays = await loops.snapshots()
        return (relays + context.carried.snapshots(now: GateLoop.monotonicMillis())).sorted { $0.id < $1.id }
    }

    /// Routes for the admin server: `/metrics`, `/debug/streams`, `/` (status page).
    public func adminRoutes() -> [AdminServer.Route] {
        let metrics = self.metrics
        return [
            AdminServer.Route(prefix: "/metrics") { _ in
                guard let metrics else { return .text(404, "metrics backend not configured") }
                return AdminResponse(
                    status: 200, headers: [("Content-Type", "text/plain; version=0.0.4")], body: Array(metrics.render().utf8))
            },
            AdminServer.Route(prefix: "/debug/streams") { [self] _ in
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
                let body = (try? encoder.encode(await streams())) ?? Data("[]".utf8)
                return AdminResponse(status: 200, headers: [("Content-Type", "application/json")], body: Array(body))
            },
            AdminServer.Route(prefix: "/") { [self] request in
                guard request.path == "/" else { return .text(404, "no such path: \(request.path)") }
                return .text(200, await statusText())
            },
        ]
    }

    func statusText() async -> String {
        var lines = ["ugate node \(config.name ?? "(unnamed)")", "", "listeners:"]
        for b in bound { lines.append("  \(b.name) (\(b.proto.rawValue)) \(b.address)") }
        lines.append("")
        lines.append("streams: \(await streams().count) active, forwarder \(config.forwarder.rawValue)")
        lines.append("see /metrics and /debug/streams")
        return lines.joined(separator: "\n")
    }
}
