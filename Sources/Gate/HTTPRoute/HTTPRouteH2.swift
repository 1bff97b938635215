import NIOCore
import NIOHPACK
import NIOHTTP1
import NIOHTTP2

/// Serves every stream of one HTTP/2 connection: the bytes go through the gateway's own
/// `HTTP2ServerCodec` (frames, SETTINGS, PING, GOAWAY, stream states, flow control; HPACK by
/// NIOHPACK), whose events become exchanges, and the responses are written back through it —
/// every frame written between two flushes in one buffer, one `write` per flush.
///
/// Hand-written on purpose instead of `NIOHTTP2Handler` and NIO's stream multiplexer: the
/// multiplexer creates a child channel (a pipeline, promises, an HTTP/2 ↔ HTTP/1 codec) per
/// stream, which cost more than the proxying itself under load, and `NIOHTTP2Handler` copied
/// its state machines per frame, boxed every frame as `NIOAny` and fired several user events
/// per stream (about 14 % of the CPU time per request; see `HTTP2ServerCodec`). Here a stream
/// is a small `HTTP2RouteStream` in a sorted table, its request head is converted once to the
/// HTTP/1 head `Exchange` works with, and the responses written while the loop handles one
/// batch of events leave with one flush.
///
/// Inbound flow control with backpressure: a stream's request body credit goes back to the
/// client (`WINDOW_UPDATE` once half a default window has accumulated) only as its bytes are
/// written to the backend socket, so a slow backend slows the uploading client down instead of
/// its body piling up here: at most one stream window (64 KiB) per stream waits in the
/// gateway. The connection's window is credited on receipt by the codec — holding it back
/// would stall every other stream of the connection behind a slow one — so a connection holds
/// at most `SETTINGS_MAX_CONCURRENT_STREAMS` (100) × 64 KiB.
///
/// The idle timeout and the graceful close on drain (`HTTP2IdleHandler`) are driven from
/// here: streams opened and closed, the PING ACK, `ChannelShouldQuiesceEvent`.
final class HTTP2RouteHandler: RouteClientHandler, ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// Consumed DATA bytes after which a `WINDOW_UPDATE` is sent (half the default window).
    static let windowUpdateThreshold = 32768
    /// Response bytes held for want of the client's window above which the stream's backend
    /// is no longer read (reading resumes below half of it).
    static let maxHeld = 256 * 1024
    /// Control frames the codec may answer (SETTINGS and PING ACKs, RST_STREAM) while the
    /// socket is not writable before the connection is closed with ENHANCE_YOUR_CALM — as
    /// NIO's `maximumBufferedControlFrames`, Go's and Netty's limits: a client that sends PINGs
    /// and never reads would otherwise make the gateway queue their answers without bound.
    static let maxQueuedControlFrames = 10_000

    private var codec: HTTP2ServerCodec
    private let idle: HTTP2IdleHandler
    private var streams = HTTP2StreamTable<HTTP2RouteStream>()
    private var flushScheduled = false
    private var backendFlushes: [Exchange] = []
    /// Streams whose backend reads are paused (`limitHeld`).
    private var paused: [HTTP2RouteStream] = []
    /// `codec.controlAnswers` when the socket stopped being writable; nil while it is.
    private var controlAnswersWhenBlocked: Int?
    /// The request of an `Upgrade: h2c`, served as stream 1 once the handler is active.
    private var upgradeRequest: NIOHTTP1.HTTPRequestHead?
    private var started = false
    private var settingsTimer: Scheduled<Void>?
    #if DEBUG
    private let live = LiveObjects.Token("HTTP2RouteHandler")
    #endif

    override var exchanges: [Exchange] { streams.all.compactMap(\.exchange) }

    /// `upgrade`: the connection switched from HTTP/1.1 (`Upgrade: h2c`, RFC 7540 §3.2): the
    /// `HTTP2-Settings` payload and the request, answered on stream 1.
    init(_ connection: RouteConnection, channel: any Channel, upgrade: (settings: [UInt8], request: NIOHTTP1.HTTPRequestHead)? = nil) {
        codec = HTTP2ServerCodec(allocator: channel.allocator, upgradeSettings: upgrade?.settings)
        idle = HTTP2IdleHandler(seconds: connection.settings.http2IdleTimeout, loop: channel.eventLoop)
        upgradeRequest = upgrade?.request
        super.init(connection, channel: channel)
    }

    override func handlerAdded(context: ChannelHandlerContext) {
        super.handlerAdded(context: context)
        if context.channel.isActive { start() }
    }

    override func handlerRemoved(context: ChannelHandlerContext) {
        idle.stop()
        settingsTimer?.cancel()
        settingsTimer = nil
        streams = HTTP2StreamTable()
        super.handlerRemoved(context: context)
    }

    func channelActive(context: ChannelHandlerContext) {
        start()
        context.fireChannelActive()
    }

    /// The server's SETTINGS leave at once; the idle and SETTINGS timers start; an upgrade's
    /// request begins.
    private func start() {
        guard !started else { return }
        started = true
        idle.start(self)
        let seconds = connection.settings.http2SettingsTimeout
        // Cancelled when the handler is removed (it holds the handler: no weak reference, see
        // `HTTP2RouteStream.handler`); it may also find the SETTINGS acknowledged.
        settingsTimer = eventLoop.assumeIsolated().scheduleTask(in: .milliseconds(Int64(seconds * 1000))) { [self] in
            settingsTimerFired(after: seconds)
        }
        if let request = upgradeRequest {
            upgradeRequest = nil
            opened(1, Self.upgradeFields(request), endStream: true)
        }
        flushNow()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        reading = true
        codec.now = GateLoop.monotonicMillis()
        codec.receive(unwrapInboundIn(data))
        while let event = codec.nextEvent() {
            switch event {
            case .headers(let id, let fields, let endStream, trailers: false):
                opened(id, fields, endStream: endStream)
            case .headers(let id, let fields, _, trailers: true):
                guard let stream = streams[id] else { break }
                // Trailers end the request (with the body `content-length` announced).
                guard Self.validTrailers(fields), (stream.remainingLength ?? 0) == 0 else {
                    malformed(stream)
                    break
                }
                stream.exchange?.requestPart(.end(Self.trailers(fields)))
            case .data(let id, let data, let padding, let endStream):
                guard let stream = streams[id] else { break }
                body(data, padding: padding, endStream: endStream, on: stream)
            case .streamClosed(let id, let error):
                if let stream = streams.remove(id) {
                    idle.streamClosed()
                    stream.exchange?.clientGone()
                    stream.ended(error: error == nil ? nil : "client went away")
                }
            case .pingAck(let opaque):
                idle.pingAcknowledged(opaque)
            case .goAway:
                break
            case .connectionError(let error):
                flushNow()
                closeOnError(error)
                return
            }
        }
        if let base = controlAnswersWhenBlocked, codec.controlAnswers - base > Self.maxQueuedControlFrames,
            let error = codec.abort(.enhanceYourCalm, "more than \(Self.maxQueuedControlFrames) control frames answered while the client does not read")
        {
            flushNow()
            closeOnError(error)
        }
    }

    /// The socket's writability: while it cannot take more (the client does not read), every
    /// stream's backend stops being read as its next response bytes arrive (`limitHeld`), and the
    /// control frames answered meanwhile are counted (`maxQueuedControlFrames`).
    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            controlAnswersWhenBlocked = nil
            if !paused.isEmpty { resumePaused() }
        } else if controlAnswersWhenBlocked == nil {
            controlAnswersWhenBlocked = codec.controlAnswers
        }
        context.fireChannelWritabilityChanged()
    }

    /// A new stream's request: an exchange begins, or the stream is reset as malformed.
    private func opened(_ id: UInt32, _ fields: HPACKHeaders, endStream: Bool) {
        guard let (head, request, length) = Self.requestHead(fields), !endStream || (length ?? 0) == 0 else {
            codec.resetStream(id, .protocolError)
            return
        }
        let stream = HTTP2RouteStream(id: id, handler: self)
        streams.insert(stream, id: id)
        idle.streamOpened(id)
        stream.remainingLength = length
        if let exchange = Exchange.begin(head, client: stream, http1: false, request: request), !exchange.finished { stream.exchange = exchange }
        if endStream { stream.exchange?.requestPart(.end(nil)) }
    }

    private func body(_ data: ByteBuffer, padding: Int, endStream: Bool, on stream: HTTP2RouteStream) {
        let body = data.readableBytes
        if let remaining = stream.remainingLength {
            // More or less DATA than `content-length` announced (RFC 9113 §8.1.1).
            guard body <= remaining, !endStream || body == remaining else {
                malformed(stream)
                return
            }
            stream.remainingLength = remaining - body
        }
        if endStream { stream.requestEnded = true }
        if body > 0, let exchange = stream.exchange {
            credit(padding, on: stream)
            // The stream's credit for the body comes back once the backend socket took it.
            exchange.requestPart(.body(.byteBuffer(data))) { [self] in credit(body, on: stream) }
        } else {
            credit(body + padding, on: stream)
        }
        if endStream { stream.exchange?.requestPart(.end(nil)) }
    }

    /// A malformed request (RFC 9113 §8.1.1): a stream error of type PROTOCOL_ERROR; the
    /// exchange ends.
    private func malformed(_ stream: HTTP2RouteStream) {
        reset(stream.id, .protocolError)
        stream.exchange?.clientGone()
    }

    /// Resets a stream of this handler's choosing (RST_STREAM) and forgets it.
    func reset(_ id: UInt32, _ code: H2ErrorCode) {
        codec.resetStream(id, code)
        localClose(id, error: "stream reset (\(code))")
    }

    /// The stream closed by what the gateway wrote (its END_STREAM after the client's, or its
    /// RST_STREAM, `error`): forgotten without telling its exchange, which ended it.
    private func localClose(_ id: UInt32, error: String? = nil) {
        guard let stream = streams.remove(id) else { return }
        idle.streamClosed()
        stream.ended(error: error)
    }

    /// Whether part of `stream`'s response waits in the codec for the client's window.
    func holdsResponse(_ stream: HTTP2RouteStream) -> Bool {
        codec.heldBytes(stream.id) > 0
    }

    /// Stream-level credit for `bytes` the gateway is done with (written to the backend, or
    /// dropped); sent once half a window has accumulated, unless the request has ended or
    /// the stream closed.
    private func credit(_ bytes: Int, on stream: HTTP2RouteStream) {
        guard bytes > 0, !stream.requestEnded, streams[stream.id] === stream else { return }
        stream.windowDebt += bytes
        if stream.windowDebt >= Self.windowUpdateThreshold {
            codec.windowUpdate(stream.id, stream.windowDebt)
            stream.windowDebt = 0
            requestFlush()
        }
    }

    /// Response backpressure: when more than `maxHeld` bytes of `stream`'s response wait in
    /// the codec for the client's window, or the socket is not writable (a client with large
    /// windows that does not read), its backend connection stops reading (`pauseReading`), so
    /// a client that reads slowly holds the backend to its pace instead of the response piling
    /// up here. `resumePaused` turns reading on again once the socket is writable and the
    /// client's WINDOW_UPDATEs brought the held bytes below half.
    func limitHeld(_ stream: HTTP2RouteStream) {
        guard stream.pausedBackend == nil, controlAnswersWhenBlocked != nil || codec.heldBytes(stream.id) > Self.maxHeld,
            let backend = stream.exchange?.backend
        else { return }
        backend.pauseReading()
        stream.pausedBackend = backend
        paused.append(stream)
    }

    func resumeBackend(_ stream: HTTP2RouteStream) {
        guard let backend = stream.pausedBackend else { return }
        stream.pausedBackend = nil
        backend.resumeReading()
    }

    private func resumePaused() {
        guard controlAnswersWhenBlocked == nil else { return }
        paused.removeAll { stream in
            guard stream.pausedBackend == nil || codec.heldBytes(stream.id) <= Self.maxHeld / 2 else { return false }
            resumeBackend(stream)
            return true
        }
    }

    /// The send timeout of flow control (each sample of `RouteClientHandler`'s timer): a
    /// stream whose held DATA has not moved for `sendTimeout` (`HTTP2RouteStream.windowStall`)
    /// is given up. When the connection's window is what holds it, no stream of the connection
    /// can send — the client starves the whole connection, as a client that stops reading
    /// its socket does — so the connection ends like the socket's send timeout: GOAWAY
    /// (ENHANCE_YOUR_CALM, the debug data naming the cause) and the close. When it is the
    /// stream's own window, only that stream is stalled (the client may have stopped reading
    /// one response and still use the others): RST_STREAM(CANCEL) — the gateway no longer
    /// wants to send it; it is no flow-control violation by the client — and the connection
    /// goes on. Either way the exchanges end with `error=send timeout: …`, their backend
    /// connections closed, and each counts once in `ugate_httproute_send_timeouts_total`.
    override func windowStalled(now: UInt64) -> Bool {
        var stalled: [HTTP2RouteStream] = []
        for stream in streams.all {
            guard let state = codec.sendState(stream.id) else { continue }
            stream.windowStall.observe(waiting: state.held > 0, progress: state.sent != stream.sentAtSample, now: now)
            stream.sentAtSample = state.sent
            guard stream.windowStall.stalled(now: now) else { continue }
            if state.waitingFor == .connectionWindow {
                let waiting = streams.all.reduce(0) { $0 + codec.heldBytes($1.id) }
                let error = connection.sendTimedOut(exchanges, waiting: waiting, cause: .connectionWindow)
                for stream in streams.all { stream.ended(error: error) }
                let seconds = connection.settings.sendTimeout
                if let error = codec.abort(.enhanceYourCalm, "send timeout: no connection window granted for \(seconds) s") {
                    flushNow()
                    closeOnError(error)
                }
                return true
            }
            stalled.append(stream)
        }
        for stream in stalled {
            let waiting = codec.heldBytes(stream.id)
            if stream.pausedBackend != nil {
                stream.pausedBackend = nil
                paused.removeAll { $0 === stream }
            }
            let error = connection.sendTimedOut(stream.exchange.map { [$0] } ?? [], waiting: waiting, cause: .streamWindow(stream.id))
            stream.ended(error: error)
            reset(stream.id, .cancel)
        }
        if !stalled.isEmpty { flushNow() }
        return false
    }

    func writeHeaders(_ id: UInt32, _ fields: HPACKHeaders, endStream: Bool) {
        if codec.writeHeaders(id, fields, endStream: endStream) { localClose(id) }
    }

    /// A backend's response head as HEADERS, encoded from its fields in one pass (no
    /// `HPACKHeaders`, names lower-cased as they are written; this runs for every response).
    func writeResponseHead(_ id: UInt32, _ head: HTTP1ResponseHead) {
        Self.writeResponseHead(head, on: id, to: &codec)
    }

    static func writeResponseHead(_ head: HTTP1ResponseHead, on id: UInt32, to codec: inout HTTP2ServerCodec) {
        let named = BackendWire.connectionOptions(head.headers)
        codec.writeResponseHead(id, status: head.status, fields: head.headers) { keepsResponseField($0, named: named) }
    }

    func writeData(_ id: UInt32, _ data: ByteBuffer, endStream: Bool) {
        if codec.writeData(id, data, endStream: endStream) { localClose(id) }
    }

    func endStream(_ id: UInt32) {
        if codec.endStream(id) { localClose(id) }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        reading = false
        if !paused.isEmpty { resumePaused() }
        if !backendFlushes.isEmpty {
            for exchange in backendFlushes { exchange.flushBackend() }
            backendFlushes.removeAll(keepingCapacity: true)
        }
        flushNow()
        context.fireChannelReadComplete()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is ChannelShouldQuiesceEvent {
            idle.quiesce()
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        idle.stop()
        reading = false
        let open = streams.all
        streams = HTTP2StreamTable()
        paused.removeAll()
        for stream in open {
            stream.exchange?.clientGone()
            stream.ended(error: "client went away")
        }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        closeOnError(error)
    }

    /// RFC 9113 §6.5.3: SETTINGS not acknowledged in time end the connection (GOAWAY
    /// SETTINGS_TIMEOUT).
    private func settingsTimerFired(after seconds: Double) {
        guard context != nil, let error = codec.settingsTimedOut(after: seconds) else { return }
        flushNow()
        closeOnError(error)
    }

    /// Writes and flushes what the codec has gathered.
    private func flushNow() {
        guard let context, let output = codec.takeOutput() else { return }
        context.writeAndFlush(wrapOutboundOut(output), promise: nil)
    }

    /// Flushes at the end of the read burst, or once the loop is done with its current batch
    /// of events (so responses of several backends that arrive together share one syscall).
    func requestFlush() {
        guard !reading, !flushScheduled else { return }
        flushScheduled = true
        eventLoop.assumeIsolated().execute { [self] in
            flushScheduled = false
            flushNow()
        }
    }

    func backendNeedsFlush(_ exchange: Exchange) {
        if reading {
            backendFlushes.append(exchange)
        } else {
            exchange.flushBackend()
        }
    }

    // MARK: - Idle timeout and drain (`HTTP2IdleHandler`)

    func idleGoAway(lastStreamID: UInt32) {
        codec.goAway(lastStreamID: lastStreamID)
        flushNow()
    }

    func idlePing(_ opaque: UInt64) {
        codec.ping(opaque)
        flushNow()
    }

    /// On the next loop turn (the last stream's closing frame is written first), a PING
    /// behind everything written marks when all of it has left; then the connection closes.
    func idleClose() {
        eventLoop.assumeIsolated().execute { [self] in
            guard let context else { return }
            codec.ping(HTTP2IdleMachine.pingData)
            let output = codec.takeOutput() ?? context.channel.allocator.buffer(capacity: 0)
            context.writeAndFlush(wrapOutboundOut(output)).assumeIsolated().whenComplete { _ in context.close(promise: nil) }
        }
    }

    /// The HTTP/2 fields of the HTTP/1.1 request that asked for `Upgrade: h2c`: `:method`,
    /// `:scheme`, `:path`, `:authority` from `Host`, the other fields lower-cased without the
    /// hop-by-hop ones.
    static func upgradeFields(_ head: NIOHTTP1.HTTPRequestHead) -> HPACKHeaders {
        var fields = HPACKHeaders()
        fields.add(name: ":method", value: head.method.rawValue)
        fields.add(name: ":scheme", value: "http")
        fields.add(name: ":path", value: head.uri)
        if let host = head.headers.first(name: "host") { fields.add(name: ":authority", value: host) }
        for (name, value) in head.headers where !HopByHop.contains(name) && name.lowercased() != "host" {
            fields.add(name: name.lowercased(), value: value)
        }
        return fields
    }

    /// The HTTP/1 view of a request's HEADERS: `:method`, `:path`, `:authority` as `Host`
    /// when the client sent no `Host` field (as NIO's HTTP/2 → HTTP/1 codec does), `cookie`
    /// crumbs joined with `; ` (RFC 9113 §8.2.3), and the route-table view of the same fields
    /// (collected in the same pass).
    ///
    /// nil for a malformed request (RFC 9113 §8.2, §8.3.1), checked in the same pass: a field
    /// name that is not a lower-case token, a connection-specific field (`connection`,
    /// `keep-alive`, `proxy-connection`, `transfer-encoding`, `upgrade`; `te` other than
    /// `trailers`), NUL, CR or LF in a value (SP and controls in a pseudo-header's), a
    /// pseudo-header that is unknown, repeated, or after a regular field, `:method`, `:scheme`
    /// or a non-empty `:path` missing, a `content-length` that is not a decimal number (or
    /// repeated with another value) — and for CONNECT, which the gateway does not serve.
    /// `contentLength`: the announced body length, which the DATA frames must match (checked
    /// as they arrive). These are the checks NIO's header-block validator made, in the pass
    /// that converts the fields anyway (NIO's walked every field of both directions once more,
    /// through substrings and generic sequence searches — about 4 % of the gateway's CPU time
    /// per HTTP/2 request in profiles).
    static func requestHead(_ fields: HPACKHeaders) -> (H2RequestHead, RouteRequest, contentLength: Int?)? {
        var method: String?
        var path: String?
        var scheme = false
        var authority: String?
        var host: String?
        var cookie: String?
        var regular = false
        var length: Int?
        var lengthText: String?
        var routeFields: [HTTPField] = []
        routeFields.reserveCapacity(fields.count)
        for (name, value, _) in fields {
            if name.utf8.first == UInt8(ascii: ":") {
                guard !regular, H2Fields.validPseudoValue(value) else { return nil }
                switch name {
                case ":method":
                    guard method == nil else { return nil }
                    method = value
                case ":path":
                    guard path == nil else { return nil }
                    path = value
                case ":scheme":
                    guard !scheme else { return nil }
                    scheme = true
                case ":authority":
                    guard authority == nil else { return nil }
                    authority = value
                default: return nil
                }
                continue
            }
            regular = true
            guard H2Fields.validRegular(name, value) else { return nil }
            if name == "cookie" {
                cookie = cookie.map { $0 + "; " + value } ?? value
            } else {
                if host == nil, name == "host" { host = value }
                if name == "content-length" {
                    // Repeated only with the same value (RFC 9110 §8.6).
                    guard let parsed = H2Fields.contentLength(value), length == nil || length == parsed else { return nil }
                    length = parsed
                    if lengthText == nil { lengthText = value }
                }
                routeFields.append(HTTPField(name, value))
            }
        }
        guard let method, let path, scheme, !path.isEmpty, method != "CONNECT" else { return nil }
        if host == nil, let authority {
            host = authority
            routeFields.append(HTTPField("host", authority))
        }
        if let cookie {
            routeFields.append(HTTPField("cookie", cookie))
        }
        var size = path.utf8.count + method.utf8.count + 12
        for field in routeFields { size += field.name.utf8.count + field.value.utf8.count + 4 }
        let head = H2RequestHead(
            method: HTTPMethod(rawValue: method), uri: path, host: host, fields: routeFields, contentLength: lengthText, headSize: size)
        return (head, RouteRequest(method: method, target: path, host: host ?? "", headers: routeFields), length)
    }

    /// A request's trailer section (RFC 9113 §8.1): no pseudo-header, and the field rules of
    /// `requestHead`.
    static func validTrailers(_ fields: HPACKHeaders) -> Bool {
        fields.allSatisfy { name, value, _ in H2Fields.validRegular(name, value) }
    }

    static func trailers(_ fields: HPACKHeaders) -> HTTPHeaders {
        var headers = HTTPHeaders()
        for (name, value, _) in fields { headers.add(name: name, value: value) }
        return headers
    }

    /// HTTP/2 response fields: `:status`, connection-specific fields (hop-by-hop,
    /// `transfer-encoding`) left out (RFC 9113 §8.2.2). Names as they are: `H2FieldEncoder`
    /// writes them in lower case.
    static func responseFields(_ headers: some Sequence<(name: String, value: String)>, count: Int, status: Int?) -> HPACKHeaders {
        var out = HPACKHeaders()
        out.reserveCapacity(count + 1)
        if let status { out.add(name: ":status", value: H2Names.status(status)) }
        for (name, value) in headers where !HopByHop.contains(name) {
            out.add(name: name, value: value)
        }
        return out
    }

    /// Whether a backend response head's field goes into the HTTP/2 response: not a
    /// connection-specific field (hop-by-hop, `transfer-encoding`, RFC 9113 §8.2.2) nor one
    /// its `Connection` names (`named`, RFC 9110 §7.6.1).
    static func keepsResponseField(_ field: HTTPField, named: [String]) -> Bool {
        !HopByHop.contains(field.name) && (named.isEmpty || !named.contains { $0.equalsIgnoringASCIICase(field.name) })
    }
}

