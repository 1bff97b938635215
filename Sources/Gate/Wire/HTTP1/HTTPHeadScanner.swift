import Glibc

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

/// Size bounds for an HTTP/1 head (start line plus header section).
public struct HTTPHeadLimits: Hashable, Sendable {
    /// Most bytes of start line plus header section, terminators included.
    public var maxHeadBytes: Int
    /// Most header field lines.
    public var maxHeaderCount: Int

    public init(maxHeadBytes: Int = 16 * 1024, maxHeaderCount: Int = 100) {
        self.maxHeadBytes = maxHeadBytes
        self.maxHeaderCount = maxHeaderCount
    }
}

/// Field lookups shared by request and response heads.
public protocol HTTPHeaderLookup {
    /// Header fields in the order received.
    var headers: [HTTPField] { get }
}

extension HTTPHeaderLookup {
    /// All values of the fields named `name` (case-insensitive), in order.
    public func values(_ name: String) -> [String] {
        headers.filter { $0.name.equalsIgnoringASCIICase(name) }.map(\.value)
    }

    /// The comma-separated list elements of all fields named `name`, lower-cased and trimmed.
    public func tokens(_ name: String) -> [String] {
        values(name).flatMap { $0.split(separator: ",") }
            .map { $0.trimmingOWS().lowercased() }
            .filter { !$0.isEmpty }
    }

    /// The message body length from Transfer-Encoding and Content-Length (RFC 9112 §6.3):
    /// `.chunked` when chunked is the final coding, nil when another coding is final (the
    /// caller decides: 400 for a request, read-until-close for a response), else the
    /// Content-Length (all copies equal) or `.none`. Both fields together are an error.
    func declaredFraming(_ what: String) -> Result<HTTPBodyFraming?, WireError> {
        let lengths = values("content-length").flatMap { $0.split(separator: ",", omittingEmptySubsequences: false) }.map { $0.trimmingOWS() }
        let codings = tokens("transfer-encoding")
        if !codings.isEmpty {
            guard lengths.isEmpty else {
                return .failure(WireError(.badFraming, "HTTP \(what) has both Transfer-Encoding and Content-Length"))
            }
            return .success(codings.last == "chunked" ? .chunked : nil)
        }
        guard let first = lengths.first else { return .success(HTTPBodyFraming.none) }
        guard lengths.allSatisfy({ $0 == first }) else {
            return .failure(WireError(.badFraming, "HTTP \(what) has conflicting Content-Length values \(lengths.joined(separator: ", "))"))
        }
        guard !first.isEmpty, first.utf8.count <= 18, first.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }), let length = Int(first) else {
            return .failure(WireError(.badFraming, "HTTP Content-Length \"\(first)\" is not a decimal number"))
        }
        return .success(length == 0 ? HTTPBodyFraming.none : .contentLength(length))
    }
}

