import CLinux
import Glibc
import NIOCore
import NIOHTTP1

/// Serves one plain HTTP/1.1 client connection on the gate loop that accepted it, without a
/// NIO channel: non-blocking reads into the loop's read buffer, the gateway's own request
/// decoder (`HTTP1RequestDecoder`), an `Exchange` per request, backend connections that are raw
/// sockets on the same loop (`LoopBackendConnection`, pooled per loop), and responses written
/// through a `SocketWriteQueue` (partial writes wait for `EPOLLOUT`).
///
/// Why hand-written I/O instead of NIO here: with the decoder, the backend wire and the
/// response relay already the gateway's own, what was left of the CPU time per HTTP/1.1
/// request beyond the kernel's was SwiftNIO's channel machinery on both connections (pipeline
/// hops, promises, the pending-writes manager, lifecycle checks — a quarter of all retains
/// came from one lifecycle getter). The HTTP/1.1 path needs none of it.
///
/// Behaviour is `HTTP1RouteHandler`'s (keep-alive, pipelining, 100-continue, 400/431 with a
/// lingering close, draining); `Upgrade: h2c` and h2c with prior knowledge hand the socket and
/// every byte read so far to the NIO pipelines (`HTTPRouteNIO.adopt`), which decide again.
///
/// Threads: everything runs on the loop thread — the client socket, its exchanges and their
/// backend sockets; other threads reach it only through `GateLoop.execute` (the listener's
/// drain, via `LoopConnectionHandle`).
///
/// Over TLS (`tls`, HTTP/1.1 over TLS after `LoopTLSHandshake`) the same connection reads,
/// writes and shuts down through the session's SSL object on the socket instead of the socket
/// (the only difference; no h2c there): bytes OpenSSL holds are read without waiting for
/// epoll (`readBuffered`), a close sends close_notify first.
///
/// No weak reference to it (`[weak self]`, the drain handle's): one gives an object a side table
/// for its reference counts, and every retain and release of it then takes the runtime's slow
/// path — two of each per request (the exchange's `client`, the loop's call of `ready`), about
/// 250 instructions. Closures capture it strongly and the timers holding them are cancelled
/// when it closes (`detach`); the drain handle reaches it through `LoopDrainForwarder`.
///
/// Backpressure: the client is not read while more than `maxBuffered` undecoded bytes or more
/// than `maxUnwritten` request body bytes not yet written to the backend wait (uploads go at
/// the backend's pace); the backend is not read while more than `maxQueued` response bytes wait
/// for the client socket (downloads go at the client's pace).
final class HTTP1LoopConnection: LoopExitHandler, ExchangeClient, HTTP1RequestServing {
    static let maxBuffered = HTTP1RouteHandler.maxBuffered
    static let maxUnwritten = HTTP1RouteHandler.maxUnwritten
    /// Response bytes queued for the client above which the backend is not read.
    static let maxQueued = 256 * 1024
    static let preface = HTTPRouteFront.preface

    let connection: RouteConnection
    let gate: GateEventLoop
    let nio: HTTPRouteNIO
    let allocator = ByteBufferAllocator()
    var eventLoop: any EventLoop { gate }
    var decodesChunks: Bool { false }
    /// For the listener's registry (draining).
    let handle: LoopConnectionHandle
    /// What `handle` points at (weakly), set once registered.
    private var forwarder: LoopDrainForwarder?