/// An HTTP/2 request's head as `Exchange` sees it, made in `HTTP2RouteHandler.requestHead`'s
/// pass over HEADERS (no NIO `HTTPRequestHead` and `HTTPHeaders` per request). HTTP/2 has no
/// `Connection`, `Transfer-Encoding` or `Upgrade` (refused as malformed), so a request keeps
/// the connection, is never chunked and never asks for h2c; `Expect` is acted on only for
/// HTTP/1.1.
struct H2RequestHead: ExchangeHead {
    var method: HTTPMethod
    var uri: String
    /// `Host`, or `:authority` when the client sent no `Host`.
    var host: String?
    /// The regular fields (cookie crumbs joined, `host` from `:authority` added).
    var fields: [HTTPField]
    var contentLength: String?
    /// As NIO's head counted it: target, method and fields.
    var headSize: Int
    var hasHost: Bool { host != nil }
    var fieldCount: Int { fields.count }
    var isHTTP11: Bool { false }
    var isKeepAlive: Bool { true }
    var hasTransferEncoding: Bool { false }
    var expectsContinue: Bool { false }
    var h2cSettingsProblem: String? { nil }
}

/// `:status` values as HTTP/2 sends them, without formatting the usual ones each time.
enum H2Names {
    /// The `:status` value of `code`: a literal for the usual codes.
    static func status(_ code: Int) -> String {
        switch code {
        case 200: "200"
        case 204: "204"
        case 206: "206"
        case 301: "301"
        case 302: "302"
        case 304: "304"
        case 400: "400"
        case 404: "404"
        case 500: "500"
        case 502: "502"
        case 503: "503"
        case 504: "504"
        default: String(code)
        }
    }
}

