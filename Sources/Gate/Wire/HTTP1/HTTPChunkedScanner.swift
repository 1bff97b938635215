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
/// lines end in CRLF, sizes are 1–15 hex digits, extensions (skipped) and trailer fields are
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

    /// The framing step (`ChunkedFraming`, shared with the HTTPRoute gateway's readers), or
    /// nil once the body ended or failed.
    private var framing: ChunkedFraming? = .start
    private var failed = false

    /// Longest chunk-size line (size and extensions) accepted.
    public static let maxExtensionBytes = ChunkedFraming.maxLineBytes
    /// Most bytes of trailer section accepted.
    public static let maxTrailerBytes = ChunkedFraming.maxTrailerBytes

    /// Bytes of the current size line, or of the trailer section so far.
    private var lineBytes = 0
    /// Body bytes scanned so far.
    public private(set) var offset: UInt64 = 0

    public init() {}

    /// True once the last chunk and trailer section were seen.
    public var isComplete: Bool { framing == nil && !failed }

    /// Scans the next bytes of the body.
    public mutating func scan(_ bytes: some Collection<UInt8>) -> Progress {
        withContiguousBytes(bytes) { scan(buffer: $0) }
    }

    private mutating func fail(_ message: String) -> Progress {
        framing = nil
        failed = true
        return .invalid(WireError(.badChunk, "chunked body at byte \(offset): \(message)"))
    }

    private mutating func scan(buffer: UnsafeBufferPointer<UInt8>) -> Progress {
        if failed { return .invalid(WireError(.badChunk, "chunked body already failed")) }
        var index = 0
        while index < buffer.count {
            guard var step = framing else { return .end(consumed: index) }
            if case .data(let remaining) = step {
                let take = min(remaining, buffer.count - index)
                index += take
                offset += UInt64(take)
                framing = remaining == take ? .dataCR : .data(remaining: remaining - take)
                continue
            }
            let byte = buffer[index]
            index += 1
            offset += 1
            lineBytes += 1
            switch step.advance(over: byte) {
            case .invalid(let message): return fail(message)
            case .sizeLineEnded: lineBytes = 0
            case .bodyEnded:
                framing = nil
                return .end(consumed: index)
            case .next: break
            }
            if step == .start { lineBytes = 0 }
            if step.inTrailer ? lineBytes > Self.maxTrailerBytes : lineBytes > Self.maxExtensionBytes {
                return fail(step.inTrailer ? "trailer section longer than \(Self.maxTrailerBytes) bytes" : "chunk size line longer than \(Self.maxExtensionBytes) bytes")
            }
            framing = step
        }
        return framing == nil ? .end(consumed: index) : .needMore
    }
}
