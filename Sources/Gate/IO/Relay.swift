import CLinux
import Glibc
import Logging
import Synchronization

/// How a relay moves bytes between its two sockets.
public enum ForwardMode: String, Codable, Sendable {
    /// read/write through a large pooled userspace buffer (faster on loopback here).
    case copy
    /// `splice(2)` through a pooled pipe per direction; bytes never enter userspace.
    case splice
}

/// One direction of a relay: bytes read from `src` are written to `dst`.
struct Direction {
    let src: Int32
    let dst: Int32
    /// Copy mode: a pooled buffer while the direction is active, with the unsent range.
    var buffer: UnsafeMutableRawPointer?
    var start = 0
    var end = 0
    /// Splice mode: a pooled pipe while the direction is active, and the bytes inside it.
    var pipe: SplicePipe?
    var inPipe = 0
    /// Bytes to send before anything read from `src` (sniffed or rewritten bytes).
    var prefix: [UInt8] = []
    /// `src` reported EOF.
    var eof = false
    /// `dst` was shut down for writing (the FIN was passed on).
    var finished = false
    /// The last write would have blocked: wait for `dst` to become writable.
    var blocked = false
    var bytes: UInt64 = 0

    init(src: Int32, dst: Int32) {
        self.src = src
        self.dst = dst
    }

    var hasPending: Bool { !prefix.isEmpty || end > start || inPipe > 0 }
}

/// Why a relay ended, for the access log and metrics.
enum RelayEnd: String {
    case done, reset, idle, shutdown
}

/// Forwards bytes both ways between a captured client socket and an upstream socket on one
/// `GateLoop`: bounded buffers with backpressure (a direction stops reading while its unsent
/// bytes wait for the other side), half-close (EOF on one side becomes `shutdown(SHUT_WR)` on the
/// other while the reverse keeps flowing), RST on error, idle timeout. Loop-thread only.
final class Relay: LoopHandler {
    static let ids = Atomic<UInt64>(0)

    let id: UInt64
    let loop: GateLoop
    let client: Int32
    let upstream: Int32
    let info: StreamInfo
    let upstreamName: String
    let mode: ForwardMode
    let idleTimeoutMillis: UInt64
    let logger: Logger
    let startedAt: UInt64
    private var up: Direction
    private var down: Direction
    private var interestClient: UInt32 = 0
    private var interestUpstream: UInt32 = 0
    /// Whether the fds are on the loop yet (the first `updateInterest` registers them).
    private var clientRegistered = false
    private var upstreamRegistered = false
    private var lastActivity: UInt64
    private var closed = false
    /// Called once when the relay ends (on the loop's thread), e.g. to forget it in a registry.
    var onFinish: (() -> Void)?

    /// Maximum bytes moved per direction per readiness event before yielding to other streams.
    private static let budget = 4 << 20

    /// Starts relaying; must run on `loop`'s thread. Takes ownership of both descriptors.
    /// `upstreamRegistered`: the upstream fd is already on the loop (a connect just finished);
    /// the relay takes that registration over instead of adding a new one.
    @discardableResult
    static func start(
        loop: GateLoop, client: Int32, upstream: Int32, upstreamRegistered: Bool = false, info: StreamInfo,
        upstreamName: String, mode: ForwardMode, prefix: [UInt8], idleTimeoutMillis: UInt64, logger: Logger
    ) -> Relay {
        let relay = Relay(
            loop: loop, client: client, upstream: upstream, info: info, upstreamName: upstreamName,
            mode: mode, prefix: prefix, idleTimeoutMillis: idleTimeoutMillis, logger: logger)
        if upstreamRegistered {
            // A finished connect left it registered for writability.
            relay.upstreamRegistered = true
            relay.interestUpstream = Interest.write
            loop.adopt(upstream, relay)
        }
        loop.relays[relay.id] = relay
        GateMetrics.shared.streamOpened()
        // Try the sockets first and register them with the interest that result calls for:
        // no epoll_ctl(MOD) right after the ADD.
        relay.pump(up: true, down: true)
        return relay
    }

