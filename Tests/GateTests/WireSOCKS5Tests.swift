import Glibc
import XCTest

@testable import Gate

final class WireSOCKS5Tests: XCTestCase {
    // MARK: Greeting and method selection (RFC 1928 §3)

    func testGreetingDecodesWholeSplitAndDripFed() {
        assertDecodesCollections([5, 2, 0, 2], as: SOCKS5Greeting(methods: [.noAuthentication, .usernamePassword])) {
            SOCKS5Greeting.parse($0)
        }
        let all = SOCKS5Greeting(methods: (0...254).map { SOCKS5Method(rawValue: UInt8($0)) })
        assertDecodes(all.encoded(), as: all) { SOCKS5Greeting.parse($0) }
        XCTAssertEqual(all.encoded().count, 2 + 255)
    }

    func testGreetingRejectsOtherVersionsAndZeroMethods() {
        assertInvalid([4, 1, 0, 80, 1, 2, 3, 4], code: .unsupportedVersion, message: "SOCKS version 4 not supported") {
            SOCKS5Greeting.parse($0)
        }
        assertInvalid([5, 0], code: .badLength, message: "0 methods") { SOCKS5Greeting.parse($0) }
        XCTAssertEqual(SOCKS5Greeting.parse([5, 3, 0]), .needMore)
    }

    func testMethodSelectionRoundTrip() {
        for method in [SOCKS5Method.noAuthentication, .usernamePassword, .noAcceptable] {
            let message = SOCKS5MethodSelection(method: method)
            assertDecodes(message.encoded(), as: message) { SOCKS5MethodSelection.parse($0) }
        }
        assertInvalid([6, 0], code: .unsupportedVersion) { SOCKS5MethodSelection.parse($0) }
    }

    // MARK: Username/password (RFC 1929)

    func testUsernamePasswordRoundTrip() {
        let message = SOCKS5UsernamePasswordRequest(username: "alice", password: "s3cret")
        XCTAssertEqual(message.encoded(), [1, 5] + Array("alice".utf8) + [6] + Array("s3cret".utf8))
        assertDecodesCollections(message.encoded(), as: message) { SOCKS5UsernamePasswordRequest.parse($0) }
        let empty = SOCKS5UsernamePasswordRequest(username: "bob", password: "")
        assertDecodes(empty.encoded(), as: empty) { SOCKS5UsernamePasswordRequest.parse($0) }
        let long = SOCKS5UsernamePasswordRequest(username: String(repeating: "u", count: 255), password: String(repeating: "p", count: 255))
        assertDecodes(long.encoded(), as: long) { SOCKS5UsernamePasswordRequest.parse($0) }
        for success in [true, false] {
            let response = SOCKS5UsernamePasswordResponse(success: success)
            assertDecodes(response.encoded(), as: response) { SOCKS5UsernamePasswordResponse.parse($0) }
            XCTAssertEqual(response.isSuccess, success)
        }
    }

    func testUsernamePasswordRejectsBadVersionAndEmptyUser() {
        assertInvalid([5, 1, 0x61, 1, 0x62], code: .unsupportedVersion, message: "expected 1") { SOCKS5UsernamePasswordRequest.parse($0) }
        assertInvalid([1, 0, 1, 0x62], code: .badLength, message: "username length is 0") { SOCKS5UsernamePasswordRequest.parse($0) }
        assertInvalid([2, 0], code: .unsupportedVersion) { SOCKS5UsernamePasswordResponse.parse($0) }
    }

    // MARK: Requests (RFC 1928 §4, §5)

    func testRequestsWithEveryCommandAndAddressType() {
        let cases: [(SOCKS5Command, Destination, SOCKS5AddressType, [UInt8])] = [
            (.connect, Destination(host: "192.0.2.1", port: 80), .ipv4, [5, 1, 0, 1, 192, 0, 2, 1, 0, 80]),
            (.connect, Destination(host: "example.com", port: 443), .domainName,
             [5, 1, 0, 3, 11] + Array("example.com".utf8) + [1, 187]),
            (.connect, Destination(host: "2001:db8::1", port: 8080), .ipv6,
             [5, 1, 0, 4, 0x20, 0x01, 0x0d, 0xb8] + [UInt8](repeating: 0, count: 11) + [1, 0x1f, 0x90]),
            (.bind, Destination(host: "10.0.0.1", port: 21), .ipv4, [5, 2, 0, 1, 10, 0, 0, 1, 0, 21]),
            (.udpAssociate, Destination(host: "0.0.0.0", port: 0), .ipv4, [5, 3, 0, 1, 0, 0, 0, 0, 0, 0]),
        ]
        for (command, destination, atyp, wire) in cases {
            let request = SOCKS5Request(command: command, destination: destination)
            XCTAssertEqual(request.addressType, atyp)
            XCTAssertEqual(request.encoded(), wire, "\(command) \(destination)")
            assertDecodesCollections(wire, as: request) { SOCKS5Request.parse($0) }
        }
    }

