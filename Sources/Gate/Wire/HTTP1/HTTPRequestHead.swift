/// One header field line, as received (name case preserved).
public struct HTTPField: Hashable, Sendable {
    public var name: String
    public var value: String

    public init(_ name: String, _ value: String) {
        self.name = name
        self.value = value
    }
}

/// An HTTP/1 version (`HTTP/1.0`, `HTTP/1.1`).
public struct HTTPVersion: Hashable, Sendable, CustomStringConvertible {
    public var major: Int
    public var minor: Int

    public init(major: Int, minor: Int) {
        self.major = major
        self.minor = minor
    }

    public static let http1_0 = HTTPVersion(major: 1, minor: 0)
    public static let http1_1 = HTTPVersion(major: 1, minor: 1)

    public var description: String { "HTTP/\(major).\(minor)" }
}

/// How the body of a request is delimited (RFC 9112 §6.3).
public enum HTTPBodyFraming: Hashable, Sendable {
    /// No body.
    case none
    /// Exactly this many bytes follow the head.
    case contentLength(Int)
    /// Chunked transfer coding: the body ends with the last chunk and trailer section.
    case chunked
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
public struct HTTPRequestHead: Hashable, Sendable {
    /// Size bounds for a head.
    public struct Limits: Hashable, Sendable {
        /// Most bytes of request line plus header section, terminators included.
        public var maxHeadBytes: Int
        /// Most header field lines.
        public var maxHeaderCount: Int

        public init(maxHeadBytes: Int = 16 * 1024, maxHeaderCount: Int = 100) {
            self.maxHeadBytes = maxHeadBytes
            self.maxHeaderCount = maxHeaderCount
        }
    }

    public var method: String
    /// The request-target exactly as sent (origin, absolute, authority or asterisk form).
    public var target: String
    public var version: HTTPVersion
    /// Header fields in the order received.
    public var headers: [HTTPField]
    /// How the body that follows the head is delimited.
    public var bodyFraming: HTTPBodyFraming

    public init(method: String, target: String, version: HTTPVersion = .http1_1, headers: [HTTPField], bodyFraming: HTTPBodyFraming = .none) {
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers
        self.bodyFraming = bodyFraming
    }

    /// All values of the fields named `name` (case-insensitive), in order.
    public func values(_ name: String) -> [String] {
        headers.filter { $0.name.lowercased() == name.lowercased() }.map(\.value)
    }

    /// The comma-separated list elements of all fields named `name`, lower-cased and trimmed.
    public func tokens(_ name: String) -> [String] {
        values(name).flatMap { $0.split(separator: ",") }
            .map { $0.trimmingOWS().lowercased() }
            .filter { !$0.isEmpty }
    }

    /// Whether the client asked to keep the connection open after this request
    /// (RFC 9112 §9.3: HTTP/1.1 unless `Connection: close`; HTTP/1.0 only with `keep-alive`).
    public var wantsKeepAlive: Bool {
        let connection = tokens("connection") + tokens("proxy-connection")
        if connection.contains("close") { return false }
        return version == .http1_1 || connection.contains("keep-alive")
    }

    /// Parses a request head from the front of `bytes`; `consumed` covers the final empty line,
    /// so the body (or pipelined data) starts right after it.
    public static func parse(_ bytes: some Collection<UInt8>, limits: Limits = Limits()) -> ParseResult<HTTPRequestHead> {
        withContiguousBytes(bytes) { HeadParser(buffer: $0, limits: limits).parse() }
    }
}

extension StringProtocol {
    /// Drops leading and trailing SP and HTAB (RFC 9110 OWS).
    func trimmingOWS() -> String {
        var scalars = Substring(self).unicodeScalars[...]
        while let first = scalars.first, first == " " || first == "\t" { scalars.removeFirst() }
        while let last = scalars.last, last == " " || last == "\t" { scalars.removeLast() }
        return String(scalars)
    }
}

/// RFC 9110 §5.6.2 tchar.
func isTokenChar(_ byte: UInt8) -> Bool {
    switch byte {
    case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"):
        return true
    case UInt8(ascii: "!"), UInt8(ascii: "#"), UInt8(ascii: "$"), UInt8(ascii: "%"), UInt8(ascii: "&"), UInt8(ascii: "'"),
        UInt8(ascii: "*"), UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "^"), UInt8(ascii: "_"),
        UInt8(ascii: "`"), UInt8(ascii: "|"), UInt8(ascii: "~"):
        return true
    default:
        return false
    }
}

/// One pass over a candidate head.
private struct HeadParser {
    let buffer: UnsafeBufferPointer<UInt8>
    let limits: Limits
    typealias Limits = HTTPRequestHead.Limits

    private static let cr = UInt8(ascii: "\r")
    private static let lf = UInt8(ascii: "\n")

