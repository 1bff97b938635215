import NIOCore
import NIOHTTP1

/// Decodes the requests of one HTTP/1.1 client connection from its bytes (RFC 9112 §2–§7):
/// heads, then bodies by their framing, in order. A pure state machine (bytes in, parts out),
/// pulled by `HTTP1RouteHandler` one part at a time, so a pipelined request simply stays in
/// the buffer until the response before it has ended.
///
/// Hand-written for the hot path instead of NIO's `HTTPRequestDecoder` (llhttp behind a
/// `ByteToMessageHandler`, plus NIO's upgrade handler in front of the route handler): that
/// cost two pipeline hops and a callback-driven parse per request, about 7 % of the gateway's
/// CPU time on HTTP/1.1. The head is scanned by the Gate's strict `HTTPHeadScanner` (the
/// capture proxy's parser); framing, `Host` and the route-table view come from one pass over
/// its fields.
///
/// ```
/// HTTP-message   = start-line CRLF *( field-line CRLF ) CRLF [ message-body ]
/// request-line   = method SP request-target SP HTTP-version
/// field-line     = field-name ":" OWS field-value OWS
/// chunked-body   = *chunk last-chunk trailer-section CRLF
/// chunk          = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
/// last-chunk     = 1*("0") [ chunk-ext ] CRLF
/// ```
///
/// Strict where two parsers could disagree about where a request ends (request smuggling):
/// bare CR, obs-fold, whitespace before the colon, control bytes in names or values, both
/// `Transfer-Encoding` and `Content-Length`, a `Transfer-Encoding` whose final coding is not
/// `chunked` (or that names `chunked` twice, or comes with HTTP/1.0), conflicting or
/// non-decimal `Content-Length`s, a missing or repeated `Host` on HTTP/1.1, and chunked bodies
/// whose lines do not end in CRLF are refused (400); a head over 16 KiB or 100 fields is 431.
/// Empty lines before a request line are skipped (RFC 9112 §2.2).
struct HTTP1RequestDecoder {
    /// One decoded request part.
    enum Part {
        /// A request head with its route-table view (fields and `Host` collected in the same
        /// pass) and whether a body follows.
        case head(HTTP1Request, RouteRequest, hasBody: Bool)
        case body(ByteBuffer)
        /// The request is complete; the trailer fields of a chunked body, if it had any.
        case end(HTTPHeaders?)
    }

    /// Why the bytes are not a request: answered with `status` (400 or 431) and closed.
    struct Malformed: Error, Equatable, CustomStringConvertible {
        var status: Int
        var message: String
        var description: String { "\(status): \(message)" }
    }

    private enum State: Equatable {
        case head
        case length(remaining: Int)
        case chunked(Chunk)
        /// The body is complete: `.end` is next.
        case ending
        /// Nothing more is decoded (after an upgrade, or an error).
        case stopped
    }

    private typealias Chunk = ChunkedFraming


    let limits: HTTPHeadLimits
    private var input: ByteBuffer?
    private var state = State.head
    /// How far the current head's bytes were searched for its end (an empty line) without
    /// finding it: a head arriving in pieces is not rescanned from its start for every piece.
    private var searched = 0
    /// Whether the current head was scanned at least once (garbage is refused at once).
    private var scannedOnce = false
    /// Framing bytes of the current chunk line or trailer section (bounded).
    private var lineBytes = 0
    private var trailerSection: [UInt8] = []
    /// The previous head's fields, into which the next head is scanned: their strings are
    /// kept where the next head repeats them byte for byte, and the array is reused
    /// (`HTTPHeadScanner.scan(_:keepFields:fields:check:)`; it is uniquely referenced again once
    /// the previous request's exchange has ended).
    private var fields: [HTTPField] = []
    /// The previous head's method and target, reused the same way.
    private var previousStart = (method: "", target: "")
    /// The previous head's method parsed (`HTTPMethod(rawValue:)` matches the text against
    /// every method name: about 40 instructions per request), kept while the text repeats.
    private var previousMethod = (text: "GET", parsed: HTTPMethod.GET)
    /// The previous head's `Host` value and what the route view made of it (name, port):
    /// the same value is not split and checked again.
    private var previousHost = (field: "", authority: RouteRequest.Authority(name: "", port: nil))

