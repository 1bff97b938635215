/// The head of an HTTP/1 response (status line and header section), RFC 9112 §4:
/// <https://www.rfc-editor.org/rfc/rfc9112#section-4>
///
/// ```
/// status-line = HTTP-version SP status-code SP [ reason-phrase ]
/// ```
///
/// A proxy that keeps client connections alive reads each upstream response head with this
/// parser and relays the body by its `bodyFraming(requestMethod:)`. Field rules and limits
/// are those of `HTTPRequestHead`; a missing `SP reason-phrase` after the code is tolerated.
/// Errors in a response are the upstream's fault: answer the client with 502.
public struct HTTP1ResponseHead: HTTPHeaderLookup, Hashable, Sendable {
    public var version: HTTPVersion
    /// The three-digit status code, 100…599.
    public var status: Int
    public var reason: String
    /// Header fields in the order received.
    public var headers: [HTTPField]

    public init(version: HTTPVersion = .http1_1, status: Int, reason: String, headers: [HTTPField]) {
        self.version = version
        self.status = status
        self.reason = reason
        self.headers = headers
    }

    /// Parses a response head from the front of `bytes`; the body starts after `consumed`.
    /// `keepFields: false`: every field line is checked, none is kept (`headers` is empty).
    public static func parse(
        _ bytes: some Collection<UInt8>, limits: HTTPHeadLimits = HTTPHeadLimits(), keepFields: Bool = true
    ) -> ParseResult<HTTP1ResponseHead> {
        withContiguousBytes(bytes) { buffer in
            let scanner = HTTPHeadScanner(buffer: buffer, limits: limits)
            let startLine = HTTPHeadScanner.StartLine(
                name: "status line", badCode: .badStatusLine, tooLongCode: .headTooLarge, skipsLeadingEmptyLines: false)
            switch scanner.scan(startLine, keepFields: keepFields, check: scanner.checkStatusLine) {
            case .needMore: return .needMore
            case .invalid(let error): return .invalid(error)
            case .done(let scanned, let consumed):
                let (version, status, reason) = scanned.start
                guard version.major == 1, version.minor <= 1 else {
                    return .invalid(WireError(.httpVersionNotSupported, "HTTP response version \(version) not supported (1.0 and 1.1 are)"))
                }
                return .done(HTTP1ResponseHead(version: version, status: status, reason: reason, headers: scanned.headers), consumed: consumed)
            }
        }
    }

    /// True for 1xx responses other than 101: an interim head (100 Continue, 103 Early
    /// Hints) after which the final response head follows on the same connection.
    public var isInterim: Bool { status >= 100 && status < 200 && status != 101 }

    /// How the body after this head is delimited, RFC 9112 §6.3, given the request's method:
    /// HEAD, 1xx, 204 and 304 have none; 101 and a 2xx to CONNECT turn the connection into a
    /// tunnel; then Transfer-Encoding (chunked last → `.chunked`, otherwise `.untilClose`),
    /// then Content-Length, else `.untilClose`. Transfer-Encoding with Content-Length and
    /// malformed or conflicting Content-Length values are errors (§6.3: "ought to be
    /// handled as an error" — they are the response-splitting lever).
    public func bodyFraming(requestMethod: String) throws(WireError) -> HTTPBodyFraming {
        if status == 101 { return .tunnel }
        if requestMethod == "CONNECT" && status >= 200 && status < 300 { return .tunnel }
        if requestMethod == "HEAD" || status < 200 || status == 204 || status == 304 { return .none }
        switch declaredFraming("response") {
        case .failure(let error): throw error
        case .success(nil): return .untilClose
        case .success(let framing?):
            if framing == .none && values("content-length").isEmpty { return .untilClose }
            return framing
        }
    }

