import Foundation
import Glibc
import CoreMetrics
import Logging
import NIOPosix
import Synchronization

/// A plain HTTP/1.1 listener that routes each request by a `RouteTable` (Gateway API
/// HTTPRoute semantics) to a backend, with client keep-alive.
///
/// Threads: the listening sockets live on the gate loops (`TCPListener`, one per loop); a task
/// per accepted connection tells h2c (the HTTP/2 preface) from HTTP/1.1, or reads the TLS
/// ClientHello, and hands the socket to `HTTPRouteNIO`, which serves every request of the
/// connection on one NIO event loop (client channel and pooled backend channels alike).
/// The route table sits behind a mutex so `update(_:)` swaps it without touching connections.
/// Backends are dialled through `router` when one is given (a backend the node's route table
/// sends to a mesh upstream is reached through that peer); a failed connect is retried on the
/// rule's other backends.
public final class HTTPGateway: Sendable {
    /// The bound address (with the real port when 0 was asked for).
    public let address: SocketAddress
    private let listener: TCPListener
    private let state: GatewayState
    private let nio: HTTPRouteNIO
    private let passthrough: PassthroughRelays

    /// Binds `host:port` (port 0: ephemeral) on `loops` and starts serving.
    /// - Parameters:
    ///   - defaultTimeout: seconds for a request whose rule has no `timeouts.request`.
    ///   - mirrorBodyLimit: largest request body (bytes) copied to RequestMirror backends; a
    ///     request with a larger body is not mirrored (counted and logged).
    ///   - retryBodyLimit: largest request body (bytes) kept for a replay (retries); a request
    ///     with a larger body is never sent again.
    ///   - http2IdleTimeout: seconds an HTTP/2 connection may stay without streams (then GOAWAY).
    ///   - sendTimeout: seconds response bytes may wait for a client that takes none of them
    ///     (then the connection and its backend connections are closed).
    ///   - http2SettingsTimeout: seconds an HTTP/2 client has to acknowledge the gateway's
    ///     SETTINGS (then GOAWAY SETTINGS_TIMEOUT).
    ///   - connectTimeout: seconds to connect to a backend (also through a mesh upstream), and
    ///     to a TLS passthrough backend (direct or through a mesh upstream).
    ///   - accessLog: one line per request (method, host, path, route, backend, status, bytes, ms).
    ///   - metrics: where the per-route counters go (`ugate_httproute_requests_total{route,status}`,
    ///     `ugate_httproute_response_bytes_total{route}`, `ugate_httproute_send_timeouts_total{proto}`); nil: the bootstrapped `MetricsSystem`.
    ///   - router: the node's route table; a backend it routes to an upstream other than
    ///     `direct` (a mesh peer) is dialled through that upstream. nil: every backend direct.
    ///   - retryBudgets: the retry budgets the listener counts in (routes and Services); the
    ///     listeners of one node share one (`HTTPRouteService`). By default the listener's own.
    public init(
        table: RouteTable, host: String = "127.0.0.1", port: UInt16 = 0, loops: GateLoopGroup,
        defaultTimeout: Double = 30, keepAliveTimeout: Double = 60, http2IdleTimeout: Double = 60, sendTimeout: Double = 60,
        http2SettingsTimeout: Double = 10, connectTimeout: Double = 10,
        mirrorBodyLimit: Int = 1 << 20, retryBodyLimit: Int = HTTPRouteConfig.defaultRetryBodyLimit, accessLog: Logger = Logger(label: "ugate.httproute.access"),
        log: Logger = Logger(label: "ugate.httproute"), metrics: (any MetricsFactory)? = nil, tls: HTTPRouteTLS? = nil,
        name: String = "httproute", router: Router? = nil, retryBudgets: RetryBudgets = RetryBudgets()
    ) throws {
        let factory = metrics ?? MetricsSystem.factory
        let state = GatewayState(table: table)
        let direct = DirectUpstream(loops: loops, connectTimeout: min(defaultTimeout, connectTimeout))
        // TLS passthrough backends are dialled through the node's route table too.
        let context = GateContext(
            config: GateConfig(), router: try router ?? Router(rules: [], hosts: [:], direct: direct), loops: loops, accessLog: accessLog, log: log)
        let nio = HTTPRouteNIO(
            group: MultiThreadedEventLoopGroup.singleton, state: state,
            settings: .init(
                listenerName: name, defaultTimeout: defaultTimeout, keepAliveTimeout: keepAliveTimeout, http2IdleTimeout: http2IdleTimeout,
                sendTimeout: sendTimeout, http2SettingsTimeout: http2SettingsTimeout,
                mirrorBodyLimit: mirrorBodyLimit, replayLimit: retryBodyLimit, accessLog: accessLog, log: log, counters: RouteCounters(factory: factory),
                pool: BackendPool(connectTimeout: min(defaultTimeout, connectTimeout), router: router, listenerName: name),
                retryBudgets: retryBudgets))
        let passthrough = PassthroughRelays()
        listener = try TCPListener(name: name, proto: .tcp, address: try SocketAddress(host: host, port: port), context: context) { bound in
            HTTPRouteFront(
                listenerName: name, keepAliveTimeout: keepAliveTimeout, connectTimeout: connectTimeout,
                accessLog: accessLog, nio: nio, tls: tls, context: context, passthrough: passthrough)
        }
        self.state = state
        self.nio = nio
        self.passthrough = passthrough
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

    /// Closes the client connections gracefully: HTTP/2 with the two-step GOAWAY (the streams
    /// in flight finish), HTTP/1.1 at once when idle, else after the response in progress
    /// (`Connection: close`); a TLS handshake in progress on a gate loop finishes and its first
    /// request is answered so. `permanently`: connections adopted later too (shutdown).
    /// TLS passthrough streams (opaque) keep running until they end; `closePassthroughAfter`:
    /// those open now are closed after that many seconds (a removed Gateway listener); nil
    /// leaves them to `closeConnections()` (shutdown, after its timeout).
    public func drain(permanently: Bool = false, closePassthroughAfter: Double? = nil) {
        nio.connections.quiesceAll(permanently: permanently)
        if let closePassthroughAfter {
            passthrough.closeLater(after: closePassthroughAfter, reason: "Gateway listener removed: drain timeout")
        }
    }

    /// Client connections still open (served by NIO or on the gate loops, TLS handshakes in
    /// progress included).
    public var openConnections: Int { nio.connections.count }
    /// The client connections served on the gate loops now (their drain handles).
    var loopConnectionHandles: [LoopConnectionHandle] { nio.connections.loopHandles }

    /// TLS passthrough streams of this listener that are still open.
    public var openPassthroughStreams: Int { passthrough.count }

    /// Closes every client connection served by NIO and every TLS passthrough stream at once
    /// (shutdown: passthrough streams whose dial is still in flight are closed as they start).
    public func closeConnections() {
        nio.connections.closeAll()
        passthrough.closeAll(reason: "shutdown: drain timeout", permanently: true)
    }
}

final class GatewayState: Sendable {
    let table: Mutex<RouteTable>
    init(table: RouteTable) { self.table = Mutex(table) }