    init(limits: HTTPHeadLimits = HTTPHeadLimits()) {
        self.limits = limits
    }

    /// Appends bytes read from the connection.
    mutating func feed(_ bytes: ByteBuffer) {
        guard bytes.readableBytes > 0 else { return }
        if input == nil || input!.readableBytes == 0 {
            input = bytes
        } else {
            var bytes = bytes
            input!.writeBuffer(&bytes)
        }
    }

    /// Bytes received and not decoded yet.
    var bufferedBytes: Int { input?.readableBytes ?? 0 }

    /// Whether the next part is a request head (the previous request has been decoded whole).
    var atHead: Bool { state == .head }

    /// Stops and hands out the bytes not decoded (the new protocol's, after an upgrade).
    mutating func takeRemaining() -> ByteBuffer? {
        state = .stopped
        defer { input = nil }
        return input.flatMap { $0.readableBytes > 0 ? $0 : nil }
    }

    /// The next part, nil when more bytes are needed (or decoding stopped). Throws on bytes
    /// that are not a valid request; decoding stops then.
    mutating func next() throws(Malformed) -> Part? {
        do {
            return try step()
        } catch {
            state = .stopped
            input = nil
            throw error
        }
    }

    private mutating func step() throws(Malformed) -> Part? {
        // A read buffer used up is let go at once: SwiftNIO reuses its pooled receive buffer
        // only when nothing else holds it.
        defer { if input?.readableBytes == 0 { input = nil } }
        while true {
            switch state {
            case .stopped:
                return nil
            case .ending:
                state = .head
                let trailers = trailerSection.isEmpty ? nil : try Self.trailerFields(trailerSection)
                trailerSection = []
                return .end(trailers)
            case .head:
                guard input != nil, input!.readableBytes > 0 else { return nil }
                return try head()
            case .length(let remaining):
                guard input != nil, input!.readableBytes > 0 else { return nil }
                let count = min(remaining, input!.readableBytes)
                state = count == remaining ? .ending : .length(remaining: remaining - count)
                return .body(input!.readSlice(length: count)!)
            case .chunked(let chunk):
                guard input != nil, input!.readableBytes > 0 else { return nil }
                if case .data(let remaining) = chunk {
                    let count = min(remaining, input!.readableBytes)
                    state = .chunked(count == remaining ? .dataCR : .data(remaining: remaining - count))
                    return .body(input!.readSlice(length: count)!)
                }
                try chunkFraming(chunk)
            }
        }
    }

    // MARK: Head

    /// Whether the unsearched bytes of the buffered head hold its end (LF, optional CR, LF);
    /// `searched` moves to the end of the bytes when they do not.
    private static func headEndFound(_ bytes: UnsafeBufferPointer<UInt8>, searched: inout Int) -> Bool {
        var index = max(searched - 2, 0)
        while index + 1 < bytes.count {
            if bytes[index] == 0x0A, bytes[index + 1] == 0x0A || (bytes[index + 1] == 0x0D && index + 2 < bytes.count && bytes[index + 2] == 0x0A) {
                return true
            }
            index += 1
        }
        searched = bytes.count
        return false
    }

    private mutating func head() throws(Malformed) -> Part? {
        let limits = limits
        let first = !scannedOnce
        var searchedSoFar = searched
        let buffer = input!
        let previousStart = previousStart
        // The scan's findings are moved out of its result inside the closure: a result handed
        // out of the closure and bound there (`case .done(let found, _)?`) was copied whole
        // through the runtime's generic value witnesses (`tuple_initializeWithCopy`: a retain
        // per string and of the field array, about 4 per request, on the slow generic path).
        var method = ""
        var target = ""
        var version = HTTPVersion.http1_1
        var consumed = 0
        var failure: WireError?
        let complete: Bool = buffer.withUnsafeReadableBytes { raw in
            let bytes = raw.bindMemory(to: UInt8.self)
            // A head arriving in pieces is scanned again only once its end (or the size
            // limit) is there; the first piece is scanned at once so garbage is refused early.
            guard first || bytes.count >= limits.maxHeadBytes || Self.headEndFound(bytes, searched: &searchedSoFar) else { return false }
            let scanner = HTTPHeadScanner(buffer: bytes, limits: limits)
            let startLine = HTTPHeadScanner.StartLine(
                name: "request line", badCode: .badRequestLine, tooLongCode: .requestLineTooLong, skipsLeadingEmptyLines: true)
            switch scanner.scan(startLine, keepFields: true, fields: &fields, check: { scanner.checkRequestLine($0, complete: $1, previous: previousStart) }) {
            case .needMore:
                return false
            case .invalid(let error):
                failure = error
                return false
            case .done(let found, let used):
                (method, target, version) = found
                consumed = used
                return true
            }
        }
        searched = searchedSoFar
        scannedOnce = true
        if let failure {
            switch failure.code {
            case .headTooLarge, .tooManyHeaders, .requestLineTooLong: throw Malformed(status: 431, message: failure.message)
            default: throw Malformed(status: 400, message: failure.message)
            }
        }
        guard complete else { return nil }
        input!.moveReaderIndex(forwardBy: consumed)
        searched = 0
        scannedOnce = false
        self.previousStart = (method, target)
        return try begin(method: method, target: target, version: version, fields: fields, size: consumed)
    }

