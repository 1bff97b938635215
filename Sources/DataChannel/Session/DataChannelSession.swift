import Dispatch
import Logging
import Synchronization
internal import CUsrsctp
#if canImport(Glibc)
import Glibc
#endif

/// One DTLS association with one SCTP association on top, carrying data channels: the part of
/// a WebRTC peer connection above ICE ([RFC 8831](https://www.rfc-editor.org/rfc/rfc8831),
/// [RFC 8261](https://www.rfc-editor.org/rfc/rfc8261)).
///
/// Give it a ``DatagramTransport`` (the selected ICE pair) and a configuration from the SDP
/// exchange, call ``connect()``, then ``openChannel(label:options:)`` and/or read
/// ``incomingChannels``. All DTLS and SCTP work runs on the process's data-channel loop
/// (see docs/datachannel.md); public methods may be called from any thread or task.
public final class DataChannelSession: @unchecked Sendable {  // protocol state is confined to DataChannelLoop's executor; `published` is a Mutex
    /// Session state, in order.
    public enum State: Sendable, Equatable {
        /// Created; ``connect()`` not called yet.
        case new
        /// DTLS handshake running.
        case handshaking
        /// DTLS up, SCTP association being set up.
        case connecting
        /// SCTP association up: channels can be opened.
        case connected
        /// Closed locally or by the peer.
        case closed
        /// Failed (handshake, fingerprint, association lost); the error says why.
        case failed(DataChannelError)
    }

    /// When the session reached each connecting phase (monotonic clock), for open-time breakdowns.
    public struct Timeline: Sendable, Equatable {
        /// The transport reported ready (ICE connected; ``DatagramTransport/whenReady(_:)``).
        public var transportReady: ContinuousClock.Instant?
        /// The DTLS handshake began (on the loop, right after ``transportReady``).
        public var handshakeStarted: ContinuousClock.Instant?
        /// The DTLS handshake finished (SCTP INIT goes out now).
        public var handshakeDone: ContinuousClock.Instant?
        /// The SCTP association came up (COMMUNICATION_UP).
        public var associationUp: ContinuousClock.Instant?

        /// An empty timeline (nothing happened yet).
        public init() {}
    }

    /// How a session ended (``closeReason``).
    public enum CloseReason: String, Sendable, Equatable {
        /// ``close()``: every queued message was acknowledged, then SCTP SHUTDOWN completed.
        case localShutdown
        /// The peer shut SCTP down gracefully (SHUTDOWN); everything it sent was received.
        case peerShutdown
        /// ``abort()``, a failure, or a graceful close that did not finish in time: SCTP ABORT.
        case localAbort
        /// The peer aborted the association (ABORT) or it was lost.
        case peerAbort
        /// The peer sent DTLS close_notify without shutting SCTP down first.
        case peerCloseNotify
    }

    /// The configuration the session was created with.
    public let configuration: DataChannelSessionConfiguration
    /// Channels the peer opens (DCEP), in order. Ends when the session ends.
    public let incomingChannels: AsyncStream<DataChannel>
    /// Every state change, in order (the newest 16 are kept if nobody listens); ends after
    /// `.closed` or `.failed`.
    public let stateUpdates: AsyncStream<State>

    let loop = DataChannelLoop.shared
    private let transport: any DatagramTransport
    private let logger: Logger
    private let published = Mutex<State>(.new)
    private let publishedCloseReason = Mutex<CloseReason?>(nil)
    private let incomingContinuation: AsyncStream<DataChannel>.Continuation
    private let stateContinuation: AsyncStream<State>.Continuation
    /// Datagrams from the transport waiting for the loop, and whether a drain is scheduled:
    /// one loop hop per burst instead of one per datagram.
    private let arrivals = Mutex<(datagrams: [[UInt8]], drainScheduled: Bool)>(([], false))
    /// Bytes delivered to channel inboxes and not yet received by the application, and whether
    /// reading from SCTP is paused because of them (receive flow control).
    private let unread = Mutex<(bytes: Int, paused: Bool)>((0, false))
    private let publishedTimeline = Mutex(Timeline())
    /// The datagram size in use (``datagramSize``).
    private let publishedMTU: Atomic<Int>

    // MARK: Loop-confined state

    private struct Outgoing {
        let channel: DataChannel
        let payload: [UInt8]
        let ppid: PayloadProtocolIdentifier
        /// Bytes counted in the channel's bufferedAmount (0 for DCEP and empty messages).
        let accounted: Int
        var offset = 0
    }

    private var phase: State = .new
    /// ``connect()`` asked the transport to call back when ready (the handshake starts then).
    private var waitingForTransport = false
    private var contextID = 0
    private var dtls: DTLSConnection?
    private var socket: OpaquePointer?  // struct socket*
    private var outbox: [[UInt8]] = []
    /// The last gap-free SACK-only packet of this pass, not yet encrypted (`acknowledgement.merge`):
    /// replaced by a newer one, written before any other packet and at the end of the pass.
    private var heldSACK: [UInt8]?
    private let mergeSACKs: Bool
    private var reassembly: [UInt16: [UInt8]] = [:]
    private var oversized: Set<UInt16> = []
    private var channels: [UInt16: DataChannel] = [:]
    private var orphanMessages: [UInt16: [DataChannelMessage]] = [:]
    private var sendQueue = FIFO<Outgoing>()
    private var sendBlocked = false
    /// When the loop tick next asks the transport for its datagram size (larger sizes only).
    private var nextPathCheck: UInt64 = 0
    private static let pathCheckIntervalNanoseconds: UInt64 = 1_000_000_000
    private var pendingResets: [UInt16] = []
    private var outboundStreams: UInt16 = 0
    private var inboundStreams: UInt16 = 0
    private var connectWaiters: [CheckedContinuation<Void, any Error>] = []
    private var fingerprintFailure: DataChannelError?
    /// Graceful close progress: waiting for the send queue, SHUTDOWN sent, or the peer's seen.
    private enum Shutdown { case none, draining, sent, peer }
    private var shutdown = Shutdown.none
    private var shutdownDeadline: UInt64 = 0
    private var peerAborted = false
    /// True while teardown reads what SCTP still holds (notifications then only record).
    private var finalDrain = false
    private var srtpKeyingMaterial: [UInt8]?

