import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import NIOTLS

/// Serves the connections of an `HTTPGateway` with SwiftNIO (HTTP/1.1, h2c by prior knowledge
/// or by `Upgrade: h2c`, and TLS with ALPN `h2` or `http/1.1`): the gate loop accepts and
/// sniffs the connection, then hands its socket and the bytes already read to `adopt`.
///
/// Threads: each adopted connection lives on one NIO event loop; its backend connections are
/// opened on the same loop and kept alive in a per-loop pool (`BackendPool`), so a request
/// and its backend exchange never cross threads. The route table is read under the gateway's
/// mutex once per request.
final class HTTPRouteNIO: Sendable {
    let group: any EventLoopGroup
    let state: GatewayState
    let settings: RouteSettings
    /// The adopted connections, for draining (shutdown, listener removed).
    let connections = ConnectionRegistry()

    init(group: any EventLoopGroup, state: GatewayState, settings: RouteSettings) {
        self.group = group
        self.state = state
        self.settings = settings
    }

    /// How an adopted connection is spoken.
    enum Mode {
        /// HTTP/1.1 in the clear (which may upgrade to h2c).
        case http1
        /// HTTP/2 with prior knowledge: the bytes already read start with the preface.
        case h2c
        /// TLS terminated with this context, then HTTP/2 or HTTP/1.1 by ALPN.
        case tls(NIOSSLContext)
    }

