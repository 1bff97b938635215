import Logging

/// Which side of the ICE role negotiation an agent starts on (RFC 8445 §6.1.1).
public enum ICERole: String, Sendable, Hashable, Codable {
    /// Nominates the pair (the offerer in WebRTC).
    case controlling
    /// Follows the controlling agent's nomination.
    case controlled
}

/// An ICE agent for one session: one stream with one component, over libnice.
///
/// Usage (trickle): create, read ``events`` on a task, call ``start()``; send each
/// `.localCandidate` / `.localGatheringDone` and ``localCredentials`` to the peer; feed the peer's
/// with ``setRemoteCredentials(_:)``, ``addRemoteCandidate(_:)`` and
/// ``addRemoteEndOfCandidates()`` in any order and at any time. Once `.stateChanged(.connected)`
/// arrives, ``send(_:)`` datagrams and read ``datagrams``. ``close()`` releases everything
/// (TURN allocations included); no event is delivered after `.stateChanged(.closed)`.
///
/// All methods may be called from any thread; the work runs on the agent's ``ICEEventLoop``.
public final class ICEAgent: Sendable {
    /// The role this agent started with.
    public let role: ICERole
    /// Events in order: local candidates, gathering done, states, selected pairs, failures.
    /// Single consumer. Finishes after `.stateChanged(.closed)`.
    public let events: AsyncStream<ICEEvent>
    /// Datagrams received on the selected pair. Single consumer. Ends at close.
    public let datagrams: ICEDatagrams
    let core: AgentCore

    /// Creates the agent (not yet gathering). Resolves server host names (blocking DNS) and
    /// creates the libnice agent on the loop thread.
    ///
    /// - Throws: ``ICEError`` for a malformed server URL, an unresolvable host, a local address
    ///   libnice refuses or a TURN server it refuses.
    public init(
        role: ICERole, configuration: ICEConfiguration = ICEConfiguration(),
        credentials: ICECredentials = .random(), loop: ICEEventLoop = .shared,
        logger: Logger = Logger(label: "ugate.ice")
    ) throws {
        let servers = try ResolvedServers(configuration.servers)
        let (stream, continuation) = AsyncStream<ICEEvent>.makeStream(bufferingPolicy: .unbounded)
        let core = AgentCore(
            role: role, configuration: configuration, servers: servers, credentials: credentials,
            loop: loop, logger: logger, events: continuation)
        try loop.sync { try core.open() }
        self.role = role
        self.events = stream
        self.datagrams = ICEDatagrams(inbox: core.inbox)
        self.core = core
    }

    deinit {
        let core = self.core
        core.loop.execute { core.close(nil) }
    }

    /// Our credentials (new ones after ``restart()``).
    public var localCredentials: ICECredentials { core.published.withLock { $0.localCredentials } }
    /// The current connection state.
    public var state: ICEConnectionState { core.published.withLock { $0.state } }
    /// The pair in use, once one is selected.
    public var selectedPair: ICECandidatePair? { core.published.withLock { $0.selectedPair } }
    /// The largest datagram (UDP payload) the selected pair's path carries without IP
    /// fragmentation as far as the kernel knows (route or cached path MTU towards the remote
    /// address, minus IP/UDP headers), for a direct UDP host↔host pair; nil before a pair is
    /// selected and for pairs through a NAT mapping, a TURN relay or TCP, whose path the kernel
    /// does not know. Opens (and closes) a probe socket; sends nothing.
    public var selectedPathMaximumDatagramSize: Int? {
        selectedPair.flatMap(PathMTU.payloadLimit)
    }
    /// Received datagrams dropped because ``datagrams`` was read too slowly.
    public var droppedDatagrams: Int { core.inbox.droppedCount }

    /// Starts gathering local candidates; checks start as soon as remote ones are known.
    public func start() {
        let core = self.core
        core.loop.execute { core.start() }
    }

    /// Sets the peer's ufrag and password. A different ufrag than before means the peer
    /// restarted ICE: this agent restarts too and announces `.localCredentialsChanged`.
    public func setRemoteCredentials(_ credentials: ICECredentials) {
        let core = self.core
        core.loop.execute { core.setRemoteCredentials(credentials) }
    }

    /// Adds a remote candidate. Accepted at any time, also before credentials or ``start()``.
    /// mDNS (`.local`) and other non-literal addresses are skipped (logged at debug), as are
    /// candidates for components other than 1.
    public func addRemoteCandidate(_ candidate: ICECandidate) {
        let core = self.core
        core.loop.execute { core.addRemoteCandidate(candidate) }
    }

    /// The peer sent `a=end-of-candidates`: once every pair has failed, the agent fails
    /// instead of waiting for more candidates.
    public func addRemoteEndOfCandidates() {
        let core = self.core
        core.loop.execute { core.addRemoteEndOfCandidates() }
    }

