import Foundation
import Glibc
import CoreMetrics
import Logging
import NIOHTTP1
import NIOPosix
import Synchronization

/// A plain HTTP/1.1 listener that routes each request by a `RouteTable` (Gateway API
/// HTTPRoute semantics) to a backend, with client keep-alive.
///
/// Threads: the listening sockets live on the gate loops (`TCPListener`, one per loop); each
/// client connection is served by one task that parses heads with `HTTPRequestHead`, decides
/// with `RouteTable.decide`, dials the backend (`DirectUpstream`), and relays the request and
/// response bodies by their framing (`Content-Length`, `HTTPChunkedScanner`, or until close).
/// The route table sits behind a mutex so `update(_:)` swaps it without touching connections.
/// Backend connections are kept alive between requests (an idle pool per destination); a
/// failed connect is retried on the rule's other backends.
public final class HTTPGateway: Sendable {
    /// The bound address (with the real port when 0 was asked for).
    public let address: SocketAddress
    private let listener: TCPListener
    private let state: GatewayState

    /// Binds `host:port` (port 0: ephemeral) on `loops` and starts serving.
    /// - Parameters:
    ///   - defaultTimeout: seconds for a request whose rule has no `timeouts.request`.
    ///   - accessLog: one line per request (method, host, path, route, backend, status, bytes, ms).
    ///   - metrics: where the per-route counters go (`ugate_httproute_requests_total{route,status}`,
    ///     `ugate_httproute_response_bytes_total{route}`); nil: the bootstrapped `MetricsSystem`.
    public init(
        table: RouteTable, host: String = "127.0.0.1", port: UInt16 = 0, loops: GateLoopGroup,
        defaultTimeout: Double = 30, keepAliveTimeout: Double = 60, accessLog: Logger = Logger(label: "ugate.httproute.access"),
        log: Logger = Logger(label: "ugate.httproute"), metrics: (any MetricsFactory)? = nil, tls: HTTPRouteTLS? = nil,
        name: String = "httproute"
    ) throws {
        let factory = metrics ?? MetricsSystem.factory
        let state = GatewayState(table: table)
        let direct = DirectUpstream(loops: loops, connectTimeout: min(defaultTimeout, 10))
        let context = GateContext(
            config: GateConfig(), router: try Router(rules: [], hosts: [:], direct: direct), loops: loops, accessLog: accessLog, log: log)
        let nio = HTTPRouteNIO(
            group: MultiThreadedEventLoopGroup.singleton, state: state,
            settings: .init(
                listenerName: name, defaultTimeout: defaultTimeout, accessLog: accessLog, log: log, metrics: factory,
                pool: BackendPool(connectTimeout: min(defaultTimeout, 10))))
        listener = try TCPListener(name: name, proto: .tcp, address: try SocketAddress(host: host, port: port), context: context) { bound in
            HTTPRouteFront(
                state: state, upstream: direct, listenerName: name, defaultTimeout: defaultTimeout, keepAliveTimeout: keepAliveTimeout,
                accessLog: accessLog, metrics: factory, nio: nio, tls: tls, context: context)
        }
        self.state = state
        address = listener.address
        listener.start()
    }

    /// Replaces the route table; requests already being served finish with the old one.
    public func update(_ table: RouteTable) {
        state.table.withLock { $0 = table }
    }

    /// Closes the listening sockets (connections being served continue).
    public func stop() {
        listener.stop()
    }
}

final class GatewayState: Sendable {
    let table: Mutex<RouteTable>
    /// Idle kept-alive backend sockets of the HTTP/1.1 path, by destination (at most 64 each).
    let idle = Mutex<[Destination: [Int32]]>([:])
    init(table: RouteTable) { self.table = Mutex(table) }

    /// What the gateway does with a request, for every protocol.
    enum Decision {
        /// Answered by the gateway itself: 404, a redirect, or 500 for a rule without backends.
        case local(status: Int, message: String, headers: [HTTPField])
        case forward(RouteAction.Forward)
    }

    /// Decides `request` with the current table (weighted pick with the system RNG); `route`
    /// receives the matched rule's label.
    func decide(_ request: RouteRequest, route: inout String) -> Decision {
        var generator = SystemRandomNumberGenerator()
        switch table.withLock({ $0.decide(request, using: &generator) }) {
        case .notFound:
            return .local(status: 404, message: "no route for \(request.host)\(request.path)", headers: [])
        case .redirect(let status, let location, let label):
            route = label
            return .local(status: status, message: "redirect to \(location)", headers: [HTTPField("Location", location)])
        case .noBackend(let label):
            route = label
            return .local(status: 500, message: "route \(label) has no backend with a weight above 0", headers: [])
        case .forward(let forward):
            route = forward.route
            return .forward(forward)
        }
    }

