import CoreMetrics
import Logging
import NIOCore
import NIOHTTP1

/// What every exchange of a gateway listener shares.
struct RouteSettings: Sendable {
    var listenerName: String
    var defaultTimeout: Double
    /// Seconds an HTTP/1.1 connection may stay idle between requests.
    var keepAliveTimeout: Double = 60
    /// Seconds an HTTP/2 connection may stay without open streams (then GOAWAY and close).
    var http2IdleTimeout: Double = 60
    /// Seconds bytes may wait for a client's socket without any being written before the
    /// connection is closed (a client that stopped reading; `SendStall`).
    var sendTimeout: Double = 60
    /// Seconds an HTTP/2 client has to acknowledge the gateway's SETTINGS (then GOAWAY
    /// SETTINGS_TIMEOUT, RFC 9113 §6.5.3).
    var http2SettingsTimeout: Double = 10
    /// Largest request body (bytes) copied to RequestMirror backends; a request with a larger
    /// body is not mirrored (counted in `ugate_httproute_mirror_skipped_total`, logged).
    var mirrorBodyLimit: Int = 1 << 20
    /// Largest request body (bytes) kept for a replay (`retryBodyLimit`); larger bodies are
    /// never sent again.
    var replayLimit: Int = RetryRule.replayLimit
    var accessLog: Logger
    var log: Logger
    var counters: RouteCounters
    var pool: BackendPool
    /// The retry budgets of the node's routes and Services (shared by its listeners).
    var retryBudgets = RetryBudgets()
}

/// One client connection as its exchanges see it (one exchange at a time on HTTP/1.1, one per
/// stream on HTTP/2). Lives on the connection's event loop.
final class RouteConnection {
    let state: GatewayState
    let settings: RouteSettings
    let peer: String
    let proto: String
    /// The counters of the route and status counted last: a connection mostly hits one route,
    /// so the shared counter map (a lock and a hash of the label) is asked once per change.
    private var lastCounters: (key: RouteCounters.RouteStatus, counters: RouteCounters.Pair)?
    /// The backend pool's idle connections of this connection's loop, looked up once.
    private(set) lazy var idle: BackendPool.Box = settings.pool.box(for: eventLoop)
    let eventLoop: any EventLoop
    /// The weighted backend choice's generator (see `SplitMix64`).
    var random = SplitMix64(seed: UInt64.random(in: .min ... .max))
    /// The last backend request head's buffer, reused for the next request once the backend
    /// socket has written it and its exchange let it go (see `requestHeadBuffer`).
    private var spareHead: ByteBuffer?
    /// Whether the access log takes `info` lines, asked once (log levels are set when the
    /// node starts): `Logger.info` copies the handler out of the logger to ask it, per request.
    private let logsAccess: Bool

    init(state: GatewayState, settings: RouteSettings, peer: String, proto: String, eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
        self.state = state
        self.settings = settings
        self.peer = peer
        self.proto = proto
        logsAccess = settings.accessLog.logLevel <= .info
    }

    /// A buffer for a backend request head: the previous one's storage when nothing else
    /// holds it any more (one kept-alive HTTP/1.1 connection: always; concurrent HTTP/2
    /// streams: a new one), else a new one. Two allocations less per request.
    func requestHeadBuffer(_ allocator: ByteBufferAllocator) -> ByteBuffer {
        guard var reused = spareHead else { return allocator.buffer(capacity: 256) }
        spareHead = nil
        reused.clear(minimumCapacity: 256)
        return reused
    }

    /// Keeps `buffer`'s storage for the next request head.
    func keepRequestHeadBuffer(_ buffer: ByteBuffer) {
        spareHead = buffer
    }

    /// Writes the access-log line (built only when the access log's level lets `info` through)
    /// and counts the request. `inout` only so that the exchange's entry is read in place: a
    /// plain parameter made a copy of it out of the exchange (a retain per field, about 12
    /// per request); it is not changed.
    func record(_ entry: inout HTTPAccessEntry) {
        if logsAccess { settings.accessLog.info("request", metadata: entry.metadata(settings.listenerName, proto: proto)) }
        let key = RouteCounters.RouteStatus(route: entry.route, status: entry.status)
        let pair: RouteCounters.Pair
        if let last = lastCounters, last.key == key {
            pair = last.counters
        } else {
            pair = settings.counters.pair(key)
            lastCounters = (key, pair)
        }
        pair.requests.increment()
        pair.bytes.increment(by: entry.bytes)
    }

    /// What a send timeout found (`sendTimedOut`).
    enum SendStallCause {
        /// Bytes waited for the client's socket (the client stopped reading): the connection closes.
        case socket
        /// HTTP/2 DATA waited for the client's connection window: GOAWAY, the connection closes.
        case connectionWindow
        /// HTTP/2 DATA waited for the window of one stream: that stream is reset.
        case streamWindow(UInt32)
    }

