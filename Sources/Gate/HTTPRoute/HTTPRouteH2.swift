import NIOCore
import NIOHPACK
import NIOHTTP1
import NIOHTTP2

/// Serves every stream of one HTTP/2 connection straight from its frames, after
/// `NIOHTTP2Handler` (which keeps the connection and stream state machines, HPACK, outbound
/// flow control and SETTINGS/PING/GOAWAY).
///
/// Hand-written on purpose instead of NIO's stream multiplexer: that one creates a child
/// channel (a pipeline, promises, an HTTP/2 ↔ HTTP/1 codec) per stream, which cost more than
/// the proxying itself under load. Here a stream is a small `HTTP2RouteStream` in a
/// dictionary, its request head is converted once to the HTTP/1 head `Exchange` works with,
/// and the responses written while the loop handles one batch of events leave with one
/// flush. What the multiplexer did and this handler does instead: inbound flow control,
/// `RST_STREAM` / stream closure ending the exchange.
///
/// Inbound flow control with backpressure: a stream's request body credit goes back to the
/// client (`WINDOW_UPDATE` once half a default window has accumulated) only as its bytes are
/// written to the backend socket, so a slow backend slows the uploading client down instead of
/// its body piling up here: at most one stream window (64 KiB) per stream waits in the
/// gateway. The connection's window is credited on receipt — holding it back would stall
/// every other stream of the connection behind a slow one — so a connection holds at most
/// `SETTINGS_MAX_CONCURRENT_STREAMS` (100) × 64 KiB.
final class HTTP2RouteHandler: RouteClientHandler, ChannelInboundHandler {
    typealias InboundIn = HTTP2Frame
    typealias OutboundOut = HTTP2Frame

    /// Consumed DATA bytes after which a `WINDOW_UPDATE` is sent (half the default window).
    static let windowUpdateThreshold = 32768

    private var streams = HTTP2StreamTable<HTTP2RouteStream>()
    private var needsFlush = false
    private var flushScheduled = false
    private var backendFlushes: [Exchange] = []
    private var connectionWindowDebt = 0

