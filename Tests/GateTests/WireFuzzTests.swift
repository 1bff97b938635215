import XCTest

@testable import Gate

/// Bounded fuzz loops with fixed seeds: random bytes, random bytes behind a plausible
/// start, and mutated valid messages go through every decoder, the sniffer and the SOCKS5
/// machine. Nothing may crash, and the results must obey the decoders' contract:
/// - `.done(v, consumed: n)` has 0 < n ≤ count, and the first n bytes alone decode to (v, n);
/// - a result that is `.done` or `.invalid` stays the same when more bytes are appended.
final class WireFuzzTests: XCTestCase {
    static let iterations = 3000

    func randomBytes(_ rng: inout SeededGenerator, maxLength: Int) -> [UInt8] {
        (0..<Int.random(in: 0...maxLength, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
    }

    func checkContract<V: Equatable>(_ name: String, _ bytes: [UInt8], extra: [UInt8], _ parse: ([UInt8]) -> ParseResult<V>) {
        let result = parse(bytes)
        switch result {
        case .needMore:
            break
        case .done(let value, let consumed):
            XCTAssertTrue(consumed > 0 && consumed <= bytes.count, "\(name): consumed \(consumed) of \(bytes.count)")
            XCTAssertEqual(parse(Array(bytes[..<consumed])), .done(value, consumed: consumed), "\(name): message alone \(bytes)")
            XCTAssertEqual(parse(bytes + extra), result, "\(name): appended bytes changed a decoded message \(bytes)")
        case .invalid(let error):
            XCTAssertFalse(error.message.isEmpty)
            guard case .invalid(let later) = parse(bytes + extra) else {
                return XCTFail("\(name): invalid \(bytes) became valid with more bytes")
            }
            XCTAssertEqual(later.code, error.code, "\(name): \(error.message) / \(later.message)")
        }
    }

    func checkAllDecoders(_ bytes: [UInt8], extra: [UInt8]) {
        checkContract("greeting", bytes, extra: extra) { SOCKS5Greeting.parse($0) }
        checkContract("method", bytes, extra: extra) { SOCKS5MethodSelection.parse($0) }
        checkContract("userpass", bytes, extra: extra) { SOCKS5UsernamePasswordRequest.parse($0) }
        checkContract("userpass-response", bytes, extra: extra) { SOCKS5UsernamePasswordResponse.parse($0) }
        checkContract("request", bytes, extra: extra) { SOCKS5Request.parse($0) }
        checkContract("reply", bytes, extra: extra) { SOCKS5Reply.parse($0) }
        checkContract("http1", bytes, extra: extra) { HTTPRequestHead.parse($0, limits: .init(maxHeadBytes: 512, maxHeaderCount: 8)) }
        checkContract("tls", bytes, extra: extra) { TLSClientHello.parse($0) }
        checkContract("http1-response", bytes, extra: extra) { HTTP1ResponseHead.parse($0, limits: .init(maxHeadBytes: 512, maxHeaderCount: 8)) }
        checkChunked(bytes, extra: extra)
        if case .done(let header, let offset) = SOCKS5UDPHeader.parse(bytes) {
            XCTAssertTrue(offset <= bytes.count)
            XCTAssertEqual(SOCKS5UDPHeader.parse(header.encoded()).value?.destination.port, header.destination.port)
        }
        if case .done(let head, _) = HTTPRequestHead.parse(bytes) {
            _ = try? head.proxyTarget()
            _ = try? head.forwardHead()
        }
        _ = Sniffer.sniff(bytes, maxBytes: 256)
        _ = Sniffer.sniff(bytes)
    }

    /// The chunked scanner, fed `bytes` then `extra`: `.end` stays within what it was given,
    /// and a failed scanner stays failed.
    func checkChunked(_ bytes: [UInt8], extra: [UInt8]) {
        var scanner = HTTPChunkedScanner()
        switch scanner.scan(bytes) {
        case .end(let consumed):
            XCTAssertTrue(consumed <= bytes.count && scanner.isComplete)
        case .invalid:
            guard case .invalid = scanner.scan(extra) else { return XCTFail("chunked scanner recovered after invalid \(bytes)") }
        case .needMore:
            XCTAssertEqual(scanner.offset, UInt64(bytes.count))
        }
    }

    func testRandomBytes() {
        var rng = SeededGenerator(seed: 0x5EED_0001)
        for _ in 0..<Self.iterations {
            checkAllDecoders(randomBytes(&rng, maxLength: 300), extra: randomBytes(&rng, maxLength: 8) + [0])
        }
    }

    func testRandomBytesBehindPlausibleStarts() {
        var rng = SeededGenerator(seed: 0x5EED_0002)
        let starts: [[UInt8]] = [
            Array("HTTP/1.1 200 OK\r\n".utf8), Array("5\r\nhello\r\n".utf8), Array("0\r\n".utf8),
            [5], [5, 1, 0], [5, 1, 0, 3], [5, 3, 0, 4], [1], [0, 0, 0], [22, 3, 1], [22, 3, 1, 0, 200, 1, 0, 0, 196, 3, 3],
            Array("GET ".utf8), Array("CONNECT a:1 HTTP/1.1\r\n".utf8), Array("GET / HTTP/1.1\r\nHost: h\r\n".utf8), Array("PRI * HTTP/2.0".utf8),
        ]
        for index in 0..<Self.iterations {
            let start = starts[index % starts.count]
            checkAllDecoders(start + randomBytes(&rng, maxLength: 200), extra: randomBytes(&rng, maxLength: 8) + [0])
        }
    }

    func testMutatedValidMessages() {
        var rng = SeededGenerator(seed: 0x5EED_0003)
        var hello = ClientHelloBuilder()
        hello.extensions = [ClientHelloBuilder.serverName("fuzz.example"), ClientHelloBuilder.alpn(["h2", "http/1.1"]), ClientHelloBuilder.supportedVersions([0x0304])]
        let valid: [[UInt8]] = [
            hello.records(), hello.records(fragment: 13),
            SOCKS5Request(command: .connect, destination: Destination(host: "example.com", port: 443)).encoded(),
            SOCKS5Request(command: .udpAssociate, destination: Destination(host: "::1", port: 1)).encoded(),
            SOCKS5UsernamePasswordRequest(username: "u", password: "p").encoded(),
            Array("GET http://a.example/x HTTP/1.1\r\nHost: a.example\r\nConnection: x, close\r\nX: y\r\n\r\n".utf8),
            Array("POST /p HTTP/1.1\r\nHost: [::1]:80\r\nTransfer-Encoding: chunked\r\n\r\n".utf8),
            Array("HTTP/1.1 301 Moved\r\nLocation: /x\r\nContent-Length: 0\r\n\r\n".utf8),
            Array("4;e=1\r\nwiki\r\n0\r\nT: v\r\n\r\n".utf8),
        ]
        for index in 0..<Self.iterations {
            var bytes = valid[index % valid.count]
            for _ in 0..<Int.random(in: 1...3, using: &rng) {
                bytes[Int.random(in: 0..<bytes.count, using: &rng)] = UInt8.random(in: 0...255, using: &rng)
            }
            if Bool.random(using: &rng) { bytes = Array(bytes.prefix(Int.random(in: 0...bytes.count, using: &rng))) }
            checkAllDecoders(bytes, extra: randomBytes(&rng, maxLength: 8) + [0])
        }
    }

    func testSOCKS5MachineWithRandomChunks() {
        var rng = SeededGenerator(seed: 0x5EED_0004)
        let starts: [[UInt8]] = [[5, 1, 0], [5, 2, 0, 2], [5, 1, 2, 1, 1, 0x61, 1, 0x62], []]
        for index in 0..<Self.iterations {
            let mode: SOCKS5ServerMachine.AuthMode = index % 2 == 0 ? .none : .usernamePassword
            var machine = SOCKS5ServerMachine(authMode: mode, maxBufferedBytes: 128)
            var stream = starts[index % starts.count] + randomBytes(&rng, maxLength: 300)
            var closed = false
            while !stream.isEmpty {
                let count = Int.random(in: 1...stream.count, using: &rng)
                var pending = machine.receive(stream.prefix(count))
                stream.removeFirst(count)
                while !pending.isEmpty {
                    let action = pending.removeFirst()
                    XCTAssertFalse(closed, "action \(action) after the machine closed")
                    switch action {
                    case .verifyCredentials:
                        pending += machine.credentialsVerified(Bool.random(using: &rng))
                    case .connect, .udpAssociate:
                        if Bool.random(using: &rng) {
                            XCTAssertEqual(machine.connected(bound: Destination(host: "127.0.0.1", port: 9)).count, 10)
                        } else {
                            XCTAssertEqual(machine.failed(.hostUnreachable), [5, 4, 0, 1, 0, 0, 0, 0, 0, 0])
                            closed = true
                        }
                    case .refuse, .close:
                        closed = true
                    case .send:
                        break
                    }
                }
                XCTAssertEqual(closed, machine.isClosed)
            }
            if machine.isClosed { XCTAssertEqual(machine.takeBufferedPayload(), [], "a closed machine hands out no payload") }
        }
    }
}