    /// Nothing of the `waiting` bytes could leave for `sendTimeout` (`cause`: the client's
    /// socket, or its HTTP/2 flow-control window): each exchange of `exchanges` ends (its
    /// backend connection closed, not pooled; the access log says why), the timeout is counted
    /// (`ugate_httproute_send_timeouts_total{proto}`) and logged. The caller closes the
    /// connection, or resets the stream. Returns the access log's `error`.
    @discardableResult
    func sendTimedOut(_ exchanges: [Exchange], waiting: Int, cause: SendStallCause = .socket) -> String {
        let seconds = settings.sendTimeout
        let what: String
        var metadata: Logger.Metadata = [
            "src": .string(peer), "proto": .string(proto), "listener": .string(settings.listenerName),
            "timeout": .stringConvertible(seconds), "waiting": .stringConvertible(waiting),
        ]
        switch cause {
        case .socket: what = "the client read nothing for \(seconds) s"
        case .connectionWindow: what = "the client granted no HTTP/2 connection window for \(seconds) s"
        case .streamWindow(let id):
            what = "the client granted no HTTP/2 stream window for \(seconds) s"
            metadata["stream"] = .stringConvertible(id)
        }
        let error = "send timeout: " + what
        for exchange in exchanges { exchange.clientStalled(error) }
        settings.counters.sendTimedOut(proto: proto)
        metadata["cause"] = .string(what)
        if case .streamWindow = cause {
            settings.log.info("HTTP/2 stream reset: send timeout", metadata: metadata)
        } else {
            settings.log.info("client connection closed: send timeout", metadata: metadata)
        }
        return error
    }
}

/// SplitMix64 (Steele, Lea, Flood: "Fast splittable pseudorandom number generators", 2014),
/// seeded once per connection from the system generator. Hand-written for the hot path:
/// `SystemRandomNumberGenerator` costs a `getrandom` system call per number on Linux, one per
/// request for the weighted backend choice; a traffic split needs uniformity, not secrecy.
struct SplitMix64: RandomNumberGenerator {
    private var state: UInt64

    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// The access-log fields of one request (`ugate.httproute.access`).
struct HTTPAccessEntry {
    var method: String
    var host: String
    var path: String
    var started: UInt64
    var route = "-"
    var backend = "-"
    var status = 0
    var bytes = 0
    var error: String?
    /// Times the request was sent to a backend again (`RetryRule`).
    var retries = 0
    /// The backends tried before `backend` (connect failures, retries), in order.
    var tried: [String] = []

    func metadata(_ listener: String, proto: String) -> Logger.Metadata {
        var m: Logger.Metadata = [
            "listener": .string(listener), "proto": .string(proto), "method": .string(method), "host": .string(host), "path": .string(path),
            "route": .string(route), "backend": .string(backend), "status": .stringConvertible(status), "bytes": .stringConvertible(bytes),
            "ms": .stringConvertible(GateLoop.monotonicMillis() - started),
        ]
        if let error { m["error"] = .string(error) }
        if retries > 0 { m["retries"] = .stringConvertible(retries) }
        if !tried.isEmpty { m["tried"] = .string(tried.joined(separator: ",")) }
        return m
    }
}

/// What `Exchange` reads from a request head: NIO's `HTTPRequestHead` (HTTP/2 streams convert
/// their HEADERS to one) or `HTTP1Request` (the HTTP/1.1 decoder's: found in its one pass over
/// the fields, no `HTTPHeaders` or NIO head per request).
protocol ExchangeHead {
    var method: HTTPMethod { get }
    var uri: String { get }
    var isHTTP11: Bool { get }
    /// Whether the client keeps the connection open after the response (RFC 9112 §9.3).
    var isKeepAlive: Bool { get }
    /// The first `Content-Length` value.
    var contentLength: String? { get }
    var hasTransferEncoding: Bool { get }
    /// `Expect: 100-continue` (RFC 9110 §10.1.1).
    var expectsContinue: Bool { get }
    var hasHost: Bool { get }
    var fieldCount: Int { get }
    /// The head's size in bytes, at least request target, method and fields (431 above 16 KiB).
    var headSize: Int { get }
    /// What is wrong with the `HTTP2-Settings` of a request asking for `Upgrade: h2c`.
    var h2cSettingsProblem: String? { get }
}

extension NIOHTTP1.HTTPRequestHead: ExchangeHead {
    var isHTTP11: Bool { version == .http1_1 }
    var contentLength: String? { headers.first(name: "content-length") }
    var hasTransferEncoding: Bool { headers.contains(name: "transfer-encoding") }
    var expectsContinue: Bool {
        headers.contains(name: "expect") && headers[canonicalForm: "expect"].contains { $0.lowercased() == "100-continue" }
    }
    var hasHost: Bool { headers.contains(name: "host") }
    var fieldCount: Int { headers.count }
    var headSize: Int {
        var size = uri.utf8.count + method.rawValue.utf8.count + 12
        for (name, value) in headers { size += name.utf8.count + value.utf8.count + 4 }
        return size
    }
    var h2cSettingsProblem: String? { H2CUpgrader.settingsProblem(headers) }
}

/// Where an exchange's response goes: an HTTP/1.1 connection or one HTTP/2 stream. Every
/// method runs on `eventLoop`.
protocol ExchangeClient: AnyObject {
    var connection: RouteConnection { get }
    var eventLoop: any EventLoop { get }
    var allocator: ByteBufferAllocator { get }
    /// Whether a chunked backend body is wanted as its data (HTTP/2) rather than as received.
    var decodesChunks: Bool { get }
    /// A local answer's head (404, redirects, errors, `100 Continue`).
    func respondHead(_ head: HTTPResponseHead)
    /// The backend's response head (hop-by-hop fields still in it), its body to follow as
    /// the reader delivers it; `raw`: the head's bytes as received, when `head` is unmodified;
    /// `close`: the client connection closes after the response.
    func relayHead(_ head: HTTP1ResponseHead, raw: ByteBuffer?, close: Bool)
    func respondBody(_ buffer: ByteBuffer)
    /// Ends the response and flushes it; `close`: close the connection afterwards (HTTP/1.1).
    func respondEnd(_ trailers: HTTPHeaders?, close: Bool)
    /// Sends what was written (the end of a backend read burst).
    func flushResponse()
    /// The response had already started when the exchange failed: cut it off.
    func abortResponse()
    /// The exchange is over (answered, failed or abandoned).
    func exchangeFinished(_ exchange: Exchange)
    /// Writes the finished exchange's access-log line and counts it (`RouteConnection.record`):
    /// at once, or — an HTTP/2 stream whose response waits for the client's window — when
    /// its response has really left or the stream ended otherwise.
    func record(_ exchange: Exchange)
    /// `exchange` wrote to its backend: flush it at the end of the client's read burst (so the
    /// head and end of a request leave in one syscall), or now when no burst is under way.
    func backendNeedsFlush(_ exchange: Exchange)
    /// Calls `exchange.timedOut()` once its `deadline` has passed (unless it finished).
    func watchDeadline(_ exchange: Exchange)
}

extension ExchangeClient {
    func record(_ exchange: Exchange) {
        exchange.clientConnection.record(&exchange.log)
    }
}

/// One timer per client connection for the deadlines of its exchanges, instead of a timer
/// scheduled and cancelled per request (NIO cancels a scheduled task with a linear search of
/// the loop's task queue): it fires at the earliest deadline it was asked for, times out
/// the exchanges whose deadline passed and re-arms for the next one, so a busy kept-alive
/// connection arms about one timer per request timeout (30 s by default), not per request.
final class DeadlineTimer {
    private let eventLoop: any EventLoop
    private var scheduled: Scheduled<Void>?
    private var firesAt: NIODeadline?
    /// The exchanges to check when the timer fires.
    private let exchanges: () -> [Exchange]