    override var exchanges: [Exchange] { streams.all.compactMap(\.exchange) }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        reading = true
        let frame = unwrapInboundIn(data)
        switch frame.payload {
        case .headers(let headers):
            if let stream = streams[frame.streamID] {
                // Trailers end the request (with the body `content-length` announced).
                guard Self.validTrailers(headers.headers), !headers.endStream || (stream.remainingLength ?? 0) == 0 else {
                    malformed(stream)
                    return
                }
                if headers.endStream { stream.exchange?.requestPart(.end(Self.trailers(headers.headers))) }
                return
            }
            let stream = HTTP2RouteStream(id: frame.streamID, handler: self)
            streams.insert(stream, id: frame.streamID)
            guard let (head, request, length) = Self.requestHead(headers.headers), !headers.endStream || (length ?? 0) == 0 else {
                write(HTTP2Frame(streamID: frame.streamID, payload: .rstStream(.protocolError)))
                return
            }
            stream.remainingLength = length
            if let exchange = Exchange.begin(head, client: stream, http1: false, request: request), !exchange.finished { stream.exchange = exchange }
            if headers.endStream { stream.exchange?.requestPart(.end(nil)) }
        case .data(let data):
            guard let stream = streams[frame.streamID] else { return }
            let body = data.data.readableBytes
            let padding = data.paddingBytes.map { $0 + 1 } ?? 0
            connectionConsumed(body + padding)
            if let remaining = stream.remainingLength {
                // More or less DATA than `content-length` announced (RFC 9113 §8.1.1).
                guard body <= remaining, !data.endStream || body == remaining else {
                    malformed(stream)
                    return
                }
                stream.remainingLength = remaining - body
            }
            if data.endStream { stream.requestEnded = true }
            if case .byteBuffer(let buffer) = data.data, body > 0, let exchange = stream.exchange {
                credit(padding, on: stream)
                // The stream's credit for the body comes back once the backend socket took it.
                exchange.requestPart(.body(.byteBuffer(buffer))) { [weak self, weak stream] in
                    if let self, let stream { self.credit(body, on: stream) }
                }
            } else {
                credit(body + padding, on: stream)
            }
            if data.endStream { stream.exchange?.requestPart(.end(nil)) }
        case .rstStream:
            streams.remove(frame.streamID)?.exchange?.clientGone()
        default:
            break
        }
    }

    /// A malformed request (RFC 9113 §8.1.1): a stream error of type PROTOCOL_ERROR; the
    /// exchange ends (the `RST_STREAM` through `NIOHTTP2Handler` also closes the stream there).
    private func malformed(_ stream: HTTP2RouteStream) {
        streams.remove(stream.id)
        stream.exchange?.clientGone()
        write(HTTP2Frame(streamID: stream.id, payload: .rstStream(.protocolError)))
    }

    /// Connection-level inbound flow control: gives the client back what it sent once half a
    /// window is used, on receipt.
    private func connectionConsumed(_ bytes: Int) {
        guard bytes > 0 else { return }
        connectionWindowDebt += bytes
        if connectionWindowDebt >= Self.windowUpdateThreshold {
            write(HTTP2Frame(streamID: .rootStream, payload: .windowUpdate(windowSizeIncrement: connectionWindowDebt)))
            connectionWindowDebt = 0
        }
    }

    /// Stream-level credit for `bytes` the gateway is done with (written to the backend, or
    /// dropped); sent once half a window has accumulated, unless the request has ended or
    /// the stream closed.
    private func credit(_ bytes: Int, on stream: HTTP2RouteStream) {
        guard bytes > 0, !stream.requestEnded, streams[stream.id] === stream else { return }
        stream.windowDebt += bytes
        if stream.windowDebt >= Self.windowUpdateThreshold {
            write(HTTP2Frame(streamID: stream.id, payload: .windowUpdate(windowSizeIncrement: stream.windowDebt)))
            stream.windowDebt = 0
            requestFlush()
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        reading = false
        if !backendFlushes.isEmpty {
            for exchange in backendFlushes { exchange.flushBackend() }
            backendFlushes.removeAll(keepingCapacity: true)
        }
        if needsFlush {
            needsFlush = false
            context.flush()
        }
        context.fireChannelReadComplete()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        // NIOHTTP2Handler fires several events per stream; only one kind matters here, and a
        // metatype comparison is cheaper than a dynamic cast of each.
        if type(of: event) == StreamClosedEvent.self, let closed = event as? StreamClosedEvent {
            streams.remove(closed.streamID)?.exchange?.clientGone()
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        let open = streams.all
        streams = HTTP2StreamTable()
        for stream in open { stream.exchange?.clientGone() }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // A stream error was answered with RST_STREAM by NIOHTTP2Handler; the connection goes on.
        if !(error is NIOHTTP2Errors.StreamError) { closeOnError(error) }
    }

    func write(_ frame: HTTP2Frame) {
        context?.write(wrapOutboundOut(frame), promise: nil)
        needsFlush = true
    }

    /// Flushes at the end of the read burst, or once the loop is done with its current batch
    /// of events (so responses of several backends that arrive together share one syscall).
    func requestFlush() {
        guard !reading, !flushScheduled else { return }
        flushScheduled = true
        eventLoop.assumeIsolated().execute { [self] in
            flushScheduled = false
            if needsFlush {
                needsFlush = false
                context?.flush()
            }
        }
    }

    func backendNeedsFlush(_ exchange: Exchange) {
        if reading {
            backendFlushes.append(exchange)
        } else {
            exchange.flushBackend()
        }
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
    /// by `channelRead`; NIO's content-length validation is off, see `configureHTTP2`).
    /// These are the checks of NIO's header-block validator, done here because it is switched
    /// off (`HTTPRouteNIO.configureHTTP2`): it walked every field of both directions once more,
    /// through substrings and generic sequence searches — about 4 % of the gateway's CPU time
    /// per HTTP/2 request in profiles.
    static func requestHead(_ fields: HPACKHeaders) -> (NIOHTTP1.HTTPRequestHead, RouteRequest, contentLength: Int?)? {
        var method: String?
        var path: String?
        var scheme = false
        var authority: String?
        var host: String?
        var cookie: String?
        var regular = false
        var length: Int?
        var headers = HTTPHeaders()
        headers.reserveCapacity(fields.count)
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
                }
                headers.add(name: name, value: value)
                routeFields.append(HTTPField(name, value))
            }
        }
        guard let method, let path, scheme, !path.isEmpty, method != "CONNECT" else { return nil }
        if host == nil, let authority {
            host = authority
            headers.add(name: "host", value: authority)
            routeFields.append(HTTPField("host", authority))
        }
        if let cookie {
            headers.add(name: "cookie", value: cookie)
            routeFields.append(HTTPField("cookie", cookie))
        }
        let head = NIOHTTP1.HTTPRequestHead(version: .http2, method: HTTPMethod(rawValue: method), uri: path, headers: headers)
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

    /// HTTP/2 response fields: `:status`, names lower-cased, connection-specific fields
    /// (hop-by-hop, `transfer-encoding`) left out (RFC 9113 §8.2.2).
    static func responseFields(_ headers: some Sequence<(name: String, value: String)>, count: Int, status: Int?) -> HPACKHeaders {
        var out = HPACKHeaders()
        out.reserveCapacity(count + 1)
        if let status { out.add(name: ":status", value: H2Names.status(status)) }
        for (name, value) in headers where !HopByHop.contains(name) {
            out.add(name: H2Names.lowercased(name), value: value)
        }
        return out
    }

    /// The HTTP/2 fields of a backend's response head: `responseFields`, also without the
    /// fields its `Connection` names (RFC 9110 §7.6.1). One loop over the head's fields, no
    /// lazy sequence adapters (this runs for every response).
    static func responseFields(_ head: HTTP1ResponseHead) -> HPACKHeaders {
        let named = BackendWire.connectionOptions(head.headers)
        var out = HPACKHeaders()
        out.reserveCapacity(head.headers.count + 1)
        out.add(name: ":status", value: H2Names.status(head.status))
        for field in head.headers where !HopByHop.contains(field.name) {
            if !named.isEmpty, named.contains(where: { $0.equalsIgnoringASCIICase(field.name) }) { continue }
            out.add(name: H2Names.lowercased(field.name), value: field.value)
        }
        return out
    }
}

