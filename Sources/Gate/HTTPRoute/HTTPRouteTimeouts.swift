import Foundation
import Glibc
import NIOCore
import Synchronization

/// The graceful close of an HTTP/2 connection (RFC 9113 §6.8) — when it has been idle, and
/// when the gateway shuts down or its listener is removed (quiesce) — as a value: events in,
/// actions out; no timers, frames or channel inside.
///
/// ```
/// active ── idle timer fired, no stream open ──┐
/// active ── quiesce (streams may be open) ─────┴─▶ draining: GOAWAY(2^31−1, NO_ERROR) + PING
/// draining ── PING ACK (one round trip) or grace timer ──▶ closing: GOAWAY(last stream, NO_ERROR)
/// closing ── no stream open ──▶ close
/// ```
///
/// The first GOAWAY (last stream ID 2^31−1) tells the client to open no new stream while
/// every stream it already sent is still accepted; its PING ACK comes after all of them (TCP
/// keeps order), so the final GOAWAY names the true last stream and a request that raced the
/// idle close is served instead of lost. The idle timer runs from the start and from each
/// moment the last open stream closes; a stream that stays open is never cut.
struct HTTP2IdleMachine: Equatable {
    enum Phase: Equatable {
        case active
        /// First GOAWAY and PING sent; waiting for the PING ACK or the grace timer.
        case draining
        /// Final GOAWAY sent; the connection closes once no stream is open.
        case closing
        case closed
    }

    enum Action: Equatable {
        case armIdleTimer
        case cancelIdleTimer
        /// GOAWAY (NO_ERROR) with this last stream ID.
        case goAway(lastStreamID: Int)
        /// PING (not ACK) with `HTTP2IdleMachine.pingData`, and the grace timer.
        case ping
        case armGraceTimer
        case close
    }

    /// The opaque data of the idle PING: its ACK ends the draining phase.
    static let pingData: UInt64 = 0x7567_6174_6569_646c  // "ugateidl"

    private(set) var phase = Phase.active
    private(set) var open = 0
    /// The last stream ID of the first GOAWAY: the largest there is, 2^31−1.
    static let maxStreamID = Int(Int32.max)

    /// The highest stream ID the client opened (0: none).
    private(set) var lastStreamID = 0

    /// The connection is active.
    mutating func start() -> [Action] {
        phase == .active && open == 0 ? [.armIdleTimer] : []
    }

    mutating func streamOpened(_ id: Int) -> [Action] {
        open += 1
        lastStreamID = max(lastStreamID, id)
        // Only the first open stream stops the idle timer (armed when none was open): no
        // action for the streams that join it.
        return phase == .active && open == 1 ? [.cancelIdleTimer] : []
    }

    mutating func streamClosed() -> [Action] {
        open = max(open - 1, 0)
        guard open == 0 else { return [] }
        switch phase {
        case .active: return [.armIdleTimer]
        case .closing:
            phase = .closed
            return [.close]
        case .draining, .closed: return []
        }
    }

    mutating func idleTimerFired() -> [Action] {
        guard phase == .active, open == 0 else { return [] }
        phase = .draining
        return [.goAway(lastStreamID: Self.maxStreamID), .ping, .armGraceTimer]
    }

    /// The gateway shuts down or the connection's listener was removed: the same two-step
    /// GOAWAY, but streams in flight are not waited for first; they finish before the close.
    mutating func quiesce() -> [Action] {
        guard phase == .active else { return [] }
        phase = .draining
        return [.cancelIdleTimer, .goAway(lastStreamID: Self.maxStreamID), .ping, .armGraceTimer]
    }

    /// The PING ACK arrived, or the grace timer fired (a client that does not answer PING).
    mutating func drained() -> [Action] {
        guard phase == .draining else { return [] }
        if open == 0 {
            phase = .closed
            return [.goAway(lastStreamID: lastStreamID), .close]
        }
        phase = .closing
        return [.goAway(lastStreamID: lastStreamID)]
    }

    mutating func channelClosed() -> [Action] {
        phase = .closed
        return [.cancelIdleTimer]
    }
}

