import NIOCore
import Synchronization

/// Where a captured stream goes. The capture front asks the route table for an `Upstream`
/// and calls `open` (falling back to `dial`); it knows nothing of how the upstream reaches the
/// destination.
///
/// Two ways to carry a stream:
/// - **A socket** (`dial`): the upstream returns a connected stream socket — the direct upstream
///   the TCP socket it connected — and the Gate's `Relay` moves bytes between it and the captured
///   client with `splice(2)` or a buffer copy. The caller owns the returned descriptor.
/// - **The stream itself** (`open`): a transport with its own streams (the HTTP/2 mesh) opens
///   one to the destination and returns an `UpstreamStream` once the far end accepted it; the
///   capture front sends its success reply (SOCKS5, `200` to CONNECT) and then hands the client
///   socket over with `UpstreamStream.attach`, which joins it to the stream directly: no
///   socketpair and no second relay between them.
///
/// Capture fronts call `open` for every stream (SOCKS5 CONNECT, HTTP CONNECT, absolute-URI HTTP
/// proxying — whose request head goes into a carried stream first —, port forwards, REDIRECT,
/// TPROXY); HTTPRoute backends call `openChannel` (the gateway speaks HTTP/1.1 on the
/// channel), falling back to `dial`.
public protocol Upstream: Sendable {
    /// A short name for logs and metrics ("direct", "h2:alice", …).
    var name: String { get }

    /// Opens a byte stream to `destination` on behalf of the stream described by `info`.
    /// - Returns: a connected, non-blocking stream socket owned by the caller.
    func dial(_ destination: Destination, for info: StreamInfo) async throws -> Int32

    /// Opens a stream this upstream carries itself, returning once the far end accepted it;
    /// nil when the upstream carries streams as sockets (then the caller uses `dial`). Throws
    /// like `dial` when the stream cannot be opened. The default returns nil.
    func open(_ destination: Destination, for info: StreamInfo) async throws -> (any UpstreamStream)?

    /// Opens a stream this upstream carries itself as a SwiftNIO channel of its own (an HTTP/2
    /// stream of the mesh connection, on that connection's event loop), for a caller that speaks
    /// a protocol on it (HTTPRoute backends: HTTP/1.1). nil when the upstream carries streams as
    /// sockets (then the caller uses `dial`).
    ///
    /// The channel reads and writes `ByteBuffer`s; the far end's half-close arrives as
    /// `ChannelEvent.inputClosed`; `close(mode: .output)` half-closes, a full `close` aborts
    /// the stream. Once the far end accepted the stream, `join` runs on the channel's event loop
    /// before any byte of the far end is read (it adds the caller's handlers), then the future
    /// succeeds with the channel; it fails like `dial` when the stream cannot be opened (also
    /// when `join` throws: the stream is closed).
    func openChannel(
        _ destination: Destination, for info: StreamInfo, join: @escaping @Sendable (any Channel) throws -> Void
    ) -> EventLoopFuture<any Channel>?
}

extension Upstream {
    public func open(_ destination: Destination, for info: StreamInfo) async throws -> (any UpstreamStream)? { nil }

    public func openChannel(
        _ destination: Destination, for info: StreamInfo, join: @escaping @Sendable (any Channel) throws -> Void
    ) -> EventLoopFuture<any Channel>? { nil }
}

/// A stream an upstream opened and carries itself (`Upstream.open`), waiting for the captured
/// client. The capture front calls `attach` at most once; the Gate may call `cancel` at any
/// time, from any thread, also after `attach` and more than once (idle timeout, `GateNode.stop`).
/// While the stream lives the Gate lists it in `/debug/streams` and polls `transferred` for its
/// idle timeout (`CarriedStreams`).
public protocol UpstreamStream: Sendable {
    /// Takes ownership of `client.fd` (a connected, non-blocking stream socket that no loop
    /// watches), sends `client.prefix` on the stream first, then moves bytes both ways:
    /// backpressure, half-close passed on in both directions, an abort of either side aborts
    /// the other (RST). Calls `client.finished` once when both sides are closed. After a
    /// `cancel` it resets the client socket and still calls `client.finished`.
    func attach(_ client: CapturedClient)