    private init(
        loop: GateLoop, client: Int32, upstream: Int32, info: StreamInfo, upstreamName: String,
        mode: ForwardMode, prefix: [UInt8], idleTimeoutMillis: UInt64, logger: Logger
    ) {
        id = Relay.ids.wrappingAdd(1, ordering: .relaxed).newValue
        self.loop = loop
        self.client = client
        self.upstream = upstream
        self.info = info
        self.upstreamName = upstreamName
        self.mode = mode
        self.idleTimeoutMillis = idleTimeoutMillis
        self.logger = logger
        startedAt = loop.now
        lastActivity = loop.now
        up = Direction(src: client, dst: upstream)
        up.prefix = prefix
        down = Direction(src: upstream, dst: client)
    }

    func ready(fd: Int32, events: UInt32) {
        let failed = events & Interest.error != 0
        if fd == client {
            pump(up: failed || events & Interest.read != 0, down: failed || events & Interest.write != 0)
        } else {
            pump(up: failed || events & Interest.write != 0, down: failed || events & Interest.read != 0)
        }
    }

    private func pump(up doUp: Bool, down doDown: Bool) {
        if closed { return }
        if doUp, let errorText = move(&up) {
            abort(reason: errorText)
            return
        }
        if doDown, let errorText = move(&down) {
            abort(reason: errorText)
            return
        }
        if up.finished && down.finished {
            finish(.done, detail: nil)
            return
        }
        updateInterest()
    }

    /// Moves bytes for one direction until it would block, hits EOF or spends its budget.
    /// Returns an error description when the stream must be reset.
    private func move(_ d: inout Direction) -> String? {
        var moved = 0
        defer {
            if moved > 0 {
                d.bytes += UInt64(moved)
                lastActivity = loop.now
            }
        }
        d.blocked = false
        while moved < Relay.budget {
            // 1. Flush what is pending: prefix, then buffer or pipe contents.
            let flushed: Sys.IO?
            if !d.prefix.isEmpty {
                flushed = d.prefix.withUnsafeBytes { Sys.write(d.dst, $0.baseAddress!, $0.count) }
                if case .bytes(let n) = flushed { d.prefix.removeFirst(n) }
            } else if let buffer = d.buffer, d.end > d.start {
                flushed = Sys.write(d.dst, buffer + d.start, d.end - d.start)
                if case .bytes(let n) = flushed {
                    d.start += n
                    if d.start == d.end {
                        d.start = 0
                        d.end = 0
                    }
                }
            } else if let pipe = d.pipe, d.inPipe > 0 {
                flushed = Sys.splice(from: pipe.read, to: d.dst, d.inPipe)
                if case .bytes(let n) = flushed { d.inPipe -= n }
            } else {
                flushed = nil
            }
            switch flushed {
            case .bytes(let n)?:
                moved += n
                continue
            case .wouldBlock?, .eof?:
                d.blocked = true
                return nil
            case .error(let e)?:
                return "write: \(String(cString: strerror(e)))"
            case nil:
                break
            }
            // 2. Nothing pending: pass on EOF, or read more.
            if d.eof {
                if !d.finished {
                    d.finished = true
                    shutdown(d.dst, Int32(SHUT_WR))
                }
                release(&d)
                return nil
            }
            let result: Sys.IO
            if mode == .splice, d.pipe != nil || acquirePipe(&d) {
                result = Sys.splice(from: d.src, to: d.pipe!.write, loop.pipes.size)
                if case .bytes(let n) = result { d.inPipe = n }
            } else {
                if d.buffer == nil { d.buffer = loop.buffers.take() }
                result = Sys.read(d.src, d.buffer!, loop.buffers.size)
                if case .bytes(let n) = result {
                    d.start = 0
                    d.end = n
                }
            }
            switch result {
            case .bytes:
                continue
            case .eof:
                d.eof = true
            case .wouldBlock:
                release(&d)
                return nil
            case .error(let e):
                return "read: \(String(cString: strerror(e)))"
            }
        }
        return nil
    }

    private func acquirePipe(_ d: inout Direction) -> Bool {
        d.pipe = loop.pipes.take()
        return d.pipe != nil
    }

    /// Gives an idle direction's buffer and pipe back to the loop's pools.
    private func release(_ d: inout Direction) {
        if let b = d.buffer, d.end == d.start {
            loop.buffers.give(b)
            d.buffer = nil
        }
        if let p = d.pipe, d.inPipe == 0 {
            loop.pipes.give(p)
            d.pipe = nil
        }
    }