    func testIPv4TextForEveryOctetWidth() {
        for octets: [UInt8] in [[0, 0, 0, 0], [255, 255, 255, 255], [1, 22, 133, 9], [10, 100, 0, 99], [192, 0, 2, 1]] {
            let parsed = SOCKS5Request.parse([5, 1, 0, 1] + octets + [0, 80]).value
            XCTAssertEqual(parsed?.destination.host, octets.map(String.init).joined(separator: "."))
        }
    }

    func testIPv6AddressesComeOutInCanonicalText() {
        let loopback: [UInt8] = [UInt8](repeating: 0, count: 15) + [1]
        let parsed = SOCKS5Request.parse([5, 1, 0, 4] + loopback + [0, 22]).value
        XCTAssertEqual(parsed?.destination, Destination(host: "::1", port: 22))
        let mapped: [UInt8] = [UInt8](repeating: 0, count: 10) + [0xff, 0xff, 192, 0, 2, 7]
        XCTAssertEqual(SOCKS5Request.parse([5, 1, 0, 4] + mapped + [0, 22]).value?.destination.host, "::ffff:192.0.2.7")
    }

    func testRequestErrorsNameTheProblem() {
        assertInvalid([5, 9, 0, 1, 1, 2, 3, 4, 0, 80], code: .unsupportedCommand, message: "command 0x09") { SOCKS5Request.parse($0) }
        assertInvalid([5, 1, 0, 2, 1, 2, 3, 4, 0, 80], code: .unsupportedAddressType, message: "address type 0x02") { SOCKS5Request.parse($0) }
        assertInvalid([5, 1, 1, 1, 1, 2, 3, 4, 0, 80], code: .malformed, message: "reserved byte is 0x01") { SOCKS5Request.parse($0) }
        assertInvalid([5, 1, 0, 3, 0, 0, 80], code: .badLength, message: "domain name length is 0") { SOCKS5Request.parse($0) }
        assertInvalid([5, 1, 0, 3, 3, 0x61, 0x00, 0x62, 0, 80], code: .malformed, message: "byte 0x00 at position 1") { SOCKS5Request.parse($0) }
        assertInvalid([4, 1, 0, 80, 1, 2, 3, 4, 0], code: .unsupportedVersion, message: "SOCKS version 4 not supported") { SOCKS5Request.parse($0) }
        XCTAssertEqual(SOCKS5Request.parse([5, 1, 0, 3, 200] + [UInt8](repeating: 0x61, count: 199)), .needMore)
    }

    // MARK: Replies (RFC 1928 §6)

    func testRepliesWithEveryCode() {
        for raw in UInt8(0)...8 {
            let reply = SOCKS5Reply(code: SOCKS5ReplyCode(rawValue: raw), bound: Destination(host: "127.0.0.1", port: 40000))
            XCTAssertEqual(reply.encoded(), [5, raw, 0, 1, 127, 0, 0, 1, 0x9c, 0x40])
            assertDecodes(reply.encoded(), as: reply) { SOCKS5Reply.parse($0) }
            XCTAssertFalse(SOCKS5ReplyCode(rawValue: raw).description.contains("unassigned"))
        }
        let v6 = SOCKS5Reply(code: .succeeded, bound: Destination(host: "::1", port: 1080))
        assertDecodes(v6.encoded(), as: v6) { SOCKS5Reply.parse($0) }
        let unassigned = SOCKS5Reply(code: SOCKS5ReplyCode(rawValue: 0x42))
        assertDecodes(unassigned.encoded(), as: unassigned) { SOCKS5Reply.parse($0) }
        XCTAssertEqual(unassigned.code.description, "0x42 unassigned")
        XCTAssertEqual(SOCKS5ReplyCode.connectionRefused.description, "0x05 connection refused")
        assertInvalid([5, 0, 7, 1, 0, 0, 0, 0, 0, 0], code: .malformed) { SOCKS5Reply.parse($0) }
    }