    init(eventLoop: any EventLoop, exchanges: @escaping () -> [Exchange]) {
        self.eventLoop = eventLoop
        self.exchanges = exchanges
    }

    func watch(_ deadline: NIODeadline) {
        if let firesAt, firesAt <= deadline { return }
        scheduled?.cancel()
        arm(deadline)
    }

    private func arm(_ deadline: NIODeadline) {
        firesAt = deadline
        scheduled = eventLoop.assumeIsolated().scheduleTask(deadline: deadline) { [weak self] in self?.fired() }
    }

    private func fired() {
        firesAt = nil
        scheduled = nil
        let now = NIODeadline.now()
        var next: NIODeadline?
        for exchange in exchanges() where !exchange.finished {
            // A try's deadline that passed may leave the exchange going with a later one.
            if exchange.deadline <= now { exchange.timedOut() }
            if !exchange.finished, exchange.deadline > now, next == nil || exchange.deadline < next! {
                next = exchange.deadline
            }
        }
        // `timedOut` may have armed the timer already (a retry watching its try's deadline).
        if let next { watch(next) }
    }

    /// Stops the timer (the connection closed).
    func cancel() {
        scheduled?.cancel()
        scheduled = nil
        firesAt = nil
    }
}

/// Receives a backend connection's response.
protocol BackendDelegate: AnyObject {
    func backendRead(_ event: BackendResponseReader.Event)
    func backendReadComplete()
    /// The backend's bytes are not a valid response (the connection is being closed).
    func backendFailed(_ message: String)
    func backendClosed(_ connection: BackendConnection)
}

/// One request being served, for any client protocol: decided with the route table, answered
/// locally (404, redirects, 500, refusals) or forwarded to a pooled backend connection with
/// bodies streamed both ways; copies go to the RequestMirror backends.
final class Exchange: BackendDelegate {
    let client: any ExchangeClient
    /// `client.connection`, kept: asking the existential for it costs a witness call and a
    /// retain each time (several times per request: pool, counters, settings).
    let clientConnection: RouteConnection
    var log: HTTPAccessEntry
    let forward: RouteAction.Forward
    /// The request's method (the backend's response to HEAD has no body).
    let method: String
    /// Whether the client connection stays open after this response.
    var keepAlive: Bool
    /// The backend in use (a `RetryRule` candidate): 0 is `forward.backend`, i is `forward.fallbacks[i - 1]`.
    var candidate = 0
    var backend: BackendConnection?
    /// The backend request head: written first on every connection the request is sent on
    /// (a retry sends it again), let go once the response head has arrived (its storage is
    /// then reused for the next head, `RouteConnection.requestHeadBuffer`). Kept apart from
    /// the body parts: in an array with them it cost an array allocation per request.
    var requestHead: ByteBuffer?
    /// Request body bytes not yet sent (while connecting).
    var pending: [ByteBuffer] = []
    /// Called once the `pending` body bytes they came with are written to the backend socket
    /// (HTTP/2 flow-control credit; see `requestPart`).
    var pendingWritten: [() -> Void] = []
    /// Every request body byte sent so far while they are few (`RouteSettings.replayLimit`), so
    /// the request can be sent again after its head (a stale pooled connection, the rule's
    /// `retry`); nil beyond.
    var replay: [ByteBuffer]? = []
    var replayBytes = 0
    /// Whether and when the request is sent again.
    var retries: RetryRule
    /// The request body goes to the backend in chunked coding (no Content-Length known).
    var chunkedUpstream = false
    var requestEnded = false
    var responded = false
    /// The backend's response has ended: all of it was handed to the client.
    private(set) var responseComplete = false
    var finished = false
    /// Set while `fail` writes a local answer or cuts a response off (see `clientGone`).
    var answeringLocally = false
    /// The rule's deadline (504 after it) and the current try's (`timeouts.backendRequest`:
    /// retried with the rule's `retry`, else 504; none while a retry waits for its backoff).
    var requestDeadline = NIODeadline.distantFuture
    var attemptDeadline = NIODeadline.distantFuture
    /// The earlier of the two, watched by the client's `DeadlineTimer`.
    var deadline: NIODeadline { min(requestDeadline, attemptDeadline) }
    /// Tries begun (a connect's result for an older try is dropped).
    private var attempt = 0
    var failures: [String] = []
    /// The retry budget of an `XBackendTrafficPolicy` refused a retry: the client gets 503
    /// (GEP-3388), whatever the failed try answered.
    private var policyRefused = false
    /// The request fields for RequestMirror backends and the request body so far (nil: no
    /// mirror, or the body outgrew `mirrorBodyLimit`).
    var mirrorFields: [HTTPField]?
    var mirrorBody: [ByteBuffer] = []
    var mirrorBytes = 0