    /// What the gateway does with a request, for every protocol.
    enum Decision {
        /// Answered by the gateway itself: 404, a redirect, or 500 for a rule without backends.
        case local(status: Int, message: String, headers: [HTTPField])
        case forward(RouteAction.Forward)
    }

    /// Decides `request` with the current table (weighted pick with `generator`); `route`
    /// receives the matched rule's label.
    func decide(_ request: RouteRequest, route: inout String, using generator: inout some RandomNumberGenerator) -> Decision {
        // A copy (reference-counted storage) taken under the lock; deciding runs outside it.
        let table = table.withLock { $0 }
        switch table.decide(request, using: &generator) {
        case .notFound:
            return .local(status: 404, message: "no route for \(request.host)\(request.path)", headers: [])
        case .redirect(let status, let location, let label):
            route = label
            return .local(status: status, message: "redirect to \(location)", headers: [HTTPField("Location", location)])
        case .noBackend(let label):
            route = label
            return .local(status: 500, message: "route \(label) has no backend with a weight above 0", headers: [])
        case .refusedBackend(let label, let reason):
            route = label
            return .local(status: 500, message: "route \(label): \(reason)", headers: [])
        case .forward(let forward):
            route = forward.route
            return .forward(forward)
        }
    }
}

/// Takes one client connection: tells h2c from HTTP/1.1 (or terminates / passes through
/// TLS by SNI) and hands it to NIO.
struct HTTPRouteFront: CaptureFront {
    let listenerName: String
    let keepAliveTimeout: Double
    /// Seconds to connect to a TLS passthrough backend (direct or through an upstream).
    let connectTimeout: Double
    let accessLog: Logger
    let nio: HTTPRouteNIO
    let tls: HTTPRouteTLS?
    let context: GateContext
    /// Where passthrough streams are kept for draining.
    let passthrough: PassthroughRelays
    static let preface = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)

