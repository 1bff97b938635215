/// The one error type of the PeerMesh identity and HTTP/2 transport areas: a code that says
/// what went wrong and context that says where (which file, which peer, which destination).
public struct MeshError: Error, CustomStringConvertible, Sendable, Equatable {
    /// What kind of failure this is.
    public enum Code: String, Sendable, Equatable {
        /// The identity files could not be read, written or parsed.
        case identityFile
        /// A certificate could not be built, parsed or does not match the node key.
        case certificate
        /// The peer's certificate carries a key whose ID is not a configured peer.
        case unknownPeer
        /// The peer's certificate claims an ID that its key does not hash to.
        case wrongKey
        /// The peer is known but is not the node we dialled.
        case unexpectedPeer
        /// The peer may not reach the requested destination through this node.
        case forbidden
        /// A tunnel request was malformed (method, path, authority).
        case badRequest
        /// The remote node answered a tunnel request with an error status.
        case remoteRefused
        /// Connecting to a peer or destination failed.
        case connect
        /// TLS setup or the TLS handshake failed (including ALPN other than `h2`).
        case tls
        /// The configuration is invalid.
        case config
        /// A relay registration was stale, from the future, or already used.
        case replayed
        /// The peer did not answer in time (a tunnel request, a relay registration).
        case timeout
    }

    public var code: Code
    /// Human-readable context: what was attempted and with which values.
    public var message: String
    /// HTTP status, when the error comes from or maps onto a tunnel response.
    public var status: Int?

    public init(_ code: Code, _ message: String, status: Int? = nil) {
        self.code = code
        self.message = message
        self.status = status
    }

    public var description: String {
        if let status { return "\(code.rawValue) (\(status)): \(message)" }
        return "\(code.rawValue): \(message)"
    }

    /// The message as a single-line HTTP header value.
    public var headerValue: String {
        String(message.map { $0.isNewline || $0 == "\0" ? " " : $0 })
    }
}
