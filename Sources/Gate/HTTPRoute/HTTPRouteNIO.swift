import CoreMetrics
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOHTTP2
import NIOPosix
import NIOSSL
import NIOTLS

/// Serves the HTTP/2 (h2c prior knowledge, or TLS with ALPN `h2`) and HTTP/1.1-over-TLS
/// connections of an `HTTPGateway` with SwiftNIO: the gate loop accepts and sniffs the
/// connection, then hands its socket and the bytes already read to `adopt`.
///
/// Threads: each adopted connection lives on one NIO event loop; its backend connections are
/// opened on the same loop and kept alive in a per-loop pool (`BackendPool`), so a request
/// and its backend exchange never cross threads. The route table is read under the gateway's
/// mutex once per request.
final class HTTPRouteNIO: Sendable {
    let group: any EventLoopGroup
    let state: GatewayState
    let settings: RouteHandler.Settings

    init(group: any EventLoopGroup, state: GatewayState, settings: RouteHandler.Settings) {
        self.group = group
        self.state = state
        self.settings = settings
    }

    /// How an adopted connection is spoken.
    enum Mode {
        /// HTTP/1.1 in the clear.
        case http1
        /// HTTP/2 with prior knowledge: the bytes already read start with the preface.
        case h2c
        /// TLS terminated with this context, then HTTP/2 or HTTP/1.1 by ALPN.
        case tls(NIOSSLContext)
    }

    /// Takes over a connected client socket. `prefix` are bytes the gate already read from it.
    func adopt(fd: Int32, prefix: [UInt8], mode: Mode, peer: String) {
        let state = state
        let settings = settings
        let future = ClientBootstrap(group: group)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    try sync.addHandler(ReplayHandler(prefix: prefix))
                    switch mode {
                    case .http1:
                        try Self.configureHTTP1(channel, state: state, settings: settings, peer: peer, proto: "http/1.1")
                    case .h2c:
                        try Self.configureHTTP2(channel, state: state, settings: settings, peer: peer, proto: "h2c")
                    case .tls(let tls):
                        try sync.addHandler(NIOSSLServerHandler(context: tls))
                        try sync.addHandler(ApplicationProtocolNegotiationHandler { result, channel in
                            channel.eventLoop.makeCompletedFuture {
                                if case .negotiated("h2") = result {
                                    try Self.configureHTTP2(channel, state: state, settings: settings, peer: peer, proto: "h2")
                                } else {
                                    try Self.configureHTTP1(channel, state: state, settings: settings, peer: peer, proto: "http/1.1+tls")
                                }
                            }
                        })
                    }
                }
            }
            .withConnectedSocket(fd)
        future.whenFailure { error in
            settings.log.warning("cannot adopt connection", metadata: ["src": "\(peer)", "error": "\(error)"])
        }
    }

    /// NIO's HTTP/1.1 server pipeline (pipelining, keep-alive; a malformed head is answered
    /// 400 and closed) with a `RouteHandler`; a kept-alive connection idle for
    /// `keepAliveTimeout` between requests is closed.
    static func configureHTTP1(_ channel: any Channel, state: GatewayState, settings: RouteHandler.Settings, peer: String, proto: String) throws {
        try channel.pipeline.syncOperations.addHandler(IdleStateHandler(readTimeout: .milliseconds(Int64(settings.keepAliveTimeout * 1000))))
        try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
        try channel.pipeline.syncOperations.addHandler(RouteHandler(state: state, settings: settings, peer: peer, proto: proto))
    }

    static func configureHTTP2(_ channel: any Channel, state: GatewayState, settings: RouteHandler.Settings, peer: String, proto: String) throws {
        let idle = HTTP2IdleHandler(seconds: settings.http2IdleTimeout, loop: channel.eventLoop)
        _ = try channel.pipeline.syncOperations.configureHTTP2Pipeline(
            mode: .server, connectionConfiguration: .init(), streamConfiguration: .init(), streamDelegate: idle.http2StreamDelegate
        ) { stream in
            stream.eventLoop.makeCompletedFuture {
                try stream.pipeline.syncOperations.addHandlers([
                    HTTP2FramePayloadToHTTP1ServerCodec(), RouteHandler(state: state, settings: settings, peer: peer, proto: proto),
                ])
            }
        }
        try channel.pipeline.syncOperations.addHandler(idle)
    }
}

