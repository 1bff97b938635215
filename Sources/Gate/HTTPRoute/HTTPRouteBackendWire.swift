import Glibc
import NIOCore
import NIOHTTP1

/// HTTP/1.1 towards the backends, written and read by hand instead of NIO's HTTP/1 client
/// codec (`HTTPRequestEncoder`, `HTTPResponseDecoder`, the outbound header validator): on the
/// proxy's hot path that codec turned every response into `HTTPHeaders` and enum parts that
/// travelled through three pipeline handlers, only for the gateway to turn them back into
/// bytes — about a fifth of the gateway's CPU time per request in profiles. Here a request
/// head is serialized once from the route's fields into one buffer, and a response head is
/// parsed with the Gate's `HTTP1ResponseHead` (RFC 9112 §4; the capture proxy's parser) and its
/// body relayed as the slices NIO read, delimited by `HTTPBodyFraming`.
enum BackendWire {
    /// A request field, method or target that cannot be written on the wire.
    struct InvalidField: Error, CustomStringConvertible {
        var description: String
    }

    /// The response head limits: larger than the capture proxy's default (NIO's decoder
    /// accepted 80 KiB heads from backends).
    static let responseLimits = HTTPHeadLimits(maxHeadBytes: 64 * 1024, maxHeaderCount: 256)

