import DataChannel
import ICE
import Synchronization

/// Adapts an ``ICEAgent``'s single component to DataChannel's ``DatagramTransport``.
///
/// Threading: the adapter offers the agent's ``ICEEventLoop`` thread as the data-channel loop's
/// executor (``preferredExecutor``), so when the loop runs there a datagram goes libnice →
/// DTLS → SCTP → channel inbox on one thread, and records go back to `nice_agent_send` on it:
/// - receive: ``ICEAgent/receiveOnLoop(_:)`` hands every datagram read in one GLib iteration
///   to the session as one batch, in a job after the I/O (not inside the libnice callback);
/// - send: ``ICEAgent/send(batch:)`` from that thread goes to the socket at once.
/// If the loop runs elsewhere (another session was alive on another thread first), the same
/// calls still work and the session hops onto its loop per batch.
///
/// Copies: libnice's receive callback copies each datagram once into a `[UInt8]`; nothing else
/// is copied here. libnice consumes STUN itself; the session keeps DTLS records (RFC 7983 first
/// byte 20–63) and drops anything else (RTP, ZRTP, stray bytes).
final class ICEDatagramTransport: DatagramTransport {
    private let agent: ICEAgent
    private let executor: ICELoopExecutor
    private let closed = Atomic<Bool>(false)
    private let agreedMaximumDatagramSize: Int?

    /// - Parameter agreedMaximumDatagramSize: the smaller of both peers'
    ///   `a=ugate-max-datagram-size`, nil when either side did not advertise one.
    init(agent: ICEAgent, agreedMaximumDatagramSize: Int?) {
        self.agent = agent
        self.executor = ICELoopExecutor.for(agent.eventLoop)
        self.agreedMaximumDatagramSize = agreedMaximumDatagramSize
    }

    var preferredExecutor: (any DataChannelExecutor)? { executor }

    /// What both peers agreed on, capped by the selected pair's kernel path MTU; nil (stay at
    /// the handshake MTU) without an agreement or for a pair whose path the kernel does not
    /// know (NAT, TURN, TCP). Asked after the DTLS handshake and after every change of the
    /// selected pair.
    var maximumDatagramSize: Int? {
        guard let agreedMaximumDatagramSize else { return nil }
        // No pair selected (an ICE restart in progress): nothing new known, keep the size.
        guard agent.selectedPair != nil else { return agreedMaximumDatagramSize }
        guard let path = agent.selectedPathMaximumDatagramSize else { return nil }
        return min(agreedMaximumDatagramSize, path)
    }

    /// A new selected pair (ICE restart, nomination switching pairs) may have a smaller path:
    /// the session asks ``maximumDatagramSize`` again.
    func observeMaximumDatagramSizeChanges(_ changed: @escaping @Sendable () -> Void) {
        guard agreedMaximumDatagramSize != nil else { return }  // 1200 on every pair
        agent.observeSelectedPairChanges { _ in changed() }
    }

    /// ICE connected: called on the ICE loop thread in the pass that announces it, so the DTLS
    /// client's first flight leaves without a task hop.
    func whenReady(_ ready: @escaping @Sendable () -> Void) {
        agent.whenConnected(ready)
    }

    func start(receive: @escaping @Sendable ([UInt8]) -> Void) {
        startBatched { batch in batch.forEach(receive) }
    }

    func startBatched(receive: @escaping @Sendable ([[UInt8]]) -> Void) {
        // The inbox drops this handler (and so the reference to self) when the agent closes.
        agent.receiveOnLoop { [self] batch in
            guard !closed.load(ordering: .relaxed) else { return }
            receive(batch)  // the session keeps DTLS records only (RFC 7983)
        }
    }

    func send(_ datagram: [UInt8]) {
        send(batch: [datagram])
    }

    func send(batch: [[UInt8]]) {
        guard !closed.load(ordering: .relaxed) else { return }
        // A full ICE send queue drops records, as a full UDP socket buffer would; SCTP
        // retransmits and its congestion control slows down.
        agent.send(batch: batch)
    }

    func close() {
        closed.store(true, ordering: .relaxed)
    }
}

/// An ``ICEEventLoop`` as a ``DataChannelExecutor``: one instance per loop, so the data-channel
/// loop can tell whether it already runs there.
final class ICELoopExecutor: DataChannelExecutor {
    private static let instances = Mutex<[ObjectIdentifier: ICELoopExecutor]>([:])

    let loop: ICEEventLoop

    private init(loop: ICEEventLoop) { self.loop = loop }

    /// The executor for `loop` (ICE loops live for the whole process, so do these).
    static func `for`(_ loop: ICEEventLoop) -> ICELoopExecutor {
        instances.withLock { instances in
            if let existing = instances[ObjectIdentifier(loop)] { return existing }
            let executor = ICELoopExecutor(loop: loop)
            instances[ObjectIdentifier(loop)] = executor
            return executor
        }
    }

    func execute(_ job: @escaping @Sendable () -> Void) { loop.execute(job) }

    var isCurrent: Bool { loop.inLoop }
}