/// Closes an HTTP/2 connection that has had no open stream for `timeout` with the two-step
/// GOAWAY of `HTTP2IdleMachine` (then closes it), like nginx's `http2_idle_timeout` but
/// graceful; and the same on `ChannelShouldQuiesceEvent` (shutdown, listener removed), with
/// the streams in flight finishing first. Driven by its connection's `HTTP2RouteHandler`
/// (streams opened and closed, the PING ACK, quiesce), whose codec writes the frames.
final class HTTP2IdleHandler {
    let timeout: TimeAmount
    /// How long the draining phase waits for the PING ACK before the final GOAWAY.
    let grace: TimeAmount
    let loop: any EventLoop
    private var machine = HTTP2IdleMachine()
    /// The idle timer, armed lazily: `armIdleTimer` sets `idleDeadline` and schedules a task
    /// only when none is pending; `cancelIdleTimer` only clears the deadline. A pending task
    /// that fires early re-arms itself for the deadline (or ends when there is none). So a
    /// busy connection whose streams come and go schedules about one task per idle timeout,
    /// not one (plus a cancellation, a linear search of the loop's task queue) per stream.
    private var timer: Scheduled<Void>?
    private var idleDeadline: NIODeadline?
    private var graceTimer: Scheduled<Void>?
    /// Strong (no weak reference to the handler, see `HTTP2RouteStream.handler`): cleared by
    /// `stop`, which the handler calls when its channel goes.
    private var connection: HTTP2RouteHandler?
    private var started = false

    init(seconds: Double, graceSeconds: Double = 1, loop: any EventLoop) {
        timeout = .milliseconds(Int64(max(seconds, 0.001) * 1000))
        grace = .milliseconds(Int64(max(graceSeconds, 0.001) * 1000))
        self.loop = loop
    }

    /// The connection is active (once).
    func start(_ connection: HTTP2RouteHandler) {
        guard !started else { return }
        started = true
        self.connection = connection
        perform(machine.start())
    }

    func streamOpened(_ id: UInt32) { perform(machine.streamOpened(Int(id))) }
    func streamClosed() { perform(machine.streamClosed()) }
    func quiesce() { perform(machine.quiesce()) }

    func pingAcknowledged(_ opaque: UInt64) {
        guard opaque == HTTP2IdleMachine.pingData else { return }
        graceTimer?.cancel()
        perform(machine.drained())
    }

    func stop() {
        graceTimer?.cancel()
        timer?.cancel()
        timer = nil
        perform(machine.channelClosed())
        connection = nil
    }

    private func perform(_ actions: [HTTP2IdleMachine.Action]) {
        guard let connection else { return }
        for action in actions {
            switch action {
            case .armIdleTimer:
                let deadline = NIODeadline.now() + timeout
                idleDeadline = deadline
                if timer == nil { armTimer(at: deadline) }
            case .cancelIdleTimer:
                idleDeadline = nil
            case .goAway(let last):
                // The first (2^31−1) still lets every stream the client sent before it in.
                connection.idleGoAway(lastStreamID: UInt32(last))
            case .ping:
                connection.idlePing(HTTP2IdleMachine.pingData)
            case .armGraceTimer:
                graceTimer = loop.assumeIsolated().scheduleTask(in: grace) { [self] in perform(machine.drained()) }
            case .close:
                connection.idleClose()
            }
        }
    }

    private func armTimer(at deadline: NIODeadline) {
        timer = loop.assumeIsolated().scheduleTask(deadline: deadline) { [weak self] in
            guard let self else { return }
            timer = nil
            guard let idleDeadline else { return }
            if idleDeadline <= .now() {
                self.idleDeadline = nil
                perform(machine.idleTimerFired())
            } else {
                armTimer(at: idleDeadline)
            }
        }
    }
}

extension HTTP2IdleHandler {
    /// A GOAWAY frame with NO_ERROR and no debug data (RFC 9113 §4.1, §6.8,
    /// https://www.rfc-editor.org/rfc/rfc9113#section-6.8), big-endian:
    ///
    /// ```
    /// +-----------------------------------------------+
    /// |                 Length (24) = 8               |
    /// +---------------+---------------+---------------+
    /// | Type (8) = 7  | Flags (8) = 0 |
    /// +-+-------------+---------------+-------------------------------+
    /// |R|                Stream Identifier (31) = 0                   |
    /// +-+-------------------------------------------------------------+
    /// |R|                  Last-Stream-ID (31)                        |
    /// +-+-------------------------------------------------------------+
    /// |                      Error Code (32) = 0                      |
    /// +---------------------------------------------------------------+
    /// ```
    static func goAwayFrame(lastStreamID: Int) -> [UInt8] {
        let last = UInt32(truncatingIfNeeded: lastStreamID) & 0x7fff_ffff
        return [0, 0, 8, 7, 0, 0, 0, 0, 0]
            + [UInt8(last >> 24), UInt8(truncatingIfNeeded: last >> 16), UInt8(truncatingIfNeeded: last >> 8), UInt8(truncatingIfNeeded: last)]
            + [0, 0, 0, 0]
    }
}

