import ArgumentParser
import Foundation
import Gate
import Logging
import Metrics

/// `ugate run`: starts a node.
struct Run: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Start a node: capture listeners, admin port and mesh listeners.",
        discussion: """
            Without --config the node runs the default gate on loopback: base+0 admin (status, \
            /metrics, /debug/streams), base+1 REDIRECT outbound, base+2 HTTP proxy, base+5 SOCKS5, \
            base+6 REDIRECT inbound. The config file is JSON (ugate.json format, see docs/gate.md). \
            A base port of 0 binds every listener to an ephemeral port.
            """)

    @Option(help: "JSON config file (ugate.json format).")
    var config: String?

    @Option(help: "Base port; listeners use base + offset (see README).")
    var basePort: Int?

    @Option(help: "Forwarding path for TCP streams: copy or splice (overrides the config).")
    var forwarder: ForwardMode?

    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: Logger.Level = .info

    func run() async throws {
        var settings = GateConfig()
        if let config {
            let data: Data
            do {
                data = try Data(contentsOf: URL(fileURLWithPath: config))
            } catch {
                throw ValidationError("cannot read config \(config): \(error.localizedDescription)")
            }
            do {
                settings = try GateConfig.decode(data)
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

        let node: GateNode
        do {
            node = try GateNode(config: settings, metrics: metrics)
        } catch {
            throw ValidationError("cannot start the gate: \(error)")
        }
        let admin = AdminServer(routes: node.adminRoutes())
        let adminChannel = try await admin.start(host: settings.bind, port: settings.basePort)
        let bound = node.start()
        var lines = ["ugate node \(settings.name ?? "") ready (forwarder \(settings.forwarder.rawValue))"]
        lines.append("  admin        http://\(Destination(host: settings.bind, port: UInt16(adminChannel.localAddress?.port ?? 0)))/")
        for b in bound {
            // padding(toLength:) would truncate longer names (config keys such as udp://0.0.0.0:15008).
            lines.append("  \(b.name)\(String(repeating: " ", count: max(1, 13 - b.name.count)))\(b.proto.rawValue) \(b.address)")
        }
        print(lines.joined(separator: "\n"))
        fflush(nil)

        await Run.waitForTermination()
        node.stop()
        try? await adminChannel.close()
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