/// The field checks of RFC 9113 §8.2 for received requests (see `HTTP2RouteHandler.requestHead`),
/// without allocating.
enum H2Fields {
    /// A regular field: a lower-case token name (§8.2: upper case is malformed), not
    /// connection-specific (§8.2.2), and a value without NUL, CR or LF (§8.2.1).
    static func validRegular(_ name: String, _ value: String) -> Bool {
        let nameValid = utf8Bytes(of: name) { bytes in
            guard !bytes.isEmpty, bytes.allSatisfy({ isTokenChar($0) && !($0 >= 0x41 && $0 <= 0x5A) }) else { return false }
            switch bytes.count {
            case 2: return !equal(bytes, "te") || value == "trailers"
            case 7: return !equal(bytes, "upgrade")
            case 10: return !equal(bytes, "connection") && !equal(bytes, "keep-alive")
            case 16: return !equal(bytes, "proxy-connection")
            case 17: return !equal(bytes, "transfer-encoding")
            default: return true
            }
        }
        guard nameValid else { return false }
        return utf8Bytes(of: value) { bytes in !bytes.contains { $0 == 0 || $0 == 0x0A || $0 == 0x0D } }
    }

    /// A `content-length` value (RFC 9110 §8.6): 1–18 decimal digits; nil otherwise.
    static func contentLength(_ value: String) -> Int? {
        let digits = value.utf8
        guard (1...18).contains(digits.count), digits.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }) else { return nil }
        return Int(value)
    }

    /// A pseudo-header's value: no SP, control or DEL byte (as NIO's validator: `:path` becomes
    /// the HTTP/1.1 request-target, `:method` and `:authority` its method and `Host`).
    static func validPseudoValue(_ value: String) -> Bool {
        utf8Bytes(of: value) { bytes in !bytes.contains { $0 <= 0x20 || $0 == 0x7F } }
    }

    private static func equal(_ bytes: UnsafeBufferPointer<UInt8>, _ literal: StaticString) -> Bool {
        guard bytes.count == literal.utf8CodeUnitCount else { return false }
        let other = literal.utf8Start
        for i in 0..<bytes.count where bytes[i] != other[i] { return false }
        return true
    }
}