/// Response field names and `:status` values as HTTP/2 sends them, without lower-casing or
/// formatting the usual ones each time.
enum H2Names {
    /// `name` in lower case (RFC 9113 §8.2): unchanged when it has no upper-case letter, a
    /// literal for the usual response fields, else `lowercased()`.
    static func lowercased(_ name: String) -> String {
        guard utf8Bytes(of: name, { $0.contains { $0 >= 0x41 && $0 <= 0x5A } }) else { return name }
        // `named` compares the lengths first: most entries cost one comparison.
        for (literal, lowered) in usual where HopByHop.named(name, literal) { return lowered }
        return name.lowercased()
    }

    /// The usual response field names, as literals to compare with and as strings to send.
    private static let usual: [(StaticString, String)] = [
        ("date", "date"), ("server", "server"), ("content-type", "content-type"), ("content-length", "content-length"),
        ("etag", "etag"), ("vary", "vary"), ("expires", "expires"), ("location", "location"), ("set-cookie", "set-cookie"),
        ("cache-control", "cache-control"), ("last-modified", "last-modified"), ("accept-ranges", "accept-ranges"),
        ("content-encoding", "content-encoding"),
    ]

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
    private var ids: [Int32] = []
    private var streams: [Stream] = []

    var all: [Stream] { streams }
    var count: Int { streams.count }

    subscript(id: HTTP2StreamID) -> Stream? {
        let index = position(Int32(id))
        return index < ids.count && ids[index] == Int32(id) ? streams[index] : nil
    }

    /// Adds `stream`, replacing one with the same ID.
    mutating func insert(_ stream: Stream, id streamID: HTTP2StreamID) {
        let id = Int32(streamID)
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
    mutating func remove(_ id: HTTP2StreamID) -> Stream? {
        let index = position(Int32(id))
        guard index < ids.count, ids[index] == Int32(id) else { return nil }
        ids.remove(at: index)
        return streams.remove(at: index)
    }

    /// The index of the first ID not below `id`.
    private func position(_ id: Int32) -> Int {
        var low = 0
        var high = ids.count
        while low < high {
            let middle = (low + high) / 2
            if ids[middle] < id { low = middle + 1 } else { high = middle }
        }
        return low
    }
}

/// One HTTP/2 stream of an `HTTP2RouteHandler`: the client of its exchange. The last body
/// part is held back until the next part, so a response's final DATA frame carries
/// END_STREAM instead of an empty frame of its own.
final class HTTP2RouteStream: ExchangeClient {
    let id: HTTP2StreamID
    let connection: RouteConnection
    let eventLoop: any EventLoop
    let allocator: ByteBufferAllocator
    weak var handler: HTTP2RouteHandler?
    var exchange: Exchange?
    /// Request DATA bytes not yet given back with a `WINDOW_UPDATE`.
    var windowDebt = 0
    /// The client ended the request (END_STREAM): no more credit for this stream.
    var requestEnded = false
    /// Request body bytes still to come by the request's `content-length` (nil: none given).
    var remainingLength: Int?
    private var held: ByteBuffer?

