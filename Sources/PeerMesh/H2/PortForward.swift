import Gate
import Logging
import NIOCore
import NIOPosix

/// A plain TCP listener whose every connection is carried to one destination through an
/// `Upstream` (`ssh -L` style): accept, `dial`, then join the accepted socket and the returned
/// descriptor with a `GlueHandler` pair on the accepted socket's event loop. Through a mesh
/// peer (`H2MeshUpstream`) the listener accepts on the pooled connection's loop and joins each
/// accepted socket to its HTTP/2 stream directly (`streamOnLoop`, no socketpair), falling back
/// to `dial` when the pooled connection is gone or was re-made on another loop.
///
/// Used by `ugate bench-mesh`, and as the simplest way to reach a remote node's service by port.
public final class PortForward: Sendable {
    private let channel: any Channel

    /// The bound port.
    public var port: Int { channel.localAddress?.port ?? 0 }

    private init(channel: any Channel) {
        self.channel = channel
    }

    /// Stops listening (connections already joined keep running).
    public func close() async {
        try? await channel.close()
    }

    /// Binds `host:port` (0 = ephemeral).
    public static func listen(
        host: String = "127.0.0.1", port: Int, upstream: any Upstream, destination: Destination,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton, logger: Logger = Logger(label: "ugate.forward")
    ) async throws -> PortForward {
        let mesh = upstream as? H2MeshUpstream
        let tuning = mesh?.pool.tuning ?? H2Tuning(config: MeshConfig(identityDir: "-"))
        // Accept on the pooled connection's loop when there is one to reach now.
        let childGroup: any EventLoopGroup = await (try? mesh?.connectionLoop()) ?? group
        let channel = try await ServerBootstrap(group: group, childGroup: childGroup)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                let loop = channel.eventLoop
                let (acceptedGlue, dialledGlue) = GlueHandler.matchedPair()
                let boundDialled = NIOLoopBound(dialledGlue, eventLoop: loop)
                let source = channel.remoteAddress.map { "\($0)" } ?? "?"
                do {
                    try tuning.configureByteSocket(channel)
                    try channel.syncOptions?.setOption(.autoRead, value: false)
                    try channel.pipeline.syncOperations.addHandler(acceptedGlue)
                } catch {
                    return loop.makeFailedFuture(error)
                }
                let info = StreamInfo(listener: "forward:\(port)", source: source, destination: destination)
                let joined: EventLoopFuture<any Channel>
                if let direct = mesh?.streamOnLoop(destination, info: info, loop: loop, glue: boundDialled) {
                    logger.debug("forward joined to its stream on the connection's loop", metadata: ["peer.id": "\(upstream.name)"])
                    joined = direct
                } else {
                    let promise = loop.makePromise(of: (any Channel).self)
                    promise.completeWithTask {
                        let fd = try await upstream.dial(destination, for: info)
                        return try await ClientBootstrap(group: loop)
                            .channelInitializer { dialled in
                                dialled.eventLoop.makeCompletedFuture {
                                    try tuning.configureByteSocket(dialled)
                                    try dialled.pipeline.syncOperations.addHandler(boundDialled.value)
                                }
                            }
                            .withConnectedSocket(fd).get()
                    }
                    joined = promise.futureResult
                }
                joined.whenComplete { result in
                    switch result {
                    case .success:
                        channel.setOption(.autoRead, value: true).whenComplete { _ in }
                    case .failure(let error):
                        logger.warning("forward to \(destination) via \(upstream.name) failed: \(error)")
                        channel.close(promise: nil)
                    }
                }
                return loop.makeSucceededVoidFuture()
            }
            .bind(host: host, port: port)
            .get()
        return PortForward(channel: channel)
    }
}
