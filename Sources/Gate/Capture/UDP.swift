import CLinux
import Glibc

/// Datagram helpers on raw non-blocking sockets.
enum Datagram {
    /// Largest UDP payload we relay.
    static let maxSize = 65536

    static func socket(ipv6: Bool) throws -> Int32 {
        let fd = Glibc.socket(ipv6 ? AF_INET6 : AF_INET, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        try Sys.check(fd, "socket(SOCK_DGRAM)")
        return fd
    }

    /// One datagram and its source, or nil when none is waiting.
    static func receive(_ fd: Int32, into buffer: inout [UInt8]) -> (count: Int, from: SocketAddress)? {
        var ss = sockaddr_storage()
        var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let n = buffer.withUnsafeMutableBytes { buf in
            withUnsafeMutablePointer(to: &ss) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { recvfrom(fd, buf.baseAddress, buf.count, 0, $0, &len) }
            }
        }
        guard n >= 0, let from = SocketAddress(storage: &ss) else { return nil }
        return (n, from)
    }

    /// One datagram, its source and the destination the client sent it to (`IP_ORIGDSTADDR`
    /// on a TPROXY socket), or nil when none is waiting or the control message is missing.
    static func receiveWithOriginalDestination(
        _ fd: Int32, into buffer: inout [UInt8]
    ) -> (count: Int, from: SocketAddress, to: SocketAddress)? {
        var src = sockaddr_storage()
        var dst = sockaddr_storage()
        var srcLen = socklen_t(0)
        var dstLen = socklen_t(0)
        let n = buffer.withUnsafeMutableBytes { ugate_recv_with_origdst(fd, $0.baseAddress, $0.count, &src, &srcLen, &dst, &dstLen) }
        guard n >= 0, dstLen > 0, let from = SocketAddress(storage: &src), let to = SocketAddress(storage: &dst) else { return nil }
        return (n, from, to)
    }

    /// A transparent socket bound to `address` (a foreign address: the original destination of
    /// a TPROXYed datagram), so replies sent from it carry that source. Needs CAP_NET_ADMIN.
    static func transparentSender(boundTo address: SocketAddress) throws -> Int32 {
        let fd = try socket(ipv6: address.isIPv6)
        do {
            try Sys.setInt(fd, SOL_SOCKET, SO_REUSEADDR, 1, "setsockopt(SO_REUSEADDR)")
            try Sys.check(ugate_set_transparent(fd, address.isIPv6 ? 1 : 0), "setsockopt(IP_TRANSPARENT)")
            try address.withSockAddr { try Sys.check(bind(fd, $0, $1), "bind \(address)") }
            return fd
        } catch {
            Glibc.close(fd)
            throw error
        }
    }

    @discardableResult
    static func send(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, to address: SocketAddress?) -> Bool {
        let n: Int
        if let address {
            n = address.withSockAddr { sendto(fd, bytes.baseAddress, bytes.count, Int32(MSG_NOSIGNAL), $0, $1) }
        } else {
            n = Glibc.send(fd, bytes.baseAddress, bytes.count, Int32(MSG_NOSIGNAL))
        }
        if n >= 0 { GateMetrics.shared.udpDatagrams.increment() }
        return n >= 0
    }
}