    /// Writes `method SP target SP HTTP/1.1 CRLF`, each field but the hop-by-hop ones as
    /// `name: value CRLF`, then `extra` the same way and the empty line (RFC 9112 §3, §5).
    /// Names must be tokens and values free of CR, LF, NUL and other controls but HTAB
    /// (RFC 9110 §5.5): what NIO's outbound validator refused, checked while copying. A head
    /// that fails a check leaves `buffer` as it was.
    ///
    /// Written in one piece, on the hot path (once per forwarded request): the head's size is
    /// bounded first (every field counted, hop-by-hop ones too), then each piece is checked
    /// and copied with `memcpy` straight into the buffer's storage inside one
    /// `writeWithUnsafeMutableBytes`. Piece by piece it was about twenty `ByteBuffer` writes,
    /// each with its capacity and uniqueness checks; a scratch array or stack copy first
    /// (tried in session 8) retained the field strings more often. The fields are read by
    /// index: `for field in` copied each out of the array (a retain of its name and value).
    static func requestHead(method: String, target: String, fields: [HTTPField], extra: [HTTPField], into buffer: inout ByteBuffer) throws {
        // `method SP target SP HTTP/1.1 CRLF`, `name: value CRLF` per field, the empty line.
        var bound = method.utf8.count + target.utf8.count + 13
        for index in fields.indices { bound += fields[index].name.utf8.count + fields[index].value.utf8.count + 4 }
        for index in extra.indices { bound += extra[index].name.utf8.count + extra[index].value.utf8.count + 4 }
        try buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: bound) { out in
            var head = HeadWriter(out: out)
            try utf8Bytes(of: method) { bytes in
                guard isToken(bytes) else { throw notToken(bytes, what: "method") }
                head.put(bytes)
            }
            head.put(" ")
            try utf8Bytes(of: target) { bytes in
                if bytes.isEmpty || bytes.contains(where: { $0 <= 0x20 || $0 == 0x7F }) {
                    throw InvalidField(description: "request target \(String(decoding: bytes, as: UTF8.self).debugDescription) has a space or control byte")
                }
                head.put(bytes)
            }
            head.put(" HTTP/1.1\r\n")
            for index in fields.indices where !HopByHop.contains(fields[index].name) {
                try head.field(fields[index].name, fields[index].value)
            }
            for index in extra.indices { try head.field(extra[index].name, extra[index].value) }
            head.putCRLF()
            return head.at
        }
    }

    /// `name: value CRLF` after checking both (see `requestHead`).
    static func writeField(_ field: HTTPField, into buffer: inout ByteBuffer) throws {
        let bound = field.name.utf8.count + field.value.utf8.count + 4
        try buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: bound) { out in
            var head = HeadWriter(out: out)
            try head.field(field.name, field.value)
            return head.at
        }
    }

    /// Whether `bytes` are a token (RFC 9110 §5.6.2: one or more tchar).
    @inline(__always)
    private static func isToken(_ bytes: UnsafeBufferPointer<UInt8>) -> Bool {
        guard !bytes.isEmpty else { return false }
        for byte in bytes where !isTokenChar(byte) { return false }
        return true
    }

    private static func notToken(_ bytes: UnsafeBufferPointer<UInt8>, what: String) -> InvalidField {
        InvalidField(description: "\(what) \(String(decoding: bytes, as: UTF8.self).debugDescription) is not a token")
    }

    /// Puts a head's pieces into memory reserved for them (`requestHead`, `clientHead(raw:)`):
    /// copied while they fit, counted in any case.
    private struct HeadWriter {
        let out: UnsafeMutableRawBufferPointer
        var at = 0

        mutating func put(_ text: StaticString) {
            put(UnsafeRawBufferPointer(start: text.utf8Start, count: text.utf8CodeUnitCount))
        }

        mutating func put(_ bytes: UnsafeRawBufferPointer) {
            if let base = bytes.baseAddress, at + bytes.count <= out.count {
                out.baseAddress!.advanced(by: at).copyMemory(from: base, byteCount: bytes.count)
            }
            at += bytes.count
        }

        mutating func put(_ bytes: UnsafeBufferPointer<UInt8>) {
            put(UnsafeRawBufferPointer(bytes))
        }

        /// Two bytes (`": "`, CRLF) stored directly: a `memcpy` call cost more than they do.
        mutating func put(_ first: UInt8, _ second: UInt8) {
            if at + 2 <= out.count {
                out[at] = first
                out[at + 1] = second
            }
            at += 2
        }

        mutating func putCRLF() {
            put(UInt8(ascii: "\r"), UInt8(ascii: "\n"))
        }

        /// `name: value CRLF`, the name checked as a token and the value for controls but HTAB
        /// (eight bytes at a time, `HTTPHeadScanner.controlByte`).
        mutating func field(_ name: String, _ value: String) throws {
            try utf8Bytes(of: name) { bytes in
                guard BackendWire.isToken(bytes) else { throw BackendWire.notToken(bytes, what: "field name") }
                put(bytes)
            }
            put(UInt8(ascii: ":"), UInt8(ascii: " "))
            try utf8Bytes(of: value) { bytes in
                if HTTPHeadScanner.controlByte(in: bytes, bytes.indices) != nil {
                    throw InvalidField(description: "field \(name) has a control byte in its value")
                }
                put(bytes)
            }
            putCRLF()
        }
    }

    /// The chunk-size line of a chunk of `count` bytes (RFC 9112 §7.1): `hex CRLF`.
    static func chunkHeader(_ count: Int, into buffer: inout ByteBuffer) {
        buffer.writeString(String(count, radix: 16))
        buffer.writeStaticString("\r\n")
    }

    /// The head relayed to an HTTP/1.1 client: `HTTP/1.1`, the backend's status code and
    /// reason, its fields except the hop-by-hop ones (RFC 9110 §7.6.1: also those the
    /// backend's `Connection` names) — `Content-Length` and `Transfer-Encoding` stay, the body
    /// is relayed with the backend's framing — and `Connection: close` when the gateway closes
    /// the client connection after the response. Written straight into a buffer: this runs
    /// once per proxied request.
    static func clientHead(_ head: HTTP1ResponseHead, close: Bool, into buffer: inout ByteBuffer) {
        buffer.writeStaticString("HTTP/1.1 ")
        let status = head.status
        buffer.writeBytes([UInt8(48 + status / 100), UInt8(48 + status / 10 % 10), UInt8(48 + status % 10), UInt8(ascii: " ")])
        buffer.writeString(head.reason)
        buffer.writeStaticString("\r\n")
        let named = connectionOptions(head.headers)
        for field in head.headers where !HopByHop.contains(field.name) || HopByHop.isTransferEncoding(field.name) {
            if !named.isEmpty, named.contains(where: { $0.equalsIgnoringASCIICase(field.name) }) { continue }
            buffer.writeString(field.name)
            buffer.writeStaticString(": ")
            buffer.writeString(field.value)
            buffer.writeStaticString("\r\n")
        }
        if close { buffer.writeStaticString("connection: close\r\n") }
        buffer.writeStaticString("\r\n")
    }

    /// The fields `Connection` names (RFC 9110 §7.6.1: connection options, removed by a
    /// proxy) other than its own `close` / `keep-alive` and the body's framing. Rare, so
    /// looked for only when a `Connection` field is there.
    static func connectionOptions(_ fields: [HTTPField]) -> [String] {
        var named: [String] = []
        for field in fields where HopByHop.named(field.name, "connection") {
            // The usual value needs no list.
            if HopByHop.named(field.value, "keep-alive") || HopByHop.named(field.value, "close") { continue }
            for option in field.value.split(separator: ",") {
                let name = option.trimmingOWS()
                if !HopByHop.named(name, "close") && !HopByHop.named(name, "keep-alive") && !protected(name) { named.append(name) }
            }
        }
        return named
    }

    /// `clientHead` from the head's bytes as received (`HTTP1ResponseHead.parse` checked
    /// them), for a head whose `Connection` names no other field (`connectionOptions` is
    /// empty): the status line after the version and every kept field line are copied as
    /// bytes, without the conversions to and from `String` (measurable once per response).
    /// Consecutive kept lines that end in CRLF are copied together (`run`): one `memcpy` for
    /// the usual head instead of two per line.
    static func clientHead(raw: ByteBuffer, close: Bool, into buffer: inout ByteBuffer) {
        _ = raw.withUnsafeReadableBytes { bytes in
            // At most the head, a CR for every bare LF, and `connection: close` CRLF.
            buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: 2 * bytes.count + 21) { out in
                var head = HeadWriter(out: out)
                var start = 0
                // Kept field lines with their CRLF, not copied yet.
                var run = 0..<0
                while start < bytes.count {
                    let end = byteIndex(UInt8(ascii: "\n"), in: bytes, from: start) ?? bytes.count
                    var content = start..<end
                    let first = start == 0
                    start = min(end + 1, bytes.count)
                    let crlf = content.last.map { bytes[$0] == UInt8(ascii: "\r") } ?? false
                    if crlf { content = content.lowerBound..<content.upperBound - 1 }
                    if content.isEmpty { break }
                    if first {
                        // `HTTP/1.x` → the gateway's own version.
                        head.put("HTTP/1.1")
                        head.put(UnsafeRawBufferPointer(rebasing: bytes[min(content.lowerBound + 8, content.upperBound)..<content.upperBound]))
                        head.putCRLF()
                        run = start..<start
                        continue
                    }
                    let colon = byteIndex(UInt8(ascii: ":"), in: bytes, from: content.lowerBound, to: content.upperBound) ?? content.upperBound
                    let name = UnsafeBufferPointer(
                        start: bytes.baseAddress!.advanced(by: content.lowerBound).assumingMemoryBound(to: UInt8.self), count: colon - content.lowerBound)
                    if HopByHop.contains(bytes: name) && !HopByHop.isTransferEncoding(bytes: name) {
                        head.put(UnsafeRawBufferPointer(rebasing: bytes[run]))
                        run = start..<start
                    } else if crlf && end < bytes.count {
                        run = run.lowerBound..<start
                    } else {
                        // A bare LF (or no line end): the line gets its CR.
                        head.put(UnsafeRawBufferPointer(rebasing: bytes[run]))
                        head.put(UnsafeRawBufferPointer(rebasing: bytes[content]))
                        head.putCRLF()
                        run = start..<start
                    }
                }
                head.put(UnsafeRawBufferPointer(rebasing: bytes[run]))
                if close { head.put("connection: close\r\n") }
                head.putCRLF()
                return head.at
            }
        }
    }

    /// The fields of a chunked body's trailer section as received (RFC 9112 §7.1.2: field
    /// lines, each ended by CRLF, then an empty line), for an HTTP/2 client's trailing HEADERS
    /// frame. Lines without a token name before `:` are left out (RFC 9110 §6.5: a recipient
    /// may discard trailer fields), and so are fields `trailerAllowed` refuses. Nil when none is left.
    static func trailerFields(_ section: [UInt8]) -> HTTPHeaders? {
        var fields = HTTPHeaders()
        for line in section.split(separator: UInt8(ascii: "\n")) {
            let content = line.last == UInt8(ascii: "\r") ? line.dropLast() : line[...]
            guard let colon = content.firstIndex(of: UInt8(ascii: ":")), colon > content.startIndex,
                content[..<colon].allSatisfy(isTokenChar)
            else { continue }
            let name = String(decoding: content[..<colon], as: UTF8.self)
            guard trailerAllowed(name) else { continue }
            var value = content[(colon + 1)...]
            while let byte = value.first, byte == 0x20 || byte == 0x09 { value = value.dropFirst() }
            while let byte = value.last, byte == 0x20 || byte == 0x09 { value = value.dropLast() }
            fields.add(name: name, value: String(decoding: value, as: UTF8.self))
        }
        return fields.isEmpty ? nil : fields
    }

    /// Whether a field may be passed on in an HTTP/2 trailer section: not a connection-specific
    /// field (RFC 9113 §8.2.2, `HopByHop`), not a pseudo-field (§8.1), and none of the fields
    /// RFC 9110 §6.5.1 says need the header section — framing (`Content-Length`), routing
    /// (`Host`), authentication, response control data, content format and cookies.
    static func trailerAllowed(_ name: String) -> Bool {
        let lower = name.lowercased()
        return !HopByHop.contains(lower) && !lower.hasPrefix(":") && !forbiddenInTrailers.contains(lower)
    }

    static let forbiddenInTrailers: Set<String> = [
        "content-length", "content-encoding", "content-type", "content-range", "host", "authorization",
        "proxy-authenticate", "proxy-authorization", "www-authenticate", "set-cookie", "cookie", "cache-control", "expires",
        "date", "location", "retry-after", "vary", "age", "warning",
    ]

    /// Fields a `Connection` option cannot remove: the body's framing.
    private static func protected(_ name: String) -> Bool {
        name.equalsIgnoringASCIICase("content-length") || HopByHop.isTransferEncoding(name)
    }
}

