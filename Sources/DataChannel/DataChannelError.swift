/// An error from the DTLS, SCTP or channel layers of a data-channel session.
///
/// SDP parsing has its own error type, ``SDPError``, because it names a line.
public struct DataChannelError: Error, CustomStringConvertible, Sendable, Equatable {
    /// What went wrong, as a stable code.
    public enum Code: String, Sendable {
        /// An OpenSSL call failed; `context` holds the call and OpenSSL's error stack.
        case openssl
        /// The peer's certificate does not match any fingerprint from its SDP.
        case fingerprintMismatch
        /// The DTLS handshake failed or the peer sent a fatal alert.
        case handshakeFailed
        /// A usrsctp call failed; `context` holds the call and errno.
        case sctp
        /// The SCTP association was aborted or lost.
        case associationLost
        /// The session or channel is not open for this operation.
        case notOpen
        /// A message is larger than the peer's `a=max-message-size`.
        case messageTooLarge
        /// No free stream id is left for a new channel.
        case streamIDsExhausted
        /// A stream id is already used by another channel.
        case streamIDInUse
        /// The session was closed locally or by the peer.
        case closed
        /// The session configuration is invalid.
        case invalidConfiguration
    }

    /// The error code.
    public let code: Code
    /// Human-readable context: which call, which values.
    public let context: String

    /// Creates an error.
    public init(_ code: Code, _ context: String) {
        self.code = code
        self.context = context
    }

    public var description: String { "DataChannelError.\(code.rawValue): \(context)" }
}
