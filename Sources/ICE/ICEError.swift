/// The one error type of the ICE module: a code saying what kind of failure, and a message
/// with the context (which line, which server, which call) that says what was wrong.
public struct ICEError: Error, Sendable, Hashable, CustomStringConvertible {
    /// What kind of failure this is.
    public enum Code: String, Sendable, Hashable {
        /// An SDP `candidate` line did not follow RFC 8839 §5.1.
        case malformedCandidate
        /// An `ice-ufrag`, `ice-pwd` or other ICE attribute line was malformed.
        case malformedAttribute
        /// A `stun:`/`turn:` URL could not be used.
        case invalidServerURL
        /// A server host name did not resolve.
        case resolutionFailed
        /// The configuration was inconsistent (bad address, port range, …).
        case invalidConfiguration
        /// A libnice call returned an error.
        case libniceCallFailed
        /// Every candidate pair failed its connectivity checks.
        case checksFailed
        /// No pair connected within the configured time.
        case timeout
        /// The remote peer stopped answering consent checks (RFC 7675).
        case consentLost
        /// The agent is closed.
        case closed
    }

    /// What kind of failure.
    public let code: Code
    /// What was wrong, with context.
    public let message: String

    /// Creates an error.
    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "ICE \(code.rawValue): \(message)" }
}