/// A UDP listener with per-flow NAT: `udp://:P` forwards every datagram to `forwardTo`;
/// a TPROXY one (`"udp://…": {"proto": "tproxy"}`) asks the route table where each new flow
/// goes (the destination the client sent to, `IP_RECVORIGDSTADDR`, unless a rule denies it or
/// names a `hosts` entry) and sends the replies from that original destination (a transparent
/// socket bound to it, per flow). A flow is a (client, destination) pair with its own outbound
/// socket; flows expire after `udpIdleTimeout` without traffic, and so do refused flows (their
/// datagrams are dropped without a log line each). While a routed host name resolves, up to
/// `pendingLimit` datagrams wait. Loop-thread only after `start`.
final class UDPForwarder: LoopHandler, @unchecked Sendable {  // state is touched only on `loop`'s thread
    let name: String
    let fd: Int32
    let address: SocketAddress
    /// `udp`, or `tproxy` for a TPROXY listener.
    var proto: ListenerProto { target == nil ? .tproxy : .udp }
    /// nil for TPROXY: each datagram's original destination is its target.
    private let target: Destination?
    private let loop: GateLoop
    private let context: GateContext
    private var targetAddress: SocketAddress?
    private struct FlowKey: Hashable {
        var client: SocketAddress
        var destination: SocketAddress
    }
    private struct Flow {
        /// Connected to the destination; replies arrive here.
        var fd: Int32
        /// Where `fd` is connected: the original destination, or where a route sent it.
        var target: SocketAddress
        /// TPROXY: the transparent socket replies leave from; otherwise the listening socket.
        var reply: Int32?
        var lastSeen: UInt64
        var started: UInt64
        var bytesUp: UInt64 = 0
        var bytesDown: UInt64 = 0
        var datagramsUp: UInt64 = 0
        var datagramsDown: UInt64 = 0
    }
    private var flows: [FlowKey: Flow] = [:]
    private var flowOf: [Int32: FlowKey] = [:]
    /// Flows the route table refused, by last datagram time.
    private var refused: [FlowKey: UInt64] = [:]
    /// Flows whose routed host name is resolving, with the datagrams that arrived meanwhile.
    private var pending: [FlowKey: [[UInt8]]] = [:]
    static let pendingLimit = 64
    private var buffer = [UInt8](repeating: 0, count: Datagram.maxSize)
    private var stopped = false

    /// - Parameter target: where datagrams go; nil makes a TPROXY listener (`IP_TRANSPARENT`).
    init(name: String, address: SocketAddress, target: Destination?, context: GateContext) throws {
        self.name = name
        fd = try Sys.listen(address, udp: true, transparent: target == nil)
        self.address = SocketAddress.local(of: fd) ?? address
        self.target = target
        self.context = context
        loop = context.loops.next()
    }

    func start() {
        guard let target else {
            loop.execute { [self] in
                loop.register(fd, Interest.read, self)
                scheduleSweep()
            }
            return
        }
        Task {
            let resolved = try? SocketAddress(host: target.host, port: target.port)
            let address: SocketAddress?
            if let resolved {
                address = resolved
            } else {
                address = try? await Resolver.resolve(target).first
            }
            loop.execute { [self] in
                guard let address else {
                    context.log.error("udp target does not resolve", metadata: ["listener": "\(name)", "target": "\(target)"])
                    return
                }
                targetAddress = address
                loop.register(fd, Interest.read, self)
                scheduleSweep()
            }
        }
    }

    func stop() {
        loop.execute { [self] in
            stopped = true
            loop.deregister(fd)
            Glibc.close(fd)
            for key in Array(flows.keys) { close(key, reason: "stop") }
            refused = [:]
            pending = [:]
        }
    }

    /// Ends a flow with its access-log line (one per flow, like one per TCP stream).
    private func close(_ key: FlowKey, reason: String) {
        guard let flow = flows.removeValue(forKey: key) else { return }
        loop.deregister(flow.fd)
        Glibc.close(flow.fd)
        if let reply = flow.reply { Glibc.close(reply) }
        flowOf[flow.fd] = nil
        context.accessLog.info(
            "udp flow",
            metadata: [
                "listener": "\(name)", "proto": "\(proto)", "src": "\(key.client)", "dst": "\(key.destination)", "to": "\(flow.target)",
                "bytes.up": "\(flow.bytesUp)", "bytes.down": "\(flow.bytesDown)",
                "datagrams.up": "\(flow.datagramsUp)", "datagrams.down": "\(flow.datagramsDown)",
                "ms": "\(loop.now - flow.started)", "end": "\(reason)",
            ])
    }

    private func scheduleSweep() {
        loop.schedule(afterMillis: 1000) { [self] in
            guard !stopped else { return }
            let limit = UInt64(context.config.udpIdleTimeout * 1000)
            for (key, flow) in flows where loop.now - flow.lastSeen > limit { close(key, reason: "idle") }
            refused = refused.filter { loop.now - $0.value <= limit }
            scheduleSweep()
        }
    }