/// Reads the responses of one backend connection (RFC 9112 §6): the head, then the body by
/// its framing — `Content-Length`, chunked (RFC 9112 §7.1), until the backend closes, or none
/// (HEAD, 204, 304) — then the next response. A pure state machine: bytes in, events out.
///
/// Interim 1xx heads (100 Continue, 103 Early Hints) are skipped: the gateway answers
/// `Expect` itself. A chunked body is relayed as received (the framing bytes included) for
/// HTTP/1.1 clients, or decoded into its data for HTTP/2 clients (`decodeChunks`); its
/// trailer section is relayed raw to HTTP/1.1 clients and, for HTTP/2, kept and handed out
/// by `takeTrailers()` at the end (sent as a trailing HEADERS frame).
///
/// ```
/// chunked-body = *chunk last-chunk trailer-section CRLF
/// chunk        = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
/// last-chunk   = 1*("0") [ chunk-ext ] CRLF
/// ```
struct BackendResponseReader {
    enum Event: Equatable {
        /// A final response head, how its body is delimited, whether the backend keeps
        /// the connection open after it, and the head's bytes as received.
        case head(HTTP1ResponseHead, HTTPBodyFraming, keepAlive: Bool, raw: ByteBuffer)
        /// Body bytes (chunk framing included unless `decodeChunks`).
        case body(ByteBuffer)
        /// The response is complete; `bodyBytes` of data (framing excluded) were in it.
        case end(bodyBytes: Int)
        /// More bytes are needed (from `next`; never handed to a `BackendDelegate`). A case
        /// rather than an `Optional<Event>`: the optional was copied and destroyed through
        /// the runtime's generic value witnesses (`$sSqwxx`, `EventOwcp`), about 400
        /// instructions per response.
        case needMore
    }

