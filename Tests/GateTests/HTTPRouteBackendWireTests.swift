import Foundation
import Glibc
import NIOCore
import NIOEmbedded
import NIOHTTP1
import XCTest

@testable import Gate

extension BackendResponseReader {
    /// `next` as an optional (nil: more bytes are needed), for the tests' `while let` loops.
    mutating func nextEvent(_ buffer: inout ByteBuffer) throws(WireError) -> Event? {
        let event = try next(&buffer)
        if case .needMore = event { return nil }
        return event
    }
}

/// The hand-written HTTP/1.1 backend side of the gateway: `BackendResponseReader` (fed whole,
/// split at every offset and byte at a time, with malformed input), `BackendWire` request
/// and client heads, and end to end against a backend that answers crafted bytes (chunked
/// with trailers, close-delimited, hop-by-hop fields named by Connection, HEAD, 204, 103,
/// malformed) through HTTP/1.1 (raw socket, curl) and h2c (nghttp).
final class HTTPRouteBackendWireTests: XCTestCase {
    // MARK: - BackendResponseReader

    struct Case {
        var name: String
        var bytes: String
        var method = "GET"
        /// Per response: status, framing, keep-alive, decoded body.
        var responses: [(status: Int, framing: HTTPBodyFraming, keepAlive: Bool, body: String)]
        /// The reader waits for the backend to close (read until close).
        var endsAtClose = false
    }

    static let cases: [Case] = [
        Case(
            name: "content-length", bytes: "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nServer: x\r\n\r\nhello",
            responses: [(200, .contentLength(5), true, "hello")]),
        Case(
            name: "two responses back to back", bytes: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nabHTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
            responses: [(200, .contentLength(2), true, "ab"), (404, .none, true, "")]),
        Case(
            name: "chunked with extension and trailers",
            bytes: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;name=value\r\nhello\r\n7\r\n, world\r\n0\r\nX-Trailer: t\r\n\r\n",
            responses: [(200, .chunked, true, "hello, world")]),
        Case(
            name: "chunked, upper-case hex, then another response",
            bytes: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nA\r\n0123456789\r\n0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nz",
            responses: [(200, .chunked, true, "0123456789"), (200, .contentLength(1), true, "z")]),
        Case(
            name: "HTTP/1.0 until close", bytes: "HTTP/1.0 200 OK\r\nX-A: 1\r\n\r\nuntil close",
            responses: [(200, .untilClose, false, "until close")], endsAtClose: true),
        Case(
            name: "Connection: close", bytes: "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: close\r\n\r\nc",
            responses: [(200, .contentLength(1), false, "c")]),
        Case(
            name: "HTTP/1.0 keep-alive", bytes: "HTTP/1.0 200 OK\r\nContent-Length: 1\r\nConnection: keep-alive\r\n\r\nk",
            responses: [(200, .contentLength(1), true, "k")]),
        Case(
            name: "HEAD announces a body it does not carry", bytes: "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n", method: "HEAD",
            responses: [(200, .none, true, "")]),
        Case(name: "204", bytes: "HTTP/1.1 204 No Content\r\n\r\n", responses: [(204, .none, true, "")]),
        Case(
            name: "304 with a length", bytes: "HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
            responses: [(304, .none, true, "")]),
        Case(
            name: "103 and 100 skipped",
            bytes: "HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nyes",
            responses: [(200, .contentLength(3), true, "yes")]),
        Case(
            name: "Connection naming another field (slow path)",
            bytes: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: X-Secret, keep-alive\r\nX-Secret: s\r\n\r\nok",
            responses: [(200, .contentLength(2), true, "ok")]),
        Case(
            name: "101 becomes a body until close", bytes: "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\nraw",
            responses: [(101, .untilClose, false, "raw")], endsAtClose: true),
    ]

