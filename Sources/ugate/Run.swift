import ArgumentParser
import Foundation
import Gate
import Logging
import Metrics
import PeerMesh

/// `ugate run`: starts a node.
struct Run: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Start a node: capture listeners, admin port and mesh listeners.",
        discussion: """
            Without --config the node runs the default gate on loopback: base+0 admin (status, \
            /metrics, /debug/streams, WebPush service), base+1 REDIRECT outbound, base+2 HTTP proxy, \
            base+5 SOCKS5, base+6 REDIRECT inbound, base+7 mesh /dm/ and base+8 mesh HBONE (mTLS; \
            only peers listed in the config's "mesh" section get in). The config file is JSON \
            (ugate.json format, see docs/gate.md and docs/peermesh.md). A base port of 0 binds every \
            listener to an ephemeral port.
            """)

    @Option(help: "JSON config file (ugate.json format).")
    var config: String?

    @Option(help: "Directory with the node key and certificate (created on first run); the push store is its push/ subdirectory.")
    var identityDir: String = Id.defaultIdentityDir

    @Option(help: "Base port; listeners use base + offset (see README).")
    var basePort: Int?

    @Option(help: "Forwarding path for TCP streams: copy or splice (overrides the config).")
    var forwarder: ForwardMode?

    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: Logger.Level = .info

    func run() async throws {
        var settings = GateConfig()
        var meshSection = MeshSection()
        if let config {
            let data: Data
            do {
                data = try Data(contentsOf: URL(fileURLWithPath: config))
            } catch {
                throw ValidationError("cannot read config \(config): \(error.localizedDescription)")
            }
            do {
                (settings, meshSection) = try Run.decode(data)
            } catch {
                throw ValidationError("config \(config): \(error)")
            }
        }
        if let basePort { settings.basePort = basePort }
        if let forwarder { settings.forwarder = forwarder }
        let level = logLevel
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let metrics = PrometheusMetrics()
        MetricsSystem.bootstrap(metrics)

        let meshConfig = meshSection.meshConfig(identityDir: identityDir, defaultHost: settings.bind, forwarder: settings.forwarder)
        let mesh: MeshNode
        let push: PushService
        let node: GateNode
        do {
            let identity = try NodeIdentity.loadOrCreate(directory: identityDir, naming: meshConfig.naming)
            mesh = try MeshNode(config: meshConfig, identity: identity)
            push = try PushService(store: FilePushStore(directory: identityDir + "/push"))
            // One upstream per known peer, so routes can send captured streams to it by name;
            // mangled hostnames and IDs of peers reach them without a route of their own.
            var upstreams: [String: any Upstream] = [:]
            for peer in meshConfig.peers {
                upstreams[MeshSection.upstreamName(peer)] = try mesh.upstream(to: peer.id, kind: peer.transport)
            }
            settings.routes += meshSection.meshRoutes(naming: meshConfig.naming)
            node = try GateNode(config: settings, upstreams: upstreams, metrics: metrics)
        } catch {
            throw ValidationError("cannot start the node: \(error)")
        }
        let httprouteSlot = HTTPRouteService.Slot()
        let admin = AdminServer(routes: node.adminRoutes() + push.routes + [HTTPRouteService.adminRoute(httprouteSlot)])
        let adminChannel = try await admin.start(host: settings.bind, port: settings.basePort)
        let adminURL = "http://\(Destination(host: settings.bind, port: UInt16(adminChannel.localAddress?.port ?? 0)))"
        var rows = [("node-id", mesh.identity.node.id), ("admin", "\(adminURL)/"), ("push", "\(adminURL)/subscribe")]
        // With no peers the mesh ports still listen and refuse every TLS handshake (secure by default).
        if meshSection.listen ?? settings.defaultListeners {
            for (offset, name) in [(7, "mesh-dm"), (8, "mesh-hbone")] {
                let port = try await mesh.listen(port: settings.basePort == 0 ? 0 : settings.basePort + offset, name: name)
                rows.append((name, "tls \(Destination(host: meshConfig.listenHost, port: UInt16(port)))"))
            }
        }
        for name in meshSection.reverseTunnels {
            let id = try meshSection.peerID(name, field: "reverseTunnels")
            try mesh.startReverseTunnel(to: id)
            rows.append(("reverse", "tunnel to \(name)"))
        }
        for relay in meshSection.relays {
            let id = try meshSection.peerID(relay.gateway, field: "relays")
            try mesh.startRelay(to: id, poolSize: relay.poolSize)
            rows.append(("sni-relay", "\(relay.poolSize) connections registered with \(relay.gateway)"))
        }
        let bound = node.start()
        let httproute = try HTTPRouteService.start(settings, loops: node.loops, router: node.router, stateDirectory: identityDir)
        httprouteSlot.service = httproute
        rows += httproute?.bound.map { ($0.name, "\($0.tls ? "https" : "http") \($0.address)") } ?? []
        var lines = ["ugate node \(settings.name ?? "") ready (forwarder \(settings.forwarder.rawValue))"]
        rows += meshConfig.peers.map { (MeshSection.upstreamName($0), "peer \($0.id)") }
        rows += bound.map { ($0.name, "\($0.proto.rawValue) \($0.address)") }
        for (name, value) in rows {
            // padding(toLength:) would truncate longer names (config keys such as udp://0.0.0.0:15008).
            lines.append("  \(name)\(String(repeating: " ", count: max(1, 13 - name.count)))\(value)")
        }
        print(lines.joined(separator: "\n"))
        fflush(nil)

        await Run.waitForTermination()
        // Requests in flight finish (HTTP/2 two-step GOAWAY), up to httproute.shutdownTimeout.
        await httproute?.shutdown()
        node.stop()
        await mesh.shutdown()
        try? await adminChannel.close()
    }

    /// Maps one ugate.json onto both configs: the optional `mesh` key is the PeerMesh section,
    /// everything else the Gate's (which rejects unknown fields).
    static func decode(_ data: Data) throws -> (GateConfig, MeshSection) {
        guard var object = try JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw ValidationError("the config must be a JSON object")
        }
        var mesh = MeshSection()
        if let section = object.removeValue(forKey: "mesh") {
            // Decoded under its key, so errors name the full path (mesh.peers[0].id).
            let data = try JSONSerialization.data(withJSONObject: ["mesh": section])
            do {
                mesh = try JSONDecoder().decode([String: MeshSection].self, from: data)["mesh"] ?? mesh
            } catch let DecodingError.typeMismatch(_, ctx), let DecodingError.valueNotFound(_, ctx), let DecodingError.dataCorrupted(ctx) {
                throw ValidationError("field \(ConfigKey.path(ctx.codingPath)): \(ctx.debugDescription)")
            } catch let DecodingError.keyNotFound(key, ctx) {
                throw ValidationError("missing field \(ConfigKey.path(ctx.codingPath + [key]))")
            }
            try mesh.validate()
        }
        return (try GateConfig.decode(JSONSerialization.data(withJSONObject: object)), mesh)
    }

    /// Returns on SIGINT or SIGTERM.
    static func waitForTermination() async {
        let signals = AsyncStream<Int32> { continuation in
            let sources = [SIGINT, SIGTERM].map { sig -> any DispatchSourceSignal in
                signal(sig, SIG_IGN)
                let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
                source.setEventHandler { continuation.yield(sig) }
                source.resume()
                return source
            }
            let kept = SignalSources(sources)
            continuation.onTermination = { _ in kept.cancel() }
        }
        for await _ in signals { return }
    }
}

extension ForwardMode: ExpressibleByArgument {}
extension Logger.Level: @retroactive ExpressibleByArgument {}

/// Keeps the signal sources alive for the stream's lifetime.
private final class SignalSources: @unchecked Sendable {  // only cancel() touches the array, once, from onTermination
    private let sources: [any DispatchSourceSignal]
    init(_ sources: [any DispatchSourceSignal]) { self.sources = sources }
    func cancel() { sources.forEach { $0.cancel() } }
}