extension BackendPool {
    /// Dials `destination` through `upstream` (a mesh peer) with a connect timeout: after
    /// `timeout` seconds the returned future fails with a `.timeout` `GateError` (the exchange
    /// then tries the rule's next backend, 503 when none is left) and a socket the upstream
    /// still delivers later is closed. Completes on `loop`.
    static func dial(
        _ upstream: any Upstream, _ destination: Destination, for info: StreamInfo, on loop: any EventLoop, timeout: Double
    ) -> EventLoopFuture<Int32> {
        let result = loop.makePromise(of: Int32.self)
        let settled = NIOLoopBoundBox(false, eventLoop: loop)
        let dialled = loop.makePromise(of: Int32.self)
        dialled.completeWithTask { try await upstream.dial(destination, for: info) }
        let timer = loop.scheduleTask(in: .milliseconds(Int64(max(timeout, 0.001) * 1000))) {
            guard !settled.value else { return }
            settled.value = true
            result.fail(GateError(.timeout, "connect to \(destination) through upstream \(upstream.name) timed out after \(timeout) s"))
        }
        dialled.futureResult.whenComplete { outcome in
            guard !settled.value else {
                if case .success(let fd) = outcome { Glibc.close(fd) }
                return
            }
            settled.value = true
            timer.cancel()
            result.completeWith(outcome)
        }
        return result.futureResult
    }
}

/// The client connections of a gateway listener — handed to NIO, or served on the gate loops
/// (TLS handshakes in progress included), or TLS ones whose ClientHello is still being read —
/// so that they can be drained: on shutdown and when their listener is removed from the
/// manifests, each gets a `ChannelShouldQuiesceEvent` (HTTP/2: the two-step GOAWAY of
/// `HTTP2IdleHandler`; HTTP/1.1: closed when idle, else after the response in progress, which
/// says `Connection: close`) or its loop's `quiesce()`. A connection whose ClientHello is being
/// read is quiesced when it is handed on: the registry counts its drains, and the connection
/// that replaces the read (`add(_:replacing:)`) is quiesced when a drain began since the read
/// was added — one lock for both, so no drain falls between them.
final class ConnectionRegistry: Sendable {
    private struct State {
        var channels: [ObjectIdentifier: any Channel] = [:]
        /// The HTTP/1.1 connections served on the gate loops (`HTTP1LoopConnection`, and the
        /// `LoopTLSHandshake` before it).
        var loopConnections: [ObjectIdentifier: LoopConnectionHandle] = [:]
        /// The TLS connections whose ClientHello is still being read (`ClientHelloRead`), with
        /// `drains` when each was added.
        var helloReads: [ObjectIdentifier: (read: ClientHelloRead, drains: UInt64)] = [:]
        /// How many drains began (`quiesceAll`).
        var drains: UInt64 = 0
        /// Shutting down: connections adopted from now on are quiesced at once.
        var quiescing = false

        /// Whether the connection replacing `read` is to be quiesced: shutting down, or a
        /// drain began while the read was registered. Forgets the read.
        mutating func handOver(_ read: ClientHelloRead?) -> Bool {
            guard let read else { return quiescing }
            let entry = helloReads.removeValue(forKey: ObjectIdentifier(read))
            return quiescing || entry.map { $0.drains != drains } ?? false
        }
    }

    private let state = Mutex(State())

    /// Tracks `channel` until it closes, in place of `read` when it comes from one. A channel
    /// to be quiesced gets the event from its loop once the current task (its setup) is done.
    func add(_ channel: any Channel, replacing read: ClientHelloRead? = nil) {
        let key = ObjectIdentifier(channel)
        let quiesce = state.withLock { state in
            state.channels[key] = channel
            return state.handOver(read)
        }
        channel.closeFuture.whenComplete { _ in self.state.withLock { _ = $0.channels.removeValue(forKey: key) } }
        if quiesce { channel.eventLoop.execute { Self.quiesce(channel) } }
    }

    /// Tracks a gate-loop connection until `remove`, in place of `read` when it comes from one.
    func add(_ connection: LoopConnectionHandle, replacing read: ClientHelloRead? = nil) {
        let quiesce = state.withLock { state in
            state.loopConnections[ObjectIdentifier(connection)] = connection
            return state.handOver(read)
        }
        if quiesce { connection.quiesce() }
    }

    func remove(_ connection: LoopConnectionHandle) {
        state.withLock { _ = $0.loopConnections.removeValue(forKey: ObjectIdentifier(connection)) }
    }

    /// Tracks a connection whose ClientHello is being read until `remove` or the `add` of the
    /// connection that replaces it.
    func add(_ read: ClientHelloRead) {
        state.withLock { $0.helloReads[ObjectIdentifier(read)] = (read, $0.drains) }
    }

    func remove(_ read: ClientHelloRead) {
        state.withLock { _ = $0.helloReads.removeValue(forKey: ObjectIdentifier(read)) }
    }

    /// Quiesces every open connection; `permanently`: also every one adopted later.
    func quiesceAll(permanently: Bool) {
        let (channels, loopConnections) = state.withLock { state in
            if permanently { state.quiescing = true }
            state.drains += 1
            return (Array(state.channels.values), Array(state.loopConnections.values))
        }
        channels.forEach(Self.quiesce)
        loopConnections.forEach { $0.quiesce() }
    }