    /// Creates a session; nothing happens until ``connect()``.
    public init(transport: any DatagramTransport, configuration: DataChannelSessionConfiguration,
                logger: Logger = Logger(label: "ugate.datachannel")) {
        self.transport = transport
        self.configuration = configuration
        self.logger = logger
        self.publishedMTU = Atomic(configuration.mtu)
        self.mergeSACKs = configuration.acknowledgement?.merge ?? false
        let (stream, continuation) = AsyncStream.makeStream(of: DataChannel.self)
        incomingChannels = stream
        incomingContinuation = continuation
        let (updates, updatesContinuation) = AsyncStream.makeStream(of: State.self, bufferingPolicy: .bufferingNewest(16))
        stateUpdates = updates
        stateContinuation = updatesContinuation
    }

    /// The current state.
    public var state: State { published.withLock { $0 } }

    /// When the handshake started and finished and the association came up.
    public var timeline: Timeline { publishedTimeline.withLock { $0 } }

    /// The largest datagram the session emits: the configured `mtu` until the DTLS handshake is
    /// done, then the transport's ``DatagramTransport/maximumDatagramSize`` when it reports a
    /// larger one (capped at one full DTLS record).
    public var datagramSize: Int { publishedMTU.load(ordering: .relaxed) }

    /// Starts the DTLS handshake once the transport is ready (``DatagramTransport/whenReady(_:)``;
    /// at once when it already is) and waits until the SCTP association is up.
    public func connect() async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            let begin: @Sendable () -> Void = {
                if self.phase == .new, !self.waitingForTransport {
                    self.waitingForTransport = true
                    self.transport.whenReady {
                        self.publishedTimeline.withLock { $0.transportReady = .now }
                        self.loop.execute { self.startIfNeeded() }
                    }
                }
                switch self.phase {
                case .connected: continuation.resume()
                case .closed: continuation.resume(throwing: DataChannelError(.closed, "session closed"))
                case .failed(let error): continuation.resume(throwing: error)
                default: self.connectWaiters.append(continuation)
                }
            }
            if state == .new, let executor = transport.preferredExecutor {
                // Run DTLS/SCTP on the transport's thread when the loop is free to move there.
                loop.adopt(executor) { moved in
                    if !moved { self.logger.debug("data-channel loop busy on another thread; datagrams will hop threads") }
                    begin()
                }
            } else {
                loop.execute(begin)
            }
        }
    }

    /// Opens a channel. In-band channels (no `negotiatedID`) get the next free stream id of our
    /// parity (even for the DTLS client, RFC 8832 §6) and return once DATA_CHANNEL_ACK arrives;
    /// pre-negotiated channels use the agreed id and return at once.
    public func openChannel(label: String, options: DataChannelOptions = DataChannelOptions()) async throws -> DataChannel {
        try await connect()
        return try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<DataChannel, any Error>) in
            loop.execute { self.open(label: label, options: options, continuation: continuation) }
        }
    }

    /// Closes the session gracefully: no new messages are accepted, queued ones are handed to
    /// SCTP, SCTP SHUTDOWN is sent once the peer acknowledged all of them (RFC 9260 §9.2), and
    /// when the association is gone DTLS sends close_notify and the transport closes. If that
    /// takes longer than ``DataChannelSessionConfiguration/shutdownTimeout`` the association is
    /// aborted. Before the association is up this is ``abort()``. Every channel then becomes
    /// closed; pending operations fail with ``DataChannelError/Code/closed``.
    public func close() {
        loop.execute { self.beginShutdown() }
    }

    /// Closes the session at once: SCTP ABORT (unsent and unacknowledged data is lost), DTLS
    /// close_notify, transport closed.
    public func abort() {
        loop.execute { self.teardown(.closed, notifyPeer: true, reason: .localAbort) }
    }

    /// How the session ended; nil while it is open.
    public var closeReason: CloseReason? { publishedCloseReason.withLock { $0 } }

    /// SRTP keys exported after the handshake (RFC 5764 §4.2) for the negotiated profile, split by
    /// our DTLS role; nil before the handshake or when `use_srtp` was not negotiated.
    public func srtpKeys() async -> SRTPKeys? {
        await withCheckedContinuation { continuation in
            loop.execute {
                guard let profile = self.dtls?.srtpProfile, let material = self.srtpKeyingMaterial else {
                    return continuation.resume(returning: nil)
                }
                continuation.resume(returning: SRTPKeys(profile: profile, keyingMaterial: material, role: self.configuration.role))
            }
        }
    }

    /// The SCTP association's delayed-SACK setting as usrsctp reports it (the configured
    /// ``DataChannelSessionConfiguration/acknowledgement``, or the process default); nil before
    /// the SCTP socket exists or after it is closed.
    public func acknowledgementInUse() async -> SCTPAcknowledgement? {
        await withCheckedContinuation { continuation in
            loop.execute {
                var delay: UInt32 = 0
                var packets: UInt32 = 0
                guard let socket = self.socket, ugate_sctp_get_delayed_sack(socket, &delay, &packets) == 0 else {
                    return continuation.resume(returning: nil)
                }
                continuation.resume(returning: SCTPAcknowledgement(
                    packets: Int(packets), delayMilliseconds: Int(delay), merge: self.mergeSACKs))
            }
        }
    }

    /// Number of sessions alive in this process (registered with the loop), for leak checks.
    public static func liveSessionCount() -> Int { DataChannelLoop.shared.liveCount() }

    // MARK: Lifecycle (loop)

    private func setPhase(_ state: State) {
        phase = state
        let now = ContinuousClock.now
        switch state {
        case .handshaking: publishedTimeline.withLock { $0.handshakeStarted = now }
        case .connecting: publishedTimeline.withLock { $0.handshakeDone = now }
        case .connected: publishedTimeline.withLock { $0.associationUp = now }
        default: break
        }
        published.withLock { $0 = state }
        stateContinuation.yield(state)
        switch state {
        case .closed, .failed: stateContinuation.finish()
        default: break
        }
    }

    private func startIfNeeded() {
        guard phase == .new else { return }
        contextID = loop.register(self)
        do {
            dtls = try DTLSConnection(identity: configuration.identity, role: configuration.role,
                                      contextID: contextID, mtu: configuration.mtu, loop: loop)
        } catch let error as DataChannelError {
            return teardown(.failed(error), notifyPeer: false)
        } catch {
            return teardown(.failed(DataChannelError(.openssl, "\(error)")), notifyPeer: false)
        }
        setPhase(.handshaking)
        transport.startBatched { [weak self] batch in self?.arrived(batch) }
        if configuration.role == .client { driveHandshake() }
        afterIO()
    }

    /// Transport side (any thread). On the loop's own thread (the ICE loop delivering between
    /// its I/O iterations) the batch is processed at once; elsewhere — or when it arrives inside
    /// a session's own send to its transport (a synchronous in-memory pipe) — it is queued and
    /// the loop drains the queue: one loop hop per burst instead of one per datagram.
    private func arrived(_ batch: [[UInt8]]) {
        if loop.isCurrent, loop.handingToTransport == 0, arrivals.withLock({ $0.datagrams.isEmpty && !$0.drainScheduled }) {
            for datagram in batch { receiveDatagram(datagram) }
            afterIO()
            return
        }
        let schedule = arrivals.withLock { arrivals in
            arrivals.datagrams.append(contentsOf: batch)
            defer { arrivals.drainScheduled = true }
            return !arrivals.drainScheduled
        }
        if schedule { loop.execute { self.drainArrivals() } }
    }

    private func drainArrivals() {
        let datagrams = arrivals.withLock { arrivals in
            arrivals.drainScheduled = false
            defer { arrivals.datagrams.removeAll(keepingCapacity: true) }
            return arrivals.datagrams
        }
        for datagram in datagrams { receiveDatagram(datagram) }
        afterIO()
    }

    private func receiveDatagram(_ datagram: [UInt8]) {
        guard let dtls, DatagramKind.classify(datagram) == .dtls else { return }
        dtls.feed(datagram)
        if phase == .handshaking {
            driveHandshake()
        } else {
            readApplicationData()
        }
    }

    private func driveHandshake() {
        guard let dtls else { return }
        switch dtls.handshake() {
        case .inProgress: break
        case .failed(let error): teardown(.failed(fingerprintFailure ?? DataChannelError(.handshakeFailed, error.context)), notifyPeer: false)
        case .done: handshakeCompleted()
        }
    }

    private func handshakeCompleted() {
        guard let dtls else { return }
        guard let der = dtls.peerCertificateDER() else {
            return teardown(.failed(DataChannelError(.handshakeFailed, "peer sent no certificate")), notifyPeer: true)
        }
        if let mismatch = CertificateFingerprint.verify(certificateDER: der, against: configuration.remoteFingerprints) {
            return teardown(.failed(mismatch), notifyPeer: true)
        }
        if let profile = dtls.srtpProfile, let lengths = SRTPKeys.lengths(profile: profile) {
            srtpKeyingMaterial = dtls.exportSRTPKeyingMaterial(length: 2 * (lengths.key + lengths.salt))
        }
        // Handshake flights stay at the configured MTU (≈ 1200, safe on any path); records and
        // SCTP packets may be larger from now on when both ends and the path allow it.
        let dataMTU = configuration.dataMTU(transportLimit: transport.maximumDatagramSize)
        if dataMTU != configuration.mtu { dtls.setMTU(dataMTU) }
        publishedMTU.store(dataMTU, ordering: .relaxed)
        logger.debug("DTLS handshake done", metadata: [
            "dtls.role": "\(configuration.role)", "srtp": "\(dtls.srtpProfile ?? "none")", "mtu": "\(dataMTU)",
        ])
        setPhase(.connecting)
        do {
            try openSCTPSocket(datagramSize: dataMTU)
        } catch let error as DataChannelError {
            return teardown(.failed(error), notifyPeer: true)
        } catch {
            return teardown(.failed(DataChannelError(.sctp, "\(error)")), notifyPeer: true)
        }
        transport.observeMaximumDatagramSizeChanges { [weak self] in
            guard let self else { return }
            self.loop.execute { self.transportLimitChanged() }
        }
        readApplicationData()
    }

    /// The transport's path changed (ICE selected another pair; or, checked once a second while
    /// above `mtu`, the same pair's path MTU went down): when it now carries less than the size
    /// in use, DTLS records and SCTP packets shrink to it. Never grows again: usrsctp
    /// fragments DATA by the association's smallest path MTU, which a larger value does not
    /// raise. DATA chunks usrsctp cut before the change keep their size (SCTP cannot split them
    /// again; `sctp_pathmtu_adjustment` marks them may-fragment and resends them as they are):
    /// those few datagrams leave above the new size and rely on IP fragmentation.
    private func transportLimitChanged() {
        guard phase == .connected || phase == .connecting, let dtls, let socket else { return }
        let current = publishedMTU.load(ordering: .relaxed)
        let next = configuration.dataMTU(transportLimit: transport.maximumDatagramSize)
        guard next < current else { return }
        dtls.setMTU(next)
        let pathMTU = configuration.sctpPathMTU(datagram: next, aead: dtls.negotiatedAEAD)
        let rc = ugate_sctp_lower_association_path_mtu(socket, UInt32(pathMTU))
        if rc != 0 {
            logger.warning("lowering the SCTP path MTU failed", metadata: ["mtu": "\(pathMTU)", "errno": "\(rc)"])
        }
        publishedMTU.store(next, ordering: .relaxed)
        logger.debug("datagram size lowered (path changed)", metadata: ["from": "\(current)", "to": "\(next)"])
    }

    private func openSCTPSocket(datagramSize: Int) throws {
        let context = contextPointer(for: contextID)
        usrsctp_register_address(context)
        let buffer = UInt32(configuration.sctpBufferSize)
        guard let socket = ugate_sctp_new_socket(sctpUpcall, context) else {
            throw DataChannelError(.sctp, "usrsctp_socket failed: errno \(errno)")
        }
        self.socket = socket
        var failedOption: Int32 = 0
        var rc = ugate_sctp_configure(socket, configuration.maxStreams, buffer, buffer, &failedOption)
        guard rc == 0 else { throw DataChannelError(.sctp, "usrsctp_setsockopt #\(failedOption) failed: errno \(rc)") }
        let pathMTU = configuration.sctpPathMTU(datagram: datagramSize, aead: dtls?.negotiatedAEAD ?? false)
        rc = ugate_sctp_set_path_mtu(socket, UInt32(pathMTU))
        guard rc == 0 else { throw DataChannelError(.sctp, "SCTP_PEER_ADDR_PARAMS (path MTU \(pathMTU)) failed: errno \(rc)") }
        if let acknowledgement = configuration.acknowledgement {
            rc = ugate_sctp_set_delayed_sack(socket, UInt32(acknowledgement.delayMilliseconds), UInt32(acknowledgement.packets))
            guard rc == 0 else { throw DataChannelError(.sctp, "SCTP_DELAYED_SACK (\(acknowledgement)) failed: errno \(rc)") }
        }
        rc = ugate_sctp_bind(socket, UInt(contextID), configuration.localSCTPPort)
        guard rc == 0 else { throw DataChannelError(.sctp, "usrsctp_bind port \(configuration.localSCTPPort) failed: errno \(rc)") }
        // Both sides connect: simultaneous open (RFC 8841 §9.3).
        rc = ugate_sctp_connect(socket, UInt(contextID), configuration.remoteSCTPPort)
        guard rc == 0 else { throw DataChannelError(.sctp, "usrsctp_connect port \(configuration.remoteSCTPPort) failed: errno \(rc)") }
    }

    private func readApplicationData() {
        guard let dtls else { return }
        let context = contextPointer(for: contextID)
        let verifyChecksum = loop.checksumOffloaded
        let result = dtls.readApplicationData { record in
            guard socket != nil, let packet = record.baseAddress else { return }
            if verifyChecksum, ugate_sctp_checksum_valid(packet.assumingMemoryBound(to: UInt8.self), record.count) != 1 {
                logger.debug("dropping SCTP packet with a bad checksum", metadata: ["bytes": "\(record.count)"])
                return
            }
            usrsctp_conninput(context, packet, record.count, 0)
        }
        switch result {
        case .drained: break
        case .closedByPeer:
            // close_notify right behind the peer's SHUTDOWN (this side had not read to the end
            // of the stream yet, e.g. paused by flow control): still a graceful shutdown.
            let ending = socket.map { ugate_sctp_association_state($0) != Int32(SCTP_ESTABLISHED) } ?? false
            teardown(.closed, notifyPeer: false, reason: shutdownReason(otherwise: ending ? .peerShutdown : .peerCloseNotify))
        case .failed(let error): teardown(.failed(error), notifyPeer: false)
        }
    }

    /// Called on the loop every 10 ms: DTLS retransmissions, stalled sends, pending resets.
    func loopTick(nowNanoseconds: UInt64) {
        if shutdown != .none, nowNanoseconds >= shutdownDeadline {
            logger.debug("graceful close timed out; aborting", metadata: ["timeout": "\(configuration.shutdownTimeout)"])
            return teardown(.closed, notifyPeer: true, reason: .localAbort)
        }
        if phase == .handshaking, let dtls, dtls.timeoutRemainingNanoseconds() == 0 {
            if !dtls.handleTimeout() {
                return teardown(.failed(DataChannelError(.handshakeFailed, "DTLS handshake timed out (\(configuration.role))")), notifyPeer: false)
            }
        }
        if phase == .connected, nowNanoseconds >= nextPathCheck, publishedMTU.load(ordering: .relaxed) > configuration.mtu {
            // The same pair's path may carry less than when it was chosen (a link's MTU lowered,
            // a smaller path MTU learned from ICMP): ask again once a second.
            nextPathCheck = nowNanoseconds + Self.pathCheckIntervalNanoseconds
            transportLimitChanged()
        }
        sendBlocked = false
        afterIO()
    }

    /// Runs after every entry into the loop: reads what SCTP has for us, sends queued messages,
    /// issues stream resets and flushes datagrams to the transport.
    private func afterIO() {
        pullFromSCTP()
        flushResets()
        drainSendQueue()
        advanceShutdown()
        flushOutbox()
    }

    // MARK: Graceful close (loop)

    private func beginShutdown() {
        guard phase == .connected, socket != nil else { return teardown(.closed, notifyPeer: true, reason: .localAbort) }
        guard shutdown == .none else { return }
        shutdown = .draining
        shutdownDeadline = DispatchTime.now().uptimeNanoseconds + configuration.shutdownTimeoutNanoseconds
        for channel in channels.values {
            for waiter in channel.sendWaiters.removeAll() {
                waiter.continuation.resume(throwing: DataChannelError(.closed, "session closing"))
            }
        }
        afterIO()
    }

    /// Sends SHUTDOWN once the send queue is empty, and tears down once the association is gone.
    /// The association state is polled only while closing or while reading is paused (then the
    /// peer's SHUTDOWN cannot be seen as end-of-stream).
    private func advanceShutdown() {
        guard let socket, phase == .connected else { return }
        if shutdown == .draining, sendQueue.isEmpty {
            let rc = ugate_sctp_shutdown(socket)
            guard rc == 0 else {
                logger.debug("usrsctp_shutdown failed; aborting", metadata: ["errno": "\(rc)"])
                return teardown(.closed, notifyPeer: true, reason: .localAbort)
            }
            shutdown = .sent
        }
        guard shutdown != .none || unread.withLock({ $0.paused }) else { return }
        if ugate_sctp_association_state(socket) < 0 {
            teardown(.closed, notifyPeer: true, reason: shutdownReason(otherwise: .peerShutdown))
        }
    }

    /// The reason for an end that may be the last step of a graceful close.
    private func shutdownReason(otherwise: CloseReason) -> CloseReason {
        switch shutdown {
        case .draining, .sent: return .localShutdown
        case .peer: return .peerShutdown
        case .none: return otherwise
        }
    }

    /// Reads messages and notifications from the socket until it is empty or the application
    /// has `receiveHighWaterMark` unread bytes; then unread data stays in usrsctp and the
    /// advertised window shrinks (RFC 9260 §6.2 flow control reaches the sender).
    private func pullFromSCTP(final: Bool = false) {
        while let socket, phase == .connecting || phase == .connected {
            let paused: Bool = unread.withLock { state in
                state.paused = state.bytes >= configuration.receiveHighWaterMark
                return state.paused
            }
            if paused, !final { return }
            var streamID: UInt16 = 0, ppid: UInt32 = 0, flags: Int32 = 0
            let count = loop.receiveBuffer.withUnsafeMutableBytes { buffer in
                ugate_sctp_recv(socket, buffer.baseAddress, buffer.count, &streamID, &ppid, &flags)
            }
            if count < 0 { return }  // EWOULDBLOCK: nothing queued
            if count == 0 {
                // End of stream: the peer's SHUTDOWN arrived and everything before it was read.
                // SCTP answers SHUTDOWN-ACK by itself; advanceShutdown tears down once it is done.
                if shutdown == .none {
                    shutdown = .peer
                    shutdownDeadline = DispatchTime.now().uptimeNanoseconds + configuration.shutdownTimeoutNanoseconds
                }
                return
            }
            let bytes = Array(loop.receiveBuffer[0..<count])
            if flags & Int32(UGATE_MSG_NOTIFICATION) != 0 {
                handleNotification(SCTPNotification(bytes))
            } else {
                receivedPart(bytes, streamID: streamID, ppid: ppid, endOfRecord: flags & Int32(UGATE_MSG_EOR) != 0)
            }
        }
    }

    /// Received bytes waiting in channel inboxes (for tests and metrics).
    var unreadBytes: Int { unread.withLock { $0.bytes } }

    /// The application took `bytes` from an inbox; resumes reading once below half the mark.
    func consumed(_ bytes: Int) {
        let resume: Bool = unread.withLock { state in
            state.bytes -= bytes
            guard state.paused, state.bytes < configuration.receiveHighWaterMark / 2 else { return false }
            state.paused = false
            return true
        }
        if resume { loop.execute { self.afterIO() } }
    }

    private func flushOutbox() {
        releaseHeldSACK()
        guard !outbox.isEmpty else { return }
        let datagrams = outbox
        outbox.removeAll(keepingCapacity: true)
        loop.handingToTransport += 1
        transport.send(batch: datagrams)
        loop.handingToTransport -= 1
    }

    private func teardown(_ final: State, notifyPeer: Bool, reason: CloseReason? = nil) {
        switch phase {
        case .closed, .failed: return
        default: break
        }
        guard !finalDrain else { return }
        var reason = reason ?? .localAbort
        if case .failed(let error) = final {
            logger.debug("data-channel session failed", metadata: ["error": "\(error)"])
        } else if phase == .connected, socket != nil {
            // What SCTP still holds for us was acknowledged to the peer: deliver it (beyond the
            // receive high-water mark) before the socket goes.
            finalDrain = true
            pullFromSCTP(final: true)
            finalDrain = false
            if peerAborted { reason = .peerAbort }
        }
        publishedCloseReason.withLock { $0 = reason }
        if let socket {
            usrsctp_close(socket)  // SO_LINGER 0: sends ABORT through sctpOutput while an association is left
            self.socket = nil
        }
        if contextID != 0 { usrsctp_deregister_address(contextPointer(for: contextID)) }
        releaseHeldSACK()  // before close_notify: nothing may follow it
        if notifyPeer { dtls?.shutdown() }
        flushOutbox()
        dtls?.close()
        dtls = nil
        transport.close()
        setPhase(final)
        let error: DataChannelError
        if case .failed(let failure) = final { error = failure } else { error = DataChannelError(.closed, "session closed") }
        for waiter in connectWaiters { waiter.resume(throwing: error) }
        connectWaiters.removeAll()
        for outgoing in sendQueue.removeAll() where outgoing.accounted > 0 {
            outgoing.channel.adjustBufferedAmount(by: -outgoing.accounted)
        }
        for channel in channels.values { finishChannel(channel, error: error) }
        channels.removeAll()
        orphanMessages.removeAll()
        reassembly.removeAll()
        incomingContinuation.finish()
        if contextID != 0 { loop.unregister(contextID) }
    }

    // MARK: C callback entry points (loop; record only, act in afterIO)

    func dtlsOutput(_ datagram: UnsafeRawBufferPointer) {
        outbox.append(Array(datagram))
    }

    func sctpOutput(_ packet: UnsafeRawBufferPointer) {
        if mergeSACKs, SCTPAcknowledgement.isPlainSACK(packet) {
            if heldSACK != nil { SCTPPacketCounters.countMerged() }
            heldSACK = Array(packet)
            return
        }
        releaseHeldSACK()
        SCTPPacketCounters.count(packet)
        dtls?.write(packet)
    }

    private func releaseHeldSACK() {
        guard let packet = heldSACK else { return }
        heldSACK = nil
        packet.withUnsafeBytes { bytes in
            SCTPPacketCounters.count(bytes)
            _ = dtls?.write(bytes)
        }
    }

    func sctpSocketReady() {
        sendBlocked = false
    }

    /// Verifies the peer's leaf certificate during the handshake, so a mismatch aborts it with
    /// an alert; the reason is kept for the error.
    func verifyPeerCertificate(_ der: [UInt8]) -> Bool {
        if let mismatch = CertificateFingerprint.verify(certificateDER: der, against: configuration.remoteFingerprints) {
            fingerprintFailure = mismatch
            return false
        }
        return true
    }

    // MARK: SCTP events

    private func handleNotification(_ notification: SCTPNotification?) {
        switch notification {
        case .associationChange(let change)?:
            switch change.state {
            case .communicationUp, .restart:
                outboundStreams = change.outboundStreams
                inboundStreams = change.inboundStreams
                guard phase == .connecting else { return }
                setPhase(.connected)
                logger.debug("SCTP association up", metadata: ["streams.out": "\(outboundStreams)", "streams.in": "\(inboundStreams)"])
                for waiter in connectWaiters { waiter.resume() }
                connectWaiters.removeAll()
            case .shutdownComplete:
                teardown(.closed, notifyPeer: true, reason: shutdownReason(otherwise: .peerShutdown))
            case .communicationLost, .cannotStartAssociation:
                if finalDrain {
                    peerAborted = true
                } else {
                    teardown(.closed, notifyPeer: false, reason: .peerAbort)
                }
            case .other:
                break
            }
        case .streamReset(let reset)?:
            for streamID in reset.streams {
                guard let channel = channels[streamID] else { continue }
                if reset.denied || reset.failed {
                    logger.debug("stream reset refused; closing channel locally", metadata: ["stream.id": "\(streamID)"])
                    channel.localResetDone = true
                    channel.remoteResetDone = true
                } else if reset.incoming {
                    channel.remoteResetDone = true
                    beginClosing(channel)
                } else if reset.outgoing {
                    channel.localResetDone = true
                }
                if channel.localResetDone, channel.remoteResetDone {
                    channels[streamID] = nil
                    finishChannel(channel, error: DataChannelError(.closed, "channel \(streamID) closed"))
                }
            }
        case .streamChange(let outbound, let inbound)?:
            outboundStreams = outbound
            inboundStreams = inbound
        case nil:
            break
        }
    }

    private func receivedPart(_ bytes: [UInt8], streamID: UInt16, ppid: UInt32, endOfRecord: Bool) {
        if endOfRecord, reassembly[streamID] == nil, !oversized.contains(streamID) {
            return completeMessage(bytes, streamID: streamID, ppid: ppid)  // whole message in one part: no copy
        }
        if !oversized.contains(streamID) {
            reassembly[streamID, default: []] += bytes
            if reassembly[streamID]!.count > max(configuration.localMaxMessageSize, 1) {
                logger.debug("discarding message above local max-message-size", metadata: ["stream.id": "\(streamID)"])
                reassembly[streamID] = nil
                oversized.insert(streamID)
            }
        }
        guard endOfRecord else { return }
        guard oversized.remove(streamID) == nil else { return }
        completeMessage(reassembly.removeValue(forKey: streamID) ?? [], streamID: streamID, ppid: ppid)
    }

    private func completeMessage(_ message: [UInt8], streamID: UInt16, ppid: UInt32) {
        if ppid == PayloadProtocolIdentifier.dcep.rawValue {
            handleDCEP(message, streamID: streamID)
        } else if let decoded = DataChannelMessage(payload: message, ppid: ppid) {
            if let channel = channels[streamID] {
                deliver(decoded, to: channel)
            } else if orphanMessages[streamID, default: []].count < 64 {
                orphanMessages[streamID, default: []].append(decoded)  // for a pre-negotiated channel created later
            }
        } else {
            logger.debug("ignoring message with unsupported PPID", metadata: ["stream.id": "\(streamID)", "ppid": "\(ppid)"])
        }
    }

    private func deliver(_ message: DataChannelMessage, to channel: DataChannel) {
        unread.withLock { $0.bytes += message.byteCount }
        channel.deliver(message)
    }

    private func handleDCEP(_ bytes: [UInt8], streamID: UInt16) {
        let message: DCEPMessage
        do {
            message = try DCEPMessage.decode(bytes)
        } catch {
            logger.debug("malformed DCEP message", metadata: ["stream.id": "\(streamID)", "error": "\(error)"])
            return
        }
        switch message {
        case .open(let open):
            guard channels[streamID] == nil else {
                logger.debug("DATA_CHANNEL_OPEN on a stream in use", metadata: ["stream.id": "\(streamID)"])
                return
            }
            let channel = DataChannel(session: self, id: streamID, label: open.label,
                                      options: DataChannelOptions(open: open, negotiatedID: nil), state: .open)
            channels[streamID] = channel
            enqueueControl(DCEPMessage.ack.encode(), on: channel)
            incomingContinuation.yield(channel)
        case .ack:
            guard let channel = channels[streamID], channel.readyState == .connecting else { return }
            channel.setState(.open)
            channel.openWaiter?.resume(returning: channel)
            channel.openWaiter = nil
        }
    }

    // MARK: Channels (loop)

    private func open(label: String, options: DataChannelOptions, continuation: CheckedContinuation<DataChannel, any Error>) {
        guard phase == .connected else {
            return continuation.resume(throwing: DataChannelError(.notOpen, "session is \(phase), cannot open channel '\(label)'"))
        }
        let limit = min(outboundStreams, inboundStreams, configuration.maxStreams)
        let streamID: UInt16
        if let agreed = options.negotiatedID {
            guard agreed < limit else {
                return continuation.resume(throwing: DataChannelError(.streamIDsExhausted, "negotiated id \(agreed) is not below the \(limit) streams of this association"))
            }
            guard channels[agreed] == nil else {
                return continuation.resume(throwing: DataChannelError(.streamIDInUse, "stream id \(agreed) is already used by channel '\(channels[agreed]!.label)'"))
            }
            streamID = agreed
        } else {
            let parity: UInt16 = configuration.role == .client ? 0 : 1
            guard let free = stride(from: parity, to: limit, by: 2).first(where: { channels[$0] == nil }) else {
                return continuation.resume(throwing: DataChannelError(.streamIDsExhausted, "all \(limit / 2) stream ids of our parity are in use"))
            }
            streamID = free
        }
        if options.negotiatedID != nil {
            let channel = DataChannel(session: self, id: streamID, label: label, options: options, state: .open)
            channels[streamID] = channel
            for message in orphanMessages.removeValue(forKey: streamID) ?? [] { deliver(message, to: channel) }
            return continuation.resume(returning: channel)
        }
        let channel = DataChannel(session: self, id: streamID, label: label, options: options, state: .connecting)
        channels[streamID] = channel
        let openMessage = DCEPOpen(channelType: options.channelType, priority: options.priority, label: label, protocol: options.protocol)
        channel.openWaiter = continuation
        enqueueControl(DCEPMessage.open(openMessage).encode(), on: channel)
        afterIO()
    }

    /// Queues a user message (from ``DataChannel/send(_:)-swift.method``), waiting for room first.
    func enqueue(_ message: DataChannelMessage, on channel: DataChannel, continuation: CheckedContinuation<Void, any Error>) {
        guard shutdown == .none, channel.readyState == .open, !channel.resetWhenDrained, !channel.localResetRequested else {
            return continuation.resume(throwing: DataChannelError(.notOpen, "channel \(channel.id) '\(channel.label)' is \(channel.readyState)"))
        }
        if channel.sendWaiters.isEmpty, channel.loopBufferedAmount < configuration.sendHighWaterMark {
            append(message, on: channel)
            continuation.resume()
            afterIO()
        } else {
            channel.sendWaiters.append((message, continuation))
        }
    }

    private func append(_ message: DataChannelMessage, on channel: DataChannel) {
        let (payload, ppid) = message.wire
        let accounted = message.byteCount
        sendQueue.append(Outgoing(channel: channel, payload: payload, ppid: ppid, accounted: accounted))
        channel.queuedMessages += 1
        if accounted > 0 { channel.adjustBufferedAmount(by: accounted) }
    }

    private func enqueueControl(_ payload: [UInt8], on channel: DataChannel) {
        sendQueue.append(Outgoing(channel: channel, payload: payload, ppid: .dcep, accounted: 0))
        channel.queuedMessages += 1
    }

    private func drainSendQueue() {
        guard let socket, phase == .connected else { return }
        while !sendBlocked, let head = sendQueue.first {
            let channel = head.channel
            let control = head.ppid == .dcep
            // DCEP messages and anything sent before the ACK go ordered and reliable (RFC 8832 §6).
            let reliable = control || channel.readyState == .connecting
            let unordered: Int32 = reliable || channel.options.ordered ? 0 : 1
            var policy = UInt16(SCTP_PR_SCTP_NONE), value: UInt32 = 0
            if !reliable, let count = channel.options.maxRetransmits {
                policy = UInt16(SCTP_PR_SCTP_RTX)
                value = count
            } else if !reliable, let lifetime = channel.options.maxPacketLifeTime {
                policy = UInt16(SCTP_PR_SCTP_TTL)
                value = lifetime
            }
            let sent = head.payload.withUnsafeBytes { bytes in
                ugate_sctp_send(socket, channel.id, head.ppid.rawValue, unordered, policy, value,
                                bytes.baseAddress! + head.offset, bytes.count - head.offset, 1)
            }
            if sent < 0 {
                let code = Int32(-sent)
                if code == EWOULDBLOCK || code == EAGAIN {
                    sendBlocked = true
                    break
                }
                logger.debug("usrsctp_sendv failed; message dropped", metadata: ["stream.id": "\(channel.id)", "errno": "\(code)"])
                completeHead()
                continue
            }
            sendQueue.updateFirst { $0.offset += sent }
            if head.offset + sent < head.payload.count {
                sendBlocked = true  // partially accepted: the send buffer is full
                break
            }
            completeHead()
        }
    }

    private func completeHead() {
        guard let done = sendQueue.popFirst() else { return }
        let channel = done.channel
        channel.queuedMessages -= 1
        if done.accounted > 0 { channel.adjustBufferedAmount(by: -done.accounted) }
        if done.ppid != .dcep { channel.countSent(done.accounted) }
        while let waiter = channel.sendWaiters.first, channel.loopBufferedAmount < configuration.sendHighWaterMark {
            _ = channel.sendWaiters.popFirst()
            append(waiter.message, on: channel)
            waiter.continuation.resume()
        }
        if channel.queuedMessages == 0, channel.resetWhenDrained {
            channel.resetWhenDrained = false
            requestReset(channel)
        }
    }

    /// Starts closing a channel (local close or the peer's reset).
    func closeChannel(_ channel: DataChannel) {
        guard channels[channel.id] === channel else { return }
        beginClosing(channel)
        afterIO()
    }

    private func beginClosing(_ channel: DataChannel) {
        guard channel.readyState != .closed, !channel.localResetRequested, !channel.resetWhenDrained else { return }
        channel.setState(.closing)
        for waiter in channel.sendWaiters.removeAll() {
            waiter.continuation.resume(throwing: DataChannelError(.notOpen, "channel \(channel.id) is closing"))
        }
        if channel.queuedMessages == 0 { requestReset(channel) } else { channel.resetWhenDrained = true }
    }

    private func requestReset(_ channel: DataChannel) {
        channel.localResetRequested = true
        pendingResets.append(channel.id)
    }

    /// Resets the outgoing streams of closing channels (RFC 8831 §6.7). usrsctp allows one
    /// outstanding request: on EALREADY/EBUSY the ids stay queued and are retried later.
    private func flushResets() {
        guard let socket, phase == .connected, !pendingResets.isEmpty else { return }
        let rc = pendingResets.withUnsafeBufferPointer { ugate_sctp_reset_streams(socket, $0.baseAddress, UInt16($0.count)) }
        if rc == 0 {
            pendingResets.removeAll()
        } else if rc != EALREADY, rc != EBUSY, rc != EAGAIN, rc != EINPROGRESS {
            logger.debug("SCTP_RESET_STREAMS failed; closing channels locally", metadata: ["errno": "\(rc)"])
            for id in pendingResets {
                if let channel = channels.removeValue(forKey: id) {
                    finishChannel(channel, error: DataChannelError(.closed, "channel \(id) closed"))
                }
            }
            pendingResets.removeAll()
        }
    }

    private func finishChannel(_ channel: DataChannel, error: DataChannelError) {
        let statistics = channel.statistics
        logger.debug("data channel closed", metadata: [
            "channel.id": "\(channel.id)", "channel.label": "\(channel.label)",
            "bytes.sent": "\(statistics.bytesSent)", "bytes.received": "\(statistics.bytesReceived)",
            "messages.sent": "\(statistics.messagesSent)", "messages.received": "\(statistics.messagesReceived)",
        ])
        channel.setState(.closed)
        channel.openWaiter?.resume(throwing: error)
        channel.openWaiter = nil
        for waiter in channel.sendWaiters.removeAll() { waiter.continuation.resume(throwing: error) }
        reassembly[channel.id] = nil
    }
}