/// The open streams of one connection by stream ID: IDs and streams in two arrays sorted by
/// ID, found by binary search. Hand-written for the hot path instead of a `Dictionary`, whose
/// SipHash of the key (seed, combine, finalize) on every lookup, insert and removal — several
/// per request — showed in profiles; a client opens streams with increasing IDs (RFC 9113
/// §5.1.1), so a new stream is appended, and at most `SETTINGS_MAX_CONCURRENT_STREAMS` (100)
/// are open.
struct HTTP2StreamTable<Stream> {
    private var ids: [UInt32] = []
    private var streams: [Stream] = []

    var all: [Stream] { streams }
    var count: Int { streams.count }

    subscript(id: UInt32) -> Stream? {
        let index = position(id)
        return index < ids.count && ids[index] == id ? streams[index] : nil
    }

    /// Adds `stream`, replacing one with the same ID.
    mutating func insert(_ stream: Stream, id: UInt32) {
        if let last = ids.last, last >= id {
            let index = position(id)
            if index < ids.count && ids[index] == id {
                streams[index] = stream
            } else {
                ids.insert(id, at: index)
                streams.insert(stream, at: index)
            }
        } else {
            ids.append(id)
            streams.append(stream)
        }
    }

    @discardableResult
    mutating func remove(_ id: UInt32) -> Stream? {
        let index = position(id)
        guard index < ids.count, ids[index] == id else { return nil }
        ids.remove(at: index)
        return streams.remove(at: index)
    }