    /// Takes over a connected client socket. `prefix` are bytes the gate already read from it;
    /// `read`: the registration of the ClientHello's read that the channel's replaces.
    ///
    /// Draining a TLS connection: until ALPN has chosen the protocol no handler would hear a
    /// `ChannelShouldQuiesceEvent` (a drain during the handshake, or one that began while the
    /// ClientHello was read), so `QuiesceLatch` holds it and passes it to the HTTP/2 or
    /// HTTP/1.1 handler once that is in place.
    func adopt(fd: Int32, prefix: [UInt8], mode: Mode, peer: String, replacing read: ClientHelloRead? = nil) {
        let state = state
        let settings = settings
        let connections = connections
        let future = ClientBootstrap(group: group)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                connections.add(channel, replacing: read)
                // The drain's time ran out on the way here: closed once registered.
                if read?.ended == true { channel.eventLoop.execute { channel.close(promise: nil) } }
                return channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    try sync.addHandler(ReplayHandler(prefix: prefix))
                    switch mode {
                    case .http1:
                        try Self.configureHTTP1(channel, RouteConnection(state: state, settings: settings, peer: peer, proto: "http/1.1", eventLoop: channel.eventLoop), upgrade: true)
                    case .h2c:
                        try Self.configureHTTP2(channel, RouteConnection(state: state, settings: settings, peer: peer, proto: "h2c", eventLoop: channel.eventLoop))
                    case .tls(let tls):
                        try sync.addHandler(NIOSSLServerHandler(context: tls))
                        let coalescer = TLSWriteCoalescer()
                        let latch = QuiesceLatch()
                        try sync.addHandler(coalescer)
                        try sync.addHandler(ApplicationProtocolNegotiationHandler { result, channel in
                            channel.eventLoop.makeCompletedFuture {
                                if case .negotiated("h2") = result {
                                    // The HTTP/2 codec writes one buffer per flush already.
                                    channel.pipeline.syncOperations.removeHandler(coalescer, promise: nil)
                                    try Self.configureHTTP2(channel, RouteConnection(state: state, settings: settings, peer: peer, proto: "h2", eventLoop: channel.eventLoop))
                                } else {
                                    try Self.configureHTTP1(
                                        channel, RouteConnection(state: state, settings: settings, peer: peer, proto: "http/1.1+tls", eventLoop: channel.eventLoop), upgrade: false)
                                }
                                latch.release()
                            }
                        })
                        try sync.addHandler(latch)
                    }
                }
            }
            .withConnectedSocket(fd)
        future.whenFailure { error in
            if let read { connections.remove(read) }
            settings.log.warning("cannot adopt connection", metadata: ["src": "\(peer)", "error": "\(error)"])
        }
    }

    /// The gateway's own HTTP/1.1 request decoding (`HTTP1RequestDecoder`, inside the
    /// `HTTP1RouteHandler`: keep-alive, pipelining; it closes a kept-alive connection idle for
    /// `keepAliveTimeout` between requests; a malformed head is answered 400 or 431 and
    /// closed) and NIO's response encoder for the gateway's own answers. Backend responses are
    /// relayed as bytes through `RawResponseWriter`, in front of the encoder. `upgrade` (plain
    /// listeners): a first request with `Upgrade: h2c` switches the connection to HTTP/2
    /// (`H2CUpgrader`, driven by the route handler).
    ///
    /// Assembled here rather than by `configureHTTPServerPipeline`: its response encoder
    /// expects every response to pass through it (it pairs each with a request method), its
    /// outbound header validator and protocol error handler would see relayed responses as
    /// enum parts — the conversion this pipeline avoids (see `BackendWire`) — and its request
    /// decoder and upgrade handler were two more hops per read (see `HTTP1RequestDecoder`).
    static func configureHTTP1(_ channel: any Channel, _ connection: RouteConnection, upgrade: Bool) throws {
        let raw = RawResponseWriter()
        let encoder = HTTPResponseEncoder()
        let handler = HTTP1RouteHandler(connection, channel: channel, raw: raw)
        try channel.pipeline.syncOperations.addHandlers([raw, encoder, handler])
        if upgrade { handler.upgrader = H2CUpgrader(connection: connection, replaced: [handler, raw, encoder]) }
    }

    /// One `HTTP2RouteHandler`: the gateway's own HTTP/2 codec (`HTTP2ServerCodec`), the
    /// idle timeout (`HTTP2IdleHandler`: GOAWAY after `http2IdleTimeout` without streams) and
    /// every stream of the connection served from its frames (no child channel per stream, no
    /// `NIOHTTP2Handler`). The codec gathers the frames written between two flushes into one
    /// buffer, so h2c needs no `TLSWriteCoalescer`.
    ///
    /// Received HEADERS are checked by `HTTP2RouteHandler` in its own pass over them
    /// (`requestHead`, `validTrailers`), and the gateway's own HEADERS are valid by
    /// construction (`H2FieldEncoder` writes names in lower case; the fields come from the backend's
    /// head, whose parser accepts only token names and values without controls, from filters
    /// the loader checked the same way, or from the gateway itself). `HTTP2RouteHandler`
    /// checks a request's DATA against its `content-length` while it counts them for flow
    /// control; the gateway's responses carry the backend's length, which
    /// `BackendResponseReader` enforces, or none (chunked backend bodies are decoded for HTTP/2).
    ///
    /// `upgrade`: after `Upgrade: h2c`, the `HTTP2-Settings` payload and the request to answer
    /// on stream 1.
    static func configureHTTP2(_ channel: any Channel, _ connection: RouteConnection, upgrade: (settings: [UInt8], request: NIOHTTP1.HTTPRequestHead)? = nil) throws {
        try channel.pipeline.syncOperations.addHandler(HTTP2RouteHandler(connection, channel: channel, upgrade: upgrade))
    }
}

/// Holds a drain's `ChannelShouldQuiesceEvent` while a TLS connection's protocol is not chosen
/// (the handshake in progress: no handler behind ALPN's would hear it, it would be dropped), and
/// passes it on to the HTTP/2 or HTTP/1.1 handler that ALPN adds behind this one (`release`),
/// then leaves the pipeline (no hop for the connection's reads).
final class QuiesceLatch: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny
    private var held = false
    private var context: ChannelHandlerContext?

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }

    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard event is ChannelShouldQuiesceEvent else { return context.fireUserInboundEventTriggered(event) }
        held = true
    }

    /// The protocol's handler is in place behind this one: a held drain goes on to it.
    func release() {
        guard let context else { return }
        if held { context.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent()) }
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }
}