    private init(client: any ExchangeClient, connection: RouteConnection, log: HTTPAccessEntry, forward: RouteAction.Forward, method: String, keepAlive: Bool) {
        self.client = client
        clientConnection = connection
        self.log = log
        self.forward = forward
        self.method = method
        self.keepAlive = keepAlive
        retries = RetryRule(policy: forward.retry, method: method, headers: forward.headers)
    }

    /// Serves a request head: answers it locally (nil) or starts forwarding it. The returned
    /// exchange may already be finished (a backend refused synchronously).
    /// `request`: the route-table view, which the callers build while they collect the fields.
    /// (Not optional: `request ?? head.routeRequest()` copied the view, a retain per field.)
    /// `keepAlive`: false when the connection closes after this response whatever the head says.
    static func begin(_ head: some ExchangeHead, client: any ExchangeClient, http1: Bool, request: RouteRequest, keepAlive: Bool = true) -> Exchange? {
        let connection = client.connection
        var log = HTTPAccessEntry(method: request.method, host: request.host, path: request.path, started: GateLoop.monotonicMillis())
        var keepAlive = keepAlive && head.isKeepAlive
        let local: (status: Int, message: String, headers: [HTTPField])
        if let refusal = check(head, http1: http1, plain: connection.proto == "http/1.1") {
            // A request the gateway will not route: answered and the connection closed.
            local = (refusal.status, refusal.message, [])
            keepAlive = false
        } else {
            switch connection.state.decide(request, route: &log.route, using: &connection.random) {
            case .local(let status, let message, let headers):
                local = (status, message, headers)
            case .forward(let forward):
                // `consume`: the entry moves into the exchange (a copy retained each of its strings).
                let exchange = Exchange(client: client, connection: connection, log: consume log, forward: forward, method: request.method, keepAlive: keepAlive)
                exchange.start(head)
                return exchange
            }
        }
        log.status = local.status
        respondLocally(client, status: local.status, message: local.message, headers: local.headers, keepAlive: keepAlive, bodyless: head.method == .HEAD, log: &log)
        connection.record(&log)
        return nil
    }

    /// The limits of the gateway's own HTTP/1.1 parser (`HTTPHeadLimits`): head size and
    /// field count (431), origin-form target (400), `Host` required in HTTP/1.1 (400), a
    /// malformed `HTTP2-Settings` on an `Upgrade: h2c` request in the clear (`plain`; over TLS
    /// h2c is ignored, RFC 7540 §3.2) (400).
    static func check(_ head: some ExchangeHead, http1: Bool, plain: Bool = true) -> (status: Int, message: String)? {
        let limits = HTTPHeadLimits()
        if head.headSize > limits.maxHeadBytes || head.fieldCount > limits.maxHeaderCount {
            return (431, "request head larger than \(limits.maxHeadBytes) bytes or \(limits.maxHeaderCount) fields")
        }
        guard http1 else { return nil }
        if !head.uri.hasPrefix("/") { return (400, "request-target \(head.uri) is not origin-form (/path)") }
        if head.isHTTP11 && !head.hasHost { return (400, "HTTP/1.1 request without Host") }
        if plain, let problem = head.h2cSettingsProblem { return (400, problem) }
        return nil
    }

    /// `bodyless`: the answer to a HEAD request (its head announces the body, which is left out).
    static func respondLocally(
        _ client: any ExchangeClient, status: Int, message: String, headers: [HTTPField], keepAlive: Bool, bodyless: Bool = false,
        log: inout HTTPAccessEntry
    ) {
        let body = message + "\n"
        var head = HTTPResponseHead(version: .http1_1, status: HTTPResponseStatus(statusCode: status))
        for field in headers { head.headers.add(name: field.name, value: field.value) }
        head.headers.add(name: "content-type", value: "text/plain; charset=utf-8")
        head.headers.add(name: "content-length", value: String(body.utf8.count))
        if !keepAlive { head.headers.add(name: "connection", value: "close") }
        client.respondHead(head)
        if !bodyless {
            log.bytes = body.utf8.count
            client.respondBody(client.allocator.buffer(string: body))
        }
        client.respondEnd(nil, close: !keepAlive)
    }

