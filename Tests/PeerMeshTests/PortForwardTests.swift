import Gate
import XCTest
@testable import PeerMesh

/// A local port forwarded to a destination behind bob, through alice's mesh upstream: the
/// listener accepts on the pooled connection's loop and joins each accepted socket to its HTTP/2
/// stream directly (no socketpair).
final class PortForwardTests: MeshTestCase {
    func testForwardJoinsAcceptedSocketsToStreamsDirectly() async throws {
        let echo = try await echoServer()
        let aliceID = try NodeIdentity.generate()
        let bobID = try NodeIdentity.generate()
        let (_, bobPort) = try await node(bobID, peers: [PeerConfig(id: aliceID.node.id, destinations: ["127.0.0.1:\(echo.port)"])])
        let (alice, _) = try await node(aliceID, peers: [PeerConfig(id: bobID.node.id, addresses: ["127.0.0.1:\(bobPort)"])])
        let log = LogCapture()
        let forward = try await PortForward.listen(
            port: 0, upstream: try alice.upstream(to: bobID.node.id, kind: .hbone),
            destination: Destination(host: "127.0.0.1", port: UInt16(echo.port)), logger: log.logger("forward"))
        cleanups.append { await forward.close() }

        for _ in 0..<2 {
            let fd = try FD.connect(port: UInt16(forward.port))
            defer { close(fd) }
            try echoAndHalfClose(socket: fd)
        }
        XCTAssertEqual(echo.accepted, 2)
        XCTAssertEqual(log.messages.filter { $0.contains("forward joined to its stream on the connection's loop") }.count, 2, "\(log.messages)")
    }
}
