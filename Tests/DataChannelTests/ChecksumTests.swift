import XCTest
import CUsrsctp
@testable import DataChannel

/// The SCTP checksum we fill in when usrsctp's CRC32c is offloaded (RFC 9260 Appendix A,
/// vectors from RFC 3720 §B.4 and the common "123456789" check value).
final class ChecksumTests: XCTestCase {
    private func crc32c(_ bytes: [UInt8]) -> UInt32 {
        ~bytes.withUnsafeBufferPointer { ugate_crc32c_sse42(0xFFFF_FFFF, $0.baseAddress, $0.count) }
    }

    func testCRC32cVectors() throws {
        try XCTSkipUnless(ugate_cpu_has_crc32c() == 1, "no SSE4.2: usrsctp computes checksums itself")
        XCTAssertEqual(crc32c(Array("123456789".utf8)), 0xE306_9283)
        XCTAssertEqual(crc32c([UInt8](repeating: 0, count: 32)), 0x8A91_36AA)
        XCTAssertEqual(crc32c([UInt8](repeating: 0xFF, count: 32)), 0x62A8_AB43)
        XCTAssertEqual(crc32c((0..<32).map { UInt8($0) }), 0x46DD_794E)
        XCTAssertEqual(crc32c((0..<32).map { UInt8(31 - $0) }), 0x113F_DB5C)
        XCTAssertEqual(crc32c([]), 0)
        // Odd lengths exercise the byte tail after the 8-byte words.
        let bytes = Array("123456789".utf8)
        var rolling: UInt32 = 0xFFFF_FFFF
        for byte in bytes { rolling = [byte].withUnsafeBufferPointer { ugate_crc32c_sse42(rolling, $0.baseAddress, 1) } }
        XCTAssertEqual(~rolling, 0xE306_9283)
    }

    /// The checksum lands little-endian in bytes 8…11 and is computed with that field zeroed.
    func testPacketChecksumPlacement() throws {
        try XCTSkipUnless(ugate_cpu_has_crc32c() == 1, "no SSE4.2: usrsctp computes checksums itself")
        var packet: [UInt8] = [0x13, 0x88, 0x13, 0x88, 0, 0, 0, 0, 0xAA, 0xBB, 0xCC, 0xDD] + Array("chunk data".utf8)
        var zeroed = packet
        zeroed.replaceSubrange(8..<12, with: [0, 0, 0, 0])
        let expected = crc32c(zeroed)
        packet.withUnsafeMutableBufferPointer { ugate_sctp_fill_checksum($0.baseAddress, $0.count) }
        XCTAssertEqual(Array(packet[8..<12]), [UInt8(expected & 0xff), UInt8((expected >> 8) & 0xff), UInt8((expected >> 16) & 0xff), UInt8(expected >> 24)])
    }
}
