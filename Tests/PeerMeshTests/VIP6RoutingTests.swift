import Foundation
import Gate
import XCTest
@testable import PeerMesh

/// `[VIP6]:port` destinations: a peer whose public key is configured is reachable by its VIP6
/// (`fd00::/64` + the key's last 8 bytes) like by `ID:port`: `ugate run`'s appended mesh routes
/// send it to the peer's upstream, relaying nodes pass it on, and the peer connects
/// `127.0.0.1:port` on itself.
final class VIP6RoutingTests: MeshTestCase {
    func testPublicKeyMustMatchTheID() throws {
        let bob = try NodeIdentity.generate()
        let other = try NodeIdentity.generate()
        let policy = try PeerPolicy(peers: [PeerConfig(id: bob.node.id, publicKey: bob.publicKeyBase64URL)])
        XCTAssertEqual(policy.peer(vip6: bob.node.vip6)?.id, bob.node.id)
        XCTAssertEqual(policy.peer(vip6: bob.node.vip6.uppercased())?.id, bob.node.id, "any spelling of the address")
        XCTAssertNil(policy.peer(vip6: other.node.vip6))
        XCTAssertNil(try PeerPolicy(peers: [PeerConfig(id: bob.node.id)]).peer(vip6: bob.node.vip6), "no key, no VIP6")

        XCTAssertThrowsError(try PeerPolicy(peers: [PeerConfig(id: bob.node.id, publicKey: other.publicKeyBase64URL)])) { error in
            XCTAssertEqual((error as? MeshError)?.code, .config)
            XCTAssertTrue("\(error)".contains("publicKey hashes to \(other.node.id)"), "\(error)")
        }
        XCTAssertThrowsError(try PeerPolicy(peers: [PeerConfig(id: bob.node.id, publicKey: "not*base64")])) { error in
            XCTAssertTrue("\(error)".contains("publicKey is not a base64url 65-byte P-256 point"), "\(error)")
        }
        XCTAssertThrowsError(try PeerPolicy(peers: [PeerConfig(id: bob.node.id, publicKey: Base64URL.encode([4, 1, 2]))]))

        // The config field, and the routes `ugate run` appends.
        let json = #"{"peers": [{"id": "\#(bob.node.id)", "name": "bob", "publicKey": "\#(bob.publicKeyBase64URL)"},"#
            + #"{"id": "\#(other.node.id)", "name": "other"}]}"#
        let section = try JSONDecoder().decode(MeshSection.self, from: Data(json.utf8))
        XCTAssertEqual(section.peers[0].vip6, bob.node.vip6)
        let routes = section.meshRoutes(naming: MeshNaming())
        XCTAssertTrue(routes.contains(RouteConfig(dest: bob.node.vip6, to: "mesh:bob")), "\(routes)")
        XCTAssertEqual(routes.filter { $0.to == "mesh:other" }.count, 2, "a peer without key: hostname and ID only")
    }

    /// alice's route table (mesh routes as `ugate run` appends them) sends `[bobVIP6]:port` to
    /// `mesh:bob`, and bob connects its own port; and through gate, which knows bob's key, to bob
    /// in one more hop.
    func testVIP6DestinationReachesThePeer() async throws {
        let echo = try await echoServer()
        let aliceID = try NodeIdentity.generate()
        let gateID = try NodeIdentity.generate()
        let bobID = try NodeIdentity.generate()
        let (alice, gate, bob) = (aliceID.node.id, gateID.node.id, bobID.node.id)
        let port = UInt16(echo.port)
        let (_, bobPort) = try await node(bobID, peers: [
            PeerConfig(id: alice, destinations: ["127.0.0.1:\(port)"]), PeerConfig(id: gate, destinations: ["127.0.0.1:\(port)"]),
        ])
        let bobPeer = PeerConfig(id: bob, name: "bob", addresses: ["127.0.0.1:\(bobPort)"], publicKey: bobID.publicKeyBase64URL)
        let (gateNode, gatePort) = try await node(gateID, peers: [
            PeerConfig(id: alice, destinations: ["[\(bobID.node.vip6)]:\(port)"]), bobPeer,
        ])
        var section = MeshSection()
        section.peers = [bobPeer, PeerConfig(id: gate, name: "gate", addresses: ["127.0.0.1:\(gatePort)"])]
        let (aliceNode, _) = try await node(aliceID, peers: section.peers)
        let loops = try GateLoopGroup(count: 1)
        defer { loops.shutdown() }
        let router = try Router(
            rules: section.meshRoutes(naming: aliceID.naming), hosts: [:], direct: DirectUpstream(loops: loops),
            upstreams: ["mesh:bob": try aliceNode.upstream(to: bob), "mesh:gate": try aliceNode.upstream(to: gate, kind: .hbone)])

        let destination = Destination(host: bobID.node.vip6, port: port)
        let decision = try router.route(info(destination))
        XCTAssertEqual(decision.upstream.name, try aliceNode.upstream(to: bob).name, "routed to mesh:bob")
        XCTAssertEqual(decision.destination, destination)
        try await echoAndHalfClose(decision.upstream, to: decision.destination)
        XCTAssertEqual(echo.accepted, 1)

        // A relaying node: gate knows bob's key, so bob's VIP6 is one more hop to bob.
        XCTAssertEqual(gateNode.router.next(for: destination).peerID, bob)
        XCTAssertEqual(gateNode.router.next(for: Destination(host: gateID.node.vip6, port: 1)).localPort, 1, "its own VIP6")
        XCTAssertNil(gateNode.router.next(for: Destination(host: aliceID.node.vip6, port: 1)).peerID, "no key for alice: the dialer")
        try await echoAndHalfClose(try aliceNode.upstream(to: gate, kind: .hbone), to: destination)
        XCTAssertEqual(echo.accepted, 2)

        // bob may be asked for nothing but its echo port by VIP6 either.
        let other = Destination(host: bobID.node.vip6, port: 1)
        do {
            close(try await aliceNode.upstream(to: bob).dial(other, for: info(other)))
            XCTFail("bob connected a port alice may not reach")
        } catch let error as MeshError {
            XCTAssertEqual(error.status, 403)
        }
    }
}

extension TunnelRouter.Next {
    fileprivate var peerID: String? {
        if case .peer(let peer) = self { return peer.id }
        return nil
    }

    fileprivate var localPort: UInt16? {
        if case .local(let destination) = self { return destination.port }
        return nil
    }
}
