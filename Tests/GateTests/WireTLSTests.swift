import XCTest

@testable import Gate

/// Builds ClientHellos byte by byte, following RFC 8446 §4.1.2, for the tests.
struct ClientHelloBuilder {
    var legacyVersion: UInt16 = 0x0303
    var sessionID: [UInt8] = [UInt8](repeating: 0xAB, count: 32)
    var cipherSuites: [UInt16] = [0x1301, 0x1302, 0xC02F]
    var compression: [UInt8] = [0]
    /// nil: no extensions block at all (allowed before TLS 1.3).
    var extensions: [(UInt16, [UInt8])]? = []

    static func u16(_ value: Int) -> [UInt8] { [UInt8(value >> 8 & 0xFF), UInt8(value & 0xFF)] }
    static func u24(_ value: Int) -> [UInt8] { [UInt8(value >> 16 & 0xFF)] + u16(value) }

    static func serverName(_ name: String) -> (UInt16, [UInt8]) {
        let host = Array(name.utf8)
        let entry = [0] + u16(host.count) + host
        return (0, u16(entry.count) + entry)
    }

    static func alpn(_ names: [String]) -> (UInt16, [UInt8]) {
        let list = names.flatMap { [UInt8($0.utf8.count)] + Array($0.utf8) }
        return (16, u16(list.count) + list)
    }

    static func supportedVersions(_ versions: [UInt16]) -> (UInt16, [UInt8]) {
        (43, [UInt8(versions.count * 2)] + versions.flatMap { u16(Int($0)) })
    }

    /// The ClientHello body (after the handshake header).
    func body() -> [UInt8] {
        var out = Self.u16(Int(legacyVersion)) + [UInt8](repeating: 0x11, count: 32)
        out += [UInt8(sessionID.count)] + sessionID
        out += Self.u16(cipherSuites.count * 2) + cipherSuites.flatMap { Self.u16(Int($0)) }
        out += [UInt8(compression.count)] + compression
        if let extensions {
            let block = extensions.flatMap { Self.u16(Int($0.0)) + Self.u16($0.1.count) + $0.1 }
            out += Self.u16(block.count) + block
        }
        return out
    }

    /// The handshake message: type 1, uint24 length, body.
    func handshake() -> [UInt8] {
        let body = body()
        return [1] + Self.u24(body.count) + body
    }

    /// The handshake message cut into records of at most `fragment` bytes.
    func records(fragment: Int = 16384) -> [UInt8] {
        Self.records(handshake(), fragment: fragment)
    }

    static func records(_ handshake: [UInt8], fragment: Int, version: UInt16 = 0x0301) -> [UInt8] {
        stride(from: 0, to: handshake.count, by: fragment).flatMap { start -> [UInt8] in
            let piece = handshake[start..<min(start + fragment, handshake.count)]
            return [22] + u16(Int(version)) + u16(piece.count) + piece
        }
    }
}

final class WireTLSTests: XCTestCase {
    var typical: ClientHelloBuilder {
        var builder = ClientHelloBuilder()
        builder.extensions = [
            (0x0A0A, []),  // GREASE
            ClientHelloBuilder.serverName("api.example.com"),
            (10, [0, 4, 0, 0x1D, 0, 0x17]),
            ClientHelloBuilder.alpn(["h2", "http/1.1"]),
            ClientHelloBuilder.supportedVersions([0x2A2A, 0x0304, 0x0303]),
        ]
        return builder
    }

    var typicalInfo: ClientHelloInfo {
        ClientHelloInfo(
            recordVersion: 0x0301, legacyVersion: 0x0303, serverName: "api.example.com", alpn: ["h2", "http/1.1"],
            supportedVersions: [0x2A2A, 0x0304, 0x0303], cipherSuites: [0x1301, 0x1302, 0xC02F],
            extensionTypes: [0x0A0A, 0, 10, 16, 43])
    }

    func testClientHelloInOneRecordWholeSplitAndDripFed() {
        assertDecodesCollections(typical.records(), as: typicalInfo) { TLSClientHello.parse($0) }
        XCTAssertTrue(typicalInfo.offersTLS13)
    }

    func testClientHelloAcrossManyRecords() {
        for fragment in [1, 2, 3, 5, 17, 64, 100] {
            let records = typical.records(fragment: fragment)
            XCTAssertEqual(TLSClientHello.parse(records), .done(typicalInfo, consumed: records.count), "fragment \(fragment)")
        }
        assertDecodes(typical.records(fragment: 7), as: typicalInfo) { TLSClientHello.parse($0) }
    }

    func testApplicationDataAfterTheHelloIsNotConsumed() {
        let records = typical.records(fragment: 50)
        let earlyData: [UInt8] = [23, 3, 3, 0, 2, 0xAA, 0xBB]
        XCTAssertEqual(TLSClientHello.parse(records + earlyData), .done(typicalInfo, consumed: records.count))
    }

    func testMinimalHelloWithoutExtensions() {
        var builder = ClientHelloBuilder()
        builder.extensions = nil
        builder.sessionID = []
        builder.legacyVersion = 0x0301
        let info = ClientHelloInfo(recordVersion: 0x0300, legacyVersion: 0x0301, cipherSuites: [0x1301, 0x1302, 0xC02F])
        assertDecodes(ClientHelloBuilder.records(builder.handshake(), fragment: 1000, version: 0x0300), as: info) { TLSClientHello.parse($0) }
    }

