import CLinux
import Glibc
import Logging

/// Shared by every capture front of a node: config, route table, loops, loggers.
final class GateContext: Sendable {
    let config: GateConfig
    let router: Router
    let loops: GateLoopGroup
    /// One line per stream (the access log).
    let accessLog: Logger
    let log: Logger
    /// Live streams their upstreams carry themselves (not in any loop's relays).
    let carried = CarriedStreams()

    init(config: GateConfig, router: Router, loops: GateLoopGroup, accessLog: Logger, log: Logger) {
        self.config = config
        self.router = router
        self.loops = loops
        self.accessLog = accessLog
        self.log = log
    }

    var handshakeDeadline: UInt64 { GateLoop.monotonicMillis() + UInt64(config.handshakeTimeout * 1000) }

    /// Routes and opens the upstream side of a stream: a stream the upstream carries itself
    /// (`Upstream.open`) or else a dialled socket; with the upstream's name.
    func open(_ info: StreamInfo) async throws -> (upstream: Opened, name: String) {
        let decision = try router.route(info)
        do {
            if let stream = try await decision.upstream.open(decision.destination, for: info) {
                return (.stream(stream), decision.upstream.name)
            }
            return (.socket(try await decision.upstream.dial(decision.destination, for: info)), decision.upstream.name)
        } catch {
            GateMetrics.shared.dialFailures.increment()
            throw error
        }
    }

    /// Hands the client to the opened upstream side: a socket goes to a relay with it
    /// (`relay(_:upstream:…)`), a carried stream takes the client socket itself. The client's
    /// unconsumed bytes plus `prefix` go to the upstream first.
    func relay(_ conn: ClientConn, upstream: Opened, info: StreamInfo, upstreamName: String, mode: ForwardMode, prefix: [UInt8] = []) {
        switch upstream {
        case .socket(let fd):
            relay(conn, upstream: fd, info: info, upstreamName: upstreamName, mode: mode, prefix: prefix)
        case .stream(let stream):
            carry(conn, on: stream, info: info, upstreamName: upstreamName, prefix: prefix)
        }
    }

    /// Gives the client socket to a stream its upstream carries: registered in `carried`
    /// (/debug/streams, idle timeout, stop), metrics and the access-log line as for a relay
    /// (mode `stream`), written when the stream reports its end.
    private func carry(_ conn: ClientConn, on stream: any UpstreamStream, info: StreamInfo, upstreamName: String, prefix: [UInt8]) {
        let id = Relay.ids.wrappingAdd(1, ordering: .relaxed).newValue
        let started = GateLoop.monotonicMillis()
        guard carried.add(id: id, info: info, upstreamName: upstreamName, stream: stream, now: started) else {
            // The node is stopping.
            stream.cancel()
            conn.close(reset: true)
            return
        }
        let logger = accessLog
        let carried = self.carried
        let idleMillis = UInt64(config.idleTimeout * 1000)
        GateMetrics.shared.streamOpened()
        let client = CapturedClient(fd: conn.handOff(), prefix: prefix + conn.takeInbox()) { totals in
            let cancelled = carried.remove(id: id)
            let end: RelayEnd = totals.clean ? .done : cancelled ?? .reset
            let detail = end == .idle ? "idle for \(idleMillis) ms" : totals.detail
            GateMetrics.shared.streamClosed(up: totals.bytesUp, down: totals.bytesDown, end: end.rawValue, modeLabel: GateMetrics.carriedMode)
            Relay.logStream(
                logger, id: id, info: info, upstreamName: upstreamName, up: totals.bytesUp, down: totals.bytesDown,
                millis: GateLoop.monotonicMillis() - started, mode: GateMetrics.carriedMode, end: end, detail: detail)
        }
        stream.attach(client)
    }

    /// Sweeps `carried` for idle streams once a second on `loop` (the node's first loop) until
    /// the loop stops. Starts on the loop's thread.
    func sweepCarried(on loop: GateLoop) {
        loop.schedule(afterMillis: 1000) { [self] in
            carried.sweep(now: GateLoop.monotonicMillis(), idleMillis: UInt64(config.idleTimeout * 1000))
            sweepCarried(on: loop)
        }
    }

    /// Hands the client and upstream sockets to a relay on the client's loop; the client's
    /// unconsumed bytes plus `prefix` go to the upstream first.
    func relay(_ conn: ClientConn, upstream: Int32, info: StreamInfo, upstreamName: String, mode: ForwardMode, prefix: [UInt8] = []) {
        let client = conn.handOff()
        let bytes = prefix + conn.takeInbox()
        let loop = conn.loop
        loop.execute { [self] in
            startRelay(loop: loop, client: client, upstream: upstream, info: info, upstreamName: upstreamName, mode: mode, prefix: bytes)
        }
    }

    /// Starts a relay; on `loop`'s thread.
    @discardableResult
    func startRelay(
        loop: GateLoop, client: Int32, upstream: Int32, upstreamRegistered: Bool = false, info: StreamInfo,
        upstreamName: String, mode: ForwardMode, prefix: [UInt8]
    ) -> Relay {
        Relay.start(
            loop: loop, client: client, upstream: upstream, upstreamRegistered: upstreamRegistered, info: info,
            upstreamName: upstreamName, mode: mode, prefix: prefix, idleTimeoutMillis: UInt64(config.idleTimeout * 1000),
            logger: accessLog)
    }