    /// The head to relay to the client (RFC 9110 §7.6.1): the status line with the client's
    /// HTTP version, every field except the hop-by-hop ones (Connection, Keep-Alive,
    /// Proxy-Connection, Proxy-Authenticate, TE, Trailer, Upgrade and every field named in
    /// Connection — Content-Length and Transfer-Encoding stay, the body keeps its framing),
    /// then the proxy's own `Connection: close` (when it will close the client connection) or,
    /// for an HTTP/1.0 client it keeps, `Connection: keep-alive`.
    public func forwardHead(clientVersion: HTTPVersion, close: Bool) -> [UInt8] {
        let drop = HTTPRequestHead.hopByHopFields
            .union(Set(tokens("connection")).subtracting(HTTPRequestHead.protectedFields))
        var out: [UInt8] = []
        func line(_ parts: String...) {
            for part in parts { out += part.utf8 }
            out += [UInt8(ascii: "\r"), UInt8(ascii: "\n")]
        }
        line(clientVersion.description, " ", String(status), " ", reason)
        for field in headers where !drop.contains(field.name.lowercased()) {
            line(field.name, ": ", field.value)
        }
        if close {
            line("Connection: close")
        } else if clientVersion == .http1_0 {
            line("Connection: keep-alive")
        }
        line()
        return out
    }

    /// Whether the upstream keeps the connection open after this response (RFC 9112 §9.3).
    public var keepsConnection: Bool {
        let connection = tokens("connection")
        if connection.contains("close") { return false }
        return version == .http1_1 || connection.contains("keep-alive")
    }
}

extension HTTPHeadScanner {
    /// Checks `HTTP/d.d SP 3DIGIT [SP reason-phrase]` over `range`.
    func checkStatusLine(_ range: Range<Int>, complete: Bool) -> ParseResult<(HTTPVersion, Int, String)> {
        let end = range.upperBound
        let version: HTTPVersion
        switch checkVersion(at: range.lowerBound, end: end, mustEnd: false, complete: complete, code: .badStatusLine) {
        case .needMore: return .needMore
        case .invalid(let error): return .invalid(error)
        case .done(let found, _): version = found
        }
        var index = range.lowerBound + 8
        func incomplete() -> ParseResult<(HTTPVersion, Int, String)> {
            complete ? .invalid(WireError(.badStatusLine, "HTTP status line ends before its status code")) : .needMore
        }
        guard index < end else { return incomplete() }
        guard buffer[index] == UInt8(ascii: " ") else {
            return .invalid(WireError(.badStatusLine, "HTTP version is followed by byte \(hex(buffer[index])), expected a space"))
        }
        index += 1
        var status = 0
        for _ in 0..<3 {
            guard index < end else { return incomplete() }
            let byte = buffer[index]
            guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") else {
                return .invalid(WireError(.badStatusLine, "HTTP status code has byte \(hex(byte)), expected a digit"))
            }
            status = status * 10 + Int(byte - UInt8(ascii: "0"))
            index += 1
        }
        guard status >= 100 && status <= 599 else {
            return .invalid(WireError(.badStatusLine, "HTTP status code \(status) is outside 100…599"))
        }
        guard index < end else {
            return complete ? .done((version, status, ""), consumed: index - range.lowerBound) : .needMore
        }
        guard buffer[index] == UInt8(ascii: " ") else {
            return .invalid(WireError(.badStatusLine, "HTTP status code is followed by byte \(hex(buffer[index])), expected a space"))
        }
        if let bad = Self.controlByte(in: buffer, (index + 1)..<end) {
            return .invalid(WireError(.badStatusLine, "HTTP reason phrase contains control byte \(hex(buffer[bad]))"))
        }
        // The usual reason is the literal (no UTF-8 check, no string built per response).
        let reason = end - index == 3 && buffer[index + 1] == UInt8(ascii: "O") && buffer[index + 2] == UInt8(ascii: "K") ? "OK" : text(index + 1, end)
        return .done((version, status, reason), consumed: end - range.lowerBound)
    }
}