    /// Starts forwarding: serializes the backend's request head, connects (or takes a pooled
    /// connection), arms the rule's deadline and prepares the mirrors' copy.
    private func start(_ head: some ExchangeHead) {
        let length = head.contentLength
        // Announced trailers travel only after a chunked body (`RequestTrailers`).
        let trailing = length != nil && RequestTrailers.announced(forward.headers)
        chunkedUpstream = head.hasTransferEncoding || (length == nil && head.method.sendsBody) || trailing
        var bytes = clientConnection.requestHeadBuffer(client.allocator)
        do {
            try BackendWire.requestHead(
                method: method, target: forward.target, fields: trailing ? RequestTrailers.withoutLength(forward.headers) : forward.headers,
                extra: chunkedUpstream ? [HTTPField("transfer-encoding", "chunked")] : [], into: &bytes)
        } catch {
            keepAlive = false
            fail(400, "request cannot be forwarded: \(error)")
            return
        }
        clientConnection.keepRequestHeadBuffer(bytes)
        requestHead = bytes
        // `Expect: 100-continue` (RFC 9110 §10.1.1): the request is routed and will be
        // forwarded, so the HTTP/1.1 client gets its `100 Continue` now and the backend never
        // sees the expectation (as nginx does). Relaying the backend's own 100 instead would
        // stall clients whose backend ignores `Expect` until their expect timeout.
        if head.isHTTP11, !requestEnded, head.expectsContinue {
            client.respondHead(HTTPResponseHead(version: .http1_1, status: .continue))
            client.flushResponse()
        }
        requestDeadline = .now() + .milliseconds(Int64((forward.timeout ?? clientConnection.settings.defaultTimeout) * 1000))
        client.watchDeadline(self)
        if forward.retry != nil { clientConnection.settings.retryBudgets.request(forward.route) }
        // Read in place (a copy of the backend retains its strings).
        if let constraint = forward.rule.backends[forward.backendIndex].retryConstraint {
            clientConnection.settings.retryBudgets.request(RetryBudgets.serviceKey(forward.backend), constraint)
        }
        if !forward.mirrors.isEmpty {
            let limit = clientConnection.settings.mirrorBodyLimit
            if let length, let size = Int(length), size > limit {
                skipMirrors("request body of \(size) bytes is larger than the mirror limit of \(limit) bytes")
            } else {
                mirrorFields = forward.headers
            }
        }
        connect()
    }

    /// A request body part or its end, from the client. `written` is called once the part has
    /// been written to the backend socket (or will never be: the exchange ended), which is
    /// when an HTTP/2 stream gives the client its flow-control credit back.
    func requestPart(_ part: HTTPClientRequestPart, written: (() -> Void)? = nil) {
        guard !finished else {
            written?()
            return
        }
        switch part {
        case .body(.byteBuffer(let buffer)):
            guard buffer.readableBytes > 0 else {
                written?()
                return
            }
            if replay != nil {
                replayBytes += buffer.readableBytes
                if replayBytes > clientConnection.settings.replayLimit { replay = nil }
            }
            if mirrorFields != nil {
                mirrorBytes += buffer.readableBytes
                let limit = clientConnection.settings.mirrorBodyLimit
                if mirrorBytes > limit {
                    skipMirrors("request body larger than the mirror limit of \(limit) bytes")
                } else {
                    mirrorBody.append(buffer)
                }
            }
            if chunkedUpstream {
                var size = client.allocator.buffer(capacity: 18)
                BackendWire.chunkHeader(buffer.readableBytes, into: &size)
                send(size)
                send(buffer, written: written)
                send(client.allocator.buffer(staticString: "\r\n"))
            } else {
                send(buffer, written: written)
            }
        case .end(let trailers):
            requestEnded = true
            sendMirrors()
            if chunkedUpstream {
                var last = client.allocator.buffer(staticString: "0\r\n")
                for (name, value) in trailers ?? [:] {
                    try? BackendWire.writeField(HTTPField(name, value), into: &last)
                }
                last.writeStaticString("\r\n")
                send(last)
            }
        default:
            written?()
        }
    }

    /// Writes request bytes to the backend (or keeps them until it is connected); `written`
    /// is called once they are in the backend socket.
    private func send(_ bytes: ByteBuffer, written: (() -> Void)? = nil) {
        guard let backend else {
            pending.append(bytes)
            if let written { pendingWritten.append(written) }
            return
        }
        replay?.append(bytes)
        backend.write(bytes, written: written)
        client.backendNeedsFlush(self)
    }

    /// Flushes the backend connection (see `ExchangeClient.backendNeedsFlush`).
    func flushBackend() {
        backend?.flush()
    }

