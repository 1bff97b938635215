/// How the body of a message is delimited (RFC 9112 §6.3).
public enum HTTPBodyFraming: Hashable, Sendable {
    /// No body.
    case none
    /// Exactly this many bytes follow the head.
    case contentLength(Int)
    /// Chunked transfer coding: the body ends with the last chunk and trailer section
    /// (`HTTPChunkedScanner` finds that end).
    case chunked
    /// The body runs until the server closes the connection (responses only).
    case untilClose
    /// The connection becomes a tunnel after the head (2xx to CONNECT, 101 Switching Protocols).
    case tunnel
}

/// The head of an HTTP/1 request (request line and header section), RFC 9112 §2–§5:
/// <https://www.rfc-editor.org/rfc/rfc9112#section-2>
///
/// ```
/// HTTP-message = start-line CRLF *( field-line CRLF ) CRLF [ message-body ]
/// request-line = method SP request-target SP HTTP-version
/// field-line   = field-name ":" OWS field-value OWS
/// ```
///
/// The parser is strict where leniency lets two parsers disagree about a message (request
/// smuggling): whitespace before the colon, obs-fold, bare CR, control characters, conflicting
/// Content-Length / Transfer-Encoding and a missing or repeated Host on HTTP/1.1 are errors.
/// It accepts a bare LF as line terminator (RFC 9112 §2.2 allows this) and ignores empty lines
/// before the request line. Field values that are not UTF-8 (obs-text) are decoded with
/// U+FFFD replacement.
public struct HTTPRequestHead: HTTPHeaderLookup, Hashable, Sendable {
    /// Size bounds for a request head.
    public typealias Limits = HTTPHeadLimits

    public var method: String
    /// The request-target exactly as sent (origin, absolute, authority or asterisk form).
    public var target: String
    public var version: HTTPVersion
    /// Header fields in the order received.
    public var headers: [HTTPField]
    /// How the body that follows the head is delimited: `.none`, `.contentLength` or `.chunked`.
    public var bodyFraming: HTTPBodyFraming

    public init(method: String, target: String, version: HTTPVersion = .http1_1, headers: [HTTPField], bodyFraming: HTTPBodyFraming = .none) {
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers
        self.bodyFraming = bodyFraming
    }

    /// Whether the client asked to keep the connection open after this request
    /// (RFC 9112 §9.3: HTTP/1.1 unless `Connection: close`; HTTP/1.0 only with `keep-alive`).
    public var wantsKeepAlive: Bool {
        let connection = tokens("connection") + tokens("proxy-connection")
        if connection.contains("close") { return false }
        return version == .http1_1 || connection.contains("keep-alive")
    }

    /// Whether an HTTP/1.1 client waits for `100 Continue` before it sends its body
    /// (`Expect: 100-continue`, RFC 9110 §10.1.1).
    public var expectsContinue: Bool {
        version == .http1_1 && values("expect").contains { $0.lowercased() == "100-continue" }
    }

    /// Parses a request head from the front of `bytes`; `consumed` covers the final empty line,
    /// so the body (or pipelined data) starts right after it.
    public static func parse(_ bytes: some Collection<UInt8>, limits: Limits = Limits()) -> ParseResult<HTTPRequestHead> {
        withContiguousBytes(bytes) { buffer in
            let scanner = HTTPHeadScanner(buffer: buffer, limits: limits)
            let startLine = HTTPHeadScanner.StartLine(
                name: "request line", badCode: .badRequestLine, tooLongCode: .requestLineTooLong, skipsLeadingEmptyLines: true)
            switch scanner.scan(startLine, check: { scanner.checkRequestLine($0, complete: $1) }) {
            case .needMore: return .needMore
            case .invalid(let error): return .invalid(error)
            case .done(let scanned, let consumed):
                let (method, target, version) = scanned.start
                guard version.major == 1, version.minor <= 1 else {
                    return .invalid(WireError(.httpVersionNotSupported, "HTTP version \(version) not supported (1.0 and 1.1 are)"))
                }
                var head = HTTPRequestHead(method: method, target: target, version: version, headers: scanned.headers)
                if version == .http1_1 {
                    let hosts = head.values("host").count
                    guard hosts == 1 else {
                        return .invalid(WireError(.missingHost, hosts == 0 ? "HTTP/1.1 request without a Host header" : "HTTP/1.1 request with \(hosts) Host headers"))
                    }
                }
                switch head.declaredFraming("request") {
                case .failure(let error): return .invalid(error)
                case .success(nil):
                    return .invalid(WireError(.badFraming, "HTTP request Transfer-Encoding \"\(head.tokens("transfer-encoding").joined(separator: ", "))\" does not end with chunked"))
                case .success(let framing?): head.bodyFraming = framing
                }
                return .done(head, consumed: consumed)
            }
        }
    }
}

extension HTTPHeadScanner {
    /// Checks `method SP request-target SP HTTP/d.d` over `range`. With `complete: false` the
    /// range is a prefix of the line: running out of bytes is `.needMore`, not an error.
    /// `previous`: the method and target of the connection's previous request, reused when
    /// they repeat (`text(_:reusing:)`).
    func checkRequestLine(_ range: Range<Int>, complete: Bool, previous: (method: String, target: String) = ("", "")) -> ParseResult<(String, String, HTTPVersion)> {
        var index = range.lowerBound
        let end = range.upperBound
        func incomplete(_ what: String) -> ParseResult<(String, String, HTTPVersion)> {
            complete ? .invalid(WireError(.badRequestLine, "HTTP request line ends before its \(what)")) : .needMore
        }

        let methodStart = index
        while index < end && isTokenChar(buffer[index]) { index += 1 }
        guard index < end else { return incomplete("method is followed by a space") }
        guard index > methodStart else {
            return .invalid(WireError(.badRequestLine, "HTTP request line starts with byte \(hex(buffer[index])), not a method token"))
        }
        guard buffer[index] == UInt8(ascii: " ") else {
            return .invalid(WireError(.badRequestLine, "HTTP method is followed by byte \(hex(buffer[index])), expected a space"))
        }
        let method = text(methodStart..<index, reusing: previous.method)
        index += 1

        let targetStart = index
        while index < end && buffer[index] > 0x20 && buffer[index] < 0x7F { index += 1 }
        guard index < end else { return incomplete("request-target is followed by a space") }
        guard index > targetStart else {
            return .invalid(WireError(.badRequestLine, "HTTP request-target is empty or starts with byte \(hex(buffer[index]))"))
        }
        guard buffer[index] == UInt8(ascii: " ") else {
            return .invalid(WireError(.badRequestLine, "HTTP request-target contains byte \(hex(buffer[index]))"))
        }
        let target = text(targetStart..<index, reusing: previous.target)
        index += 1

        return checkVersion(at: index, end: end, mustEnd: true, complete: complete, code: .badRequestLine)
            .map { version in (method, target, version) }
    }
}
