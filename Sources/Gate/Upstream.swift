/// Where a captured stream goes. The capture front asks the route table for an `Upstream`
/// and calls `dial`; it knows nothing of how the upstream reaches the destination.
///
/// The contract is a connected stream socket: the direct upstream returns the TCP socket it
/// connected, so the forwarder can `splice(2)` or copy between two kernel sockets; a mesh
/// transport (HTTP/2, WebRTC, SNI relay) returns one end of a `socketpair(2)` and serves the
/// other end itself. Either way the caller owns the returned descriptor and closes it.
public protocol Upstream: Sendable {
    /// A short name for logs and metrics ("direct", "h2:alice", …).
    var name: String { get }

    /// Opens a byte stream to `destination` on behalf of the stream described by `info`.
    /// - Returns: a connected, non-blocking stream socket owned by the caller.
    func dial(_ destination: Destination, for info: StreamInfo) async throws -> Int32
}

/// A destination as the capture front learned it: a host name or IP literal and a port.
public struct Destination: Hashable, Sendable, CustomStringConvertible {
    public var host: String
    public var port: UInt16

    public init(host: String, port: UInt16) {
        self.host = host
        self.port = port
    }

    /// `host:port`, with IPv6 literals in brackets.
    public var description: String {
        host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
    }
}

/// What the capture front knows about a stream when it asks for an upstream.
public struct StreamInfo: Sendable {
    /// Which listener accepted it ("socks5", "http-proxy", "redirect", ":8080" …).
    public var listener: String
    /// The peer address of the captured connection, as `host:port`.
    public var source: String
    /// The destination the client asked for, or the original destination for REDIRECT/TPROXY.
    public var destination: Destination
    /// TLS SNI or HTTP Host, when sniffing found one.
    public var serverName: String?
    /// ALPN protocols offered in a TLS ClientHello.
    public var alpn: [String]
    /// Sniffed protocol ("tls", "http/1.1", "h2", "unknown").
    public var proto: String
    /// The authenticated identity of the caller, when a mesh listener captured it.
    public var callerIdentity: String?

    public init(
        listener: String, source: String, destination: Destination,
        serverName: String? = nil, alpn: [String] = [], proto: String = "unknown",
        callerIdentity: String? = nil
    ) {
        self.listener = listener
        self.source = source
        self.destination = destination
        self.serverName = serverName
        self.alpn = alpn
        self.proto = proto
        self.callerIdentity = callerIdentity
    }
}
