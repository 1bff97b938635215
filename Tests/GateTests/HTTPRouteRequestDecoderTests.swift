import NIOCore
import NIOHTTP1
import XCTest

@testable import Gate

/// `HTTP1RequestDecoder`, the gateway's HTTP/1.1 request decoder: pipelined requests fed whole,
/// split at every byte and byte by byte decode to the same parts; malformed and smuggling
/// inputs are refused with 400 (431 for heads over the limits), however they arrive.
final class HTTPRouteRequestDecoderTests: XCTestCase {
    /// A decoded part in comparable form.
    enum Decoded: Equatable {
        case head(method: String, uri: String, version: String, fields: [String], host: String, keepAlive: Bool, hasBody: Bool)
        case body(String)
        case end(trailers: [String]?)
    }

    /// Decodes `pieces` fed in order; body parts are merged (their split depends on the feed).
    static func decode(_ pieces: [[UInt8]]) -> (parts: [Decoded], error: HTTP1RequestDecoder.Malformed?) {
        var decoder = HTTP1RequestDecoder()
        var parts: [Decoded] = []
        for piece in pieces {
            decoder.feed(ByteBuffer(bytes: piece))
            while true {
                let part: HTTP1RequestDecoder.Part?
                do {
                    part = try decoder.next()
                } catch {
                    return (parts, error)
                }
                guard let part else { break }
                switch part {
                case .head(let head, let request, let hasBody):
                    parts.append(
                        .head(
                            method: head.method.rawValue, uri: head.uri, version: "\(head.version.major).\(head.version.minor)",
                            fields: head.fields.map { "\($0.name)=\($0.value)" }, host: request.host, keepAlive: head.isKeepAlive,
                            hasBody: hasBody))
                case .body(let buffer):
                    let text = String(buffer: buffer)
                    if case .body(let before) = parts.last {
                        parts[parts.count - 1] = .body(before + text)
                    } else {
                        parts.append(.body(text))
                    }
                case .end(let trailers):
                    parts.append(.end(trailers: trailers.map { $0.map { "\($0.name)=\($0.value)" } }))
                }
            }
        }
        return (parts, nil)
    }

    /// The same input whole, in two pieces split at every offset, and byte by byte.
    static func feeds(_ text: String) -> [(String, [[UInt8]])] {
        let bytes = Array(text.utf8)
        var feeds: [(String, [[UInt8]])] = [("whole", [bytes])]
        for split in 1..<bytes.count { feeds.append(("split at \(split)", [Array(bytes[..<split]), Array(bytes[split...])])) }
        feeds.append(("byte by byte", bytes.map { [$0] }))
        return feeds
    }

    static let pipelined =
        "\r\nGET /a?x=1 HTTP/1.1\r\nHost: Example.COM\r\nUser-Agent: t\r\n\r\n"
        + "POST /b HTTP/1.1\r\nHost: b\r\nContent-Length: 5, 5\r\n\r\nhello"
        + "PUT /c HTTP/1.1\r\nhost: c\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n5;ext=1\r\nchunk\r\nA\r\n0123456789\r\n0\r\nX-Sum: abc\r\nX-Other:  d e \r\n\r\n"
        + "GET /d HTTP/1.0\nConnection: keep-alive\n\n"
        + "GET /e HTTP/1.1\r\nHost: e\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"

    static let expected: [Decoded] = [
        .head(method: "GET", uri: "/a?x=1", version: "1.1", fields: ["Host=Example.COM", "User-Agent=t"], host: "example.com", keepAlive: true, hasBody: false),
        .end(trailers: nil),
        .head(method: "POST", uri: "/b", version: "1.1", fields: ["Host=b", "Content-Length=5, 5"], host: "b", keepAlive: true, hasBody: true),
        .body("hello"),
        .end(trailers: nil),
        .head(
            method: "PUT", uri: "/c", version: "1.1", fields: ["host=c", "Transfer-Encoding=gzip, Chunked"], host: "c", keepAlive: true, hasBody: true),
        .body("chunk0123456789"),
        .end(trailers: ["X-Sum=abc", "X-Other=d e"]),
        .head(method: "GET", uri: "/d", version: "1.0", fields: ["Connection=keep-alive"], host: "", keepAlive: true, hasBody: false),
        .end(trailers: nil),
        .head(method: "GET", uri: "/e", version: "1.1", fields: ["Host=e", "Connection=close", "Content-Length=0"], host: "e", keepAlive: false, hasBody: false),
        .end(trailers: nil),
    ]

