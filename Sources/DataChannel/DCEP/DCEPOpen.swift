/// DATA_CHANNEL_OPEN ([RFC 8832 §5.1](https://www.rfc-editor.org/rfc/rfc8832#section-5.1)).
///
/// ```
///  0                   1                   2                   3
///  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |  Message Type |  Channel Type |            Priority           |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                    Reliability Parameter                      |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |         Label Length          |       Protocol Length         |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// \                                                               /
/// |                             Label                             |
/// /                                                               \
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// \                                                               /
/// |                            Protocol                           |
/// /                                                               \
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// ```
/// Message Type is 0x03; all integers are big-endian.
public struct DCEPOpen: Sendable, Equatable {
    static let messageType: UInt8 = 0x03
    static let headerLength = 12

    /// Reliability and ordering.
    public var channelType: DCEPChannelType
    /// Priority (RFC 8832 §5.1: 128 below normal, 256 normal, 512 high, 1024 extra high).
    public var priority: UInt16
    /// The channel label (UTF-8).
    public var label: String
    /// The sub-protocol (UTF-8, IANA WebSocket subprotocol registry), possibly empty.
    public var `protocol`: String

    /// Creates an OPEN message.
    public init(channelType: DCEPChannelType, priority: UInt16 = 256, label: String, protocol: String = "") {
        self.channelType = channelType
        self.priority = priority
        self.label = label
        self.protocol = `protocol`
    }

    /// Encodes the message.
    public func encode() -> [UInt8] {
        let label = Array(self.label.utf8), proto = Array(self.protocol.utf8)
        let (type, parameter) = channelType.wire
        var out: [UInt8] = [Self.messageType, type, UInt8(priority >> 8), UInt8(priority & 0xff)]
        out.reserveCapacity(Self.headerLength + label.count + proto.count)
        out.appendBigEndian(parameter)
        out.appendBigEndian(UInt16(label.count))
        out.appendBigEndian(UInt16(proto.count))
        out += label
        out += proto
        return out
    }

    /// Decodes a complete OPEN message.
    public static func decode(_ bytes: [UInt8]) throws(DCEPDecodingError) -> DCEPOpen {
        guard bytes.count >= headerLength else { throw .truncated(needed: headerLength, available: bytes.count) }
        guard bytes[0] == messageType else { throw .unknownMessageType(bytes[0]) }
        let labelLength = Int(bytes.readBigEndianUInt16(at: 8)), protocolLength = Int(bytes.readBigEndianUInt16(at: 10))
        let total = headerLength + labelLength + protocolLength
        guard bytes.count >= total else { throw .truncated(needed: total, available: bytes.count) }
        guard bytes.count == total else { throw .trailingBytes(bytes.count - total) }
        guard let channelType = DCEPChannelType(type: bytes[1], parameter: bytes.readBigEndianUInt32(at: 4)) else {
            throw .unknownChannelType(bytes[1])
        }
        guard let label = String(validating: bytes[headerLength..<headerLength + labelLength], as: UTF8.self) else {
            throw .invalidUTF8(field: "label")
        }
        guard let proto = String(validating: bytes[(headerLength + labelLength)..<total], as: UTF8.self) else {
            throw .invalidUTF8(field: "protocol")
        }
        return DCEPOpen(channelType: channelType, priority: bytes.readBigEndianUInt16(at: 2), label: label, protocol: proto)
    }
}

extension Array where Element == UInt8 {
    mutating func appendBigEndian(_ value: UInt16) {
        append(UInt8(value >> 8))
        append(UInt8(value & 0xff))
    }

    mutating func appendBigEndian(_ value: UInt32) {
        append(UInt8(value >> 24))
        append(UInt8((value >> 16) & 0xff))
        append(UInt8((value >> 8) & 0xff))
        append(UInt8(value & 0xff))
    }

    /// Reads a big-endian UInt16; the caller has checked the length.
    func readBigEndianUInt16(at offset: Int) -> UInt16 {
        UInt16(self[offset]) << 8 | UInt16(self[offset + 1])
    }

    /// Reads a big-endian UInt32; the caller has checked the length.
    func readBigEndianUInt32(at offset: Int) -> UInt32 {
        UInt32(readBigEndianUInt16(at: offset)) << 16 | UInt32(readBigEndianUInt16(at: offset + 2))
    }
}