    /// -1 once closed or handed to NIO.
    private(set) var fd: Int32
    /// The TLS session on the socket (HTTP/1.1 over TLS), nil for plain HTTP/1.1.
    private let tls: LoopTLSSession?
    private var bufferedReadScheduled = false
    private var interest = Interest.read
    var decoder = HTTP1RequestDecoder()
    private var out = SocketWriteQueue()
    /// Every byte read until the first request head is served: the h2c preface check, and the
    /// bytes NIO is given when the connection turns out to be h2c (prior knowledge or upgrade).
    private var opening: ByteBuffer?
    private var prefaceDecided = false
    private var exchange: Exchange?
    private var flushes = BurstFlushes()
    /// Inside a read burst (or a drain of pipelined requests): backend flushes wait for its end.
    private var reading = false
    /// No more requests are decoded (a response that closes, a refused request).
    private var closing = false
    /// What happens once everything queued is written.
    private enum AfterWrite { case nothing, close, linger }
    private var afterWrite = AfterWrite.nothing
    /// A refused connection's input is read and dropped until the lingering close.
    private var lingering = false
    private var lingerTimer: LoopTimer?
    private var responding = false
    private var held = HeldResponse()
    private var unwritten = 0
    private var readPaused = false
    private var wantWrite = false
    private var drainScheduled = false
    /// The backend connection not read while the client catches up.
    private var pausedBackend: LoopBackendConnection?
    /// Since when (loop ms) no request is in progress (nil: one is), for `keepAliveTimeout`.
    private var idleSince: UInt64?
    private var idleTimer: LoopTimer?
    private var quiescing = false
    /// The drain began during the TLS handshake: the client's first request is still served
    /// (with `Connection: close`), a drain does not close the connection before it.
    private var servesFirstRequest = false
    private var deadlines: DeadlineTimer?
    /// Whether the client stopped reading (`sendTimeout`), fed by every write attempt; its
    /// timer runs only while bytes wait for the socket.
    private var stall: SendStall
    private var stallTimer: LoopTimer?

    private init(fd: Int32, gate: GateEventLoop, nio: HTTPRouteNIO, peer: String, tls: LoopTLSSession?, handle: LoopConnectionHandle) {
        self.fd = fd
        self.gate = gate
        self.nio = nio
        self.tls = tls
        connection = RouteConnection(state: nio.state, settings: nio.settings, peer: peer, proto: tls == nil ? "http/1.1" : "http/1.1+tls", eventLoop: gate)
        self.handle = handle
        // Over TLS nothing is handed to NIO (no h2c): no bytes are kept for it.
        opening = tls == nil ? ByteBufferAllocator().buffer(capacity: 0) : nil
        prefaceDecided = tls != nil
        idleSince = gate.loop.now
        stall = SendStall(seconds: nio.settings.sendTimeout)
    }