    func testPipelinedRequestsWholeSplitAndByteByByte() {
        for (name, pieces) in Self.feeds(Self.pipelined) {
            let result = Self.decode(pieces)
            XCTAssertNil(result.error, name)
            XCTAssertEqual(result.parts, Self.expected, name)
        }
    }

    /// Names, values, methods and targets are reused from the previous head of the connection
    /// (and the route view's host from its `Host`) only where their bytes are the same: a
    /// value of the same length with other bytes, a longer or shorter one, a field at another
    /// position, a head with fewer fields, short and long strings alike all decode as sent.
    func testFieldsRepeatedFromThePreviousHeadDecodeAsSent() {
        let heads: [(line: String, host: String, fields: [String])] = [
            ("GET /", "example.com", ["Host: example.com:8080", "User-Agent: client/1.0 (long value)", "X-Long-Field-Name: 0123456789abcdef", "X: ab"]),
            ("GET /", "example.com", ["Host: example.com:8080", "User-Agent: client/1.0 (long value)", "X-Long-Field-Name: 0123456789abcdef", "X: ab"]),
            ("GET /a", "example.com", ["Host: example.com:8080", "User-Agent: client/1.0 (LONG value)", "X-Long-Field-Name: 0123456789abcdeff", "X: ac"]),
            ("PUT /b", "example.com", ["Host: example.com:8081", "X-Long-Field-Name: 0123456789abcdef", "User-Agent: client/1.0 (long value)", "Y: ac"]),
            ("PUT /b", "example.org", ["Host: example.org:8081"]),
            ("GET /bb", "example.com", ["Host: Example.com:8081", "User-Agent: client/1.0 (long value)", "X-Long-Field-Name: 0123456789abcdef"]),
            ("GET /bb", "example.com", ["Host: example.com", "X: ab"]),
        ]
        let text = heads.map { $0.line + " HTTP/1.1\r\n" + $0.fields.map { $0 + "\r\n" }.joined() + "\r\n" }.joined()
        let expected = heads.flatMap { head -> [Decoded] in
            let words = head.line.split(separator: " ").map(String.init)
            return [
                .head(
                    method: words[0], uri: words[1], version: "1.1", fields: head.fields.map { $0.replacingOccurrences(of: ": ", with: "=") },
                    host: head.host, keepAlive: true, hasBody: false),
                .end(trailers: nil),
            ]
        }
        for (name, pieces) in Self.feeds(text) {
            let result = Self.decode(pieces)
            XCTAssertNil(result.error, name)
            XCTAssertEqual(result.parts, expected, name)
        }
    }

    /// The route view's host and port from `Host`, read from its bytes as `Int(_:)` reads a
    /// port; the path and query split at the first `?`.
    func testRouteRequestHostPortPathAndQuery() {
        let cases: [(String, String, Int?)] = [
            ("Example.COM:8080", "example.com", 8080), ("example.com", "example.com", nil), ("[::1]:443", "[::1]", 443),
            ("[::1]", "[::1]", nil), ("h:+80", "h", 80), ("h:-1", "h", -1), ("h:", "h:", nil), ("h:x", "h:x", nil),
            ("h:+", "h:+", nil), ("h:99999999999999999999", "h:99999999999999999999", nil), ("", "", nil),
            ("Ünï.example:1", "ünï.example", 1), ("a:b:7", "a:b", 7),
        ]
        for (host, name, port) in cases {
            let request = RouteRequest(method: "GET", target: "/p?q=1?r", host: host, headers: [])
            XCTAssertEqual(request.host, name, host)
            XCTAssertEqual(request.port, port, host)
            XCTAssertEqual(request.path, "/p", host)
            XCTAssertEqual(request.query, "q=1?r", host)
        }
        let plain = RouteRequest(method: "GET", target: "/p", host: "h", headers: [])
        XCTAssertEqual(plain.path, "/p")
        XCTAssertNil(plain.query)
        XCTAssertEqual(RouteRequest(method: "GET", target: "/p?", host: "h", headers: []).query, "")
        // `query` is kept as text and a flag: nil and "" differ, whichever initializer or the
        // setter made them, and equal requests hash alike.
        var changed = plain
        changed.query = ""
        XCTAssertNotEqual(changed, plain)
        XCTAssertEqual(changed, RouteRequest(method: "GET", target: "/p?", host: "h", headers: []))
        changed.query = "a=1"
        XCTAssertEqual(changed, RouteRequest(method: "GET", host: "h", path: "/p", query: "a=1"))
        XCTAssertEqual(changed, RouteRequest(method: "GET", target: "/p?a=1", host: "h", headers: []))
        changed.query = nil
        XCTAssertEqual(changed, plain)
        XCTAssertEqual(Set([changed, plain, RouteRequest(method: "GET", host: "h", path: "/p")]).count, 1)
    }