    /// Where a datagram flow goes (TPROXY UDP, SOCKS5 UDP ASSOCIATE): the route table decides
    /// as for a stream (`deny` refuses, a `hosts` name rewrites the destination). Only direct
    /// routes carry datagrams — the named upstreams (mesh transports) carry TCP streams — so a
    /// route to one refuses the flow with an error that says so.
    func udpRoute(_ info: StreamInfo) throws -> Destination {
        let decision = try router.route(info)
        guard decision.upstream is DirectUpstream else {
            throw GateError(.noRoute, "\(info.destination) routes to \(decision.upstream.name), which carries TCP streams only")
        }
        return decision.destination
    }

    /// Logs a datagram flow the route table refused (once per flow, not per datagram).
    func udpRefused(listener: String, source: SocketAddress, destination: Destination, _ error: any Error) {
        GateMetrics.shared.dialFailures.increment()
        log.info("udp flow refused", metadata: ["listener": "\(listener)", "src": "\(source)", "dst": "\(destination)", "error": "\(error)"])
    }

    /// Logs a failed dial.
    func dialFailed(_ info: StreamInfo, _ error: any Error) {
        log.info("dial failed", metadata: ["listener": "\(info.listener)", "src": "\(info.source)", "dst": "\(info.destination)", "error": "\(error)"])
    }

    /// The fast path of `forward` for a direct dial of an IP literal: connect and relay on the
    /// connection's loop (the accepting one, so this runs on its thread), with no task and no
    /// hop. Returns false when the route needs `forward`.
    func forwardOnLoop(_ conn: ClientConn, info: StreamInfo, mode: ForwardMode) -> Bool {
        guard let decision = try? router.route(info), decision.upstream is DirectUpstream,
            let address = try? SocketAddress(host: decision.destination.host, port: decision.destination.port)
        else { return false }
        PendingConnect.start(
            loop: conn.loop, client: conn.handOff(), address: address, info: info, upstreamName: "direct", mode: mode, prefix: [],
            context: self)
        return true
    }

    /// Closes a stream whose first bytes were invalid for the protocol they claim.
    func reject(_ conn: ClientConn, info: StreamInfo, why: String) {
        GateMetrics.shared.handshakeFailures.increment()
        log.info("stream rejected", metadata: ["listener": "\(info.listener)", "src": "\(info.source)", "dst": "\(info.destination)", "error": "\(why)"])
        conn.close()
    }

    /// Dials and relays; on failure resets the client and logs why. The common tail of the
    /// port-forward, REDIRECT and TPROXY fronts.
    func forward(_ conn: ClientConn, info: StreamInfo, mode: ForwardMode) async {
        do {
            let (opened, upstream) = try await open(info)
            relay(conn, upstream: opened, info: info, upstreamName: upstream, mode: mode)
        } catch {
            dialFailed(info, error)
            conn.close(reset: true)
        }
    }
}

/// The upstream side of a captured stream once it is open (`GateContext.open`).
enum Opened {
    /// A connected socket the Gate's relay joins to the client.
    case socket(Int32)
    /// A stream the upstream carries itself; it takes the client socket (`attach`).
    case stream(any UpstreamStream)

    /// The local address a SOCKS5 reply reports: the socket's, unknown (0.0.0.0:0) for a stream.
    var boundAddress: Destination {
        if case .socket(let fd) = self, let local = SocketAddress.local(of: fd) { return local.destination }
        return Destination(host: "0.0.0.0", port: 0)
    }

    /// Drops it unused (the client went away during the reply): RST, or a reset stream.
    func abort() {
        switch self {
        case .socket(let fd): Sys.abort(fd)
        case .stream(let stream): stream.cancel()
        }
    }
}

/// Serves connections accepted by one listener (port-forward, SOCKS5, HTTP proxy, REDIRECT …).
protocol CaptureFront: Sendable {
    func serve(_ conn: ClientConn) async
    /// Serves the connection without a task when it can (called on the accepting loop's
    /// thread); false falls back to `serve`.
    func serveOnLoop(_ conn: ClientConn) -> Bool
}

extension CaptureFront {
    func serveOnLoop(_ conn: ClientConn) -> Bool { false }
}

/// A non-blocking connect in progress on a loop, for `GateContext.forwardOnLoop`: on success
/// the relay starts on the same loop (`prefix` sent first); on failure or timeout the client is reset.
final class PendingConnect: LoopHandler {
    let loop: GateLoop
    let client: Int32
    let upstream: Int32
    let address: SocketAddress
    let info: StreamInfo
    let upstreamName: String
    let mode: ForwardMode
    let prefix: [UInt8]
    let context: GateContext
    var timer: LoopTimer?

