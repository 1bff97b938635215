import Foundation
import Glibc
import XCTest

@testable import Gate

final class WireHTTP1Tests: XCTestCase {
    func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }

    func parse(_ text: String, limits: HTTPRequestHead.Limits = .init()) -> ParseResult<HTTPRequestHead> {
        HTTPRequestHead.parse(bytes(text), limits: limits)
    }

    func head(_ text: String, file: StaticString = #filePath, line: UInt = #line) -> HTTPRequestHead? {
        let result = parse(text)
        guard case .done(let head, let consumed) = result else {
            XCTFail("\(result)", file: file, line: line)
            return nil
        }
        XCTAssertEqual(consumed, text.utf8.count, file: file, line: line)
        return head
    }

    func assertError(_ text: String, _ code: WireError.Code, status: Int, message: String, file: StaticString = #filePath, line: UInt = #line) {
        assertInvalid(bytes(text), code: code, message: message, file: file, line: line) { HTTPRequestHead.parse($0) }
        if case .invalid(let error) = parse(text) { XCTAssertEqual(error.httpStatus, status, file: file, line: line) }
    }

    // MARK: Parsing

    func testAbsoluteFormRequestDecodesWholeSplitAndDripFed() {
        let text = "GET http://example.com:8080/a/b?x=1 HTTP/1.1\r\nHost: example.com:8080\r\nUser-Agent: curl/8\r\nAccept: */*\r\nProxy-Connection: Keep-Alive\r\n\r\n"
        let expected = HTTPRequestHead(
            method: "GET", target: "http://example.com:8080/a/b?x=1", version: .http1_1,
            headers: [
                HTTPField("Host", "example.com:8080"), HTTPField("User-Agent", "curl/8"), HTTPField("Accept", "*/*"),
                HTTPField("Proxy-Connection", "Keep-Alive"),
            ])
        assertDecodesCollections(bytes(text), as: expected) { HTTPRequestHead.parse($0) }
        XCTAssertEqual(expected.values("HOST"), ["example.com:8080"])
        XCTAssertTrue(expected.wantsKeepAlive)
    }

    func testBodyIsNotConsumedAndFramingIsReported() {
        let text = "POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\n"
        guard case .done(let head, let consumed) = HTTPRequestHead.parse(bytes(text + "hello")) else { return XCTFail() }
        XCTAssertEqual(consumed, text.utf8.count)
        XCTAssertEqual(head.bodyFraming, .contentLength(5))
        XCTAssertEqual(self.head("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n")?.bodyFraming, .chunked)
        XCTAssertEqual(self.head("GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n")?.bodyFraming, HTTPBodyFraming.none)
        XCTAssertEqual(self.head("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 7, 7\r\n\r\n")?.bodyFraming, .contentLength(7))
    }

    func testToleratedForms() {
        // Leading empty lines, bare LF line ends, OWS around values, HTTP/1.0 without Host.
        let lf = head("\r\n\nGET /x HTTP/1.0\nAccept:   text/plain \t\nX-Empty:\n\n")
        XCTAssertEqual(lf?.version, .http1_0)
        XCTAssertEqual(lf?.headers, [HTTPField("Accept", "text/plain"), HTTPField("X-Empty", "")])
        XCTAssertEqual(lf?.wantsKeepAlive, false)
        XCTAssertEqual(head("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")?.wantsKeepAlive, true)
        XCTAssertEqual(head("GET / HTTP/1.1\r\nHost: a\r\nConnection: Close\r\n\r\n")?.wantsKeepAlive, false)
        XCTAssertEqual(head("GET / HTTP/1.1\r\nHost: a\r\nX-Latin: caf\u{e9}\r\n\r\n")?.values("x-latin"), ["café"])
    }

    func testMalformedRequestsNameTheProblem() {
        assertError("GET  / HTTP/1.1\r\n\r\n", .badRequestLine, status: 400, message: "request-target is empty")
        assertError("GET /a b HTTP/1.1\r\n\r\n", .badRequestLine, status: 400, message: "\"b HTTP/1\" is not HTTP/DIGIT.DIGIT")
        assertError("G@T / HTTP/1.1\r\n\r\n", .badRequestLine, status: 400, message: "byte 0x40")
        assertError("GET / HTTP/1.1 \r\n\r\n", .badRequestLine, status: 400, message: "followed by byte 0x20")
        assertError("GET / HTTP/x.1\r\n\r\n", .badRequestLine, status: 400, message: "not HTTP/DIGIT.DIGIT")
        assertError("GET / HTTP/1.1\rHost: a\r\n\r\n", .badRequestLine, status: 400, message: "0x0d")
        assertError("GET / HTTP/2.0\r\nHost: a\r\n\r\n", .httpVersionNotSupported, status: 505, message: "HTTP/2.0 not supported")
        assertError("GET / HTTP/1.1\r\nHost : a\r\n\r\n", .badHeader, status: 400, message: "whitespace between the field name and the colon")
        assertError("GET / HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n", .badHeader, status: 400, message: "line 2 has no colon")
        assertError("GET / HTTP/1.1\r\nHost: a\r\n: v\r\n\r\n", .badHeader, status: 400, message: "empty field name")
        assertError("GET / HTTP/1.1\r\nHost: a\r\nX: a\u{1}b\r\n\r\n", .badHeader, status: 400, message: "control byte 0x01")
        assertError("GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", .badHeader, status: 400, message: "bare CR")
        assertError("GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n  continued\r\n\r\n", .obsoleteLineFolding, status: 400, message: "obs-fold")
        assertError("GET / HTTP/1.1\r\nAccept: */*\r\n\r\n", .missingHost, status: 400, message: "without a Host header")
        assertError("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", .missingHost, status: 400, message: "2 Host headers")
        assertError("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", .badFraming, status: 400, message: "both")
        assertError("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", .badFraming, status: 400, message: "conflicting")
        assertError("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", .badFraming, status: 400, message: "not a decimal")
        assertError("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", .badFraming, status: 400, message: "does not end with chunked")
    }

    func testLimits() {
        let limits = HTTPRequestHead.Limits(maxHeadBytes: 64, maxHeaderCount: 2)
        let longLine = "GET /" + String(repeating: "a", count: 80) + " HTTP/1.1\r\n\r\n"
        guard case .invalid(let uri) = parse(longLine, limits: limits) else { return XCTFail() }
        XCTAssertEqual(uri.code, .requestLineTooLong)
        XCTAssertEqual(uri.httpStatus, 414)
        // Without a line end yet, the limit still applies once that many bytes arrived.
        guard case .invalid(let partial) = parse(String(longLine.prefix(70)), limits: limits) else { return XCTFail() }
        XCTAssertEqual(partial.code, .requestLineTooLong)
        XCTAssertEqual(parse(String(longLine.prefix(40)), limits: limits), .needMore)

        let bigHead = "GET / HTTP/1.1\r\nHost: a\r\nX: " + String(repeating: "b", count: 60) + "\r\n\r\n"
        guard case .invalid(let big) = parse(bigHead, limits: limits) else { return XCTFail() }
        XCTAssertEqual(big.code, .headTooLarge)
        XCTAssertEqual(big.httpStatus, 431)
        XCTAssertTrue(big.message.contains("64-byte limit"), big.message)

        guard case .invalid(let many) = parse("GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\n\r\n", limits: limits) else { return XCTFail() }
        XCTAssertEqual(many.code, .tooManyHeaders)
        XCTAssertEqual(many.httpStatus, 431)
        if case .done = parse("GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\n\r\n", limits: limits) {} else { XCTFail("2 headers within 64 bytes") }
    }

    func testGarbageIsRejectedBeforeALineEnd() {
        guard case .invalid(let error) = HTTPRequestHead.parse([0x16, 0x03, 0x01, 0x00]) else { return XCTFail() }
        XCTAssertEqual(error.code, .badRequestLine)
        XCTAssertEqual(parse("GET /partial HTT"), .needMore)
        XCTAssertEqual(parse("GET / HTTP/1.1\r"), .needMore)
    }

    // MARK: Proxy targets

    func target(_ requestLine: String, host: String? = nil) throws(WireError) -> HTTPProxyTarget {
        let text = requestLine + "\r\n" + (host.map { "Host: \($0)\r\n" } ?? "") + "\r\n"
        guard let head = head(text) else { throw WireError(.malformed, "unparsed") }
        return try head.proxyTarget()
    }

    func testProxyTargets() throws {
        XCTAssertEqual(try target("CONNECT example.com:443 HTTP/1.1", host: "example.com:443"), .connect(Destination(host: "example.com", port: 443)))
        XCTAssertEqual(try target("CONNECT [2001:db8::1]:8443 HTTP/1.1", host: "[2001:db8::1]:8443"), .connect(Destination(host: "2001:db8::1", port: 8443)))
        XCTAssertEqual(try target("CONNECT 192.0.2.1:22 HTTP/1.0"), .connect(Destination(host: "192.0.2.1", port: 22)))
        XCTAssertEqual(try target("GET http://example.com/a?b=c HTTP/1.1", host: "other"), .absolute(Destination(host: "example.com", port: 80), originForm: "/a?b=c"))
        XCTAssertEqual(try target("GET HTTP://Example.com:8080 HTTP/1.1", host: "x"), .absolute(Destination(host: "Example.com", port: 8080), originForm: "/"))
        XCTAssertEqual(try target("GET http://[::1]:81?q HTTP/1.1", host: "x"), .absolute(Destination(host: "::1", port: 81), originForm: "/?q"))
        XCTAssertEqual(try target("GET http://h:/p HTTP/1.1", host: "x"), .absolute(Destination(host: "h", port: 80), originForm: "/p"))
        XCTAssertEqual(try target("GET /index.html HTTP/1.1", host: "example.net:8000"), .origin(Destination(host: "example.net", port: 8000), path: "/index.html"))
        XCTAssertEqual(try target("GET / HTTP/1.0"), .origin(nil, path: "/"))
        XCTAssertEqual(try target("OPTIONS * HTTP/1.1", host: "h"), .origin(Destination(host: "h", port: 80), path: "*"))
    }

    func testBadProxyTargets() {
        let cases: [(String, String?, String)] = [
            ("CONNECT example.com HTTP/1.1", "example.com", "has no port"),
            ("CONNECT example.com:0 HTTP/1.1", "x", "expected 1 to 65535"),
            ("CONNECT example.com:70000 HTTP/1.1", "x", "expected 1 to 65535"),
            ("CONNECT [::1 HTTP/1.1", "x", "unterminated IPv6"),
            ("CONNECT [zz::1]:80 HTTP/1.1", "x", "invalid IPv6"),
            ("CONNECT [::1]x:80 HTTP/1.1", "x", "after the IPv6 literal"),
            ("CONNECT :443 HTTP/1.1", "x", "empty host"),
            ("GET https://example.com/ HTTP/1.1", "x", "scheme https not supported"),
            ("GET http://user:pw@example.com/ HTTP/1.1", "x", "userinfo"),
            ("GET http://example.com/#frag HTTP/1.1", "x", "fragment"),
            ("GET http://exa<mple.com/ HTTP/1.1", "x", "character \"<\""),
            ("GET example.com:80 HTTP/1.1", "x", "authority-form is for CONNECT only"),
            ("GET * HTTP/1.1", "x", "only allowed with OPTIONS"),
            ("GET / HTTP/1.1", "bad host!", "character \" \""),
        ]
        for (line, host, message) in cases {
            XCTAssertThrowsError(try target(line, host: host), line) { error in
                guard let error = error as? WireError else { return XCTFail("\(error)") }
                XCTAssertEqual(error.code, .badTarget, line)
                XCTAssertEqual(error.httpStatus, 400)
                XCTAssertTrue(error.message.contains(message), "\(line): \(error.message)")
            }
        }
    }

    // MARK: Forwarding

    func forwarded(_ text: String, _ options: HTTPForwardOptions = .init()) throws -> String {
        guard let head = head(text) else { return "" }
        return String(decoding: try head.forwardHead(options), as: UTF8.self)
    }

    func testForwardHeadRewritesTargetAndRemovesHopByHopFields() throws {
        let text = "GET http://example.com:8080/p?q=1 HTTP/1.1\r\nHost: wrong.example\r\nConnection: keep-alive, X-Secret, Content-Length\r\n"
            + "Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nProxy-Authorization: Basic eA==\r\nTE: trailers\r\n"
            + "Trailer: X-T\r\nUpgrade: websocket\r\nX-Secret: 1\r\nAccept: */*\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n"
        // Content-Length with Transfer-Encoding is refused by the parser, so test each framing separately.
        let chunked = text.replacingOccurrences(of: "Content-Length: 0\r\n", with: "")
        XCTAssertEqual(
            try forwarded(chunked),
            "GET /p?q=1 HTTP/1.1\r\nHost: example.com:8080\r\nTrailer: X-T\r\nAccept: */*\r\nTransfer-Encoding: chunked\r\n\r\n")
        XCTAssertEqual(
            try forwarded(chunked, HTTPForwardOptions(close: true, extraHeaders: [HTTPField("Via", "1.1 ugate")])),
            "GET /p?q=1 HTTP/1.1\r\nHost: example.com:8080\r\nTrailer: X-T\r\nAccept: */*\r\nTransfer-Encoding: chunked\r\nConnection: close\r\nVia: 1.1 ugate\r\n\r\n")
    }

    func testConnectionCannotRemoveFramingOrHost() throws {
        XCTAssertEqual(
            try forwarded("POST /p HTTP/1.1\r\nHost: h\r\nConnection: Content-Length, Host, X-A\r\nContent-Length: 2\r\nX-A: 1\r\n\r\n"),
            "POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n")
        XCTAssertEqual(
            try forwarded("POST /p HTTP/1.1\r\nHost: h\r\nConnection: transfer-encoding\r\nTransfer-Encoding: chunked\r\n\r\n"),
            "POST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n")
    }

    func testForwardHeadAddsHostAndKeepsOrderAndVersion() throws {
        XCTAssertEqual(try forwarded("GET http://[2001:db8::2]/ HTTP/1.0\r\nAccept: a\r\nX-B: b\r\n\r\n"),
                       "GET / HTTP/1.0\r\nHost: [2001:db8::2]\r\nAccept: a\r\nX-B: b\r\n\r\n")
        XCTAssertEqual(try forwarded("POST /api HTTP/1.1\r\nX-First: 1\r\nHost: svc:81\r\nContent-Length: 2\r\n\r\n"),
                       "POST /api HTTP/1.1\r\nX-First: 1\r\nHost: svc:81\r\nContent-Length: 2\r\n\r\n")
    }

    func testUpgradeIsStrippedOrKept() throws {
        let text = "GET http://ws.example/chat HTTP/1.1\r\nHost: ws.example\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: k\r\n\r\n"
        XCTAssertEqual(try forwarded(text), "GET /chat HTTP/1.1\r\nHost: ws.example\r\nSec-WebSocket-Key: k\r\n\r\n")
        XCTAssertEqual(try forwarded(text, HTTPForwardOptions(keepUpgrade: true, close: true)),
                       "GET /chat HTTP/1.1\r\nHost: ws.example\r\nUpgrade: websocket\r\nSec-WebSocket-Key: k\r\nConnection: Upgrade\r\n\r\n")
    }

    // MARK: Responses

    func testErrorResponse() {
        let response = String(decoding: HTTPResponseWriter.error(status: 502, message: "connect to 192.0.2.1:80: connection refused"), as: UTF8.self)
        XCTAssertEqual(response, "HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 44\r\nConnection: close\r\n\r\nconnect to 192.0.2.1:80: connection refused\n")
        let fromError = String(decoding: HTTPResponseWriter.error(WireError(.headTooLarge, "HTTP head exceeds the 16384-byte limit")), as: UTF8.self)
        XCTAssertTrue(fromError.hasPrefix("HTTP/1.1 431 Request Header Fields Too Large\r\n"), fromError)
        XCTAssertTrue(fromError.hasSuffix("\r\n\r\nHTTP head exceeds the 16384-byte limit\n"), fromError)
        let auth = String(decoding: HTTPResponseWriter.error(status: 407, message: "auth", headers: [HTTPField("Proxy-Authenticate", "Basic realm=\"ugate\"")]), as: UTF8.self)
        XCTAssertTrue(auth.hasPrefix("HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"ugate\"\r\n"), auth)
        XCTAssertEqual(HTTPResponseWriter.connectEstablished(), Array("HTTP/1.1 200 Connection established\r\n\r\n".utf8))
        XCTAssertEqual(HTTPResponseWriter.status(errno: ECONNREFUSED), 502)
        XCTAssertEqual(HTTPResponseWriter.status(errno: EHOSTUNREACH), 502)
        XCTAssertEqual(HTTPResponseWriter.status(errno: ETIMEDOUT), 504)
        XCTAssertEqual(HTTPResponseWriter.status(errno: EACCES), 403)
        XCTAssertEqual(HTTPResponseWriter.reasonPhrase(799), "Unknown")
    }

    /// The word-at-a-time control-byte search finds what a byte-by-byte scan finds: every byte
    /// value at every position of values of 0…40 bytes (around and across the 8-byte words),
    /// at any start offset, with HTAB and UTF-8 bytes around it.
    func testFieldValueControlByteSearchMatchesAByteScan() {
        func naive(_ bytes: [UInt8], _ range: Range<Int>) -> Int? {
            range.first { (bytes[$0] < 0x20 && bytes[$0] != 0x09) || bytes[$0] == 0x7F }
        }
        let fillers: [UInt8] = [UInt8(ascii: "a"), 0x09, 0xC3, 0x20, 0x7E, 0x80, 0xFF]
        for length in 0...40 {
            for offset in [0, 1, 3, 7] {
                for filler in fillers {
                    var bytes = [UInt8](repeating: UInt8(ascii: "x"), count: offset) + (0..<length).map { $0 % 3 == 0 ? filler : UInt8(ascii: "v") }
                    bytes.append(0x00)
                    let range = offset..<(offset + length)
                    bytes.withUnsafeBufferPointer { XCTAssertEqual(HTTPHeadScanner.controlByte(in: $0, range), naive(bytes, range)) }
                    guard length > 0 else { continue }
                    for position in Set([0, length / 2, length - 1]) {
                        for value in 0...255 {
                            var changed = bytes
                            changed[offset + position] = UInt8(value)
                            changed.withUnsafeBufferPointer {
                                XCTAssertEqual(HTTPHeadScanner.controlByte(in: $0, range), naive(changed, range), "length \(length) byte \(value) at \(position)")
                            }
                        }
                    }
                }
            }
        }
    }

    /// `HTTP/DIGIT.DIGIT` (RFC 9112 §2.3), checked in one go when whole and byte by byte
    /// otherwise: every byte value at every position, followed by the line end or not, and
    /// prefixes of it (more needed, or incomplete once the line has ended).
    func testVersionIsCheckedWholeAndInPieces() {
        func check(_ bytes: [UInt8], mustEnd: Bool, complete: Bool) -> ParseResult<HTTPVersion> {
            bytes.withUnsafeBufferPointer {
                HTTPHeadScanner(buffer: $0, limits: HTTPHeadLimits()).checkVersion(at: 0, end: bytes.count, mustEnd: mustEnd, complete: complete, code: .badRequestLine)
            }
        }
        let valid = Array("HTTP/1.1".utf8)
        for position in 0..<8 {
            for value in 0...255 {
                var bytes = valid
                bytes[position] = UInt8(value)
                let ok = position == 5 || position == 7 ? (48...57).contains(value) : UInt8(value) == valid[position]
                for (mustEnd, extra) in [(true, [UInt8]()), (true, [0x20]), (false, []), (false, [0x20])] {
                    let accepted = ok && (!mustEnd || extra.isEmpty)
                    switch check(bytes + extra, mustEnd: mustEnd, complete: true) {
                    case .done(let version, let consumed):
                        XCTAssertTrue(accepted, "\(bytes + extra)")
                        XCTAssertEqual(consumed, 8)
                        XCTAssertEqual(version, HTTPVersion(major: Int(bytes[5]) - 48, minor: Int(bytes[7]) - 48))
                    case .invalid:
                        XCTAssertFalse(accepted, "\(bytes + extra)")
                    case .needMore:
                        XCTFail("needMore for a whole version \(bytes + extra)")
                    }
                }
            }
        }
        for count in 0..<8 {
            guard case .needMore = check(Array(valid[..<count]), mustEnd: true, complete: false) else { return XCTFail("prefix \(count)") }
            guard case .invalid = check(Array(valid[..<count]), mustEnd: true, complete: true) else { return XCTFail("prefix \(count)") }
        }
    }
}
