import XCTest

@testable import Gate

final class WireSnifferTests: XCTestCase {
    /// Sniffs every prefix of `bytes` (byte-at-a-time arrival) and returns the first result
    /// that is not `.needMore`, checking that it comes exactly at `decidedAt` bytes.
    func sniffDripFed(_ bytes: [UInt8], maxBytes: Int = 16 * 1024, decidedAt: Int? = nil, file: StaticString = #filePath, line: UInt = #line) -> SniffResult {
        for end in 1...bytes.count {
            let result = Sniffer.sniff(bytes[..<end], maxBytes: maxBytes)
            if case .needMore = result { continue }
            if let decidedAt { XCTAssertEqual(end, decidedAt, "decided after \(end) bytes", file: file, line: line) }
            XCTAssertEqual("\(Sniffer.sniff(bytes, maxBytes: maxBytes))", "\(result)", "whole and drip-fed agree", file: file, line: line)
            return result
        }
        return .needMore
    }

    func testEmptyNeedsMore() {
        guard case .needMore = Sniffer.sniff([UInt8]()) else { return XCTFail() }
    }

    func testTLS() {
        var builder = ClientHelloBuilder()
        builder.extensions = [ClientHelloBuilder.serverName("sni.example"), ClientHelloBuilder.alpn(["h2"])]
        let records = builder.records(fragment: 30)
        guard case .tls(let info) = sniffDripFed(records + [23, 3, 3], decidedAt: records.count) else { return XCTFail() }
        XCTAssertEqual(info.serverName, "sni.example")
        XCTAssertEqual(info.alpn, ["h2"])
        // A ClientHello larger than the sniff limit.
        guard case .invalid(let error) = Sniffer.sniff(records, maxBytes: 40) else { return XCTFail() }
        XCTAssertEqual(error.code, .tooLarge)
        XCTAssertTrue(error.message.contains("40-byte sniff limit"), error.message)
        // 0x16 followed by something that is not a TLS version is just unknown.
        guard case .unknown = Sniffer.sniff([0x16, 0x00, 0x01]) else { return XCTFail() }
        guard case .invalid(let broken) = Sniffer.sniff([22, 3, 1, 0, 0]) else { return XCTFail() }
        XCTAssertEqual(broken.code, .badLength)
    }

    func testHTTP1() {
        let text = Array("GET /index.html HTTP/1.1\r\nHost: www.example:8080\r\n\r\nbody".utf8)
        guard case .http1(let head) = sniffDripFed(text, decidedAt: text.count - 4) else { return XCTFail() }
        XCTAssertEqual(head.values("host"), ["www.example:8080"])
        XCTAssertEqual(try head.proxyTarget(), .origin(Destination(host: "www.example", port: 8080), path: "/index.html"))
        // POST and PUT start with P like the HTTP/2 preface.
        for method in ["POST", "PUT", "PATCH", "PRI"] {
            let request = Array("\(method) /x HTTP/1.1\r\nHost: h\r\n\r\n".utf8)
            guard case .http1(let parsed) = sniffDripFed(request) else { return XCTFail(method) }
            XCTAssertEqual(parsed.method, method)
        }
        // A good request line followed by a broken header is invalid, not unknown.
        guard case .invalid(let error) = Sniffer.sniff(Array("GET / HTTP/1.1\r\nHost a\r\n\r\n".utf8)) else { return XCTFail() }
        XCTAssertEqual(error.code, .badHeader)
        // A head larger than the sniff limit.
        guard case .invalid(let large) = Sniffer.sniff(Array(("GET / HTTP/1.1\r\nHost: h\r\nX: " + String(repeating: "x", count: 200) + "\r\n\r\n").utf8), maxBytes: 100) else {
            return XCTFail()
        }
        XCTAssertEqual(large.code, .headTooLarge)
    }

    func testHTTP2Preface() {
        let preface = HTTP2Preface.bytes + [0, 0, 0, 4, 0, 0, 0, 0, 0]
        guard case .http2Preface = sniffDripFed(preface, decidedAt: 24) else { return XCTFail() }
        XCTAssertEqual(HTTP2Preface.bytes.count, 24)
        for end in 0..<24 { XCTAssertTrue(isNeedMore(HTTP2Preface.parse(HTTP2Preface.bytes[..<end]))) }
        guard case .done(_, consumed: 24) = HTTP2Preface.parse(preface) else { return XCTFail() }
        guard case .invalid(let error) = HTTP2Preface.parse(Array("PRI * HTTP/1.1\r\n".utf8)) else { return XCTFail() }
        XCTAssertTrue(error.message.contains("octet 11"), error.message)
    }

