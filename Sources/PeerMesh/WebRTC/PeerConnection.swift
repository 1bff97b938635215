import DataChannel
import ICE
import Logging
import Synchronization

/// A data-only WebRTC peer connection: ICE (libnice) → DTLS 1.2 → SCTP → data channels,
/// negotiated with one SDP offer/answer exchange.
///
/// Offerer: ``createOffer()``, send it, ``acceptAnswer(_:)``. Answerer: ``acceptOffer(_:)``,
/// send the returned answer. In trickle mode also forward every ``Event/localCandidate(_:)``
/// and ``Event/localGatheringDone`` to the peer and feed the peer's with
/// ``addRemoteCandidate(_:)``. Then ``connect()`` (or just ``openChannel(label:options:)``)
/// and read ``incomingChannels``. The offerer is ICE-controlling and offers `a=setup:actpass`;
/// the answerer takes `a=setup:active` (DTLS client). The peer's certificate must match a
/// fingerprint of its description, or the connection fails.
///
/// Threading: every method may be called from any task; state sits behind a `Mutex`. ICE work
/// runs on the agent's ``ICEEventLoop`` thread, DTLS/SCTP on the data-channel loop; this class
/// only connects them with a few tasks (ICE events, session states, incoming channels).
/// Those tasks hold the connection until it ends: call ``close()`` when done.
public final class PeerConnection: Sendable {
    /// Connection state (the `RTCPeerConnectionState` vocabulary).
    public enum State: Sendable, Equatable {
        /// Created, or descriptions being exchanged.
        case new
        /// Both descriptions known: ICE checks, then the DTLS handshake and SCTP setup.
        case connecting
        /// SCTP is up: channels can be opened.
        case connected
        /// ICE sees no traffic for a while; back to connected when traffic resumes.
        case disconnected
        /// Failed for good; the error says which layer and why.
        case failed(WebRTCError)
        /// Closed by either side. Final.
        case closed
    }

    /// What the connection reports, in order, on ``events``.
    public enum Event: Sendable, Equatable {
        /// A local ICE candidate (`candidate:…`) to trickle to the peer.
        case localCandidate(String)
        /// Gathering is done: tell the peer (`a=end-of-candidates`).
        case localGatheringDone
        /// The ICE agent's state changed.
        case iceStateChanged(ICEConnectionState)
        /// The connection state changed.
        case stateChanged(State)
    }

    /// The configuration the connection was created with.
    public let configuration: PeerConnectionConfiguration
    /// Our DTLS certificate (its fingerprint is in our descriptions).
    public let identity: DTLSIdentity
    /// Events in order. Single consumer; ends after `.stateChanged(.closed)` or `.failed`.
    public let events: AsyncStream<Event>
    /// Channels the peer opens, in order. Single consumer; ends when the connection ends.
    public let incomingChannels: AsyncStream<DataChannel>

    /// When the connection passed each step of connecting (monotonic clock), for open-time
    /// breakdowns (`ugate webrtc` prints them with `--send`).
    public struct Timeline: Sendable, Equatable {
        /// Our description was created (after gathering, without trickle).
        public var localDescriptionCreated: ContinuousClock.Instant?
        /// Both descriptions were applied: connectivity checks can run.
        public var descriptionsExchanged: ContinuousClock.Instant?
        /// ICE connected (as the session saw it), DTLS and SCTP steps of the data-channel session.
        public var session = DataChannelSession.Timeline()
    }

    private struct Inner {
        var agent: ICEAgent?
        var timeline = Timeline()
        var localDescription: SessionDescription?
        var remoteDescription: SessionDescription?
        var localCandidates: [String] = []
        var gatheringDone = false
        var gatheringWaiters: [CheckedContinuation<Void, Never>] = []
        var iceConnected = false
        var iceFailure: ICEError?
        var session: DataChannelSession?
        var state: State = .new
        var connectWaiters: [CheckedContinuation<Void, any Error>] = []
        var tasks: [Task<Void, Never>] = []

        var isFinal: Bool {
            switch state {
            case .closed, .failed: return true
            default: return false
            }
        }
    }

    private let inner = Mutex(Inner())
    private let eventContinuation: AsyncStream<Event>.Continuation
    private let channelContinuation: AsyncStream<DataChannel>.Continuation
    private let logger: Logger

