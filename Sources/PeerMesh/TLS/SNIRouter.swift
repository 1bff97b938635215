import Gate
import Logging

/// Routes TLS connections on the mesh port by their SNI, before any decryption (the Gate's
/// `PeekListener` peeks the ClientHello with a bound and asks `verdict`):
///
/// - SNI naming a node that registered idle relay connections here (relay-over-SNI, a node
///   behind NAT, `RelayRegistry`): the connection is joined with one of them by the Gate's relay,
///   undecrypted; that node terminates TLS itself. Preferred over the node's address.
/// - SNI naming another known node — its mangled hostname `ID.namespace.trustdomain`, an
///   Istio name `outbound_.PORT_._.HOST` whose HOST is one, or a host name the node serves over
///   plain TLS (`PeerConfig.tlsHosts`) — with an address: the connection is
///   forwarded undecrypted to that node's first address by the Gate's relay (splice or copy,
///   with half-close and backpressure); the two ends run (m)TLS with each other.
/// - anything else (this node's name, no SNI, other names): SwiftNIO adopts the connection and
///   terminates TLS here.
///
/// Only configured peers' addresses are reachable this way, so this is no open relay; the far
/// node still authenticates the client.
struct SNIRouter: Sendable {
    let selfID: String
    let naming: MeshNaming
    let policy: PeerPolicy
    let relays: RelayRegistry
    let logger: Logger

    /// The other known node an SNI names (mangled hostname, Istio `outbound_.PORT_._.HOST`, or a
    /// plain-TLS host name granted to it in `PeerConfig.tlsHosts`), or nil for this node, no SNI
    /// and other names.
    private func peer(serverName: String?) -> PeerConfig? {
        guard let name = serverName else { return nil }
        if let peer = policy.peer(tlsHost: name), peer.id != selfID { return peer }
        let host = Self.istioOutbound(name)?.host ?? name
        guard let id = naming.nodeID(inHost: host), id != selfID else { return nil }
        return policy.peer(id)
    }

    /// The verdict of the Gate's accept peek (`PeekListener`) for a connection that is not
    /// joined with a relay registration: forward by the Gate's relay when the SNI names another
    /// known node with an address; otherwise hand it to SwiftNIO, which terminates TLS here.
    func verdict(serverName: String?) -> PeekListener.Verdict {
        guard let peer = peer(serverName: serverName), let address = peer.addresses.first, let destination = try? TunnelRequest.parseDestination(address)
        else { return .handOff }
        logger.debug("SNI forward", metadata: ["peer.addr": "\(address)"])
        return .forward(destination, upstream: "mesh-sni:\(peer.id)")
    }

    /// The node with idle relay-over-SNI registrations here that an SNI names, if any.
    func relayTarget(serverName: String?) -> String? {
        guard let peer = peer(serverName: serverName), relays.count(peer.id) > 0 else { return nil }
        return peer.id
    }

    /// The port and host of an Istio outbound SNI `outbound_.PORT_.SUBSET_.HOST` (the subset is
    /// usually empty), nil for any other name.
    static func istioOutbound(_ name: String) -> (port: Int, host: String)? {
        let parts = name.components(separatedBy: "_.")
        guard parts.count == 4, parts[0].lowercased() == "outbound", let port = Int(parts[1]), (1...65535).contains(port), !parts[3].isEmpty
        else { return nil }
        return (port, parts[3])
    }
}
