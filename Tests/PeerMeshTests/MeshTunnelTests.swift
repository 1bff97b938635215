import Crypto
import Foundation
import Gate
import Glibc
import NIOCore
import NIOPosix
import Synchronization
import XCTest
@testable import PeerMesh

/// Two or three in-process nodes on 127.0.0.1 (ephemeral ports): alice → HTTP/2 over mTLS → gate
/// → echo server, through `/dm/` and HBONE, plus the refusals the issue lists.
final class MeshTunnelTests: MeshTestCase {
    private struct Pair {
        var alice: MeshNode
        var aliceID: NodeIdentity
        var gate: MeshNode
        var gateID: NodeIdentity
        var gatePort: Int
        var gateLog: LogCapture
        var aliceLog: LogCapture
    }

    /// alice may reach only `allowed` through gate.
    private func pair(allowed: [String]) async throws -> Pair {
        let aliceID = try NodeIdentity.generate()
        let gateID = try NodeIdentity.generate()
        let gateLog = LogCapture()
        let aliceLog = LogCapture()
        let (gate, gatePort) = try await node(gateID, peers: [PeerConfig(id: aliceID.node.id, destinations: allowed)], log: gateLog)
        let (alice, _) = try await node(aliceID, peers: [PeerConfig(id: gateID.node.id, addresses: ["127.0.0.1:\(gatePort)"])], log: aliceLog)
        return Pair(alice: alice, aliceID: aliceID, gate: gate, gateID: gateID, gatePort: gatePort, gateLog: gateLog, aliceLog: aliceLog)
    }

    func testEchoAndHalfCloseThroughDM() async throws {
        let echo = try await echoServer()
        let p = try await pair(allowed: ["127.0.0.1:\(echo.port)"])
        try await echoAndHalfClose(try p.alice.upstream(to: p.gateID.node.id, kind: .dm), port: echo.port)
        XCTAssertEqual(echo.accepted, 1)
    }

    func testEchoAndHalfCloseThroughHBONE() async throws {
        let echo = try await echoServer()
        let p = try await pair(allowed: ["127.0.0.1:*"])
        let upstream = try p.alice.upstream(to: p.gateID.node.id, kind: .hbone)
        try await echoAndHalfClose(upstream, port: echo.port)
        // A second stream reuses the pooled connection.
        try await echoAndHalfClose(upstream, port: echo.port)
        XCTAssertEqual(echo.accepted, 2)
        XCTAssertEqual(p.gate.acceptedConnections, 1)
    }

    func testDestinationThePeerMayNotReachIsRefusedWith403() async throws {
        let allowed = try await echoServer()
        let forbidden = try await echoServer()
        let p = try await pair(allowed: ["127.0.0.1:\(allowed.port)"])
        for kind in [TunnelRequest.Kind.dm, .hbone] {
            let destination = Destination(host: "127.0.0.1", port: UInt16(forbidden.port))
            do {
                let fd = try await p.alice.upstream(to: p.gateID.node.id, kind: kind).dial(destination, for: info(destination))
                close(fd)
                XCTFail("\(kind) tunnel to a forbidden destination was opened")
            } catch let error as MeshError {
                XCTAssertEqual(error.code, .remoteRefused)
                XCTAssertEqual(error.status, 403)
                XCTAssertTrue(error.message.contains("may not reach 127.0.0.1:\(forbidden.port)"), error.message)
            }
        }
        XCTAssertEqual(forbidden.accepted, 0, "nothing may be relayed to a forbidden destination")
        XCTAssertTrue(p.gateLog.contains("may not reach"), "\(p.gateLog.messages)")
    }

