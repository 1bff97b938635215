import Gate
import Logging
import NIOCore
import NIOPosix
import NIOTLS

/// Routes TLS connections on the mesh port by their SNI, before any decryption (SwiftNIO's
/// `SNIHandler` parses the ClientHello and holds the bytes until we decide):
///
/// - SNI naming another known node — its mangled hostname `ID.namespace.trustdomain`, or an
///   Istio name `outbound_.PORT_._.HOST` whose HOST is one — with an address: the connection is
///   forwarded undecrypted to that node's first address (a TCP byte copy with half-close and
///   backpressure, `GlueHandler`); the two ends run mTLS with each other.
/// - anything else (this node's name, no SNI, other names): TLS is terminated here.
///
/// Only configured peers' addresses are reachable this way, so this is no open relay; the far
/// node still authenticates the client.
struct SNIRouter: Sendable {
    let selfID: String
    let naming: MeshNaming
    let policy: PeerPolicy
    let logger: Logger

    /// The peer address to forward to, or nil to terminate TLS here.
    func forwardAddress(for result: SNIResult) -> String? {
        guard case .hostname(let name) = result else { return nil }
        let host = name.hasPrefix("outbound_.") ? (name.components(separatedBy: "_.").last ?? name) : name
        guard let id = naming.nodeID(inHost: host), id != selfID, let peer = policy.peer(id) else { return nil }
        return peer.addresses.first
    }

    /// Adds the SNI handler to a freshly accepted mesh connection; `terminate` installs local TLS.
    func install(on channel: any Channel, terminate: @escaping (any Channel) throws -> Void) throws {
        let router = self
        try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(SNIHandler { result in
            guard let address = router.forwardAddress(for: result) else {
                return channel.eventLoop.makeCompletedFuture { try terminate(channel) }
            }
            return router.forward(channel, to: address)
        }))
    }

    private func forward(_ channel: any Channel, to address: String) -> EventLoopFuture<Void> {
        let loop = channel.eventLoop
        let destination: Destination
        do { destination = try TunnelRequest.parseDestination(address) } catch {
            channel.close(promise: nil)
            return loop.makeFailedFuture(error)
        }
        let (inbound, outbound) = GlueHandler.matchedPair()
        let boundOutbound = NIOLoopBound(outbound, eventLoop: loop)
        do {
            try H2Tuning.configureByteSocket(channel)
            try channel.pipeline.syncOperations.addHandlers([HeldBytesHandler(), inbound])
        } catch {
            channel.close(promise: nil)
            return loop.makeFailedFuture(error)
        }
        let logger = self.logger
        return ClientBootstrap(group: loop)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { next in
                next.eventLoop.makeCompletedFuture {
                    try H2Tuning.configureByteSocket(next)
                    try next.pipeline.syncOperations.addHandler(boundOutbound.value)
                }
            }
            .connect(host: destination.host, port: Int(destination.port))
            .map { _ in logger.debug("SNI forward", metadata: ["peer.addr": "\(address)"]) }
            .flatMapErrorThrowing { error in
                logger.warning("SNI forward to \(address) failed: \(error)")
                channel.close(promise: nil)
                throw error
            }
    }
}

/// Passes on the ClientHello bytes `SNIHandler` held, which it delivers as a read without a
/// read-complete when it leaves the pipeline, and adds that read-complete so `GlueHandler`
/// flushes them. Removes itself after the first read.
private final class HeldBytesHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        context.fireChannelRead(data)
        context.fireChannelReadComplete()
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }
}
