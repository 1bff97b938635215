/// ICE credentials of one side (RFC 8839 §5.4).
///
/// ```
/// ice-pwd-att   = "ice-pwd:" password      password = 22*256ice-char
/// ice-ufrag-att = "ice-ufrag:" ufrag       ufrag    = 4*256ice-char
/// ```
/// https://www.rfc-editor.org/rfc/rfc8839#section-5.4
public struct ICECredentials: Hashable, Sendable, Codable {
    /// Username fragment, 4–256 ice-chars.
    public var ufrag: String
    /// Password, 22–256 ice-chars.
    public var pwd: String

    /// Creates credentials after checking their length and alphabet.
    public init(ufrag: String, pwd: String) throws {
        try Self.check(ufrag, name: "ice-ufrag", min: 4)
        try Self.check(pwd, name: "ice-pwd", min: 22)
        self.ufrag = ufrag
        self.pwd = pwd
    }

    /// Fresh random credentials (24-char ufrag, 32-char password) from the system CSPRNG.
    public static func random() -> ICECredentials {
        var rng = SystemRandomNumberGenerator()
        func token(_ n: Int) -> String {
            let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
            return String((0..<n).map { _ in alphabet[Int(rng.next() % UInt64(alphabet.count))] })
        }
        // Lengths are valid by construction.
        return try! ICECredentials(ufrag: token(24), pwd: token(32))
    }

    /// The two SDP lines `a=ice-ufrag:…` and `a=ice-pwd:…`.
    public var sdpLines: [String] { ["a=ice-ufrag:\(ufrag)", "a=ice-pwd:\(pwd)"] }

    static func check(_ value: String, name: String, min: Int) throws {
        guard (min...256).contains(value.count) else {
            throw ICEError(.malformedAttribute, "\(name) must be \(min)-256 characters, got \(value.count)")
        }
        guard value.allSatisfy(IceChar.isIceChar) else {
            throw ICEError(.malformedAttribute, "\(name) \"\(value)\" contains a character that is not ALPHA, DIGIT, '+' or '/'")
        }
    }
}

/// One ICE-related SDP attribute line, as exchanged over trickle signalling (RFC 8838, RFC 8839).
///
/// Lines look like `a=candidate:…`, `a=end-of-candidates`, `a=ice-ufrag:…`, `a=ice-pwd:…`;
/// the `a=` prefix is optional on input and always written on output.
public enum ICEAttribute: Hashable, Sendable {
    /// A candidate (RFC 8839 §5.1).
    case candidate(ICECandidate)
    /// `a=end-of-candidates` (RFC 8840 §5.2 / RFC 8838 §8.2).
    case endOfCandidates
    /// `a=ice-ufrag:` (RFC 8839 §5.4).
    case ufrag(String)
    /// `a=ice-pwd:` (RFC 8839 §5.4).
    case pwd(String)

    /// Parses one line. Unknown attributes are refused with an error that names them.
    public init(parsing line: String) throws {
        var text = Substring(line)
        while let last = text.last, last.isNewline { text.removeLast() }
        if text.hasPrefix("a=") { text = text.dropFirst(2) }
        if text.lowercased().hasPrefix("candidate:") {
            self = .candidate(try ICECandidate(parsing: line))
        } else if text == "end-of-candidates" {
            self = .endOfCandidates
        } else if text.hasPrefix("ice-ufrag:") {
            let value = String(text.dropFirst("ice-ufrag:".count))
            try ICECredentials.check(value, name: "ice-ufrag", min: 4)
            self = .ufrag(value)
        } else if text.hasPrefix("ice-pwd:") {
            let value = String(text.dropFirst("ice-pwd:".count))
            try ICECredentials.check(value, name: "ice-pwd", min: 22)
            self = .pwd(value)
        } else {
            throw ICEError(.malformedAttribute, "not an ICE attribute line: \"\(line)\"")
        }
    }

    /// The line with its `a=` prefix.
    public var sdpLine: String {
        switch self {
        case .candidate(let c): c.sdpLine
        case .endOfCandidates: "a=end-of-candidates"
        case .ufrag(let u): "a=ice-ufrag:\(u)"
        case .pwd(let p): "a=ice-pwd:\(p)"
        }
    }
}