    /// A deadline passed without a complete response: the try's (`timeouts.backendRequest`)
    /// is retried when the rule's `retry` allows it (before the response head only), else, and
    /// for the rule's own, 504.
    func timedOut() {
        guard !finished else { return }
        let now = NIODeadline.now()
        if let perTry = forward.attemptTimeout, attemptDeadline <= now, requestDeadline > now {
            attemptDeadline = .distantFuture
            let message = "backend \(log.backend) did not respond within \(perTry) s (timeouts.backendRequest)"
            if !responded {
                failures.append(message)
                let decision = retries.attemptTimedOut(replayable: replay != nil, weights: candidateWeights, using: &clientConnection.random)
                if resend(decision, reason: .timeout) { return }
            }
            fail(policyRefused ? 503 : 504, failures.isEmpty || responded ? message : failures.joined(separator: "\n"))
            return
        }
        let timeout = forward.timeout ?? clientConnection.settings.defaultTimeout
        fail(504, "backend \(log.backend) did not respond within \(timeout) s")
    }

    /// The client took none of its response for `sendTimeout` (its socket or its HTTP/2
    /// window; `reason` says which): the exchange ends with the cause in the access log, its
    /// backend connection closed.
    func clientStalled(_ reason: String) {
        guard !finished else { return }
        log.error = reason
        finish(reuseBackend: false)
    }

    /// The client connection or stream went away.
    func clientGone() {
        // `fail` closes the client after a local answer, which can call back here at once:
        // the failure's own cause stays in the access log, and `fail` finishes the exchange.
        guard !finished, !answeringLocally else { return }
        log.error = "client went away"
        finish(reuseBackend: false)
    }

    /// The whole request is in: each mirror backend gets the head (with the body's
    /// `Content-Length`, `Connection: close`) and body on a connection of its own (fire and
    /// forget; the primary request never waits for it).
    private func sendMirrors() {
        guard let fields = mirrorFields else { return }
        mirrorFields = nil
        let body = mirrorBody
        mirrorBody = []
        let settings = clientConnection.settings
        var head = client.allocator.buffer(capacity: 256)
        let copied = fields.filter { !$0.name.equalsIgnoringASCIICase("content-length") }
        do {
            try BackendWire.requestHead(
                method: method, target: forward.target, fields: copied,
                extra: [HTTPField("content-length", String(mirrorBytes)), HTTPField("connection", "close")], into: &head)
        } catch {
            return
        }
        for mirror in forward.mirrors {
            settings.pool.mirror(head, method: method, body: body, to: mirror.destination, on: client.eventLoop, log: settings.log)
        }
    }

    private func skipMirrors(_ reason: String) {
        mirrorFields = nil
        mirrorBody = []
        let settings = clientConnection.settings
        settings.counters.mirrorSkipped(route: forward.route)
        settings.log.info("request not mirrored", metadata: ["route": .string(forward.route), "reason": .string(reason)])
    }

    /// Connects to the `candidate` backend (a connect failure asks `RetryRule` where to go
    /// next: another backend, or with the rule's `retry` the same after its backoff; 503 when
    /// it gives up).
    private func connect(freshOnly: Bool = false) {
        attempt += 1
        let current = attempt
        if let perTry = forward.attemptTimeout {
            attemptDeadline = .now() + .milliseconds(Int64(perTry * 1000))
            client.watchDeadline(self)
        }
        let destination: Destination
        if candidate == 0 {
            log.backend = forward.backend.name
            destination = forward.backend.destination
        } else {
            let fallback = forward.fallbacks[candidate - 1]
            log.backend = fallback.name
            destination = fallback.destination
        }
        let pool = clientConnection.settings.pool
        // A kept-alive connection is taken at once, without the callback's closure.
        if !freshOnly, let connection = pool.takeIdle(destination, idle: clientConnection.idle) {
            attach(connection)
            return
        }
        pool.acquire(destination, on: client.eventLoop, idle: clientConnection.idle, fresh: true) { [self] result in
            guard !finished, attempt == current else {
                if case .success(let connection) = result { connection.close() }
                return
            }
            switch result {
            case .failure(let error):
                failures.append("backend \(log.backend) (\(destination)) unavailable: \(error)")
                let decision = retries.connectFailed(weights: candidateWeights, using: &clientConnection.random)
                guard retry(decision, reason: .connect) else {
                    fail(503, failures.joined(separator: "\n"))
                    return
                }
            case .success(let connection):
                attach(connection)
            }
        }
    }

    /// Uses `connection` for this exchange: writes what waited for it.
    private func attach(_ connection: BackendConnection) {
        backend = connection
        connection.delegate = self
        // The response head's fields are read only by an HTTP/2 client and by response
        // modifiers; an HTTP/1.1 client is relayed the head's bytes.
        connection.expectResponse(
            method: method, decodeChunks: client.decodesChunks, keepsFields: client.decodesChunks || !forward.responseModifiers.isEmpty)
        if let requestHead { connection.write(requestHead, written: nil) }
        let parts = pending
        pending = []
        // Shared with `pending`'s storage until a body part follows (no copy per request).
        if let sent = replay { replay = sent.isEmpty ? parts : sent + parts }
        if pendingWritten.isEmpty {
            for index in parts.indices { connection.write(parts[index], written: nil) }
        } else {
            let written = pendingWritten
            pendingWritten = []
            for index in parts.indices {
                // Writes complete in order: the last one's promise releases every credit.
                connection.write(parts[index], written: index == parts.count - 1 ? { written.forEach { $0() } } : nil)
            }
        }
        client.backendNeedsFlush(self)
    }

