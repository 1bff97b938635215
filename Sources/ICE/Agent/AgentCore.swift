import CNice
import CNiceShim
import Dispatch
import Logging
import Synchronization

/// The owner of one `NiceAgent`. Everything below `// Loop-confined` is read and written only
/// on the ``ICEEventLoop`` thread; the public ``ICEAgent`` hands work over with `loop.execute`.
final class AgentCore: @unchecked Sendable {  // unchecked: mutable state is confined to the ICEEventLoop thread; cross-thread state sits in Mutexes.
    let id = AgentRegistry.newID()
    let loop: ICEEventLoop
    let configuration: ICEConfiguration
    let servers: ResolvedServers
    let controlling: Bool
    let logger: Logger
    let events: AsyncStream<ICEEvent>.Continuation
    let inbox: DatagramInbox

    /// What other threads may read: a mirror of loop state.
    struct Published {
        var state: ICEConnectionState = .new
        var selectedPair: ICECandidatePair?
        var localCredentials: ICECredentials
    }
    let published: Mutex<Published>

    struct Outbox {
        var items: [[UInt8]] = []
        var drainScheduled = false
        var open = false  // true while a pair is usable
        var closed = false
        var spaceWaiters: [CheckedContinuation<Bool, Never>] = []
    }
    let outbox = Mutex(Outbox())

    // Loop-confined
    private var agent: LoopPointer?
    private var streamID: guint = 0
    private var machine = ConnectionStateMachine()
    private var localCredentials: ICECredentials
    private var remoteCredentials: ICECredentials?
    private var remoteUfrag: String?
    private var remotePwd: String?
    private var started = false
    private var pendingRemote: [ICECandidate] = []
    private var appliedRemote: [ICECandidate] = []
    private var remoteCandidateCount = 0
    private var remoteEndPending = false
    private var timerArmed = false
    private var timerGeneration = 0
    private var localCandidates: [ICECandidate] = []
    private var localGatheringDone = false
    private var closing = false
    private var closeWaiters: [CheckedContinuation<Void, Never>] = []
    private var closeDone = false
    private var inboundCount = 0
    private var silenceWatch: (generation: Int, lastCount: Int, silentTicks: Int)?
    private var silenceGeneration = 0
    private var connectedWaiters: [@Sendable () -> Void] = []
    private var pairChangeObservers: [@Sendable (ICECandidatePair) -> Void] = []
    /// The selected pair is UDP without a TURN relay: bursts go out in one `sendmmsg`.
    private var selectedPairIsDirectUDP = false

    init(
        role: ICERole, configuration: ICEConfiguration, servers: ResolvedServers, credentials: ICECredentials,
        loop: ICEEventLoop, logger: Logger, events: AsyncStream<ICEEvent>.Continuation
    ) {
        self.loop = loop
        self.configuration = configuration
        self.servers = servers
        self.controlling = role == .controlling
        var logger = logger
        logger[metadataKey: "ice.agent"] = "\(id)"
        self.logger = logger
        self.events = events
        self.inbox = DatagramInbox(limit: configuration.receiveQueueLimit)
        self.localCredentials = credentials
        self.published = Mutex(Published(localCredentials: credentials))
    }

    private var userData: gpointer? { AgentRegistry.userData(id) }

    // MARK: Setup