    /// Checks a scanned head's framing and `Host` in one pass over its fields (noting what
    /// `Exchange` and the handler ask later: keep-alive, `Expect`, upgrades), sets the body
    /// state and builds the head and its route-table view.
    private mutating func begin(method: String, target: String, version: HTTPVersion, fields: [HTTPField], size: Int) throws(Malformed) -> Part {
        guard version.major == 1, version.minor <= 1 else {
            throw Malformed(status: 400, message: "HTTP version \(version) not supported (1.0 and 1.1 are)")
        }
        var host: String?
        var hosts = 0
        var length: Int?
        var codings = 0
        var chunkedLast = false
        var chunkedEarlier = false
        var lengthText: String?
        var connection = ConnectionTokens()
        var upgrade = false
        var h2c = false
        var http2Settings = false
        var expectsContinue = false
        // By index: `for field in` copied each field out of the array (a retain of its name
        // and value); only the values kept are copied.
        for index in fields.indices {
            switch fields[index].name.utf8.count {
            case 10 where HopByHop.named(fields[index].name, "connection"):
                connection.add(fields[index].value)
            case 7 where HopByHop.named(fields[index].name, "upgrade"):
                upgrade = true
                if !h2c { h2c = Self.tokens(fields[index].value).contains("h2c") }
            case 14 where HopByHop.named(fields[index].name, "http2-settings"):
                http2Settings = true
            case 6 where HopByHop.named(fields[index].name, "expect"):
                if !expectsContinue { expectsContinue = Self.tokens(fields[index].value).contains("100-continue") }
            case 4 where HopByHop.named(fields[index].name, "host"):
                hosts += 1
                if host == nil { host = fields[index].value }
            case 14 where HopByHop.named(fields[index].name, "content-length"):
                let field = fields[index]
                let value = try Self.contentLength(field.value)
                if lengthText == nil { lengthText = field.value }
                if let length, length != value {
                    throw Malformed(status: 400, message: "HTTP request has conflicting Content-Length values \(length) and \(value)")
                }
                length = value
            case 17 where HopByHop.isTransferEncoding(fields[index].name):
                let field = fields[index]
                if HopByHop.named(field.value, "chunked") {
                    if chunkedLast { chunkedEarlier = true }
                    codings += 1
                    chunkedLast = true
                    continue
                }
                for token in field.value.split(separator: ",", omittingEmptySubsequences: false) {
                    let coding = token.trimmingOWS().lowercased()
                    guard !coding.isEmpty else { throw Malformed(status: 400, message: "HTTP request Transfer-Encoding has an empty coding") }
                    if chunkedLast { chunkedEarlier = true }
                    codings += 1
                    chunkedLast = coding == "chunked"
                }
            default:
                break
            }
        }
        if version.minor == 1 && hosts != 1 {
            throw Malformed(status: 400, message: hosts == 0 ? "HTTP/1.1 request without a Host header" : "HTTP/1.1 request with \(hosts) Host headers")
        }
        if hosts > 1 { throw Malformed(status: 400, message: "HTTP request with \(hosts) Host headers") }
        if codings > 0 {
            guard length == nil else { throw Malformed(status: 400, message: "HTTP request has both Transfer-Encoding and Content-Length") }
            guard version.minor == 1 else { throw Malformed(status: 400, message: "HTTP/1.0 request with Transfer-Encoding") }
            guard chunkedLast, !chunkedEarlier else {
                throw Malformed(status: 400, message: "HTTP request Transfer-Encoding does not end with chunked (exactly once)")
            }
            state = .chunked(ChunkedFraming.start)
            lineBytes = 0
        } else if let length, length > 0 {
            state = .length(remaining: length)
        } else {
            state = .ending
        }
        if method != previousMethod.text { previousMethod = (method, HTTPMethod(rawValue: method)) }
        let head = HTTP1Request(
            method: previousMethod.parsed, uri: target, version: version, fields: fields, headSize: size,
            isKeepAlive: !connection.close && (version.minor == 1 || connection.keepAlive), contentLength: lengthText,
            hasTransferEncoding: codings > 0, expectsContinue: expectsContinue, hasHost: hosts > 0,
            asksToSwitch: upgrade && connection.upgrade, asksForH2C: h2c && http2Settings && connection.http2Settings,
            hasHTTP2Settings: http2Settings)
        let field = host ?? ""
        if field != previousHost.field { previousHost = (field, RouteRequest.Authority(field)) }
        return .head(head, RouteRequest(method: method, target: target, authority: previousHost.authority, headers: fields), hasBody: state != .ending)
    }

