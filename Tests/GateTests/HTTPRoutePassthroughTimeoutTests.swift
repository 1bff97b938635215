import Foundation
import Glibc
import XCTest

@testable import Gate

/// `connectTimeout` for TLS passthrough: a passed-through connection whose backend never
/// answers — dialled directly, or through an upstream standing in for a mesh peer whose stream
/// never opens (`HangingUpstream`) — is closed after the timeout with a logged reason naming
/// the SNI, the backend and the timeout, instead of hanging. Through a real silent mesh peer
/// (`ugate run`): `HTTPRouteConnectTimeoutTests.testSilentMeshPeerTimesOut`.
final class HTTPRoutePassthroughTimeoutTests: XCTestCase {
    func testBlackholedPassthroughBackendsTimeOut() throws {
        let loops = try GateLoopGroup(count: 1)
        defer { loops.shutdown() }
        let holes = try BlackholeRoutes(loops: loops)
        defer { holes.close() }
        let (direct, viaMesh, upstream) = (holes.direct, holes.viaMesh, holes.upstream)
        let tls = try HTTPRouteTLS(HTTPRouteTLSConfig(passthrough: ["hole.example": direct.address, "mesh.example": viaMesh.address]))
        let capture = LogCapture()
        let gateway = try HTTPGateway(
            table: RouteTable(routes: []), loops: loops, connectTimeout: 1, accessLog: capture.logger("ugate.httproute.access"), tls: tls,
            name: "tls", router: holes.router)
        defer { gateway.stop() }

        for (name, backend, upstreamName) in [("hole.example", direct.address, "direct"), ("mesh.example", viaMesh.address, upstream.name)] {
            // The client gets no handshake: the connection is closed once the dial timed out.
            let seen = try servedCertificate(port: gateway.address.port, serverName: name)
            XCTAssertEqual(seen.fingerprint, "", seen.output)
            let line = capture.waitForLine(containing: ["passthrough failed", name])
            XCTAssertNotNil(line, capture.lines.joined(separator: "\n"))
            XCTAssertTrue(line?.contains("backend=\(backend)") ?? false, line ?? "")
            XCTAssertTrue(
                line?.contains("connect to \(backend) through upstream \(upstreamName) timed out after 1.0 s") ?? false, line ?? "")
        }
        XCTAssertEqual(upstream.attempts.value, 1)
    }
}