    /// The index of the first ID not below `id`.
    private func position(_ id: UInt32) -> Int {
        var low = 0
        var high = ids.count
        while low < high {
            let middle = (low + high) / 2
            if ids[middle] < id { low = middle + 1 } else { high = middle }
        }
        return low
    }
}

extension HTTP2StreamTable {
    /// By NIO's stream ID type (as the table was keyed before the gateway's own codec).
    subscript(id: HTTP2StreamID) -> Stream? { self[UInt32(Int32(id))] }

    mutating func insert(_ stream: Stream, id: HTTP2StreamID) { insert(stream, id: UInt32(Int32(id))) }

    @discardableResult
    mutating func remove(_ id: HTTP2StreamID) -> Stream? { remove(UInt32(Int32(id))) }
}

/// One HTTP/2 stream of an `HTTP2RouteHandler`: the client of its exchange. The last body
/// part is held back until the next part, so a response's final DATA frame carries
/// END_STREAM instead of an empty frame of its own.
final class HTTP2RouteStream: ExchangeClient {
    let id: UInt32
    let connection: RouteConnection
    let eventLoop: any EventLoop
    let allocator: ByteBufferAllocator
    /// Strong, not weak: a weak reference gives the handler a side table, and every retain and
    /// release of it then takes the runtime's slow path (see docs/httproute.md, *Hot-path
    /// notes*). The handler holds its open streams; a stream outlives its place in the table only
    /// as long as its exchange holds it.
    let handler: HTTP2RouteHandler
    #if DEBUG
    private let live = LiveObjects.Token("HTTP2RouteStream")
    #endif
    var exchange: Exchange?
    /// Request DATA bytes not yet given back with a `WINDOW_UPDATE`.
    var windowDebt = 0
    /// The client ended the request (END_STREAM): no more credit for this stream.
    var requestEnded = false
    /// Request body bytes still to come by the request's `content-length` (nil: none given).
    var remainingLength: Int?
    private var held: ByteBuffer?
    /// The backend connection whose reads are paused while too much of this response waits for
    /// the client's window.
    var pausedBackend: BackendConnection?
    /// The send timeout of the response DATA held for want of the client's window, and the
    /// bytes sent at its last sample (`HTTP2RouteHandler.windowStalled`).
    var windowStall: SendStall
    var sentAtSample = 0
    /// The response was ended (or cut off) by its exchange.
    private var responseEnded = false
    /// The finished exchange whose access-log line waits for its response to leave the codec
    /// (held for want of the client's window): written when the stream ends (`ended`), so a
    /// reset by the send timeout or the client's going away is in it.
    private var unlogged: Exchange?