/// Passes the bytes the gate had already read from an adopted socket down the pipeline
/// first, right after the channel becomes active, then leaves.
final class ReplayHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    let prefix: [UInt8]
    init(prefix: [UInt8]) { self.prefix = prefix }

    func channelActive(context: ChannelHandlerContext) {
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

/// Serves the requests of one HTTP/1.1 connection or one HTTP/2 stream (through
/// `HTTP2FramePayloadToHTTP1ServerCodec`): decides with the route table, answers local
/// responses (404, redirects, 500) itself, and forwards the rest to a pooled backend
/// connection, streaming bodies both ways.
final class RouteHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    /// What every handler of a gateway shares.
    struct Settings: Sendable {
        var listenerName: String
        var defaultTimeout: Double
        /// Seconds an HTTP/1.1 connection may stay idle between requests.
        var keepAliveTimeout: Double = 60
        /// Seconds an HTTP/2 connection may stay without open streams (then GOAWAY and close).
        var http2IdleTimeout: Double = 60
        var accessLog: Logger
        var log: Logger
        var counters: RouteCounters
        var pool: BackendPool
    }

    let state: GatewayState
    let settings: Settings
    let peer: String
    let proto: String
    private var exchange: Exchange?
    /// A backend whose writes are flushed by a task queued on the loop, so the parts of a
    /// request that arrive in one read burst (head and end) leave in one syscall.
    private var backendNeedsFlush: BackendConnection?

    init(state: GatewayState, settings: Settings, peer: String, proto: String) {
        self.state = state
        self.settings = settings
        self.peer = peer
        self.proto = proto
    }

    /// One request being forwarded.
    final class Exchange {
        var log: HTTPRouteFront.Entry
        let forward: RouteAction.Forward
        let keepAlive: Bool
        let head: NIOHTTP1.HTTPRequestHead
        var candidates: [RouteBackend]
        var backend: BackendConnection?
        /// Request parts not yet sent (while connecting), and every part sent so far while
        /// they are few (so a stale pooled connection can be replaced by a new one).
        var pending: [HTTPClientRequestPart] = []
        var replay: [HTTPClientRequestPart]? = []
        var replayBytes = 0
        var requestEnded = false
        var responded = false
        var finished = false
        var timer: Scheduled<Void>?
        var failures: [String] = []

        init(log: HTTPRouteFront.Entry, forward: RouteAction.Forward, keepAlive: Bool, head: NIOHTTP1.HTTPRequestHead) {
            self.log = log
            self.forward = forward
            self.keepAlive = keepAlive
            self.head = head
            candidates = [forward.backend] + forward.fallbacks
        }
    }

    static let hopByHop: Set<String> = ["connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade", "transfer-encoding", "http2-settings"]

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            begin(context: context, head: head)
        case .body(let body):
            send(context: context, .body(.byteBuffer(body)))
        case .end(let trailers):
            exchange?.requestEnded = true
            send(context: context, .end(trailers))
        }
    }

    /// Flushes `backend` once the loop is done with the current burst of events.
    /// (`channelReadComplete` is not a reliable moment: the HTTP/1.1 pipelining handler
    /// delivers held-back requests without one.)
    private func flush(_ backend: BackendConnection) {
        guard backendNeedsFlush !== backend else { return }
        backendNeedsFlush = backend
        backend.channel.eventLoop.assumeIsolated().execute { [self] in
            backendNeedsFlush = nil
            backend.channel.flush()
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        if let exchange, !exchange.finished {
            exchange.log.error = "client went away"
            finish(context: context, exchange, reuseBackend: false)
        }
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        // Idle between requests (IdleStateHandler on HTTP/1.1): close; during an exchange the
        // rule's deadline governs.
        if case .read? = event as? IdleStateHandler.IdleStateEvent {
            if exchange == nil { context.close(promise: nil) }
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        settings.log.debug("client connection error", metadata: ["src": "\(peer)", "error": "\(error)"])
        context.close(promise: nil)
    }

    private func begin(context: ChannelHandlerContext, head: NIOHTTP1.HTTPRequestHead) {
        let request = Self.routeRequest(head)
        var log = HTTPRouteFront.Entry(method: head.method.rawValue, host: request.host, path: request.path, started: GateLoop.monotonicMillis())
        var keepAlive = head.isKeepAlive
        let local: (Int, String, [HTTPField])
        if let refusal = Self.check(head, http1: proto.hasPrefix("http/1")) {
            // A request the gateway will not route: answered and the connection closed.
            local = (refusal.status, refusal.message, [])
            keepAlive = false
        } else {
            switch state.decide(request, route: &log.route) {
            case .local(let status, let message, let headers):
                local = (status, message, headers)
            case .forward(let forward):
                start(context: context, forward, head: head, log: log)
                return
            }
        }
        log.status = local.0
        respondLocally(context: context, status: local.0, message: local.1, headers: local.2, keepAlive: keepAlive, log: &log)
        record(log)
    }

    /// The limits of the gateway's own HTTP/1.1 parser (`HTTPHeadLimits`): head size and
    /// field count (431), origin-form target (400), `Host` required in HTTP/1.1 (400).
    static func check(_ head: NIOHTTP1.HTTPRequestHead, http1: Bool) -> (status: Int, message: String)? {
        let limits = HTTPHeadLimits()
        var size = head.uri.utf8.count + head.method.rawValue.utf8.count + 12
        for (name, value) in head.headers { size += name.utf8.count + value.utf8.count + 4 }
        if size > limits.maxHeadBytes || head.headers.count > limits.maxHeaderCount {
            return (431, "request head larger than \(limits.maxHeadBytes) bytes or \(limits.maxHeaderCount) fields")
        }
        guard http1 else { return nil }
        if !head.uri.hasPrefix("/") { return (400, "request-target \(head.uri) is not origin-form (/path)") }
        if head.version == .http1_1 && !head.headers.contains(name: "host") { return (400, "HTTP/1.1 request without Host") }
        return nil
    }

    /// Starts forwarding a routed request: connects (or takes a pooled connection), arms the
    /// rule's deadline and sends the mirrors.
    private func start(context: ChannelHandlerContext, _ forward: RouteAction.Forward, head: NIOHTTP1.HTTPRequestHead, log: HTTPRouteFront.Entry) {
        let keepAlive = head.isKeepAlive
        let exchange = Exchange(log: log, forward: forward, keepAlive: keepAlive, head: head)
        self.exchange = exchange
        var upstream = NIOHTTP1.HTTPRequestHead(version: .http1_1, method: head.method, uri: forward.target)
        for field in forward.headers where !Self.hopByHop.contains(field.name.lowercased()) {
            upstream.headers.add(name: field.name, value: field.value)
        }
        if head.headers.contains(name: "transfer-encoding") || (!head.headers.contains(name: "content-length") && head.method.sendsBody) {
            upstream.headers.add(name: "transfer-encoding", value: "chunked")
        }
        exchange.pending.append(.head(upstream))
        let timeout = forward.timeout ?? settings.defaultTimeout
        exchange.timer = context.eventLoop.assumeIsolated().scheduleTask(in: .milliseconds(Int64(timeout * 1000))) { [weak self] in
            guard let self, !exchange.finished else { return }
            self.fail(context: context, exchange, 504, "backend \(exchange.log.backend) did not respond within \(timeout) s")
        }
        connectNext(context: context, exchange)
        for mirror in forward.mirrors {
            settings.pool.mirror(upstream, to: mirror.destination, on: context.eventLoop, log: settings.log)
        }
    }

    /// The route-table view of a request head; HTTP/2's `:authority` arrives as `Host`.
    static func routeRequest(_ head: NIOHTTP1.HTTPRequestHead) -> RouteRequest {
        var fields: [HTTPField] = []
        for (name, value) in head.headers { fields.append(HTTPField(name, value)) }
        let wire = HTTPRequestHead(method: head.method.rawValue, target: head.uri, headers: fields)
        return RouteRequest(wire)
    }

    private func respondLocally(
        context: ChannelHandlerContext, status: Int, message: String, headers: [HTTPField], keepAlive: Bool, log: inout HTTPRouteFront.Entry
    ) {
        let body = message + "\n"
        var head = HTTPResponseHead(version: .http1_1, status: HTTPResponseStatus(statusCode: status))
        for field in headers { head.headers.add(name: field.name, value: field.value) }
        head.headers.add(name: "content-type", value: "text/plain; charset=utf-8")
        head.headers.add(name: "content-length", value: "\(body.utf8.count)")
        if !keepAlive { head.headers.add(name: "connection", value: "close") }
        log.bytes = body.utf8.count
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: body)))), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { _ in
            if !keepAlive { context.close(promise: nil) }
        }
    }

    /// Sends a request part to the backend, or queues it while connecting.
    private func send(context: ChannelHandlerContext, _ part: HTTPClientRequestPart) {
        guard let exchange, !exchange.finished else { return }
        if case .body(.byteBuffer(let buffer)) = part, exchange.replay != nil {
            exchange.replayBytes += buffer.readableBytes
            if exchange.replayBytes > 65536 { exchange.replay = nil }
        }
        guard let backend = exchange.backend else {
            exchange.pending.append(part)
            return
        }
        exchange.replay?.append(part)
        backend.channel.write(part, promise: nil)
        flush(backend)
    }

    /// Connects to the next candidate backend (connect failures move on to the rule's
    /// other backends; 503 when none is left).
    private func connectNext(context: ChannelHandlerContext, _ exchange: Exchange, freshOnly: Bool = false) {
        guard !exchange.candidates.isEmpty else {
            fail(context: context, exchange, 503, exchange.failures.joined(separator: "\n"))
            return
        }
        let candidate = exchange.candidates[0]
        exchange.log.backend = candidate.name
        settings.pool.acquire(candidate.destination, on: context.eventLoop, fresh: freshOnly) { [self] result in
            guard !exchange.finished else {
                if case .success(let connection) = result { connection.channel.close(promise: nil) }
                return
            }
            switch result {
            case .failure(let error):
                exchange.failures.append("backend \(candidate.name) (\(candidate.destination)) unavailable: \(error)")
                exchange.candidates.removeFirst()
                connectNext(context: context, exchange)
            case .success(let connection):
                exchange.backend = connection
                connection.onPart = { [weak self] part in self?.backendRead(context: context, exchange, part) }
                connection.onClose = { [weak self] in self?.backendClosed(context: context, exchange, connection) }
                connection.onReadComplete = { context.flush() }
                let parts = exchange.pending
                exchange.pending = []
                for part in parts {
                    exchange.replay?.append(part)
                    connection.channel.write(part, promise: nil)
                }
                flush(connection)
            }
        }
    }

    private func backendRead(context: ChannelHandlerContext, _ exchange: Exchange, _ part: HTTPClientResponsePart) {
        guard !exchange.finished else { return }
        switch part {
        case .head(var head):
            if head.status.code < 200 && head.status.code != 101 { return }
            exchange.replay = nil
            exchange.backend?.reusable = head.isKeepAlive
            head.headers.remove(name: "connection")
            for name in Self.hopByHop where name != "transfer-encoding" { head.headers.remove(name: name) }
            var fields: [HTTPField] = []
            for (name, value) in head.headers { fields.append(HTTPField(name, value)) }
            for modifier in exchange.forward.responseModifiers { modifier.apply(to: &fields) }
            var out = HTTPResponseHead(version: .http1_1, status: head.status)
            for field in fields { out.headers.add(name: field.name, value: field.value) }
            if !exchange.keepAlive { out.headers.replaceOrAdd(name: "connection", value: "close") }
            exchange.log.status = Int(head.status.code)
            exchange.responded = true
            context.write(wrapOutboundOut(.head(out)), promise: nil)
        case .body(let buffer):
            exchange.log.bytes += buffer.readableBytes
            // Flushed at the end of the backend's read burst (onReadComplete) or with the end.
            context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
        case .end(let trailers):
            // Finished first: ending an HTTP/2 stream closes its channel right away.
            finish(context: context, exchange, reuseBackend: exchange.requestEnded)
            let keepAlive = exchange.keepAlive
            context.writeAndFlush(wrapOutboundOut(.end(trailers))).assumeIsolated().whenComplete { _ in
                if !keepAlive { context.close(promise: nil) }
            }
        }
    }

    private func backendClosed(context: ChannelHandlerContext, _ exchange: Exchange, _ connection: BackendConnection) {
        guard !exchange.finished, exchange.backend === connection else { return }
        if !exchange.responded, connection.reused, let replay = exchange.replay {
            // A kept-alive connection the backend had already closed: replay on a new one.
            exchange.backend = nil
            exchange.pending = replay
            exchange.replay = []
            connectNext(context: context, exchange, freshOnly: true)
            return
        }
        fail(context: context, exchange, 502, "backend \(exchange.log.backend) closed the connection without a complete response")
    }

    private func fail(context: ChannelHandlerContext, _ exchange: Exchange, _ status: Int, _ message: String) {
        exchange.log.error = message
        if !exchange.responded {
            exchange.log.status = status
            exchange.responded = true
            var log = exchange.log
            respondLocally(context: context, status: status, message: message, headers: [], keepAlive: false, log: &log)
        } else {
            context.close(promise: nil)
        }
        finish(context: context, exchange, reuseBackend: false)
    }

    private func finish(context: ChannelHandlerContext, _ exchange: Exchange, reuseBackend: Bool) {
        guard !exchange.finished else { return }
        exchange.finished = true
        exchange.timer?.cancel()
        if let backend = exchange.backend {
            backend.onPart = nil
            backend.onClose = nil
            backend.onReadComplete = nil
            if reuseBackend && backend.reusable {
                settings.pool.release(backend)
            } else {
                backend.channel.close(promise: nil)
            }
        }
        if self.exchange === exchange { self.exchange = nil }
        if !exchange.failures.isEmpty, exchange.log.error == nil { exchange.log.error = exchange.failures.joined(separator: "; ") }
        record(exchange.log)
    }

    /// Writes the access-log line and counts the request.
    private func record(_ entry: HTTPRouteFront.Entry) {
        settings.accessLog.info("request", metadata: entry.metadata(settings.listenerName, proto: proto))
        settings.counters.count(route: entry.route, status: entry.status, bytes: entry.bytes)
    }
}

