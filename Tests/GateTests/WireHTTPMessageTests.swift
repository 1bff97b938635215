import XCTest

@testable import Gate

/// Response heads and chunked bodies: what a keep-alive HTTP proxy needs to find where one
/// message ends and the next begins.
final class WireHTTPMessageTests: XCTestCase {
    func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }

    // MARK: Response heads

    func testResponseHeadDecodesWholeSplitAndDripFed() {
        let text = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\n"
        let expected = HTTP1ResponseHead(status: 200, reason: "OK", headers: [HTTPField("Content-Type", "text/plain"), HTTPField("Content-Length", "5")])
        assertDecodesCollections(bytes(text), as: expected) { HTTP1ResponseHead.parse($0) }
        XCTAssertEqual(try expected.bodyFraming(requestMethod: "GET"), .contentLength(5))
        XCTAssertEqual(try expected.bodyFraming(requestMethod: "HEAD"), HTTPBodyFraming.none)
        XCTAssertTrue(expected.keepsConnection)
    }

    func testStatusLineForms() {
        XCTAssertEqual(HTTP1ResponseHead.parse(bytes("HTTP/1.0 404\r\n\r\n")).value?.status, 404)
        XCTAssertEqual(HTTP1ResponseHead.parse(bytes("HTTP/1.1 502 Bad  Gateway (upstream)\r\n\r\n")).value?.reason, "Bad  Gateway (upstream)")
        XCTAssertEqual(HTTP1ResponseHead.parse(bytes("HTTP/1.1 200 ")).self, .needMore)
        // "OK" is the literal; every other reason is the bytes as sent.
        for reason in ["OK", "Ok", "O", "OKAY", "", "Ü"] {
            XCTAssertEqual(HTTP1ResponseHead.parse(bytes("HTTP/1.1 200 \(reason)\r\n\r\n")).value?.reason, reason)
        }
        let cases: [(String, WireError.Code, String)] = [
            ("HTTP/1.1 20x OK\r\n\r\n", .badStatusLine, "expected a digit"),
            ("HTTP/1.1 099 Low\r\n\r\n", .badStatusLine, "outside 100…599"),
            ("HTTP/1.1 600 High\r\n\r\n", .badStatusLine, "outside 100…599"),
            ("HTTP/1.1  200 OK\r\n\r\n", .badStatusLine, "expected a digit"),
            ("HTTP/1.1 2000 OK\r\n\r\n", .badStatusLine, "expected a space"),
            ("HTTP/1.1 200 O\u{1}K\r\n\r\n", .badStatusLine, "control byte 0x01"),
            ("HTTP/1.1 200 A longer reason phrase\u{7F}\r\n\r\n", .badStatusLine, "control byte 0x7"),
            ("HTTP/1.1 200 A longer reason\u{0}phrase\r\n\r\n", .badStatusLine, "control byte 0x00"),
            ("HTTP/1.1\r\n\r\n", .badStatusLine, "ends before its status code"),
            ("HTTQ/1.1 200 OK\r\n\r\n", .badStatusLine, "not HTTP/DIGIT.DIGIT"),
            ("HTTP/2.0 200 OK\r\n\r\n", .httpVersionNotSupported, "HTTP/2.0"),
            ("HTTP/1.1 200 OK\r\nX : y\r\n\r\n", .badHeader, "whitespace between"),
        ]
        for (text, code, message) in cases {
            assertInvalid(bytes(text), code: code, message: message) { HTTP1ResponseHead.parse($0) }
        }
    }

    func testResponseBodyFraming() throws {
        func framing(_ head: String, method: String = "GET") throws -> HTTPBodyFraming {
            guard let parsed = HTTP1ResponseHead.parse(bytes(head + "\r\n")).value else { throw WireError(.malformed, "unparsed \(head)") }
            return try parsed.bodyFraming(requestMethod: method)
        }
        XCTAssertEqual(try framing("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"), .chunked)
        XCTAssertEqual(try framing("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n"), .untilClose)
        XCTAssertEqual(try framing("HTTP/1.0 200 OK\r\n"), .untilClose)
        XCTAssertEqual(try framing("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n"), HTTPBodyFraming.none)
        XCTAssertEqual(try framing("HTTP/1.1 204 No Content\r\n"), HTTPBodyFraming.none)
        XCTAssertEqual(try framing("HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n"), HTTPBodyFraming.none)
        XCTAssertEqual(try framing("HTTP/1.1 100 Continue\r\n"), HTTPBodyFraming.none)
        XCTAssertEqual(try framing("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"), .tunnel)
        XCTAssertEqual(try framing("HTTP/1.1 200 Connection established\r\n", method: "CONNECT"), .tunnel)
        XCTAssertEqual(try framing("HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 3\r\n", method: "CONNECT"), .contentLength(3))
        XCTAssertThrowsError(try framing("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n"))
        XCTAssertThrowsError(try framing("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n"))
        XCTAssertEqual(HTTP1ResponseHead(status: 103, reason: "", headers: []).isInterim, true)
        XCTAssertEqual(HTTP1ResponseHead(status: 101, reason: "", headers: []).isInterim, false)
        XCTAssertEqual(HTTP1ResponseHead(version: .http1_0, status: 200, reason: "", headers: [HTTPField("Connection", "keep-alive")]).keepsConnection, true)
        XCTAssertEqual(HTTP1ResponseHead(status: 200, reason: "", headers: [HTTPField("Connection", "close")]).keepsConnection, false)
    }

    // MARK: Chunked bodies

    /// Feeds `body + next` to a fresh scanner in every chunking; the body must end exactly at
    /// `body.count`, with `.needMore` for every earlier chunk.
    func assertChunkedEnds(_ body: [UInt8], next: [UInt8] = Array("GET /next HTTP/1.1\r\n".utf8), file: StaticString = #filePath, line: UInt = #line) {
        let whole = body + next
        for chunks in Feed.chunkings(whole) {
            var scanner = HTTPChunkedScanner()
            var fed = 0
            var endedAt: Int?
            for chunk in chunks {
                switch scanner.scan(chunk) {
                case .needMore: fed += chunk.count
                case .end(let consumed):
                    endedAt = fed + consumed
                case .invalid(let error):
                    return XCTFail("\(error) with \(chunks.count) chunks", file: file, line: line)
                }
                if endedAt != nil { break }
            }
            XCTAssertEqual(endedAt, body.count, "\(chunks.count) chunks", file: file, line: line)
            XCTAssertTrue(scanner.isComplete, file: file, line: line)
        }
    }

    func testChunkedBodiesEndWhereTheyShould() {
        assertChunkedEnds(bytes("5\r\nhello\r\n0\r\n\r\n"))
        assertChunkedEnds(bytes("0\r\n\r\n"))
        assertChunkedEnds(bytes("1a;name=value;x\r\n") + [UInt8](repeating: 0x0D, count: 26) + bytes("\r\nA\r\n0123456789\r\n000\r\nExpires: never\r\nX: y\r\n\r\n"))
        assertChunkedEnds(bytes("3 ; ext\r\n\r\n\r\r\n0\r\n\r\n"))
        // A large chunk is skipped without looking at its bytes.
        var scanner = HTTPChunkedScanner()
        XCTAssertEqual(scanner.scan(bytes("100000\r\n")), .needMore)
        XCTAssertEqual(scanner.scan([UInt8](repeating: 0, count: 0x100000)), .needMore)
        XCTAssertEqual(scanner.scan(bytes("\r\n0\r\n\r\nNEXT")), .end(consumed: 7))
        XCTAssertEqual(scanner.offset, 8 + 0x100000 + 7)
    }

    func testMalformedChunkedBodies() {
        let cases: [(String, String)] = [
            ("x\r\n", "got byte 0x78"),
            ("\r\n", "got byte 0x0d"),
            ("5\nhello\r\n", "byte 0x0a after the chunk size"),
            ("5\r\rhello", "chunk size line not ended by CRLF"),
            ("5\r\nhelloX", "chunk data not followed by CRLF"),
            ("5\r\nhello\rX", "chunk data not followed by CRLF"),
            ("1111222233334444\r\n", "longer than 15 hex digits"),
            ("FFFFFFFFFFFFFFFF\r\n", "longer than 15 hex digits"),
            ("0x10\r\n", "byte 0x78 after the chunk size"),
            ("1;a\u{0}b\r\n", "control byte 0x00"),
            ("0\r\nX: \u{1}\r\n\r\n", "control byte 0x01"),
            ("0\r\nX: y\rZ", "trailer line not ended by CRLF"),
        ]
        for (text, message) in cases {
            var scanner = HTTPChunkedScanner()
            guard case .invalid(let error) = scanner.scan(bytes(text)) else { return XCTFail("\(text.debugDescription) accepted") }
            XCTAssertEqual(error.code, .badChunk)
            XCTAssertTrue(error.message.contains(message), "\(text.debugDescription): \(error.message)")
            guard case .invalid = scanner.scan(bytes("0\r\n\r\n")) else { return XCTFail("a failed scanner recovered") }
        }
        var longExtension = HTTPChunkedScanner()
        guard case .invalid(let error) = longExtension.scan(bytes("1;" + String(repeating: "e", count: 5000) + "\r\n")) else { return XCTFail() }
        XCTAssertTrue(error.message.contains("longer than 4096"), error.message)
        var longTrailer = HTTPChunkedScanner()
        guard case .invalid(let trailer) = longTrailer.scan(bytes("0\r\n" + String(repeating: "X: y\r\n", count: 3000))) else { return XCTFail() }
        XCTAssertTrue(trailer.message.contains("trailer section longer"), trailer.message)
    }
}