    /// Serves the accepted socket `fd` on `loop` (called on its thread); `tls`: the session
    /// whose handshake finished on it (HTTP/1.1 over TLS), `handshake`: how the listener's
    /// registry holds it (the handshake's handle, taken over) and whether a drain began
    /// during the handshake.
    static func start(
        fd: Int32, loop: GateLoop, nio: HTTPRouteNIO, peer: String, tls: LoopTLSSession? = nil,
        handshake: (handle: LoopConnectionHandle, quiescing: Bool)? = nil
    ) {
        if tls == nil { _ = try? Sys.setInt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, 1, "setsockopt(TCP_NODELAY)") }
        let handle = handshake?.handle ?? LoopConnectionHandle(loop: loop)
        let connection = HTTP1LoopConnection(fd: fd, gate: loop.eventLoop, nio: nio, peer: peer, tls: tls, handle: handle)
        guard loop.register(fd, Interest.read, connection) else {
            tls?.close(notify: false)
            Sys.abort(fd)
            nio.connections.remove(handle)
            return
        }
        let forwarder = LoopDrainForwarder(connection)
        connection.forwarder = forwarder
        handle.connection = forwarder
        connection.armIdleTimer(after: connection.keepAliveMillis)
        if let handshake {
            connection.quiescing = handshake.quiescing
            connection.servesFirstRequest = handshake.quiescing
        } else {
            nio.connections.add(handle)
        }
        // A request that came with the client's last handshake flight is in OpenSSL already.
        connection.readBuffered()
    }

    private var keepAliveMillis: UInt64 { UInt64(max(connection.settings.keepAliveTimeout, 0.001) * 1000) }

    // MARK: events

    func ready(fd: Int32, events: UInt32) {
        if events & Interest.write != 0 || tls?.writeWantsRead == true { flushOut() }
        guard self.fd >= 0, events & (Interest.read | Interest.error) != 0 || tls?.readWantsWrite == true else { return }
        guard !readPaused || events & Interest.error != 0 else { return }
        let (result, bytes) = tls == nil ? gate.read(fd) : gate.read(tls!)
        switch result {
        case .bytes:
            received(bytes)
        case .wouldBlock:
            if tls != nil { updateInterest() }
            return
        case .eof, .error:
            // As NIO without half-closure: the client's end closes the connection.
            closeNow()
        }
    }

    /// Over TLS, bytes OpenSSL read ahead from the socket are not reported by epoll: they are
    /// read after the current batch of events while reading is not paused.
    private func readBuffered() {
        guard let tls, fd >= 0, !readPaused, !bufferedReadScheduled, tls.hasPending else { return }
        bufferedReadScheduled = true
        gate.loop.later { [self] in
            bufferedReadScheduled = false
            if self.fd >= 0 { ready(fd: self.fd, events: Interest.read) }
        }
    }

    private func received(_ bytes: ByteBuffer) {
        guard !lingering, !closing else { return }
        if !prefaceDecided {
            opening!.writeImmutableBuffer(bytes)
            let seen = opening!.readableBytesView
            if seen.count < Self.preface.count, seen.elementsEqual(Self.preface.prefix(seen.count)) { return }
            prefaceDecided = true
            if seen.starts(with: Self.preface) {
                handOff(mode: .h2c)
                return
            }
            decoder.feed(opening!)
        } else {
            if opening != nil { opening!.writeImmutableBuffer(bytes) }
            decoder.feed(bytes)
        }
        reading = true
        decode()
        endBurst()
        updateInterest()
    }

    var mayDecode: Bool { fd >= 0 && !closing && (exchange == nil || !decoder.atHead) }

    func serve(_ part: consuming HTTP1RequestDecoder.Part) {
        switch consume part {
        case .head(let head, let request, _):
            idleSince = nil
            servesFirstRequest = false
            if opening != nil {
                if head.asksForH2C {
                    // NIO's HTTP/1 pipeline decides the upgrade (and serves the request).
                    handOff(mode: .http1)
                    return
                }
                opening = nil
            }
            exchange = HTTP1ClientSide.begin(head, request: request, client: self)
            if exchange == nil, fd >= 0 { idleSince = gate.loop.now }
        case .body(let body):
            unwritten += HTTP1ClientSide.forward(body, to: exchange) { [self] in bodyWritten($0) }
        case .end(let trailers):
            exchange?.requestPart(.end(trailers))
        }
    }

    /// Gives the socket and every byte read so far to NIO (h2c by prior knowledge, or a first
    /// request asking for `Upgrade: h2c`).
    private func handOff(mode: HTTPRouteNIO.Mode) {
        let prefix = opening.map { Array($0.readableBytesView) } ?? []
        let socket = fd
        detach()
        nio.adopt(fd: socket, prefix: prefix, mode: mode, peer: connection.peer)
    }

    /// Bytes that are not a request: 400 (431 for a head over the limits) naming the problem,
    /// then a lingering close; unless a response is under way, then the connection just closes.
    func refuse(_ error: HTTP1RequestDecoder.Malformed) {
        closing = true
        guard !responding else {
            connection.settings.log.debug("client connection error", metadata: ["src": "\(connection.peer)", "error": "\(error)"])
            return closeNow()
        }
        exchange?.clientGone()
        held.drop()
        out.append(allocator.buffer(string: HTTP1ClientSide.refusal(error)))
        afterWrite = .linger
        flushOut()
    }

    /// The end of a read burst (or of a drain): backend writes leave.
    private func endBurst() {
        reading = false
        flushes.endBurst()?.flushBackend()
    }

    /// Serves the pipelined requests after a response ended, up to the next one that has to wait.
    private func drain() {
        drainScheduled = false
        guard fd >= 0 else { return }
        reading = true
        decode()
        endBurst()
        updateInterest()
    }

    private func bodyWritten(_ bytes: Int) {
        unwritten -= bytes
        if readPaused, unwritten <= Self.maxUnwritten / 2 { updateInterest() }
    }

    /// Reads stop while too much waits (undecoded bytes, body bytes for the backend); writes
    /// are watched while the socket has not taken everything.
    private func updateInterest() {
        guard fd >= 0 else { return }
        if lingering {
            readPaused = false
        } else if readPaused {
            readPaused = decoder.bufferedBytes > Self.maxBuffered || unwritten > Self.maxUnwritten / 2
        } else {
            readPaused = decoder.bufferedBytes > Self.maxBuffered || unwritten > Self.maxUnwritten
        }
        let wanted = (readPaused ? 0 : Interest.read) | (wantWrite || tls?.readWantsWrite == true ? Interest.write : 0)
        if wanted != interest {
            interest = wanted
            gate.loop.modify(fd, wanted)
        }
        if tls != nil { readBuffered() }
    }

    // MARK: writing

    /// Writes what is queued; what the socket does not take waits for `EPOLLOUT`, and while
    /// more than `maxQueued` bytes wait the backend is not read.
    private func flushOut() {
        guard fd >= 0 else { return }
        let before = out.bytes
        switch tls == nil ? out.write(to: fd) : out.write(tls: tls!) {
        case .done:
            stall.observe(waiting: false, progress: true, now: gate.loop.now)
            if let backend = pausedBackend {
                pausedBackend = nil
                backend.resumeReading()
            }
            if wantWrite {
                wantWrite = false
                updateInterest()
            }
            switch afterWrite {
            case .nothing: break
            case .close: closeNow()
            case .linger: linger()
            }
        case .blocked:
            stall.observe(waiting: true, progress: out.bytes < before, now: gate.loop.now)
            if stallTimer == nil { armStallTimer() }
            if !wantWrite {
                wantWrite = true
                updateInterest()
            }
            if out.bytes > Self.maxQueued, pausedBackend == nil, let backend = exchange?.backend as? LoopBackendConnection {
                pausedBackend = backend
                backend.pauseReading()
            } else if out.bytes <= Self.maxQueued / 2, let backend = pausedBackend {
                pausedBackend = nil
                backend.resumeReading()
            }
        case .failed:
            closeNow()
        }
    }

    /// A lingering close (as nginx does): FIN after the answer, the client's remaining bytes
    /// read and dropped for `HTTP1RouteHandler.lingering`, so unread input does not turn the
    /// close into a reset that can discard the answer.
    private func linger() {
        afterWrite = .nothing
        lingering = true
        tls?.shutdown()
        _ = Glibc.shutdown(fd, Int32(SHUT_WR))
        updateInterest()
        let millis = UInt64(HTTP1RouteHandler.lingering.nanoseconds / 1_000_000)
        lingerTimer = gate.loop.schedule(afterMillis: millis) { [self] in closeNow() }
    }

    /// Queues what `respondHead` / `relayHead` / `respondBody` held back.
    private func writeHeld() {
        if let buffer = held.take() { out.append(buffer) }
    }

    func respondHead(_ head: HTTPResponseHead) {
        var head = head
        if head.status.code >= 200 {
            responding = true
            if quiescing { head.headers.replaceOrAdd(name: "connection", value: "close") }
        }
        var buffer = held.buffer(capacity: 256 + HeldResponse.mergedBodyLimit, allocator)
        buffer.writeStaticString("HTTP/1.1 ")
        buffer.writeString(String(head.status.code))
        buffer.writeStaticString(" ")
        buffer.writeString(head.status.reasonPhrase)
        buffer.writeStaticString("\r\n")
        for (name, value) in head.headers {
            buffer.writeString(name)
            buffer.writeStaticString(": ")
            buffer.writeString(value)
            buffer.writeStaticString("\r\n")
        }
        buffer.writeStaticString("\r\n")
        held.hold(buffer)
    }

    func relayHead(_ head: HTTP1ResponseHead, raw bytes: ByteBuffer?, close: Bool) {
        responding = true
        held.holdRelayedHead(head, raw: bytes, close: close || quiescing, allocator)
    }

    func respondBody(_ buffer: ByteBuffer) {
        guard !held.merge(buffer) else { return }
        writeHeld()
        out.append(buffer)
    }

    func respondEnd(_ trailers: HTTPHeaders?, close: Bool) {
        guard fd >= 0 else { return }
        let close = close || quiescing
        responding = false
        if close {
            closing = true
            afterWrite = .close
        }
        writeHeld()
        flushOut()
        if !close, fd >= 0, decoder.bufferedBytes > 0, !drainScheduled, !reading {
            // After the exchange has finished (it ends the response first); within a read
            // burst the decoding loop goes on by itself.
            drainScheduled = true
            gate.loop.later { [self] in drain() }
        }
    }

    func flushResponse() {
        writeHeld()
        flushOut()
    }

    func abortResponse() {
        held.drop()
        closing = true
        closeNow()
    }

    func exchangeFinished(_ finished: Exchange) {
        guard exchange === finished else { return }
        exchange = nil
        if let backend = pausedBackend {
            pausedBackend = nil
            backend.resumeReading()
        }
        if fd >= 0 { idleSince = gate.loop.now }
    }

    func backendNeedsFlush(_ exchange: Exchange) {
        flushes.needsFlush(exchange, reading: reading)?.flushBackend()
    }

    func watchDeadline(_ exchange: Exchange) {
        if deadlines == nil {
            // Unowned: the timer is this connection's alone (its task holds it weakly), so its
            // closure never runs after the connection is gone.
            deadlines = DeadlineTimer(eventLoop: gate) { [unowned self] in self.exchange.map { [$0] } ?? [] }
        }
        deadlines?.watch(exchange.deadline)
    }

    // MARK: timers, draining, closing

    private func armIdleTimer(after millis: UInt64) {
        idleTimer = gate.loop.schedule(afterMillis: millis) { [self] in idleTimerFired() }
    }

    /// One timer per connection checks `idleSince` and is re-armed for the time left.
    private func idleTimerFired() {
        idleTimer = nil
        guard fd >= 0 else { return }
        guard let idleSince else { return armIdleTimer(after: keepAliveMillis) }
        let now = gate.loop.now
        if idleSince + keepAliveMillis <= now {
            closeNow()
        } else {
            armIdleTimer(after: idleSince + keepAliveMillis - now)
        }
    }

    private func armStallTimer() {
        guard let left = stall.remaining(now: gate.loop.now) else { return }
        stallTimer = gate.loop.schedule(afterMillis: left) { [self] in stallTimerFired() }
    }

    /// The send timeout: re-armed for the time left while the client takes bytes; when it
    /// took none for `sendTimeout`, the exchange ends (its backend connection closed) and the
    /// connection closes.
    private func stallTimerFired() {
        stallTimer = nil
        guard fd >= 0 else { return }
        guard stall.stalled(now: gate.loop.now) else { return armStallTimer() }
        connection.sendTimedOut(exchange.map { [$0] } ?? [], waiting: out.bytes)
        closeNow()
    }

    /// Draining: an idle connection closes now (once its output is written); one with a
    /// request in progress answers it with `Connection: close` and closes after it, as does
    /// one whose TLS handshake the drain began during (its first request).
    func quiesce() {
        guard fd >= 0 else { return }
        quiescing = true
        guard exchange == nil, !responding, !servesFirstRequest else { return }
        closing = true
        if out.isEmpty { closeNow() } else { afterWrite = .close }
    }

    func loopExited() { closeNow() }

    /// Closes the client socket; the exchange in progress hears that its client went away.
    func closeNow() {
        guard fd >= 0 else { return }
        let socket = fd
        detach()
        if let tls {
            tls.logEnd(connection)
            tls.close()
        }
        Glibc.close(socket)
        exchange?.clientGone()
    }

    /// Stops watching the socket (closed or handed to NIO) and drops what this connection holds
    /// (cancelling a timer drops its closure, which holds the connection).
    private func detach() {
        gate.loop.deregister(fd)
        fd = -1
        idleTimer?.cancel()
        idleTimer = nil
        lingerTimer?.cancel()
        lingerTimer = nil
        stallTimer?.cancel()
        stallTimer = nil
        deadlines?.cancel()
        out.drop()
        held = HeldResponse()
        if let backend = pausedBackend {
            pausedBackend = nil
            backend.resumeReading()
        }
        nio.connections.remove(handle)
        forwarder = nil
    }
}