    private func updateInterest() {
        var c: UInt32 = 0
        var u: UInt32 = 0
        if !up.eof && !up.blocked { c |= Interest.read }
        if down.blocked { c |= Interest.write }
        if !down.eof && !down.blocked { u |= Interest.read }
        if up.blocked { u |= Interest.write }
        if !clientRegistered {
            clientRegistered = true
            interestClient = c
            guard loop.register(client, c, self) else {
                abort(reason: "epoll_ctl(client): \(String(cString: strerror(errno)))")
                return
            }
        } else if c != interestClient {
            interestClient = c
            loop.modify(client, c)
        }
        if !upstreamRegistered {
            upstreamRegistered = true
            interestUpstream = u
            guard loop.register(upstream, u, self) else {
                abort(reason: "epoll_ctl(upstream): \(String(cString: strerror(errno)))")
                return
            }
        } else if u != interestUpstream {
            interestUpstream = u
            loop.modify(upstream, u)
        }
    }

    /// Called once a second by the loop: closes the stream when it was idle too long.
    func sweep(now: UInt64) {
        if idleTimeoutMillis > 0, now - lastActivity > idleTimeoutMillis {
            finish(.idle, detail: "idle for \(idleTimeoutMillis) ms")
        }
    }

    /// Resets both sides (RST) and ends the stream.
    func abort(reason: String) {
        finish(.reset, detail: reason)
    }

    private func finish(_ end: RelayEnd, detail: String?) {
        if closed { return }
        closed = true
        loop.deregister(client)
        loop.deregister(upstream)
        for d in [up, down] {
            if let b = d.buffer { loop.buffers.give(b) }
            if let p = d.pipe {
                if d.inPipe == 0 { loop.pipes.give(p) } else { p.close() }
            }
        }
        up.buffer = nil
        down.buffer = nil
        up.pipe = nil
        down.pipe = nil
        if end == .done {
            Glibc.close(client)
            Glibc.close(upstream)
        } else {
            Sys.abort(client)
            Sys.abort(upstream)
        }
        loop.relays[id] = nil
        onFinish?()
        onFinish = nil
        GateMetrics.shared.streamClosed(up: up.bytes, down: down.bytes, end: end.rawValue, mode: mode)
        Relay.logStream(
            logger, id: id, info: info, upstreamName: upstreamName, up: up.bytes, down: down.bytes,
            millis: loop.now - startedAt, mode: mode.rawValue, end: end, detail: detail)
    }

    /// The access-log line of a finished stream (the Gate's relay or an `UpstreamStream`).
    static func logStream(
        _ logger: Logger, id: UInt64, info: StreamInfo, upstreamName: String, up: UInt64, down: UInt64, millis: UInt64,
        mode: String, end: RelayEnd, detail: String?
    ) {
        var meta: Logger.Metadata = [
            "stream.id": "\(id)", "listener": "\(info.listener)", "src": "\(info.source)",
            "dst": "\(info.destination)", "proto": "\(info.proto)", "upstream": "\(upstreamName)",
            "bytes.up": "\(up)", "bytes.down": "\(down)", "ms": "\(millis)",
            "mode": "\(mode)", "end": "\(end.rawValue)",
        ]
        if let sni = info.serverName { meta["sni"] = "\(sni)" }
        if let detail { meta["detail"] = "\(detail)" }
        logger.info("stream", metadata: meta)
    }

    /// A JSON-ready snapshot for /debug/streams.
    func snapshot() -> StreamSnapshot {
        StreamSnapshot(
            id: id, listener: info.listener, source: info.source, destination: info.destination.description,
            serverName: info.serverName, proto: info.proto, upstream: upstreamName, mode: mode.rawValue,
            bytesUp: up.bytes, bytesDown: down.bytes, ageMillis: loop.now - startedAt,
            idleMillis: loop.now - lastActivity, upFinished: up.finished, downFinished: down.finished)
    }
}

/// One live stream as /debug/streams shows it.
public struct StreamSnapshot: Codable, Sendable {
    public var id: UInt64
    public var listener: String
    public var source: String
    public var destination: String
    public var serverName: String?
    public var proto: String
    public var upstream: String
    public var mode: String
    public var bytesUp: UInt64
    public var bytesDown: UInt64
    public var ageMillis: UInt64
    public var idleMillis: UInt64
    public var upFinished: Bool
    public var downFinished: Bool
}
