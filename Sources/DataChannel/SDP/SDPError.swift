/// A malformed or unusable session description, naming the offending line.
public struct SDPError: Error, Equatable, Sendable, CustomStringConvertible {
    /// 1-based line number; 0 when the problem is the description as a whole.
    public let line: Int
    /// The offending line as received (empty when `line` is 0).
    public let text: String
    /// What is wrong with it.
    public let reason: String

    /// Creates an error.
    public init(line: Int, text: String, reason: String) {
        self.line = line
        self.text = text
        self.reason = reason
    }

    public var description: String {
        line == 0 ? "invalid SDP: \(reason)" : "invalid SDP at line \(line) '\(text)': \(reason)"
    }
}