    init(id: HTTP2StreamID, handler: HTTP2RouteHandler) {
        self.id = id
        self.handler = handler
        connection = handler.connection
        eventLoop = handler.eventLoop
        allocator = handler.allocator
    }

    var decodesChunks: Bool { true }

    func respondHead(_ head: HTTPResponseHead) {
        let fields = HTTP2RouteHandler.responseFields(head.headers.lazy.map { ($0.name, $0.value) }, count: head.headers.count, status: Int(head.status.code))
        handler?.write(HTTP2Frame(streamID: id, payload: .headers(.init(headers: fields))))
    }

    func relayHead(_ head: HTTP1ResponseHead, raw: ByteBuffer?, close: Bool) {
        handler?.write(HTTP2Frame(streamID: id, payload: .headers(.init(headers: HTTP2RouteHandler.responseFields(head)))))
    }

    func respondBody(_ buffer: ByteBuffer) {
        writeHeld()
        held = buffer
    }

    func respondEnd(_ trailers: HTTPHeaders?, close: Bool) {
        guard let handler else { return }
        if let trailers, !trailers.isEmpty {
            writeHeld()
            handler.write(HTTP2Frame(streamID: id, payload: .headers(.init(headers: HTTP2RouteHandler.responseFields(trailers.lazy.map { ($0.name, $0.value) }, count: trailers.count, status: nil), endStream: true))))
        } else {
            handler.write(HTTP2Frame(streamID: id, payload: .data(.init(data: .byteBuffer(held ?? allocator.buffer(capacity: 0)), endStream: true))))
            held = nil
        }
        handler.requestFlush()
    }

    private func writeHeld() {
        guard let buffer = held else { return }
        held = nil
        handler?.write(HTTP2Frame(streamID: id, payload: .data(.init(data: .byteBuffer(buffer)))))
    }

    func flushResponse() {
        writeHeld()
        handler?.requestFlush()
    }

    func abortResponse() {
        held = nil
        handler?.write(HTTP2Frame(streamID: id, payload: .rstStream(.internalError)))
        handler?.requestFlush()
    }

    func exchangeFinished(_ finished: Exchange) {
        if exchange === finished { exchange = nil }
    }

    func backendNeedsFlush(_ exchange: Exchange) {
        if let handler { handler.backendNeedsFlush(exchange) } else { exchange.flushBackend() }
    }