    /// Creates a connection; nothing happens until ``createOffer()`` or ``acceptOffer(_:)``.
    /// - Throws: `DataChannelError` when no DTLS certificate can be made.
    public init(configuration: PeerConnectionConfiguration = PeerConnectionConfiguration(),
                logger: Logger = Logger(label: "ugate.webrtc")) throws {
        self.configuration = configuration
        self.identity = try configuration.identity ?? DTLSIdentity()
        self.logger = logger
        (events, eventContinuation) = AsyncStream.makeStream(of: Event.self)
        (incomingChannels, channelContinuation) = AsyncStream.makeStream(of: DataChannel.self)
    }

    /// The current state.
    public var state: State { inner.withLock { $0.state } }
    /// Our description, once created.
    public var localDescription: SessionDescription? { inner.withLock { $0.localDescription } }
    /// The peer's description, once applied.
    public var remoteDescription: SessionDescription? { inner.withLock { $0.remoteDescription } }
    /// How the data-channel session ended (graceful SCTP shutdown by either side, abort,
    /// close_notify); nil while open or before the session exists.
    public var closeReason: DataChannelSession.CloseReason? { inner.withLock { $0.session }?.closeReason }
    /// The largest datagram DTLS and SCTP use: ``PeerConnectionConfiguration/mtu`` until the
    /// DTLS handshake is done, then the size both peers agreed on (`a=ugate-max-datagram-size`)
    /// capped by the selected path, if larger. nil before the session exists.
    public var datagramSize: Int? { inner.withLock { $0.session }?.datagramSize }
    /// When our SCTP receiver sends SACKs, as usrsctp reports it (see
    /// ``PeerConnectionConfiguration/acknowledgement``); nil before the SCTP socket exists.
    public func acknowledgementInUse() async -> SCTPAcknowledgement? {
        await inner.withLock { $0.session }?.acknowledgementInUse()
    }
    /// When each step of connecting happened.
    public var timeline: Timeline {
        let (timeline, session) = inner.withLock { ($0.timeline, $0.session) }
        var combined = timeline
        if let session { combined.session = session.timeline }
        return combined
    }
    /// The ICE pair carrying traffic, once selected.
    public var selectedPair: ICECandidatePair? { inner.withLock { $0.agent?.selectedPair } }

    // MARK: Offer / answer

    /// Creates our offer (`a=setup:actpass`, ICE-controlling). Without trickle it waits until
    /// gathering is done and lists every candidate plus `a=end-of-candidates`.
    /// - Throws: ``WebRTCError`` (`.state` when a description exists already, `.ice` when the
    ///   agent cannot be created).
    public func createOffer() async throws -> SessionDescription {
        let agent = try makeAgent(role: .controlling)
        agent.start()
        let candidates = try await candidatesForDescription()
        let offer = SessionDescription.offer(
            iceUfrag: agent.localCredentials.ufrag, icePwd: agent.localCredentials.pwd,
            fingerprints: [identity.fingerprint], sctpPort: configuration.sctpPort,
            maxMessageSize: configuration.maxMessageSize, maxDatagramSize: configuration.advertisedMaxDatagramSize,
            candidates: candidates, endOfCandidates: !configuration.trickle, trickle: configuration.trickle)
        inner.withLock {
            $0.localDescription = offer
            $0.timeline.localDescriptionCreated = .now
        }
        return offer
    }

    /// Applies the peer's answer to our offer and starts connecting.
    /// - Throws: ``WebRTCError/Code/description`` for an answer that does not fit (setup,
    ///   credentials, candidates), ``WebRTCError/Code/state`` without an offer.
    public func acceptAnswer(_ answer: SessionDescription) throws {
        guard let agent = inner.withLock({ $0.localDescription == nil ? nil : $0.agent }) else {
            throw WebRTCError(.state, "acceptAnswer needs an offer from createOffer() first")
        }
        try applyRemote(answer, to: agent)
        try startTransport()
    }

    /// Parses and applies the peer's answer (SDP text).
    public func acceptAnswer(sdp: String) throws {
        try acceptAnswer(try Self.parse(sdp, kind: "answer"))
    }

    /// Applies the peer's offer (we become ICE-controlled and take `a=setup:active`) and
    /// returns our answer; connecting starts at once. Without trickle it waits for gathering.
    public func acceptOffer(_ offer: SessionDescription) async throws -> SessionDescription {
        let agent = try makeAgent(role: .controlled)
        try applyRemote(offer, to: agent)
        agent.start()
        let candidates = try await candidatesForDescription()
        let answer: SessionDescription
        do {
            answer = try offer.answer(
                iceUfrag: agent.localCredentials.ufrag, icePwd: agent.localCredentials.pwd,
                fingerprints: [identity.fingerprint], sctpPort: configuration.sctpPort,
                maxMessageSize: configuration.maxMessageSize, maxDatagramSize: configuration.advertisedMaxDatagramSize,
                candidates: candidates, endOfCandidates: !configuration.trickle, trickle: configuration.trickle)
        } catch {
            throw WebRTCError(.description, "cannot answer the offer: \(error)")
        }
        inner.withLock {
            $0.localDescription = answer
            $0.timeline.localDescriptionCreated = .now
        }
        try startTransport()
        return answer
    }

