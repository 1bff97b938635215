import Crypto
import Foundation
import Gate
import Glibc
import NIOCore
import XCTest
@testable import PeerMesh

/// Relay-over-SNI: bob (no listener, as behind NAT) keeps idle plain connections registered with
/// gate; a TLS connection to gate whose SNI names bob is spliced into one and bob terminates it.
final class SNIRelayTests: MeshTestCase {
    // MARK: codec and admission (pure)

    private func header(_ key: P256.Signing.PrivateKey, gateway: String, at ts: UInt64, nonce: UInt8 = 1) throws -> [UInt8] {
        try RelayRegistration.make(key: key, gatewayID: gateway, timestamp: ts, nonce: [UInt8](repeating: nonce, count: 16))
    }

    func testRegistrationCodecWholeSplitDripAndMalformed() throws {
        let key = P256.Signing.PrivateKey()
        let gateway = try NodeIdentity.generate().node.id
        let bytes = try header(key, gateway: gateway, at: 0x0102_0304_0506_0708)
        XCTAssertEqual(bytes.count, RelayRegistration.length)
        XCTAssertEqual(Array(bytes[0..<5]), Array("UGRS".utf8) + [1])
        XCTAssertEqual(Array(bytes[122..<130]), [1, 2, 3, 4, 5, 6, 7, 8], "timestamp big-endian at offset 122")

        let whole = try XCTUnwrap(RelayRegistration.parse(bytes))
        XCTAssertEqual(whole.node.id, NodeID(key.publicKey).id)
        XCTAssertEqual(whole.gatewayID, gateway)
        XCTAssertEqual(whole.timestamp, 0x0102_0304_0506_0708)
        XCTAssertEqual(whole.nonce, [UInt8](repeating: 1, count: 16))
        XCTAssertTrue(whole.signatureIsValid)
        XCTAssertEqual(whole.signedBytes, Array(bytes[0..<146]))
        // Trailing bytes are not part of the header.
        XCTAssertEqual(try RelayRegistration.parse(bytes + [0x16, 3, 1]), whole)
        // Split anywhere and byte at a time: nil (need more) until the last byte.
        for cut in [0, 1, 4, 5, 69, 70, 121, 145, 209] {
            XCTAssertNil(try RelayRegistration.parse(bytes[0..<cut]), "cut at \(cut)")
        }
        var fed: [UInt8] = []
        var parsed: RelayRegistration?
        for byte in bytes {
            XCTAssertNil(parsed)
            fed.append(byte)
            parsed = try RelayRegistration.parse(fed)
        }
        XCTAssertEqual(parsed, whole)

        func refused(_ mutated: [UInt8], _ text: String) {
            XCTAssertThrowsError(try RelayRegistration.parse(mutated)) { error in
                XCTAssertTrue("\(error)".contains(text), "\(error)")
            }
        }
        refused([0x16, 3, 1], "bad magic")
        refused(Array("UGRX".utf8), "bad magic")
        var version = bytes
        version[4] = 2
        refused(Array(version[0..<5]), "version 2")
        var point = bytes
        point[5] = 0x02
        refused(point, "bad public key")
        var gatewayText = bytes
        gatewayText[70] = UInt8(ascii: "a")
        refused(gatewayText, "malformed gateway ID")
        var signature = bytes
        signature[200] ^= 0xff
        XCTAssertFalse(try XCTUnwrap(RelayRegistration.parse(signature)).signatureIsValid)
        var signedField = bytes
        signedField[140] ^= 0x01
        XCTAssertFalse(try XCTUnwrap(RelayRegistration.parse(signedField)).signatureIsValid, "nonce changed after signing")
    }