    /// The comma-separated elements of a field value, lower-cased and trimmed (RFC 9110 §5.6.1).
    static func tokens(_ value: String) -> [String] {
        value.split(separator: ",").map { $0.trimmingOWS().lowercased() }.filter { !$0.isEmpty }
    }

    /// The `Connection` options the gateway acts on (RFC 9110 §7.6.1).
    private struct ConnectionTokens {
        var close = false
        var keepAlive = false
        var upgrade = false
        var http2Settings = false

        /// One `Connection` field value; a single usual option is matched without allocating.
        mutating func add(_ value: String) {
            if HopByHop.named(value, "keep-alive") {
                keepAlive = true
            } else if HopByHop.named(value, "close") {
                close = true
            } else {
                for token in HTTP1RequestDecoder.tokens(value) {
                    switch token {
                    case "close": close = true
                    case "keep-alive": keepAlive = true
                    case "upgrade": upgrade = true
                    case "http2-settings": http2Settings = true
                    default: break
                    }
                }
            }
        }
    }

    /// A `Content-Length` value: one decimal number of 1–18 digits, or a list of equal ones
    /// (RFC 9110 §8.6 lets a recipient accept `5, 5`).
    private static func contentLength(_ text: String) throws(Malformed) -> Int {
        var value: Int?
        var current = 0
        var digits = 0
        var ok = true
        func element() -> Bool {
            guard digits > 0, digits <= 18 else { return false }
            if let value, value != current { return false }
            value = current
            current = 0
            digits = 0
            return true
        }
        utf8Bytes(of: text) { bytes in
            var spaceAfter = false
            for byte in bytes where ok {
                switch byte {
                case UInt8(ascii: "0")...UInt8(ascii: "9"):
                    if spaceAfter { ok = false }
                    current = current &* 10 &+ Int(byte - UInt8(ascii: "0"))
                    digits += 1
                case UInt8(ascii: ","):
                    ok = element()
                    spaceAfter = false
                case UInt8(ascii: " "), UInt8(ascii: "\t"):
                    if digits > 0 { spaceAfter = true }
                default:
                    ok = false
                }
            }
            if ok { ok = element() }
        }
        guard ok, let value else { throw Malformed(status: 400, message: "HTTP request Content-Length \"\(text)\" is not a decimal number (or list of equal ones)") }
        return value
    }

    // MARK: Chunked body

