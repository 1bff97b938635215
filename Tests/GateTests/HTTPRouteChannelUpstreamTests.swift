import Foundation
import Glibc
import NIOCore
import NIOPosix
import XCTest

@testable import Gate

/// Stands in for a mesh upstream with channel streams (`Upstream.openChannel`): each "stream" is
/// a TCP channel to the destination on a loop of `group` (`any()`: the caller's loop when it is
/// one of the group's, as with the shared singleton; another group's loop otherwise), with
/// remote half-close on, so the backend's FIN arrives as `inputClosed` like a peer's END_STREAM.
/// `dial` must not be used.
struct ChannelStreamUpstream: Upstream {
    let name = "mesh:streams"
    let group: any EventLoopGroup
    let opened = HangingUpstream.Counter()

    func dial(_ destination: Destination, for info: StreamInfo) async throws -> Int32 {
        throw GateError(.noRoute, "dial used for an upstream with channel streams")
    }

    func openChannel(
        _ destination: Destination, for info: StreamInfo, join: @escaping @Sendable (any Channel) throws -> Void
    ) -> EventLoopFuture<any Channel>? {
        opened.increment()
        return ClientBootstrap(group: group.any())
            .channelOption(.allowRemoteHalfClosure, value: true)
            .channelInitializer { channel in channel.eventLoop.makeCompletedFuture { try join(channel) } }
            .connect(host: destination.host, port: Int(destination.port))
    }
}

/// Backends behind an upstream with channel streams, on both threading paths: the stream on the
/// exchange's own loop (`BackendHandler` in its pipeline) and on another loop (`BackendLoopHop`).
final class HTTPRouteChannelUpstreamTests: XCTestCase {
    /// `checkEchoRequests` over HTTP/1.1 (eight kept-alive requests, bodies with Content-Length
    /// and chunked both ways, over one stream) and h2c; a backend that closes after every response (its FIN as `inputClosed`): each GET
    /// is still answered, on a new stream; a stream the backend closes while the request is on
    /// its way is the stale race (sent again, `retries=1`).
    func testStreamsOnTheSameAndAnotherLoop() throws {
        let other = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        defer { try? other.syncShutdownGracefully() }
        let loops = try GateLoopGroup(count: 1)
        defer { loops.shutdown() }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("httproute-streams-\(getpid())-\(UUID())").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let echo = try PythonBackend("echo", script: HTTPRouteMeshBackendTests.echoScript)
        defer { echo.stop() }
        let closing = try ScriptedBackend { conn, _, _, _ in .respondThenClose(200, "conn\(conn)") }
        defer { closing.stop() }
        let payload = (0..<50_000).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ $0 >> 8) }
        try writeManifest(
            """
            apiVersion: gateway.networking.k8s.io/v1
            kind: HTTPRoute
            metadata: {name: streams}
            spec:
              rules:
              - matches: [{path: {type: PathPrefix, value: /closing}}]
                backendRefs: [{name: closing, port: \(closing.port)}]
              - backendRefs: [{name: echo, port: \(echo.port)}]
            """, "routes.yaml", in: dir)
        for (label, group) in [("same loop", MultiThreadedEventLoopGroup.singleton), ("another loop", other)] as [(String, any EventLoopGroup)] {
            let upstream = ChannelStreamUpstream(group: group)
            let router = try Router(
                rules: [RouteConfig(dest: echo.address, to: upstream.name), RouteConfig(dest: closing.address, to: upstream.name)],
                hosts: [:], direct: DirectUpstream(loops: loops), upstreams: [upstream.name: upstream])
            let capture = LogCapture()
            let gateway = try HTTPGateway(
                table: RouteTable(routes: try HTTPRouteLoader(services: ["echo": "127.0.0.1", "closing": "127.0.0.1"]).load(directory: dir).routes),
                loops: loops, defaultTimeout: 20, accessLog: capture.logger("access"), log: capture.logger("gate"), router: router)
            defer { gateway.stop() }
            let base = "http://127.0.0.1:\(gateway.address.port)"
            for h2 in [false, true] {
                let peers = try checkEchoRequests(base, host: nil, h2: h2, dir: dir, payload: payload, label: label)
                if !h2 { XCTAssertEqual(peers.count, 1, "\(label): one backend connection for the HTTP/1.1 run: \(peers)") }
            }
            // The HTTP/1.1 run's eight requests on one stream; the h2c runs' connections may land
            // on the other loop (its own pool) and nghttp's three concurrent streams need three.
            XCTAssertTrue((1...5).contains(upstream.opened.value), "\(label): \(upstream.opened.value) streams")
            // The backend closes after each answer: every GET still gets its own answer.
            let closingRun = try runProcess(try tool("curl"), ["-sS", "--max-time", "30"] + (0..<5).map { "\(base)/closing/\($0)" })
            XCTAssertEqual(closingRun.status, 0, closingRun.err)
            XCTAssertEqual(closingRun.out.components(separatedBy: "conn").count - 1, 5, "\(label): \(closingRun.out)")
            XCTAssertEqual(capture.lines.filter { $0.contains("path=/closing/") && $0.contains("status=200") }.count, 5, "\(capture.lines)")
        }
        // The stale race over a stream: the kept-alive stream's backend closes when the second
        // request arrives, which is sent again on a new stream.
        let upstream = ChannelStreamUpstream(group: other)
        let capture = LogCapture()
        let stale = try ScriptedBackend { conn, request, _, _ in conn == 0 && request == 1 ? .close : .respond(200, "conn\(conn)") }
        defer { stale.stop() }
        try writeManifest(
            """
            apiVersion: gateway.networking.k8s.io/v1
            kind: HTTPRoute
            metadata: {name: stale}
            spec: {rules: [{backendRefs: [{name: stale, port: \(stale.port)}]}]}
            """, "routes.yaml", in: dir)
        let staleRouter = try Router(
            rules: [RouteConfig(dest: stale.address, to: upstream.name)], hosts: [:], direct: DirectUpstream(loops: loops),
            upstreams: [upstream.name: upstream])
        let gateway = try HTTPGateway(
            table: RouteTable(routes: try HTTPRouteLoader(services: ["stale": "127.0.0.1"]).load(directory: dir).routes),
            loops: loops, defaultTimeout: 20, accessLog: capture.logger("access"), log: capture.logger("gate"), router: staleRouter)
        defer { gateway.stop() }
        let client = try KeptAliveClient(port: gateway.address.port)
        defer { client.close() }
        XCTAssertEqual(try client.send("GET", "/a").body, "conn0")
        XCTAssertEqual(try client.send("GET", "/b").body, "conn1")
        XCTAssertEqual(stale.requests, ["conn#0 GET /a 0", "conn#0 GET /b 0", "conn#1 GET /b 0"])
        XCTAssertNotNil(capture.waitForLine(containing: ["request", "path=/b", "status=200", "retries=1"]), "\(capture.lines)")
        XCTAssertEqual(upstream.opened.value, 2)
    }
}
