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
/// Backpressure: the client is not read while more than `maxBuffered` undecoded bytes or more
/// than `maxUnwritten` request body bytes not yet written to the backend wait (uploads go at
/// the backend's pace); the backend is not read while more than `maxQueued` response bytes wait
/// for the client socket (downloads go at the client's pace).
final class HTTP1LoopConnection: LoopHandler, ExchangeClient {
    static let maxBuffered = HTTP1RouteHandler.maxBuffered
    static let maxUnwritten = HTTP1RouteHandler.maxUnwritten
    /// Response bytes queued for the client above which the backend is not read.
    static let maxQueued = 256 * 1024
    static let mergedBodyLimit = HTTP1RouteHandler.mergedBodyLimit
    static let preface = HTTPRouteFront.preface

    let connection: RouteConnection
    let gate: GateEventLoop
    let nio: HTTPRouteNIO
    let allocator = ByteBufferAllocator()
    var eventLoop: any EventLoop { gate }
    var decodesChunks: Bool { false }
    /// For the listener's registry (draining).
    let handle: LoopConnectionHandle

    /// -1 once closed or handed to NIO.
    private(set) var fd: Int32
    private var interest = Interest.read
    private var decoder = HTTP1RequestDecoder()
    private var out = SocketWriteQueue()
    /// Every byte read until the first request head is served: the h2c preface check, and the
    /// bytes NIO is given when the connection turns out to be h2c (prior knowledge or upgrade).
    private var opening: ByteBuffer?
    private var prefaceDecided = false
    private var exchange: Exchange?
    private var flushAtReadComplete: Exchange?
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
    /// The response head and small body parts after it, written as one buffer.
    private var held: ByteBuffer?
    /// The last written head buffer, reused once the socket has written it.
    private var spare: ByteBuffer?
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
    private var deadlines: DeadlineTimer?

    private init(fd: Int32, gate: GateEventLoop, nio: HTTPRouteNIO, peer: String) {
        self.fd = fd
        self.gate = gate
        self.nio = nio
        connection = RouteConnection(state: nio.state, settings: nio.settings, peer: peer, proto: "http/1.1", eventLoop: gate)
        handle = LoopConnectionHandle(loop: gate.loop)
        opening = ByteBufferAllocator().buffer(capacity: 0)
        idleSince = gate.loop.now
    }

