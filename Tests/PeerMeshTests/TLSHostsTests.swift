import Foundation
import Gate
import Glibc
import XCTest
@testable import PeerMesh

/// Ordinary host names over plain TLS (`mesh.tlsHosts`): bob (no listener, as behind NAT) keeps
/// relay registrations with gate and serves `db.example.com` with its own certificate; gate's
/// peer entry for bob grants it that name, so TLS with that SNI at gate's port is spliced into a
/// bob registration undecrypted and bob carries the plaintext to its local port.
final class TLSHostsTests: MeshTestCase {
    private static let name = "db.example.com"

    /// A self-signed P-256 certificate (openssl) whose SAN lists `names`; its PEM files.
    private func certificate(_ names: [String]) throws -> TLSHostConfig {
        let dir = try temporaryDirectory("tlshost")
        cleanups.append { try? FileManager.default.removeItem(atPath: dir) }
        try runCommand([
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
            "-subj", "/CN=\(names[0])", "-addext", "subjectAltName=" + names.map { "DNS:\($0)" }.joined(separator: ","),
            "-keyout", "\(dir)/key.pem", "-out", "\(dir)/cert.pem",
        ])
        return TLSHostConfig(port: 0, cert: "\(dir)/cert.pem", key: "\(dir)/key.pem")
    }

    private struct Nodes {
        var gate: MeshNode
        var gatePort: Int
        var bob: MeshNode
        var bobID: String
    }

    private func nodes(host: TLSHostConfig, grant: [String], served: String = TLSHostsTests.name, pool: Int = 2) async throws -> Nodes {
        let gateID = try NodeIdentity.generate()
        let bobID = try NodeIdentity.generate()
        let (gate, gatePort) = try await node(gateID, peers: [PeerConfig(id: bobID.node.id, tlsHosts: grant)])
        let bob = try MeshNode(
            config: MeshConfig(
                identityDir: "-", peers: [PeerConfig(id: gateID.node.id, addresses: ["127.0.0.1:\(gatePort)"])],
                tlsHosts: [served: host]),
            identity: bobID)
        cleanups.append { await bob.shutdown() }
        try bob.startRelay(to: gateID.node.id, poolSize: pool)
        try await waitUntil("bob registered \(pool) relay connections") { gate.relayConnections(from: bobID.node.id) == pool }
        return Nodes(gate: gate, gatePort: gatePort, bob: bob, bobID: bobID.node.id)
    }

