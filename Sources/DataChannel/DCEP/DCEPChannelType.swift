/// The reliability of a data channel as signalled in DATA_CHANNEL_OPEN
/// ([RFC 8832 §5.1](https://www.rfc-editor.org/rfc/rfc8832#section-5.1)).
public enum DCEPChannelType: Sendable, Equatable {
    /// 0x00 / 0x80: reliable.
    case reliable(ordered: Bool)
    /// 0x01 / 0x81: at most `maxRetransmits` retransmissions.
    case partialReliableRetransmits(ordered: Bool, maxRetransmits: UInt32)
    /// 0x02 / 0x82: retransmit for at most `lifetimeMilliseconds`.
    case partialReliableTimed(ordered: Bool, lifetimeMilliseconds: UInt32)

    /// Whether messages are delivered in order.
    public var ordered: Bool {
        switch self {
        case .reliable(let ordered), .partialReliableRetransmits(let ordered, _), .partialReliableTimed(let ordered, _):
            return ordered
        }
    }

    /// The wire pair (channel type octet, reliability parameter).
    var wire: (type: UInt8, parameter: UInt32) {
        let unordered: UInt8 = ordered ? 0 : 0x80
        switch self {
        case .reliable: return (unordered, 0)
        case .partialReliableRetransmits(_, let count): return (unordered | 0x01, count)
        case .partialReliableTimed(_, let ms): return (unordered | 0x02, ms)
        }
    }

    /// Decodes the wire pair; nil for an unknown channel type.
    init?(type: UInt8, parameter: UInt32) {
        let ordered = type & 0x80 == 0
        switch type & 0x7f {
        case 0x00: self = .reliable(ordered: ordered)
        case 0x01: self = .partialReliableRetransmits(ordered: ordered, maxRetransmits: parameter)
        case 0x02: self = .partialReliableTimed(ordered: ordered, lifetimeMilliseconds: parameter)
        default: return nil
        }
    }
}

/// SCTP payload protocol identifiers used by WebRTC data channels
/// ([RFC 8831 §8](https://www.rfc-editor.org/rfc/rfc8831#section-8)).
enum PayloadProtocolIdentifier: UInt32 {
    /// WebRTC DCEP (RFC 8832).
    case dcep = 50
    /// WebRTC String.
    case string = 51
    /// WebRTC String Partial (deprecated).
    case stringPartial = 52
    /// WebRTC Binary.
    case binary = 53
    /// WebRTC Binary Partial (deprecated).
    case binaryPartial = 54
    /// WebRTC String Empty: payload is one ignored byte.
    case stringEmpty = 56
    /// WebRTC Binary Empty: payload is one ignored byte.
    case binaryEmpty = 57
}

/// A DCEP decoding failure.
public enum DCEPDecodingError: Error, Equatable, Sendable {
    /// The message is shorter than its header or its declared label/protocol lengths.
    case truncated(needed: Int, available: Int)
    /// The first byte is not a known DCEP message type.
    case unknownMessageType(UInt8)
    /// The channel type octet is not one RFC 8832 defines.
    case unknownChannelType(UInt8)
    /// The label or protocol is not valid UTF-8.
    case invalidUTF8(field: String)
    /// Bytes follow the end of the message.
    case trailingBytes(Int)
}

/// A DCEP message ([RFC 8832 §5](https://www.rfc-editor.org/rfc/rfc8832#section-5)).
public enum DCEPMessage: Sendable, Equatable {
    /// DATA_CHANNEL_OPEN (type 0x03).
    case open(DCEPOpen)
    /// DATA_CHANNEL_ACK (type 0x02).
    case ack

    /// Decodes one complete SCTP message carried with PPID 50.
    public static func decode(_ bytes: [UInt8]) throws(DCEPDecodingError) -> DCEPMessage {
        guard let type = bytes.first else { throw .truncated(needed: 1, available: 0) }
        switch type {
        case DCEPOpen.messageType: return .open(try DCEPOpen.decode(bytes))
        case DCEPAck.messageType: try DCEPAck.decode(bytes); return .ack
        default: throw .unknownMessageType(type)
        }
    }

    /// Encodes the message.
    public func encode() -> [UInt8] {
        switch self {
        case .open(let open): return open.encode()
        case .ack: return DCEPAck.encode()
        }
    }
}