    /// Plain listeners: the connection is served on the accepting gate loop without a NIO
    /// channel (`HTTP1LoopConnection`, which hands h2c to NIO itself), unless
    /// `UGATE_HTTP1_NIO=1` asks for the NIO pipeline (for A/B comparisons; it also serves
    /// HTTP/1.1 over TLS with NIO, see `serveTLS`).
    func serveOnLoop(_ conn: ClientConn) -> Bool {
        guard tls == nil, !Self.http1OnNIO else { return false }
        HTTP1LoopConnection.start(fd: conn.handOff(), loop: conn.loop, nio: nio, peer: conn.peer)
        return true
    }

    static let http1OnNIO = getenv("UGATE_HTTP1_NIO").map { String(cString: $0) == "1" } ?? false

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
        // Everything else is HTTP/1.1, also served by NIO: the whole exchange (client and
        // pooled backend channel) then runs on one event loop without a thread switch.
        let h2c = conn.inbox.starts(with: Self.preface)
        nio.adopt(fd: conn.handOff(), prefix: conn.takeInbox(), mode: h2c ? .h2c : .http1, peer: conn.peer)
    }

    /// Reads the ClientHello, then terminates TLS with the certificate for its SNI or relays
    /// it untouched to the passthrough destination. A client that offers h2 in its ALPN list
    /// is served by NIO (HTTP/2, or HTTP/1.1 if NIO's ALPN answer says so); any other — ALPN
    /// `http/1.1` only, or no ALPN — gets TLS and HTTP/1.1 on the accepting gate loop
    /// (`LoopTLSHandshake`, then `HTTP1LoopConnection`), unless `UGATE_HTTP1_NIO=1`.
    ///
    /// Draining: while the ClientHello is read the connection is in the listener's registry
    /// (`ClientHelloRead`, which says who owns the socket when), so a drain waits for it; the
    /// connection it leads to (the gate loop's handshake, or NIO's channel) takes its place in
    /// the registry and is quiesced if a drain began meanwhile. A drain whose time is up ends
    /// the read (the task closes the socket), or closes the next owner if the socket was
    /// already on its way there.
    func serveTLS(_ conn: ClientConn, _ tls: HTTPRouteTLS) async {
        let deadline = context.handshakeDeadline
        let connections = nio.connections
        let read = ClientHelloRead(fd: conn.fd)
        connections.add(read)
        // Until handed over, this task keeps the entry and removes it as it returns (having
        // closed or relayed the socket, which `finish()` keeps the drain away from).
        var handedOver = false
        defer {
            if !handedOver {
                _ = read.finish()
                connections.remove(read)
            }
        }
        var serverName: String?
        var offersH2 = false
        sniffing: while true {
            switch Sniffer.sniff(conn.inbox, maxBytes: 16384) {
            case .needMore:
                guard (try? await conn.read(deadline: deadline)) == true else { return }
            case .tls(let hello):
                serverName = hello.serverName
                offersH2 = hello.alpn.contains("h2")
                break sniffing
            default:
                accessLog.info("not a TLS ClientHello", metadata: ["listener": "\(listenerName)", "src": "\(conn.peer)"])
                return
            }
        }
        // The drain's time ran out while the ClientHello was read: the socket closes.
        guard read.finish() else { return }
        switch tls.choose(serverName: serverName) {
        case .terminate(let sslContext, let loopContext, _):
            handedOver = true
            guard offersH2 || Self.http1OnNIO else {
                // The socket goes to a loop here anyway: the one `packed()` picks, not
                // necessarily the one that accepted it.
                let (fd, prefix, loop, nio, peer, name) = (conn.handOff(), conn.takeInbox(), context.loops.packed(), nio, conn.peer, serverName)
                let now = GateLoop.monotonicMillis()
                let left = deadline > now ? deadline - now : 1
                let started = loop.execute {
                    let handle = LoopTLSHandshake.start(
                        fd: fd, prefix: prefix, context: loopContext, serverName: name, loop: loop, nio: nio, peer: peer, timeoutMillis: left,
                        replacing: read)
                    guard let handle else { return connections.remove(read) }
                    if read.ended { handle.close() }
                }
                if !started {
                    Glibc.close(fd)
                    connections.remove(read)
                }
                return
            }
            nio.adopt(fd: conn.handOff(), prefix: conn.takeInbox(), mode: .tls(sslContext), peer: conn.peer, replacing: read)
        case .passthrough(let destination):
            let info = StreamInfo(listener: listenerName, source: conn.peer, destination: destination, serverName: destination.host, proto: "tls")
            do {
                // The node's route table decides (direct, a mesh peer, deny); the dial is bounded
                // by `connectTimeout` whatever the upstream (a mesh stream has no deadline of its own).
                let decision = try context.router.route(info)
                let loop = nio.group.next()
                let timeout = connectTimeout
                let fd = try await loop.flatSubmit {
                    BackendPool.dial(decision.upstream, decision.destination, for: info, on: loop, timeout: timeout)
                }.get()
                passthrough.relay(conn, upstream: fd, info: info, upstreamName: decision.upstream.name, context: context)
            } catch {
                GateMetrics.shared.dialFailures.increment()
                accessLog.info(
                    "passthrough failed",
                    metadata: ["listener": "\(listenerName)", "sni": "\(serverName ?? "-")", "backend": "\(destination)", "error": "\(error)"])
            }
        case .refuse:
            accessLog.info("no certificate or passthrough for SNI", metadata: ["listener": "\(listenerName)", "src": "\(conn.peer)", "sni": "\(serverName ?? "-")"])
        }
    }

    static func deadline(_ seconds: Double) -> UInt64 { GateLoop.monotonicMillis() + UInt64(max(seconds, 0.001) * 1000) }
}

