/// One data-channel message: text (PPID 51, or 56 when empty) or binary (PPID 53, or 57 when
/// empty) ([RFC 8831 §6.6](https://www.rfc-editor.org/rfc/rfc8831#section-6.6)).
public enum DataChannelMessage: Sendable, Equatable {
    /// A UTF-8 string.
    case text(String)
    /// Opaque bytes.
    case binary([UInt8])

    /// Size in bytes as counted by `bufferedAmount` and `max-message-size`.
    public var byteCount: Int {
        switch self {
        case .text(let text): return text.utf8.count
        case .binary(let bytes): return bytes.count
        }
    }

    /// The SCTP payload and PPID; empty messages carry one ignored zero byte (RFC 8831 §6.6).
    var wire: (payload: [UInt8], ppid: PayloadProtocolIdentifier) {
        switch self {
        case .text(let text): return text.isEmpty ? ([0], .stringEmpty) : (Array(text.utf8), .string)
        case .binary(let bytes): return bytes.isEmpty ? ([0], .binaryEmpty) : (bytes, .binary)
        }
    }

    /// Decodes a complete SCTP message by PPID; nil for PPIDs that are not user data.
    init?(payload: [UInt8], ppid: UInt32) {
        switch PayloadProtocolIdentifier(rawValue: ppid) {
        case .string: self = .text(String(decoding: payload, as: UTF8.self))
        case .binary: self = .binary(payload)
        case .stringEmpty: self = .text("")
        case .binaryEmpty: self = .binary([])
        default: return nil
        }
    }
}

/// How a channel is created ([W3C RTCDataChannelInit](https://www.w3.org/TR/webrtc/#dom-rtcdatachannelinit)).
public struct DataChannelOptions: Sendable, Equatable {
    /// Deliver messages in order (default true).
    public var ordered: Bool
    /// Partial reliability: give up on a message after this many retransmissions.
    public var maxRetransmits: UInt32?
    /// Partial reliability: give up on a message after this many milliseconds.
    public var maxPacketLifeTime: UInt32?
    /// Sub-protocol name carried in DATA_CHANNEL_OPEN.
    public var `protocol`: String
    /// Pre-negotiated stream id: no DCEP; both sides must create the channel with this id.
    public var negotiatedID: UInt16?
    /// DCEP priority (256 = normal).
    public var priority: UInt16

    /// Creates options; the defaults make a reliable, ordered, in-band negotiated channel.
    public init(ordered: Bool = true, maxRetransmits: UInt32? = nil, maxPacketLifeTime: UInt32? = nil,
                protocol: String = "", negotiatedID: UInt16? = nil, priority: UInt16 = 256) {
        self.ordered = ordered
        self.maxRetransmits = maxRetransmits
        self.maxPacketLifeTime = maxPacketLifeTime
        self.protocol = `protocol`
        self.negotiatedID = negotiatedID
        self.priority = priority
    }

    /// The DCEP channel type these options describe.
    var channelType: DCEPChannelType {
        if let maxRetransmits { return .partialReliableRetransmits(ordered: ordered, maxRetransmits: maxRetransmits) }
        if let maxPacketLifeTime { return .partialReliableTimed(ordered: ordered, lifetimeMilliseconds: maxPacketLifeTime) }
        return .reliable(ordered: ordered)
    }

    init(open: DCEPOpen, negotiatedID: UInt16?) {
        var options = DataChannelOptions(protocol: open.protocol, negotiatedID: negotiatedID, priority: open.priority)
        options.ordered = open.channelType.ordered
        switch open.channelType {
        case .reliable: break
        case .partialReliableRetransmits(_, let count): options.maxRetransmits = count
        case .partialReliableTimed(_, let ms): options.maxPacketLifeTime = ms
        }
        self = options
    }
}