    func isNeedMore<V>(_ result: ParseResult<V>) -> Bool {
        if case .needMore = result { return true }
        return false
    }

    func testSOCKS5() {
        guard case .socks5 = sniffDripFed([5, 2, 0, 2], decidedAt: 4) else { return XCTFail() }
        guard case .invalid(let error) = Sniffer.sniff([5, 0]) else { return XCTFail() }
        XCTAssertEqual(error.code, .badLength)
    }

    func testUnknownProtocols() {
        let samples: [[UInt8]] = [
            Array("SSH-2.0-OpenSSH_9.2\r\n".utf8),
            [0x04, 0x01, 0x00, 0x50, 127, 0, 0, 1, 0],  // SOCKS4
            [0x80, 0x2e, 0x01, 0x03, 0x01],  // SSLv2-style hello
            [0x00, 0x00, 0x00, 0x00],
            Array("HELLO WORLD\r\n".utf8),
            Array("GET /x HTTP/1.1 trailing\r\n".utf8),
            Array("\r\n\r\n\u{1}".utf8),
        ]
        for sample in samples {
            guard case .unknown = sniffDripFed(sample) else { return XCTFail("\(sample) was not unknown: \(Sniffer.sniff(sample))") }
        }
        // An endless token without a space stops being a candidate at the sniff limit.
        guard case .unknown = Sniffer.sniff([UInt8](repeating: UInt8(ascii: "A"), count: 64), maxBytes: 64) else { return XCTFail() }
        // A method-like start still needs more below the limit.
        guard case .needMore = Sniffer.sniff(Array("GET /".utf8)) else { return XCTFail() }
    }

    func testRoutingAccessors() {
        var builder = ClientHelloBuilder()
        builder.extensions = [ClientHelloBuilder.serverName("sni.example"), ClientHelloBuilder.alpn(["h2", "http/1.1"])]
        let tls = Sniffer.sniff(builder.records())
        XCTAssertEqual(tls.protocolName, "tls")
        XCTAssertEqual(tls.serverName, "sni.example")
        XCTAssertEqual(tls.alpn, ["h2", "http/1.1"])
        let origin = Sniffer.sniff(Array("GET / HTTP/1.1\r\nHost: [2001:db8::5]:8080\r\n\r\n".utf8))
        XCTAssertEqual(origin.protocolName, "http/1.1")
        XCTAssertEqual(origin.serverName, "2001:db8::5")
        XCTAssertEqual(origin.alpn, [])
        let absolute = Sniffer.sniff(Array("GET http://abs.example/ HTTP/1.0\r\nHost: other\r\n\r\n".utf8))
        XCTAssertEqual(absolute.protocolName, "http/1.0")
        XCTAssertEqual(absolute.serverName, "abs.example")
        XCTAssertEqual(Sniffer.sniff(Array("CONNECT c.example:443 HTTP/1.1\r\nHost: c.example:443\r\n\r\n".utf8)).serverName, "c.example")
        XCTAssertNil(Sniffer.sniff(Array("GET / HTTP/1.0\r\n\r\n".utf8)).serverName)
        XCTAssertEqual(Sniffer.sniff(HTTP2Preface.bytes).protocolName, "h2")
        XCTAssertEqual(Sniffer.sniff([5, 1, 0]).protocolName, "socks5")
        XCTAssertEqual(Sniffer.sniff([0]).protocolName, "unknown")
        XCTAssertNil(Sniffer.sniff([22]).protocolName)
        XCTAssertEqual(Sniffer.sniff([22]), .needMore)
    }

    func testSnifferLooksOnlyAtMaxBytes() {
        let text = Array("GET / HTTP/1.1\r\nHost: h\r\n\r\n".utf8)
        guard case .http1 = Sniffer.sniff(text + [UInt8](repeating: 0, count: 100), maxBytes: text.count) else { return XCTFail() }
        guard case .unknown = Sniffer.sniff([1, 2, 3], maxBytes: 0) else { return XCTFail() }
    }
}