/// Gathers the writes between two flushes into one buffer in front of `NIOSSLHandler`, which
/// turns every write it is given into a TLS record of its own (each encrypted, framed and
/// decrypted on its own, where nginx sends one per flush). Used for HTTP/1.1 over TLS; it
/// leaves the pipeline when ALPN chooses h2 (the HTTP/2 codec writes one buffer per flush).
/// Hand-written because NIO has no such handler.
///
/// Every write smaller than a record is copied at once into one buffer the coalescer keeps
/// across flushes: no reference to the writer's buffer is held, so a writer that clears and
/// reuses its buffer does not have to allocate a new one while the previous write waits for
/// the flush, and the gathered buffer is reused without allocating once the layer below has
/// written it. Writes of a record's worth (16 KiB) or more pass through unchanged, in order.
final class TLSWriteCoalescer: ChannelOutboundHandler, RemovableChannelHandler {
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// The plaintext of one TLS record (RFC 8446 §5.1).
    static let recordSize = 16384
    /// The largest gathering buffer kept between flushes (each connection keeps one).
    static let keptCapacity = 8192
    /// The gathered bytes are its readable bytes; kept (read to its end) after they were
    /// passed on, and cleared for the next ones.
    private var gathered: ByteBuffer?
    /// Some write (maybe an empty one) is gathered, with or without bytes.
    private var holding = false
    private var gatheredPromise: EventLoopPromise<Void>?

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        var buffer = unwrapOutboundIn(data)
        let count = buffer.readableBytes
        if count >= Self.recordSize {
            forward(context)
            context.write(data, promise: promise)
            return
        }
        if holding, gathered!.readableBytes + count > Self.recordSize { forward(context) }
        if gathered == nil {
            gathered = context.channel.allocator.buffer(capacity: max(count, 2048))
        } else if !holding {
            // Unique again once the layer below wrote it: no allocation.
            gathered!.clear()
        }
        gathered!.writeBuffer(&buffer)
        holding = true
        if let promise {
            if let gatheredPromise { gatheredPromise.futureResult.cascade(to: promise) } else { gatheredPromise = promise }
        }
    }

    func flush(context: ChannelHandlerContext) {
        forward(context)
        context.flush()
    }

    func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        forward(context)
        context.close(mode: mode, promise: promise)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        forward(context)
    }

    private func forward(_ context: ChannelHandlerContext) {
        guard holding, let buffer = gathered else { return }
        holding = false
        if buffer.capacity > Self.keptCapacity {
            // Grown by a burst: not kept for the connection's lifetime.
            gathered = nil
        } else {
            // Read to its end here; the layer below writes its own copy of the indices.
            gathered!.moveReaderIndex(to: gathered!.writerIndex)
        }
        let promise = gatheredPromise
        gatheredPromise = nil
        context.write(wrapOutboundOut(buffer), promise: promise)
    }
}

/// Passes the bytes the gate had already read from an adopted socket down the pipeline
/// first, right after the channel becomes active, then leaves (used by the HTTPRoute
/// listeners and by PeerMesh for connections SwiftNIO adopts after the Gate's accept peek).
public final class ReplayHandler: ChannelInboundHandler, RemovableChannelHandler {
    public typealias InboundIn = ByteBuffer
    let prefix: [UInt8]
    public init(prefix: [UInt8]) { self.prefix = prefix }

    public func channelActive(context: ChannelHandlerContext) {
        context.fireChannelActive()
        if !prefix.isEmpty {
            // A read burst of its own, closed like any other (handlers such as
            // IdleStateHandler wait for the read-complete).
            context.fireChannelRead(NIOAny(context.channel.allocator.buffer(bytes: prefix)))
            context.fireChannelReadComplete()
        }
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }
}

/// The front of an HTTP/1.1 connection's HTTP handlers: bytes written through its context
/// (relayed backend responses, already HTTP/1.1) reach the socket (or TLS) without passing
/// NIO's response encoder behind it.
final class RawResponseWriter: ChannelOutboundHandler, RemovableChannelHandler {
    typealias OutboundIn = ByteBuffer
    private(set) var context: ChannelHandlerContext?

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }
    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }
}