    /// Creates and configures the NiceAgent. Runs on the loop thread.
    func open() throws {
        var flags = NICE_AGENT_OPTION_CONSENT_FRESHNESS.rawValue | NICE_AGENT_OPTION_ICE_TRICKLE.rawValue
        if configuration.nomination == .regular { flags |= NICE_AGENT_OPTION_REGULAR_NOMINATION.rawValue }
        guard let a = nice_agent_new_full(loop.context, NICE_COMPATIBILITY_RFC5245, NiceAgentOption(rawValue: flags)) else {
            throw ICEError(.libniceCallFailed, "nice_agent_new_full returned NULL")
        }
        let object = UnsafeMutableRawPointer(a)
        do {
            ugate_g_object_set_boolean(object, "controlling-mode", controlling ? 1 : 0)
            ugate_g_object_set_boolean(object, "upnp", 0)
            let pacing = configuration.checkPacing.components
            let pacingMs = max(5, Int(pacing.seconds) * 1000 + Int(pacing.attoseconds / 1_000_000_000_000_000))
            ugate_g_object_set_uint(object, "stun-pacing-timer", guint(pacingMs))
            ugate_g_object_set_boolean(object, "ice-tcp", configuration.tcpCandidates ? 1 : 0)
            ugate_g_object_set_boolean(object, "ice-udp", configuration.udpCandidates ? 1 : 0)
            ugate_g_object_set_boolean(object, "force-relay", configuration.transportPolicy == .relay ? 1 : 0)
            if let stun = servers.stun {
                ugate_g_object_set_string(object, "stun-server", stun.ip)
                ugate_g_object_set_uint(object, "stun-server-port", guint(stun.port))
            }
            for address in configuration.localAddresses {
                guard ugate_nice_add_local_address(a, address) != 0 else {
                    throw ICEError(.invalidConfiguration, "local address \"\(address)\" is not an IP literal libnice accepts")
                }
            }
            streamID = try addStream(a, credentials: localCredentials)
        } catch {
            g_object_unref(object)
            throw error
        }
        agent = LoopPointer(raw: a)
        AgentRegistry.register(self)
        ugate_nice_connect_signals(
            a, userData,
            { _, stream, data in AgentRegistry.lookup(data)?.gatheringDone(stream) },
            { _, candidate, data in AgentRegistry.lookup(data)?.newLocalCandidate(candidate) },
            { _, stream, _, state, data in AgentRegistry.lookup(data)?.componentStateChanged(stream, state) },
            { _, stream, _, local, remote, data in AgentRegistry.lookup(data)?.selectedPairChanged(stream, local, remote) })
        attachReceive(a)
        logger.debug("agent opened", metadata: ["ice.role": "\(controlling ? "controlling" : "controlled")", "ice.ufrag": "\(localCredentials.ufrag)"])
    }

    /// Adds the session's one stream (one component) with the configured port range, TURN
    /// servers and `credentials`; gathering is started separately. Returns its id.
    private func addStream(_ a: OpaquePointer, credentials: ICECredentials) throws -> guint {
        let stream = nice_agent_add_stream(a, 1)
        guard stream != 0 else { throw ICEError(.libniceCallFailed, "nice_agent_add_stream failed") }
        do {
            if let range = configuration.portRange {
                nice_agent_set_port_range(a, stream, 1, guint(range.lowerBound), guint(range.upperBound))
            }
            for relay in servers.relays {
                let type = relay.transport == .udp ? NICE_RELAY_TYPE_TURN_UDP : NICE_RELAY_TYPE_TURN_TCP
                guard nice_agent_set_relay_info(a, stream, 1, relay.ip, guint(relay.port), relay.username, relay.password, type) != 0 else {
                    throw ICEError(.invalidConfiguration, "nice_agent_set_relay_info refused TURN server \(relay.ip):\(relay.port)")
                }
            }
            guard nice_agent_set_local_credentials(a, stream, credentials.ufrag, credentials.pwd) != 0 else {
                throw ICEError(.libniceCallFailed, "nice_agent_set_local_credentials failed")
            }
        } catch {
            nice_agent_remove_stream(a, stream)
            throw error
        }
        return stream
    }

    /// Routes the current stream's received datagrams into ``inbox``.
    private func attachReceive(_ a: OpaquePointer) {
        nice_agent_attach_recv(a, streamID, 1, loop.context, { _, _, _, length, buffer, data in
            guard let buffer, let core = AgentRegistry.lookup(data) else { return }
            let bytes = UnsafeRawBufferPointer(start: buffer, count: Int(length))
            core.inboundCount &+= 1
            if core.inbox.push([UInt8](bytes)) == .flushNeeded {
                let inbox = core.inbox
                core.loop.execute { inbox.flush() }
            }
        }, userData)
    }