    func testAdmissionRefusesUnknownUnsignedReplayedStaleAndMisaddressed() throws {
        let bob = P256.Signing.PrivateKey()
        let stranger = P256.Signing.PrivateKey()
        let gateway = try NodeIdentity.generate().node.id
        let other = try NodeIdentity.generate().node.id
        let policy = try PeerPolicy(peers: [PeerConfig(id: NodeID(bob.publicKey).id)])
        let start: UInt64 = 1_700_000_000_000
        var admission = RelayAdmission(gatewayID: gateway, startedAt: start)
        func admit(_ bytes: [UInt8], now: UInt64) throws -> MeshError? {
            let registration = try XCTUnwrap(RelayRegistration.parse(bytes))
            if case .failure(let error) = admission.admit(registration, policy: policy, now: now) { return error }
            return nil
        }
        let now = start + 1000
        XCTAssertNil(try admit(try header(bob, gateway: gateway, at: now, nonce: 1), now: now))
        XCTAssertEqual(try admit(try header(bob, gateway: gateway, at: now, nonce: 1), now: now + 5)?.code, .replayed)
        XCTAssertNil(try admit(try header(bob, gateway: gateway, at: now, nonce: 2), now: now + 5), "a fresh nonce is fine")
        XCTAssertEqual(try admit(try header(stranger, gateway: gateway, at: now, nonce: 3), now: now)?.code, .unknownPeer)
        XCTAssertEqual(try admit(try header(bob, gateway: other, at: now, nonce: 4), now: now)?.code, .forbidden)
        var forged = try header(bob, gateway: gateway, at: now, nonce: 5)
        forged[150] ^= 0x55
        XCTAssertEqual(try admit(forged, now: now)?.code, .wrongKey)
        // bob's key with stranger's signature: the signature must be by the key in the header.
        var swapped = try header(bob, gateway: gateway, at: now, nonce: 6)
        swapped.replaceSubrange(146..<210, with: try header(stranger, gateway: gateway, at: now, nonce: 6)[146..<210])
        XCTAssertEqual(try admit(swapped, now: now)?.code, .wrongKey)
        XCTAssertEqual(try admit(try header(bob, gateway: gateway, at: now, nonce: 7), now: now + 31_000)?.code, .replayed, "stale")
        XCTAssertEqual(try admit(try header(bob, gateway: gateway, at: now + 60_000, nonce: 8), now: now)?.code, .replayed, "future")
        XCTAssertEqual(try admit(try header(bob, gateway: gateway, at: start - 1, nonce: 9), now: now)?.code, .replayed,
                       "made before this gateway started (a restarted gateway forgot its nonces)")
        // The nonce of the first header expires with the window; its timestamp is stale by then.
        XCTAssertEqual(try admit(try header(bob, gateway: gateway, at: now, nonce: 1), now: now + 40_000)?.code, .replayed)
    }

    // MARK: three nodes on loopback

    private struct Nodes {
        var alice: MeshNode
        var gate: MeshNode
        var gatePort: Int
        var bob: MeshNode
        var aliceDir: String
        var aliceID: NodeIdentity
        var gateID: NodeIdentity
        var bobID: NodeIdentity
    }

    /// gate knows bob without an address; bob knows gate's address and registers `pool`
    /// connections; alice reaches bob "at" gate's address.
    private func nodes(echoPort: Int, pool: Int = 3, tlsPorts: [Int] = []) async throws -> Nodes {
        let aliceDir = try temporaryDirectory("relay-alice")
        cleanups.append { try? FileManager.default.removeItem(atPath: aliceDir) }
        let aliceID = try NodeIdentity.loadOrCreate(directory: aliceDir)
        let gateID = try NodeIdentity.generate()
        let bobID = try NodeIdentity.generate()
        let (gate, gatePort) = try await node(gateID, peers: [PeerConfig(id: bobID.node.id)])
        let bob = try MeshNode(
            config: MeshConfig(identityDir: "-", peers: [
                PeerConfig(id: gateID.node.id, addresses: ["127.0.0.1:\(gatePort)"]),
                PeerConfig(id: aliceID.node.id, destinations: ["127.0.0.1:\(echoPort)"]),
            ], tlsPorts: tlsPorts),
            identity: bobID)
        cleanups.append { await bob.shutdown() }
        try bob.startRelay(to: gateID.node.id, poolSize: pool)
        let (alice, _) = try await node(aliceID, peers: [PeerConfig(id: bobID.node.id, addresses: ["127.0.0.1:\(gatePort)"])])
        try await waitUntil("bob registered \(pool) relay connections") { gate.relayConnections(from: bobID.node.id) == pool }
        return Nodes(alice: alice, gate: gate, gatePort: gatePort, bob: bob, aliceDir: aliceDir, aliceID: aliceID, gateID: gateID, bobID: bobID)
    }

