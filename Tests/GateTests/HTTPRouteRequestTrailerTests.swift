import Foundation
import Glibc
import XCTest

@testable import Gate

/// Request trailers reach an HTTP/1.1 backend: a request that announces them (`Trailer`) goes
/// chunked even with a Content-Length (HTTP/2 from Python `h2`), an HTTP/1.1 chunked request
/// keeps them; unannounced trailers after a body with a length are dropped (documented).
final class HTTPRouteRequestTrailerTests: XCTestCase {
    /// Python `h2`: one POST on stream 1 with `content-length`, optionally `trailer:
    /// x-checksum`, its body, then a trailing HEADERS frame `x-checksum: abc123` with
    /// END_STREAM. Prints `status framing trailers same-body length` of the response.
    static let client = """
        import socket, sys
        import h2.config, h2.connection, h2.events
        port, path, announce, size = int(sys.argv[1]), sys.argv[2], sys.argv[3] == "1", int(sys.argv[4])
        body = bytes((i * 7) % 251 for i in range(size))
        sock = socket.create_connection(("127.0.0.1", port), timeout=20)
        conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        conn.initiate_connection()
        headers = [(":method", "POST"), (":path", path), (":scheme", "http"), (":authority", "trailers.example"),
            ("content-length", str(size))] + ([("trailer", "x-checksum")] if announce else [])
        conn.send_headers(1, headers)
        for i in range(0, size, 16384):
            conn.send_data(1, body[i:i + 16384])
        conn.send_headers(1, [("x-checksum", "abc123")], end_stream=True)
        sock.sendall(conn.data_to_send())
        response, data, done = {}, b"", False
        while not done:
            chunk = sock.recv(65536)
            if not chunk:
                break
            for event in conn.receive_data(chunk):
                if isinstance(event, h2.events.ResponseReceived):
                    response = dict(event.headers)
                elif isinstance(event, h2.events.DataReceived):
                    data += event.data
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.StreamEnded):
                    done = True
                elif isinstance(event, h2.events.StreamReset):
                    print("reset", event.error_code)
                    sys.exit(1)
            sock.sendall(conn.data_to_send())
        print(response.get(":status"), response.get("x-request-framing"), response.get("x-trailers") or "-", data == body, len(data))
        """

    func testAnnouncedRequestTrailersReachTheBackend() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("httproute-trailers-\(getpid())-\(UUID())").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let echo = try PythonBackend("echo", script: HTTPRouteMeshBackendTests.echoScript)
        defer { echo.stop() }
        try writeManifest(
            """
            apiVersion: gateway.networking.k8s.io/v1
            kind: HTTPRoute
            metadata: {name: trailers}
            spec: {rules: [{backendRefs: [{name: echo, port: \(echo.port)}]}]}
            """, "routes.yaml", in: dir)
        let loops = try GateLoopGroup(count: 1)
        defer { loops.shutdown() }
        let capture = LogCapture()
        let gateway = try HTTPGateway(
            table: RouteTable(routes: try HTTPRouteLoader(services: ["echo": echo.address]).load(directory: dir).routes),
            loops: loops, defaultTimeout: 20, accessLog: capture.logger("access"), log: capture.logger("gate"))
        defer { gateway.stop() }
        let port = gateway.address.port
        func h2(_ path: String, announce: Bool, size: Int) throws -> String {
            // The PATH's python3: the one scripts/deps pip-installs `h2` into.
            let run = try runProcess("/usr/bin/env", ["python3", "-c", Self.client, String(port), path, announce ? "1" : "0", String(size)])
            XCTAssertEqual(run.status, 0, run.err)
            return run.out.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        // Announced: chunked to the backend with the trailer, the body whole (both response framings).
        XCTAssertEqual(try h2("/cl/announced", announce: true, size: 30_000), "200 chunked x-checksum: abc123 True 30000")
        XCTAssertEqual(try h2("/chunked/announced", announce: true, size: 30_000), "200 chunked x-checksum: abc123 True 30000")
        XCTAssertEqual(try h2("/cl/empty", announce: true, size: 0), "200 chunked x-checksum: abc123 False 15")
        // Not announced: forwarded with its length; the trailer cannot follow (dropped).
        XCTAssertEqual(try h2("/cl/silent", announce: false, size: 30_000), "200 length - True 30000")

        // HTTP/1.1 chunked request with a trailer (raw socket): kept as it was.
        let fd = try TestSocket.connect("127.0.0.1", port)
        defer { Glibc.close(fd) }
        try TestSocket.writeAll(
            fd, Array(("POST /cl/h1 HTTP/1.1\r\nHost: trailers.example\r\nTransfer-Encoding: chunked\r\nTrailer: x-checksum\r\n"
                + "Connection: close\r\n\r\n5\r\nhello\r\n0\r\nx-checksum: abc123\r\n\r\n").utf8))
        let answer = String(decoding: try TestSocket.readToEOF(fd), as: UTF8.self)
        XCTAssertTrue(answer.hasPrefix("HTTP/1.1 200"), answer)
        XCTAssertTrue(answer.contains("X-Trailers: x-checksum: abc123\r\n"), answer)
        XCTAssertTrue(answer.hasSuffix("\r\n\r\nhello"), answer)
    }
}