    func backendRead(_ event: BackendResponseReader.Event) {
        guard !finished else { return }
        switch event {
        case .head(var head, let framing, let backendKeepsAlive, let raw):
            if forward.retry != nil,
                resend(
                    retries.responded(status: head.status, replayable: replay != nil, weights: candidateWeights, using: &clientConnection.random),
                    reason: .status)
            {
                return
            }
            if policyRefused {
                fail(503, (["backend \(log.backend) answered \(head.status)"] + failures).joined(separator: "; "))
                return
            }
            replay = nil
            requestHead = nil
            backend?.reusable = backendKeepsAlive
            // A body delimited by the backend's close is relayed the same way.
            if framing == .untilClose { keepAlive = false }
            // Applied to the backend's fields as received: the client side then leaves out the
            // hop-by-hop ones (and those the backend's `Connection` names).
            for modifier in forward.responseModifiers { modifier.apply(to: &head.headers) }
            log.status = head.status
            responded = true
            client.relayHead(head, raw: forward.responseModifiers.isEmpty ? raw : nil, close: !keepAlive)
        case .body(let buffer):
            // Flushed at the end of the backend's read burst (backendReadComplete) or with the end.
            client.respondBody(buffer)
        case .end(let bodyBytes):
            log.bytes = bodyBytes
            // A decoded chunked body's trailers (HTTP/2 clients: a trailing HEADERS frame).
            let trailers = backend?.reader.takeTrailers()
            responseComplete = true
            // Finished first: ending the response may deliver the client's next request.
            finish(reuseBackend: requestEnded)
            client.respondEnd(trailers, close: !keepAlive)
        case .needMore:
            break
        }
    }

    func backendFailed(_ message: String) {
        guard !finished else { return }
        fail(502, "backend \(log.backend): \(message)")
    }

    func backendReadComplete() {
        client.flushResponse()
    }

    func backendClosed(_ connection: BackendConnection) {
        guard !finished, backend === connection else { return }
        // A kept-alive connection the backend had already closed (or the rule's `retry`).
        if !responded {
            let stale = connection.reused && !retries.staleRetried
            let decision = retries.connectionLost(
                reused: connection.reused, replayable: replay != nil, weights: candidateWeights, using: &clientConnection.random)
            if resend(decision, reason: stale ? .stale : .connection) { return }
        }
        let why = responded || retries.idempotent ? "" : " (not retried: \(method) is not idempotent)"
        fail(policyRefused ? 503 : 502, "backend \(log.backend) closed the connection without a complete response" + why)
    }

    /// The backend of `RetryRule` candidate `index` (see `candidate`), nil beyond the fallbacks.
    private func candidateBackend(_ index: Int) -> RouteBackend? {
        guard index > 0 else { return forward.backend }
        let fallbacks = forward.fallbacks
        return index <= fallbacks.count ? fallbacks[index - 1] : nil
    }

    /// The weights of the `RetryRule` candidates (`forward.backend`, then `forward.fallbacks`).
    private var candidateWeights: [Int] { [forward.backend.weight] + forward.fallbacks.map(\.weight) }

    /// Sends the request again when `decision` says so: the backend connection is dropped
    /// (closed: a retried response is discarded) and the request goes where `retry` says, with
    /// its head and every body byte sent so far; body parts that arrive meanwhile wait in `pending`. False: not
    /// retried.
    private func resend(_ decision: RetryRule.Decision, reason: RetryRule.Reason) -> Bool {
        guard case .retry = decision, let sent = replay, withinBudget(decision) else { return false }
        attemptDeadline = .distantFuture
        if let backend {
            backend.delegate = nil
            backend.close()
            self.backend = nil
        }
        pending = sent + pending
        replay = []
        return go(decision, reason: reason)
    }

    /// A retry decision after a connect failure: `go`, unless the route's budget refuses it.
    private func retry(_ decision: RetryRule.Decision, reason: RetryRule.Reason) -> Bool {
        guard case .retry = decision, withinBudget(decision) else { return false }
        attemptDeadline = .distantFuture
        return go(decision, reason: reason)
    }

    /// Whether the retry budget lets the last decision go: asked only for a retry of the rule's
    /// `retry` (`RetryRule.isPolicyRetry`). The budget is the one of the Service the retry goes
    /// to when an `XBackendTrafficPolicy` targets it (a refusal then answers 503, as GEP-3388
    /// asks), else the route's. A refusal is counted (`ugate_httproute_retries_refused_total`)
    /// and named in the access log.
    private func withinBudget(_ decision: RetryRule.Decision) -> Bool {
        guard retries.isPolicyRetry, case .retry(_, _, let next) = decision else { return true }
        let settings = clientConnection.settings
        if let target = candidateBackend(next), let constraint = target.retryConstraint {
            guard settings.retryBudgets.retry(RetryBudgets.serviceKey(target), constraint) else {
                settings.counters.retryRefused(route: forward.route)
                failures.append("retry refused: the retry budget of Service \(target.namespace)/\(target.service) is spent")
                policyRefused = true
                return false
            }
            return true
        }
        guard settings.retryBudgets.retry(forward.route) else {
            settings.counters.retryRefused(route: forward.route)
            failures.append("retry refused: the route's retry budget is spent")
            return false
        }
        return true
    }