    func testUnreachableDestinationIsAnErrorStatus() async throws {
        // A port bound and never listening, held for the test: connections to it are refused,
        // and no socket of the nodes started below can take it (a closed server's port could).
        let held = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        XCTAssertGreaterThanOrEqual(held, 0)
        defer { close(held) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(held, $0, length) == 0 && getsockname(held, $0, &length) == 0 }
        }
        XCTAssertTrue(bound, "bind: \(String(cString: strerror(errno)))")
        let port = Int(UInt16(bigEndian: address.sin_port))
        let p = try await pair(allowed: ["*"])
        let destination = Destination(host: "127.0.0.1", port: UInt16(port))
        for (kind, status) in [(TunnelRequest.Kind.dm, 500), (.hbone, 503)] {
            do {
                let fd = try await p.alice.upstream(to: p.gateID.node.id, kind: kind).dial(destination, for: info(destination))
                close(fd)
                XCTFail("tunnel to a closed port was opened")
            } catch let error as MeshError {
                XCTAssertEqual(error.status, status)
                XCTAssertTrue(error.message.contains("cannot reach"), error.message)
            }
        }
    }

    /// A node with `identity` dials gate and must be refused with nothing relayed.
    private func assertRefused(_ identity: NodeIdentity, dialling p: Pair, echo: EchoServer) async throws {
        let (mallory, _) = try await node(identity, peers: [PeerConfig(id: p.gateID.node.id, addresses: ["127.0.0.1:\(p.gatePort)"])])
        let destination = Destination(host: "127.0.0.1", port: UInt16(echo.port))
        do {
            let fd = try await mallory.upstream(to: p.gateID.node.id).dial(destination, for: info(destination))
            close(fd)
            XCTFail("node \(identity.node.id) opened a tunnel through gate")
        } catch is MeshError {}
        XCTAssertEqual(echo.accepted, 0)
    }

    func testUnknownIdentityIsRefusedAtTheHandshake() async throws {
        let echo = try await echoServer()
        let p = try await pair(allowed: ["*"])
        let malloryID = try NodeIdentity.generate()
        try await assertRefused(malloryID, dialling: p, echo: echo)
        XCTAssertTrue(p.gateLog.contains("node \(malloryID.node.id) is not a known peer"), "\(p.gateLog.messages)")
    }

    func testWrongKeyForKnownIDIsRefused() async throws {
        let echo = try await echoServer()
        let p = try await pair(allowed: ["*"])
        // mallory presents a certificate claiming alice's ID, signed with her own key.
        let key = P256.Signing.PrivateKey()
        let forged = try NodeIdentity.selfSignedCertificate(key: key, claimedID: p.aliceID.node.id, naming: MeshNaming())
        let malloryID = try NodeIdentity(privateKey: key, naming: MeshNaming(), certificateChain: [forged])
        try await assertRefused(malloryID, dialling: p, echo: echo)
        XCTAssertTrue(
            p.gateLog.contains("claims ID \(p.aliceID.node.id) but its key hashes to \(malloryID.node.id)"), "\(p.gateLog.messages)")
    }

    /// alice dials gate's ID at an address where bob answers: alice refuses bob.
    func testClientRefusesServerWithAnotherKey() async throws {
        let echo = try await echoServer()
        let aliceID = try NodeIdentity.generate()
        let gateID = try NodeIdentity.generate()
        let bobID = try NodeIdentity.generate()
        let (_, bobPort) = try await node(bobID, peers: [PeerConfig(id: aliceID.node.id, egress: true)])
        let aliceLog = LogCapture()
        let (alice, _) = try await node(aliceID, peers: [
            PeerConfig(id: gateID.node.id, addresses: ["127.0.0.1:\(bobPort)"]), PeerConfig(id: bobID.node.id),
        ], log: aliceLog)
        let destination = Destination(host: "127.0.0.1", port: UInt16(echo.port))
        do {
            let fd = try await alice.upstream(to: gateID.node.id).dial(destination, for: info(destination))
            close(fd)
            XCTFail("alice accepted bob as gate")
        } catch let error as MeshError {
            XCTAssertEqual(error.code, .tls, "\(error)")
        }
        XCTAssertEqual(echo.accepted, 0)
        XCTAssertTrue(
            aliceLog.contains("dialled node \(gateID.node.id) but the peer's key hashes to \(bobID.node.id)"), "\(aliceLog.messages)")
    }

    func testThousandConcurrentStreamsOverOneConnection() async throws {
        let echo = try await echoServer()
        let p = try await pair(allowed: ["127.0.0.1:\(echo.port)"])
        let upstream = try p.alice.upstream(to: p.gateID.node.id, kind: .hbone)
        let destination = Destination(host: "127.0.0.1", port: UInt16(echo.port))
        let count = 1000
        let streamInfo = info(destination)
        let fds = try await withThrowingTaskGroup(of: Int32.self) { group in
            for _ in 0..<count { group.addTask { try await upstream.dial(destination, for: streamInfo) } }
            var fds: [Int32] = []
            for try await fd in group { fds.append(fd) }
            return fds
        }
        defer { fds.forEach { close($0) } }
        XCTAssertEqual(fds.count, count)
        XCTAssertEqual(p.gate.acceptedConnections, 1, "all streams share one HTTP/2 connection")
        // Each 200 means gate's TCP connect to the echo server completed; the echo server's
        // accept loop may lag behind the kernel's backlog.
        try await waitUntil(seconds: 60, "the echo server accepted every stream") { echo.accepted == count }

        let payloads = (0..<count).map { i in randomBytes(8 << 10 + i) }
        let failures = Mutex<[String]>([])
        DispatchQueue.concurrentPerform(iterations: count) { i in
            do {
                let echoed = try FD.exchange(fds[i], send: payloads[i])
                if SHA256.hash(data: echoed) != SHA256.hash(data: payloads[i]) {
                    failures.withLock { $0.append("stream \(i): \(echoed.count) of \(payloads[i].count) bytes, hash differs") }
                }
            } catch {
                failures.withLock { $0.append("stream \(i): \(error)") }
            }
        }
        XCTAssertEqual(failures.withLock { $0 }, [])
    }
}