    /// Finds the line starting at `start`: the content range (terminator excluded) and the
    /// offset after the terminator, or nil when no LF is within the buffer.
    private func line(from start: Int) -> Result<(content: Range<Int>, next: Int), WireError>? {
        var index = start
        while index < buffer.count {
            let byte = buffer[index]
            if byte == Self.lf {
                var end = index
                if end > start && buffer[end - 1] == Self.cr { end -= 1 }
                if let bare = (start..<end).first(where: { buffer[$0] == Self.cr }) {
                    return .failure(WireError(.malformed, "bare CR (0x0d) at byte \(bare) of the HTTP head"))
                }
                return .success((start..<end, index + 1))
            }
            index += 1
        }
        return nil
    }

    func parse() -> ParseResult<HTTPRequestHead> {
        let limit = limits.maxHeadBytes
        var position = 0
        // RFC 9112 §2.2: ignore empty lines received before the request line.
        while position < buffer.count && position < limit && (buffer[position] == Self.cr || buffer[position] == Self.lf) {
            if buffer[position] == Self.cr {
                guard position + 1 < buffer.count else { return .needMore }
                guard buffer[position + 1] == Self.lf else {
                    return .invalid(WireError(.badRequestLine, "bare CR before the HTTP request line"))
                }
                position += 2
            } else {
                position += 1
            }
        }
        let headStart = position

        // Request line.
        let requestLine: (content: Range<Int>, next: Int)
        switch line(from: position) {
        case .none:
            var available = min(buffer.count, headStart + limit) - headStart
            if available > 0 && buffer[headStart + available - 1] == Self.cr { available -= 1 }
            if case .invalid(let error) = checkRequestLine(headStart..<(headStart + max(available, 0)), complete: false) {
                return .invalid(error)
            }
            if buffer.count - headStart >= limit {
                return .invalid(WireError(.requestLineTooLong, "HTTP request line longer than the \(limit)-byte head limit"))
            }
            return .needMore
        case .failure(let error)?:
            return .invalid(WireError(.badRequestLine, error.message))
        case .success(let found)?:
            requestLine = found
        }
        if requestLine.next - headStart > limit {
            return .invalid(WireError(.requestLineTooLong, "HTTP request line of \(requestLine.next - headStart) bytes exceeds the \(limit)-byte head limit"))
        }
        let parts: (method: String, target: String, version: HTTPVersion)
        switch checkRequestLine(requestLine.content, complete: true) {
        case .invalid(let error): return .invalid(error)
        case .needMore: return .invalid(WireError(.badRequestLine, "HTTP request line is incomplete"))
        case .done(let found, _): parts = found
        }
        position = requestLine.next

        // Header section.
        var headers: [HTTPField] = []
        while true {
            guard let found = line(from: position) else {
                if buffer.count - headStart >= limit {
                    return .invalid(WireError(.headTooLarge, "HTTP head exceeds the \(limit)-byte limit"))
                }
                return .needMore
            }
            let (content, next): (Range<Int>, Int)
            switch found {
            case .failure(let error): return .invalid(WireError(.badHeader, error.message))
            case .success(let value): (content, next) = value
            }
            if next - headStart > limit {
                return .invalid(WireError(.headTooLarge, "HTTP head of at least \(next - headStart) bytes exceeds the \(limit)-byte limit"))
            }
            position = next
            if content.isEmpty { break }
            if buffer[content.lowerBound] == UInt8(ascii: " ") || buffer[content.lowerBound] == UInt8(ascii: "\t") {
                return .invalid(WireError(.obsoleteLineFolding, "HTTP header line \(headers.count + 1) starts with whitespace (obs-fold is not accepted)"))
            }
            guard headers.count < limits.maxHeaderCount else {
                return .invalid(WireError(.tooManyHeaders, "HTTP head has more than \(limits.maxHeaderCount) header fields"))
            }
            switch field(content, number: headers.count + 1) {
            case .success(let field): headers.append(field)
            case .failure(let error): return .invalid(error)
            }
        }

        guard parts.version.major == 1, parts.version.minor <= 1 else {
            return .invalid(WireError(.httpVersionNotSupported, "HTTP version \(parts.version) not supported (1.0 and 1.1 are)"))
        }
        var head = HTTPRequestHead(method: parts.method, target: parts.target, version: parts.version, headers: headers)
        if head.version == .http1_1 {
            let hosts = head.values("host").count
            guard hosts == 1 else {
                return .invalid(WireError(.missingHost, hosts == 0 ? "HTTP/1.1 request without a Host header" : "HTTP/1.1 request with \(hosts) Host headers"))
            }
        }
        switch framing(of: head) {
        case .success(let framing): head.bodyFraming = framing
        case .failure(let error): return .invalid(error)
        }
        return .done(head, consumed: position)
    }