    // MARK: Commands (loop thread)

    func start() {
        guard let agent, !closing, !started else { return }
        started = true
        guard nice_agent_gather_candidates(agent.raw, streamID) != 0 else {
            fail(ICEError(.libniceCallFailed, "nice_agent_gather_candidates failed (no usable local address or TURN server?)"))
            return
        }
        flushRemote()
    }

    func setRemoteCredentials(_ credentials: ICECredentials) {
        guard !closing else { return }
        if let old = remoteCredentials, old.ufrag != credentials.ufrag {
            // RFC 8445 §9 / RFC 8839 §4.4.1.1: a new ufrag means the peer restarted; so do we.
            logger.debug("peer restarted ICE (new ufrag): restarting too")
            restart(with: .random())
        }
        guard let agent else { return }
        remoteCredentials = credentials
        nice_agent_set_remote_credentials(agent.raw, streamID, credentials.ufrag, credentials.pwd)
        flushRemote()
    }

    /// A single `ice-ufrag` or `ice-pwd` line; applied once both halves are known.
    func setRemoteCredentialPart(ufrag: String? = nil, pwd: String? = nil) {
        if let ufrag { remoteUfrag = ufrag }
        if let pwd { remotePwd = pwd }
        guard let u = remoteUfrag, let p = remotePwd, let credentials = try? ICECredentials(ufrag: u, pwd: p) else { return }
        remoteUfrag = nil
        remotePwd = nil
        setRemoteCredentials(credentials)
    }

    func addRemoteCandidate(_ candidate: ICECandidate) {
        guard !closing else { return }
        guard candidate.component == 1 else {
            logger.debug("remote candidate skipped: component \(candidate.component) (only component 1 is used)")
            return
        }
        guard candidate.hasIPLiteral else {
            logger.debug("remote candidate skipped: \(candidate.address) is not an IP literal (mDNS names are not resolved)")
            return
        }
        pendingRemote.append(candidate)
        flushRemote()
    }

    func addRemoteEndOfCandidates() {
        guard !closing else { return }
        remoteEndPending = true
        flushRemote()
    }

    /// Hands buffered remote candidates to libnice once gathering has started and the remote
    /// credentials are known (checks sent earlier would carry no valid USERNAME).
    private func flushRemote() {
        guard let agent, started, remoteCredentials != nil else { return }
        for candidate in pendingRemote {
            let line = Self.libniceLine(candidate)
            guard let nice = nice_agent_parse_remote_candidate_sdp(agent.raw, streamID, line) else {
                logger.warning("libnice refused remote candidate", metadata: ["ice.candidate": "\(line)"])
                continue
            }
            let list = g_slist_append(nil, nice)
            let added = nice_agent_set_remote_candidates(agent.raw, streamID, 1, list)
            g_slist_free(list)
            nice_candidate_free(nice)
            if added > 0 {
                remoteCandidateCount += 1
                appliedRemote.append(candidate)
            }
            logger.trace("remote candidate added", metadata: ["ice.candidate": "\(line)"])
        }
        pendingRemote.removeAll()
        if remoteEndPending {
            remoteEndPending = false
            nice_agent_peer_candidate_gathering_done(agent.raw, streamID)
        }
        if remoteCandidateCount > 0, !timerArmed {
            timerArmed = true
            if let s = machine.checksStarted() { announce(s) }
            armTimeout()
        }
    }

    /// The candidate as libnice's parser wants it: `a=candidate:` prefix, only the attributes
    /// it understands.
    static func libniceLine(_ c: ICECandidate) -> String {
        var stripped = c
        stripped.extensions = []
        return stripped.sdpLine
    }

    private func armTimeout() {
        timerGeneration += 1
        let generation = timerGeneration
        let (seconds, attos) = configuration.connectTimeout.components
        let nanos = Int(seconds) * 1_000_000_000 + Int(attos / 1_000_000_000)
        DispatchQueue.global().asyncAfter(deadline: .now() + .nanoseconds(nanos)) { [weak self] in
            guard let self else { return }
            self.loop.execute { self.timeoutFired(generation) }
        }
    }

