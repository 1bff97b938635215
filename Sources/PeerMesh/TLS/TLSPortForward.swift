import NIOCore
import NIOPosix
import NIOSSL

/// A plain TLS client for a node's `tlsPorts`, as a user's TLS application would be one: a local
/// TCP listener whose connections are each carried over a new TLS connection (no client
/// certificate, SNI `serverName`) to `address` — the node's mesh port, or a gateway's, which
/// splices it into one of the node's relay registrations undecrypted. The server is pinned by
/// its node ID (the hash of the key in its certificate). `ugate bench-mesh` measures the SNI
/// relay with it, against the same client talking to the node directly.
///
/// Threading: its own event loop group (`threads`); a connection and its TLS connection share a
/// loop and are joined by `GlueHandler` (backpressure, half-close as close_notify/FIN).
public final class TLSPortForward: Sendable {
    /// The bound local port.
    public let port: Int
    private let channel: any Channel
    private let group: MultiThreadedEventLoopGroup

    private init(port: Int, channel: any Channel, group: MultiThreadedEventLoopGroup) {
        self.port = port
        self.channel = channel
        self.group = group
    }

    /// The Istio outbound SNI that asks `node` to terminate TLS into its local `port`
    /// (`MeshConfig.tlsPorts`).
    public static func serverName(node: String, port: Int, naming: MeshNaming = MeshNaming()) -> String {
        "outbound_.\(port)_._.\(naming.hostname(for: node))"
    }

    /// Listens on 127.0.0.1:`port` (0: ephemeral) and forwards each connection over TLS to
    /// `address` (`host:port`).
    public static func listen(
        port: Int = 0, to address: String, serverName: String, node: String, threads: Int = 1,
        chunkSize: Int = MeshConfig.defaultIOChunkSize
    ) async throws -> TLSPortForward {
        let destination = try TunnelRequest.parseDestination(address)
        let tuning = H2Tuning(config: MeshConfig(identityDir: "-", ioChunkSize: chunkSize))
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.certificateVerification = .none
        configuration.minimumTLSVersion = .tlsv12
        let context = try NIOSSLContext(configuration: configuration)
        let group = MultiThreadedEventLoopGroup(numberOfThreads: max(1, threads))
        do {
            let channel = try await ServerBootstrap(group: group)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
                .childChannelInitializer { accepted in
                    accepted.eventLoop.makeCompletedFuture {
                        let (socketGlue, tlsGlue) = GlueHandler.matchedPair()
                        try tuning.configureByteSocket(accepted)
                        try accepted.pipeline.syncOperations.addHandler(socketGlue)
                        let boundGlue = NIOLoopBound(tlsGlue, eventLoop: accepted.eventLoop)
                        ClientBootstrap(group: accepted.eventLoop)
                            .channelOption(.socketOption(.tcp_nodelay), value: 1)
                            .connectTimeout(.seconds(10))
                            .channelInitializer { tls in
                                tls.eventLoop.makeCompletedFuture {
                                    try tuning.configureConnectionSocket(tls)
                                    try tls.syncOptions?.setOption(.allowRemoteHalfClosure, value: true)
                                    let sync = tls.pipeline.syncOperations
                                    try sync.addHandler(NIOSSLClientHandler(
                                        context: context, serverHostname: serverName,
                                        customVerificationCallback: { certificates, promise in
                                            let der = try? certificates.first?.toDERBytes()
                                            let id = der.flatMap { try? PeerVerifier.identify(leafDER: $0).id }
                                            promise.succeed(id == node ? .certificateVerified : .failed)
                                        }))
                                    try sync.addHandler(boundGlue.value)
                                }
                            }
                            .connect(host: destination.host, port: Int(destination.port))
                            .whenFailure { _ in accepted.close(promise: nil) }
                    }
                }
                .bind(host: "127.0.0.1", port: port).get()
            return TLSPortForward(port: channel.localAddress?.port ?? 0, channel: channel, group: group)
        } catch {
            try? await group.shutdownGracefully()
            throw error
        }
    }

    /// Stops listening and stops the event loop group (open connections end with it).
    public func close() async {
        try? await channel.close()
        try? await group.shutdownGracefully()
    }
}