    func testEchoAndHalfCloseThroughSNIRelay() async throws {
        let echo = try await echoServer()
        let n = try await nodes(echoPort: echo.port)
        let bob = n.bobID.node.id

        // alice's own TLS (NIO, SNI = bob's mangled hostname) through gate into a bob connection.
        try await echoAndHalfClose(try n.alice.upstream(to: bob, kind: .hbone), port: echo.port)
        try await echoAndHalfClose(try n.alice.upstream(to: bob, kind: .dm), port: echo.port)
        XCTAssertEqual(n.gate.acceptedConnections, 0, "gate terminated no TLS")
        XCTAssertEqual(n.bob.acceptedConnections, 1, "bob terminated alice's one pooled connection")
        XCTAssertEqual(echo.accepted, 2)
        // bob refilled its pool after the splice.
        try await waitUntil("bob refilled its relay pool") { n.gate.relayConnections(from: bob) == 3 }
        XCTAssertEqual(n.bob.relayStatus(gateway: n.gateID.node.id).used, 1)
        // alice's pooled connection runs through the Gate's relay, joined with the registered socket.
        let streams = await n.gate.sniStreams()
        XCTAssertEqual(streams.map(\.upstream), ["mesh-relay:\(bob)"])
        XCTAssertGreaterThan(streams.first?.bytesUp ?? 0, 0)
        XCTAssertGreaterThan(streams.first?.bytesDown ?? 0, 0)

        // A foreign TLS client (Python ssl + h2, SNI = bob) at gate's port: HBONE echo + half-close.
        let (status, output) = try runPython([
            interopScript("hbone_client.py"), "--connect", "127.0.0.1:\(n.gatePort)",
            "--cert", "\(n.aliceDir)/cert.pem", "--key", "\(n.aliceDir)/key.pem",
            "--fingerprint", n.bobID.fingerprint, "--server-name", n.bobID.mangledHostname,
            "--authority", "127.0.0.1:\(echo.port)", "--size", "\(1 << 20)",
        ])
        XCTAssertEqual(status, 0, output)
        XCTAssertTrue(output.contains("\"status\": 200") && output.contains("\"match\": true"), output)
        XCTAssertEqual(echo.accepted, 3)
        XCTAssertEqual(n.gate.acceptedConnections, 0)
        XCTAssertEqual(n.bob.acceptedConnections, 2)
    }

    /// A plain TLS client (no mesh identity) whose SNI asks bob for a port in bob's `tlsPorts`:
    /// gate splices it undecrypted into a bob registration, bob terminates TLS with its own
    /// certificate and carries the plaintext to its local port. Checked with ugate's client
    /// (`TLSPortForward`: echo + half-close both ways) and a foreign one (Python `ssl`: echo, and
    /// the certificate it saw is bob's); an unlisted port gets mesh mTLS, which refuses a client
    /// without a certificate, and nothing reaches the port.
    func testPlainTLSClientThroughSNIRelay() async throws {
        let echo = try await echoServer()
        let closed = try await echoServer()
        let n = try await nodes(echoPort: echo.port, pool: 2, tlsPorts: [echo.port])
        let bob = n.bobID.node.id
        let name = TLSPortForward.serverName(node: bob, port: echo.port)
        let client = try await TLSPortForward.listen(to: "127.0.0.1:\(n.gatePort)", serverName: name, node: bob)
        cleanups.append { await client.close() }
        for _ in 0..<2 {
            let fd = try FD.connect(port: UInt16(client.port))
            defer { close(fd) }
            try echoAndHalfClose(socket: fd)
        }
        XCTAssertEqual(echo.accepted, 2)
        XCTAssertEqual(n.gate.acceptedConnections, 0, "gate terminated no TLS")
        XCTAssertEqual(n.bob.relayStatus(gateway: n.gateID.node.id).used, 2)
        try await waitUntil("bob refilled its relay pool") { n.gate.relayConnections(from: bob) == 2 }

        let foreign = try runPython(["-c", Self.pythonTLSEcho, "127.0.0.1", "\(n.gatePort)", name, "\(1 << 20)"])
        XCTAssertEqual(foreign.0, 0, foreign.1)
        XCTAssertTrue(foreign.1.contains("\"match\": true"), foreign.1)
        let bobFingerprint = n.bobID.fingerprint.replacingOccurrences(of: ":", with: "").lowercased()
        XCTAssertTrue(foreign.1.contains("\"fingerprint\": \"\(bobFingerprint)\""), "bob's certificate: \(foreign.1)")
        XCTAssertEqual(echo.accepted, 3)

        // A port bob does not list: mesh termination, which wants a client certificate.
        try await waitUntil("bob refilled its relay pool") { n.gate.relayConnections(from: bob) == 2 }
        let unlisted = TLSPortForward.serverName(node: bob, port: closed.port)
        let refused = try runPython(["-c", Self.pythonTLSEcho, "127.0.0.1", "\(n.gatePort)", unlisted, "1000"])
        XCTAssertNotEqual(refused.0, 0, refused.1)
        XCTAssertFalse(refused.1.contains("\"match\": true"), refused.1)
        XCTAssertEqual(closed.accepted, 0)
    }