    private func timeoutFired(_ generation: Int) {
        guard generation == timerGeneration, !closing else { return }
        guard machine.state == .new || machine.state == .checking else { return }
        fail(ICEError(.timeout, "no candidate pair connected within \(configuration.connectTimeout) (\(localCandidates.count) local, \(remoteCandidateCount) remote candidates)"))
    }

    /// ICE restart with re-gathering. libnice gathers once per stream
    /// (`nice_agent_gather_candidates` ignores a second call, `nice_agent_restart_stream` keeps
    /// the old local candidates), so a started session gets a new stream: fresh sockets and
    /// candidates under the new credentials, announced as `.localCredentialsChanged`, then
    /// `.localCandidate`… and `.localGatheringDone` as they are found. The old stream (and its
    /// selected pair) is removed once the new one gathers, so datagrams pause until a new pair
    /// is selected. Before ``start()`` only the credentials change.
    func restart(with credentials: ICECredentials) {
        guard let agent, !closing else { return }
        let oldStream = streamID
        if started {
            do {
                streamID = try addStream(agent.raw, credentials: credentials)
            } catch let error as ICEError {
                fail(error)
                return
            } catch {
                fail(ICEError(.libniceCallFailed, "adding a stream for the restart failed: \(error)"))
                return
            }
            nice_agent_attach_recv(agent.raw, oldStream, 1, loop.context, nil, nil)
            attachReceive(agent.raw)
            localCandidates.removeAll()
            localGatheringDone = false
            published.withLock { $0.selectedPair = nil }
        } else {
            guard nice_agent_set_local_credentials(agent.raw, streamID, credentials.ufrag, credentials.pwd) != 0 else {
                fail(ICEError(.libniceCallFailed, "nice_agent_set_local_credentials failed"))
                return
            }
        }
        localCredentials = credentials
        published.withLock { $0.localCredentials = credentials }
        remoteCredentials = nil
        remoteCandidateCount = 0
        // The peer's candidates may survive its restart (not every agent re-gathers): check
        // them again with the new credentials (duplicates it re-sends are merged by libnice).
        pendingRemote = appliedRemote + pendingRemote
        appliedRemote.removeAll()
        remoteEndPending = false
        timerArmed = false
        timerGeneration += 1
        if let s = machine.restarted() { announce(s) }
        logger.debug("ICE restart", metadata: ["ice.ufrag": "\(credentials.ufrag)", "ice.stream": "\(streamID)"])
        events.yield(.localCredentialsChanged(credentials))
        guard started else { return }
        let gathering = nice_agent_gather_candidates(agent.raw, streamID)
        nice_agent_remove_stream(agent.raw, oldStream)
        if gathering == 0 {
            fail(ICEError(.libniceCallFailed, "nice_agent_gather_candidates failed after the restart (no usable local address or TURN server?)"))
        }
    }

    func whenConnected(_ body: @escaping @Sendable () -> Void) {
        guard !closing else { return }
        if machine.state == .connected || machine.state == .completed {
            body()
        } else {
            connectedWaiters.append(body)
        }
    }

    func observeSelectedPairChanges(_ body: @escaping @Sendable (ICECandidatePair) -> Void) {
        guard !closing else { return }
        pairChangeObservers.append(body)
    }

    func enqueueSend(_ datagram: [UInt8]) -> Bool {
        let schedule = outbox.withLock { o -> Bool? in
            guard o.open, !o.closed, o.items.count < configuration.sendQueueLimit else { return nil }
            o.items.append(datagram)
            if o.drainScheduled { return false }
            o.drainScheduled = true
            return true
        }
        guard let schedule else { return false }
        if schedule { loop.execute { self.drainSends() } }
        return true
    }

