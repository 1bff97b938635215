/// The outcome of decoding one message from the front of a byte buffer.
///
/// Decoders never consume: they look at the bytes they are given and say how many of them
/// form the message (`consumed`), so the caller keeps ownership of the buffer and can hand
/// the remainder (pipelined payload) on unchanged.
public enum ParseResult<Value> {
    /// The bytes are a valid prefix of a message; call again with more bytes.
    case needMore
    /// A complete message: the decoded value and how many leading bytes it occupied.
    case done(Value, consumed: Int)
    /// The bytes can never become a valid message.
    case invalid(WireError)

    /// Transforms the decoded value, keeping `needMore` and `invalid` as they are.
    public func map<T>(_ transform: (Value) throws(WireError) -> T) -> ParseResult<T> {
        switch self {
        case .needMore: return .needMore
        case .invalid(let error): return .invalid(error)
        case .done(let value, let consumed):
            do { return .done(try transform(value), consumed: consumed) } catch { return .invalid(error) }
        }
    }
}

extension ParseResult: Sendable where Value: Sendable {}
extension ParseResult: Equatable where Value: Equatable {}

/// An error found in bytes received from a peer: a machine-readable code and a message that
/// says exactly what was wrong ("SOCKS version 4 not supported").
public struct WireError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What kind of problem the bytes have.
    public enum Code: String, Hashable, Sendable {
        /// A version field holds a version this implementation does not speak.
        case unsupportedVersion
        /// A length field is zero where that is not allowed, or points past its container.
        case badLength
        /// A message or field exceeds a limit (protocol maximum or configured bound).
        case tooLarge
        /// Bytes that do not follow the message syntax.
        case malformed
        /// SOCKS5: a command this server does not carry (reply 0x07).
        case unsupportedCommand
        /// SOCKS5: an address type this server does not know (reply 0x08).
        case unsupportedAddressType
        /// SOCKS5: the client offered no method the server accepts.
        case noAcceptableMethod
        /// SOCKS5: the username/password subnegotiation failed.
        case authenticationFailed
        /// SOCKS5 UDP: a fragmented datagram (FRAG ≠ 0).
        case fragmentationNotSupported
        /// A message arrived in a state where it is not expected.
        case unexpectedMessage
        /// HTTP: the request line is not `method SP request-target SP HTTP-version`.
        case badRequestLine
        /// HTTP: the status line is not `HTTP-version SP status-code SP [reason-phrase]`.
        case badStatusLine
        /// HTTP: a chunked body breaks the chunk syntax.
        case badChunk
        /// HTTP: the request line alone exceeds the head limit (414).
        case requestLineTooLong
        /// HTTP: a header field line is malformed.
        case badHeader
        /// HTTP: obsolete line folding (a field line starting with SP or HTAB).
        case obsoleteLineFolding
        /// HTTP: an HTTP/1.1 request without exactly one Host field.
        case missingHost
        /// HTTP: the head exceeds the byte limit (431).
        case headTooLarge
        /// HTTP: more header fields than the limit (431).
        case tooManyHeaders
        /// HTTP: a version other than 1.0 or 1.1 (505).
        case httpVersionNotSupported
        /// HTTP: a request target this proxy cannot serve (scheme, form).
        case badTarget
        /// HTTP: contradictory body framing (Content-Length with Transfer-Encoding, …).
        case badFraming
        /// TLS: the first handshake message is not a ClientHello, or a record is not a handshake.
        case notClientHello
    }

    /// What kind of problem it is.
    public var code: Code
    /// A sentence naming the field and the offending value.
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "\(code.rawValue): \(message)" }

    /// The HTTP status a proxy should answer a client with for this error in the client's
    /// request: 400 by default, 414 / 431 for size limits, 505 for an unsupported version.
    /// (Errors in an upstream's response are answered with 502 whatever the code.)
    public var httpStatus: Int {
        switch code {
        case .requestLineTooLong: return 414
        case .headTooLarge, .tooManyHeaders: return 431
        case .httpVersionNotSupported: return 505
        default: return 400
        }
    }
}

/// Runs `body` over the bytes of `bytes` as one contiguous buffer, copying only when the
/// collection has no contiguous storage.
func withContiguousBytes<R>(_ bytes: some Collection<UInt8>, _ body: (UnsafeBufferPointer<UInt8>) -> R) -> R {
    if let result = bytes.withContiguousStorageIfAvailable(body) { return result }
    return Array(bytes).withUnsafeBufferPointer(body)
}

/// A bounds-checked big-endian cursor over a byte buffer. Every read checks the remaining
/// length first and returns nil when the bytes run out, so decoders never index past the end.
struct ByteReader {
    private let bytes: UnsafeBufferPointer<UInt8>
    private let end: Int
    /// Offset of the next unread byte, relative to the start of the buffer.
    private(set) var offset: Int

    init(_ bytes: UnsafeBufferPointer<UInt8>) {
        self.bytes = bytes
        self.end = bytes.count
        self.offset = 0
    }

    private init(_ bytes: UnsafeBufferPointer<UInt8>, from: Int, to end: Int) {
        self.bytes = bytes
        self.offset = from
        self.end = end
    }

    /// Bytes left to read.
    var remaining: Int { end - offset }
    var isAtEnd: Bool { offset >= end }

    mutating func readU8() -> UInt8? {
        guard remaining >= 1 else { return nil }
        defer { offset += 1 }
        return bytes[offset]
    }

    mutating func readU16() -> UInt16? {
        guard remaining >= 2 else { return nil }
        defer { offset += 2 }
        return UInt16(bytes[offset]) << 8 | UInt16(bytes[offset + 1])
    }

    mutating func readU32() -> UInt32? {
        guard remaining >= 4 else { return nil }
        defer { offset += 4 }
        return UInt32(bytes[offset]) << 24 | UInt32(bytes[offset + 1]) << 16 | UInt32(bytes[offset + 2]) << 8 | UInt32(bytes[offset + 3])
    }

    mutating func readU24() -> Int? {
        guard remaining >= 3 else { return nil }
        defer { offset += 3 }
        return Int(bytes[offset]) << 16 | Int(bytes[offset + 1]) << 8 | Int(bytes[offset + 2])
    }

    /// Copies the next `count` bytes out.
    mutating func readBytes(_ count: Int) -> [UInt8]? {
        guard count >= 0, remaining >= count else { return nil }
        defer { offset += count }
        return Array(bytes[offset..<offset + count])
    }

    mutating func skip(_ count: Int) -> Bool {
        guard count >= 0, remaining >= count else { return false }
        offset += count
        return true
    }

    /// A reader over the next `count` bytes (a length-prefixed vector's body); advances past them.
    mutating func subReader(_ count: Int) -> ByteReader? {
        guard count >= 0, remaining >= count else { return nil }
        defer { offset += count }
        return ByteReader(bytes, from: offset, to: offset + count)
    }
}

/// Formats a byte as `0x0A` for error messages.
func hex(_ byte: UInt8) -> String {
    let digits = Array("0123456789abcdef")
    return "0x\(digits[Int(byte >> 4)])\(digits[Int(byte & 0xF)])"
}

/// Formats a 16-bit value as `0x0303` for error messages.
func hex16(_ value: UInt16) -> String {
    hex(UInt8(value >> 8)) + String(hex(UInt8(value & 0xFF)).dropFirst(2))
}

extension Array where Element == UInt8 {
    /// Appends `value` big-endian.
    mutating func appendU16(_ value: UInt16) {
        append(UInt8(value >> 8))
        append(UInt8(value & 0xFF))
    }
}
