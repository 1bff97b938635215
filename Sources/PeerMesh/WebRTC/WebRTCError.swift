/// The one error type of the WebRTC peer-connection area: a code that says what went wrong and
/// context that says where (which description, which state, which lower-layer error).
public struct WebRTCError: Error, CustomStringConvertible, Sendable, Equatable {
    /// What kind of failure this is.
    public enum Code: String, Sendable, Equatable {
        /// A session description could not be parsed or does not fit this connection.
        case description
        /// A method was called in a state that does not allow it (e.g. two offers).
        case state
        /// ICE failed (no pair, consent lost, timeout) or could not be set up.
        case ice
        /// DTLS/SCTP failed (handshake, fingerprint mismatch, association lost).
        case transport
        /// The connection was closed (locally or by the peer).
        case closed
        /// Signalling input was malformed or ended early.
        case signaling
        /// Data sent did not come back intact.
        case integrity
    }

    /// What kind of failure this is.
    public var code: Code
    /// Human-readable context.
    public var message: String

    /// Creates an error.
    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "WebRTCError.\(code.rawValue): \(message)" }
}