    /// bob's own mesh port terminates the same plain TLS (the bench's "TLS direct"); the
    /// termination verdicts for other names.
    func testPlainTLSOnTheNodesOwnPortAndVerdicts() async throws {
        let echo = try await echoServer()
        let bobID = try NodeIdentity.generate()
        let other = try NodeIdentity.generate().node.id
        let bob = try MeshNode(
            config: MeshConfig(identityDir: "-", peers: [PeerConfig(id: other)], listenHost: "127.0.0.1", tlsPorts: [echo.port]),
            identity: bobID)
        cleanups.append { await bob.shutdown() }
        let port = try await bob.listen(port: 0, name: "mesh")
        let id = bobID.node.id
        let client = try await TLSPortForward.listen(
            to: "127.0.0.1:\(port)", serverName: TLSPortForward.serverName(node: id, port: echo.port), node: id)
        cleanups.append { await client.close() }
        let fd = try FD.connect(port: UInt16(client.port))
        defer { close(fd) }
        try echoAndHalfClose(socket: fd)
        XCTAssertEqual(echo.accepted, 1)

        XCTAssertEqual(bob.termination(serverName: TLSPortForward.serverName(node: id, port: echo.port)), .plain(port: echo.port))
        XCTAssertEqual(bob.termination(serverName: TLSPortForward.serverName(node: id, port: echo.port).uppercased()), .plain(port: echo.port))
        XCTAssertEqual(bob.termination(serverName: TLSPortForward.serverName(node: id, port: echo.port + 1)), .mesh, "unlisted port")
        XCTAssertEqual(bob.termination(serverName: TLSPortForward.serverName(node: other, port: echo.port)), .mesh, "another node")
        XCTAssertEqual(bob.termination(serverName: bobID.mangledHostname), .mesh)
        XCTAssertEqual(bob.termination(serverName: nil), .mesh)
        XCTAssertEqual(bob.termination(serverName: "outbound_.x_._.\(bobID.mangledHostname)"), .mesh)
    }

