import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A ``DatagramTransport`` over a plain UDP socket (IPv4), for tests, benchmarks and running
/// DTLS/SCTP without ICE. Bind first (port 0 picks a free port), then ``connect(host:port:)``
/// to the peer. A reader thread receives; `send` is a non-blocking `send(2)`.
public final class UDPDatagramTransport: DatagramTransport {
    private let fd: Int32
    /// Whether close() was called and whether the reader thread (which then owns the descriptor) runs.
    private let state = Mutex<(closed: Bool, reader: Bool)>((false, false))
    /// The bound local port.
    public let localPort: UInt16

    /// Binds a UDP socket to `host` (an IPv4 literal) and `port` (0 = any free port).
    public init(bindHost host: String = "127.0.0.1", port: UInt16 = 0) throws {
        let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw DataChannelError(.invalidConfiguration, "socket(AF_INET, SOCK_DGRAM) failed: errno \(errno)") }
        var address = try Self.address(host: host, port: port)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0 else {
            let code = errno
            Glibc.close(fd)
            throw DataChannelError(.invalidConfiguration, "bind \(host):\(port) failed: errno \(code)")
        }
        var timeout = timeval(tv_sec: 0, tv_usec: 100_000)  // the reader re-checks `closed` this often
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        // 4 MiB buffers: bursts of 1200-byte records overflow the default ~208 KiB. The FORCE
        // variants pass net.core.*mem_max when privileged; otherwise the plain ones are capped.
        var size: Int32 = 4 << 20
        if setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, socklen_t(MemoryLayout<Int32>.size)) != 0 {
            setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        }
        if setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &size, socklen_t(MemoryLayout<Int32>.size)) != 0 {
            setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        }
        var local = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &local) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        self.fd = fd
        self.localPort = UInt16(bigEndian: local.sin_port)
    }

    /// Sends every datagram to `host:port` from now on.
    public func connect(host: String = "127.0.0.1", port: UInt16) throws {
        var address = try Self.address(host: host, port: port)
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard result == 0 else { throw DataChannelError(.invalidConfiguration, "connect \(host):\(port) failed: errno \(errno)") }
    }

    /// Starts the reader thread (once); `receive` is called on it for every datagram.
    public func start(receive: @escaping @Sendable ([UInt8]) -> Void) {
        let startReader = state.withLock { state -> Bool in
            defer { state.reader = true }
            return !state.reader && !state.closed
        }
        guard startReader else { return }
        let thread = Thread { [self] in readLoop(receive) }
        thread.name = "ugate.udp-datagram"
        thread.start()
    }

    private func readLoop(_ receive: @Sendable ([UInt8]) -> Void) {
        var buffer = [UInt8](repeating: 0, count: 65_536)
        while !state.withLock({ $0.closed }) {
            let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if count > 0 { receive(Array(buffer[0..<count])) }
        }
        Glibc.close(fd)  // the reader owns the descriptor once started
    }

    public func send(_ datagram: [UInt8]) {
        guard !state.withLock({ $0.closed }) else { return }
        _ = datagram.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
    }

    /// Stops the reader (within 100 ms), which then closes the socket.
    public func close() {
        let closeHere = state.withLock { state -> Bool in
            guard !state.closed else { return false }
            state.closed = true
            return !state.reader
        }
        if closeHere { Glibc.close(fd) }
    }

    deinit { close() }

    private static func address(host: String, port: UInt16) throws -> sockaddr_in {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        guard inet_pton(AF_INET, host, &address.sin_addr) == 1 else {
            throw DataChannelError(.invalidConfiguration, "not an IPv4 address: \(host)")
        }
        return address
    }
}