/// The drain handle's view of an `HTTP1LoopConnection` (see there: the handle's weak reference
/// is to this object, not to the connection). Owned by the connection until it closes; the
/// handle calls it on the loop thread only, so the connection is there whenever it is.
final class LoopDrainForwarder: LoopDrainable {
    unowned let connection: HTTP1LoopConnection

    init(_ connection: HTTP1LoopConnection) { self.connection = connection }

    func quiesce() { connection.quiesce() }

    func closeNow() { connection.closeNow() }
}

/// A client connection on a gate loop as a drain sees it (loop thread only): an
/// `HTTP1LoopConnection`, or a `LoopTLSHandshake` that becomes one.
protocol LoopDrainable: AnyObject {
    /// Draining began: close when idle, else after the response in progress.
    func quiesce()
    /// The drain's time is up: close at once.
    func closeNow()
}

/// A client connection served on a gate loop, as the listener's `ConnectionRegistry` holds it:
/// draining and closing from any thread hop to the connection's loop. One handle from the
/// accept to the close: a TLS handshake hands its handle to the connection it becomes.
final class LoopConnectionHandle: @unchecked Sendable {  // `connection` is set and read on the loop thread only
    let loop: GateLoop
    weak var connection: (any LoopDrainable)?

    init(loop: GateLoop) { self.loop = loop }