    /// Steps over chunk framing (size lines, data CRLFs, the trailer section) up to the next
    /// chunk data or the body's end; trailer bytes are kept for `.end`.
    private mutating func chunkFraming(_ start: Chunk) throws(Malformed) {
        var chunk = start
        var used = 0
        var lineBytes = lineBytes
        var trailer = trailerSection
        trailerSection = []
        var ended = false
        let buffer = input!
        let result: Malformed? = buffer.withUnsafeReadableBytes { raw in
            let bytes = raw.bindMemory(to: UInt8.self)
            while used < bytes.count {
                if case .data = chunk { return nil }
                let byte = bytes[used]
                used += 1
                lineBytes += 1
                let before = chunk
                switch chunk.advance(over: byte) {
                case .invalid(let message): return Malformed(status: 400, message: "chunked request body: " + message)
                case .sizeLineEnded: lineBytes = 0
                case .bodyEnded:
                    ended = true
                    return nil
                case .next: break
                }
                switch before {
                case .trailerLineStart, .trailerLine: if byte != UInt8(ascii: "\r") { trailer.append(byte) }
                case .trailerLF: trailer.append(UInt8(ascii: "\n"))
                case .dataLF: lineBytes = 0
                default: break
                }
                if chunk.inTrailer ? lineBytes > Chunk.maxTrailerBytes : lineBytes > Chunk.maxLineBytes {
                    let what = chunk.inTrailer ? "trailer section longer than \(Chunk.maxTrailerBytes)" : "chunk size line longer than \(Chunk.maxLineBytes)"
                    return Malformed(status: 400, message: "chunked request body: \(what) bytes")
                }
            }
            return nil
        }
        input!.moveReaderIndex(forwardBy: used)
        self.lineBytes = lineBytes
        trailerSection = trailer
        if let result { throw result }
        state = ended ? .ending : .chunked(chunk)
    }

    /// The trailer section's fields (lines separated by LF, CRs removed), each checked like a
    /// head's field line.
    private static func trailerFields(_ section: [UInt8]) throws(Malformed) -> HTTPHeaders {
        var fields: [(String, String)] = []
        let result: Malformed? = section.withUnsafeBufferPointer { bytes in
            let scanner = HTTPHeadScanner(buffer: bytes, limits: HTTPHeadLimits())
            var start = 0
            var number = 1
            while start < bytes.count {
                var end = start
                while end < bytes.count && bytes[end] != 0x0A { end += 1 }
                if bytes[start] == 0x20 || bytes[start] == 0x09 {
                    return Malformed(status: 400, message: "chunked request body: trailer line \(number) starts with whitespace (obs-fold)")
                }
                switch scanner.fieldRanges(start..<end, number: number) {
                case .success(let field):
                    fields.append((scanner.text(field.name.lowerBound, field.name.upperBound), scanner.text(field.value.lowerBound, field.value.upperBound)))
                case .failure(let error): return Malformed(status: 400, message: "chunked request body trailer: \(error.message)")
                }
                start = end + 1
                number += 1
            }
            return nil
        }
        if let result { throw result }
        return HTTPHeaders(fields)
    }
}

/// A request head as `HTTP1RequestDecoder` hands it on: the fields as received (the array the
/// route-table view holds too) and what `Exchange` and `HTTP1RouteHandler` ask of them, found in
/// the decoder's one pass — no `HTTPHeaders` or NIO `HTTPRequestHead` per request.
struct HTTP1Request: ExchangeHead {
    var method: HTTPMethod
    var uri: String
    var version: HTTPVersion
    var fields: [HTTPField]
    /// The head's bytes as received.
    var headSize: Int
    var isKeepAlive: Bool
    var contentLength: String?
    var hasTransferEncoding: Bool
    var expectsContinue: Bool
    var hasHost: Bool
    /// `Upgrade` and an `upgrade` option in `Connection` (RFC 9110 §7.8).
    var asksToSwitch: Bool
    /// `h2c` among the `Upgrade` protocols, an `HTTP2-Settings` field and that name among the
    /// `Connection` options — what NIO's upgrade handler required.
    var asksForH2C: Bool
    var hasHTTP2Settings: Bool

    var isHTTP11: Bool { version.minor == 1 }
    var fieldCount: Int { fields.count }
    var h2cSettingsProblem: String? { hasHTTP2Settings ? H2CUpgrader.settingsProblem(nioHead.headers) : nil }

    /// NIO's form of the head, for the rare paths that need one (the h2c upgrade).
    var nioHead: NIOHTTP1.HTTPRequestHead {
        NIOHTTP1.HTTPRequestHead(
            version: NIOHTTP1.HTTPVersion(major: version.major, minor: version.minor), method: method, uri: uri,
            headers: HTTPHeaders(fields.map { ($0.name, $0.value) }))
    }
}
