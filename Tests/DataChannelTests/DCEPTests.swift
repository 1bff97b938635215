import XCTest
@testable import DataChannel

final class DCEPTests: XCTestCase {
    private let samples: [DCEPOpen] = [
        DCEPOpen(channelType: .reliable(ordered: true), label: "chat"),
        DCEPOpen(channelType: .reliable(ordered: false), priority: 512, label: "", protocol: "bfcp"),
        DCEPOpen(channelType: .partialReliableRetransmits(ordered: true, maxRetransmits: 3), label: "rtx", protocol: "x"),
        DCEPOpen(channelType: .partialReliableRetransmits(ordered: false, maxRetransmits: 0), label: "lossy"),
        DCEPOpen(channelType: .partialReliableTimed(ordered: true, lifetimeMilliseconds: 1500), label: "ttl"),
        DCEPOpen(channelType: .partialReliableTimed(ordered: false, lifetimeMilliseconds: 0xFFFF_FFFF), label: "ünïcødé ✓", protocol: "proto"),
    ]

    /// The RFC 8832 §5.1 layout, byte by byte.
    func testOpenWireLayout() throws {
        let open = DCEPOpen(channelType: .partialReliableRetransmits(ordered: false, maxRetransmits: 0x0102_0304),
                            priority: 0x0506, label: "ab", protocol: "c")
        XCTAssertEqual(open.encode(), [0x03, 0x81, 0x05, 0x06, 0x01, 0x02, 0x03, 0x04, 0x00, 0x02, 0x00, 0x01, 0x61, 0x62, 0x63])
        XCTAssertEqual(DCEPMessage.ack.encode(), [0x02])
    }

    func testRoundTripEveryChannelType() throws {
        for open in samples {
            XCTAssertEqual(try DCEPMessage.decode(open.encode()), .open(open))
        }
        XCTAssertEqual(try DCEPMessage.decode([0x02]), .ack)
    }

    /// A DCEP message always arrives whole (one SCTP message); every proper prefix must be refused
    /// as truncated, never misread.
    func testEveryPrefixIsTruncated() {
        for open in samples {
            let bytes = open.encode()
            for length in 0..<bytes.count {
                XCTAssertThrowsError(try DCEPMessage.decode(Array(bytes.prefix(length))), "prefix \(length)") { error in
                    guard case .truncated = error as? DCEPDecodingError else { return XCTFail("prefix \(length): \(error)") }
                }
            }
        }
    }

    func testMalformedMessages() {
        var trailing = samples[0].encode()
        trailing.append(0)
        XCTAssertEqual(decodeError(trailing), .trailingBytes(1))
        XCTAssertEqual(try DCEPMessage.decode([0x02, 0x00, 0x00, 0x00]), .ack, "pion's padded ACK")
        XCTAssertEqual(decodeError([0x07]), .unknownMessageType(7))
        var badType = samples[0].encode()
        badType[1] = 0x03
        XCTAssertEqual(decodeError(badType), .unknownChannelType(3))
        let badUTF8: [UInt8] = [0x03, 0x00, 0x01, 0x00, 0, 0, 0, 0, 0x00, 0x01, 0x00, 0x00, 0xFF]
        XCTAssertEqual(decodeError(badUTF8), .invalidUTF8(field: "label"))
        XCTAssertEqual(decodeError([]), .truncated(needed: 1, available: 0))
    }

    func testPayloadProtocolIdentifiersForMessages() {
        XCTAssertEqual(DataChannelMessage.text("hi").wire.ppid.rawValue, 51)
        XCTAssertEqual(DataChannelMessage.binary([1]).wire.ppid.rawValue, 53)
        XCTAssertEqual(DataChannelMessage.text("").wire.ppid.rawValue, 56)
        XCTAssertEqual(DataChannelMessage.binary([]).wire.ppid.rawValue, 57)
        XCTAssertEqual(DataChannelMessage.binary([]).wire.payload, [0])
        XCTAssertEqual(DataChannelMessage(payload: [0], ppid: 56), .text(""))
        XCTAssertEqual(DataChannelMessage(payload: [0], ppid: 57), .binary([]))
        XCTAssertEqual(DataChannelMessage(payload: Array("é".utf8), ppid: 51), .text("é"))
        XCTAssertNil(DataChannelMessage(payload: [1], ppid: 50))
    }

    func testDatagramDemultiplexing() {
        XCTAssertEqual(DatagramKind.classify([0x00, 0x01]), .stun)
        XCTAssertEqual(DatagramKind.classify([22, 0xfe, 0xfd]), .dtls)
        XCTAssertEqual(DatagramKind.classify([63]), .dtls)
        XCTAssertEqual(DatagramKind.classify([64]), .turnChannel)
        XCTAssertEqual(DatagramKind.classify([0x80]), .rtp)
        XCTAssertEqual(DatagramKind.classify([UInt8]()), .unknown)
        XCTAssertEqual(DatagramKind.classify([200]), .unknown)
    }

    func testNotificationDecoding() {
        // sctp_assoc_change: type 1, flags 0, length 20, state COMM_UP, error 0, out 1024, in 512
        let up: [UInt8] = [1, 0, 0, 0, 20, 0, 0, 0, 1, 0, 0, 0, 0, 4, 0, 2, 0, 0, 0, 0]
        XCTAssertEqual(SCTPNotification(up), .associationChange(.init(state: .communicationUp, outboundStreams: 1024, inboundStreams: 512)))
        // sctp_stream_reset_event: type 9, flags INCOMING, length 16, assoc 0, streams 3 and 5
        let reset: [UInt8] = [9, 0, 1, 0, 16, 0, 0, 0, 0, 0, 0, 0, 3, 0, 5, 0]
        XCTAssertEqual(SCTPNotification(reset), .streamReset(.init(incoming: true, outgoing: false, denied: false, failed: false, streams: [3, 5])))
        XCTAssertNil(SCTPNotification([1, 0]))
        XCTAssertNil(SCTPNotification([0x20, 0, 0, 0]))
    }

    private func decodeError(_ bytes: [UInt8]) -> DCEPDecodingError? {
        do throws(DCEPDecodingError) {
            _ = try DCEPMessage.decode(bytes)
            return nil
        } catch {
            return error
        }
    }
}
