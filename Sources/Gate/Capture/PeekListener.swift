import Glibc
import Logging
import Synchronization

/// A TCP listener on the Gate's loops for a port whose connections are either forwarded by the
/// Gate (its relay: `splice(2)` or large-buffer copy, `forwarder`) or served by another stack
/// (the mesh port: TLS naming another node is forwarded undecrypted by SNI; everything else is
/// handed to SwiftNIO, which adopts the socket). Each accepted connection is peeked with a
/// bound: when its first byte starts a TLS handshake record (0x16), until the ClientHello parses,
/// `sniffBytes` are in or `sniffTimeout` passes; any other first byte is not peeked further.
/// `decide` then picks a `Verdict`.
///
/// Forwarded streams appear in the access log and in `/debug/streams`-style snapshots
/// (`streams()`) with the listener's name and the verdict's upstream name.
public final class PeekListener: Sendable {
    /// What becomes of a peeked connection.
    public enum Verdict: Sendable {
        /// Connect to the destination (an IP literal on the connection's loop, a name through the
        /// resolver) and relay both ways with the Gate's forwarder, the peeked bytes first.
        /// `upstream` names the target in the access log and stream snapshots.
        case forward(Destination, upstream: String)
        /// Give the socket and the bytes read from it to `handOff`, which owns the socket then
        /// (it may give it back with `relay`).
        case handOff
    }

    /// A connection after its peek.
    public struct Peeked: Sendable {
        /// The accepted socket (non-blocking, close-on-exec). Owned by `handOff` when it gets it.
        public let fd: Int32
        /// Bytes already read from the socket; they must be processed before anything read later.
        public let bytes: [UInt8]
        /// The client's address, `host:port`.
        public let source: String
        /// The TLS SNI, when the bytes are a ClientHello that names one.
        public let serverName: String?
        let info: StreamInfo
        let loop: GateLoop
    }

    private let listener: TCPListener
    private let context: GateContext
    private let forwarder: ForwardMode

    /// Binds `address` once per loop of `loops` (`SO_REUSEPORT`); call `start` to accept.
    /// Uses `config`'s `sniffBytes`, `sniffTimeout`, `connectTimeout` and `idleTimeout`.
    public init(
        name: String, address: SocketAddress, loops: GateLoopGroup, config: GateConfig = GateConfig(),
        forwarder: ForwardMode, accessLog: Logger, log: Logger,
        decide: @escaping @Sendable (Peeked) -> Verdict, handOff: @escaping @Sendable (PeekListener, Peeked) -> Void
    ) throws {
        let direct = DirectUpstream(loops: loops, connectTimeout: config.connectTimeout)
        let context = GateContext(
            config: config, router: try Router(rules: [], hosts: [:], direct: direct), loops: loops, accessLog: accessLog, log: log)
        self.context = context
        self.forwarder = forwarder
        let handOffBox = HandOff()
        listener = try TCPListener(name: name, proto: .tcp, address: address, context: context) { bound in
            PeekFront(
                listener: name, port: bound.port, context: context, mode: forwarder, direct: direct, decide: decide,
                handOff: handOffBox)
        }
        // Weak: a connection still peeking when the listener is gone is closed instead.
        handOffBox.target.withLock { $0 = { [weak self] peeked in if let self { handOff(self, peeked) } else { Glibc.close(peeked.fd) } } }
    }

    /// Relays a handed-off connection (its peeked bytes first) with `upstream`, a connected
    /// socket of the caller's, on the Gate's forwarder; takes ownership of both descriptors.
    /// `upstreamName` names the target in the access log and stream snapshots.
    public func relay(_ peeked: Peeked, upstream: Int32, upstreamName: String) {
        let loop = peeked.loop
        loop.execute { [context, forwarder] in
            context.startRelay(
                loop: loop, client: peeked.fd, upstream: upstream, info: peeked.info, upstreamName: upstreamName, mode: forwarder,
                prefix: peeked.bytes)
        }
    }

    /// The bound address (with the real port when 0 was asked for).
    public var address: SocketAddress { listener.address }

    public func start() { listener.start() }

    /// Stops accepting; forwarded streams keep running until they end.
    public func stop() { listener.stop() }

    /// The streams this listener forwards right now (on the loops it shares with others, only its own).
    public func streams() async -> [StreamSnapshot] {
        await context.loops.snapshots().filter { $0.listener == listener.name }
    }
}

/// The capture front of a `PeekListener`: bounded TLS peek, then the owner's verdict.
private struct PeekFront: CaptureFront {
    /// The listener's name and port, for the stream's `StreamInfo`.
    let listener: String, port: UInt16
    let context: GateContext
    let mode: ForwardMode
    let direct: DirectUpstream
    let decide: @Sendable (PeekListener.Peeked) -> PeekListener.Verdict
    let handOff: HandOff

    func serve(_ conn: ClientConn) async {
        var info = StreamInfo(listener: listener, source: conn.peer, destination: Destination(host: "", port: port))
        let deadline = GateLoop.monotonicMillis() + UInt64(context.config.sniffTimeout * 1000)
        let limit = context.config.sniffBytes
        // Only a TLS handshake record is worth waiting for; anything else goes on at once.
        while conn.inbox.first ?? 0x16 == 0x16, Sniffing.classify(conn.inbox, limit: limit, into: &info) == nil {
            guard (try? await conn.read(max: max(1, limit - conn.inbox.count), deadline: deadline)) == true else { break }
        }
        let peeked = PeekListener.Peeked(
            fd: conn.fd, bytes: conn.inbox, source: conn.peer, serverName: info.serverName, info: info, loop: conn.loop)
        switch decide(peeked) {
        case .handOff:
            _ = conn.handOff()
            handOff.target.withLock { $0 }?(peeked)
        case .forward(let destination, let upstream):
            info.destination = destination
            if let address = try? SocketAddress(host: destination.host, port: destination.port) {
                let bytes = conn.takeInbox()
                let client = conn.handOff()
                conn.loop.execute { [context, mode, info] in
                    PendingConnect.start(
                        loop: conn.loop, client: client, address: address, info: info, upstreamName: upstream, mode: mode,
                        prefix: bytes, context: context)
                }
                return
            }
            do {
                let fd = try await direct.dial(destination, for: info)
                context.relay(conn, upstream: fd, info: info, upstreamName: upstream, mode: mode)
            } catch {
                context.dialFailed(info, error)
                conn.close(reset: true)
            }
        }
    }
}

/// The owner's hand-off with the listener bound in (set once, right after the listener exists).
private final class HandOff: Sendable {
    let target = Mutex<(@Sendable (PeekListener.Peeked) -> Void)?>(nil)
}
