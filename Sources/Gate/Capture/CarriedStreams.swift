import Synchronization

/// The live streams of a node that their upstream carries itself (`UpstreamStream`, the HTTP/2
/// mesh): the Gate's relays live in their `GateLoop`, these do not, so the node keeps them here
/// to list them in `/debug/streams`, to apply its idle timeout and to reset them on
/// `GateNode.stop`.
///
/// Threads: the bytes of a carried stream move on the mesh's NIO event loops, never on a Gate
/// loop. The registry is touched from several threads, all behind one `Mutex`: the capture
/// front's task adds an entry (`add`), the stream's NIO loop removes it when the stream reports
/// its end (`remove`, from `CapturedClient.finished`), Gate loop 0 sweeps it once a second
/// (`sweep`), admin handlers snapshot it, and `stop` closes it. `UpstreamStream.cancel` is
/// always called outside the lock (an implementation may report its end synchronously).
///
/// Idle detection polls `UpstreamStream.transferred` on the sweep instead of running a timer
/// on the mesh side: the Gate keeps its idle policy, reason (`end=idle`) and log line for every
/// upstream without each transport implementing them, and the poll costs two atomic loads per
/// stream per second. Like the relay's sweep, a stream is reset between `idleTimeout` and
/// `idleTimeout` + 1 s after its last byte.
final class CarriedStreams: Sendable {
    private struct Entry {
        let info: StreamInfo
        let upstreamName: String
        let stream: any UpstreamStream
        let startedAt: UInt64
        var bytes = StreamBytes(up: 0, down: 0)
        var lastActivity: UInt64
        /// Why the Gate cancelled it (`idle`, `shutdown`), reported when the stream ends.
        var cancelled: RelayEnd?
    }

    private struct State {
        var entries: [UInt64: Entry] = [:]
        /// `closeAll` ran: new streams are refused.
        var closed = false
    }

    private let state = Mutex(State())

    /// Registers a stream before it is attached; false once the node is stopping (the caller
    /// cancels the stream and resets its client).
    func add(id: UInt64, info: StreamInfo, upstreamName: String, stream: any UpstreamStream, now: UInt64) -> Bool {
        state.withLock { state in
            guard !state.closed else { return false }
            state.entries[id] = Entry(info: info, upstreamName: upstreamName, stream: stream, startedAt: now, lastActivity: now)
            return true
        }
    }

    /// Forgets an ended stream; returns why the Gate cancelled it, if it did.
    func remove(id: UInt64) -> RelayEnd? {
        state.withLock { $0.entries.removeValue(forKey: id)?.cancelled }
    }

    /// How many streams are live.
    var count: Int { state.withLock { $0.entries.count } }

    /// Polls every stream's byte counts and cancels those that moved nothing for longer than
    /// `idleMillis` (0: no idle timeout).
    func sweep(now: UInt64, idleMillis: UInt64) {
        let idle = state.withLock { state -> [any UpstreamStream] in
            var idle: [any UpstreamStream] = []
            for (id, var entry) in state.entries {
                Self.observe(&entry, now: now)
                if idleMillis > 0, entry.cancelled == nil, Self.since(entry.lastActivity, now) > idleMillis {
                    entry.cancelled = .idle
                    idle.append(entry.stream)
                }
                state.entries[id] = entry
            }
            return idle
        }
        for stream in idle { stream.cancel() }
    }

    /// JSON-ready snapshots (mode `stream`), with each direction's half-close as the stream
    /// reports it (`StreamBytes.upFinished`/`downFinished`); `idleMillis` is as fine as the sweep.
    func snapshots(now: UInt64) -> [StreamSnapshot] {
        state.withLock { state in
            state.entries.keys.map { id in
                Self.observe(&state.entries[id]!, now: now)
                let e = state.entries[id]!
                return StreamSnapshot(
                    id: id, listener: e.info.listener, source: e.info.source, destination: e.info.destination.description,
                    serverName: e.info.serverName, proto: e.info.proto, upstream: e.upstreamName, mode: GateMetrics.carriedMode,
                    bytesUp: e.bytes.up, bytesDown: e.bytes.down, ageMillis: Self.since(e.startedAt, now),
                    idleMillis: Self.since(e.lastActivity, now), upFinished: e.bytes.upFinished, downFinished: e.bytes.downFinished)
            }
        }
    }

    /// Refuses new streams and cancels every live one (`end=shutdown`). Their entries go when
    /// each reports its end.
    func closeAll() {
        let live = state.withLock { state -> [any UpstreamStream] in
            state.closed = true
            for id in state.entries.keys where state.entries[id]!.cancelled == nil {
                state.entries[id]!.cancelled = .shutdown
            }
            return state.entries.values.map(\.stream)
        }
        for stream in live { stream.cancel() }
    }

    /// Milliseconds from `start` to `now`; 0 when another thread's clock reading was later.
    private static func since(_ start: UInt64, _ now: UInt64) -> UInt64 { now > start ? now - start : 0 }

    /// Takes the stream's current byte counts; any change since the last look is activity.
    private static func observe(_ entry: inout Entry, now: UInt64) {
        let bytes = entry.stream.transferred
        if bytes != entry.bytes {
            entry.bytes = bytes
            entry.lastActivity = now
        }
    }
}