    /// Checks `method SP request-target SP HTTP/d.d` over `range`. With `complete: false` the
    /// range is a prefix of the line: running out of bytes is `.needMore`, not an error.
    private func checkRequestLine(_ range: Range<Int>, complete: Bool) -> ParseResult<(method: String, target: String, version: HTTPVersion)> {
        var index = range.lowerBound
        let end = range.upperBound
        func text(_ from: Int, _ to: Int) -> String { String(decoding: UnsafeBufferPointer(rebasing: buffer[from..<to]), as: UTF8.self) }
        func incomplete(_ what: String) -> ParseResult<(method: String, target: String, version: HTTPVersion)> {
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
        let method = text(methodStart, index)
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
        let target = text(targetStart, index)
        index += 1

        let expected = Array("HTTP/".utf8)
        for (offset, byte) in expected.enumerated() {
            guard index + offset < end else { return incomplete("HTTP version") }
            guard buffer[index + offset] == byte else {
                return .invalid(WireError(.badRequestLine, "HTTP request line has \"\(text(index, min(end, index + 8)))\" where \"HTTP/\" belongs"))
            }
        }
        index += expected.count
        let versionText = { text(index - expected.count, min(end, index + 8)) }
        var digits: [Int] = []
        for offset in 0..<3 {
            guard index + offset < end else { return incomplete("HTTP version") }
            let byte = buffer[index + offset]
            if offset == 1 {
                guard byte == UInt8(ascii: ".") else {
                    return .invalid(WireError(.badRequestLine, "HTTP version \"\(versionText())\" is not HTTP/DIGIT.DIGIT"))
                }
            } else {
                guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") else {
                    return .invalid(WireError(.badRequestLine, "HTTP version \"\(versionText())\" is not HTTP/DIGIT.DIGIT"))
                }
                digits.append(Int(byte - UInt8(ascii: "0")))
            }
        }
        guard index + 3 == end else {
            return .invalid(WireError(.badRequestLine, "HTTP version is followed by byte \(hex(buffer[index + 3])) instead of the line end"))
        }
        let (major, minor) = (digits[0], digits[1])
        return .done((method, target, HTTPVersion(major: major, minor: minor)), consumed: end - range.lowerBound)
    }

    /// Parses `field-name ":" OWS field-value OWS`.
    private func field(_ range: Range<Int>, number: Int) -> Result<HTTPField, WireError> {
        var index = range.lowerBound
        while index < range.upperBound && isTokenChar(buffer[index]) { index += 1 }
        guard index < range.upperBound else {
            return .failure(WireError(.badHeader, "HTTP header line \(number) has no colon"))
        }
        guard buffer[index] == UInt8(ascii: ":") else {
            let byte = buffer[index]
            if byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\t") {
                return .failure(WireError(.badHeader, "HTTP header line \(number) has whitespace between the field name and the colon"))
            }
            return .failure(WireError(.badHeader, "HTTP header line \(number) has byte \(hex(byte)) in its field name"))
        }
        guard index > range.lowerBound else {
            return .failure(WireError(.badHeader, "HTTP header line \(number) has an empty field name"))
        }
        let name = String(decoding: UnsafeBufferPointer(rebasing: buffer[range.lowerBound..<index]), as: UTF8.self)
        let valueRange = (index + 1)..<range.upperBound
        if let bad = valueRange.first(where: { buffer[$0] < 0x20 && buffer[$0] != 0x09 || buffer[$0] == 0x7F }) {
            return .failure(WireError(.badHeader, "HTTP header \(name) contains control byte \(hex(buffer[bad]))"))
        }
        let value = String(decoding: UnsafeBufferPointer(rebasing: buffer[valueRange]), as: UTF8.self).trimmingOWS()
        return .success(HTTPField(name, value))
    }

    /// RFC 9112 §6.3 message body length for a request.
    private func framing(of head: HTTPRequestHead) -> Result<HTTPBodyFraming, WireError> {
        let lengths = head.values("content-length").flatMap { $0.split(separator: ",", omittingEmptySubsequences: false) }.map { $0.trimmingOWS() }
        let codings = head.tokens("transfer-encoding")
        if !codings.isEmpty {
            guard lengths.isEmpty else {
                return .failure(WireError(.badFraming, "HTTP request has both Transfer-Encoding and Content-Length"))
            }
            guard codings.last == "chunked" else {
                return .failure(WireError(.badFraming, "HTTP request Transfer-Encoding \"\(codings.joined(separator: ", "))\" does not end with chunked"))
            }
            return .success(.chunked)
        }
        guard let first = lengths.first else { return .success(.none) }
        guard lengths.allSatisfy({ $0 == first }) else {
            return .failure(WireError(.badFraming, "HTTP request has conflicting Content-Length values \(lengths.joined(separator: ", "))"))
        }
        guard !first.isEmpty, first.utf8.count <= 18, first.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }), let length = Int(first) else {
            return .failure(WireError(.badFraming, "HTTP Content-Length \"\(first)\" is not a decimal number"))
        }
        return .success(length == 0 ? .none : .contentLength(length))
    }
}