    /// The request's method (HEAD responses have no body) and whether chunked bodies are
    /// decoded; set for every request before its response arrives.
    var requestMethod = "GET"
    var decodeChunks = false
    /// Whether the client needs the response head's fields (`HTTP1ResponseHead.headers`):
    /// false when the head is relayed as received (an HTTP/1.1 client, no response modifiers).
    /// Then a usual head (see `framing(raw:status:version:requestMethod:)`) is checked but its
    /// fields are not kept, and the event's head has none: no `String` per field name and
    /// value of every response. Any other head is parsed with its fields.
    var keepsFields = true

    private enum State: Equatable {
        case head
        case length(remaining: Int)
        case chunked(Chunk)
        case untilClose
        /// The body is complete: `.end` is next.
        case ending
    }

    private typealias Chunk = ChunkedFraming


    private var state = State.head
    private var bodyBytes = 0
    private var framingBytes = 0
    /// The trailer section of the current chunked body as received (`decodeChunks` only).
    private var trailerSection: [UInt8] = []

    /// Whether a response is being read (between its first byte and its end).
    var inResponse: Bool { state != .head }

    /// The next event from `buffer` (consumed as far as it was used), `.needMore` when more
    /// bytes are needed. Throws on a malformed response: the connection cannot be used any more.
    mutating func next(_ buffer: inout ByteBuffer) throws(WireError) -> Event {
        while true {
            switch state {
            case .head:
                guard buffer.readableBytes > 0 else { return .needMore }
                switch HTTP1ResponseHead.parse(buffer.readableBytesView, limits: BackendWire.responseLimits, keepFields: keepsFields) {
                case .needMore: return .needMore
                case .invalid(let error): throw error
                case .done(var head, let consumed):
                    let raw = buffer.readSlice(length: consumed)!
                    if head.isInterim { continue }
                    var framing: HTTPBodyFraming, keepAlive: Bool
                    if !keepsFields, let usual = Self.framing(raw: raw, status: head.status, version: head.version, requestMethod: requestMethod) {
                        (framing, keepAlive) = usual
                    } else {
                        if !keepsFields, case .done(let whole, _) = HTTP1ResponseHead.parse(raw.readableBytesView, limits: BackendWire.responseLimits) {
                            head = whole
                        }
                        (framing, keepAlive) = try Self.framing(head, requestMethod: requestMethod)
                    }
                    if framing == .tunnel { framing = .untilClose }
                    if framing == .untilClose { keepAlive = false }
                    bodyBytes = 0
                    switch framing {
                    case .none: state = .ending
                    case .contentLength(let length): state = length == 0 ? .ending : .length(remaining: length)
                    case .chunked: state = .chunked(.size(digits: 0, value: 0))
                    case .untilClose, .tunnel: state = .untilClose
                    }
                    return .head(head, framing, keepAlive: keepAlive, raw: raw)
                }
            case .ending:
                state = .head
                return .end(bodyBytes: bodyBytes)
            case .length(let remaining):
                guard buffer.readableBytes > 0 else { return .needMore }
                let count = min(remaining, buffer.readableBytes)
                bodyBytes += count
                state = count == remaining ? .ending : .length(remaining: remaining - count)
                return .body(buffer.readSlice(length: count)!)
            case .untilClose:
                guard buffer.readableBytes > 0 else { return .needMore }
                bodyBytes += buffer.readableBytes
                return .body(buffer.readSlice(length: buffer.readableBytes)!)
            case .chunked(let chunk):
                guard buffer.readableBytes > 0 else { return .needMore }
                if decodeChunks {
                    if case .data(let remaining) = chunk {
                        let count = min(remaining, buffer.readableBytes)
                        bodyBytes += count
                        state = .chunked(count == remaining ? .dataCR : .data(remaining: remaining - count))
                        return .body(buffer.readSlice(length: count)!)
                    }
                    // Framing bytes up to the next data (or the end) are consumed unseen.
                    let before = framingBytes
                    let (used, next) = try Self.scan(chunk, buffer, stopAtData: true, framing: &framingBytes, data: &bodyBytes)
                    keepTrailer(buffer, used: used, from: chunk, before: before, to: next)
                    buffer.moveReaderIndex(forwardBy: used)
                    state = next
                } else {
                    // Framing and data alike pass through, up to the body's end.
                    let (used, next) = try Self.scan(chunk, buffer, stopAtData: false, framing: &framingBytes, data: &bodyBytes)
                    state = next
                    if used > 0 { return .body(buffer.readSlice(length: used)!) }
                }
            }
        }
    }