extension HTTPMethod {
    /// Methods whose requests normally carry a body (chunked to the backend when the client
    /// gave no length, as HTTP/2 clients do).
    var sendsBody: Bool {
        switch self {
        case .GET, .HEAD, .DELETE, .CONNECT, .TRACE, .OPTIONS: false
        default: true
        }
    }
}

/// A kept-alive HTTP/1.1 connection to a backend, on one event loop.
final class BackendConnection {
    let channel: any Channel
    let destination: Destination
    /// Whether it came from the pool (it may have been closed by the backend meanwhile).
    var reused = false
    var reusable = true
    var onPart: ((HTTPClientResponsePart) -> Void)?
    var onClose: (() -> Void)?
    var onReadComplete: (() -> Void)?

    init(channel: any Channel, destination: Destination) {
        self.channel = channel
        self.destination = destination
    }
}

/// Delivers a backend connection's response parts to the exchange using it.
final class BackendHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPClientResponsePart
    weak var connection: BackendConnection?

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        connection?.onPart?(unwrapInboundIn(data))
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        connection?.onReadComplete?()
    }

    func channelInactive(context: ChannelHandlerContext) {
        connection?.onClose?()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}

/// Kept-alive backend connections, per event loop and destination (at most `maxIdle` idle
/// ones each). Every method runs on the event loop it is given.
///
/// New connections are dialled by `router` when there is one: a destination the node's route
/// table sends to `direct` (or a `hosts` name) is connected by NIO on the loop; one it sends
/// to another upstream (a mesh peer, `mesh:<name>`) is dialled through `Upstream.dial` and the
/// returned socket adopted as the channel, so HTTP/1.1 then runs over the peer's stream.
final class BackendPool: Sendable {
    let maxIdle: Int
    let connectTimeout: Double
    let router: Router?
    let listenerName: String
    private let perLoop: EventLoopBoundBox