    /// Serves the accepted socket `fd` on `loop` (called on its thread).
    static func start(fd: Int32, loop: GateLoop, nio: HTTPRouteNIO, peer: String) {
        _ = try? Sys.setInt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, 1, "setsockopt(TCP_NODELAY)")
        let connection = HTTP1LoopConnection(fd: fd, gate: loop.eventLoop, nio: nio, peer: peer)
        guard loop.register(fd, Interest.read, connection) else {
            Sys.abort(fd)
            return
        }
        connection.handle.connection = connection
        connection.armIdleTimer(after: connection.keepAliveMillis)
        nio.connections.add(connection.handle)
    }

    private var keepAliveMillis: UInt64 { UInt64(max(connection.settings.keepAliveTimeout, 0.001) * 1000) }

    // MARK: events

    func ready(fd: Int32, events: UInt32) {
        if events & Interest.write != 0 { flushOut() }
        guard self.fd >= 0, events & (Interest.read | Interest.error) != 0 else { return }
        guard !readPaused || events & Interest.error != 0 else { return }
        let (result, bytes) = gate.read(fd)
        switch result {
        case .bytes:
            received(bytes)
        case .wouldBlock:
            return
        case .eof, .error:
            // As NIO without half-closure: the client's end closes the connection.
            closeNow()
        }
    }

    private func received(_ bytes: ByteBuffer) {
        guard !lingering, !closing else { return }
        reading = true
        if !prefaceDecided {
            opening!.writeImmutableBuffer(bytes)
            let seen = opening!.readableBytesView
            if seen.count < Self.preface.count, seen.elementsEqual(Self.preface.prefix(seen.count)) {
                reading = false
                return
            }
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
        decode()
        endBurst()
        updateInterest()
    }

    /// Serves decoded parts up to the next request head that has to wait for the response in
    /// progress (or until more bytes are needed).
    private func decode() {
        while fd >= 0, !closing, exchange == nil || !decoder.atHead {
            let part: HTTP1RequestDecoder.Part
            do {
                guard let next = try decoder.next() else { return }
                part = next
            } catch {
                refuse(error)
                return
            }
            serve(part)
        }
    }

    private func serve(_ part: HTTP1RequestDecoder.Part) {
        switch part {
        case .head(let head, let request, _):
            idleSince = nil
            if opening != nil {
                if head.asksForH2C {
                    // NIO's HTTP/1 pipeline decides the upgrade (and serves the request).
                    handOff(mode: .http1)
                    return
                }
                opening = nil
            }
            begin(head, request: request)
        case .body(let body):
            guard let exchange else { return }
            let bytes = body.readableBytes
            unwritten += bytes
            exchange.requestPart(.body(.byteBuffer(body))) { [weak self] in self?.bodyWritten(bytes) }
        case .end(let trailers):
            exchange?.requestPart(.end(trailers))
        }
    }

    /// See `HTTP1RouteHandler.begin`: a request asking to switch protocols that is served here
    /// closes the connection after its response.
    private func begin(_ head: HTTP1Request, request: RouteRequest) {
        var head = head
        if head.asksToSwitch { head.isKeepAlive = false }
        if let started = Exchange.begin(head, client: self, http1: true, request: request), !started.finished {
            exchange = started
        } else if fd >= 0 {
            idleSince = gate.loop.now
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
    private func refuse(_ error: HTTP1RequestDecoder.Malformed) {
        closing = true
        guard !responding else {
            connection.settings.log.debug("client connection error", metadata: ["src": "\(connection.peer)", "error": "\(error)"])
            return closeNow()
        }
        exchange?.clientGone()
        let body = error.message + "\n"
        let reason = error.status == 431 ? "Request Header Fields Too Large" : "Bad Request"
        let answer =
            "HTTP/1.1 \(error.status) \(reason)\r\nconnection: close\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: \(body.utf8.count)\r\n\r\n\(body)"
        held = nil
        out.append(allocator.buffer(string: answer))
        afterWrite = .linger
        flushOut()
    }

    /// The end of a read burst (or of a drain): backend writes leave.
    private func endBurst() {
        reading = false
        if let pending = flushAtReadComplete {
            flushAtReadComplete = nil
            pending.flushBackend()
        }
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
        let wanted = (readPaused ? 0 : Interest.read) | (wantWrite ? Interest.write : 0)
        if wanted != interest {
            interest = wanted
            gate.loop.modify(fd, wanted)
        }
    }

    // MARK: writing

    /// Writes what is queued; what the socket does not take waits for `EPOLLOUT`, and while
    /// more than `maxQueued` bytes wait the backend is not read.
    private func flushOut() {
        guard fd >= 0 else { return }
        switch out.write(to: fd) {
        case .done:
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
        _ = Glibc.shutdown(fd, Int32(SHUT_WR))
        updateInterest()
        let millis = UInt64(HTTP1RouteHandler.lingering.nanoseconds / 1_000_000)
        lingerTimer = gate.loop.schedule(afterMillis: millis) { [weak self] in self?.closeNow() }
    }

    private func takeHeld(_ capacity: Int) -> ByteBuffer {
        if let held { return held }
        if var reused = spare {
            spare = nil
            reused.clear(minimumCapacity: capacity)
            return reused
        }
        return allocator.buffer(capacity: capacity)
    }

    /// Queues what `respondHead` / `relayHead` / `respondBody` held back.
    private func writeHeld() {
        guard let buffer = held else { return }
        held = nil
        spare = buffer
        out.append(buffer)
    }

    func respondHead(_ head: HTTPResponseHead) {
        var head = head
        if head.status.code >= 200 {
            responding = true
            if quiescing { head.headers.replaceOrAdd(name: "connection", value: "close") }
        }
        var buffer = takeHeld(256 + Self.mergedBodyLimit)
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
        held = buffer
    }

    func relayHead(_ head: HTTP1ResponseHead, raw bytes: ByteBuffer?, close: Bool) {
        let close = close || quiescing
        responding = true
        var buffer = takeHeld((bytes?.readableBytes ?? 256) + Self.mergedBodyLimit)
        if let bytes, BackendWire.connectionOptions(head.headers).isEmpty {
            BackendWire.clientHead(raw: bytes, close: close, into: &buffer)
        } else {
            BackendWire.clientHead(head, close: close, into: &buffer)
        }
        held = buffer
    }

    func respondBody(_ buffer: ByteBuffer) {
        if held != nil, held!.readableBytes + buffer.readableBytes <= held!.capacity {
            var body = buffer
            held!.writeBuffer(&body)
            return
        }
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
            gate.loop.later { [weak self] in self?.drain() }
        }
    }

    func flushResponse() {
        writeHeld()
        flushOut()
    }

    func abortResponse() {
        held = nil
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
        guard reading else {
            exchange.flushBackend()
            return
        }
        if let other = flushAtReadComplete, other !== exchange { other.flushBackend() }
        flushAtReadComplete = exchange
    }

    func watchDeadline(_ exchange: Exchange) {
        if deadlines == nil {
            deadlines = DeadlineTimer(eventLoop: gate) { [weak self] in self?.exchange.map { [$0] } ?? [] }
        }
        deadlines?.watch(exchange.deadline)
    }

    // MARK: timers, draining, closing

    private func armIdleTimer(after millis: UInt64) {
        idleTimer = gate.loop.schedule(afterMillis: millis) { [weak self] in self?.idleTimerFired() }
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

    /// Draining: an idle connection closes now (once its output is written); one with a
    /// request in progress answers it with `Connection: close` and closes after it.
    func quiesce() {
        guard fd >= 0 else { return }
        quiescing = true
        guard exchange == nil, !responding else { return }
        closing = true
        if out.isEmpty { closeNow() } else { afterWrite = .close }
    }

    /// Closes the client socket; the exchange in progress hears that its client went away.
    func closeNow() {
        guard fd >= 0 else { return }
        let socket = fd
        detach()
        Glibc.close(socket)
        exchange?.clientGone()
    }

    /// Stops watching the socket (closed or handed to NIO) and drops what this connection holds.
    private func detach() {
        gate.loop.deregister(fd)
        fd = -1
        idleTimer?.cancel()
        idleTimer = nil
        lingerTimer?.cancel()
        lingerTimer = nil
        deadlines?.cancel()
        out.drop()
        held = nil
        spare = nil
        if let backend = pausedBackend {
            pausedBackend = nil
            backend.resumeReading()
        }
        nio.connections.remove(handle)
    }
}

/// A client connection served on a gate loop, as the listener's `ConnectionRegistry` holds it:
/// draining and closing from any thread hop to the connection's loop.
final class LoopConnectionHandle: @unchecked Sendable {  // `connection` is set and read on the loop thread only
    let loop: GateLoop
    weak var connection: HTTP1LoopConnection?

    init(loop: GateLoop) { self.loop = loop }

    func quiesce() {
        loop.execute { self.connection?.quiesce() }
    }

    func close() {
        loop.execute { self.connection?.closeNow() }
    }
}
