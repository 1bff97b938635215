import Foundation
import Glibc
import XCTest

@testable import Gate

/// The gateway's HTTP/1.1 request decoding against real sockets: smuggling attempts refused
/// before anything reaches the backend, chunked bodies with trailers and pipelining,
/// HTTP/1.0 and `Connection: close` rules, absolute-form targets, `Expect: 100-continue`.
final class HTTPRouteHTTP1WireTests: XCTestCase {
    let capture = LogCapture()
    let metrics = PrometheusMetrics()
    var dir = ""
    var backend: BodyBackend!
    var loops: GateLoopGroup!
    var gateway: HTTPGateway!

    override func setUpWithError() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("httproute-h1-\(getpid())-\(UUID())").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        backend = try BodyBackend(record: "\(dir)/backend.log")
        try """
            apiVersion: gateway.networking.k8s.io/v1
            kind: HTTPRoute
            metadata: {name: h1}
            spec:
              rules:
              - backendRefs: [{name: backend, port: 80}]
            """.write(toFile: "\(dir)/routes.yaml", atomically: true, encoding: .utf8)
        let loader = HTTPRouteLoader(services: ["backend": backend.address])
        loops = try GateLoopGroup(count: 1)
        gateway = try HTTPGateway(
            table: RouteTable(routes: try loader.load(directory: dir).routes), loops: loops, defaultTimeout: 20,
            accessLog: capture.logger("access"), log: capture.logger("gate"), metrics: metrics)
    }

    override func tearDown() {
        gateway?.stop()
        loops?.shutdown()
        backend?.stop()
        try? FileManager.default.removeItem(atPath: dir)
    }

    /// Sends `request` on a new connection and reads until the gateway closes it.
    func send(_ request: String) throws -> String {
        let fd = try TestSocket.connect("127.0.0.1", gateway.address.port)
        defer { close(fd) }
        try TestSocket.writeAll(fd, Array(request.utf8))
        return String(decoding: try TestSocket.readToEOF(fd), as: UTF8.self)
    }

    /// The status lines in a reply (responses follow each other without a line break).
    func statusLines(_ reply: String) -> [String] {
        let pattern = try! NSRegularExpression(pattern: "HTTP/1\\.1 [0-9]{3} [A-Za-z ]*")
        return pattern.matches(in: reply, range: NSRange(reply.startIndex..., in: reply)).map { String(reply[Range($0.range, in: reply)!]) }
    }

    func testSmugglingAttemptsAreRefusedAndNeverReachTheBackend() throws {
        // Each head is followed by what a lenient parser would take for a second request.
        let smuggled = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
        let attempts = [
            "POST /front HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "POST /front HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n",
            "POST /front HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: 35\r\n\r\n",
            "POST /front HTTP/1.1\r\nHost: x\r\nContent-Length: 0, 35\r\n\r\n",
            "POST /front HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
            "POST /front HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
            "POST /front HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n",
            "POST /front HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
            "POST /front HTTP/1.1\r\nHost: x\r\nX: a\rTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "POST /front HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "POST /front HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0x0\r\n\r\n",
            "POST /front HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\n\r\n",
            "GET /front HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
            "GET /front HTTP/1.1\r\nHost: x\r\nX: a\u{0}b\r\n\r\n",
        ]
        for attempt in attempts {
            let reply = try send(attempt + smuggled)
            XCTAssertTrue(reply.hasPrefix("HTTP/1.1 400 Bad Request\r\n"), "\(attempt.debugDescription): \(reply)")
            XCTAssertEqual(statusLines(reply).count, 1, reply)
            XCTAssertTrue(reply.lowercased().contains("connection: close"), reply)
        }
        // The gateway keeps serving; nothing of the attempts reached the backend.
        let ok = try send("GET /after HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        XCTAssertTrue(ok.hasPrefix("HTTP/1.1 200"), ok)
        let lines = backend.lines(waitingFor: ["/after"])
        XCTAssertEqual(lines.filter { $0.contains("/front") || $0.contains("/smuggled") }, [], "\(lines)")
    }

    func testChunkedBodyWithTrailersPipelinedWithGets() throws {
        let reply = try send(
            "POST /chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;note=x\r\nhello\r\nA\r\n, 12345678\r\n0\r\nX-Sum: 1\r\n\r\n"
                + "GET /second HTTP/1.1\r\nHost: x\r\n\r\n"
                + "GET /third HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                + "GET /never HTTP/1.1\r\nHost: x\r\n\r\n")
        XCTAssertEqual(statusLines(reply), ["HTTP/1.1 200 OK", "HTTP/1.1 200 OK", "HTTP/1.1 200 OK"], reply)
        let order = ["\"/chunked\"", "\"/second\"", "\"/third\""].map { reply.range(of: $0)?.lowerBound }
        XCTAssertTrue(order.allSatisfy { $0 != nil }, reply)
        XCTAssertEqual(order.compactMap { $0 }, order.compactMap { $0 }.sorted(), reply)
        XCTAssertTrue(reply.contains("\"len\": 15"), reply)
        let lines = backend.lines(waitingFor: ["/third"])
        XCTAssertTrue(lines.contains { $0.hasPrefix("POST /chunked 15 ") }, "\(lines)")
        XCTAssertFalse(lines.contains { $0.contains("/never") }, "\(lines)")
    }

    func testHTTP10KeepAliveRules() throws {
        // HTTP/1.0 without keep-alive: one response, then the gateway closes.
        let single = try send("GET /ten HTTP/1.0\r\n\r\nGET /ten-never HTTP/1.0\r\n\r\n")
        XCTAssertEqual(statusLines(single).count, 1, single)
        XCTAssertTrue(single.lowercased().contains("connection: close"), single)
        // With `Connection: keep-alive` the connection carries the next request.
        let kept = try send("GET /k1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /k2 HTTP/1.0\r\n\r\n")
        XCTAssertEqual(statusLines(kept).count, 2, kept)
        XCTAssertTrue(kept.contains("\"/k1\"") && kept.contains("\"/k2\""), kept)
        XCTAssertFalse(backend.lines(waitingFor: ["/k2"]).contains { $0.contains("/ten-never") })
    }

    func testAbsoluteFormTargetAndOversizedHead() throws {
        let absolute = try send("GET http://x/abs HTTP/1.1\r\nHost: x\r\n\r\n")
        XCTAssertTrue(absolute.hasPrefix("HTTP/1.1 400"), absolute)
        XCTAssertTrue(absolute.contains("origin-form"), absolute)
        let big = try send("GET / HTTP/1.1\r\nHost: x\r\nX-Big: \(String(repeating: "b", count: 20_000))\r\n\r\n")
        XCTAssertTrue(big.hasPrefix("HTTP/1.1 431 Request Header Fields Too Large\r\n"), String(big.prefix(200)))
    }

    /// The worst inputs fuzzing found or used (`HTTPRouteFuzzTests`), each on its own
    /// connection — HTTP/1.1 heads and chunked bodies, and h2c after the preface (a field block
    /// HPACK cannot decode, a frame above the frame size, a CONTINUATION flood, a SETTINGS of
    /// 5 bytes) — while another client's upload is half sent: each bad connection is answered
    /// (400 / 431, or GOAWAY with the code) and closed, the upload then completes on its kept
    /// connection with the request pipelined behind it, and the gateway serves new connections.
    func testMalformedInputsOnOtherConnectionsLoseNothing() throws {
        let upload = try TestSocket.connect("127.0.0.1", gateway.address.port)
        defer { close(upload) }
        try TestSocket.writeAll(upload, Array("POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhello".utf8))
        let long = String(repeating: "a", count: 20_000)
        let h1: [(String, String)] = [
            ("G\u{1}ET /\(long) HTTP/1.1\r\nHost: x\r\n\r\n", "HTTP/1.1 400"),
            ("GET /\(long)\rb HTTP/1.1\r\nHost: x\r\n\r\n", "HTTP/1.1 431"),
            (String(repeating: "\r\n", count: 5000) + "\u{0}", "HTTP/1.1 400"),
            ("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: \(long)\r\n\r\n", "HTTP/1.1 400"),
            ("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1;\(long)\r\n", "HTTP/1.1 400"),
            ("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX : y\r\n\r\n", "HTTP/1.1 400"),
        ]
        for (input, status) in h1 {
            let reply = try send(input)
            XCTAssertTrue(reply.hasPrefix(status), "\(input.prefix(60).debugDescription): \(reply.prefix(200))")
        }
        func frame(_ type: UInt8, flags: UInt8 = 0, stream: UInt8 = 0, length: Int? = nil, _ payload: [UInt8] = []) -> [UInt8] {
            let n = length ?? payload.count
            return [UInt8(n >> 16 & 0xFF), UInt8(n >> 8 & 0xFF), UInt8(n & 0xFF), type, flags, 0, 0, 0, stream] + payload
        }
        let start = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8) + frame(0x4)
        let flood = frame(0x1, stream: 1, [0x82]) + (0..<5).flatMap { _ in frame(0x9, stream: 1, [UInt8](repeating: 0x40, count: 16_000)) }
        let h2: [([UInt8], UInt8)] = [
            (start + frame(0x1, flags: 0x5, stream: 1, [0xFF, 0xFF, 0xFF, 0xFF, 0x7F]), 0x9),
            (start + frame(0x0, stream: 1, length: 0xFF_FFFF), 0x6),
            (start + flood, 0xB),
            (start + frame(0x4, [0, 1, 0, 0, 0]), 0x6),
        ]
        for (input, code) in h2 {
            let fd = try TestSocket.connect("127.0.0.1", gateway.address.port)
            defer { close(fd) }
            try TestSocket.writeAll(fd, input)
            let reply = try TestSocket.readToEOF(fd)
            // The last frame is GOAWAY (type 7) with the error code.
            var index = 0
            var last: [UInt8] = []
            while index + 9 <= reply.count {
                let length = Int(reply[index]) << 16 | Int(reply[index + 1]) << 8 | Int(reply[index + 2])
                last = Array(reply[index..<min(reply.count, index + 9 + length)])
                index += 9 + length
            }
            XCTAssertEqual(last.count >= 17 ? [last[3], last[16]] : [], [0x7, code], "\(input.suffix(20)): \(reply)")
        }
        try TestSocket.writeAll(upload, Array("world".utf8) + Array("GET /after HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".utf8))
        let reply = String(decoding: try TestSocket.readToEOF(upload), as: UTF8.self)
        XCTAssertEqual(statusLines(reply), ["HTTP/1.1 200 OK", "HTTP/1.1 200 OK"], reply)
        XCTAssertTrue(reply.contains("\"len\": 10"), reply)
        XCTAssertTrue(try send("GET /new HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").hasPrefix("HTTP/1.1 200"))
    }

    func testExpectContinueThenBody() throws {
        let fd = try TestSocket.connect("127.0.0.1", gateway.address.port)
        defer { close(fd) }
        try TestSocket.writeAll(fd, Array("PUT /expect HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\nConnection: close\r\n\r\n".utf8))
        let interim = "HTTP/1.1 100 Continue\r\n\r\n"
        XCTAssertEqual(String(decoding: try TestSocket.readExactly(fd, interim.utf8.count), as: UTF8.self), interim)
        try TestSocket.writeAll(fd, Array("hello".utf8))
        let reply = String(decoding: try TestSocket.readToEOF(fd), as: UTF8.self)
        XCTAssertTrue(reply.hasPrefix("HTTP/1.1 200"), reply)
        XCTAssertTrue(reply.contains("\"len\": 5"), reply)
    }
}