/// The per-route counters (`ugate_httproute_requests_total{route,status}`,
/// `ugate_httproute_response_bytes_total{route}`), made once per route and status: creating
/// a swift-metrics `Counter` asks the factory each time, which is too slow per request.
final class RouteCounters: Sendable {
    private let factory: any MetricsFactory
    private let requests = Mutex<[RouteStatus: Counter]>([:])
    private let bytes = Mutex<[String: Counter]>([:])
    private let mirrorSkips = Mutex<[String: Counter]>([:])
    private let retries = Mutex<[String: Counter]>([:])
    private let sendTimeouts = Mutex<[String: Counter]>([:])
    private let retriesRefused = Mutex<[String: Counter]>([:])

    struct RouteStatus: Hashable {
        var route: String
        var status: Int
    }

    init(factory: any MetricsFactory) { self.factory = factory }

    func count(route: String, status: Int, bytes count: Int) {
        let pair = pair(RouteStatus(route: route, status: status))
        pair.requests.increment()
        pair.bytes.increment(by: count)
    }

    /// The request counter of a route and status and the byte counter of the route.
    struct Pair {
        var requests: Counter
        var bytes: Counter
    }

    func pair(_ key: RouteStatus) -> Pair {
        let factory = factory
        let route = key.route
        let requests = requests.withLock { counters in
            if let counter = counters[key] { return counter }
            let counter = Counter(label: "ugate_httproute_requests_total", dimensions: [("route", route), ("status", "\(key.status)")], factory: factory)
            counters[key] = counter
            return counter
        }
        let bytes = counter(bytes, key: route, "ugate_httproute_response_bytes_total", [("route", route)])
        return Pair(requests: requests, bytes: bytes)
    }

    /// Counts a request whose body was too large to mirror
    /// (`ugate_httproute_mirror_skipped_total{route}`).
    func mirrorSkipped(route: String) {
        counter(mirrorSkips, key: route, "ugate_httproute_mirror_skipped_total", [("route", route)]).increment()
    }

    /// Counts a request sent again, or moved to another backend after a connect failure
    /// (`ugate_httproute_retries_total{route,reason}`; reason `connect`, `stale`, `connection`
    /// or `status`, see `RetryRule.Reason`).
    func retried(route: String, reason: String) {
        counter(retries, key: route + "\u{0}" + reason, "ugate_httproute_retries_total", [("route", route), ("reason", reason)]).increment()
    }

    /// Counts a retry the route's `RetryBudget` refused (`ugate_httproute_retries_refused_total{route}`).
    func retryRefused(route: String) {
        counter(retriesRefused, key: route, "ugate_httproute_retries_refused_total", [("route", route)]).increment()
    }

    /// Counts a client connection closed because it read nothing for `sendTimeout`
    /// (`ugate_httproute_send_timeouts_total{proto}`).
    func sendTimedOut(proto: String) {
        counter(sendTimeouts, key: proto, "ugate_httproute_send_timeouts_total", [("proto", proto)]).increment()
    }

    /// The counter of `key` in `counters`, made with `label` and `dimensions` the first time.
    private func counter(_ counters: borrowing Mutex<[String: Counter]>, key: String, _ label: String, _ dimensions: [(String, String)]) -> Counter {
        let factory = factory
        return counters.withLock { counters in
            if let counter = counters[key] { return counter }
            let counter = Counter(label: label, dimensions: dimensions, factory: factory)
            counters[key] = counter
            return counter
        }
    }
}