    /// Closes every open connection at once (what the drain left when its time is up).
    func closeAll() {
        let (channels, loopConnections, helloReads) = state.withLock {
            (Array($0.channels.values), Array($0.loopConnections.values), $0.helloReads.values.map(\.read))
        }
        channels.forEach { $0.close(promise: nil) }
        loopConnections.forEach { $0.close() }
        helloReads.forEach { $0.shutDown() }
    }

    var count: Int { state.withLock { $0.channels.count + $0.loopConnections.count + $0.helloReads.count } }

    /// The gate-loop connections tracked now.
    var loopHandles: [LoopConnectionHandle] { state.withLock { Array($0.loopConnections.values) } }

    private static func quiesce(_ channel: any Channel) {
        channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
    }
}

/// A TLS client connection whose ClientHello a task (`HTTPRouteFront.serveTLS`) is still
/// reading, before a gate loop (`LoopTLSHandshake`) or NIO takes the socket, as the listener's
/// `ConnectionRegistry` holds it: a drain waits for it and, when its time is up, ends it; the
/// connection it leads to is quiesced if a drain began meanwhile (the registry's
/// `add(_:replacing:)`).
///
/// Who owns the descriptor: the task, throughout — it reads, then closes it or hands it on,
/// each only after `finish()`. The drain never closes it: `shutDown()` ends both directions
/// (`shutdown(2)`), so the task's read sees end of file and the task closes the descriptor
/// itself. Both take one lock, and `finish()` forgets the descriptor, so a shutdown never
/// reaches a descriptor the task has closed (whose number the kernel may have given to
/// another socket) or handed on. After `finish()` the entry stays registered until the next
/// owner is (`add(_:replacing:)`), so the count a drain waits on does not drop to zero in
/// between.
final class ClientHelloRead: Sendable {
    private struct State {
        /// The task's descriptor; nil after `finish()`.
        var fd: Int32?
        /// The drain's time was up (`shutDown()`).
        var ended = false
    }

    private let state: Mutex<State>

    init(fd: Int32) { state = Mutex(State(fd: fd)) }

    /// The drain's time is up: wakes the task's read with end of file (once), while the task
    /// still reads; after `finish()`, marks the connection for its next owner to close.
    func shutDown() {
        state.withLock { state in
            guard !state.ended else { return }
            state.ended = true
            if let fd = state.fd { _ = Glibc.shutdown(fd, Int32(SHUT_RDWR)) }
        }
    }

    /// The task is done reading (before it closes or hands on the descriptor): false when the
    /// drain's time is up (the task closes the descriptor).
    func finish() -> Bool {
        state.withLock { state in
            state.fd = nil
            return !state.ended
        }
    }

    /// Whether the drain's time ran out (`shutDown()` after `finish()`: the next owner, just
    /// registered, may have missed the registry's `closeAll`).
    var ended: Bool { state.withLock { $0.ended } }
}

/// The send timeout of a client connection (`sendTimeout`), as a value: bytes waiting for the
/// client's socket and none of them written for `limit` milliseconds means the client stopped
/// reading. The connection's I/O feeds it what each write attempt (HTTP/1.1 on the gate loops)
/// or each sample of the channel's buffered bytes (NIO: HTTP/2, HTTP/1.1 over TLS) showed; it
/// answers when the connection is to be closed. No clock or timer inside.
///
/// ```
/// clear ── bytes left waiting ──▶ waiting(since: now)
/// waiting ── some written, more waiting ──▶ waiting(since: now)
/// waiting ── everything written ──▶ clear
/// waiting ── now − since ≥ limit ──▶ stalled (the connection closes)
/// ```
struct SendStall: Equatable {
    let limit: UInt64
    /// Since when bytes have been waiting without any being written (nil: nothing waits).
    private(set) var since: UInt64?

    init(seconds: Double) {
        limit = UInt64(max(seconds, 0.001) * 1000)
    }

    /// What a write attempt (or a sample) showed at `now`: whether bytes are still waiting, and
    /// whether any were written since the last observation.
    mutating func observe(waiting: Bool, progress: Bool, now: UInt64) {
        if !waiting {
            since = nil
        } else if since == nil || progress {
            since = now
        }
    }

    /// Whether the client has taken nothing for `limit` while bytes waited.
    func stalled(now: UInt64) -> Bool {
        guard let since else { return false }
        return now >= since && now - since >= limit
    }

    /// Milliseconds until `stalled` can become true (nil: nothing waits).
    func remaining(now: UInt64) -> UInt64? {
        guard let since else { return nil }
        let end = since + limit
        return end > now ? end - now : 0
    }
}