    func testErrnoMapsToReplyCodes() {
        XCTAssertEqual(SOCKS5ReplyCode(errno: ECONNREFUSED), .connectionRefused)
        XCTAssertEqual(SOCKS5ReplyCode(errno: ENETUNREACH), .networkUnreachable)
        XCTAssertEqual(SOCKS5ReplyCode(errno: ENETDOWN), .networkUnreachable)
        XCTAssertEqual(SOCKS5ReplyCode(errno: EHOSTUNREACH), .hostUnreachable)
        XCTAssertEqual(SOCKS5ReplyCode(errno: ETIMEDOUT), .hostUnreachable)
        XCTAssertEqual(SOCKS5ReplyCode(errno: EACCES), .notAllowed)
        XCTAssertEqual(SOCKS5ReplyCode(errno: EAFNOSUPPORT), .addressTypeNotSupported)
        XCTAssertEqual(SOCKS5ReplyCode(errno: ECONNRESET), .generalFailure)
        XCTAssertEqual(SOCKS5ReplyCode(error: WireError(.unsupportedCommand, "")), .commandNotSupported)
        XCTAssertEqual(SOCKS5ReplyCode(error: WireError(.unsupportedAddressType, "")), .addressTypeNotSupported)
        XCTAssertEqual(SOCKS5ReplyCode(error: WireError(.malformed, "")), .generalFailure)
    }

    // MARK: UDP request header (RFC 1928 §7)

    func testUDPHeaderRoundTripForEveryAddressType() {
        for destination in [
            Destination(host: "198.51.100.7", port: 53), Destination(host: "2001:db8::53", port: 53),
            Destination(host: "dns.example", port: 5353),
        ] {
            let header = SOCKS5UDPHeader(destination: destination)
            let payload: [UInt8] = [0xde, 0xad, 0xbe, 0xef]
            let datagram = header.encoded() + payload
            XCTAssertEqual(SOCKS5UDPHeader.parse(datagram), .done(header, consumed: header.encoded().count))
            XCTAssertEqual(SOCKS5UDPHeader.parse(datagram[...]), .done(header, consumed: header.encoded().count))
            XCTAssertEqual(Array(datagram[header.encoded().count...]), payload)
            // Every truncation of a datagram is invalid, never needMore: a datagram is complete.
            for end in 0..<header.encoded().count {
                guard case .invalid(let error) = SOCKS5UDPHeader.parse(datagram[..<end]) else {
                    return XCTFail("truncated UDP header of \(end) bytes was not invalid")
                }
                XCTAssertEqual(error.code, .badLength)
            }
        }
        XCTAssertEqual(SOCKS5UDPHeader(destination: Destination(host: "10.1.2.3", port: 0x1234)).encoded(), [0, 0, 0, 1, 10, 1, 2, 3, 0x12, 0x34])
    }

    func testUDPHeaderRefusesFragmentsAndBadReservedField() {
        guard case .invalid(let fragment) = SOCKS5UDPHeader.parse([0, 0, 1, 1, 1, 2, 3, 4, 0, 53, 0xAA]) else {
            return XCTFail("FRAG 1 accepted")
        }
        XCTAssertEqual(fragment.code, .fragmentationNotSupported)
        XCTAssertTrue(fragment.message.contains("fragment 1"), fragment.message)
        guard case .invalid(let reserved) = SOCKS5UDPHeader.parse([0, 1, 0, 1, 1, 2, 3, 4, 0, 53]) else {
            return XCTFail("RSV 1 accepted")
        }
        XCTAssertEqual(reserved.code, .malformed)
        guard case .invalid(let atyp) = SOCKS5UDPHeader.parse([0, 0, 0, 7, 1, 2, 3, 4, 0, 53]) else {
            return XCTFail("ATYP 7 accepted")
        }
        XCTAssertEqual(atyp.code, .unsupportedAddressType)
    }
}