/// Serves the requests of one HTTP/1.1 connection: its bytes are decoded here
/// (`HTTP1RequestDecoder`), each request head begins an `Exchange`, its body parts follow it,
/// and the response is written back on the connection — the backend's response head and body
/// as bytes (`relayHead`), the gateway's own answers through NIO's response encoder.
///
/// Pipelining: the decoder is pulled one part at a time, so a request that arrives while a
/// response is in progress stays in its buffer (as bytes) until that response has ended.
/// Reads stop only while more than `maxBuffered` bytes wait there, or while more than
/// `maxUnwritten` request body bytes wait to be written to the backend (backpressure: a slow
/// backend slows the uploading client down instead of its body piling up here). NIO's
/// `HTTPServerPipelineHandler` is not used: it withholds `read()` while each response is
/// pending, which makes NIO unregister and re-register the socket with epoll (two
/// `epoll_ctl` calls per request).
final class HTTP1RouteHandler: RouteClientHandler, ChannelDuplexHandler, RemovableChannelHandler, ExchangeClient, HTTP1RequestServing {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    /// Undecoded bytes (pipelined requests) above which the client is not read.
    static let maxBuffered = 64 * 1024
    /// Request body bytes handed to the exchange but not yet written to the backend socket
    /// above which the client is not read.
    static let maxUnwritten = 256 * 1024
    private var unwritten = 0
    private let raw: RawResponseWriter
    var decoder = HTTP1RequestDecoder()
    /// Plain listeners, until the first request: switches to h2c when it asks (RFC 7540 §3.2).
    var upgrader: H2CUpgrader?
    /// An `Upgrade: h2c` is being decided or done: nothing more is decoded here.
    private var upgrading = false
    /// A response that closes the connection has ended (or a request was refused): the
    /// bytes after it are not decoded.
    private var closing = false
    /// A backend response is being relayed (its parts go to `raw`).
    private var relaying = false
    /// The relayed head and the small body parts after it, written as one buffer at the end
    /// of the backend's read burst.
    private var held = HeldResponse()
    /// A response has begun and not ended (a protocol error then closes without a 400).
    private var responding = false
    private var exchange: Exchange?
    /// The backend connection not read while the client socket cannot take more of its
    /// response (`respondBody`; read again on `channelWritabilityChanged`).
    private var pausedBackend: BackendConnection?
    private var flushes = BurstFlushes()
    private var readWithheld = false
    private var drainScheduled = false
    /// Since when no request is in progress (nil: one is), and the keep-alive timer: instead of
    /// an `IdleStateHandler`, which sits in the path of every read, write and flush, one timer
    /// per connection checks this and is re-armed for the time left.
    private var idleSince: NIODeadline? = .now()
    private var idleTimer: Scheduled<Void>?
    /// Draining (`ChannelShouldQuiesceEvent`): the response in progress says `Connection:
    /// close` and the connection closes after it.
    private var quiescing = false

    override var exchanges: [Exchange] { exchange.map { [$0] } ?? [] }

    init(_ connection: RouteConnection, channel: any Channel, raw: RawResponseWriter) {
        self.raw = raw
        super.init(connection, channel: channel)
    }

    var decodesChunks: Bool { false }

    override func handlerAdded(context: ChannelHandlerContext) {
        super.handlerAdded(context: context)
        armIdleTimer(at: .now() + keepAlive)
    }

    override func handlerRemoved(context: ChannelHandlerContext) {
        super.handlerRemoved(context: context)
        idleTimer?.cancel()
        idleTimer = nil
        upgrader = nil
    }

    private var keepAlive: TimeAmount { .milliseconds(Int64(connection.settings.keepAliveTimeout * 1000)) }

    private func armIdleTimer(at deadline: NIODeadline) {
        idleTimer = eventLoop.assumeIsolated().scheduleTask(deadline: deadline) { [weak self] in self?.idleTimerFired() }
    }