    /// Resets the stream (RST_STREAM or the transport's equivalent) and, once attached, the
    /// client socket; `client.finished` follows. Safe from any thread, idempotent, and a no-op
    /// after the stream ended.
    func cancel()

    /// The bytes moved so far each way (the client's prefix counted up) and which directions
    /// ended with a half-close; safe from any thread, cheap and non-blocking (the Gate reads it
    /// once a second under its registry's lock, and for `/debug/streams`).
    var transferred: StreamBytes { get }
}

/// Bytes a carried stream moved so far: client → destination (`up`), destination → client
/// (`down`); and whether each direction has ended with a half-close (the client's FIN passed
/// on: `upFinished`; the destination's end written to the client as a FIN: `downFinished`),
/// as a relay reports them in `/debug/streams`.
public struct StreamBytes: Sendable, Equatable {
    public var up: UInt64
    public var down: UInt64
    public var upFinished: Bool
    public var downFinished: Bool

    public init(up: UInt64, down: UInt64, upFinished: Bool = false, downFinished: Bool = false) {
        self.up = up
        self.down = down
        self.upFinished = upFinished
        self.downFinished = downFinished
    }
}

/// Byte counters an `UpstreamStream` implementation updates on its own threads and the Gate
/// reads from its timer and the admin handler: relaxed atomics, one add per read or write.
public final class StreamByteCounters: Sendable {
    private let up = Atomic<UInt64>(0)
    private let down = Atomic<UInt64>(0)
    private let upEnded = Atomic<Bool>(false)
    private let downEnded = Atomic<Bool>(false)

    public init() {}

    /// Counts bytes client → destination.
    public func addUp(_ n: Int) { up.wrappingAdd(UInt64(n), ordering: .relaxed) }
    /// Counts bytes destination → client.
    public func addDown(_ n: Int) { down.wrappingAdd(UInt64(n), ordering: .relaxed) }
    /// The client half-closed (its FIN goes on to the destination).
    public func finishUp() { upEnded.store(true, ordering: .relaxed) }
    /// The destination's end was written to the client as a FIN.
    public func finishDown() { downEnded.store(true, ordering: .relaxed) }

    public var snapshot: StreamBytes {
        StreamBytes(
            up: up.load(ordering: .relaxed), down: down.load(ordering: .relaxed), upFinished: upEnded.load(ordering: .relaxed),
            downFinished: downEnded.load(ordering: .relaxed))
    }
}

/// The captured side of a stream handed to an `UpstreamStream`.
public struct CapturedClient: Sendable {
    /// The client socket; the stream owns (and closes) it from `attach` on.
    public var fd: Int32
    /// Bytes already read from the client (sniffed, or sent early after a SOCKS5 request)
    /// that go to the destination before anything else.
    public var prefix: [UInt8]
    /// Called once when the stream ended, with what it moved (the access log line and metrics).
    public var finished: @Sendable (StreamTotals) -> Void

    public init(fd: Int32, prefix: [UInt8], finished: @escaping @Sendable (StreamTotals) -> Void) {
        self.fd = fd
        self.prefix = prefix
        self.finished = finished
    }
}

/// What a stream carried by an `UpstreamStream` moved, and how it ended.
public struct StreamTotals: Sendable, Equatable {
    /// Bytes client → destination, the prefix included.
    public var bytesUp: UInt64
    /// Bytes destination → client.
    public var bytesDown: UInt64
    /// Both directions ended with a half-close (FIN / END_STREAM); false after a reset or error.
    public var clean: Bool
    /// Why it did not end cleanly, when known.
    public var detail: String?

    public init(bytesUp: UInt64, bytesDown: UInt64, clean: Bool, detail: String? = nil) {
        self.bytesUp = bytesUp
        self.bytesDown = bytesDown
        self.clean = clean
        self.detail = detail
    }
}

/// An error an upstream throws with the HTTP status the far end answered (a mesh peer's tunnel
/// response): 403 the peer refused the destination, 502/503 it could not connect, 504 no answer
/// in time. Capture fronts pass it on — HTTP CONNECT with that status, SOCKS5 with the nearest
/// reply code (RFC 1928 §6) — and the error's description as the reason.
public protocol UpstreamStatusError: Error, CustomStringConvertible {
    /// The far end's status, nil when there was none (the connection to the peer failed).
    var upstreamStatus: Int? { get }
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