    private init(
        loop: GateLoop, client: Int32, upstream: Int32, address: SocketAddress, info: StreamInfo, upstreamName: String,
        mode: ForwardMode, prefix: [UInt8], context: GateContext
    ) {
        self.loop = loop
        self.client = client
        self.upstream = upstream
        self.address = address
        self.info = info
        self.upstreamName = upstreamName
        self.mode = mode
        self.prefix = prefix
        self.context = context
    }

    /// Starts the connect; on `loop`'s thread.
    static func start(
        loop: GateLoop, client: Int32, address: SocketAddress, info: StreamInfo, upstreamName: String, mode: ForwardMode,
        prefix: [UInt8], context: GateContext
    ) {
        let fd: Int32
        do {
            let (s, connected) = try Sys.startConnect(address)
            if connected {
                context.startRelay(
                    loop: loop, client: client, upstream: s, info: info, upstreamName: upstreamName, mode: mode, prefix: prefix)
                return
            }
            fd = s
        } catch {
            GateMetrics.shared.dialFailures.increment()
            context.dialFailed(info, error)
            Sys.abort(client)
            return
        }
        let pending = PendingConnect(
            loop: loop, client: client, upstream: fd, address: address, info: info, upstreamName: upstreamName, mode: mode,
            prefix: prefix, context: context)
        guard loop.register(fd, Interest.write, pending) else {
            pending.fail(GateError(.syscall, "epoll_ctl", errno: errno))
            return
        }
        pending.timer = loop.schedule(afterMillis: UInt64(context.config.connectTimeout * 1000)) {
            pending.fail(GateError(.timeout, "connect \(address)"))
        }
    }

    func ready(fd: Int32, events: UInt32) {
        timer?.cancel()
        do {
            try Sys.finishConnect(upstream, address)
        } catch {
            fail(error)
            return
        }
        context.startRelay(
            loop: loop, client: client, upstream: upstream, upstreamRegistered: true, info: info, upstreamName: upstreamName,
            mode: mode, prefix: prefix)
    }

    private func fail(_ error: any Error) {
        timer?.cancel()
        loop.deregister(upstream)
        Glibc.close(upstream)
        Sys.abort(client)
        GateMetrics.shared.dialFailures.increment()
        context.dialFailed(info, error)
    }
}

/// A listening TCP socket on a gate loop; every accepted connection goes to its front on a
/// task, with its handshake I/O on the loop that accepted it.
final class TCPListener: LoopHandler, @unchecked Sendable {  // fields are immutable after init; `ready` runs on the loop threads
    let name: String
    let proto: ListenerProto
    let address: SocketAddress
    /// One listening socket per loop (`SO_REUSEPORT`): the kernel spreads connections over the
    /// loops and each is accepted, dialled and relayed on one thread.
    private let sockets: [(loop: GateLoop, fd: Int32)]
    private let context: GateContext
    private let front: any CaptureFront

    /// Binds `address` once per loop; `makeFront` gets the bound address (with the real port).
    init(
        name: String, proto: ListenerProto, address: SocketAddress, transparent: Bool = false, context: GateContext,
        makeFront: (SocketAddress) -> any CaptureFront
    ) throws {
        self.name = name
        self.proto = proto
        let first = try Sys.listen(address, transparent: transparent, reusePort: true)
        let bound = SocketAddress.local(of: first) ?? address
        var sockets = [(loop: context.loops.loops[0], fd: first)]
        do {
            for loop in context.loops.loops.dropFirst() {
                sockets.append((loop, try Sys.listen(bound, transparent: transparent, reusePort: true)))
            }
        } catch {
            for s in sockets { Glibc.close(s.fd) }
            throw error
        }
        self.sockets = sockets
        self.address = bound
        self.context = context
        front = makeFront(bound)
    }

    func start() {
        for (loop, fd) in sockets {
            loop.execute { [self] in
                if !loop.register(fd, Interest.read, self) {
                    context.log.error("cannot watch listener", metadata: ["listener": "\(name)"])
                }
            }
        }
    }

    func stop() {
        for (loop, fd) in sockets {
            loop.execute {
                loop.deregister(fd)
                Glibc.close(fd)
            }
        }
    }

    func ready(fd: Int32, events: UInt32) {
        guard let loop = sockets.first(where: { $0.fd == fd })?.loop else { return }
        for _ in 0..<64 {
            var ss = sockaddr_storage()
            var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
            let c = withUnsafeMutablePointer(to: &ss) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    ugate_accept4(fd, $0, &len, Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue))
                }
            }
            if c < 0 {
                let e = errno
                if e == EAGAIN || e == EWOULDBLOCK || e == EINTR || e == ECONNABORTED { return }
                // Out of descriptors: stop accepting for a moment instead of spinning.
                context.log.warning("accept failed", metadata: ["listener": "\(name)", "error": "\(String(cString: strerror(e)))"])
                loop.modify(fd, 0)
                loop.schedule(afterMillis: 100) { loop.modify(fd, Interest.read) }
                return
            }
            GateMetrics.shared.accepted.increment()
            let conn = ClientConn(fd: c, loop: loop, peer: SocketAddress(storage: &ss))
            if front.serveOnLoop(conn) { continue }
            let front = self.front
            Task { await front.serve(conn) }
        }
    }
}