    /// Python `ssl` client: argv host port sni size; prints JSON with the server certificate's
    /// SHA-256 and whether the echo matched. Sends `size` random bytes in 64 KiB pieces, each
    /// echoed back before the next (one thread: an `SSLSocket` must not be read and written from
    /// two threads at once — a sender thread made this test flaky).
    private static let pythonTLSEcho = """
        import hashlib, json, os, socket, ssl, sys
        host, port, sni, size = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        s = ctx.wrap_socket(socket.create_connection((host, port), timeout=20), server_hostname=sni)
        fingerprint = hashlib.sha256(s.getpeercert(binary_form=True)).hexdigest()
        """ + pythonPiecewiseEcho(report: #""fingerprint": fingerprint"#)

    /// Raw sockets at gate's mesh port: unknown node, broken signature, a replayed header; each
    /// gets `ERROR <code>: <reason>` and a close, and nothing is registered.
    func testBadRegistrationsAreRefusedWithAClearError() async throws {
        let gateID = try NodeIdentity.generate()
        let bob = P256.Signing.PrivateKey()
        let bobID = NodeID(bob.publicKey).id
        let log = LogCapture()
        let (gate, gatePort) = try await node(gateID, peers: [PeerConfig(id: bobID)], log: log)
        let now = RelayAdmission.wallClockMillis()

        let stranger = try header(P256.Signing.PrivateKey(), gateway: gateID.node.id, at: now, nonce: 1)
        XCTAssertTrue(try register(stranger, port: gatePort).hasPrefix("ERROR unknownPeer: node "))
        var unsigned = try header(bob, gateway: gateID.node.id, at: now, nonce: 2)
        unsigned.replaceSubrange(146..<210, with: [UInt8](repeating: 0, count: 64))
        XCTAssertEqual(try register(unsigned, port: gatePort), "ERROR wrongKey: registration of \(bobID) has no valid signature by its key")
        let good = try header(bob, gateway: gateID.node.id, at: now, nonce: 3)
        XCTAssertEqual(try register(good, port: gatePort, keepOpen: true), "OK")
        XCTAssertEqual(gate.relayConnections(from: bobID), 1)
        // The idle registration is kept alive by TCP keepalive probes after 30 s.
        let registered = try XCTUnwrap(gate.relays.channels(bobID).first)
        let keepIdle = ChannelOptions.Types.SocketOption(level: SocketOptionLevel(IPPROTO_TCP), name: SocketOptionName(TCP_KEEPIDLE))
        let keepalive = try await registered.getOption(ChannelOptions.socketOption(.so_keepalive)).get()
        let idleSeconds = try await registered.getOption(keepIdle).get()
        XCTAssertEqual(keepalive, 1)
        XCTAssertEqual(idleSeconds, 30)
        XCTAssertEqual(try register(good, port: gatePort), "ERROR replayed: registration of \(bobID) was already used (replayed nonce)")
        XCTAssertTrue(try register(Array("UGRS".utf8) + [9], port: gatePort).hasPrefix("ERROR badRequest: relay registration version 9"))
        XCTAssertEqual(gate.relayConnections(from: bobID), 1, "only the good registration is kept")
        XCTAssertTrue(log.contains("relay registration refused: registration of \(bobID) was already used"), "\(log.messages)")
        for fd in kept { close(fd) }
        kept = []
        try await waitUntil("the closed registration is dropped") { gate.relayConnections(from: bobID) == 0 }
    }

    private var kept: [Int32] = []

    /// Sends `bytes` to 127.0.0.1:`port` and returns the answer line (without the newline).
    /// Unless `keepOpen`, also checks that the gateway closed the connection after it.
    private func register(_ bytes: [UInt8], port: Int, keepOpen: Bool = false) throws -> String {
        let fd = try FD.connect(port: UInt16(port))
        try FD.write(fd, bytes)
        var line: [UInt8] = []
        while line.last != UInt8(ascii: "\n") {
            line += try FD.read(fd, count: 1)
            guard line.count < 1024 else { break }
        }
        if keepOpen {
            kept.append(fd)
        } else {
            defer { close(fd) }
            XCTAssertEqual(try FD.exchange(fd, send: [], halfClose: false), [], "gateway closed after the error line")
        }
        return String(decoding: line.dropLast(), as: UTF8.self)
    }

    func testRelayRegistrationsComeBackAfterGatewayRestart() async throws {
        let echo = try await echoServer()
        let n = try await nodes(echoPort: echo.port, pool: 2)
        let bob = n.bobID.node.id
        try await echoAndHalfClose(try n.alice.upstream(to: bob, kind: .hbone), port: echo.port)

        await n.gate.shutdown()
        // While gate is down, bob's pool drains; alice's connection to "bob" (through gate) dies.
        try await waitUntil("bob noticed the gateway went away") { n.bob.relayStatus(gateway: n.gateID.node.id).idle == 0 }
        let gate2 = try MeshNode(
            config: MeshConfig(identityDir: "-", peers: [PeerConfig(id: bob)], listenHost: "127.0.0.1"), identity: n.gateID)
        cleanups.append { await gate2.shutdown() }
        _ = try await gate2.listen(port: n.gatePort, name: "mesh")
        try await waitUntil("bob's registrations are back") { gate2.relayConnections(from: bob) == 2 }
        try await echoAndHalfClose(try n.alice.upstream(to: bob, kind: .hbone), port: echo.port)
        XCTAssertEqual(echo.accepted, 2)
        XCTAssertEqual(gate2.acceptedConnections, 0)
    }
}

/// Path of a script in interop/mesh.
func interopScript(_ name: String) -> String {
    URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("interop/mesh/\(name)").path
}

/// Runs `python3 arguments…`; returns the exit status and stdout + stderr.
func runPython(_ arguments: [String]) throws -> (Int32, String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/timeout")
    process.arguments = ["60", "python3"] + arguments
    let out = Pipe()
    process.standardOutput = out
    process.standardError = out
    try process.run()
    let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    process.waitUntilExit()
    return (process.terminationStatus, text)
}