    /// Idle connections of one loop.
    final class Box {
        var idle: [Destination: [BackendConnection]] = [:]
    }

    init(maxIdle: Int = 64, connectTimeout: Double = 10, router: Router? = nil, listenerName: String = "httproute") {
        self.maxIdle = maxIdle
        self.connectTimeout = connectTimeout
        self.router = router
        self.listenerName = listenerName
        perLoop = EventLoopBoundBox()
    }

    /// Calls `completion` on `loop` with a connection to `destination`: an idle one when
    /// there is one (unless `fresh`), else a new one.
    func acquire(
        _ destination: Destination, on loop: any EventLoop, fresh: Bool = false,
        _ completion: @escaping (Result<BackendConnection, any Error>) -> Void
    ) {
        let box = perLoop.box(for: loop)
        if !fresh {
            while var list = box.idle[destination], let connection = list.popLast() {
                box.idle[destination] = list
                if connection.channel.isActive {
                    connection.reused = true
                    completion(.success(connection))
                    return
                }
            }
        }
        var target = destination
        if let router {
            let info = StreamInfo(listener: listenerName, source: "httproute", destination: destination, serverName: destination.host, proto: "http/1.1")
            let decision: RouteDecision
            do {
                decision = try router.route(info)
            } catch {
                completion(.failure(error))
                return
            }
            target = decision.destination
            if !(decision.upstream is DirectUpstream) {
                let upstream = decision.upstream
                let dialTarget = target
                let dialled = Self.dial(upstream, dialTarget, for: info, on: loop, timeout: connectTimeout)
                dialled.assumeIsolated().whenComplete { result in
                    switch result {
                    case .failure(let error):
                        completion(.failure(error))
                    case .success(let fd):
                        self.connected(self.bootstrap(loop, tcp: false).withConnectedSocket(fd), destination, completion)
                    }
                }
                return
            }
        }
        connected(
            bootstrap(loop, tcp: true).connectTimeout(.milliseconds(Int64(connectTimeout * 1000))).connect(host: target.host, port: Int(target.port)),
            destination, completion)
    }

