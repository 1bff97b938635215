/// The datagram service DTLS runs over: ICE in production, an in-memory pipe in tests.
///
/// A session calls ``start(receive:)`` (or ``startBatched(receive:)``) once, then ``send(_:)``
/// or ``send(batch:)`` for outgoing datagrams from its loop, and ``close()`` when it ends.
/// Implementations must not block in `send`.
public protocol DatagramTransport: AnyObject, Sendable {
    /// Begins delivery of incoming datagrams: `receive` is called once per datagram, in arrival
    /// order, from any thread.
    func start(receive: @escaping @Sendable ([UInt8]) -> Void)
    /// Begins delivery in batches: `receive` gets every datagram that arrived since its last
    /// call, in arrival order. The default calls ``start(receive:)`` with one-element batches.
    func startBatched(receive: @escaping @Sendable ([[UInt8]]) -> Void)
    /// Sends one datagram (a DTLS record or flight fragment). May drop it, like UDP.
    func send(_ datagram: [UInt8])
    /// Sends several datagrams in order. The default calls ``send(_:)`` for each.
    func send(batch: [[UInt8]])
    /// Stops delivery; later `send` calls are ignored.
    func close()
    /// The thread the transport delivers on, when the session's loop may run there too (the
    /// ICE loop): nil (the default) keeps the loop on its own queue.
    var preferredExecutor: (any DataChannelExecutor)? { get }
    /// The largest datagram both ends accept and the path carries, when the transport knows a
    /// value above the session's handshake MTU (ICE: the smaller of both peers'
    /// `a=ugate-max-datagram-size`, capped by the selected pair's kernel path MTU). The session
    /// asks on its loop when the DTLS handshake is done and sizes records and SCTP packets by
    /// it; then again after ``observeMaximumDatagramSizeChanges(_:)`` fires and once a second
    /// while above `mtu`, lowering (never raising) the size. nil (the default): the configured
    /// `mtu`.
    var maximumDatagramSize: Int? { get }
    /// Calls `changed` (from any thread, every time) when ``maximumDatagramSize`` may have
    /// changed: ICE selected another pair (an ICE restart, or nomination switching pairs). A
    /// session past its handshake then asks again and lowers its datagram size if the new
    /// value is smaller. Default: never (the value is fixed).
    func observeMaximumDatagramSizeChanges(_ changed: @escaping @Sendable () -> Void)
    /// Calls `ready` once the transport can carry datagrams (ICE: a pair is connected), from any
    /// thread, or at once when it already can. ``DataChannelSession/connect()`` starts the DTLS
    /// handshake from there, so an ICE transport that calls back on its own thread has the
    /// first flight out in the same loop pass. Default: at once.
    func whenReady(_ ready: @escaping @Sendable () -> Void)
}

extension DatagramTransport {
    public func startBatched(receive: @escaping @Sendable ([[UInt8]]) -> Void) {
        start { receive([$0]) }
    }

    public func send(batch: [[UInt8]]) {
        for datagram in batch { send(datagram) }
    }

    public var preferredExecutor: (any DataChannelExecutor)? { nil }

    public var maximumDatagramSize: Int? { nil }

    public func observeMaximumDatagramSizeChanges(_ changed: @escaping @Sendable () -> Void) {}

    public func whenReady(_ ready: @escaping @Sendable () -> Void) { ready() }
}

/// RFC 7983 §7 demultiplexing of the first byte of a datagram arriving on an ICE component.
public enum DatagramKind: Sendable, Equatable {
    /// 0–3: STUN.
    case stun
    /// 16–19: ZRTP.
    case zrtp
    /// 20–63: DTLS.
    case dtls
    /// 64–79: TURN channel data.
    case turnChannel
    /// 128–191: RTP/RTCP.
    case rtp
    /// Anything else (dropped).
    case unknown

    /// Classifies a datagram by its first byte ([RFC 7983 §7](https://www.rfc-editor.org/rfc/rfc7983#section-7)).
    public static func classify<C: Collection>(_ datagram: C) -> DatagramKind where C.Element == UInt8 {
        guard let first = datagram.first else { return .unknown }
        switch first {
        case 0...3: return .stun
        case 16...19: return .zrtp
        case 20...63: return .dtls
        case 64...79: return .turnChannel
        case 128...191: return .rtp
        default: return .unknown
        }
    }
}