    /// Connects to the decision's backend after its delay (a new connection when `fresh`),
    /// counting the retry (access log `retries`, `tried`; `ugate_httproute_retries_total`).
    /// False: the decision gives up.
    private func go(_ decision: RetryRule.Decision, reason: RetryRule.Reason) -> Bool {
        guard case .retry(let delay, let fresh, let next) = decision, next <= forward.fallbacks.count else { return false }
        log.tried.append(log.backend)
        log.retries = retries.total
        clientConnection.settings.counters.retried(route: forward.route, reason: reason.rawValue)
        candidate = next
        guard delay > 0 else {
            connect(freshOnly: fresh)
            return true
        }
        _ = client.eventLoop.assumeIsolated().scheduleTask(in: .milliseconds(Int64(delay * 1000))) { [self] in
            guard !finished, backend == nil else { return }
            connect(freshOnly: fresh)
        }
        return true
    }

    private func fail(_ status: Int, _ message: String) {
        log.error = message
        if !responded {
            log.status = status
            responded = true
            var local = log
            answeringLocally = true
            Self.respondLocally(client, status: status, message: message, headers: [], keepAlive: false, log: &local)
            answeringLocally = false
            log.bytes = local.bytes
        } else {
            // Closing the client calls back (`clientGone`) at once: the cause stays logged.
            answeringLocally = true
            client.abortResponse()
            answeringLocally = false
        }
        finish(reuseBackend: false)
    }

    private func finish(reuseBackend: Bool) {
        guard !finished else { return }
        finished = true
        // Emptied only when they hold something: storing `[]` over an empty array still
        // retains and releases the empty-array storage, several runtime calls per request.
        if mirrorFields != nil { mirrorFields = nil }
        if !mirrorBody.isEmpty { mirrorBody = [] }
        if requestHead != nil { requestHead = nil }
        if !pendingWritten.isEmpty {
            let written = pendingWritten
            pendingWritten = []
            written.forEach { $0() }
        }
        if let backend {
            backend.delegate = nil
            if reuseBackend && backend.reusable {
                clientConnection.settings.pool.release(backend, idle: clientConnection.idle)
            } else {
                backend.close()
            }
        }
        if !failures.isEmpty, log.error == nil { log.error = failures.joined(separator: "; ") }
        client.record(self)
        client.exchangeFinished(self)
    }
}

/// Hop-by-hop fields (RFC 9110 §7.6.1, plus `proxy-connection`, HTTP/2's `http2-settings`
/// and `expect`, which the gateway answers itself — see `Exchange.start`), compared without
/// allocating: this runs for every field of every request and response. `Trailer` is not one
/// (RFC 9110 §6.6.2: it announces the trailer fields end to end; RFC 2616 had listed it), so a
/// response's `Trailer` reaches HTTP/2 clients with the trailers it announces.
enum HopByHop {
    static func contains(_ name: String) -> Bool {
        switch name.utf8.count {
        case 2, 6, 7, 10, 14, 16, 17: return utf8Bytes(of: name) { contains(bytes: $0) }
        default: return false
        }
    }

    /// `contains` for a name's bytes (a field line in a received head).
    static func contains(bytes: UnsafeBufferPointer<UInt8>) -> Bool {
        switch bytes.count {
        case 2: return equal(bytes, "te")
        case 6: return equal(bytes, "expect")
        case 7: return equal(bytes, "upgrade")
        case 10: return equal(bytes, "connection") || equal(bytes, "keep-alive")
        case 14: return equal(bytes, "http2-settings")
        case 16: return equal(bytes, "proxy-connection")
        case 17: return equal(bytes, "transfer-encoding")
        default: return false
        }
    }

    static func isTransferEncoding(_ name: String) -> Bool {
        named(name, "transfer-encoding")
    }

    static func isTransferEncoding(bytes: UnsafeBufferPointer<UInt8>) -> Bool {
        bytes.count == 17 && equal(bytes, "transfer-encoding")
    }

    /// Whether `name` is `lower` (a lower-case literal) ignoring ASCII case, without allocating.
    static func named(_ name: String, _ lower: StaticString) -> Bool {
        name.utf8.count == lower.utf8CodeUnitCount && utf8Bytes(of: name) { equal($0, lower) }
    }

    /// ASCII case-insensitive comparison with a lower-case literal (false for another length).
    static func equal(_ bytes: UnsafeBufferPointer<UInt8>, _ lower: StaticString) -> Bool {
        guard bytes.count == lower.utf8CodeUnitCount else { return false }
        let other = lower.utf8Start
        for i in 0..<bytes.count where bytes[i] | 0x20 != other[i] | 0x20 { return false }
        return true
    }
}

/// Calls `body` with the UTF-8 bytes of `text` in place. `String.withUTF8` is mutating: called
/// on a copy (`var copy = text`) it costs a retain and release per call, and these checks run
/// for every field of every request and response; a native string's bytes are read directly.
@inline(__always)
func utf8Bytes<R>(of text: String, _ body: (UnsafeBufferPointer<UInt8>) throws -> R) rethrows -> R {
    if let result = try text.utf8.withContiguousStorageIfAvailable(body) { return result }
    var copy = text
    return try copy.withUTF8(body)
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
