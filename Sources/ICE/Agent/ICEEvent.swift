/// Connection state of an agent (the WebRTC `RTCIceConnectionState` vocabulary).
public enum ICEConnectionState: String, Sendable, Hashable {
    /// Created, checks not started.
    case new
    /// Gathering and/or running connectivity checks.
    case checking
    /// A pair works; checks may still run.
    case connected
    /// Checks are done and a pair is nominated.
    case completed
    /// Was connected, but nothing arrived from the peer for
    /// ``ICEConfiguration/disconnectedAfter``; back to connected when traffic resumes, failed
    /// when libnice declares consent lost.
    case disconnected
    /// No pair works, consent was lost for good, or the connect timeout passed.
    case failed
    /// Closed by ``ICEAgent/close()``. Final.
    case closed
}

/// A pair of candidates chosen for traffic.
public struct ICECandidatePair: Hashable, Sendable {
    /// Our side.
    public var local: ICECandidate
    /// The peer's side.
    public var remote: ICECandidate

    /// Creates a pair.
    public init(local: ICECandidate, remote: ICECandidate) {
        self.local = local
        self.remote = remote
    }
}

/// What an ``ICEAgent`` reports, in order, on ``ICEAgent/events``.
public enum ICEEvent: Sendable, Hashable {
    /// A local candidate to send to the peer (trickle).
    case localCandidate(ICECandidate)
    /// Local gathering is done: send `a=end-of-candidates` to the peer.
    case localGatheringDone
    /// ICE restart: send these new credentials to the peer (the local candidates follow
    /// again as `.localCandidate` events).
    case localCredentialsChanged(ICECredentials)
    /// The connection state changed.
    case stateChanged(ICEConnectionState)
    /// A (new) pair was selected for traffic.
    case selectedPair(ICECandidatePair)
    /// Why the agent failed; followed by `.stateChanged(.failed)`.
    case failure(ICEError)
}

/// libnice's component states (`NiceComponentState`), mirrored so the state logic stays
/// free of C types.
enum NiceState: UInt32, Sendable {
    case disconnected = 0, gathering, connecting, connected, ready, failed
}

/// Maps libnice component states and agent-level events onto ``ICEConnectionState``.
/// Pure: events in, the state to announce (if it changed) out.
struct ConnectionStateMachine: Sendable {
    private(set) var state: ICEConnectionState = .new
    private var wasConnected = false
    private var resumeState: ICEConnectionState = .connected

    /// libnice reported a component state.
    mutating func nice(_ s: NiceState) -> ICEConnectionState? {
        let next: ICEConnectionState
        switch s {
        case .disconnected: next = wasConnected ? .disconnected : .new
        case .gathering: next = wasConnected ? state : .new
        case .connecting: next = wasConnected ? .disconnected : .checking
        case .connected: next = .connected
        case .ready: next = .completed
        case .failed: next = .failed
        }
        return move(to: next)
    }

    /// Checks became possible (remote credentials and candidates are known).
    mutating func checksStarted() -> ICEConnectionState? {
        state == .new ? move(to: .checking) : nil
    }

    /// The connect timeout passed; returns `.failed` unless already connected.
    mutating func timedOut() -> ICEConnectionState? {
        switch state {
        case .new, .checking: move(to: .failed)
        default: nil
        }
    }

    /// The session was restarted: checks run again, a later `failed` is news.
    mutating func restarted() -> ICEConnectionState? {
        wasConnected = false
        return state == .closed ? nil : move(to: .checking)
    }

    /// Nothing arrived from the peer for the configured silence interval.
    mutating func silent() -> ICEConnectionState? {
        guard state == .connected || state == .completed else { return nil }
        resumeState = state
        return move(to: .disconnected)
    }

    /// Traffic arrived again after ``silent()``.
    mutating func trafficResumed() -> ICEConnectionState? {
        state == .disconnected ? move(to: resumeState) : nil
    }

    mutating func closed() -> ICEConnectionState? { move(to: .closed) }

    private mutating func move(to next: ICEConnectionState) -> ICEConnectionState? {
        guard state != .closed, next != state else { return nil }
        if next == .connected || next == .completed { wasConnected = true }
        state = next
        return next
    }
}