    /// Applies one signalling line from the peer (`a=candidate:…`, `a=end-of-candidates`,
    /// `a=ice-ufrag:…`, `a=ice-pwd:…`).
    /// - Throws: ``ICEError`` naming the problem when the line is malformed.
    public func applyRemote(line: String) throws {
        let attribute = try ICEAttribute(parsing: line)
        let core = self.core
        switch attribute {
        case .candidate(let c): addRemoteCandidate(c)
        case .endOfCandidates: addRemoteEndOfCandidates()
        case .ufrag(let u): core.loop.execute { core.setRemoteCredentialPart(ufrag: u) }
        case .pwd(let p): core.loop.execute { core.setRemoteCredentialPart(pwd: p) }
        }
    }

    /// Queues one datagram for the selected pair. Returns false — and drops it, as UDP would —
    /// when no pair is usable yet, the agent is closed, or the send queue is full.
    @discardableResult
    public func send(_ datagram: [UInt8]) -> Bool {
        core.enqueueSend(datagram)
    }

    /// Sends several datagrams in order, like ``send(_:)`` for each. On the agent's loop thread
    /// (a job of ``eventLoop``, never a libnice callback) they go to the socket at once.
    public func send(batch: [[UInt8]]) {
        core.enqueueSend(batch: batch)
    }

    /// The loop this agent's libnice objects live on.
    public var eventLoop: ICEEventLoop { core.loop }

    /// Delivers received datagrams to `handler` on the agent's loop thread instead of through
    /// ``datagrams``: once per loop iteration that read any, with all of them, in a job after
    /// the I/O (never inside a libnice callback). For a consumer whose own state lives on that
    /// thread (the data-channel loop); it must not block. Use either this or ``datagrams``.
    public func receiveOnLoop(_ handler: @escaping @Sendable ([[UInt8]]) -> Void) {
        let inbox = core.inbox
        if inbox.setLoopConsumer(handler) { core.loop.execute { inbox.flush() } }
    }

    /// Runs `body` on the agent's loop thread once a pair is connected (state `connected` or
    /// `completed`), in the loop pass that announces it — or in the next loop job when it is
    /// already connected. Dropped if the agent closes first. For a consumer that starts
    /// work on that thread (the data-channel session's DTLS handshake): no task hop between the
    /// ICE state change and its first datagram.
    public func whenConnected(_ body: @escaping @Sendable () -> Void) {
        let core = self.core
        core.loop.execute { core.whenConnected(body) }
    }

    /// Runs `body` on the agent's loop thread after every change of the selected pair (the first
    /// selection included, and the pair chosen after an ICE restart or when nomination switches
    /// pairs), in a loop job outside libnice's signal handler. Kept until the agent closes. For
    /// a consumer whose datagram size depends on the pair's path
    /// (``selectedPathMaximumDatagramSize``).
    public func observeSelectedPairChanges(_ body: @escaping @Sendable (ICECandidatePair) -> Void) {
        let core = self.core
        core.loop.execute { core.observeSelectedPairChanges(body) }
    }

    /// Queues one datagram, first waiting for room in the send queue (backpressure for a
    /// fast producer). Returns false when the agent is closed or no pair is usable.
    public func sendWhenReady(_ datagram: [UInt8]) async -> Bool {
        while !core.enqueueSend(datagram) {
            guard await core.waitForSendSpace() else { return false }
        }
        return true
    }

    /// ICE restart (RFC 8445 §9): new local credentials and freshly gathered candidates (new
    /// sockets; libnice gathers once per stream, so the agent replaces its stream and keeps
    /// the session). ``events`` announces `.localCredentialsChanged`, then the new
    /// `.localCandidate`s and `.localGatheringDone` as they are found: send them to the peer.
    /// Datagrams pause from the restart until a new pair is selected. A peer that gets the new
    /// ufrag through ``setRemoteCredentials(_:)`` restarts (and re-gathers) by itself; its new
    /// credentials and candidates come back the same way. Remote candidates already known are
    /// checked again with the new credentials. Before ``start()`` only the credentials change.
    @discardableResult
    public func restart() -> ICECredentials {
        let credentials = ICECredentials.random()
        let core = self.core
        core.loop.execute { core.restart(with: credentials) }
        return credentials
    }

    /// Closes the agent: stops callbacks, releases TURN allocations (`nice_agent_close_async`),
    /// frees sockets. Idempotent; returns when everything is released.
    public func close() async {
        let core = self.core
        await withCheckedContinuation { (cont: CheckedContinuation<Void, Never>) in
            core.loop.execute { core.close(cont) }
        }
    }

    /// Agents not yet fully closed in this process (for leak checks).
    public static var liveAgentCount: Int { AgentRegistry.count + ClosingAgents.count }
}