    private func idleTimerFired() {
        idleTimer = nil
        guard let idleSince else {
            armIdleTimer(at: .now() + keepAlive)
            return
        }
        if idleSince + keepAlive <= .now() {
            context?.close(promise: nil)
        } else {
            armIdleTimer(at: idleSince + keepAlive)
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !closing else { return }
        reading = true
        // While an upgrade is decided the bytes wait (HTTP/1.1 or the new protocol's).
        decoder.feed(unwrapInboundIn(data))
        decode()
    }

    var mayDecode: Bool { context != nil && !closing && !upgrading && (exchange == nil || !decoder.atHead) }

    func serve(_ part: consuming HTTP1RequestDecoder.Part) {
        switch consume part {
        case .head(let head, let request, _):
            idleSince = nil
            if let upgrader {
                self.upgrader = nil
                if head.asksForH2C {
                    upgrade(head, request: request, with: upgrader)
                    return
                }
            }
            begin(head, request: request)
        case .body(let body):
            unwritten += HTTP1ClientSide.forward(body, to: exchange) { [weak self] in self?.bodyWritten($0) }
        case .end(let trailers):
            exchange?.requestPart(.end(trailers))
        }
    }

    /// See `HTTP1ClientSide.begin`.
    private func begin(_ head: HTTP1Request, request: RouteRequest) {
        exchange = HTTP1ClientSide.begin(head, request: request, client: self)
        if exchange == nil { idleSince = .now() }
    }

    /// `Upgrade: h2c` on the first request (RFC 7540 §3.2): `101 Switching Protocols`, then
    /// `H2CUpgrader` replaces the HTTP/1 handlers by the HTTP/2 ones and the bytes after the
    /// request go to them. Refused (a body, bad `HTTP2-Settings`): served over HTTP/1.1.
    private func upgrade(_ request: HTTP1Request, request view: RouteRequest, with upgrader: H2CUpgrader) {
        guard let context else { return }
        upgrading = true
        let head = request.nioHead
        let switching = HTTPHeaders([("connection", "upgrade"), ("upgrade", upgrader.supportedProtocol)])
        upgrader.buildUpgradeResponse(channel: context.channel, upgradeRequest: head, initialResponseHeaders: switching)
            .assumeIsolated().whenComplete { [self] result in
                guard let context = self.context else { return }
                guard case .success(let fields) = result else {
                    upgrading = false
                    begin(request, request: view)
                    decode()
                    endBurst()
                    return
                }
                var answer = context.channel.allocator.buffer(capacity: 96)
                answer.writeStaticString("HTTP/1.1 101 Switching Protocols\r\n")
                for (name, value) in fields { answer.writeString("\(name): \(value)\r\n") }
                answer.writeStaticString("\r\n")
                raw.context?.writeAndFlush(NIOAny(answer), promise: nil)
                let rest = decoder.takeRemaining()
                let pipeline = context.pipeline
                let channel = context.channel
                upgrader.upgrade(context: context, upgradeRequest: head).assumeIsolated().whenComplete { result in
                    guard case .success = result else { return channel.close(promise: nil) }
                    if let rest { pipeline.syncOperations.fireChannelRead(NIOAny(rest)) }
                    pipeline.syncOperations.fireChannelReadComplete()
                }
            }
    }

    /// Bytes that are not a request: 400 (431 for a head over the limits) naming the problem,
    /// unless a response is under way, then the connection just closes.
    func refuse(_ error: HTTP1RequestDecoder.Malformed) {
        closing = true
        guard !responding, let front = raw.context, let context else { return closeOnError(error) }
        exchange?.clientGone()
        let channel = context.channel
        front.writeAndFlush(NIOAny(channel.allocator.buffer(string: HTTP1ClientSide.refusal(error)))).assumeIsolated().whenComplete { _ in
            // A lingering close (as nginx does): the answer and a FIN first, the client's
            // remaining bytes read and dropped, so a close with unread input does not reset
            // the connection (a reset can discard the answer before the client reads it).
            channel.close(mode: .output).assumeIsolated().whenComplete { result in
                guard case .success = result else { return channel.close(promise: nil) }
                channel.eventLoop.assumeIsolated().scheduleTask(in: Self.lingering) { channel.close(promise: nil) }
            }
        }
    }

    /// How long a refused connection's input is still read (and dropped) after the answer.
    static let lingering = TimeAmount.seconds(2)

    func channelReadComplete(context: ChannelHandlerContext) {
        endBurst()
        context.fireChannelReadComplete()
    }

    /// The end of a read burst (or of a drain): backend writes leave.
    private func endBurst() {
        reading = false
        flushes.endBurst()?.flushBackend()
    }

    /// Serves the pipelined requests after a response ended, up to the next one that has to wait.
    private func drain() {
        drainScheduled = false
        guard context != nil else { return }
        reading = true
        decode()
        endBurst()
        resumeReading()
    }

    /// Body bytes left for the backend (or dropped): reading resumes below half the limit.
    private func bodyWritten(_ bytes: Int) {
        unwritten -= bytes
        if unwritten <= Self.maxUnwritten / 2 { resumeReading() }
    }

    private func resumeReading() {
        if readWithheld, decoder.bufferedBytes <= Self.maxBuffered, unwritten <= Self.maxUnwritten {
            readWithheld = false
            context?.read()
        }
    }

    func read(context: ChannelHandlerContext) {
        if decoder.bufferedBytes > Self.maxBuffered || unwritten > Self.maxUnwritten {
            readWithheld = true
        } else {
            context.read()
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        exchange?.clientGone()
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard event is ChannelShouldQuiesceEvent else { return context.fireUserInboundEventTriggered(event) }
        quiescing = true
        if exchange == nil { context.close(promise: nil) }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        closeOnError(error)
    }

    func respondHead(_ head: HTTPResponseHead) {
        var head = head
        if head.status.code >= 200 {
            responding = true
            if quiescing { head.headers.replaceOrAdd(name: "connection", value: "close") }
        }
        context?.write(wrapOutboundOut(.head(head)), promise: nil)
    }

    func relayHead(_ head: HTTP1ResponseHead, raw bytes: ByteBuffer?, close: Bool) {
        relaying = true
        responding = true
        held.holdRelayedHead(head, raw: bytes, close: close || quiescing, allocator)
    }

    /// Writes what `relayHead` / `respondBody` held back.
    private func writeHeld() {
        if let buffer = held.take() { raw.context?.write(NIOAny(buffer), promise: nil) }
    }

    func respondBody(_ buffer: ByteBuffer) {
        if relaying {
            guard !held.merge(buffer) else { return }
            writeHeld()
            raw.context?.write(NIOAny(buffer), promise: nil)
        } else {
            context?.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
        }
        // Response backpressure: a client that reads slowly holds the backend to its pace
        // instead of the response piling up in the channel's outbound buffer.
        if pausedBackend == nil, let context, !context.channel.isWritable, let backend = exchange?.backend {
            backend.pauseReading()
            pausedBackend = backend
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { resumeBackend() }
        context.fireChannelWritabilityChanged()
    }

    private func resumeBackend() {
        pausedBackend?.resumeReading()
        pausedBackend = nil
    }

    func respondEnd(_ trailers: HTTPHeaders?, close: Bool) {
        guard let context else { return }
        // The backend connection may go back to its pool: reading again.
        resumeBackend()
        let close = close || quiescing
        responding = false
        if close { closing = true }
        var ended: EventLoopFuture<Void>?
        if relaying {
            // The body's own framing (its length or last chunk) has ended it.
            relaying = false
            writeHeld()
            if close {
                ended = raw.context?.writeAndFlush(NIOAny(allocator.buffer(capacity: 0)))
            } else {
                raw.context?.flush()
            }
        } else if close {
            ended = context.writeAndFlush(wrapOutboundOut(.end(trailers)))
        } else {
            context.writeAndFlush(wrapOutboundOut(.end(trailers)), promise: nil)
        }
        if close {
            (ended ?? eventLoop.makeSucceededVoidFuture()).assumeIsolated().whenComplete { _ in context.close(promise: nil) }
        } else if decoder.bufferedBytes > 0 && !drainScheduled && !reading {
            // After the exchange has finished (it ends the response first); within a read
            // burst the decoding loop goes on by itself.
            drainScheduled = true
            eventLoop.assumeIsolated().execute { [self] in drain() }
        }
    }

    func flushResponse() {
        writeHeld()
        context?.flush()
    }

    func abortResponse() {
        held.drop()
        closing = true
        context?.close(promise: nil)
    }

    func exchangeFinished(_ finished: Exchange) {
        if exchange === finished {
            resumeBackend()
            exchange = nil
            idleSince = .now()
        }
    }

    func backendNeedsFlush(_ exchange: Exchange) {
        flushes.needsFlush(exchange, reading: reading)?.flushBackend()
    }

}

/// What the HTTP/1.1 and HTTP/2 client handlers share: the connection, its loop, the handler
/// context, whether a read burst is under way, the deadline timer of its exchanges, and the
/// send timeout.
///
/// The send timeout (`SendStall`) samples the channel's bytes not yet taken by the socket
/// (`bufferedWritableBytes`) on a timer every quarter of `sendTimeout` instead of watching each
/// write: no cost per request (a promise per flush or an option read per flush would be on the
/// hot path). A sample with fewer bytes waiting than the one before counts as progress, so a
/// client is closed once it took nothing for `sendTimeout` (found within a quarter of it more);
/// bytes added between two samples can hide a little progress. Bytes the HTTP/2 codec holds
/// for want of the client's flow-control window are not socket bytes: the same samples time
/// them out separately (`windowStalled`, `HTTP2RouteHandler`).
class RouteClientHandler {
    let connection: RouteConnection
    let eventLoop: any EventLoop
    let allocator: ByteBufferAllocator
    var context: ChannelHandlerContext?
    /// Inside a read burst: flushes wait for its end (`channelReadComplete`).
    var reading = false
    private var deadlines: DeadlineTimer?
    private var stall: SendStall
    private var stallCheck: Scheduled<Void>?
    /// The channel's buffered bytes at the last sample.
    private var lastBuffered = 0

    init(_ connection: RouteConnection, channel: any Channel) {
        self.connection = connection
        eventLoop = channel.eventLoop
        allocator = channel.allocator
        stall = SendStall(seconds: connection.settings.sendTimeout)
    }

    /// The exchanges in progress on this connection.
    var exchanges: [Exchange] { [] }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        armStallCheck()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        deadlines?.cancel()
        deadlines = nil
        stallCheck?.cancel()
        stallCheck = nil
    }

    private func armStallCheck() {
        // The task and the deadline timer hold the handler until `handlerRemoved` cancels them:
        // no weak reference (see `HTTP2RouteStream.handler`).
        stallCheck = eventLoop.assumeIsolated().scheduleTask(in: .milliseconds(Int64(max(stall.limit / 4, 1)))) { [self] in
            checkStall()
        }
    }

    /// One sample of the bytes waiting for the socket; closes the connection when the client
    /// took none for `sendTimeout` (its exchanges end, their backend connections closed).
    private func checkStall() {
        guard let context else { return }
        let buffered = (try? context.channel.syncOptions?.getOption(.bufferedWritableBytes)) ?? 0
        let now = GateLoop.monotonicMillis()
        stall.observe(waiting: buffered > 0, progress: buffered < lastBuffered, now: now)
        lastBuffered = buffered
        if stall.stalled(now: now) {
            stallCheck = nil
            connection.sendTimedOut(exchanges, waiting: buffered)
            context.close(promise: nil)
        } else if windowStalled(now: now) {
            stallCheck = nil
        } else {
            armStallCheck()
        }
    }

    /// Called with each sample of the send timeout: the HTTP/2 handler times out response
    /// DATA held for want of the client's flow-control window. True: the connection is closed.
    func windowStalled(now: UInt64) -> Bool { false }

    /// A client connection error: logged at debug level, the connection closed.
    func closeOnError(_ error: any Error) {
        connection.settings.log.debug("client connection error", metadata: ["src": "\(connection.peer)", "error": "\(error)"])
        context?.close(promise: nil)
    }

    func watchDeadline(_ exchange: Exchange) {
        if deadlines == nil {
            deadlines = DeadlineTimer(eventLoop: eventLoop) { [self] in exchanges }
        }
        deadlines?.watch(exchange.deadline)
    }
}