    /// Queues several datagrams in order (those beyond the queue limit are dropped, as UDP
    /// would). Called on the loop thread with nothing queued before them, they go out at once:
    /// the data-channel loop runs there, and a hop to the next iteration would only add latency.
    func enqueueSend(batch: [[UInt8]]) {
        if loop.inLoop, let agent {
            let direct = outbox.withLock { o in o.open && !o.closed && o.items.isEmpty && !o.drainScheduled }
            if direct {
                sendNow(agent, batch)
                return
            }
        }
        let schedule = outbox.withLock { o -> Bool in
            guard o.open, !o.closed else { return false }
            o.items.append(contentsOf: batch.prefix(max(0, configuration.sendQueueLimit - o.items.count)))
            if o.drainScheduled || o.items.isEmpty { return false }
            o.drainScheduled = true
            return true
        }
        if schedule { loop.execute { self.drainSends() } }
    }

    private func sendNow(_ agent: LoopPointer, _ datagrams: [[UInt8]]) {
        guard selectedPairIsDirectUDP, datagrams.count > 1 else {
            for datagram in datagrams {
                datagram.withUnsafeBytes { bytes in
                    _ = nice_agent_send(agent.raw, streamID, 1, guint(bytes.count), bytes.baseAddress?.assumingMemoryBound(to: gchar.self))
                }
            }
            return
        }
        var start = 0
        while start < datagrams.count {
            let end = min(start + Self.messagesPerCall, datagrams.count)
            sendMessages(agent, datagrams[start..<end])
            start = end
        }
    }

    /// Datagrams per `nice_agent_send_messages_nonblocking` call (one `sendmmsg` on a direct
    /// UDP pair; also bounds the buffer-pinning recursion below).
    private static let messagesPerCall = 64

    /// Several datagrams in one libnice call: on a UDP socket libnice hands them to
    /// `g_socket_send_messages`, i.e. one `sendmmsg` instead of one `sendmsg` each (hot path:
    /// SCTP emits bursts per loop pass). Datagrams the socket buffer cannot take are dropped,
    /// as with `nice_agent_send`. Each buffer is pinned by a nested `withUnsafeBytes` so the
    /// pointers stay valid for the call, without copying.
    private func sendMessages(_ agent: LoopPointer, _ datagrams: ArraySlice<[UInt8]>) {
        var vectors = [GOutputVector](repeating: GOutputVector(buffer: nil, size: 0), count: datagrams.count)
        func pin(_ index: Int) {
            guard index < datagrams.count else {
                vectors.withUnsafeMutableBufferPointer { vectors in
                    var messages = (0..<vectors.count).map { NiceOutputMessage(buffers: vectors.baseAddress! + $0, n_buffers: 1) }
                    _ = nice_agent_send_messages_nonblocking(agent.raw, streamID, 1, &messages, guint(messages.count), nil, nil)
                }
                return
            }
            datagrams[datagrams.startIndex + index].withUnsafeBytes { bytes in
                vectors[index] = GOutputVector(buffer: bytes.baseAddress, size: gsize(bytes.count))
                pin(index + 1)
            }
        }
        pin(0)
    }

    /// Waits until the send queue has room; false when the agent closed or has no usable pair.
    func waitForSendSpace() async -> Bool {
        await withCheckedContinuation { (cont: CheckedContinuation<Bool, Never>) in
            let answer = outbox.withLock { o -> Bool? in
                if o.closed || !o.open { return false }
                if o.items.count < configuration.sendQueueLimit { return true }
                o.spaceWaiters.append(cont)
                return nil
            }
            if let answer { cont.resume(returning: answer) }
        }
    }

    /// Sends what is queued now; datagrams queued meanwhile go in the next loop iteration,
    /// after the sockets had their turn (a fast producer must not starve receiving).
    private func drainSends() {
        let (batch, waiters) = outbox.withLock { o -> ([[UInt8]], [CheckedContinuation<Bool, Never>]) in
            defer {
                o.items.removeAll(keepingCapacity: true)
                o.spaceWaiters.removeAll()
            }
            return (o.items, o.spaceWaiters)
        }
        for w in waiters { w.resume(returning: true) }
        if let agent { sendNow(agent, batch) }
        let more = outbox.withLock { o -> Bool in
            if o.items.isEmpty {
                o.drainScheduled = false
                return false
            }
            return true
        }
        if more { loop.execute { self.drainSends() } }
    }

