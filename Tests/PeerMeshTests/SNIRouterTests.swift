import Foundation
import Gate
import NIOTLS
import XCTest
@testable import PeerMesh

/// alice's TLS for bob goes to gate's mesh port; gate reads only the SNI (bob's mangled
/// hostname) and forwards the undecrypted connection to bob, which terminates mTLS with alice.
/// The forwarding is the Gate's relay, in the mode gate's config selects.
final class SNIRouterTests: MeshTestCase {
    func testSNIForBobIsForwardedWithoutDecrypting() async throws {
        try await forwardsSNIForBob(.copy)
    }

    func testSNIForwardingSplicesWhenConfigured() async throws {
        try await forwardsSNIForBob(.splice)
    }

    private func forwardsSNIForBob(_ forwarder: ForwardMode) async throws {
        let echo = try await echoServer()
        let aliceDir = try temporaryDirectory("sni-alice")
        defer { try? FileManager.default.removeItem(atPath: aliceDir) }
        let aliceID = try NodeIdentity.loadOrCreate(directory: aliceDir)
        let gateID = try NodeIdentity.generate()
        let bobID = try NodeIdentity.generate()
        let (bob, bobPort) = try await node(bobID, peers: [PeerConfig(id: aliceID.node.id, destinations: ["127.0.0.1:\(echo.port)"])])
        // gate knows bob's address and nothing about alice.
        let (gate, gatePort) = try await node(
            gateID, peers: [PeerConfig(id: bobID.node.id, addresses: ["127.0.0.1:\(bobPort)"])], forwarder: forwarder)
        // alice reaches bob at gate's address.
        let (alice, _) = try await node(aliceID, peers: [PeerConfig(id: bobID.node.id, addresses: ["127.0.0.1:\(gatePort)"])])

        try await echoAndHalfClose(try alice.upstream(to: bobID.node.id, kind: .hbone), port: echo.port)
        XCTAssertEqual(gate.acceptedConnections, 0, "gate terminated no TLS")
        XCTAssertEqual(bob.acceptedConnections, 1, "bob terminated alice's TLS")
        // alice's pooled connection to bob is still open: it is a stream of the Gate's relay.
        let streams = await gate.sniStreams()
        XCTAssertEqual(streams.count, 1, "\(streams)")
        XCTAssertEqual(streams.first?.upstream, "mesh-sni:\(bobID.node.id)")
        XCTAssertEqual(streams.first?.mode, forwarder.rawValue)
        XCTAssertEqual(streams.first?.serverName, bobID.mangledHostname)
        XCTAssertGreaterThan(streams.first?.bytesUp ?? 0, 0)
        XCTAssertGreaterThan(streams.first?.bytesDown ?? 0, 0)

        // A foreign TLS client (openssl s_client) names bob in SNI at gate's port and sees bob's certificate.
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/timeout")
        process.arguments = [
            "20", "openssl", "s_client", "-connect", "127.0.0.1:\(gatePort)", "-servername", bobID.mangledHostname,
            "-cert", "\(aliceDir)/cert.pem", "-key", "\(aliceDir)/key.pem", "-alpn", "h2",
        ]
        let out = Pipe()
        process.standardOutput = out
        process.standardError = FileHandle.nullDevice
        process.standardInput = FileHandle.nullDevice
        try process.run()
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        XCTAssertTrue(text.contains("CN = \(bobID.node.id)") || text.contains("CN=\(bobID.node.id)"), text)
        XCTAssertTrue(text.contains("ALPN protocol: h2"), text)
        XCTAssertEqual(gate.acceptedConnections, 0)
    }

    func testSNIRouteDecision() throws {
        let selfID = try NodeIdentity.generate().node.id
        let peer = try NodeIdentity.generate().node.id
        let hidden = try NodeIdentity.generate().node.id
        let naming = MeshNaming()
        let policy = try PeerPolicy(peers: [PeerConfig(id: peer, addresses: ["10.0.0.2:15007"]), PeerConfig(id: hidden)])
        let router = SNIRouter(
            selfID: selfID, naming: naming, policy: policy, relays: RelayRegistry(gatewayID: selfID, policy: policy, maxPerNode: 4),
            logger: LogCapture().logger("t"))
        // The production path: the Gate's accept peek asks `verdict(serverName:)`.
        let forwarded = [
            naming.hostname(for: peer), naming.hostname(for: peer).lowercased(), "outbound_.8080_._.\(naming.hostname(for: peer))",
        ]
        for name in forwarded {
            guard case .forward(let destination, let upstream) = router.verdict(serverName: name) else {
                return XCTFail("the Gate forwards TLS naming a peer with an address (\(name))")
            }
            XCTAssertEqual(destination, Destination(host: "10.0.0.2", port: 15007), name)
            XCTAssertEqual(upstream, "mesh-sni:\(peer)", name)
        }
        // This node terminates its own name; a peer without an address, other names and no SNI
        // are handed to SwiftNIO too.
        for name in [naming.hostname(for: selfID), naming.hostname(for: hidden), "example.com", nil] {
            guard case .handOff = router.verdict(serverName: name) else { return XCTFail("\(name ?? "no SNI") is not forwarded") }
        }
        XCTAssertNil(router.relayTarget(serverName: naming.hostname(for: peer)), "no registrations here")
    }
}