    /// Malformed heads and bodies, each with the status it gets and a word of its message.
    static let malformed: [(String, Int, String)] = [
        ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, "both"),
        ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", 400, "both"),
        ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", 400, "conflicting"),
        ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\nhello!", 400, "Content-Length"),
        ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello", 400, "decimal"),
        ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\nhello", 400, "decimal"),
        ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5 5\r\n\r\nhello", 400, "decimal"),
        ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \r\n\r\n", 400, "decimal"),
        ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1234567890123456789\r\n\r\n", 400, "decimal"),
        ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 400, "chunked"),
        ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 400, "chunked"),
        ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 400, "chunked"),
        ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked,\r\n\r\n", 400, "empty coding"),
        ("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, "HTTP/1.0"),
        ("GET / HTTP/1.1\r\nHost: a\r\nX-Folded: a\r\n b\r\n\r\n", 400, "obs-fold"),
        ("GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400, "whitespace"),
        ("GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", 400, "bare CR"),
        ("GET / HTTP/1.1\r\nHost: a\r\nX: a\u{0}b\r\n\r\n", 400, "control"),
        ("GET / HTTP/1.1\r\nHost: a\r\nX\u{7F}: a\r\n\r\n", 400, "field name"),
        ("GET / HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n", 400, "whitespace"),
        ("GET / HTTP/1.1\r\nHost: a\r\n: empty\r\n\r\n", 400, "empty field name"),
        ("GET / HTTP/1.1\r\n\r\n", 400, "without a Host"),
        ("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, "2 Host"),
        ("GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n", 400, "2 Host"),
        ("GET / HTTP/2.0\r\nHost: a\r\n\r\n", 400, "not supported"),
        ("GET / HTTP/1.1 \r\nHost: a\r\n\r\n", 400, "line end"),
        ("GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400, "request-target"),
        ("GET /\u{7F} HTTP/1.1\r\nHost: a\r\n\r\n", 400, "request-target"),
        ("\u{16}\u{3}\u{1}\u{0}\u{5}\u{1}\u{0}\u{0}\u{1}", 400, "method"),
        ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400, "chunk size"),
        ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000000\r\n", 400, "15 hex digits"),
        ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n", 400, "after the chunk size"),
        ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n", 400, "CRLF"),
        ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;a\u{1}\r\nhello\r\n0\r\n\r\n", 400, "control"),
        ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nbad trailer\r\n\r\n", 400, "trailer"),
        ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: a\nY: b\r\n\r\n", 400, "trailer"),
        ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: a\r\n b\r\n\r\n", 400, "obs-fold"),
        ("GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + String(repeating: "a", count: 17_000) + "\r\n\r\n", 431, "limit"),
        ("GET /" + String(repeating: "a", count: 17_000) + " HTTP/1.1\r\nHost: a\r\n\r\n", 431, "limit"),
        ("GET / HTTP/1.1\r\nHost: a\r\n" + (0..<101).map { "X-\($0): v\r\n" }.joined() + "\r\n", 431, "more than 100"),
    ]

    func testMalformedRequestsAreRefusedHoweverTheyArrive() {
        for (text, status, word) in Self.malformed {
            let bytes = Array(text.utf8)
            for (name, pieces) in [("whole", [bytes]), ("byte by byte", bytes.map { [$0] })] {
                let result = Self.decode(pieces)
                XCTAssertEqual(result.error?.status, status, "\(name): \(text.debugDescription.prefix(120))")
                XCTAssertTrue(result.error?.message.contains(word) ?? false, "\(name): \(result.error?.message ?? "no error") lacks \(word)")
            }
        }
    }

    /// A request that follows a refused one is never decoded: the decoder stops.
    func testNothingIsDecodedAfterAnError() {
        var decoder = HTTP1RequestDecoder()
        decoder.feed(ByteBuffer(string: "GET / HTTP/1.1\r\nHost : a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"))
        XCTAssertThrowsError(try decoder.next())
        XCTAssertNil(try decoder.next())
        decoder.feed(ByteBuffer(string: "GET / HTTP/1.1\r\nHost: a\r\n\r\n"))
        XCTAssertNil(try decoder.next())
    }

    /// Garbage is refused on its first bytes, before any line end arrives.
    func testGarbageIsRefusedBeforeALineEnd() {
        var decoder = HTTP1RequestDecoder()
        decoder.feed(ByteBuffer(bytes: [0x16, 0x03, 0x01]))
        XCTAssertThrowsError(try decoder.next())
    }

    /// After an upgrade request the bytes behind it are handed out untouched.
    func testRemainingBytesAfterAnUpgradeRequest() throws {
        var decoder = HTTP1RequestDecoder()
        decoder.feed(ByteBuffer(string: "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\nPRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"))
        guard case .head(let head, _, let hasBody)? = try decoder.next() else { return XCTFail("no head") }
        XCTAssertEqual(head.fields.filter { $0.name == "Upgrade" }.map(\.value), ["h2c"])
        XCTAssertTrue(head.asksForH2C)
        XCTAssertTrue(head.asksToSwitch)
        XCTAssertFalse(hasBody)
        XCTAssertFalse(decoder.atHead)
        XCTAssertEqual(decoder.takeRemaining().map { String(buffer: $0) }, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        XCTAssertNil(try decoder.next())
    }

    /// What `Exchange` and the handler ask of a head, found in the decoder's pass over the fields.
    func testFieldsTheExchangeAsksFor() throws {
        var decoder = HTTP1RequestDecoder()
        decoder.feed(
            ByteBuffer(
                string: "PUT /u HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, close\r\nUpgrade: websocket\r\nExpect: 100-Continue\r\nContent-Length: 0\r\n\r\n"
                    + "POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n0\r\n\r\n"
                    + "GET /k HTTP/1.0\r\nConnection: Keep-Alive, x-other\r\n\r\n"))
        guard case .head(let first, _, _)? = try decoder.next(), case .end? = try decoder.next() else { return XCTFail("first") }
        XCTAssertTrue(first.asksToSwitch)
        XCTAssertFalse(first.asksForH2C)
        XCTAssertFalse(first.isKeepAlive)
        XCTAssertTrue(first.expectsContinue)
        XCTAssertEqual(first.contentLength, "0")
        XCTAssertFalse(first.hasTransferEncoding)
        XCTAssertTrue(first.hasHost)
        XCTAssertNil(first.h2cSettingsProblem)
        guard case .head(let second, _, let hasBody)? = try decoder.next(), case .end? = try decoder.next() else { return XCTFail("second") }
        XCTAssertTrue(hasBody)
        XCTAssertTrue(second.hasTransferEncoding)
        XCTAssertNil(second.contentLength)
        XCTAssertTrue(second.isKeepAlive)
        XCTAssertFalse(second.asksToSwitch || second.expectsContinue)
        guard case .head(let third, let view, _)? = try decoder.next() else { return XCTFail("third") }
        XCTAssertTrue(third.isKeepAlive)
        XCTAssertFalse(third.isHTTP11 || third.hasHost)
        XCTAssertEqual(view.host, "")
        XCTAssertEqual(third.nioHead.headers["connection"], ["Keep-Alive, x-other"])
        XCTAssertTrue(third.nioHead.isKeepAlive)
    }

    /// The decoder is at a head only between requests (pipelined requests wait there).
    func testAtHeadBetweenRequestsOnly() throws {
        var decoder = HTTP1RequestDecoder()
        decoder.feed(ByteBuffer(string: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nh"))
        XCTAssertTrue(decoder.atHead)
        guard case .head? = try decoder.next() else { return XCTFail("no head") }
        XCTAssertFalse(decoder.atHead)
        guard case .body? = try decoder.next() else { return XCTFail("no body") }
        XCTAssertNil(try decoder.next())
        decoder.feed(ByteBuffer(string: "iGET / HTTP/1.1\r\nHost: a\r\n\r\n"))
        guard case .body? = try decoder.next(), case .end? = try decoder.next() else { return XCTFail("no end") }
        XCTAssertTrue(decoder.atHead)
        XCTAssertEqual(decoder.bufferedBytes, 27)
    }
}
