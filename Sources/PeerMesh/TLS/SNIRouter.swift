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
/// - SNI naming a node that registered idle relay connections here (relay-over-SNI, a node
///   behind NAT, `RelayRegistry`): the connection is spliced into one of them, undecrypted; that
///   node terminates TLS itself. Preferred over the node's address.
/// - anything else (this node's name, no SNI, other names): TLS is terminated here.
///
/// Only configured peers' addresses are reachable this way, so this is no open relay; the far
/// node still authenticates the client.
struct SNIRouter: Sendable {
    let selfID: String
    let naming: MeshNaming
    let policy: PeerPolicy
    let relays: RelayRegistry
    let logger: Logger

    /// The other known node an SNI names (mangled hostname or Istio `outbound_.PORT_._.HOST`),
    /// or nil for this node, no SNI and other names.
    func peer(for result: SNIResult) -> PeerConfig? {
        guard case .hostname(let name) = result else { return nil }
        let host = name.hasPrefix("outbound_.") ? (name.components(separatedBy: "_.").last ?? name) : name
        guard let id = naming.nodeID(inHost: host), id != selfID else { return nil }
        return policy.peer(id)
    }

    /// The peer address to forward to, or nil (relay connection or terminate here).
    func forwardAddress(for result: SNIResult) -> String? {
        peer(for: result)?.addresses.first
    }

    /// The verdict of the Gate's accept peek (`PeekListener`): forward by the Gate's relay when
    /// the SNI names another known node with a literal or named address and no relay registration
    /// here; otherwise hand the connection to SwiftNIO (`install`: relay splice or termination).
    func verdict(serverName: String?) -> PeekListener.Verdict {
        guard let serverName, let peer = peer(for: .hostname(serverName)), relays.count(peer.id) == 0,
            let address = peer.addresses.first, let destination = try? TunnelRequest.parseDestination(address)
        else { return .handOff }
        logger.debug("SNI forward", metadata: ["peer.addr": "\(address)"])
        return .forward(destination, upstream: "mesh-sni:\(peer.id)")
    }

    /// Adds the SNI handler to a freshly accepted mesh connection; `terminate` installs local TLS.
    func install(on channel: any Channel, terminate: @escaping (any Channel) throws -> Void) throws {
        let router = self
        try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(SNIHandler { result in
            if let peer = router.peer(for: result) {
                if let relay = router.relays.take(peer.id) { return router.splice(channel, into: relay, node: peer.id) }
                if let address = peer.addresses.first { return router.forward(channel, to: address) }
            }
            return channel.eventLoop.makeCompletedFuture { try terminate(channel) }
        }))
    }

    /// Joins `channel` (its held ClientHello first) with the byte socket `next`; both on one loop.
    private func join(_ channel: any Channel, _ next: any Channel) throws {
        let (inbound, outbound) = GlueHandler.matchedPair()
        try H2Tuning.configureByteSocket(channel)
        try H2Tuning.configureByteSocket(next)
        try next.pipeline.syncOperations.addHandler(outbound)
        try channel.pipeline.syncOperations.addHandlers([HeldBytesHandler(), inbound])
    }

    /// Relay-over-SNI: splices the connection into an idle connection `node` registered.
    private func splice(_ channel: any Channel, into relay: any Channel, node: String) -> EventLoopFuture<Void> {
        let loop = channel.eventLoop
        do {
            guard relay.eventLoop === loop else {
                throw MeshError(.config, "relay connection of \(node) is on another event loop than the connection for it")
            }
            let demux = try relay.pipeline.syncOperations.handler(type: MeshPortDemux.self)
            relay.pipeline.syncOperations.removeHandler(demux, promise: nil)
            try join(channel, relay)
        } catch {
            logger.warning("SNI relay to \(node) failed: \(error)")
            relay.close(promise: nil)
            channel.close(promise: nil)
            return loop.makeFailedFuture(error)
        }
        logger.debug("SNI relay", metadata: ["peer.id": "\(node)"])
        return loop.makeSucceededVoidFuture()
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

/// Replays the bytes the Gate's accept peek read from a connection SwiftNIO adopted, as its
/// first read once it is active. Removes itself.
final class ReplayHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    private let bytes: [UInt8]

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    func channelActive(context: ChannelHandlerContext) {
        context.fireChannelActive()
        if !bytes.isEmpty {
            context.fireChannelRead(NIOAny(context.channel.allocator.buffer(bytes: bytes)))
            context.fireChannelReadComplete()
        }
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
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
