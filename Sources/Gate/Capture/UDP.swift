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

/// A `udp://:P` listener: datagrams from each client address go to `target` through a
/// socket of their own (per-flow NAT), replies go back to that client; flows expire after
/// `udpIdleTimeout` without traffic. Loop-thread only after `start`.
final class UDPForwarder: LoopHandler, @unchecked Sendable {  // state is touched only on `loop`'s thread
    let name: String
    let fd: Int32
    let address: SocketAddress
    private let target: Destination
    private let loop: GateLoop
    private let context: GateContext
    private var targetAddress: SocketAddress?
    private var flows: [SocketAddress: (fd: Int32, lastSeen: UInt64)] = [:]
    private var clientOf: [Int32: SocketAddress] = [:]
    private var buffer = [UInt8](repeating: 0, count: Datagram.maxSize)
    private var stopped = false

    init(name: String, address: SocketAddress, target: Destination, context: GateContext) throws {
        self.name = name
        fd = try Sys.listen(address, udp: true)
        self.address = SocketAddress.local(of: fd) ?? address
        self.target = target
        self.context = context
        loop = context.loops.next()
    }

    func start() {
        let target = self.target
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
            for flow in flows.values {
                loop.deregister(flow.fd)
                Glibc.close(flow.fd)
            }
            flows = [:]
        }
    }

    private func scheduleSweep() {
        loop.schedule(afterMillis: 1000) { [self] in
            guard !stopped else { return }
            let limit = UInt64(context.config.udpIdleTimeout * 1000)
            for (client, flow) in flows where loop.now - flow.lastSeen > limit {
                loop.deregister(flow.fd)
                Glibc.close(flow.fd)
                clientOf[flow.fd] = nil
                flows[client] = nil
            }
            scheduleSweep()
        }
    }

    func ready(fd readyFd: Int32, events: UInt32) {
        for _ in 0..<64 {
            guard let (n, from) = Datagram.receive(readyFd, into: &buffer) else { return }
            if readyFd == fd {
                fromClient(n, from)
            } else if let client = clientOf[readyFd] {
                flows[client]?.lastSeen = loop.now
                _ = buffer.withUnsafeBytes { Datagram.send(fd, UnsafeRawBufferPointer(rebasing: $0[0..<n]), to: client) }
            }
        }
    }

    private func fromClient(_ n: Int, _ client: SocketAddress) {
        guard let targetAddress else { return }
        var flowFd = flows[client]?.fd
        if flowFd == nil {
            guard let s = try? Datagram.socket(ipv6: targetAddress.isIPv6) else { return }
            let ok = targetAddress.withSockAddr { Glibc.connect(s, $0, $1) } == 0
            guard ok, loop.register(s, Interest.read, self) else {
                Glibc.close(s)
                return
            }
            clientOf[s] = client
            flowFd = s
        }
        flows[client] = (flowFd!, loop.now)
        _ = buffer.withUnsafeBytes { Datagram.send(flowFd!, UnsafeRawBufferPointer(rebasing: $0[0..<n]), to: nil) }
    }
}