    /// Copies the trailer bytes among the `used` bytes a decoding scan consumed from `buffer`:
    /// the last `framingBytes` of them (the count restarts at the last chunk's line end) when
    /// the scan entered the trailer section, the growth of that count when it was already in it.
    private mutating func keepTrailer(_ buffer: ByteBuffer, used: Int, from start: Chunk, before: Int, to next: State) {
        let inTrailer: (Chunk) -> Bool = { chunk in
            switch chunk {
            case .trailerLineStart, .trailerLine, .trailerLF: true
            default: false
            }
        }
        let reached: Bool
        switch next {
        case .ending: reached = true
        case .chunked(let chunk): reached = inTrailer(chunk)
        default: reached = false
        }
        guard reached else { return }
        let count = min(used, inTrailer(start) ? framingBytes - before : framingBytes)
        guard count > 0, let bytes = buffer.getBytes(at: buffer.readerIndex + used - count, length: count) else { return }
        trailerSection += bytes
    }

    /// The trailer fields of the chunked body that just ended (`decodeChunks`), nil when it had
    /// none; the kept section is cleared. Fields that may not travel in trailers
    /// (`BackendWire.trailerAllowed`) are left out.
    mutating func takeTrailers() -> HTTPHeaders? {
        guard !trailerSection.isEmpty else { return nil }
        defer { trailerSection = [] }
        return BackendWire.trailerFields(trailerSection)
    }