    func ready(fd readyFd: Int32, events: UInt32) {
        for _ in 0..<64 {
            if readyFd == fd {
                if target == nil {
                    guard let (n, from, to) = Datagram.receiveWithOriginalDestination(fd, into: &buffer) else { return }
                    fromClient(n, FlowKey(client: from, destination: to))
                } else {
                    guard let (n, from) = Datagram.receive(fd, into: &buffer) else { return }
                    guard let targetAddress else { continue }
                    fromClient(n, FlowKey(client: from, destination: targetAddress))
                }
            } else {
                guard let (n, _) = Datagram.receive(readyFd, into: &buffer) else { return }
                guard let key = flowOf[readyFd], let flow = flows[key] else { continue }
                flows[key]?.lastSeen = loop.now
                flows[key]?.bytesDown += UInt64(n)
                flows[key]?.datagramsDown += 1
                _ = buffer.withUnsafeBytes { Datagram.send(flow.reply ?? fd, UnsafeRawBufferPointer(rebasing: $0[0..<n]), to: key.client) }
            }
        }
    }

    private func fromClient(_ n: Int, _ key: FlowKey) {
        if flows[key] == nil {
            guard let target = route(key, n) else { return }
            guard let flow = open(key, target: target) else { return }
            flows[key] = flow
            flowOf[flow.fd] = key
        }
        buffer.withUnsafeBytes { send(UnsafeRawBufferPointer(rebasing: $0[0..<n]), on: key) }
    }

    private func send(_ datagram: UnsafeRawBufferPointer, on key: FlowKey) {
        guard let out = flows[key]?.fd else { return }
        flows[key]!.lastSeen = loop.now
        flows[key]!.bytesUp += UInt64(datagram.count)
        flows[key]!.datagramsUp += 1
        Datagram.send(out, datagram, to: nil)
    }

    /// The address a new flow is connected to: for `udp://` the listener's target; for TPROXY
    /// the route table's answer. nil when the flow is refused, or while its routed host name
    /// resolves (the datagram in `buffer[0..<n]` then waits in `pending`).
    private func route(_ key: FlowKey, _ n: Int) -> SocketAddress? {
        guard proto == .tproxy else { return key.destination }
        if refused[key] != nil {
            refused[key] = loop.now
            return nil
        }
        if pending[key] != nil {
            if pending[key]!.count < Self.pendingLimit { pending[key]!.append(Array(buffer[0..<n])) }
            return nil
        }
        let destination: Destination
        do {
            destination = try context.udpRoute(
                StreamInfo(listener: name, source: key.client.description, destination: key.destination.destination, proto: "udp"))
        } catch {
            refuse(key, error)
            return nil
        }
        if let literal = try? SocketAddress(host: destination.host, port: destination.port) { return literal }
        pending[key] = [Array(buffer[0..<n])]
        Task { [self] in
            let resolved = try? await Resolver.resolve(destination).first
            loop.execute { [self] in
                guard !stopped, let queued = pending.removeValue(forKey: key) else { return }
                guard let resolved else {
                    refuse(key, GateError(.noRoute, "\(destination) does not resolve"))
                    return
                }
                guard let flow = open(key, target: resolved) else { return }
                flows[key] = flow
                flowOf[flow.fd] = key
                for datagram in queued { datagram.withUnsafeBytes { send($0, on: key) } }
            }
        }
        return nil
    }

    private func refuse(_ key: FlowKey, _ error: any Error) {
        refused[key] = loop.now
        context.udpRefused(listener: name, source: key.client, destination: key.destination.destination, error)
    }

    /// The outbound socket, connected to `target`, (and for TPROXY the reply socket, bound to
    /// the original destination) of a new flow.
    private func open(_ key: FlowKey, target: SocketAddress) -> Flow? {
        var reply: Int32?
        if proto == .tproxy {
            do {
                reply = try Datagram.transparentSender(boundTo: key.destination)
            } catch {
                context.log.warning("udp tproxy reply socket", metadata: ["listener": "\(name)", "dst": "\(key.destination)", "error": "\(error)"])
                return nil
            }
        }
        guard let s = try? Datagram.socket(ipv6: target.isIPv6) else {
            if let reply { Glibc.close(reply) }
            return nil
        }
        let ok = target.withSockAddr { Glibc.connect(s, $0, $1) } == 0
        guard ok, loop.register(s, Interest.read, self) else {
            Glibc.close(s)
            if let reply { Glibc.close(reply) }
            return nil
        }
        return Flow(fd: s, target: target, reply: reply, lastSeen: loop.now, started: loop.now)
    }
}