    func quiesce() {
        loop.execute { self.connection?.quiesce() }
    }

    func close() {
        loop.execute { self.connection?.closeNow() }
    }
}

/// An HTTP/1.1 client side's decoding loop (`HTTP1RouteHandler`, `HTTP1LoopConnection`).
protocol HTTP1RequestServing: AnyObject {
    var decoder: HTTP1RequestDecoder { get set }
    /// Whether decoding goes on: the connection is open and not closing, and the next part is
    /// not a request head that has to wait for the response in progress.
    var mayDecode: Bool { get }
    /// A request part in turn: a head begins an exchange; body parts and the end go to the
    /// exchange (dropped when the request was answered without one, or its exchange ended).
    /// (`consuming`: see `decode()`.)
    func serve(_ part: consuming HTTP1RequestDecoder.Part)
    /// Bytes that are not a request (400 or 431).
    func refuse(_ error: HTTP1RequestDecoder.Malformed)
}

extension HTTP1RequestServing {
    /// Serves decoded parts while `mayDecode` (until more bytes are needed). Each part is
    /// moved into `serve` (`consume`, a `consuming` parameter): bound and passed as a copy,
    /// the `Optional<Part>` left behind was destroyed through the runtime's generic value
    /// witnesses (`$sSqwxx`, about 220 instructions per part with its payload's releases).
    func decode() {
        while mayDecode {
            let next: HTTP1RequestDecoder.Part?
            do {
                next = try decoder.next()
            } catch {
                refuse(error)
                return
            }
            guard let part = consume next else { return }
            serve(part)
        }
    }
}