    /// `head.bodyFraming(requestMethod:)` and `head.keepsConnection`, computed in one pass
    /// without allocating for the usual heads (at most one Content-Length value, Transfer-Encoding
    /// `chunked`, Connection `close` or `keep-alive`); any other head, and 101 or CONNECT, is
    /// left to those (which build lists of values and tokens: measurable once per response).
    static func framing(_ head: HTTP1ResponseHead, requestMethod: String) throws(WireError) -> (HTTPBodyFraming, keepAlive: Bool) {
        var length: Int?
        var chunked = false
        var close = false
        var keepAliveToken = false
        var usual = head.status != 101 && requestMethod != "CONNECT"
        // By index: `for field in` copies each field out of the array (a retain of its name
        // and of its value, about 11 per response).
        let fields = head.headers
        for index in fields.indices where usual {
            if HopByHop.named(fields[index].name, "content-length") {
                guard length == nil, let value = decimal(fields[index].value) else {
                    usual = false
                    break
                }
                length = value
            } else if HopByHop.isTransferEncoding(fields[index].name) {
                guard !chunked, HopByHop.named(fields[index].value, "chunked") else {
                    usual = false
                    break
                }
                chunked = true
            } else if HopByHop.named(fields[index].name, "connection") {
                if HopByHop.named(fields[index].value, "close") {
                    close = true
                } else if HopByHop.named(fields[index].value, "keep-alive") {
                    keepAliveToken = true
                } else {
                    usual = false
                }
            }
        }
        guard usual, !(chunked && length != nil) else {
            return (try head.bodyFraming(requestMethod: requestMethod), head.keepsConnection)
        }
        return usualFraming(length: length, chunked: chunked, close: close, keepAliveToken: keepAliveToken, head.status, head.version, requestMethod)
    }

    /// `framing(_:requestMethod:)` read from a head's bytes as received (`HTTP1ResponseHead.parse`
    /// checked them: every field line has a token name and a colon), for a head parsed without
    /// its fields; nil for a head that is not a usual one (the caller parses its fields then).
    static func framing(raw: ByteBuffer, status: Int, version: HTTPVersion, requestMethod: String) -> (HTTPBodyFraming, keepAlive: Bool)? {
        guard status != 101, requestMethod != "CONNECT" else { return nil }
        var length: Int?
        var chunked = false
        var close = false
        var keepAliveToken = false
        let usual: Bool = raw.withUnsafeReadableBytes { raw in
            let bytes = raw.bindMemory(to: UInt8.self)
            // The status line is skipped; each field line is `name:` OWS value OWS CRLF.
            guard var start = byteIndex(UInt8(ascii: "\n"), in: raw, from: 0).map({ $0 + 1 }) else { return false }
            while start < bytes.count {
                let lineEnd = byteIndex(UInt8(ascii: "\n"), in: raw, from: start) ?? bytes.count
                var end = lineEnd
                if end > start, bytes[end - 1] == UInt8(ascii: "\r") { end -= 1 }
                if end == start { break }
                defer { start = lineEnd + 1 }
                // Only `Content-Length`, `Transfer-Encoding` and `Connection` count: other lines
                // are passed over by their first byte, and a value is trimmed only for these.
                let initial = bytes[start] | 0x20
                guard initial == UInt8(ascii: "c") || initial == UInt8(ascii: "t") else { continue }
                guard let colon = byteIndex(UInt8(ascii: ":"), in: raw, from: start, to: end) else { return false }
                let name = UnsafeBufferPointer(rebasing: bytes[start..<colon])
                guard name.count == 10 || name.count == 14 || name.count == 17 else { continue }
                var first = colon + 1, last = end
                while first < last, bytes[first] == 0x20 || bytes[first] == 0x09 { first += 1 }
                while last > first, bytes[last - 1] == 0x20 || bytes[last - 1] == 0x09 { last -= 1 }
                let value = UnsafeBufferPointer(rebasing: bytes[first..<last])
                if HopByHop.equal(name, "content-length") {
                    guard length == nil, let number = decimal(value) else { return false }
                    length = number
                } else if HopByHop.isTransferEncoding(bytes: name) {
                    guard !chunked, HopByHop.equal(value, "chunked") else { return false }
                    chunked = true
                } else if HopByHop.equal(name, "connection") {
                    if HopByHop.equal(value, "close") {
                        close = true
                    } else if HopByHop.equal(value, "keep-alive") {
                        keepAliveToken = true
                    } else {
                        return false
                    }
                }
            }
            return true
        }
        guard usual, !(chunked && length != nil) else { return nil }
        return usualFraming(length: length, chunked: chunked, close: close, keepAliveToken: keepAliveToken, status, version, requestMethod)
    }