    init(id: UInt32, handler: HTTP2RouteHandler) {
        self.id = id
        self.handler = handler
        connection = handler.connection
        eventLoop = handler.eventLoop
        allocator = handler.allocator
        windowStall = SendStall(seconds: connection.settings.sendTimeout)
    }

    var decodesChunks: Bool { true }

    func respondHead(_ head: HTTPResponseHead) {
        let fields = HTTP2RouteHandler.responseFields(head.headers.lazy.map { ($0.name, $0.value) }, count: head.headers.count, status: Int(head.status.code))
        handler.writeHeaders(id, fields, endStream: false)
    }

    func relayHead(_ head: HTTP1ResponseHead, raw: ByteBuffer?, close: Bool) {
        handler.writeResponseHead(id, head)
    }

    func respondBody(_ buffer: ByteBuffer) {
        writeHeld()
        held = buffer
    }

    func respondEnd(_ trailers: HTTPHeaders?, close: Bool) {
        // The backend connection may go back to its pool: reading again.
        handler.resumeBackend(self)
        if let trailers, !trailers.isEmpty {
            writeHeld()
            handler.writeHeaders(
                id, HTTP2RouteHandler.responseFields(trailers.lazy.map { ($0.name, $0.value) }, count: trailers.count, status: nil), endStream: true)
        } else {
            if let held { handler.writeData(id, held, endStream: true) } else { handler.endStream(id) }
            held = nil
        }
        responseEnded = true
        if unlogged != nil, !handler.holdsResponse(self) { ended(error: nil) }
        handler.requestFlush()
    }