    /// Parses the peer's offer (SDP text) and returns our answer.
    public func acceptOffer(sdp: String) async throws -> SessionDescription {
        try await acceptOffer(try Self.parse(sdp, kind: "offer"))
    }

    /// Adds a trickled remote candidate: `candidate:…` (with or without `a=`); an empty string
    /// or `a=end-of-candidates` means the peer's gathering is done.
    /// - Throws: ``WebRTCError`` for a malformed line or before any description exists.
    public func addRemoteCandidate(_ line: String) throws {
        guard let agent = inner.withLock({ $0.agent }) else {
            throw WebRTCError(.state, "a remote candidate arrived before any description")
        }
        let trimmed = line.trimmingPrefix("a=")
        do {
            if trimmed.isEmpty || trimmed == "end-of-candidates" {
                agent.addRemoteEndOfCandidates()
            } else {
                try agent.applyRemote(line: String(trimmed))
            }
        } catch {
            throw WebRTCError(.signaling, "remote candidate \"\(line)\": \(error)")
        }
    }

    // MARK: Channels and lifecycle

    /// Waits until the data-channel session is up (ICE connected, DTLS and SCTP set up).
    /// - Throws: ``WebRTCError`` when the connection fails or closes first.
    public func connect() async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            let result = inner.withLock { inner -> Result<Void, WebRTCError>? in
                switch inner.state {
                case .connected, .disconnected: return .success(())
                case .failed(let error): return .failure(error)
                case .closed: return .failure(WebRTCError(.closed, "the connection is closed"))
                default:
                    inner.connectWaiters.append(continuation)
                    return nil
                }
            }
            if let result { continuation.resume(with: result) }
        }
    }

    /// Opens a channel (DCEP) once connected.
    public func openChannel(label: String, options: DataChannelOptions = DataChannelOptions()) async throws -> DataChannel {
        try await connect()
        guard let session = inner.withLock({ $0.session }) else {
            throw WebRTCError(.state, "no data-channel session")
        }
        return try await session.openChannel(label: label, options: options)
    }

    /// The largest message the peer accepts (its `a=max-message-size`; 0 = no limit), once
    /// its description is known.
    public var remoteMaxMessageSize: Int? { inner.withLock { $0.remoteDescription?.effectiveMaxMessageSize } }

    /// Closes the connection gracefully: messages already accepted by `send` are delivered and
    /// acknowledged, SCTP SHUTDOWN completes, DTLS close_notify goes out (the peer then closes
    /// too, ``closeReason`` `.peerShutdown` on its side), and the ICE agent is released. After
    /// the session's `shutdownTimeout` the association is aborted instead. Idempotent; returns
    /// when ICE is closed.
    public func close() async {
        await finish(.closed, notifyPeer: true)
    }

    // MARK: Internals

    private static func parse(_ sdp: String, kind: String) throws -> SessionDescription {
        do {
            return try SessionDescription(parsing: sdp)
        } catch {
            throw WebRTCError(.description, "the \(kind) is not valid SDP: \(error)")
        }
    }

    private func makeAgent(role: ICERole) throws -> ICEAgent {
        let agent: ICEAgent
        do {
            agent = try ICEAgent(role: role, configuration: configuration.ice, loop: configuration.iceLoop, logger: logger)
        } catch {
            throw WebRTCError(.ice, "cannot create the ICE agent: \(error)")
        }
        try inner.withLock { inner in
            guard inner.agent == nil, !inner.isFinal else {
                throw WebRTCError(.state, "a description was already created (or the connection is closed)")
            }
            inner.agent = agent
            inner.tasks.append(Task { await self.pumpICE(agent) })
        }
        return agent
    }

    /// Candidates to list in our description: none in trickle mode, all after gathering otherwise.
    private func candidatesForDescription() async throws -> [String] {
        guard !configuration.trickle else { return [] }
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let done = inner.withLock { inner in
                if inner.gatheringDone || inner.isFinal { return true }
                inner.gatheringWaiters.append(continuation)
                return false
            }
            if done { continuation.resume() }
        }
        return try inner.withLock { inner in
            if case .failed(let error) = inner.state { throw error }
            if inner.state == .closed { throw WebRTCError(.closed, "closed while gathering") }
            return inner.localCandidates
        }
    }

    private func applyRemote(_ remote: SessionDescription, to agent: ICEAgent) throws {
        guard !remote.fingerprints.isEmpty else {
            throw WebRTCError(.description, "the remote description has no a=fingerprint")
        }
        let credentials: ICECredentials
        do {
            credentials = try ICECredentials(ufrag: remote.iceUfrag, pwd: remote.icePwd)
        } catch {
            throw WebRTCError(.description, "remote ICE credentials: \(error)")
        }
        try inner.withLock { inner in
            guard inner.remoteDescription == nil else {
                throw WebRTCError(.state, "a remote description was already applied")
            }
            inner.remoteDescription = remote
            if inner.state == .new { setState(&inner, .connecting) }
        }
        agent.setRemoteCredentials(credentials)
        for candidate in remote.candidates {
            do {
                try agent.applyRemote(line: "a=" + candidate)
            } catch {
                // One candidate ICE cannot use (another transport, a malformed extension) must
                // not sink the others.
                logger.debug("skipping remote candidate", metadata: ["candidate": "\(candidate)", "error": "\(error)"])
            }
        }
        if remote.endOfCandidates { agent.addRemoteEndOfCandidates() }
    }

    /// Both descriptions are known: create the DTLS/SCTP session over the agent, connect it once
    /// ICE has a working pair.
    private func startTransport() throws {
        let (agent, local, remote) = inner.withLock { ($0.agent, $0.localDescription, $0.remoteDescription) }
        guard let agent, let local, let remote else { return }
        guard let role = SessionDescription.dtlsRole(local: local.setup, remote: remote.setup) else {
            throw WebRTCError(.description, "a=setup:\(local.setup.rawValue) (ours) and a=setup:\(remote.setup.rawValue) (theirs) give no DTLS role")
        }
        let sessionConfiguration = DataChannelSessionConfiguration(
            identity: identity, role: role, remoteFingerprints: remote.fingerprints,
            localSCTPPort: local.sctpPort, remoteSCTPPort: remote.sctpPort,
            remoteMaxMessageSize: remote.effectiveMaxMessageSize,
            localMaxMessageSize: configuration.maxMessageSize, mtu: configuration.mtu,
            acknowledgement: configuration.acknowledgement
                ?? (remote.maxDatagramSize != nil ? .ugatePeer : .foreignPeer))
        // A larger datagram size only when both sides advertise one (foreign stacks never do).
        var agreed: Int?
        if let ours = local.maxDatagramSize, let theirs = remote.maxDatagramSize { agreed = min(ours, theirs) }
        let session = DataChannelSession(
            transport: ICEDatagramTransport(agent: agent, agreedMaximumDatagramSize: agreed),
            configuration: sessionConfiguration, logger: logger)
        inner.withLock { inner in
            inner.session = session
            inner.timeline.descriptionsExchanged = .now
            inner.tasks.append(Task { await self.runSession(session) })
            inner.tasks.append(Task {
                for await channel in session.incomingChannels { self.channelContinuation.yield(channel) }
            })
        }
        logger.debug("descriptions exchanged", metadata: ["dtls.role": "\(role.rawValue)"])
    }

    /// Connects the session at once: it starts DTLS itself when ICE connects (on the ICE
    /// thread, `ICEDatagramTransport.whenReady`). An ICE failure finishes the connection, which
    /// aborts the session and ends this `connect()` with `.closed`.
    private func runSession(_ session: DataChannelSession) async {
        do {
            try await session.connect()
        } catch {
            let wrapped = error as? WebRTCError ?? WebRTCError(.transport, "\(error)")
            if wrapped.code == .closed { return }
            await finish(.failed(wrapped), notifyPeer: false)
            return
        }
        let waiters = inner.withLock { inner -> [CheckedContinuation<Void, any Error>] in
            guard !inner.isFinal else { return [] }
            // The session is up, so ICE connected; the event task may not have seen it yet:
            // the agent's own state says whether it has gone quiet since.
            let quiet = inner.agent?.state == .disconnected
            inner.iceConnected = !quiet
            setState(&inner, quiet ? .disconnected : .connected)
            defer { inner.connectWaiters = [] }
            return inner.connectWaiters
        }
        for waiter in waiters { waiter.resume() }
        for await update in session.stateUpdates {
            switch update {
            case .closed:
                await finish(.closed, notifyPeer: false)
                return
            case .failed(let error):
                await finish(.failed(WebRTCError(.transport, "\(error)")), notifyPeer: false)
                return
            default:
                continue
            }
        }
    }

    private func pumpICE(_ agent: ICEAgent) async {
        for await event in agent.events {
            switch event {
            case .localCandidate(let candidate):
                inner.withLock { $0.localCandidates.append(candidate.attributeValue) }
                eventContinuation.yield(.localCandidate(candidate.attributeValue))
            case .localGatheringDone:
                let waiters = inner.withLock { inner in
                    inner.gatheringDone = true
                    defer { inner.gatheringWaiters = [] }
                    return inner.gatheringWaiters
                }
                for waiter in waiters { waiter.resume() }
                eventContinuation.yield(.localGatheringDone)
            case .stateChanged(let iceState):
                eventContinuation.yield(.iceStateChanged(iceState))
                await iceStateChanged(iceState)
            case .failure(let error):
                inner.withLock { $0.iceFailure = error }
            case .localCredentialsChanged:
                // PeerConnection does not renegotiate (no ICE restart in its API yet): a restart
                // the peer starts is followed by the agent, but new credentials are not signaled.
                logger.debug("ICE credentials changed by a peer-initiated restart; not renegotiated")
            case .selectedPair(let pair):
                logger.debug("selected pair", metadata: ["local": "\(pair.local.sdpLine)", "remote": "\(pair.remote.sdpLine)"])
            }
        }
    }

    private func iceStateChanged(_ iceState: ICEConnectionState) async {
        switch iceState {
        case .connected, .completed:
            inner.withLock { inner in
                inner.iceConnected = true
                if inner.state == .disconnected { setState(&inner, .connected) }
            }
        case .disconnected:
            inner.withLock { inner in
                inner.iceConnected = false
                if inner.state == .connected { setState(&inner, .disconnected) }
            }
        case .failed:
            let reason = inner.withLock { $0.iceFailure.map { "\($0)" } ?? "ICE failed" }
            await finish(.failed(WebRTCError(.ice, reason)), notifyPeer: false)
        case .new, .checking, .closed:
            break
        }
    }

    /// Closes the session gracefully (queued messages delivered, SCTP SHUTDOWN, DTLS
    /// close_notify) and waits until it has handed its last records to the ICE agent, so they
    /// leave before the agent closes. Bounded: the session aborts after its `shutdownTimeout`;
    /// this waits one second more.
    /// A failed connection aborts instead (nothing would acknowledge a SHUTDOWN).
    private static func closeSession(_ session: DataChannelSession, graceful: Bool) async {
        if graceful { session.close() } else { session.abort() }
        let (seconds, _) = session.configuration.shutdownTimeout.components
        for _ in 0..<(Int(seconds) + 1) * 200 {
            switch session.state {
            case .closed, .failed: return
            default: try? await Task.sleep(for: .milliseconds(5))
            }
        }
    }

    /// Must be called with the lock held (inside `inner.withLock`).
    private func setState(_ inner: inout Inner, _ state: State) {
        guard inner.state != state else { return }
        inner.state = state
        eventContinuation.yield(.stateChanged(state))
        logger.debug("peer connection state", metadata: ["state": "\(state)"])
    }

    private func finish(_ final: State, notifyPeer: Bool) async {
        let taken = inner.withLock { inner -> (Inner, Bool) in
            guard !inner.isFinal else { return (Inner(), false) }
            setState(&inner, final)
            let snapshot = inner
            inner.connectWaiters = []
            inner.gatheringWaiters = []
            return (snapshot, true)
        }
        let (snapshot, first) = taken
        guard first else {
            // Someone else is finishing; still release ICE if asked to close (idempotent).
            if notifyPeer, let agent = inner.withLock({ $0.agent }) { await agent.close() }
            return
        }
        let error: WebRTCError
        if case .failed(let failure) = final { error = failure } else { error = WebRTCError(.closed, "the connection is closed") }
        for waiter in snapshot.connectWaiters { waiter.resume(throwing: error) }
        for waiter in snapshot.gatheringWaiters { waiter.resume() }
        if let session = snapshot.session { await Self.closeSession(session, graceful: final == .closed) }
        await snapshot.agent?.close()
        channelContinuation.finish()
        eventContinuation.finish()
    }
}
