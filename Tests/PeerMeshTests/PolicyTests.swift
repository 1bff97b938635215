import Crypto
import Foundation
import Gate
import XCTest
@testable import PeerMesh

final class PolicyTests: XCTestCase {
    func testDestinationPatterns() throws {
        let cases: [(String, String, UInt16, Bool)] = [
            ("*", "anything", 1, true),
            ("*:443", "example.com", 443, true),
            ("*:443", "example.com", 80, false),
            ("*.example.com:*", "a.b.EXAMPLE.com", 8080, true),
            ("*.example.com:*", "example.com", 8080, false),
            ("10.0.0.*:22", "10.0.0.7", 22, true),
            ("10.0.0.*:22", "10.0.1.7", 22, false),
            ("[fd00::1]:80", "fd00::1", 80, true),
            ("127.0.0.1:9", "127.0.0.1", 9, true),
        ]
        for (pattern, host, port, expected) in cases {
            XCTAssertEqual(try DestinationPattern(pattern).matches(Destination(host: host, port: port)), expected, "\(pattern) vs \(host):\(port)")
        }
        for bad in ["nohost", "host:notaport", ":80", "host:70000"] {
            XCTAssertThrowsError(try DestinationPattern(bad), bad)
        }
    }

    func testPolicyRefusesUnknownAndUnlistedDestinations() throws {
        let a = String(repeating: "A", count: 52)
        let b = String(repeating: "B", count: 52)
        let policy = try PeerPolicy(peers: [
            PeerConfig(id: a, egress: true),
            PeerConfig(id: b, destinations: ["127.0.0.1:8080"]),
        ])
        XCTAssertNil(policy.refusal(peerID: a, destination: Destination(host: "example.com", port: 443)))
        XCTAssertNil(policy.refusal(peerID: b, destination: Destination(host: "127.0.0.1", port: 8080)))
        XCTAssertEqual(policy.refusal(peerID: b, destination: Destination(host: "127.0.0.1", port: 22))?.code, .forbidden)
        XCTAssertEqual(policy.refusal(peerID: b, destination: Destination(host: "127.0.0.1", port: 22))?.status, 403)
        XCTAssertEqual(policy.refusal(peerID: String(repeating: "C", count: 52), destination: Destination(host: "x", port: 1))?.code, .unknownPeer)
        XCTAssertThrowsError(try PeerPolicy(peers: [PeerConfig(id: "short")]))
        XCTAssertThrowsError(try PeerPolicy(peers: [PeerConfig(id: a), PeerConfig(id: a)]))
    }

    func testPeerConfigDecodesWithDefaults() throws {
        let json = #"{"id": "\#(String(repeating: "A", count: 52))", "addresses": ["10.0.0.1:15007"]}"#
        let peer = try JSONDecoder().decode(PeerConfig.self, from: Data(json.utf8))
        XCTAssertEqual(peer.addresses, ["10.0.0.1:15007"])
        XCTAssertFalse(peer.egress)
        XCTAssertEqual(peer.destinations, [])
    }

    func testTLSPortsDecodeAndValidate() throws {
        let section = try JSONDecoder().decode(MeshSection.self, from: Data(#"{"peers": [], "tlsPorts": [8443, 9000]}"#.utf8))
        XCTAssertEqual(section.tlsPorts, [8443, 9000])
        XCTAssertNoThrow(try section.validate())
        XCTAssertEqual(section.meshConfig(identityDir: "-", defaultHost: "127.0.0.1").tlsPorts, [8443, 9000])
        XCTAssertEqual(try JSONDecoder().decode(MeshSection.self, from: Data("{}".utf8)).tlsPorts, [])
        var bad = section
        bad.tlsPorts = [443, 0]
        XCTAssertThrowsError(try bad.validate()) { error in
            XCTAssertEqual((error as? MeshError)?.message, "field mesh.tlsPorts[1]: 0 is not a TCP port (1-65535)")
        }
        XCTAssertEqual(SNIRouter.istioOutbound("outbound_.8443_._.host.ns.td")?.port, 8443)
        XCTAssertEqual(SNIRouter.istioOutbound("outbound_.8443_.v1_.host")?.host, "host")
        for name in ["outbound_.0_._.host", "outbound_.x_._.host", "outbound_.80_._.", "inbound_.80_._.host", "host.ns.td"] {
            XCTAssertNil(SNIRouter.istioOutbound(name), name)
        }
    }

    func testTunnelRequestParsing() throws {
        let dm = try TunnelRequest.parse([(":method", "POST"), (":scheme", "https"), (":path", "/dm/example.com:443"), (":authority", "x")])
        XCTAssertEqual(dm, TunnelRequest(kind: .dm, destination: Destination(host: "example.com", port: 443)))
        let hbone = try TunnelRequest.parse([(":authority", "[fd00::1]:8080"), (":method", "CONNECT")])
        XCTAssertEqual(hbone, TunnelRequest(kind: .hbone, destination: Destination(host: "fd00::1", port: 8080)))
        // Round trip through the header fields we send.
        for request in [dm, hbone] {
            XCTAssertEqual(try TunnelRequest.parse(request.headerFields(authority: "node")), request)
        }
        let malformed: [[(String, String)]] = [
            [(":method", "GET"), (":path", "/dm/a:1")],
            [(":method", "POST"), (":path", "/other")],
            [(":method", "POST"), (":path", "/dm/nohostport")],
            [(":method", "POST"), (":path", "/dm/a:0")],
            [(":method", "CONNECT")],
            [(":method", "CONNECT"), (":authority", "fd00::1:80")],
            [(":method", "CONNECT"), (":authority", "[fd00::1]80")],
            [(":path", "/dm/a:1")],
        ]
        for fields in malformed {
            XCTAssertThrowsError(try TunnelRequest.parse(fields.map { (name: $0.0, value: $0.1) })) { error in
                XCTAssertEqual((error as? MeshError)?.status, 400, "\(fields)")
            }
        }
    }

    func testVerifierRefusesWrongKeyForClaimedID() throws {
        let alice = try NodeIdentity.generate()
        let mallory = P256.Signing.PrivateKey()
        let forged = try NodeIdentity.selfSignedCertificate(key: mallory, claimedID: alice.node.id, naming: MeshNaming())
        let forgedDER = try NodeIdentity(privateKey: mallory, naming: MeshNaming(), certificateChain: [forged]).leafDER
        let policy = try PeerPolicy(peers: [PeerConfig(id: alice.node.id)])
        guard case .failure(let error) = PeerVerifier.verify(leafDER: forgedDER, policy: policy, expected: nil) else {
            return XCTFail("a certificate claiming alice's ID with another key was accepted")
        }
        XCTAssertEqual(error.code, .wrongKey)
        XCTAssertTrue(error.message.contains(alice.node.id))

        guard case .success(let node) = PeerVerifier.verify(leafDER: alice.leafDER, policy: policy, expected: alice.node.id) else {
            return XCTFail("alice refused")
        }
        XCTAssertEqual(node, alice.node)
        let bob = try NodeIdentity.generate()
        guard case .failure(let unexpected) = PeerVerifier.verify(leafDER: alice.leafDER, policy: policy, expected: bob.node.id) else {
            return XCTFail("dialled bob, accepted alice")
        }
        XCTAssertEqual(unexpected.code, .unexpectedPeer)
        guard case .failure(let unknown) = PeerVerifier.verify(leafDER: bob.leafDER, policy: policy, expected: nil) else {
            return XCTFail("unknown bob accepted")
        }
        XCTAssertEqual(unknown.code, .unknownPeer)
    }
}