    deinit {
        idle.withLock { $0.values.joined().forEach { Glibc.close($0) } }
    }

    /// An idle backend socket for `destination` that is still open and silent, if any.
    func takeIdle(_ destination: Destination) -> Int32? {
        while let fd = idle.withLock({ $0[destination]?.popLast() }) {
            var byte: UInt8 = 0
            // Alive and idle: nothing to read yet (EAGAIN). EOF or stray bytes: discard.
            if recv(fd, &byte, 1, Int32(MSG_PEEK | MSG_DONTWAIT)) < 0, errno == EAGAIN || errno == EWOULDBLOCK { return fd }
            Glibc.close(fd)
        }
        return nil
    }

    /// Keeps a backend socket whose exchange ended cleanly for the next request.
    func putIdle(_ fd: Int32, _ destination: Destination) {
        let kept = idle.withLock { idle -> Bool in
            guard idle[destination, default: []].count < 64 else { return false }
            idle[destination, default: []].append(fd)
            return true
        }
        if !kept { Glibc.close(fd) }
    }
}

/// Serves one client connection: request after request until close, error or idle timeout.
struct HTTPRouteFront: CaptureFront {
    let state: GatewayState
    let upstream: DirectUpstream
    let listenerName: String
    let defaultTimeout: Double
    let keepAliveTimeout: Double
    let accessLog: Logger
    let metrics: any MetricsFactory
    let nio: HTTPRouteNIO
    let tls: HTTPRouteTLS?
    let context: GateContext
    static let limits = HTTPHeadLimits()
    static let preface = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)

    func serve(_ conn: ClientConn) async {
        defer { conn.close() }
        if let tls {
            await serveTLS(conn, tls)
            return
        }
        // HTTP/2 with prior knowledge (h2c): NIO serves the connection from its preface on.
        while conn.inbox.count < Self.preface.count, conn.inbox.elementsEqual(Self.preface.prefix(conn.inbox.count)) {
            guard (try? await conn.read(deadline: Self.deadline(keepAliveTimeout))) == true else { return }
        }
        if conn.inbox.starts(with: Self.preface) {
            nio.adopt(fd: conn.handOff(), prefix: conn.takeInbox(), tls: nil, peer: conn.peer)
            return
        }
        Self.noDelay(conn.fd)
        for _ in 0..<100_000 {
            guard await serveRequest(conn) else { return }
        }
    }

    /// TCP_NODELAY: a response head and body written separately must not wait for the
    /// peer's delayed ACK (Nagle).
    static func noDelay(_ fd: Int32) {
        var one: Int32 = 1
        _ = setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
    }

    /// Reads the ClientHello, then terminates TLS with the certificate for its SNI (NIO
    /// serves the connection: HTTP/2 or HTTP/1.1 by ALPN) or relays it untouched to the
    /// passthrough destination.
    func serveTLS(_ conn: ClientConn, _ tls: HTTPRouteTLS) async {
        let deadline = context.handshakeDeadline
        var serverName: String?
        sniffing: while true {
            switch Sniffer.sniff(conn.inbox, maxBytes: 16384) {
            case .needMore:
                guard (try? await conn.read(deadline: deadline)) == true else { return }
            case .tls(let hello):
                serverName = hello.serverName
                break sniffing
            default:
                accessLog.info("not a TLS ClientHello", metadata: ["listener": "\(listenerName)", "src": "\(conn.peer)"])
                return
            }
        }
        switch tls.choose(serverName: serverName) {
        case .terminate(let sslContext, _):
            nio.adopt(fd: conn.handOff(), prefix: conn.takeInbox(), tls: sslContext, peer: conn.peer)
        case .passthrough(let destination):
            let info = StreamInfo(listener: listenerName, source: conn.peer, destination: destination, proto: "tls")
            do {
                let fd = try await upstream.dial(destination, for: info)
                context.relay(conn, upstream: fd, info: info, upstreamName: "passthrough", mode: .copy)
            } catch {
                accessLog.info("passthrough failed", metadata: ["listener": "\(listenerName)", "sni": "\(serverName ?? "-")", "error": "\(error)"])
            }
        case .refuse:
            accessLog.info("no certificate or passthrough for SNI", metadata: ["listener": "\(listenerName)", "src": "\(conn.peer)", "sni": "\(serverName ?? "-")"])
        }
    }

    /// Writes the access-log line and counts the request.
    static func record(_ entry: Entry, listener: String, proto: String, accessLog: Logger, metrics: any MetricsFactory) {
        accessLog.info("request", metadata: entry.metadata(listener, proto: proto))
        Counter(label: "ugate_httproute_requests_total", dimensions: [("route", entry.route), ("status", "\(entry.status)")], factory: metrics).increment()
        Counter(label: "ugate_httproute_response_bytes_total", dimensions: [("route", entry.route)], factory: metrics).increment(by: entry.bytes)
    }

    static func deadline(_ seconds: Double) -> UInt64 { GateLoop.monotonicMillis() + UInt64(max(seconds, 0.001) * 1000) }

    /// A response generated by the gateway itself.
    static func localResponse(status: Int, message: String, headers: [HTTPField] = [], close: Bool) -> [UInt8] {
        if close { return HTTPResponseWriter.error(status: status, message: message, headers: headers) }
        let body = message + "\n"
        var out = "HTTP/1.1 \(status) \(HTTPResponseWriter.reasonPhrase(status))\r\n"
        for field in headers { out += "\(field.name): \(field.value)\r\n" }
        out += "Content-Type: text/plain; charset=utf-8\r\nContent-Length: \(body.utf8.count)\r\n\r\n" + body
        return Array(out.utf8)
    }

    /// Serves one request; returns whether the connection stays open.
    func serveRequest(_ conn: ClientConn) async -> Bool {
        let idle = Self.deadline(keepAliveTimeout)
        var parsed: (HTTPRequestHead, Int)?
        while parsed == nil {
            switch HTTPRequestHead.parse(conn.inbox, limits: Self.limits) {
            case .done(let head, let consumed): parsed = (head, consumed)
            case .invalid(let error):
                try? await conn.write(HTTPResponseWriter.error(error), deadline: Self.deadline(1))
                accessLog.info("bad request", metadata: ["listener": "\(listenerName)", "src": "\(conn.peer)", "status": "\(error.httpStatus)", "error": "\(error.message)"])
                return false
            case .needMore:
                do {
                    guard try await conn.read(deadline: idle) else { return false }
                } catch {
                    if !conn.inbox.isEmpty { try? await conn.write(HTTPResponseWriter.error(status: 408, message: "request head not received in time"), deadline: Self.deadline(1)) }
                    return false
                }
            }
        }
        guard let (head, consumed) = parsed else { return false }
        conn.inbox.removeFirst(consumed)
        let started = GateLoop.monotonicMillis()
        let request = RouteRequest(head)
        var log = Entry(method: head.method, host: request.host, path: request.path, started: started)
        defer { Self.record(log, listener: listenerName, proto: "http/1.1", accessLog: accessLog, metrics: metrics) }

        guard head.target.hasPrefix("/") else {
            log.status = 400
            try? await conn.write(HTTPResponseWriter.error(status: 400, message: "request-target \(head.target) is not origin-form (/path)"), deadline: Self.deadline(1))
            return false
        }
        let keepAlive = head.wantsKeepAlive && head.bodyFraming == .none
        let local: (Int, String, [HTTPField])
        switch state.decide(request, route: &log.route) {
        case .local(let status, let message, let headers):
            local = (status, message, headers)
        case .forward(let forward):
            if !forward.mirrors.isEmpty { mirror(head, forward) }
            return await proxy(conn, head, forward, &log)
        }
        log.status = local.0
        let bytes = Self.localResponse(status: local.0, message: local.1, headers: local.2, close: !keepAlive)
        log.bytes = bytes.count
        do {
            try await conn.write(bytes, deadline: Self.deadline(keepAliveTimeout))
        } catch {
            return false
        }
        return keepAlive
    }

    /// RequestMirror: a fire-and-forget copy of the request head (rewritten like the main
    /// request's) to each mirror backend, sent from a NIO loop; the main request never waits.
    func mirror(_ head: HTTPRequestHead, _ forward: RouteAction.Forward) {
        var copy = NIOHTTP1.HTTPRequestHead(version: .http1_1, method: NIOHTTP1.HTTPMethod(rawValue: head.method), uri: forward.target)
        for field in forward.headers { copy.headers.add(name: field.name, value: field.value) }
        let pool = nio.settings.pool
        let log = nio.settings.log
        let loop = nio.group.next()
        for backend in forward.mirrors {
            loop.execute { pool.mirror(copy, to: backend.destination, on: loop, log: log) }
        }
    }

    /// Forwards one request to its backend and the response back.
    func proxy(
        _ conn: ClientConn, _ head: HTTPRequestHead, _ forward: RouteAction.Forward, _ log: inout Entry, reuse: Bool = true
    ) async -> Bool {
        let deadline = Self.deadline(forward.timeout ?? defaultTimeout)
        var responded = false
        func fail(_ status: Int, _ message: String) async -> Bool {
            log.status = status
            log.error = message
            if !responded {
                try? await conn.write(HTTPResponseWriter.error(status: status, message: message), deadline: Self.deadline(1))
            }
            return false
        }
        var connected: (conn: ClientConn, destination: Destination)?
        var failures: [String] = []
        // A kept-alive connection from an earlier request first (bodiless requests only, so a
        // connection the backend closed meanwhile can be replaced without losing a body).
        let reused = reuse && head.bodyFraming == .none ? state.takeIdle(forward.backend.destination) : nil
        if let fd = reused {
            log.backend = forward.backend.name
            connected = (ClientConn(fd: fd, loop: conn.loop, peer: nil), forward.backend.destination)
        }
        // Connect failures are retried on the rule's other backends (each at most once).
        for candidate in [forward.backend] + forward.fallbacks where connected == nil {
            log.backend = candidate.name
            let info = StreamInfo(listener: listenerName, source: conn.peer, destination: candidate.destination, proto: "http/1.1")
            do {
                let fd = try await withTimeout(deadline) { try await upstream.dial(candidate.destination, for: info) }
                Self.noDelay(fd)
                connected = (ClientConn(fd: fd, loop: conn.loop, peer: nil), candidate.destination)
            } catch let error as GateError where error.code == .timeout {
                return await fail(504, "backend \(candidate.name) (\(candidate.destination)) did not accept the connection in time")
            } catch {
                failures.append("backend \(candidate.name) (\(candidate.destination)) unavailable: \(error)")
            }
        }
        guard let (backend, destination) = connected else { return await fail(503, failures.joined(separator: "\n")) }
        defer { backend.close() }
        if !failures.isEmpty { log.error = failures.joined(separator: "; ") }

        var upstreamHead = head
        upstreamHead.target = forward.target
        upstreamHead.headers = forward.headers
        do {
            try await backend.write(try upstreamHead.forwardHead(HTTPForwardOptions(close: false)), deadline: deadline)
            _ = try await Self.relayBody(head.bodyFraming, from: conn, to: backend, deadline: deadline)
        } catch let error as GateError where error.code == .timeout {
            return await fail(504, "backend \(forward.backend.name) timed out receiving the request")
        } catch {
            if reused != nil { return await proxy(conn, head, forward, &log, reuse: false) }
            return await fail(502, "sending the request to backend \(forward.backend.name) failed: \(error)")
        }

        var response: HTTP1ResponseHead?
        var sawBytes = false
        do {
            while response == nil {
                switch HTTP1ResponseHead.parse(backend.inbox, limits: Self.limits) {
                case .done(let parsed, let consumed):
                    if parsed.isInterim {
                        try await conn.write(Array(backend.inbox[0..<consumed]), deadline: deadline)
                    } else {
                        response = parsed
                    }
                    backend.inbox.removeFirst(consumed)
                case .invalid(let error):
                    return await fail(502, "backend \(forward.backend.name) sent an invalid response: \(error.message)")
                case .needMore:
                    guard try await backend.read(deadline: deadline) else {
                        if reused != nil && !sawBytes { return await proxy(conn, head, forward, &log, reuse: false) }
                        return await fail(502, "backend \(forward.backend.name) closed the connection without a response")
                    }
                    sawBytes = true
                }
            }
        } catch let error as GateError where error.code == .timeout {
            return await fail(504, "backend \(forward.backend.name) did not respond within \(forward.timeout ?? defaultTimeout) s")
        } catch {
            if reused != nil && !sawBytes { return await proxy(conn, head, forward, &log, reuse: false) }
            return await fail(502, "reading the response of backend \(forward.backend.name) failed: \(error)")
        }
        guard var response else { return false }
        let framing: HTTPBodyFraming
        do {
            framing = try response.bodyFraming(requestMethod: head.method)
        } catch {
            return await fail(502, "backend \(forward.backend.name) sent a response with bad framing: \(error.message)")
        }
        let keepAlive = head.wantsKeepAlive && framing != .untilClose && framing != .tunnel
        let backendKeepsAlive = response.version == .http1_1 && framing != .untilClose && framing != .tunnel
            && !response.tokens("connection").contains { $0.trimmingCharacters(in: .whitespaces).lowercased() == "close" }
        let hopByHop: Set<String> = ["connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade"]
        response.headers.removeAll { hopByHop.contains($0.name.lowercased()) }
        for modifier in forward.responseModifiers { modifier.apply(to: &response.headers) }
        if !keepAlive { response.headers.append(HTTPField("Connection", "close")) }
        var out = "HTTP/1.1 \(response.status) \(response.reason)\r\n"
        for field in response.headers { out += "\(field.name): \(field.value)\r\n" }
        out += "\r\n"
        log.status = response.status
        do {
            try await conn.write(Array(out.utf8), deadline: deadline)
            responded = true
            log.bytes = try await Self.relayBody(framing, from: backend, to: conn, deadline: deadline)
        } catch {
            log.error = "relaying the response failed: \(error)"
            return false
        }
        // Both messages ended on their framing: the backend connection serves the next request.
        if backendKeepsAlive && backend.inbox.isEmpty { state.putIdle(backend.handOff(), destination) }
        return keepAlive
    }

    /// Copies a message body delimited by `framing` from `source` (its inbox first) to
    /// `destination`; returns the bytes copied.
    static func relayBody(_ framing: HTTPBodyFraming, from source: ClientConn, to destination: ClientConn, deadline: UInt64) async throws -> Int {
        var total = 0
        func moveInbox(_ count: Int) async throws {
            try await destination.write(Array(source.inbox[0..<count]), deadline: deadline)
            source.inbox.removeFirst(count)
            total += count
        }
        switch framing {
        case .none, .tunnel:
            return 0
        case .contentLength(let length):
            var remaining = length
            while remaining > 0 {
                if source.inbox.isEmpty {
                    guard try await source.read(max: 65536, deadline: deadline) else { throw GateError(.closed, "body ended \(remaining) bytes early") }
                }
                let take = min(remaining, source.inbox.count)
                try await moveInbox(take)
                remaining -= take
            }
        case .chunked:
            var scanner = HTTPChunkedScanner()
            while true {
                if source.inbox.isEmpty {
                    guard try await source.read(max: 65536, deadline: deadline) else { throw GateError(.closed, "chunked body ended early") }
                }
                switch scanner.scan(source.inbox) {
                case .needMore: try await moveInbox(source.inbox.count)
                case .end(let consumed):
                    try await moveInbox(consumed)
                    return total
                case .invalid(let error): throw GateError(.protocolViolation, "chunked body: \(error.message)")
                }
            }
        case .untilClose:
            while true {
                if !source.inbox.isEmpty { try await moveInbox(source.inbox.count) }
                guard try await source.read(max: 65536, deadline: deadline) else { break }
            }
        }
        return total
    }

    /// Runs `body`, throwing `GateError(.timeout)` when `deadline` passes first.
    func withTimeout<T: Sendable>(_ deadline: UInt64, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
        let now = GateLoop.monotonicMillis()
        guard deadline > now else { throw GateError(.timeout, "request deadline") }
        return try await withThrowingTaskGroup(of: T.self) { group in
            group.addTask { try await body() }
            group.addTask {
                try await Task.sleep(for: .milliseconds(Int(deadline - now)))
                throw GateError(.timeout, "request deadline")
            }
            defer { group.cancelAll() }
            return try await group.next()!
        }
    }

    /// The access-log fields of one request.
    struct Entry {
        var method: String
        var host: String
        var path: String
        var started: UInt64
        var route = "-"
        var backend = "-"
        var status = 0
        var bytes = 0
        var error: String?

        func metadata(_ listener: String, proto: String) -> Logger.Metadata {
            var m: Logger.Metadata = [
                "listener": "\(listener)", "proto": "\(proto)", "method": "\(method)", "host": "\(host)", "path": "\(path)", "route": "\(route)",
                "backend": "\(backend)", "status": "\(status)", "bytes": "\(bytes)",
                "ms": "\(GateLoop.monotonicMillis() - started)",
            ]
            if let error { m["error"] = "\(error)" }
            return m
        }
    }
}
