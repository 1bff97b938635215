import CLinux
import Glibc
import NIOPosix

/// Dials destinations directly: names resolve on NIO's blocking-I/O thread pool (never on a
/// loop thread), connects are non-blocking and wait for writability on a gate loop.
public struct DirectUpstream: Upstream {
    public let name = "direct"
    let loops: GateLoopGroup
    let connectTimeoutMillis: UInt64

    public init(loops: GateLoopGroup, connectTimeout: Double = 10) {
        self.loops = loops
        connectTimeoutMillis = UInt64(connectTimeout * 1000)
    }

    public func dial(_ destination: Destination, for info: StreamInfo) async throws -> Int32 {
        let addresses: [SocketAddress]
        if let literal = try? SocketAddress(host: destination.host, port: destination.port) {
            addresses = [literal]
        } else {
            addresses = try await Resolver.resolve(destination)
        }
        var lastError: any Error = GateError(.resolve, "no address for \(destination)")
        for address in addresses {
            do {
                return try await connect(address)
            } catch {
                lastError = error
            }
        }
        throw lastError
    }

    func connect(_ address: SocketAddress) async throws -> Int32 {
        let (fd, connected) = try Sys.startConnect(address)
        if connected { return fd }
        do {
            try await loops.next().wait(for: fd, Interest.write, timeoutMillis: connectTimeoutMillis)
            try Sys.finishConnect(fd, address)
        } catch {
            Glibc.close(fd)
            throw error
        }
        return fd
    }
}

extension Sys {
    /// Opens a non-blocking TCP socket and starts connecting; `connected` is true when the
    /// connect finished at once, else wait for writability and call `finishConnect`.
    static func startConnect(_ address: SocketAddress) throws -> (fd: Int32, connected: Bool) {
        let fd = socket(address.isIPv6 ? AF_INET6 : AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        try check(fd, "socket")
        if address.withSockAddr({ Glibc.connect(fd, $0, $1) }) == 0 { return (fd, true) }
        let e = errno
        guard e == EINPROGRESS else {
            Glibc.close(fd)
            throw GateError(.syscall, "connect \(address)", errno: e)
        }
        return (fd, false)
    }

    /// Throws the error of a non-blocking connect that became writable.
    static func finishConnect(_ fd: Int32, _ address: SocketAddress) throws {
        let soError = ugate_socket_error(fd)
        if soError != 0 { throw GateError(.syscall, "connect \(address)", errno: soError) }
    }
}

/// Name resolution off the loop threads.
enum Resolver {
    static func resolve(_ destination: Destination) async throws -> [SocketAddress] {
        try await NIOThreadPool.singleton.runIfActive {
            var hints = addrinfo()
            hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
            hints.ai_family = AF_UNSPEC
            var result: UnsafeMutablePointer<addrinfo>?
            let rc = getaddrinfo(destination.host, String(destination.port), &hints, &result)
            guard rc == 0, let first = result else {
                throw GateError(.resolve, "\(destination.host): \(String(cString: gai_strerror(rc)))")
            }
            defer { freeaddrinfo(first) }
            var out: [SocketAddress] = []
            var p: UnsafeMutablePointer<addrinfo>? = first
            while let ai = p {
                var ss = sockaddr_storage()
                memcpy(&ss, ai.pointee.ai_addr, Int(ai.pointee.ai_addrlen))
                if let a = SocketAddress(storage: &ss), !out.contains(a) { out.append(a) }
                p = ai.pointee.ai_next
            }
            return out
        }
    }
}

/// Waits for one readiness event on a descriptor, with a timeout.
private final class FDWait: LoopHandler {
    let loop: GateLoop
    let fd: Int32
    var continuation: CheckedContinuation<Void, any Error>?
    var timer: LoopTimer?

    init(loop: GateLoop, fd: Int32, continuation: CheckedContinuation<Void, any Error>) {
        self.loop = loop
        self.fd = fd
        self.continuation = continuation
    }

    func ready(fd: Int32, events: UInt32) { finish(nil) }

    func finish(_ error: (any Error)?) {
        guard let c = continuation else { return }
        continuation = nil
        timer?.cancel()
        loop.deregister(fd)
        if let error { c.resume(throwing: error) } else { c.resume() }
    }
}

extension GateLoop {
    /// Suspends until `fd` reports `events` (or an error/hangup), or throws `.timeout`.
    func wait(for fd: Int32, _ events: UInt32, timeoutMillis: UInt64) async throws {
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, any Error>) in
            execute { [self] in
                let waiter = FDWait(loop: self, fd: fd, continuation: c)
                guard self.register(fd, events, waiter) else {
                    waiter.continuation = nil
                    c.resume(throwing: GateError(.syscall, "epoll_ctl", errno: errno))
                    return
                }
                waiter.timer = self.schedule(afterMillis: timeoutMillis) {
                    waiter.finish(GateError(.timeout, "no readiness on fd \(fd) after \(timeoutMillis) ms"))
                }
            }
        }
    }
}
