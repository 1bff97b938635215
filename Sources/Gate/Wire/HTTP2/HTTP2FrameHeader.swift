import NIOCore

/// The 9-octet header every HTTP/2 frame starts with, RFC 9113 §4.1:
/// <https://www.rfc-editor.org/rfc/rfc9113#section-4.1>
///
/// ```
/// +-----------------------------------------------+
/// |                 Length (24)                   |
/// +---------------+---------------+---------------+
/// |   Type (8)    |   Flags (8)   |
/// +-+-------------+---------------+-------------------------------+
/// |R|                 Stream Identifier (31)                      |
/// +=+=============================================================+
/// |                   Frame Payload (0...)                      ...
/// +---------------------------------------------------------------+
/// ```
/// The reserved bit R is ignored on receipt and sent as 0.
struct H2FrameHeader: Equatable {
    static let size = 9

    var length: Int
    var type: UInt8
    var flags: UInt8
    var streamID: UInt32

    /// The header at `buffer`'s reader index (not consumed); nil while fewer than 9 bytes are there.
    static func peek(_ buffer: ByteBuffer) -> H2FrameHeader? {
        let at = buffer.readerIndex
        guard buffer.readableBytes >= size, let word = buffer.getInteger(at: at, as: UInt32.self),
            let flags = buffer.getInteger(at: at + 4, as: UInt8.self), let stream = buffer.getInteger(at: at + 5, as: UInt32.self)
        else { return nil }
        return H2FrameHeader(length: Int(word >> 8), type: UInt8(truncatingIfNeeded: word), flags: flags, streamID: stream & 0x7FFF_FFFF)
    }

    /// Appends a frame header to `buffer`.
    static func write(length: Int, type: H2FrameType, flags: UInt8, streamID: UInt32, to buffer: inout ByteBuffer) {
        buffer.writeInteger(UInt32(truncatingIfNeeded: length) << 8 | UInt32(type.rawValue))
        buffer.writeInteger(flags)
        buffer.writeInteger(streamID & 0x7FFF_FFFF)
    }

    /// Overwrites the frame header at `index` (a placeholder written before the payload's length was known).
    static func set(length: Int, type: H2FrameType, flags: UInt8, streamID: UInt32, at index: Int, in buffer: inout ByteBuffer) {
        buffer.setInteger(UInt32(truncatingIfNeeded: length) << 8 | UInt32(type.rawValue), at: index)
        buffer.setInteger(flags, at: index + 4)
        buffer.setInteger(streamID & 0x7FFF_FFFF, at: index + 5)
    }
}

/// Frame types, RFC 9113 §6 (unknown types are ignored, §4.1).
enum H2FrameType: UInt8 {
    case data = 0x0
    case headers = 0x1
    case priority = 0x2
    case rstStream = 0x3
    case settings = 0x4
    case pushPromise = 0x5
    case ping = 0x6
    case goAway = 0x7
    case windowUpdate = 0x8
    case continuation = 0x9
}

/// Frame flags, RFC 9113 §6 (each flag's meaning depends on the frame type).
enum H2Flags {
    /// DATA, HEADERS.
    static let endStream: UInt8 = 0x1
    /// SETTINGS, PING.
    static let ack: UInt8 = 0x1
    /// HEADERS, CONTINUATION.
    static let endHeaders: UInt8 = 0x4
    /// DATA, HEADERS.
    static let padded: UInt8 = 0x8
    /// HEADERS.
    static let priority: UInt8 = 0x20
}

/// HTTP/2 error codes, RFC 9113 §7 (carried by RST_STREAM and GOAWAY); unknown codes are kept
/// as received.
struct H2ErrorCode: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    var rawValue: UInt32
    init(rawValue: UInt32) { self.rawValue = rawValue }

    static let noError = H2ErrorCode(rawValue: 0x0)
    static let protocolError = H2ErrorCode(rawValue: 0x1)
    static let internalError = H2ErrorCode(rawValue: 0x2)
    static let flowControlError = H2ErrorCode(rawValue: 0x3)
    static let settingsTimeout = H2ErrorCode(rawValue: 0x4)
    static let streamClosed = H2ErrorCode(rawValue: 0x5)
    static let frameSizeError = H2ErrorCode(rawValue: 0x6)
    static let refusedStream = H2ErrorCode(rawValue: 0x7)
    static let cancel = H2ErrorCode(rawValue: 0x8)
    static let compressionError = H2ErrorCode(rawValue: 0x9)
    static let connectError = H2ErrorCode(rawValue: 0xA)
    static let enhanceYourCalm = H2ErrorCode(rawValue: 0xB)
    static let inadequateSecurity = H2ErrorCode(rawValue: 0xC)
    static let http11Required = H2ErrorCode(rawValue: 0xD)

    var description: String {
        let names = [
            "NO_ERROR", "PROTOCOL_ERROR", "INTERNAL_ERROR", "FLOW_CONTROL_ERROR", "SETTINGS_TIMEOUT", "STREAM_CLOSED", "FRAME_SIZE_ERROR",
            "REFUSED_STREAM", "CANCEL", "COMPRESSION_ERROR", "CONNECT_ERROR", "ENHANCE_YOUR_CALM", "INADEQUATE_SECURITY", "HTTP_1_1_REQUIRED",
        ]
        return rawValue < names.count ? names[Int(rawValue)] : "0x" + String(rawValue, radix: 16)
    }
}

/// A connection error (RFC 9113 §5.4.1): the code the GOAWAY carried and what was wrong.
struct H2ConnectionError: Error, Hashable, Sendable, CustomStringConvertible {
    var code: H2ErrorCode
    var message: String
    var description: String { "HTTP/2 connection error \(code): \(message)" }
}

/// SETTINGS parameters, RFC 9113 §6.5.2: identifier (16) and value (32), six octets each.
///
/// ```
/// +-------------------------------+
/// |       Identifier (16)         |
/// +-------------------------------+-------------------------------+
/// |                        Value (32)                             |
/// +---------------------------------------------------------------+
/// ```
enum H2Setting {
    static let headerTableSize: UInt16 = 0x1
    static let enablePush: UInt16 = 0x2
    static let maxConcurrentStreams: UInt16 = 0x3
    static let initialWindowSize: UInt16 = 0x4
    static let maxFrameSize: UInt16 = 0x5
    static let maxHeaderListSize: UInt16 = 0x6
    static let enableConnectProtocol: UInt16 = 0x8

    /// Why `value` is not allowed for `identifier` (RFC 9113 §6.5.2, RFC 8441 §3), with the
    /// error code to send; nil when it is.
    static func problem(_ identifier: UInt16, _ value: UInt32) -> (H2ErrorCode, String)? {
        switch identifier {
        case enablePush where value > 1: (.protocolError, "SETTINGS_ENABLE_PUSH \(value) is not 0 or 1")
        case initialWindowSize where value > 0x7FFF_FFFF: (.flowControlError, "SETTINGS_INITIAL_WINDOW_SIZE \(value) above 2^31-1")
        case maxFrameSize where value < 1 << 14 || value > 1 << 24 - 1: (.protocolError, "SETTINGS_MAX_FRAME_SIZE \(value) outside 16384...16777215")
        case enableConnectProtocol where value > 1: (.protocolError, "SETTINGS_ENABLE_CONNECT_PROTOCOL \(value) is not 0 or 1")
        default: nil
        }
    }
}