    func testLargeHelloNear64KiB() {
        var builder = typical
        builder.extensions!.append((21, [UInt8](repeating: 0, count: 60000)))  // padding (RFC 7685)
        let records = builder.records()
        XCTAssertEqual(records.count, builder.handshake().count + 4 * 5)
        XCTAssertNotNil(TLSClientHello.parse(records).value)
        builder.extensions!.append((21 + 1000, [UInt8](repeating: 0, count: 6000)))
        guard case .invalid(let error) = TLSClientHello.parse(builder.records()) else { return XCTFail() }
        XCTAssertEqual(error.code, .tooLarge)
        XCTAssertTrue(error.message.contains("exceeds the 65536-byte limit"), error.message)
    }

    func testRecordLayerErrors() {
        let hello = typical.records()
        assertInvalid([23, 3, 3, 0, 5, 1, 2, 3, 4, 5], code: .notClientHello, message: "content type 23, expected handshake (22)") { TLSClientHello.parse($0) }
        assertInvalid([22, 2, 0, 0, 5] + hello.dropFirst(5), code: .unsupportedVersion, message: "version major 2") { TLSClientHello.parse($0) }
        assertInvalid([22, 3, 1, 0, 0] + hello, code: .badLength, message: "length 0") { TLSClientHello.parse($0) }
        assertInvalid([22, 3, 1, 0x41, 1] + [UInt8](repeating: 1, count: 10), code: .tooLarge, message: "TLS record length 16641 exceeds 16384+256") { TLSClientHello.parse($0) }
        assertInvalid([22, 3, 1, 0, 4, 2, 0, 0, 70], code: .notClientHello, message: "handshake message type 2") { TLSClientHello.parse($0) }
        // An alert interleaved before the hello is complete.
        let split = typical.records(fragment: 40)
        assertInvalid(Array(split.prefix(45)) + [21, 3, 3, 0, 2, 2, 40], code: .notClientHello, message: "record 1 has content type 21") { TLSClientHello.parse($0) }
        XCTAssertEqual(TLSClientHello.parse(hello.prefix(hello.count - 1)), .needMore)
    }

    func assertBody(_ builder: ClientHelloBuilder, _ code: WireError.Code, _ message: String, file: StaticString = #filePath, line: UInt = #line) {
        assertInvalid(builder.records(), code: code, message: message, file: file, line: line) { TLSClientHello.parse($0) }
    }

    func testClientHelloBodyErrors() {
        var builder = typical
        builder.sessionID = [UInt8](repeating: 0, count: 33)
        assertBody(builder, .badLength, "legacy_session_id length 33 exceeds 32")

        builder = typical
        builder.cipherSuites = []
        assertBody(builder, .badLength, "cipher_suites length 0")

        builder = typical
        builder.compression = []
        assertBody(builder, .badLength, "legacy_compression_methods length 0")

        builder = typical
        builder.extensions!.append(ClientHelloBuilder.alpn(["h3"]))
        assertBody(builder, .malformed, "extension 16 twice")

        builder = typical
        builder.extensions![1] = (0, [0, 6, 0, 0, 2, 0x61, 0x62])
        assertBody(builder, .badLength, "server_name list length does not match")

        builder = typical
        builder.extensions![1] = ClientHelloBuilder.serverName("a\u{0}b")
        assertBody(builder, .malformed, "host_name contains byte 0x00 at position 1")

        builder = typical
        builder.extensions![1] = (0, [0, 3, 0, 0, 0])
        assertBody(builder, .badLength, "host_name length 0")

        builder = typical
        builder.extensions![3] = (16, [0, 3, 0, 1, 0x61])
        assertBody(builder, .badLength, "ALPN protocol name of length 0")

        builder = typical
        builder.extensions![3] = (16, [0, 3, 5, 0x61, 0x62])
        assertBody(builder, .badLength, "ALPN protocol name length 5 exceeds its list")

        builder = typical
        builder.extensions![4] = (43, [3, 3, 4, 3])
        assertBody(builder, .badLength, "supported_versions length")

        // Extensions block length disagreeing with the hello length.
        var handshake = typical.handshake()
        handshake += [0, 0]
        let patched = [UInt8(1)] + ClientHelloBuilder.u24(handshake.count - 4) + handshake[4...]
        assertInvalid(ClientHelloBuilder.records(patched, fragment: 16384), code: .badLength, message: "bytes remain") { TLSClientHello.parse($0) }

        // An extension whose length runs past the block.
        builder = typical
        builder.extensions = nil
        let body = builder.body() + [0, 6, 0, 16, 0, 9, 0, 2]
        let bad = [UInt8(1)] + ClientHelloBuilder.u24(body.count) + body
        assertInvalid(ClientHelloBuilder.records(bad, fragment: 16384), code: .badLength, message: "extension 16 length 9 exceeds") { TLSClientHello.parse($0) }

        // A hello cut short inside its fields (length says fewer bytes than the fields need).
        let short = [UInt8(1), 0, 0, 10] + [3, 3] + [UInt8](repeating: 0, count: 8)
        assertInvalid(ClientHelloBuilder.records(short, fragment: 100), code: .badLength, message: "ends inside its random") { TLSClientHello.parse($0) }
    }

    func testSNIOfOtherNameTypeIsIgnored() {
        var builder = typical
        // list: type 7 name "ab", type 0 name "c"
        builder.extensions![1] = (0, [0, 9] + [7, 0, 2, 0x61, 0x62] + [0, 0, 1, 0x63])
        XCTAssertEqual(TLSClientHello.parse(builder.records()).value?.serverName, "c")
    }
}