extension String {
    /// ASCII case-insensitive comparison (field names are ASCII tokens); no allocation.
    func equalsIgnoringASCIICase(_ other: String) -> Bool {
        let lhs = utf8, rhs = other.utf8
        guard lhs.count == rhs.count else { return false }
        return zip(lhs, rhs).allSatisfy { a, b in
            a == b || (a | 0x20 == b | 0x20 && (a | 0x20) >= UInt8(ascii: "a") && (a | 0x20) <= UInt8(ascii: "z"))
        }
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

/// RFC 9110 §5.6.2 tchar: ALPHA, DIGIT and `!#$%&'*+-.^_`|~`, looked up by byte value in a
/// constant table (`1`: a tchar), read through the literal's `utf8Start` (no lazy global, no
/// range check): two instructions per byte where a 128-bit set took about six (a compare, a
/// select, a shift and a mask) — every byte of every field name of every head goes through here.
@inline(__always)
func isTokenChar(_ byte: UInt8) -> Bool {
    let table: StaticString = """
        0000000000000000000000000000000001011111001101101111111111000000\
        0111111111111111111111111110001111111111111111111111111111101010\
        0000000000000000000000000000000000000000000000000000000000000000\
        0000000000000000000000000000000000000000000000000000000000000000
        """
    return table.utf8Start[Int(byte)] == UInt8(ascii: "1")
}

/// One pass over a candidate HTTP/1 head (RFC 9112 §2.1): start line, field lines, empty
/// line. The start line is checked by the caller's function, also while it is incomplete,
/// so garbage is refused before a line end arrives.
struct HTTPHeadScanner {
    let buffer: UnsafeBufferPointer<UInt8>
    let limits: HTTPHeadLimits

    static let cr = UInt8(ascii: "\r")
    static let lf = UInt8(ascii: "\n")

    /// Which start line is scanned, for error codes and messages.
    struct StartLine {
        var name: String
        var badCode: WireError.Code
        var tooLongCode: WireError.Code
        /// RFC 9112 §2.2: a server ignores empty lines before a request line.
        var skipsLeadingEmptyLines: Bool
    }

    func text(_ from: Int, _ to: Int) -> String {
        String(decoding: UnsafeBufferPointer(rebasing: buffer[from..<to]), as: UTF8.self)
    }

    /// The text of `range`: `candidate` again when its bytes are those of `range` — a retain,
    /// or for a small string (up to 15 bytes) a copy of two words — else a new string. Making
    /// a string from bytes validates them as UTF-8 and builds it (about 150 instructions even
    /// for a small one, counted by callgrind); comparing costs a `memcmp` of its bytes.
    @inline(__always)
    func text(_ range: Range<Int>, reusing candidate: String) -> String {
        same(range, candidate) ? candidate : text(range.lowerBound, range.upperBound)
    }

    /// Whether the bytes of `range` are those of `text`.
    @inline(__always)
    private func same(_ range: Range<Int>, _ text: String) -> Bool {
        text.utf8.count == range.count && !range.isEmpty
            && utf8Bytes(of: text, { memcmp($0.baseAddress!, buffer.baseAddress! + range.lowerBound, range.count) == 0 })
    }

    /// Makes `fields[at]` the field line of `ranges`: appended past the end; else its name
    /// and value are replaced only where their bytes differ (see `scan(_:keepFields:fields:check:)`).
    @inline(__always)
    private func put(_ ranges: (name: Range<Int>, value: Range<Int>), at: Int, into fields: inout [HTTPField]) {
        guard at < fields.count else {
            fields.append(HTTPField(text(ranges.name.lowerBound, ranges.name.upperBound), text(ranges.value.lowerBound, ranges.value.upperBound)))
            return
        }
        if !same(ranges.name, fields[at].name) { fields[at].name = text(ranges.name.lowerBound, ranges.name.upperBound) }
        if !same(ranges.value, fields[at].value) { fields[at].value = text(ranges.value.lowerBound, ranges.value.upperBound) }
    }

    /// A CR not followed by LF, at `index` of the buffer.
    private struct BareCR: Error {
        var index: Int
        var message: String { "bare CR (0x0d) at byte \(index) of the HTTP head" }
    }

    /// Finds the line starting at `start`: the content range (terminator excluded) and the
    /// offset after the terminator, or nil when no LF is within the buffer.
    private func line(from start: Int) -> Result<(content: Range<Int>, next: Int), BareCR>? {
        let bytes = UnsafeRawBufferPointer(buffer)
        guard let index = byteIndex(Self.lf, in: bytes, from: start) else { return nil }
        var end = index
        if end > start && buffer[end - 1] == Self.cr { end -= 1 }
        if let bare = byteIndex(Self.cr, in: bytes, from: start, to: end) { return .failure(BareCR(index: bare)) }
        return .success((start..<end, index + 1))
    }

    /// Scans the head; `check` validates the start line (`complete: false` for a prefix, where
    /// running out of bytes means `.needMore`). `keepFields: false` checks every field line
    /// the same way but keeps none (`headers` is empty): for a caller that relays the head's
    /// bytes and reads what it needs from them, without a `String` per name and value.
    func scan<Start>(
        _ startLine: StartLine, keepFields: Bool = true, check: (Range<Int>, _ complete: Bool) -> ParseResult<Start>
    ) -> ParseResult<(start: Start, headers: [HTTPField], consumed: Int)> {
        // Room for a usual head's fields at once (growing 1, 2, 4, 8 reallocated three times
        // for every response the HTTPRoute gateway parses).
        var headers: [HTTPField] = []
        if keepFields { headers.reserveCapacity(min(16, limits.maxHeaderCount)) }
        switch scan(startLine, keepFields: keepFields, fields: &headers, check: check) {
        case .needMore: return .needMore
        case .invalid(let error): return .invalid(error)
        case .done(let start, let consumed): return .done((start, headers, consumed), consumed: consumed)
        }
    }

    /// `scan(_:keepFields:check:)` with the fields written into `fields` (`keepFields`), which
    /// holds those of the connection's previous head (the HTTP/1.1 request decoder's): a name
    /// or value whose bytes equal the one at the same position there is kept as it is (a
    /// client sends much the same `Host`, `User-Agent`, `Accept` … on every request of a
    /// connection), others are replaced, extra ones appended, the rest removed. A head that
    /// repeats the previous one writes nothing: no new array (an allocation per request
    /// before), no string made (a UTF-8 check, and an allocation above 15 bytes). On
    /// `.needMore` or `.invalid`, `fields` holds a mixture of both heads' fields.
    func scan<Start>(
        _ startLine: StartLine, keepFields: Bool, fields: inout [HTTPField], check: (Range<Int>, _ complete: Bool) -> ParseResult<Start>
    ) -> ParseResult<Start> {
        let limit = limits.maxHeadBytes
        var position = 0
        while startLine.skipsLeadingEmptyLines && position < buffer.count && position < limit
            && (buffer[position] == Self.cr || buffer[position] == Self.lf)
        {
            if buffer[position] == Self.cr {
                guard position + 1 < buffer.count else { return .needMore }
                guard buffer[position + 1] == Self.lf else {
                    return .invalid(WireError(startLine.badCode, "bare CR before the HTTP \(startLine.name)"))
                }
                position += 2
            } else {
                position += 1
            }
        }
        let headStart = position

        let first: (content: Range<Int>, next: Int)
        switch line(from: position) {
        case .none:
            var available = min(buffer.count, headStart + limit) - headStart
            if available > 0 && buffer[headStart + available - 1] == Self.cr { available -= 1 }
            if case .invalid(let error) = check(headStart..<(headStart + max(available, 0)), false) {
                return .invalid(error)
            }
            if buffer.count - headStart >= limit {
                return .invalid(WireError(startLine.tooLongCode, "HTTP \(startLine.name) longer than the \(limit)-byte head limit"))
            }
            return .needMore
        case .failure(let bare)?:
            // Refused as a client sending the line in pieces would have been: for the bytes
            // before the CR, and as too long when the byte after the CR is beyond the limit.
            if case .invalid(let error) = check(headStart..<min(bare.index, headStart + limit), false) { return .invalid(error) }
            if bare.index + 1 >= headStart + limit {
                return .invalid(WireError(startLine.tooLongCode, "HTTP \(startLine.name) longer than the \(limit)-byte head limit"))
            }
            return .invalid(WireError(startLine.badCode, bare.message))
        case .success(let found)?:
            first = found
        }
        if first.next - headStart > limit {
            // The bytes within the limit are checked first, as they are for a line in pieces.
            if case .invalid(let error) = check(headStart..<min(first.content.upperBound, headStart + limit), false) { return .invalid(error) }
            return .invalid(WireError(startLine.tooLongCode, "HTTP \(startLine.name) of \(first.next - headStart) bytes exceeds the \(limit)-byte head limit"))
        }
        let start: Start
        switch check(first.content, true) {
        case .invalid(let error): return .invalid(error)
        case .needMore: return .invalid(WireError(startLine.badCode, "HTTP \(startLine.name) is incomplete"))
        case .done(let found, _): start = found
        }
        position = first.next

        var count = 0
        while true {
            guard let found = line(from: position) else {
                // A CR followed by another byte (not LF: there is none) within the limit is
                // bare already: refused now, as it is once the line is there whole.
                let end = min(buffer.count, headStart + limit)
                if end - position > 1, let bare = byteIndex(Self.cr, in: UnsafeRawBufferPointer(buffer), from: position, to: end - 1) {
                    return .invalid(WireError(.badHeader, BareCR(index: bare).message))
                }
                if buffer.count - headStart >= limit {
                    return .invalid(WireError(.headTooLarge, "HTTP head exceeds the \(limit)-byte limit"))
                }
                return .needMore
            }
            let (content, next): (Range<Int>, Int)
            switch found {
            case .failure(let bare):
                // A bare CR whose next byte is beyond the limit: the limit is reached first.
                if bare.index + 1 >= headStart + limit {
                    return .invalid(WireError(.headTooLarge, "HTTP head exceeds the \(limit)-byte limit"))
                }
                return .invalid(WireError(.badHeader, bare.message))
            case .success(let value): (content, next) = value
            }
            if next - headStart > limit {
                return .invalid(WireError(.headTooLarge, "HTTP head of at least \(next - headStart) bytes exceeds the \(limit)-byte limit"))
            }
            position = next
            if content.isEmpty { break }
            if buffer[content.lowerBound] == UInt8(ascii: " ") || buffer[content.lowerBound] == UInt8(ascii: "\t") {
                return .invalid(WireError(.obsoleteLineFolding, "HTTP header line \(count + 1) starts with whitespace (obs-fold is not accepted)"))
            }
            guard count < limits.maxHeaderCount else {
                return .invalid(WireError(.tooManyHeaders, "HTTP head has more than \(limits.maxHeaderCount) header fields"))
            }
            count += 1
            switch fieldRanges(content, number: count) {
            case .success(let ranges):
                if keepFields { put(ranges, at: count - 1, into: &fields) }
            case .failure(let error): return .invalid(error)
            }
        }
        if keepFields, fields.count > count { fields.removeLast(fields.count - count) }
        return .done(start, consumed: position)
    }

    /// Checks `HTTP/DIGIT.DIGIT` at `index` (ending at `end` when `mustEnd`); `.needMore`
    /// when the range stops early and `complete` is false.
    func checkVersion(at index: Int, end: Int, mustEnd: Bool, complete: Bool, code: WireError.Code) -> ParseResult<HTTPVersion> {
        // A whole valid version (every request and response head has one) in one go; anything
        // else goes byte by byte below, which names what is wrong.
        if end - index >= 8, let base = buffer.baseAddress {
            let v = base + index
            let major = v[5] &- UInt8(ascii: "0"), minor = v[7] &- UInt8(ascii: "0")
            if v[0] == UInt8(ascii: "H"), v[1] == UInt8(ascii: "T"), v[2] == UInt8(ascii: "T"), v[3] == UInt8(ascii: "P"),
               v[4] == UInt8(ascii: "/"), v[6] == UInt8(ascii: "."), major < 10, minor < 10, !mustEnd || end == index + 8 {
                return .done(HTTPVersion(major: Int(major), minor: Int(minor)), consumed: 8)
            }
        }
        // A static string's bytes: an `Array` of them was allocated for every head parsed.
        let expected: StaticString = "HTTP/"
        let versionText = { self.text(index, min(end, index + 8)) }
        for offset in 0..<(expected.utf8CodeUnitCount + 3) {
            guard index + offset < end else {
                return complete ? .invalid(WireError(code, "HTTP version \"\(versionText())\" is incomplete")) : .needMore
            }
            let byte = buffer[index + offset]
            let ok: Bool
            switch offset {
            case 0..<expected.utf8CodeUnitCount: ok = byte == expected.utf8Start[offset]
            case expected.utf8CodeUnitCount + 1: ok = byte == UInt8(ascii: ".")
            default: ok = byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9")
            }
            guard ok else {
                return .invalid(WireError(code, "HTTP version \"\(versionText())\" is not HTTP/DIGIT.DIGIT"))
            }
        }
        let after = index + expected.utf8CodeUnitCount + 3
        if mustEnd && after != end {
            return .invalid(WireError(code, "HTTP version is followed by byte \(hex(buffer[after])) instead of the line end"))
        }
        let major = Int(buffer[index + 5] - UInt8(ascii: "0"))
        let minor = Int(buffer[index + 7] - UInt8(ascii: "0"))
        return .done(HTTPVersion(major: major, minor: minor), consumed: after - index)
    }

    /// Checks `field-name ":" OWS field-value OWS`: the ranges of the name and of the value
    /// without its surrounding whitespace.
    func fieldRanges(_ range: Range<Int>, number: Int) -> Result<(name: Range<Int>, value: Range<Int>), WireError> {
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
        let valueRange = (index + 1)..<range.upperBound
        if let bad = Self.controlByte(in: buffer, valueRange) {
            return .failure(WireError(.badHeader, "HTTP header \(text(range.lowerBound, index)) contains control byte \(hex(buffer[bad]))"))
        }
        var first = valueRange.lowerBound, last = valueRange.upperBound
        while first < last && (buffer[first] == 0x20 || buffer[first] == 0x09) { first += 1 }
        while last > first && (buffer[last - 1] == 0x20 || buffer[last - 1] == 0x09) { last -= 1 }
        return .success((range.lowerBound..<index, first..<last))
    }

}

extension HTTPHeadScanner {
    /// The index of the first control byte other than HTAB (below 0x20, or DEL) in
    /// `buffer[range]` (RFC 9110 §5.5: field values), nil when there is none. Eight bytes at a
    /// time while none of them can be one (every field value of every request and response
    /// head goes through here): a word has a byte below 0x20 iff `(w − 0x20…) & ~w & 0x80…`
    /// is not zero, and a DEL iff the same holds for `w ^ 0x7F…` below 0x01 (Anderson's bit
    /// hacks, "determine if a word has a byte less than n", exact for the question "any").
    /// A word that may hold one (an HTAB too) is checked byte by byte from its start; the
    /// bytes after the last whole word of a range of eight or more are checked as the range's
    /// last eight bytes (overlapping what was checked), not one by one.
    @inline(__always)
    static func controlByte(in buffer: UnsafeBufferPointer<UInt8>, _ range: Range<Int>) -> Int? {
        var index = range.lowerBound
        if let base = buffer.baseAddress {
            @inline(__always)
            func mayHoldOne(_ at: Int) -> Bool {
                let ones: UInt64 = 0x0101_0101_0101_0101
                let highs: UInt64 = 0x8080_8080_8080_8080
                let word = UnsafeRawPointer(base + at).loadUnaligned(as: UInt64.self)
                let below = (word &- ones &* 0x20) & ~word & highs
                let del = word ^ (ones &* 0x7F)
                return below | ((del &- ones) & ~del & highs) != 0
            }
            while index + 8 <= range.upperBound {
                if mayHoldOne(index) { break }
                index += 8
            }
            if index < range.upperBound, index + 8 > range.upperBound, range.count >= 8, !mayHoldOne(range.upperBound - 8) {
                return nil
            }
        }
        while index < range.upperBound {
            let byte = buffer[index]
            if (byte < 0x20 && byte != 0x09) || byte == 0x7F { return index }
            index += 1
        }
        return nil
    }
}

/// The index of the first `byte` in `bytes[from..<to]` (`to`: the end when nil), nil when it
/// is not there. `memchr` instead of a byte loop or `firstIndex(of:)`: this runs over every
/// line of every request and response head the gateway reads.
@inline(__always)
func byteIndex(_ byte: UInt8, in bytes: UnsafeRawBufferPointer, from: Int, to: Int? = nil) -> Int? {
    let end = to ?? bytes.count
    guard from < end, let base = bytes.baseAddress, let found = memchr(base + from, Int32(byte), end - from) else { return nil }
    return base.distance(to: UnsafeRawPointer(found))
}