    /// Feeds `chunks` to a reader; returns the events (bodies joined per response) and
    /// whether the reader ended the last body at close.
    /// `keepFields: false`: as for an HTTP/1.1 client relayed the raw head (a usual head's
    /// fields are checked, not kept).
    func read(
        _ chunks: [[UInt8]], method: String, decode: Bool, close: Bool, keepFields: Bool = true
    ) throws -> [(HTTP1ResponseHead, HTTPBodyFraming, Bool, [UInt8], Int)] {
        var reader = BackendResponseReader()
        reader.requestMethod = method
        reader.decodeChunks = decode
        reader.keepsFields = keepFields
        var out: [(HTTP1ResponseHead, HTTPBodyFraming, Bool, [UInt8], Int)] = []
        var current: (HTTP1ResponseHead, HTTPBodyFraming, Bool, [UInt8])?
        var leftover = ByteBuffer()
        func handle(_ event: BackendResponseReader.Event) {
            switch event {
            case .head(let head, let framing, let keepAlive, let raw):
                // The raw head is exactly the bytes the parser consumed.
                if case .done(let again, let consumed) = HTTP1ResponseHead.parse(raw.readableBytesView) {
                    if keepFields || !head.headers.isEmpty {
                        XCTAssertEqual(again, head)
                    } else {
                        XCTAssertEqual(HTTP1ResponseHead(version: again.version, status: again.status, reason: again.reason, headers: []), head)
                    }
                    XCTAssertEqual(consumed, raw.readableBytes)
                } else {
                    XCTFail("raw head does not parse")
                }
                current = (head, framing, keepAlive, [])
            case .body(let buffer): current?.3 += buffer.readableBytesView
            case .end(let bytes):
                if let c = current { out.append((c.0, c.1, c.2, c.3, bytes)) }
                current = nil
            case .needMore:
                XCTFail("needMore handed on")
            }
        }
        for chunk in chunks {
            leftover.writeBytes(chunk)
            while let event = try reader.nextEvent(&leftover) { handle(event) }
            leftover.discardReadBytes()
        }
        if close, let end = reader.closed() { handle(end) }
        XCTAssertNil(current, "a response did not end")
        XCTAssertEqual(leftover.readableBytes, 0)
        return out
    }

    /// The raw chunked body section of `bytes` (what an HTTP/1.1 client is relayed).
    func rawBody(_ text: String) -> String {
        guard let start = text.range(of: "\r\n\r\n") else { return "" }
        return String(text[start.upperBound...])
    }

    func testReaderWholeSplitAndByteAtATime() throws {
        for c in Self.cases {
            let bytes = Array(c.bytes.utf8)
            var feeds: [(String, [[UInt8]])] = [("whole", [bytes]), ("bytes", bytes.map { [$0] })]
            for cut in 1..<bytes.count { feeds.append(("split \(cut)", [Array(bytes[..<cut]), Array(bytes[cut...])])) }
            for (decode, keep) in [(true, true), (false, true), (false, false)] {
                for (how, chunks) in feeds {
                    let got = try read(chunks, method: c.method, decode: decode, close: c.endsAtClose, keepFields: keep)
                    XCTAssertEqual(got.count, c.responses.count, "\(c.name) \(how) decode=\(decode) keep=\(keep)")
                    for (g, e) in zip(got, c.responses) {
                        XCTAssertEqual(g.0.status, e.status, "\(c.name) \(how)")
                        XCTAssertEqual(g.1, e.framing, "\(c.name) \(how)")
                        XCTAssertEqual(g.2, e.keepAlive, "\(c.name) \(how)")
                        XCTAssertEqual(g.4, e.body.utf8.count, "\(c.name) \(how): data bytes")
                        if decode || e.framing != .chunked {
                            XCTAssertEqual(String(decoding: g.3, as: UTF8.self), e.body, "\(c.name) \(how) decode=\(decode)")
                        }
                    }
                    // Undecoded, a lone chunked response is relayed byte for byte.
                    if !decode, c.responses.count == 1, c.responses[0].framing == .chunked {
                        XCTAssertEqual(String(decoding: got[0].3, as: UTF8.self), rawBody(c.bytes), "\(c.name) \(how)")
                    }
                }
            }
        }
    }

    /// Decoding for HTTP/2, the trailer section is kept and handed out once at the end: allowed
    /// fields only (framing, hop-by-hop, cookies and malformed lines left out), values trimmed;
    /// fed whole, split at every offset and byte at a time. Undecoded (HTTP/1.1: relayed raw) and
    /// without trailers there are none, and a second response on the connection gets none.
    func testReaderKeepsTrailersForHTTP2() throws {
        let trailers = "X-Checksum:  abc \r\nContent-Length: 5\r\nConnection: close\r\nSet-Cookie: a=b\r\nBad Name: x\r\n:status: 1\r\nX-Two:2\r\n"
        let first = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nbody\r\n0\r\n" + trailers + "\r\n"
        let second = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"
        let bytes = Array((first + second).utf8)
        var feeds: [[[UInt8]]] = [[bytes], bytes.map { [$0] }]
        for cut in 1..<bytes.count { feeds.append([Array(bytes[..<cut]), Array(bytes[cut...])]) }
        for decode in [true, false] {
            for (index, chunks) in feeds.enumerated() {
                var reader = BackendResponseReader()
                reader.decodeChunks = decode
                var got: [HTTPHeaders?] = []
                var buffer = ByteBuffer()
                for chunk in chunks {
                    buffer.writeBytes(chunk)
                    while let event = try reader.nextEvent(&buffer) {
                        if case .end = event { got.append(reader.takeTrailers()) }
                    }
                    buffer.discardReadBytes()
                }
                XCTAssertEqual(got.count, 2, "feed \(index)")
                let fields = got.first.flatMap { $0 }.map { Array($0.map { "\($0.name)=\($0.value)" }) }
                XCTAssertEqual(fields, decode ? ["X-Checksum=abc", "X-Two=2"] : nil, "feed \(index) decode=\(decode)")
                XCTAssertNil(got.last.flatMap { $0 }, "feed \(index): the second response has no trailers")
            }
        }
        XCTAssertNil(BackendWire.trailerFields(Array("Content-Type: x\r\nTE: trailers\r\nnocolon\r\n\r\n".utf8)))
    }