    private func writeHeld() {
        guard let buffer = held else { return }
        held = nil
        handler.writeData(id, buffer, endStream: false)
        handler.limitHeld(self)
    }

    func flushResponse() {
        writeHeld()
        handler.requestFlush()
    }

    func abortResponse() {
        held = nil
        responseEnded = true
        handler.resumeBackend(self)
        handler.reset(id, .internalError)
        handler.requestFlush()
    }

    func exchangeFinished(_ finished: Exchange) {
        if exchange === finished { exchange = nil }
    }

    /// At once, unless the response is (or, its backend having ended, is about to be) held in
    /// the codec: then when the stream ends.
    func record(_ exchange: Exchange) {
        guard responseEnded ? handler.holdsResponse(self) : exchange.responseComplete else {
            return connection.record(&exchange.log)
        }
        unlogged = exchange
    }

    /// The stream ended (closed, reset, or its connection gone; `error`: not as it should):
    /// the access-log line a held response was waiting for, with `error` added.
    func ended(error: String?) {
        guard let exchange = unlogged else { return }
        unlogged = nil
        if let error { exchange.log.error = exchange.log.error.map { $0 + "; " + error } ?? error }
        connection.record(&exchange.log)
    }

    func backendNeedsFlush(_ exchange: Exchange) {
        handler.backendNeedsFlush(exchange)
    }

