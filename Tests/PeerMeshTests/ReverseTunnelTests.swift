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
        let bobNode = try startBehindNAT(bobID, gateway: gateID.node.id, gatePort: gatePort, echoPort: echo.port)
        let (alice, _) = try await node(aliceID, peers: [PeerConfig(id: gateID.node.id, addresses: ["127.0.0.1:\(gatePort)"])])
        try await waitUntil("bob's reverse tunnel is up") { gate.hasReverseTunnel(from: bob) }

        let port = UInt16(echo.port)
        try await echoAndHalfClose(try alice.upstream(to: gateID.node.id, kind: .hbone), to: Destination(host: bob, port: port))
        try await echoAndHalfClose(
            try alice.upstream(to: gateID.node.id, kind: .dm), to: Destination(host: bobID.mangledHostname, port: port))
        XCTAssertEqual(echo.accepted, 2)
        // gate joined the two streams directly, without a socketpair (on one loop or across two,
        // depending on where it adopted alice's connection and bob's tunnel).
        XCTAssertTrue(gateLog.contains("tunnel joined to the next hop's stream"), "\(gateLog.messages)")

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

    /// The gateway runs on two loops and adopts bob's tunnel and alice's connection round-robin,
    /// so they land on different loops: each relayed stream is joined across loops
    /// (`GlueHandler.crossLoopPair`). Bytes both ways (3 MiB compared), half-close both ways,
    /// and several streams at once.
    func testStreamsJoinedAcrossGatewayLoops() async throws {
        let echo = try await echoServer()
        let aliceID = try NodeIdentity.generate()
        let gateID = try NodeIdentity.generate()
        let bobID = try NodeIdentity.generate()
        let bob = bobID.node.id
        let gateLog = LogCapture()
        let gate = try MeshNode(
            config: MeshConfig(identityDir: "-", peers: [
                PeerConfig(id: aliceID.node.id, destinations: ["\(bob):\(echo.port)"]), PeerConfig(id: bob),
            ], listenHost: "127.0.0.1"),
            identity: gateID, ownThreads: 2, logger: gateLog.logger("gate"))
        cleanups.append { await gate.shutdown() }
        let gatePort = try await gate.listen(port: 0, name: "mesh")
        _ = try startBehindNAT(bobID, gateway: gateID.node.id, gatePort: gatePort, echoPort: echo.port)
        try await waitUntil("bob's reverse tunnel is up") { gate.hasReverseTunnel(from: bob) }
        // Adopted after bob's tunnel: the gateway's other loop.
        let (alice, _) = try await node(aliceID, peers: [PeerConfig(id: gateID.node.id, addresses: ["127.0.0.1:\(gatePort)"])])

        let destination = Destination(host: bob, port: UInt16(echo.port))
        try await echoAndHalfClose(try alice.upstream(to: gateID.node.id, kind: .hbone), to: destination)
        try await echoAndHalfClose(try alice.upstream(to: gateID.node.id, kind: .dm), to: destination)
        XCTAssertTrue(gateLog.contains("tunnel joined to the next hop's stream across loops"), "\(gateLog.messages)")
        XCTAssertFalse(gateLog.contains("tunnel joined to the next hop's stream on this loop"), "\(gateLog.messages)")

        // Four streams at once, each with its own bytes.
        let upstream = try alice.upstream(to: gateID.node.id, kind: .dm)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<4 {
                group.addTask {
                    let fd = try await upstream.dial(destination, for: StreamInfo(listener: "test", source: "127.0.0.1:1", destination: destination))
                    defer { close(fd) }
                    let bytes = randomBytes(2 << 20)
                    let echoed = try FD.exchange(fd, send: bytes)
                    XCTAssertTrue(echoed == bytes, "echo differs (\(echoed.count) of \(bytes.count) bytes)")
                }
            }
            try await group.waitForAll()
        }
        XCTAssertEqual(echo.accepted, 6)
    }

    /// bob: no listener, a reverse tunnel to the gateway, may be asked for the echo port only.
    private func startBehindNAT(_ bobID: NodeIdentity, gateway: String, gatePort: Int, echoPort: Int) throws -> MeshNode {
        let bobNode = try MeshNode(
            config: MeshConfig(identityDir: "-", peers: [
                PeerConfig(id: gateway, addresses: ["127.0.0.1:\(gatePort)"], destinations: ["127.0.0.1:\(echoPort)"]),
            ]),
            identity: bobID)
        cleanups.append { await bobNode.shutdown() }
        try bobNode.startReverseTunnel(to: gateway)
        return bobNode
    }
}