    func testReaderRefusesMalformedResponses() {
        let bad: [(String, String)] = [
            ("status line", "HTTP/1.1 2x0 OK\r\n\r\n"),
            ("version", "HTTP/2.0 200 OK\r\n\r\n"),
            ("header without colon", "HTTP/1.1 200 OK\r\nBroken\r\n\r\n"),
            ("obs-fold", "HTTP/1.1 200 OK\r\nA: 1\r\n folded\r\n\r\n"),
            ("TE and CL", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"),
            ("conflicting CL", "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n"),
            ("CL not a number", "HTTP/1.1 200 OK\r\nContent-Length: 3x\r\n\r\n"),
            ("chunk size not hex", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"),
            ("chunk size too long", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + String(repeating: "f", count: 16) + "\r\n"),
            ("data without CRLF", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabX\r\n"),
            ("size line bare LF", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\nab\r\n"),
            ("extension control byte", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2;a\u{01}\r\n"),
            ("trailer control byte", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: \u{01}\r\n\r\n"),
            ("endless chunk extension", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2;" + String(repeating: "a", count: 5000)),
        ]
        for (name, text) in bad {
            for decode in [true, false] {
                XCTAssertThrowsError(try read([Array(text.utf8)], method: "GET", decode: decode, close: false), name)
                XCTAssertThrowsError(try read(Array(text.utf8).map { [$0] }, method: "GET", decode: decode, close: false), "\(name) drip-fed")
            }
        }
        // A response cut short: no end at close.
        var reader = BackendResponseReader()
        var buffer = ByteBuffer(string: "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        XCTAssertNotNil(try reader.nextEvent(&buffer))
        XCTAssertNotNil(try reader.nextEvent(&buffer))
        XCTAssertTrue(reader.inResponse)
        XCTAssertNil(reader.closed())
    }

    /// The one-pass framing agrees with `HTTP1ResponseHead.bodyFraming` / `keepsConnection`.
    func testFastFramingMatchesTheGateParser() throws {
        let heads = [
            "HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n", "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n", "HTTP/1.1 200 OK\r\n\r\n",
            "HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", "HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 1\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTRANSFER-ENCODING: Chunked\r\n\r\n", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 3\r\n\r\n",
            "HTTP/1.1 200 OK\r\nConnection: upgrade, close\r\nContent-Length: 3\r\n\r\n", "HTTP/1.1 204 No Content\r\nContent-Length: 3\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\n\r\n", "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n",
            "HTTP/1.1 101 Switching Protocols\r\n\r\n", "HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n",
        ]
        for text in heads {
            guard case .done(let head, _) = HTTP1ResponseHead.parse(Array(text.utf8)) else { return XCTFail(text) }
            for method in ["GET", "HEAD", "CONNECT", "POST"] {
                let fast = try BackendResponseReader.framing(head, requestMethod: method)
                XCTAssertEqual(fast.0, try head.bodyFraming(requestMethod: method), "\(method) \(text)")
                XCTAssertEqual(fast.keepAlive, head.keepsConnection, "\(method) \(text)")
                // From the head's bytes (fields not kept): the same, or nil for the unusual heads.
                let raw = BackendResponseReader.framing(raw: ByteBuffer(string: text), status: head.status, version: head.version, requestMethod: method)
                let unusual = method == "CONNECT" || ["upgrade, close", "gzip", "3, 3", "101", "Content-Length: 3\r\nContent-Length"].contains { text.contains($0) }
                XCTAssertEqual(raw == nil, unusual, "\(method) \(text)")
                if let raw {
                    XCTAssertEqual(raw.0, fast.0, "\(method) \(text)")
                    XCTAssertEqual(raw.keepAlive, fast.keepAlive, "\(method) \(text)")
                }
            }
        }
    }

    /// `isTokenChar` (a table) is RFC 9110 §5.6.2's tchar, for every byte value.
    func testTokenCharsAreRFC9110s() {
        let tchar = Set("!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz".utf8)
        for byte in 0...255 { XCTAssertEqual(isTokenChar(UInt8(byte)), tchar.contains(UInt8(byte)), "byte \(byte)") }
    }

    // MARK: - BackendWire

    func testRequestHeadIsSerializedAndChecked() throws {
        var buffer = ByteBuffer()
        try BackendWire.requestHead(
            method: "POST", target: "/a?b=c",
            fields: [HTTPField("Host", "h.example"), HTTPField("Connection", "keep-alive"), HTTPField("TE", "trailers"), HTTPField("X-A", "1\t2")],
            extra: [HTTPField("transfer-encoding", "chunked")], into: &buffer)
        XCTAssertEqual(String(buffer: buffer), "POST /a?b=c HTTP/1.1\r\nHost: h.example\r\nX-A: 1\t2\r\ntransfer-encoding: chunked\r\n\r\n")
        let refused: [(String, String, [HTTPField])] = [
            ("GET", "/x", [HTTPField("X", "a\r\nInjected: 1")]), ("GET", "/x", [HTTPField("X", "a\u{0}")]),
            ("GET", "/x", [HTTPField("Bad Name", "v")]), ("GET", "/x", [HTTPField("", "v")]),
            ("GET", "/x y", []), ("GET", "/x\r\n", []), ("G T", "/", []), ("GET", "", []),
        ]
        for (method, target, fields) in refused {
            var out = ByteBuffer()
            XCTAssertThrowsError(try BackendWire.requestHead(method: method, target: target, fields: fields, extra: [], into: &out), "\(method) \(target) \(fields)")
        }
        // Empty and long values, after bytes already in the buffer.
        var more = ByteBuffer(string: "x")
        let long = String(repeating: "v", count: 3000)
        try BackendWire.requestHead(
            method: "GET", target: "/", fields: [HTTPField("X-Empty", ""), HTTPField("X-Long", long)], extra: [], into: &more)
        XCTAssertEqual(String(buffer: more), "xGET / HTTP/1.1\r\nX-Empty: \r\nX-Long: \(long)\r\n\r\n")
        var chunk = ByteBuffer()
        BackendWire.chunkHeader(255, into: &chunk)
        XCTAssertEqual(String(buffer: chunk), "ff\r\n")
    }

    /// The head written in one piece equals the head written field by field (`writeField`,
    /// the line format of RFC 9112 §5), for every mix of kept and hop-by-hop fields, empty and
    /// long values, into empty, reused (cleared) and pre-filled buffers of any capacity.
    func testRequestHeadInOnePieceEqualsFieldByField() throws {
        let pool: [HTTPField] = [
            HTTPField("Host", "bench.example:8080"), HTTPField("user-agent", "h2load nghttp2/1.52.0"), HTTPField("Connection", "close"),
            HTTPField("Keep-Alive", "timeout=5"), HTTPField("X-Empty", ""), HTTPField("Upgrade", "h2c"), HTTPField("x-long", String(repeating: "abc", count: 700)),
            HTTPField("TE", "trailers"), HTTPField("Accept", "*/*"), HTTPField("Expect", "100-continue"), HTTPField("x-ü", "ü"),
        ]
        var reused = ByteBuffer()
        for count in 0...pool.count {
            for offset in 0..<pool.count {
                let fields = (0..<count).map { pool[($0 + offset) % pool.count] }
                let valid = !fields.contains { $0.name == "x-ü" }
                let extra = offset % 2 == 0 ? [] : [HTTPField("transfer-encoding", "chunked")]
                var expected = ByteBuffer(string: "GET /p?q=1 HTTP/1.1\r\n")
                for field in fields where !HopByHop.contains(field.name) { try? BackendWire.writeField(field, into: &expected) }
                for field in extra { try BackendWire.writeField(field, into: &expected) }
                expected.writeString("\r\n")
                for start in [ByteBuffer(), ByteBuffer(string: "before"), ByteBufferAllocator().buffer(capacity: 1)] {
                    var out = start
                    if valid {
                        try BackendWire.requestHead(method: "GET", target: "/p?q=1", fields: fields, extra: extra, into: &out)
                        XCTAssertEqual(String(buffer: out), String(buffer: start) + String(buffer: expected), "\(fields)")
                    } else {
                        XCTAssertThrowsError(try BackendWire.requestHead(method: "GET", target: "/p?q=1", fields: fields, extra: extra, into: &out))
                        XCTAssertEqual(out, start, "a refused head leaves the buffer as it was")
                    }
                }
                reused.clear()
                if valid {
                    try BackendWire.requestHead(method: "GET", target: "/p?q=1", fields: fields, extra: extra, into: &reused)
                    XCTAssertEqual(reused, expected)
                }
            }
        }
    }

    /// A refused head names what was wrong, and writes nothing (not even the part before).
    func testRequestHeadRefusalsNameTheProblemAndWriteNothing() {
        let cases: [(String, String, [HTTPField], String)] = [
            ("G T", "/", [], "method \"G T\" is not a token"),
            ("", "/", [], "method \"\" is not a token"),
            ("GET", "/a b", [], "request target \"/a b\" has a space or control byte"),
            ("GET", "/\u{7F}", [], "has a space or control byte"),
            ("GET", "/", [HTTPField("Host", "h"), HTTPField("Bad Name", "v")], "field name \"Bad Name\" is not a token"),
            ("GET", "/", [HTTPField("Host", "h"), HTTPField("X-A", "a\rb")], "field X-A has a control byte in its value"),
            ("GET", "/", [HTTPField("X-B", "a\u{7F}")], "field X-B has a control byte in its value"),
            ("GET", "/", [HTTPField("X-C", "\u{0}")], "field X-C has a control byte in its value"),
        ]
        for (method, target, fields, message) in cases {
            var out = ByteBuffer(string: "kept")
            XCTAssertThrowsError(try BackendWire.requestHead(method: method, target: target, fields: fields, extra: [], into: &out)) { error in
                XCTAssertTrue("\(error)".contains(message), "\(error) should say \(message)")
            }
            XCTAssertEqual(String(buffer: out), "kept")
        }
        // A hop-by-hop field is left out before its value is checked (as before).
        var out = ByteBuffer()
        XCTAssertNoThrow(try BackendWire.requestHead(method: "GET", target: "/", fields: [HTTPField("Connection", "a\u{1}")], extra: [], into: &out))
        XCTAssertEqual(String(buffer: out), "GET / HTTP/1.1\r\n\r\n")
        var field = ByteBuffer(string: "x")
        XCTAssertThrowsError(try BackendWire.writeField(HTTPField("X", "\n"), into: &field))
        XCTAssertEqual(String(buffer: field), "x")
    }

    func testClientHeadDropsHopByHopFields() throws {
        let text = "HTTP/1.1 201 Created\r\nContent-Length: 2\r\nConnection: X-Secret, Content-Length, keep-alive\r\nX-Secret: s\r\n"
            + "Keep-Alive: timeout=5\r\nUpgrade: x\r\nProxy-Connection: y\r\nX-Kept: k\r\nTransfer-Encoding: identity\r\n\r\n"
        guard case .done(let head, _) = HTTP1ResponseHead.parse(Array(text.utf8)) else { return XCTFail() }
        var out = ByteBuffer()
        BackendWire.clientHead(head, close: false, into: &out)
        XCTAssertEqual(String(buffer: out), "HTTP/1.1 201 Created\r\nContent-Length: 2\r\nX-Kept: k\r\nTransfer-Encoding: identity\r\n\r\n")
        out.clear()
        BackendWire.clientHead(HTTP1ResponseHead(version: .http1_0, status: 404, reason: "", headers: []), close: true, into: &out)
        XCTAssertEqual(String(buffer: out), "HTTP/1.1 404 \r\nconnection: close\r\n\r\n")
        // From the bytes as received (no field named by Connection): the same head as from the
        // fields, bare LF line ends written as CRLF.
        let heads = [
            "HTTP/1.0 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nX-A:  spaced \r\nTE: x\r\n\r\n",
            "HTTP/1.1 204 No Content\nServer: s\nTransfer-Encoding: chunked\nUpgrade: h2c\nProxy-Connection: y\n\n",
            "HTTP/1.1 500 \r\nConnection: close\r\n\r\n", "HTTP/1.1 302 Found\r\n\r\n",
            // Kept lines copied in runs: a run cut by a dropped field and by a bare LF line.
            "HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nKeep-Alive: x\r\nC: 3\nD: 4\r\nE: 5\r\nUpgrade: y\r\n\r\n",
            "HTTP/1.1 200 OK\nA: 1\r\nB: 2\n\r\n",
        ]
        for text in heads {
            guard case .done(let head, _) = HTTP1ResponseHead.parse(Array(text.utf8)) else { return XCTFail(text) }
            XCTAssertTrue(BackendWire.connectionOptions(head.headers).isEmpty)
            for close in [false, true] {
                var fromFields = ByteBuffer(), fromBytes = ByteBuffer()
                BackendWire.clientHead(head, close: close, into: &fromFields)
                BackendWire.clientHead(raw: ByteBuffer(string: text), close: close, into: &fromBytes)
                XCTAssertEqual(String(buffer: fromBytes), String(buffer: fromFields).replacingOccurrences(of: "X-A: spaced", with: "X-A:  spaced "), text)
            }
        }
    }

    // MARK: - TLSWriteCoalescer

    /// Writes between flushes leave as one buffer (one TLS record), in order; a record-sized
    /// write passes through after what was gathered before it; every promise completes.
    func testTLSWriteCoalescerGathersWritesUntilFlush() throws {
        let channel = EmbeddedChannel(handler: TLSWriteCoalescer())
        defer { _ = try? channel.finish() }
        let first = channel.eventLoop.makePromise(of: Void.self)
        let second = channel.eventLoop.makePromise(of: Void.self)
        channel.write(ByteBuffer(string: "head|"), promise: first)
        channel.write(ByteBuffer(string: "data|"), promise: nil)
        channel.write(ByteBuffer(string: "end"), promise: second)
        XCTAssertNil(try channel.readOutbound(as: ByteBuffer.self))
        channel.flush()
        XCTAssertEqual(try channel.readOutbound(as: ByteBuffer.self).map { String(buffer: $0) }, "head|data|end")
        XCTAssertNil(try channel.readOutbound(as: ByteBuffer.self))
        XCTAssertNoThrow(try first.futureResult.wait())
        XCTAssertNoThrow(try second.futureResult.wait())
        let big = String(repeating: "b", count: TLSWriteCoalescer.recordSize)
        channel.write(ByteBuffer(string: "small"), promise: nil)
        channel.write(ByteBuffer(string: big), promise: nil)
        channel.write(ByteBuffer(string: "after"), promise: nil)
        channel.flush()
        XCTAssertEqual(try channel.readOutbound(as: ByteBuffer.self).map { String(buffer: $0) }, "small")
        XCTAssertEqual(try channel.readOutbound(as: ByteBuffer.self).map { String(buffer: $0) }, big)
        XCTAssertEqual(try channel.readOutbound(as: ByteBuffer.self).map { String(buffer: $0) }, "after")
        // Gathered writes never exceed one record.
        let half = String(repeating: "h", count: TLSWriteCoalescer.recordSize / 2 + 1)
        channel.write(ByteBuffer(string: half), promise: nil)
        channel.write(ByteBuffer(string: half), promise: nil)
        channel.flush()
        XCTAssertEqual(try channel.readOutbound(as: ByteBuffer.self)?.readableBytes, half.utf8.count)
        XCTAssertEqual(try channel.readOutbound(as: ByteBuffer.self)?.readableBytes, half.utf8.count)
    }

    // MARK: - End to end

    /// Answers each request by path with crafted bytes; keeps connections alive unless the
    /// answer is close-delimited.
    static let crafted = #"""
        import socket, sys, threading
        TRAILERS = b"X-Checksum:  abc \r\nContent-Length: 5\r\nConnection: close\r\nSet-Cookie: a=b\r\nBad Name: x\r\nX-Two:2\r\n"
        answers = {
            "/chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nX-Trailer: t\r\n\r\n",
            "/trailers": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n4\r\nbody\r\n0\r\n" + TRAILERS + b"\r\n",
            "/big": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"".join(b"%x\r\n%s\r\n" % (n, b"y" * n) for n in range(1, 400)) + b"0\r\n\r\n",
            "/close": b"HTTP/1.0 200 OK\r\nX-A: 1\r\n\r\nuntil close",
            "/hop": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: X-Secret, keep-alive\r\nX-Secret: s\r\nKeep-Alive: timeout=5\r\nX-Kept: k\r\n\r\nok",
            "/head": b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n",
            "/nocontent": b"HTTP/1.1 204 No Content\r\nX-N: 1\r\n\r\n",
            "/hints": b"HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nyes",
            "/bad": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            "/badhead": b"HTTP/1.1 200 OK\r\nBroken\r\n\r\n",
        }
        def serve(conn):
            data = b""
            while True:
                while b"\r\n\r\n" not in data:
                    more = conn.recv(65536)
                    if not more:
                        conn.close()
                        return
                    data += more
                head, data = data.split(b"\r\n\r\n", 1)
                lines = head.decode().split("\r\n")
                length = 0
                for line in lines[1:]:
                    if line.lower().startswith("content-length:"):
                        length = int(line.split(":", 1)[1])
                while len(data) < length:
                    data += conn.recv(65536)
                data = data[length:]
                path = lines[0].split(" ")[1]
                answer = answers.get(path, b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                conn.sendall(answer)
                if answer.startswith(b"HTTP/1.0") or path.startswith("/bad"):
                    conn.close()
                    return
        server = socket.socket()
        server.bind(("127.0.0.1", 0))
        server.listen(64)
        print(server.getsockname()[1], flush=True)
        while True:
            conn, _ = server.accept()
            threading.Thread(target=serve, args=(conn,), daemon=True).start()
        """#

    var backend: PythonBackend!
    var loops: GateLoopGroup!
    var gateway: HTTPGateway!
    let capture = LogCapture()
    var dir = ""

    override func setUpWithError() throws {
        backend = try PythonBackend("crafted", script: Self.crafted)
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("httproute-wire-\(getpid())-\(UUID())").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try """
            apiVersion: gateway.networking.k8s.io/v1
            kind: HTTPRoute
            metadata: {name: wire}
            spec:
              rules:
              - matches: [{path: {type: PathPrefix, value: /modified}}]
                filters:
                - type: URLRewrite
                  urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /hop}}
                - type: ResponseHeaderModifier
                  responseHeaderModifier: {set: [{name: X-Kept, value: changed}], add: [{name: X-Added, value: a}]}
                backendRefs: [{name: crafted, port: 80}]
              - backendRefs: [{name: crafted, port: 80}]
            """.write(toFile: "\(dir)/routes.yaml", atomically: true, encoding: .utf8)
        loops = try GateLoopGroup(count: 1)
        gateway = try HTTPGateway(
            table: RouteTable(routes: try HTTPRouteLoader(services: ["crafted": backend.address]).load(directory: dir).routes), loops: loops,
            defaultTimeout: 10, accessLog: capture.logger("access"), log: capture.logger("gate"), metrics: PrometheusMetrics())
    }

    var base: String { "http://127.0.0.1:\(gateway.address.port)" }

    override func tearDown() {
        gateway?.stop()
        loops?.shutdown()
        backend?.stop()
        try? FileManager.default.removeItem(atPath: dir)
    }

    /// Reads from `fd` until `text` contains `suffix` (bounded by the socket's timeout).
    func readUntil(_ fd: Int32, _ suffix: String) throws -> String {
        var text = ""
        var buffer = [UInt8](repeating: 0, count: 65536)
        while !text.contains(suffix) {
            let n = recv(fd, &buffer, buffer.count, 0)
            guard n > 0 else { break }
            text += String(decoding: buffer[..<n], as: UTF8.self)
        }
        return text
    }

    /// HTTP/1.1 on one kept-alive connection: the chunked body with its trailer relayed byte
    /// for byte, hop-by-hop fields removed, HEAD and 204 without bodies, 103 skipped.
    func testHTTP1RelaysBackendBytesOnAKeptAliveConnection() throws {
        let fd = try TestSocket.connect("127.0.0.1", gateway.address.port)
        defer { close(fd) }
        try TestSocket.writeAll(fd, Array("GET /chunked HTTP/1.1\r\nHost: a\r\n\r\n".utf8))
        let chunked = try readUntil(fd, "X-Trailer: t\r\n\r\n")
        XCTAssertEqual(
            chunked, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nX-Trailer: t\r\n\r\n")
        try TestSocket.writeAll(fd, Array("GET /hop HTTP/1.1\r\nHost: a\r\n\r\n".utf8))
        XCTAssertEqual(try readUntil(fd, "\r\n\r\nok"), "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Kept: k\r\n\r\nok")
        try TestSocket.writeAll(fd, Array("HEAD /head HTTP/1.1\r\nHost: a\r\n\r\nGET /nocontent HTTP/1.1\r\nHost: a\r\n\r\nGET /hints HTTP/1.1\r\nHost: a\r\n\r\n".utf8))
        XCTAssertEqual(
            try readUntil(fd, "yes"),
            "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nHTTP/1.1 204 No Content\r\nX-N: 1\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nyes")
        try TestSocket.writeAll(fd, Array("GET /modified HTTP/1.1\r\nHost: a\r\n\r\n".utf8))
        XCTAssertEqual(try readUntil(fd, "\r\n\r\nok"), "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Kept: changed\r\nX-Added: a\r\n\r\nok")
        XCTAssertNotNil(capture.waitForLine(containing: ["request", "path=/chunked", "status=200", "bytes=12"]))
        XCTAssertNotNil(capture.waitForLine(containing: ["request", "path=/head", "status=200", "bytes=0"]))
        XCTAssertNotNil(capture.waitForLine(containing: ["request", "path=/hints", "status=200", "bytes=3"]))
    }

    /// A close-delimited body reaches curl whole and the gateway closes the client connection
    /// after it; a malformed backend head is a 502 naming the problem, a malformed body after
    /// a relayed head cuts the client connection (logged); a large chunked body arrives intact.
    func testCloseDelimitedLargeChunkedAndMalformedWithCurl() throws {
        let close = try runProcess(try tool("curl"), ["-sS", "-D", "-", "\(base)/close"])
        XCTAssertEqual(close.status, 0, close.err)
        XCTAssertTrue(close.out.hasSuffix("\r\n\r\nuntil close"), close.out)
        XCTAssertTrue(close.out.lowercased().contains("connection: close"), close.out)
        let big = try runProcess(try tool("curl"), ["-sS", "\(base)/big"])
        XCTAssertEqual(big.out, String(repeating: "y", count: (1..<400).reduce(0, +)))
        XCTAssertNotNil(capture.waitForLine(containing: ["request", "path=/big", "bytes=\((1..<400).reduce(0, +))"]))
        let badHead = try runProcess(try tool("curl"), ["-sS", "-w", "\n%{http_code}", "\(base)/badhead"])
        XCTAssertTrue(badHead.out.hasSuffix("\n502"), badHead.out)
        XCTAssertTrue(badHead.out.contains("invalid response"), badHead.out)
        let badBody = try runProcess(try tool("curl"), ["-sS", "\(base)/bad"])
        XCTAssertNotEqual(badBody.status, 0, badBody.out)
        XCTAssertNotNil(capture.waitForLine(containing: ["request", "path=/bad", "status=200", "invalid response", "chunk size expected"]), capture.lines.joined(separator: "\n"))
    }

    /// Python h2 over h2c (one connection, two streams one after the other): the chunked
    /// body's trailers arrive as a trailing HEADERS frame with END_STREAM (h2's
    /// `TrailersReceived`), with the allowed fields only; a chunked body without trailers ends
    /// with DATA + END_STREAM.
    func testH2CClientGetsTrailers() throws {
        let script = #"""
            import socket, sys, h2.connection, h2.config, h2.events
            s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=30)
            c = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
            c.initiate_connection()
            s.sendall(c.data_to_send())
            for path in ["/trailers", "/chunked", "/big"]:
                sid = c.get_next_available_stream_id()
                c.send_headers(sid, [(":method", "GET"), (":scheme", "http"), (":authority", "a"), (":path", path)], end_stream=True)
                s.sendall(c.data_to_send())
                head, body, trailers, ended = None, b"", None, None
                while ended is None:
                    data = s.recv(65536)
                    if not data:
                        raise SystemExit("closed")
                    for e in c.receive_data(data):
                        if isinstance(e, h2.events.ResponseReceived):
                            head = dict(e.headers)
                        elif isinstance(e, h2.events.DataReceived):
                            body += e.data
                            c.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
                        elif isinstance(e, h2.events.TrailersReceived):
                            trailers = e.headers
                        elif isinstance(e, h2.events.StreamEnded):
                            ended = "trailers" if trailers is not None else "data"
                    s.sendall(c.data_to_send())
                print(path, head[":status"], head.get("trailer"), len(body), ended, trailers)
            """#
        // The python3 on PATH: scripts/deps pip-installs h2 for it.
        let r = try runProcess("/usr/bin/env", ["python3", "-c", script, "\(gateway.address.port)"])
        XCTAssertEqual(r.status, 0, r.err)
        XCTAssertEqual(
            r.out.split(separator: "\n").map(String.init),
            [
                "/trailers 200 X-Checksum 4 trailers [('x-checksum', 'abc'), ('x-two', '2')]",
                "/chunked 200 None 12 trailers [('x-trailer', 't')]",
                "/big 200 None \((1..<400).reduce(0, +)) data None",
            ], r.out + r.err)
    }

    /// HTTP/2 clients get chunked and close-delimited bodies decoded, without hop-by-hop fields.
    func testH2CGetsDecodedBodies() throws {
        for (path, body) in [("/chunked", "hello, world"), ("/close", "until close"), ("/hop", "ok"), ("/big", String(repeating: "y", count: (1..<400).reduce(0, +)))] {
            let r = try runProcess(try tool("nghttp"), ["-n", "--no-dep", "-d", "/dev/null", "-v", "\(base)\(path)"])
            XCTAssertEqual(r.status, 0, r.out + r.err)
            let data = try runProcess(try tool("nghttp"), ["\(base)\(path)"])
            XCTAssertEqual(data.out, body, path)
            XCTAssertTrue(r.out.contains(":status: 200"), r.out)
            XCTAssertFalse(r.out.lowercased().contains("x-secret") || r.out.lowercased().contains("transfer-encoding") || r.out.lowercased().contains("keep-alive"), r.out)
        }
        XCTAssertNotNil(capture.waitForLine(containing: ["request", "path=/chunked", "proto=h2c", "bytes=12"]))
    }
}