    func watchDeadline(_ exchange: Exchange) {
        handler.watchDeadline(exchange)
    }
}

/// `Upgrade: h2c` on a plain HTTP/1.1 listener (RFC 7540 §3.2): a first request with
/// `Upgrade: h2c`, `Connection: Upgrade, HTTP2-Settings` and one valid `HTTP2-Settings`
/// field, and without a body, gets `101 Switching Protocols`; the connection continues as
/// HTTP/2 (`HTTP2RouteHandler`) and that request is answered on stream 1. Anything else is
/// served over HTTP/1.1 as usual.
final class H2CUpgrader: HTTPServerProtocolUpgrader {
    /// Why a request asking for h2c is served over HTTP/1.1 instead.
    struct Refused: Error {
        var reason: String
    }

    let supportedProtocol = "h2c"
    let requiredUpgradeHeaders = ["HTTP2-Settings"]
    let connection: RouteConnection
    /// The HTTP/1.1 handlers after NIO's codec, replaced by the HTTP/2 ones.
    let replaced: [any RemovableChannelHandler]

    init(connection: RouteConnection, replaced: [any RemovableChannelHandler]) {
        self.connection = connection
        self.replaced = replaced
    }

    func buildUpgradeResponse(channel: any Channel, upgradeRequest: NIOHTTP1.HTTPRequestHead, initialResponseHeaders: HTTPHeaders) -> EventLoopFuture<HTTPHeaders> {
        let settings = upgradeRequest.headers["HTTP2-Settings"]
        guard settings.count == 1, (try? Self.decodeSettings(settings[0])) != nil else {
            return channel.eventLoop.makeFailedFuture(Refused(reason: "HTTP2-Settings missing, repeated or invalid"))
        }
        // The request body would have to be read before switching; such requests stay HTTP/1.1.
        let length = upgradeRequest.headers.first(name: "content-length")
        if upgradeRequest.headers.contains(name: "transfer-encoding") || (length != nil && length != "0") {
            return channel.eventLoop.makeFailedFuture(Refused(reason: "upgrade request with a body"))
        }
        return channel.eventLoop.makeSucceededFuture(initialResponseHeaders)
    }

    func upgrade(context: ChannelHandlerContext, upgradeRequest: NIOHTTP1.HTTPRequestHead) -> EventLoopFuture<Void> {
        let connection = RouteConnection(
            state: connection.state, settings: connection.settings, peer: connection.peer, proto: "h2c", eventLoop: context.eventLoop)
        let replaced = replaced
        // The client's HTTP2-Settings (checked in `buildUpgradeResponse`) are applied by the
        // codec as if received, without an ACK (RFC 7540 §3.2.1); the request is stream 1.
        let payload = upgradeRequest.headers.first(name: "HTTP2-Settings").flatMap { try? Self.decodeSettings($0) } ?? []
        return context.eventLoop.makeCompletedFuture {
            let sync = context.pipeline.syncOperations
            for handler in replaced { sync.removeHandler(handler, promise: nil) }
            try HTTPRouteNIO.configureHTTP2(context.channel, connection, upgrade: (settings: payload, request: upgradeRequest))
        }
    }
}