    /// Python `ssl` that verifies the server against `ca` for the SNI name (hostname check on):
    /// argv host port sni ca size; sends `size` random bytes in 64 KiB pieces, each echoed back
    /// before the next, and prints the certificate's DNS names and whether the echo matched.
    private static let pythonVerifiedEcho = """
        import json, os, socket, ssl, sys
        host, port, sni, ca, size = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
        ctx = ssl.create_default_context(cafile=ca)
        ctx.verify_flags &= ~getattr(ssl, "VERIFY_X509_STRICT", 0)  # the self-signed test certificate is its own CA
        s = ctx.wrap_socket(socket.create_connection((host, port), timeout=20), server_hostname=sni)
        san = [v for k, v in s.getpeercert().get("subjectAltName", ()) if k == "DNS"]
        """ + pythonPiecewiseEcho(report: #""san": san"#)

    func testHostNameThroughTheGatewaysRelayRegistrations() async throws {
        let echo = try await echoServer()
        var host = try certificate([Self.name])
        host.port = echo.port
        let n = try await nodes(host: host, grant: [Self.name])

        // Python: the certificate verifies for db.example.com against its own CA file, and the bytes come back.
        let python = try runPython(["-c", Self.pythonVerifiedEcho, "127.0.0.1", "\(n.gatePort)", Self.name, host.cert, "\(1 << 20)"])
        XCTAssertEqual(python.0, 0, python.1)
        XCTAssertTrue(python.1.contains("\"san\": [\"db.example.com\"]") && python.1.contains("\"match\": true"), python.1)
        XCTAssertEqual(echo.accepted, 1)
        XCTAssertEqual(n.gate.acceptedConnections, 0, "gate terminated no TLS: it spliced into bob's registration")
        XCTAssertEqual(n.bob.relayStatus(gateway: n.gate.identity.node.id).used, 1)

        // openssl s_client: verification against the name succeeds (SNI in any case).
        try await waitUntil("bob refilled its relay pool") { n.gate.relayConnections(from: n.bobID) == 2 }
        let openssl = try runCommand([
            "timeout", "20", "openssl", "s_client", "-connect", "127.0.0.1:\(n.gatePort)", "-servername", "DB.Example.com",
            "-CAfile", host.cert, "-verify_hostname", Self.name, "-verify_return_error",
        ])
        XCTAssertTrue(openssl.contains("Verify return code: 0 (ok)"), openssl)
        XCTAssertTrue(openssl.contains("CN = \(Self.name)") || openssl.contains("CN=\(Self.name)"), openssl)
        try await waitUntil("the openssl connection reached the port") { echo.accepted == 2 }

        // A name nobody was granted: gate terminates it as mesh mTLS, which refuses a client
        // without a certificate; nothing reaches bob or the port.
        try await waitUntil("bob refilled its relay pool") { n.gate.relayConnections(from: n.bobID) == 2 }
        let used = n.bob.relayStatus(gateway: n.gate.identity.node.id).used
        let unknown = try runPython(["-c", Self.pythonVerifiedEcho, "127.0.0.1", "\(n.gatePort)", "other.example.com", host.cert, "1000"])
        XCTAssertNotEqual(unknown.0, 0, unknown.1)
        XCTAssertFalse(unknown.1.contains("\"match\": true"), unknown.1)
        XCTAssertEqual(n.bob.relayStatus(gateway: n.gate.identity.node.id).used, used, "no registration was used")
        XCTAssertEqual(echo.accepted, 2, "nothing relayed for an unknown name")
    }

    /// bob also serves the name on its own mesh port; termination verdicts by name.
    func testHostNameOnTheNodesOwnPortAndVerdicts() async throws {
        let echo = try await echoServer()
        var host = try certificate([Self.name])
        host.port = echo.port
        let bobID = try NodeIdentity.generate()
        let bob = try MeshNode(
            config: MeshConfig(identityDir: "-", listenHost: "127.0.0.1", tlsHosts: ["DB.example.com": host]), identity: bobID)
        cleanups.append { await bob.shutdown() }
        let port = try await bob.listen(port: 0, name: "mesh")
        let python = try runPython(["-c", Self.pythonVerifiedEcho, "127.0.0.1", "\(port)", Self.name, host.cert, "\(256 << 10)"])
        XCTAssertEqual(python.0, 0, python.1)
        XCTAssertEqual(echo.accepted, 1)
        XCTAssertEqual(bob.termination(serverName: "db.EXAMPLE.com"), .host(Self.name, port: echo.port))
        XCTAssertEqual(bob.termination(serverName: "x.db.example.com"), .mesh)
        XCTAssertEqual(bob.termination(serverName: nil), .mesh)
    }

    /// The gateway's routing decision for a granted name, and for names it must not route.
    func testGatewayRoutesOnlyGrantedNames() throws {
        let bob = try NodeIdentity.generate().node.id
        let carol = try NodeIdentity.generate().node.id
        let selfID = try NodeIdentity.generate().node.id
        let policy = try PeerPolicy(peers: [
            PeerConfig(id: bob, addresses: ["127.0.0.1:9"], tlsHosts: ["db.example.com"]),
            PeerConfig(id: carol, tlsHosts: ["Web.Example.com"]),
        ])
        XCTAssertEqual(policy.peer(tlsHost: "DB.example.COM")?.id, bob)
        XCTAssertEqual(policy.peer(tlsHost: "web.example.com")?.id, carol)
        XCTAssertNil(policy.peer(tlsHost: "other.example.com"))
        let router = SNIRouter(
            selfID: selfID, naming: MeshNaming(), policy: policy,
            relays: RelayRegistry(gatewayID: selfID, policy: policy, maxPerNode: 4), logger: .init(label: "test"))
        guard case .forward(let destination, let upstream) = router.verdict(serverName: "db.example.com") else {
            return XCTFail("a granted name with an address is forwarded to its node")
        }
        XCTAssertEqual(destination, Destination(host: "127.0.0.1", port: 9))
        XCTAssertEqual(upstream, "mesh-sni:\(bob)")
        guard case .handOff = router.verdict(serverName: "other.example.com") else { return XCTFail("unknown names are terminated here") }
        XCTAssertThrowsError(try PeerPolicy(peers: [
            PeerConfig(id: bob, tlsHosts: ["db.example.com"]), PeerConfig(id: carol, tlsHosts: ["DB.example.com"]),
        ])) { XCTAssertTrue("\($0)".contains("db.example.com is listed for two peers"), "\($0)") }
    }

    /// Bad `tlsHosts` entries: the config and the node refuse them with an error naming the field.
    func testBadEntriesAreRefusedWithClearErrors() async throws {
        let good = try certificate([Self.name])
        let other = try certificate(["other.example.com"])
        func section(_ json: String) throws -> MeshSection {
            try JSONDecoder().decode(MeshSection.self, from: Data(json.utf8))
        }
        func refused(_ json: String, _ text: String, line: UInt = #line) {
            XCTAssertThrowsError(try section(json).validate(), line: line) { XCTAssertTrue("\($0)".contains(text), "\($0)", line: line) }
        }
        refused(#"{"tlsHosts": {"db.example.com": {"port": 0, "cert": "c", "key": "k"}}}"#, #"mesh.tlsHosts["db.example.com"].port: 0 is not a TCP port"#)
        refused(#"{"tlsHosts": {"*.com": {"port": 1, "cert": "c", "key": "k"}}}"#, "is not a host name or wildcard")
        refused(#"{"tlsHosts": {"a.*.example.com": {"port": 1, "cert": "c", "key": "k"}}}"#, "is not a DNS host name")
        refused(#"{"tlsHosts": {"db.example.com": {"port": 1, "cert": "", "key": "k"}}}"#, "cert: the certificate PEM file is required")
        refused(#"{"peers": [{"id": "X", "tlsHosts": ["bad name"]}]}"#, "mesh.peers[0].tlsHosts[0]")
        XCTAssertThrowsError(try section(#"{"tlsHosts": {"db.example.com": {"port": 1, "cert": "c"}}}"#))
        XCTAssertThrowsError(try section(#"{"tlsHosts": {"db.example.com": {"port": 1, "cert": "c", "key": "k", "pem": 1}}}"#)) {
            XCTAssertTrue("\($0)".contains("pem"), "\($0)")
        }
        XCTAssertNoThrow(try section(#"{"tlsHosts": {"db.example.com": {"port": 5432, "cert": "c", "key": "k"}}}"#).validate())

        func node(_ host: TLSHostConfig) throws -> MeshNode {
            try MeshNode(config: MeshConfig(identityDir: "-", tlsHosts: [Self.name: host]), identity: try NodeIdentity.generate())
        }
        func nodeRefused(_ host: TLSHostConfig, _ text: String, line: UInt = #line) {
            XCTAssertThrowsError(try node(host), line: line) { XCTAssertTrue("\($0)".contains(text), "\($0)", line: line) }
        }
        nodeRefused(TLSHostConfig(port: 5432, cert: "/nonexistent/cert.pem", key: good.key), "cert: cannot read /nonexistent/cert.pem")
        nodeRefused(TLSHostConfig(port: 5432, cert: good.cert, key: "/nonexistent/key.pem"), "key: cannot read /nonexistent/key.pem")
        nodeRefused(TLSHostConfig(port: 5432, cert: other.cert, key: other.key), "is not valid for db.example.com (its DNS names: other.example.com)")
        nodeRefused(TLSHostConfig(port: 5432, cert: good.cert, key: other.key), "does not belong to the certificate")
        nodeRefused(TLSHostConfig(port: 5432, cert: good.key, key: good.key), "is not a PEM certificate chain")
        let wildcard = try certificate(["*.example.com"])
        let covered = try node(TLSHostConfig(port: 5432, cert: wildcard.cert, key: wildcard.key))
        await covered.shutdown()
        XCTAssertTrue(TLSHosts.covers("*.example.com", "db.example.com"))
        XCTAssertFalse(TLSHosts.covers("*.example.com", "a.db.example.com"), "a wildcard covers one label only")
        XCTAssertFalse(TLSHosts.covers("*.example.com", "example.com"))
    }

    /// A wildcard grant at the gateway and a wildcard name on the node: any single label below
    /// the domain goes through the relay to bob and is terminated with bob's wildcard
    /// certificate (verified by Python `ssl` for that name); the apex and deeper names are not
    /// routed to bob.
    func testWildcardGrantThroughTheRelay() async throws {
        let echo = try await echoServer()
        var host = try certificate(["*.example.com"])
        host.port = echo.port
        let n = try await nodes(host: host, grant: ["*.Example.com"], served: "*.example.com")
        let python = try runPython(["-c", Self.pythonVerifiedEcho, "127.0.0.1", "\(n.gatePort)", "api.example.com", host.cert, "\(256 << 10)"])
        XCTAssertEqual(python.0, 0, python.1)
        XCTAssertTrue(python.1.contains("\"san\": [\"*.example.com\"]") && python.1.contains("\"match\": true"), python.1)
        XCTAssertEqual(echo.accepted, 1)
        XCTAssertEqual(n.gate.acceptedConnections, 0, "gate spliced the wildcard name into bob's registration")
        XCTAssertEqual(n.bob.termination(serverName: "API.example.com"), .host("api.example.com", port: echo.port))
        XCTAssertEqual(n.bob.termination(serverName: "a.b.example.com"), .mesh)
        XCTAssertEqual(n.bob.termination(serverName: "example.com"), .mesh)
        // Deeper names and the apex are not granted: gate terminates them (mesh mTLS refuses a
        // client without a certificate) and no registration is used.
        try await waitUntil("bob refilled its relay pool") { n.gate.relayConnections(from: n.bobID) == 2 }
        let used = n.bob.relayStatus(gateway: n.gate.identity.node.id).used
        for name in ["a.b.example.com", "example.com"] {
            let refused = try runPython(["-c", Self.pythonVerifiedEcho, "127.0.0.1", "\(n.gatePort)", name, host.cert, "1000"])
            XCTAssertNotEqual(refused.0, 0, refused.1)
        }
        XCTAssertEqual(n.bob.relayStatus(gateway: n.gate.identity.node.id).used, used, "no registration was used")
        XCTAssertEqual(echo.accepted, 1)
    }

    /// Wildcard grants in the gateway's peer entries: one label only, exact grants win, the
    /// same wildcard for two peers is refused at config load naming the fields.
    func testWildcardGrantsAndConflicts() throws {
        let bob = try NodeIdentity.generate().node.id
        let carol = try NodeIdentity.generate().node.id
        let selfID = try NodeIdentity.generate().node.id
        let policy = try PeerPolicy(peers: [
            PeerConfig(id: bob, addresses: ["127.0.0.1:9"], tlsHosts: ["*.example.com"]),
            PeerConfig(id: carol, addresses: ["127.0.0.1:10"], tlsHosts: ["db.example.com", "*.shop.example.com"]),
        ])
        XCTAssertEqual(policy.peer(tlsHost: "web.EXAMPLE.com")?.id, bob)
        XCTAssertEqual(policy.peer(tlsHost: "db.example.com")?.id, carol, "the exact grant wins")
        XCTAssertEqual(policy.peer(tlsHost: "x.shop.example.com")?.id, carol)
        XCTAssertEqual(policy.peer(tlsHost: "shop.example.com")?.id, bob, "shop.example.com is one label below example.com")
        XCTAssertNil(policy.peer(tlsHost: "example.com"), "not the apex")
        XCTAssertNil(policy.peer(tlsHost: "a.web.example.com"), "not deeper labels")
        XCTAssertNil(policy.peer(tlsHost: "*.example.com"))
        let router = SNIRouter(
            selfID: selfID, naming: MeshNaming(), policy: policy,
            relays: RelayRegistry(gatewayID: selfID, policy: policy, maxPerNode: 4), logger: .init(label: "test"))
        guard case .forward(let destination, _) = router.verdict(serverName: "web.example.com") else { return XCTFail("wildcard grant forwarded") }
        XCTAssertEqual(destination, Destination(host: "127.0.0.1", port: 9))
        guard case .forward(let exact, _) = router.verdict(serverName: "db.example.com") else { return XCTFail("exact grant forwarded") }
        XCTAssertEqual(exact, Destination(host: "127.0.0.1", port: 10))
        guard case .handOff = router.verdict(serverName: "a.web.example.com") else { return XCTFail("deeper names are not granted") }

        let overlapping = #"{"peers": [{"id": "\#(bob)", "tlsHosts": ["*.example.com"]}, {"id": "\#(carol)", "tlsHosts": ["db.example.com", "*.EXAMPLE.com"]}]}"#
        XCTAssertThrowsError(try JSONDecoder().decode(MeshSection.self, from: Data(overlapping.utf8)).validate()) { error in
            XCTAssertTrue(
                "\(error)".contains("field mesh.peers[1].tlsHosts[1]: wildcard *.example.com is listed for two peers, \(bob) (mesh.peers[0].tlsHosts[0]) and \(carol)"),
                "\(error)")
        }
        XCTAssertThrowsError(try PeerPolicy(peers: [PeerConfig(id: bob, tlsHosts: ["*.example.com"]), PeerConfig(id: carol, tlsHosts: ["*.example.com"])]))
        for bad in ["*.com", "*example.com", "a.*.example.com", "*.*.example.com"] {
            XCTAssertThrowsError(try PeerPolicy(peers: [PeerConfig(id: bob, tlsHosts: [bad])]), bad) { error in
                XCTAssertTrue("\(error)".contains("mesh.peers[0].tlsHosts[0]"), "\(error)")
            }
        }
    }
}