    func watchDeadline(_ exchange: Exchange) {
        handler?.watchDeadline(exchange)
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
        // The client's HTTP2-Settings (checked in `buildUpgradeResponse`) become a SETTINGS
        // frame ahead of its own, whose ACK is not sent (RFC 7540 §3.2.1).
        let payload = upgradeRequest.headers.first(name: "HTTP2-Settings").flatMap { try? Self.decodeSettings($0) } ?? []
        return context.eventLoop.makeCompletedFuture {
            let sync = context.pipeline.syncOperations
            for handler in replaced { sync.removeHandler(handler, promise: nil) }
            let allocator = context.channel.allocator
            if !payload.isEmpty { try sync.addHandler(H2CSettingsAckFilter(), position: .first) }
            try sync.addHandler(
                H2CRequestInjector(
                    frames: H2CRequestInjector.headersFrames(upgradeRequest, allocator: allocator),
                    settings: payload.isEmpty ? nil : Self.settingsFrame(payload, allocator: allocator)))
            try HTTPRouteNIO.configureHTTP2(context.channel, connection, gatherWrites: true)
        }
    }

}

/// Feeds `NIOHTTP2Handler` the request that asked for `Upgrade: h2c` as stream 1 (RFC 7540
/// §3.2: "the HTTP/1.1 request that is sent prior to upgrade is assigned a stream identifier
/// of 1 … in the half-closed (remote) state"): the encoded HEADERS frames are inserted into the
/// inbound bytes right after the client's connection preface and its first SETTINGS frame,
/// then this handler leaves. The SETTINGS frame made from the request's `HTTP2-Settings`
/// (`settings`), if any, goes right after the preface, ahead of the client's own.
///
/// HEADERS (RFC 9113 §6.2), END_STREAM on the first frame, END_HEADERS on the last; header
/// blocks longer than 16,384 bytes continue in CONTINUATION frames (§6.10):
///
/// ```
/// +-----------------------------------------------+
/// |                 Length (24)                   |
/// +---------------+---------------+---------------+
/// |   Type (8)    |   Flags (8)   |
/// +-+-------------+---------------+-------------------------------+
/// |R|                 Stream Identifier (31) = 1                  |
/// +=+=============================================================+
/// |                   Field Block Fragment (*)                  ...
/// +---------------------------------------------------------------+
/// ```
///
/// The field block uses only "Literal Header Field without Indexing — New Name" (RFC 7541
/// §6.2.2: `0x00`, name length (7-bit prefix integer, H = 0), name, value length, value), so
/// the client's HPACK dynamic table, which the server's decoder mirrors, is left untouched.
final class H2CRequestInjector: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    static let preface = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)
    static let maxFrame = 16384
    let frames: ByteBuffer
    let settings: ByteBuffer?
    private var buffered: ByteBuffer?

    init(frames: ByteBuffer, settings: ByteBuffer? = nil) {
        self.frames = frames
        self.settings = settings
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = unwrapInboundIn(data)
        if buffered != nil { buffered!.writeBuffer(&incoming) } else { buffered = incoming }
        guard var bytes = buffered, let split = Self.prefaceLength(bytes) else { return }
        buffered = nil
        if split > 0, var preface = bytes.readSlice(length: split) {
            if let settings, let magic = preface.readSlice(length: Self.preface.count) {
                context.fireChannelRead(wrapInboundOut(magic))
                context.fireChannelRead(wrapInboundOut(settings))
            }
            context.fireChannelRead(wrapInboundOut(preface))
            context.fireChannelRead(wrapInboundOut(frames))
        }
        if bytes.readableBytes > 0 { context.fireChannelRead(wrapInboundOut(bytes)) }
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }

    /// The length of the connection preface plus the SETTINGS frame that must follow it; nil
    /// while more bytes are needed, 0 when the bytes are not a preface (passed on unchanged,
    /// for `NIOHTTP2Handler` to refuse).
    static func prefaceLength(_ buffer: ByteBuffer) -> Int? {
        let available = buffer.readableBytesView
        let known = min(available.count, preface.count)
        guard available.prefix(known).elementsEqual(preface.prefix(known)) else { return 0 }
        guard available.count >= preface.count + 9,
            let length = buffer.getInteger(at: buffer.readerIndex + preface.count, as: UInt32.self).map({ Int($0 >> 8) }),
            let type = buffer.getInteger(at: buffer.readerIndex + preface.count + 3, as: UInt8.self)
        else { return nil }
        guard type == 0x4, length <= maxFrame else { return 0 }
        return available.count >= preface.count + 9 + length ? preface.count + 9 + length : nil
    }

    /// The HEADERS (+ CONTINUATION) frames of `head` on stream 1, with END_STREAM.
    static func headersFrames(_ head: NIOHTTP1.HTTPRequestHead, allocator: ByteBufferAllocator) -> ByteBuffer {
        var block: [UInt8] = []
        func integer(_ value: Int) {
            // 7-bit prefix integer (RFC 7541 §5.1), Huffman bit clear.
            guard value >= 127 else { return block.append(UInt8(value)) }
            block.append(127)
            var rest = value - 127
            while rest >= 128 {
                block.append(UInt8(rest & 0x7F) | 0x80)
                rest >>= 7
            }
            block.append(UInt8(rest))
        }
        func literal(_ name: String, _ value: String) {
            block.append(0x00)
            integer(name.utf8.count)
            block.append(contentsOf: name.utf8)
            integer(value.utf8.count)
            block.append(contentsOf: value.utf8)
        }
        literal(":method", head.method.rawValue)
        literal(":scheme", "http")
        literal(":path", head.uri)
        if let host = head.headers.first(name: "host") { literal(":authority", host) }
        for (name, value) in head.headers where !HopByHop.contains(name) && name.lowercased() != "host" {
            literal(name.lowercased(), value)
        }
        var out = allocator.buffer(capacity: block.count + 9 * (block.count / maxFrame + 1))
        var offset = 0
        repeat {
            let count = min(maxFrame, block.count - offset)
            let first = offset == 0
            out.writeInteger(UInt32(count) << 8 | (first ? 0x1 : 0x9))  // length, type HEADERS / CONTINUATION
            out.writeInteger(UInt8((first ? 0x1 : 0) | (offset + count == block.count ? 0x4 : 0)))  // END_STREAM, END_HEADERS
            out.writeInteger(UInt32(1))
            out.writeBytes(block[offset..<offset + count])
            offset += count
        } while offset < block.count
        return out
    }
}
