/// Finds where a chunked message body ends, RFC 9112 §7.1, without decoding it: a proxy
/// relays chunked bodies byte for byte and only needs to know which byte is the last one.
/// <https://www.rfc-editor.org/rfc/rfc9112#section-7.1>
///
/// ```
/// chunked-body   = *chunk last-chunk trailer-section CRLF
/// chunk          = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
/// chunk-size     = 1*HEXDIG
/// last-chunk     = 1*("0") [ chunk-ext ] CRLF
/// trailer-section = *( field-line CRLF )
/// ```
///
/// A streaming state machine (unlike the head parsers it consumes): feed the body bytes in
/// order as they arrive. Chunk data is skipped in O(1) per call, so the cost is proportional
/// to the number of chunks, not bytes. Strict, since this is where request smuggling lives:
/// lines end in CRLF, sizes are 1–16 hex digits, extensions (skipped) and trailer fields are
/// bounded, bare CR and control bytes are refused.
public struct HTTPChunkedScanner: Sendable, Hashable {
    /// What `scan` found in the bytes it was given.
    public enum Progress: Hashable, Sendable {
        /// All the bytes belong to the body; it continues.
        case needMore
        /// The body ends after the first `consumed` bytes of this call; the rest is the next message.
        case end(consumed: Int)
        /// The bytes break the chunked syntax; the connection cannot be reused (or relayed further).
        case invalid(WireError)
    }

    private enum State: Hashable, Sendable {
        case size(digits: Int, value: UInt64)
        case extensions(value: UInt64)
        case sizeLF(value: UInt64)
        case data(remaining: UInt64)
        case dataCR
        case dataLF
        case trailerLineStart
        case trailerLine
        case trailerLF(empty: Bool)
        case done
        case failed
    }

    /// Longest chunk-ext accepted on one size line.
    public static let maxExtensionBytes = 4096
    /// Most bytes of trailer section accepted.
    public static let maxTrailerBytes = 16 * 1024

    private var state: State = .size(digits: 0, value: 0)
    private var extensionBytes = 0
    private var trailerBytes = 0
    /// Body bytes scanned so far.
    public private(set) var offset: UInt64 = 0

    public init() {}

    /// True once the last chunk and trailer section were seen.
    public var isComplete: Bool { state == .done }

    /// Scans the next bytes of the body.
    public mutating func scan(_ bytes: some Collection<UInt8>) -> Progress {
        withContiguousBytes(bytes) { scan(buffer: $0) }
    }

    private mutating func fail(_ message: String) -> Progress {
        state = .failed
        return .invalid(WireError(.badChunk, "chunked body at byte \(offset): \(message)"))
    }

    private static func hexValue(_ byte: UInt8) -> UInt64? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return UInt64(byte - UInt8(ascii: "0"))
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return UInt64(byte - UInt8(ascii: "a") + 10)
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return UInt64(byte - UInt8(ascii: "A") + 10)
        default: return nil
        }
    }

    private mutating func scan(buffer: UnsafeBufferPointer<UInt8>) -> Progress {
        var index = 0
        let cr = UInt8(ascii: "\r"), lf = UInt8(ascii: "\n")
        while index < buffer.count {
            switch state {
            case .done:
                return .end(consumed: index)
            case .failed:
                return .invalid(WireError(.badChunk, "chunked body already failed"))
            case .data(let remaining):
                let take = min(remaining, UInt64(buffer.count - index))
                index += Int(take)
                offset += take
                state = remaining == take ? .dataCR : .data(remaining: remaining - take)
                continue
            default:
                break
            }
            let byte = buffer[index]
            switch state {
            case .size(let digits, let value):
                if let digit = Self.hexValue(byte) {
                    guard digits < 16 else { return fail("chunk size has more than 16 hex digits") }
                    state = .size(digits: digits + 1, value: value << 4 | digit)
                } else if digits == 0 {
                    return fail("chunk size starts with byte \(hex(byte)), expected a hex digit")
                } else if value > UInt64(Int.max) {
                    return fail("chunk size \(value) is too large")
                } else if byte == cr {
                    state = .sizeLF(value: value)
                } else if byte == UInt8(ascii: ";") || byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\t") {
                    extensionBytes = 1
                    state = .extensions(value: value)
                } else {
                    return fail("chunk size is followed by byte \(hex(byte))")
                }
            case .extensions(let value):
                if byte == cr {
                    state = .sizeLF(value: value)
                } else if byte < 0x20 && byte != 0x09 || byte == 0x7F {
                    return fail("chunk extension contains control byte \(hex(byte))")
                } else {
                    extensionBytes += 1
                    guard extensionBytes <= Self.maxExtensionBytes else {
                        return fail("chunk extension longer than \(Self.maxExtensionBytes) bytes")
                    }
                }
            case .sizeLF(let value):
                guard byte == lf else { return fail("chunk size line has CR followed by \(hex(byte)), expected LF") }
                state = value == 0 ? .trailerLineStart : .data(remaining: value)
            case .dataCR:
                guard byte == cr else { return fail("chunk data is followed by byte \(hex(byte)), expected CRLF") }
                state = .dataLF
            case .dataLF:
                guard byte == lf else { return fail("chunk data is followed by CR and \(hex(byte)), expected LF") }
                state = .size(digits: 0, value: 0)
            case .trailerLineStart, .trailerLine:
                let atStart = state == .trailerLineStart
                if byte == cr {
                    state = .trailerLF(empty: atStart)
                } else if byte < 0x20 && byte != 0x09 || byte == 0x7F {
                    return fail("trailer section contains control byte \(hex(byte))")
                } else {
                    state = .trailerLine
                }
                trailerBytes += 1
                guard trailerBytes <= Self.maxTrailerBytes else {
                    return fail("trailer section longer than \(Self.maxTrailerBytes) bytes")
                }
            case .trailerLF(let empty):
                guard byte == lf else { return fail("trailer line has CR followed by \(hex(byte)), expected LF") }
                trailerBytes += 1
                state = empty ? .done : .trailerLineStart
            case .data, .done, .failed:
                break
            }
            index += 1
            offset += 1
        }
        return state == .done ? .end(consumed: index) : .needMore
    }
}