    /// The framing of a usual head from what its fields said (at most one `Content-Length`,
    /// `Transfer-Encoding: chunked`, `Connection: close` or `keep-alive`; not both framings).
    private static func usualFraming(
        length: Int?, chunked: Bool, close: Bool, keepAliveToken: Bool, _ status: Int, _ version: HTTPVersion, _ requestMethod: String
    ) -> (HTTPBodyFraming, keepAlive: Bool) {
        let keepAlive = !close && (version == .http1_1 || keepAliveToken)
        if requestMethod == "HEAD" || status < 200 || status == 204 || status == 304 { return (.none, keepAlive) }
        if chunked { return (.chunked, keepAlive) }
        guard let length else { return (.untilClose, keepAlive) }
        return (length == 0 ? .none : .contentLength(length), keepAlive)
    }

    /// A Content-Length value of 1–18 digits, nil for anything else.
    private static func decimal(_ text: String) -> Int? {
        utf8Bytes(of: text) { decimal($0) }
    }

    private static func decimal(_ bytes: UnsafeBufferPointer<UInt8>) -> Int? {
        guard !bytes.isEmpty, bytes.count <= 18 else { return nil }
        var value = 0
        for byte in bytes {
            guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") else { return nil }
            value = value * 10 + Int(byte - UInt8(ascii: "0"))
        }
        return value
    }

    /// The backend closed the connection: `.end` when that ends the body (read until close),
    /// nil otherwise (a response cut short when `inResponse`).
    mutating func closed() -> Event? {
        guard state == .untilClose else { return nil }
        state = .head
        return .end(bodyBytes: bodyBytes)
    }

    /// Steps the chunked-body machine over `buffer` from its reader index: returns the bytes
    /// used and the state after them. Stops at the end of the bytes, at the body's end
    /// (`.ending`), or — `stopAtData` — where chunk data begins. Data is skipped in O(1).
    private static func scan(
        _ start: Chunk, _ buffer: ByteBuffer, stopAtData: Bool, framing: inout Int, data: inout Int
    ) throws(WireError) -> (Int, State) {
        var chunk = start
        let result: Result<(Int, State), WireError> = buffer.withUnsafeReadableBytes { bytes in
            var index = 0
            func fail(_ message: String) -> Result<(Int, State), WireError> { .failure(WireError(.badFraming, "chunked response body: " + message)) }
            while index < bytes.count {
                if case .data(let remaining) = chunk {
                    if stopAtData { return .success((index, .chunked(chunk))) }
                    let count = min(remaining, bytes.count - index)
                    index += count
                    data += count
                    chunk = count == remaining ? .dataCR : .data(remaining: remaining - count)
                    continue
                }
                let byte = bytes[index]
                index += 1
                framing += 1
                switch chunk.advance(over: byte) {
                case .invalid(let message): return fail(message)
                case .sizeLineEnded: framing = 0
                case .bodyEnded: return .success((index, .ending))
                case .next:
                    // A chunk's data and its CRLF ended: the count restarts for the next size
                    // line, as in `HTTPChunkedScanner`.
                    if chunk == Chunk.start { framing = 0 }
                }
                switch chunk {
                case .trailerLineStart, .trailerLine, .trailerLF:
                    if framing > Chunk.maxTrailerBytes { return fail("trailer section longer than \(Chunk.maxTrailerBytes) bytes") }
                default:
                    if framing > Chunk.maxLineBytes { return fail("chunk size line longer than \(Chunk.maxLineBytes) bytes") }
                }
            }
            return .success((index, .chunked(chunk)))
        }
        return try result.get()
    }
}