    // MARK: Close

    func close(_ waiter: CheckedContinuation<Void, Never>?) {
        if closeDone {
            waiter?.resume()
            return
        }
        if let waiter { closeWaiters.append(waiter) }
        guard !closing else { return }
        closing = true
        timerGeneration += 1
        pairChangeObservers.removeAll()
        let waiters = outbox.withLock { o -> [CheckedContinuation<Bool, Never>] in
            o.closed = true
            o.items.removeAll()
            defer { o.spaceWaiters.removeAll() }
            return o.spaceWaiters
        }
        for w in waiters { w.resume(returning: false) }
        AgentRegistry.remove(id)
        guard let agent else {
            finishClose()
            return
        }
        ugate_g_signal_handlers_disconnect_by_data(UnsafeMutableRawPointer(agent.raw), userData)
        nice_agent_attach_recv(agent.raw, streamID, 1, loop.context, nil, nil)
        ClosingAgents.add(self)
        nice_agent_close_async(agent.raw, { _, _, data in
            ClosingAgents.take(Int(bitPattern: data))?.finishClose()
        }, userData)
    }

    private func finishClose() {
        if let agent {
            g_object_unref(UnsafeMutableRawPointer(agent.raw))
            self.agent = nil
        }
        closeDone = true
        inbox.finish()
        if let s = machine.closed() { announce(s) }
        events.finish()
        logger.debug("agent closed")
        let waiters = closeWaiters
        closeWaiters.removeAll()
        for w in waiters { w.resume() }
    }

    // MARK: libnice signals (loop thread)

    private func gatheringDone(_ stream: guint) {
        guard stream == streamID else { return }
        localGatheringDone = true
        events.yield(.localGatheringDone)
    }

    private func newLocalCandidate(_ candidate: UnsafeMutablePointer<NiceCandidate>?) {
        guard let agent, let candidate, candidate.pointee.stream_id == streamID, let c = describe(agent, candidate) else { return }
        guard c.component == 1 else { return }
        localCandidates.append(c)
        events.yield(.localCandidate(c))
    }

    private func componentStateChanged(_ stream: guint, _ raw: guint) {
        guard stream == streamID, let niceState = NiceState(rawValue: raw) else { return }
        let before = machine.state
        guard let next = machine.nice(niceState) else { return }
        if next == .failed {
            let error: ICEError
            if before == .connected || before == .completed || before == .disconnected {
                error = ICEError(.consentLost, "the peer stopped answering consent checks (RFC 7675) on the selected pair")
            } else {
                let creds = remoteCredentials == nil ? "remote credentials never set" : "wrong remote credentials or unreachable peer"
                error = ICEError(.checksFailed, "connectivity checks failed on every pair (\(localCandidates.count) local, \(remoteCandidateCount) remote candidates; \(creds))")
            }
            events.yield(.failure(error))
            logger.debug("agent failed", metadata: ["ice.error": "\(error)"])
        }
        announce(next)
    }

    private func selectedPairChanged(_ stream: guint, _ local: UnsafeMutablePointer<NiceCandidate>?, _ remote: UnsafeMutablePointer<NiceCandidate>?) {
        guard stream == streamID, let agent, let local, let remote, let l = describe(agent, local), let r = describe(agent, remote) else { return }
        let pair = ICECandidatePair(local: l, remote: r)
        published.withLock { $0.selectedPair = pair }
        // Outside the signal handler (libnice holds its agent lock around signals).
        loop.execute { [self] in
            guard let agent = self.agent, !closing else { return }
            selectedPairIsDirectUDP = pair.local.transport == .udp && pair.local.kind != .relay
            SocketBuffers.enlarge(agent: agent.raw, streamID: streamID)
            for observer in pairChangeObservers { observer(pair) }
        }
        logger.debug("selected pair", metadata: ["ice.local": "\(l.sdpLine)", "ice.remote": "\(r.sdpLine)"])
        events.yield(.selectedPair(pair))
    }