/// What the two HTTP/1.1 client sides — `HTTP1RouteHandler` (NIO) and `HTTP1LoopConnection`
/// (gate loop) — do alike, apart from their I/O.
enum HTTP1ClientSide {
    /// Begins the exchange of a request head; nil when it was answered at once (locally, or a
    /// backend refused synchronously). A request that asks to switch protocols (`Upgrade` and
    /// a `Connection: upgrade` option, RFC 9110 §7.8) and reaches this point was not switched:
    /// a later request's `Upgrade: h2c`, a refused first one (a body, bad `HTTP2-Settings`),
    /// or another protocol. The bytes after it may be the other protocol's, so it is answered
    /// over HTTP/1.1 with `Connection: close` and the connection closes after it.
    static func begin(_ head: HTTP1Request, request: RouteRequest, client: any ExchangeClient) -> Exchange? {
        // `keepAlive:` instead of a changed copy of the head (a retain per field of it).
        guard let started = Exchange.begin(head, client: client, http1: true, request: request, keepAlive: !head.asksToSwitch), !started.finished
        else { return nil }
        return started
    }

    /// Passes a request body part to its exchange (dropped when the request was answered
    /// without one); `written(bytes)` once it is in the backend socket. Returns the bytes
    /// handed on. (The end of a request goes to `Exchange.requestPart` directly: no closure,
    /// which would cost an allocation per request.)
    static func forward(_ body: ByteBuffer, to exchange: Exchange?, written: @escaping (Int) -> Void) -> Int {
        guard let exchange else { return 0 }
        let bytes = body.readableBytes
        exchange.requestPart(.body(.byteBuffer(body))) { written(bytes) }
        return bytes
    }

