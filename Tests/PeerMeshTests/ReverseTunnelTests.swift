import Foundation
import Gate
import XCTest
@testable import PeerMesh

/// alice → gate → bob, where bob has no listener at all (as behind NAT) and keeps a reverse
/// tunnel to gate; gate routes `bobID:port` (or bob's mangled hostname) through it.
final class ReverseTunnelTests: MeshTestCase {
    func testEchoThroughReverseTunnelSurvivesGatewayRestart() async throws {
        let echo = try await echoServer()
        let aliceID = try NodeIdentity.generate()
        let gateID = try NodeIdentity.generate()
        let bobID = try NodeIdentity.generate()
        let bob = bobID.node.id
        let gatePeers = [
            PeerConfig(id: aliceID.node.id, destinations: ["\(bob):\(echo.port)", "\(bobID.mangledHostname):\(echo.port)"]),
            PeerConfig(id: bob),
        ]
        let gateLog = LogCapture()
        let (gate, gatePort) = try await node(gateID, peers: gatePeers, log: gateLog)
        let bobNode = try MeshNode(
            config: MeshConfig(identityDir: "-", peers: [
                PeerConfig(id: gateID.node.id, addresses: ["127.0.0.1:\(gatePort)"], destinations: ["127.0.0.1:\(echo.port)"]),
            ]),
            identity: bobID)
        cleanups.append { await bobNode.shutdown() }
        try bobNode.startReverseTunnel(to: gateID.node.id)
        let (alice, _) = try await node(aliceID, peers: [PeerConfig(id: gateID.node.id, addresses: ["127.0.0.1:\(gatePort)"])])
        try await waitUntil("bob's reverse tunnel is up") { gate.hasReverseTunnel(from: bob) }

        let port = UInt16(echo.port)
        try await echoAndHalfClose(try alice.upstream(to: gateID.node.id, kind: .hbone), to: Destination(host: bob, port: port))
        try await echoAndHalfClose(
            try alice.upstream(to: gateID.node.id, kind: .dm), to: Destination(host: bobID.mangledHostname, port: port))
        XCTAssertEqual(echo.accepted, 2)
        // gate accepted both alice's connection and bob's tunnel on its accept loop: the two
        // streams were joined directly, without a socketpair.
        XCTAssertTrue(gateLog.contains("tunnel joined to the next hop's stream on this loop"), "\(gateLog.messages)")

        // bob may not be asked for anything but its echo port.
        let other = Destination(host: bob, port: 1)
        do {
            close(try await alice.upstream(to: gateID.node.id).dial(other, for: info(other)))
            XCTFail("gate relayed to a destination alice may not reach")
        } catch let error as MeshError {
            XCTAssertEqual(error.status, 403)
        }

        // The gateway restarts on the same port: bob's tunnel comes back by itself.
        await gate.shutdown()
        let gate2 = try MeshNode(
            config: MeshConfig(identityDir: "-", peers: gatePeers, listenHost: "127.0.0.1"), identity: gateID)
        cleanups.append { await gate2.shutdown() }
        _ = try await gate2.listen(port: gatePort, name: "mesh")
        // Both ends see the new tunnel (bob counts it once its own side of the handshake returned).
        try await waitUntil("bob's reverse tunnel is back") {
            gate2.hasReverseTunnel(from: bob) && bobNode.reverseTunnelConnections >= 2
        }
        try await echoAndHalfClose(try alice.upstream(to: gateID.node.id, kind: .hbone), to: Destination(host: bob, port: port))
        XCTAssertEqual(echo.accepted, 3)
    }
}
