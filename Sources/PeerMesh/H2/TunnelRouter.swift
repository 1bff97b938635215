import Gate
import Logging
import NIOCore
import NIOHTTP2

/// Where an inbound tunnel goes once it is authorized: to this node itself (a destination named
/// by our own ID, mangled hostname or VIP6 means `127.0.0.1:port`, which is how a gateway
/// reaches a node behind NAT through its reverse tunnel), to another mesh node named the same way
/// (one more HTTP/2 hop, with the same request form; VIP6 only for peers whose key is
/// configured), or out through the dialer.
struct TunnelRouter: Sendable {
    enum Next {
        case local(Destination)
        case peer(PeerConfig)
        case dialer
    }

    let selfID: String
    /// This node's VIP6 (RFC 5952 text).
    let selfVIP6: String
    let naming: MeshNaming
    let policy: PeerPolicy
    let dialer: TunnelDialer
    let pool: H2ConnectionPool
    let tuning: H2Tuning
    /// How long an outbound tunnel request may wait for the peer's answer.
    let openTimeout: TimeAmount
    let logger: Logger

    func next(for destination: Destination) -> Next {
        let local = Destination(host: "127.0.0.1", port: destination.port)
        if let address = NodeID.canonicalIPv6(destination.host) {
            if address == selfVIP6 { return .local(local) }
            return policy.peer(vip6: address).map { .peer($0) } ?? .dialer
        }
        guard let id = naming.nodeID(inHost: destination.host) else { return .dialer }
        if id == selfID { return .local(local) }
        if let peer = policy.peer(id) { return .peer(peer) }
        return .dialer
    }

    func upstream(to peer: PeerConfig, kind: TunnelRequest.Kind) -> H2MeshUpstream {
        H2MeshUpstream(
            name: "h2-\(kind.rawValue):\(peer.id.prefix(8))", peer: peer, kind: kind, pool: pool, naming: naming, selfID: selfID,
            openTimeout: openTimeout)
    }

    /// Installs server-mode HTTP/2 on an mTLS connection from `caller`: every inbound stream is
    /// a tunnel request served by `TunnelServerHandler`.
    func serveStreams(on channel: any Channel, caller: NodeID, listener: String) throws {
        _ = try channel.pipeline.syncOperations.configureHTTP2Pipeline(
            mode: .server,
            connectionConfiguration: tuning.connectionConfiguration,
            streamConfiguration: tuning.streamConfiguration,
            inboundStreamInitializer: { stream in
                stream.eventLoop.makeCompletedFuture {
                    try stream.pipeline.syncOperations.addHandler(
                        TunnelServerHandler(caller: caller, router: self, listener: listener))
                }
            })
    }
}