    /// The answer to bytes that are not a request: 400 (431 for a head over the limits) naming
    /// the problem, closing the connection.
    static func refusal(_ error: HTTP1RequestDecoder.Malformed) -> String {
        let body = error.message + "\n"
        let reason = error.status == 431 ? "Request Header Fields Too Large" : "Bad Request"
        return "HTTP/1.1 \(error.status) \(reason)\r\nconnection: close\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: \(body.utf8.count)\r\n\r\n\(body)"
    }
}

/// A response's head and the small body parts after it, held back to leave in one write (one
/// scalar write instead of a gather of buffers), and the last written buffer's storage kept
/// for the next head (`clear` allocates anew only while the socket still holds it): two
/// allocations less per response, for about 8 KiB kept per connection.
struct HeldResponse {
    static let mergedBodyLimit = 4096
    private(set) var held: ByteBuffer?
    private var spare: ByteBuffer?

    /// The buffer to write a head into: the held one, else the spare storage, else a new one.
    mutating func buffer(capacity: Int, _ allocator: ByteBufferAllocator) -> ByteBuffer {
        if let held { return held }
        if var reused = spare {
            spare = nil
            reused.clear(minimumCapacity: capacity)
            return reused
        }
        return allocator.buffer(capacity: capacity)
    }

    mutating func hold(_ buffer: ByteBuffer) {
        held = buffer
    }

    /// Holds the backend's head as relayed to the client (see `BackendWire.clientHead`).
    mutating func holdRelayedHead(_ head: HTTP1ResponseHead, raw bytes: ByteBuffer?, close: Bool, _ allocator: ByteBufferAllocator) {
        var out = buffer(capacity: (bytes?.readableBytes ?? 256) + Self.mergedBodyLimit, allocator)
        if let bytes, BackendWire.connectionOptions(head.headers).isEmpty {
            BackendWire.clientHead(raw: bytes, close: close, into: &out)
        } else {
            BackendWire.clientHead(head, close: close, into: &out)
        }
        held = out
    }

    /// Adds a body part to the held buffer when it fits; false: write the held bytes, then it.
    mutating func merge(_ body: ByteBuffer) -> Bool {
        guard held != nil, held!.readableBytes + body.readableBytes <= held!.capacity else { return false }
        var body = body
        held!.writeBuffer(&body)
        return true
    }

    /// The held bytes, to be written now (their storage is kept for the next head).
    mutating func take() -> ByteBuffer? {
        guard let buffer = held else { return nil }
        held = nil
        spare = buffer
        return buffer
    }

    mutating func drop() {
        held = nil
    }
}

/// The backend writes of a client read burst leave with one flush at its end (so the head and
/// end of a request leave in one system call), or at once outside a burst.
struct BurstFlushes {
    private var pending: Exchange?

    /// `exchange` wrote to its backend; `reading`: inside a read burst (or a drain of
    /// pipelined requests). Returns the exchange to flush now, if any.
    mutating func needsFlush(_ exchange: Exchange, reading: Bool) -> Exchange? {
        guard reading else { return exchange }
        let other = pending
        pending = exchange
        return other === exchange ? nil : other
    }

    /// The burst ended: returns the exchange to flush.
    mutating func endBurst() -> Exchange? {
        defer { pending = nil }
        return pending
    }
}
