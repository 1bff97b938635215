/// Where a chunked body (RFC 9112 §7.1) is — size line, chunk data, data CRLF, trailer
/// section — and the move over one framing byte. Shared by the capture proxy's
/// `HTTPChunkedScanner`, the HTTPRoute gateway's request decoder (`HTTP1RequestDecoder`) and
/// its backend response reader (`BackendResponseReader`), whose loops differ in what they do
/// with data and trailer bytes. Strict, since this is where
/// request smuggling lives: lines end in CRLF, sizes are 1–15 hex digits, extensions and
/// trailer lines carry no control bytes.
///
/// ```
/// chunked-body    = *chunk last-chunk trailer-section CRLF
/// chunk           = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
/// last-chunk      = 1*("0") [ chunk-ext ] CRLF
/// trailer-section = *( field-line CRLF )
/// ```
enum ChunkedFraming: Hashable, Sendable {
    case size(digits: Int, value: Int)
    case extensions(value: Int)
    case sizeLF(value: Int)
    /// Chunk data: the caller takes these bytes (and counts them) itself.
    case data(remaining: Int)
    case dataCR
    case dataLF
    case trailerLineStart
    case trailerLine
    case trailerLF(empty: Bool)

    /// What one framing byte did.
    enum Step: Equatable {
        case next
        /// A chunk-size line ended: its data (or, after the last chunk, the trailer section) follows.
        case sizeLineEnded
        /// The empty line after the trailer section: the body is complete.
        case bodyEnded
        case invalid(String)
    }

    /// Before the first size line.
    static let start = ChunkedFraming.size(digits: 0, value: 0)
    /// Longest chunk-size line (with extensions) accepted.
    static let maxLineBytes = 4096
    /// Longest trailer section accepted.
    static let maxTrailerBytes = 16 * 1024

    var inTrailer: Bool {
        switch self {
        case .trailerLineStart, .trailerLine, .trailerLF: true
        default: false
        }
    }

    /// Moves over one framing byte (never called in `.data`).
    mutating func advance(over byte: UInt8) -> Step {
        let cr = UInt8(ascii: "\r"), lf = UInt8(ascii: "\n")
        switch self {
        case .size(let digits, let value):
            if let digit = Self.hexValue(byte) {
                guard digits < 15 else { return .invalid("chunk size longer than 15 hex digits") }
                self = .size(digits: digits + 1, value: value << 4 | digit)
            } else if digits == 0 {
                return .invalid("chunk size expected, got byte \(hex(byte))")
            } else if byte == cr {
                self = .sizeLF(value: value)
            } else if byte == UInt8(ascii: ";") || byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\t") {
                self = .extensions(value: value)
            } else {
                return .invalid("byte \(hex(byte)) after the chunk size")
            }
        case .extensions(let value):
            if byte == cr {
                self = .sizeLF(value: value)
            } else if (byte < 0x20 && byte != 0x09) || byte == 0x7F {
                return .invalid("control byte \(hex(byte)) in a chunk extension")
            }
        case .sizeLF(let value):
            guard byte == lf else { return .invalid("chunk size line not ended by CRLF") }
            self = value == 0 ? .trailerLineStart : .data(remaining: value)
            return .sizeLineEnded
        case .dataCR:
            guard byte == cr else { return .invalid("chunk data not followed by CRLF") }
            self = .dataLF
        case .dataLF:
            guard byte == lf else { return .invalid("chunk data not followed by CRLF") }
            self = Self.start
        case .trailerLineStart, .trailerLine:
            if byte == cr {
                self = .trailerLF(empty: self == .trailerLineStart)
            } else if (byte < 0x20 && byte != 0x09) || byte == 0x7F {
                return .invalid("control byte \(hex(byte)) in the trailer section")
            } else {
                self = .trailerLine
            }
        case .trailerLF(let empty):
            guard byte == lf else { return .invalid("trailer line not ended by CRLF") }
            if empty { return .bodyEnded }
            self = .trailerLineStart
        case .data:
            break
        }
        return .next
    }

    private static func hexValue(_ byte: UInt8) -> Int? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): Int(byte - UInt8(ascii: "0"))
        case UInt8(ascii: "a")...UInt8(ascii: "f"): Int(byte - UInt8(ascii: "a") + 10)
        case UInt8(ascii: "A")...UInt8(ascii: "F"): Int(byte - UInt8(ascii: "A") + 10)
        default: nil
        }
    }
}