    /// A libnice candidate in SDP form, through our codec (one conversion path for all).
    private func describe(_ agent: LoopPointer, _ candidate: UnsafeMutablePointer<NiceCandidate>) -> ICECandidate? {
        guard let text = nice_agent_generate_local_candidate_sdp(agent.raw, candidate) else { return nil }
        defer { g_free(text) }
        let line = String(cString: text)
        do {
            return try ICECandidate(parsing: line)
        } catch {
            logger.warning("libnice produced a candidate line we cannot parse", metadata: ["ice.error": "\(error)"])
            return nil
        }
    }

    private func fail(_ error: ICEError) {
        guard let s = machine.timedOut() else { return }
        events.yield(.failure(error))
        announce(s)
    }

    /// Watches inbound traffic once a second while connected (see
    /// ``ICEConfiguration/disconnectedAfter``).
    private func watchSilence() {
        guard let limit = configuration.disconnectedAfter, silenceWatch == nil, !closing else { return }
        silenceGeneration += 1
        silenceWatch = (silenceGeneration, inboundCount, 0)
        scheduleSilenceTick(silenceGeneration, limit: limit)
    }

    private func scheduleSilenceTick(_ generation: Int, limit: Duration) {
        DispatchQueue.global().asyncAfter(deadline: .now() + .seconds(1)) { [weak self] in
            guard let self else { return }
            self.loop.execute { self.silenceTick(generation, limit: limit) }
        }
    }

    private func silenceTick(_ generation: Int, limit: Duration) {
        guard var watch = silenceWatch, watch.generation == generation, !closing else { return }
        guard [.connected, .completed, .disconnected].contains(machine.state) else {
            silenceWatch = nil
            return
        }
        if inboundCount != watch.lastCount {
            watch.lastCount = inboundCount
            watch.silentTicks = 0
            if let s = machine.trafficResumed() { announce(s) }
        } else {
            watch.silentTicks += 1
            if Duration.seconds(watch.silentTicks) >= limit, let s = machine.silent() { announce(s) }
        }
        silenceWatch = watch
        scheduleSilenceTick(generation, limit: limit)
    }

    private func announce(_ state: ICEConnectionState) {
        if state == .connected || state == .completed { watchSilence() }
        // libnice keeps sending on the old pair during a restart and while consent is pending.
        let hasPair = published.withLock { $0.selectedPair != nil }
        let usable = state == .connected || state == .completed || state == .disconnected || (state == .checking && hasPair)
        let stranded = outbox.withLock { o -> [CheckedContinuation<Bool, Never>] in
            o.open = usable && !o.closed
            guard !o.open else { return [] }
            defer { o.spaceWaiters.removeAll() }
            return o.spaceWaiters
        }
        for w in stranded { w.resume(returning: false) }
        published.withLock { $0.state = state }
        logger.debug("state \(state.rawValue)")
        events.yield(.stateChanged(state))
        if state == .connected || state == .completed, !connectedWaiters.isEmpty {
            let waiters = connectedWaiters
            connectedWaiters.removeAll()
            for waiter in waiters { waiter() }
        } else if state == .closed || state == .failed {
            connectedWaiters.removeAll()
        }
    }
}

/// Agents whose `nice_agent_close_async` has not called back yet, keyed by id.
enum ClosingAgents {
    private static let pending = Mutex<[Int: AgentCore]>([:])

    static func add(_ core: AgentCore) { pending.withLock { $0[core.id] = core } }

    static func take(_ id: Int) -> AgentCore? { pending.withLock { $0.removeValue(forKey: id) } }

    static var count: Int { pending.withLock { $0.count } }
}