    /// `tcp`: set TCP_NODELAY (an upstream's socket may be one end of a socketpair).
    private func bootstrap(_ loop: any EventLoop, tcp: Bool) -> ClientBootstrap {
        ClientBootstrap(group: loop)
            .channelOption(.socketOption(.tcp_nodelay), value: tcp ? 1 : 0)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    try channel.pipeline.syncOperations.addHandler(BackendHandler())
                }
            }
    }

    /// Wraps a connected backend channel (on its loop) as a `BackendConnection`.
    private func connected(
        _ future: EventLoopFuture<any Channel>, _ destination: Destination, _ completion: @escaping (Result<BackendConnection, any Error>) -> Void
    ) {
        future.assumeIsolated().whenComplete { result in
            completion(
                result.flatMap { channel in
                    Result {
                        let connection = BackendConnection(channel: channel, destination: destination)
                        try channel.pipeline.syncOperations.handler(type: BackendHandler.self).connection = connection
                        return connection
                    }
                })
        }
    }

    /// Returns a connection whose exchange completed cleanly.
    func release(_ connection: BackendConnection) {
        guard connection.channel.isActive else { return }
        let box = perLoop.box(for: connection.channel.eventLoop)
        var list = box.idle[connection.destination] ?? []
        guard list.count < maxIdle else {
            connection.channel.close(promise: nil)
            return
        }
        list.append(connection)
        box.idle[connection.destination] = list
        connection.channel.closeFuture.assumeIsolated().whenComplete { _ in
            box.idle[connection.destination]?.removeAll { $0 === connection }
        }
    }

    /// RequestMirror: sends a copy of the request head to `destination` on its own new
    /// connection and ignores the answer; failures are logged at debug level only, so the
    /// mirror never slows or breaks the main request.
    func mirror(_ head: NIOHTTP1.HTTPRequestHead, to destination: Destination, on loop: any EventLoop, log: Logger) {
        var copy = head
        copy.headers.remove(name: "transfer-encoding")
        copy.headers.replaceOrAdd(name: "content-length", value: "0")
        copy.headers.replaceOrAdd(name: "connection", value: "close")
        acquire(destination, on: loop, fresh: true) { result in
            switch result {
            case .failure(let error):
                log.debug("mirror failed", metadata: ["backend": "\(destination)", "error": "\(error)"])
            case .success(let connection):
                // The closures keep the connection alive until its answer ends or it closes.
                connection.onPart = { part in
                    if case .end = part { connection.channel.close(promise: nil) }
                }
                connection.onClose = {
                    connection.onPart = nil
                    connection.onClose = nil
                }
                connection.channel.write(HTTPClientRequestPart.head(copy), promise: nil)
                connection.channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
                let channel = connection.channel
                loop.scheduleTask(in: .seconds(30)) { channel.close(promise: nil) }
            }
        }
    }
}

/// One `BackendPool.Box` per event loop, created on first use on that loop.
final class EventLoopBoundBox: @unchecked Sendable {  // boxes are only touched on their own loop; the dictionary is behind the lock
    private let lock = NSLock()
    private var boxes: [ObjectIdentifier: BackendPool.Box] = [:]

    func box(for loop: any EventLoop) -> BackendPool.Box {
        loop.preconditionInEventLoop()
        return lock.withLock {
            let key = ObjectIdentifier(loop)
            if let box = boxes[key] { return box }
            let box = BackendPool.Box()
            boxes[key] = box
            return box
        }
    }
}
