import CLinux
import Glibc

/// The error type of the Gate module: a code, the call or place that failed, and context.
public struct GateError: Error, CustomStringConvertible, Sendable {
    public enum Code: String, Sendable {
        /// A system call failed; `errno` says why.
        case syscall
        /// A connect, handshake or peek did not finish in time.
        case timeout
        /// A name did not resolve.
        case resolve
        /// The configuration is invalid.
        case config
        /// A peer spoke the protocol wrong.
        case protocolViolation
        /// The route table sends this stream nowhere.
        case noRoute
        /// The stream or loop was closed underneath the operation.
        case closed
    }

    public var code: Code
    /// What failed: the system call name, the config field, the listener.
    public var context: String
    /// The `errno` value for `.syscall` (and connect failures), else 0.
    public var errno: Int32

    public init(_ code: Code, _ context: String, errno: Int32 = 0) {
        self.code = code
        self.context = context
        self.errno = errno
    }

    public var description: String {
        if errno != 0 {
            return "\(code.rawValue): \(context): \(String(cString: strerror(errno)))"
        }
        return "\(code.rawValue): \(context)"
    }
}

/// Thin syscall helpers: retry EINTR, report EAGAIN as nil, throw `GateError` naming the call.
enum Sys {
    /// Result of a non-blocking read/write/splice.
    enum IO: Equatable {
        case bytes(Int)
        case eof
        case wouldBlock
        case error(Int32)
    }

    static func read(_ fd: Int32, _ buf: UnsafeMutableRawPointer, _ len: Int) -> IO {
        while true {
            let n = Glibc.read(fd, buf, len)
            if n > 0 { return .bytes(n) }
            if n == 0 { return .eof }
            let e = Glibc.errno
            if e == EINTR { continue }
            return (e == EAGAIN || e == EWOULDBLOCK) ? .wouldBlock : .error(e)
        }
    }

    static func write(_ fd: Int32, _ buf: UnsafeRawPointer, _ len: Int) -> IO {
        while true {
            let n = Glibc.send(fd, buf, len, Int32(MSG_NOSIGNAL))
            if n >= 0 { return .bytes(n) }
            let e = Glibc.errno
            if e == EINTR { continue }
            return (e == EAGAIN || e == EWOULDBLOCK) ? .wouldBlock : .error(e)
        }
    }

    /// `splice(2)` with `SPLICE_F_MOVE | SPLICE_F_NONBLOCK` (never `SPLICE_F_MORE`: it corks).
    static func splice(from: Int32, to: Int32, _ len: Int) -> IO {
        while true {
            let n = ugate_splice(from, to, len, UGATE_SPLICE_F_MOVE | UGATE_SPLICE_F_NONBLOCK)
            if n > 0 { return .bytes(n) }
            if n == 0 { return .eof }
            let e = Glibc.errno
            if e == EINTR { continue }
            return (e == EAGAIN || e == EWOULDBLOCK) ? .wouldBlock : .error(e)
        }
    }

    static func check(_ result: Int32, _ call: String) throws {
        if result < 0 { throw GateError(.syscall, call, errno: Glibc.errno) }
    }

    static func setNonBlocking(_ fd: Int32) throws {
        let flags = fcntl(fd, F_GETFL)
        try check(flags, "fcntl(F_GETFL)")
        try check(fcntl(fd, F_SETFL, flags | O_NONBLOCK), "fcntl(F_SETFL)")
    }

    static func setInt(_ fd: Int32, _ level: Int32, _ name: Int32, _ value: Int32, _ call: String) throws {
        var v = value
        try check(setsockopt(fd, level, name, &v, socklen_t(MemoryLayout<Int32>.size)), call)
    }

    /// Closes, sending RST instead of FIN.
    static func abort(_ fd: Int32) {
        _ = ugate_set_linger_zero(fd)
        _ = Glibc.close(fd)
    }

    /// This process's open descriptors and what each points to (`socket:[inode]`, a path,
    /// `anon_inode:[eventpoll]` …), for tests that check what they opened was closed.
    static func openDescriptors() -> [Int32: String] {
        guard let dir = opendir("/proc/self/fd") else { return [:] }
        defer { closedir(dir) }
        let own = dirfd(dir)
        var result: [Int32: String] = [:]
        var target = [CChar](repeating: 0, count: 4096)
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            guard let fd = Int32(name), fd != own else { continue }
            let count = readlink("/proc/self/fd/\(fd)", &target, target.count - 1)
            result[fd] = count < 0 ? "?" : String(decoding: target[..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        }
        return result
    }

    /// The descriptors open now that were not open in `before`, or pointed elsewhere then.
    /// Unlike comparing counts, descriptors another thread closed meanwhile (an earlier test's
    /// process pipes, a retiring Dispatch worker's) do not hide or fake a leak.
    static func descriptorsOpened(since before: [Int32: String]) -> [Int32: String] {
        openDescriptors().filter { before[$0.key] != $0.value }
    }
}

/// A socket address as a Swift value: IPv4 or IPv6, with conversions to and from `sockaddr`.
public struct SocketAddress: Hashable, Sendable, CustomStringConvertible {
    /// The numeric host (no brackets for IPv6).
    public var host: String
    public var port: UInt16
    public var isIPv6: Bool

    public init(host: String, port: UInt16) throws {
        var a4 = in_addr()
        var a6 = in6_addr()
        if inet_pton(AF_INET, host, &a4) == 1 {
            isIPv6 = false
        } else if inet_pton(AF_INET6, host, &a6) == 1 {
            isIPv6 = true
        } else {
            throw GateError(.resolve, "not an IP literal: \(host)")
        }
        self.host = host
        self.port = port
    }

    /// True when `host` is an IPv4 or IPv6 literal.
    public static func isLiteral(_ host: String) -> Bool {
        (try? SocketAddress(host: host, port: 0)) != nil
    }

    public var description: String { isIPv6 ? "[\(host)]:\(port)" : "\(host):\(port)" }

    public var destination: Destination { Destination(host: host, port: port) }

    /// Reads an address out of a `sockaddr_storage`; nil for other families.
    init?(storage: UnsafePointer<sockaddr_storage>) {
        var buf = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN) + 1)
        var port: UInt16 = 0
        switch Int32(storage.pointee.ss_family) {
        case AF_INET:
            let ok: Bool = storage.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { sin in
                var addr = sin.pointee.sin_addr
                port = UInt16(bigEndian: sin.pointee.sin_port)
                return inet_ntop(AF_INET, &addr, &buf, socklen_t(buf.count)) != nil
            }
            guard ok else { return nil }
            isIPv6 = false
        case AF_INET6:
            let ok: Bool = storage.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { sin in
                var addr = sin.pointee.sin6_addr
                port = UInt16(bigEndian: sin.pointee.sin6_port)
                return inet_ntop(AF_INET6, &addr, &buf, socklen_t(buf.count)) != nil
            }
            guard ok else { return nil }
            isIPv6 = true
        default:
            return nil
        }
        self.port = port
        host = buf.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        // IPv4-mapped IPv6 addresses are reported as IPv4 (dual-stack listeners).
        if isIPv6, host.hasPrefix("::ffff:"), host.contains(".") {
            host = String(host.dropFirst(7))
            isIPv6 = false
        }
    }

    /// Calls `body` with this address as a `sockaddr` and its length.
    func withSockAddr<R>(_ body: (UnsafePointer<sockaddr>, socklen_t) throws -> R) rethrows -> R {
        if isIPv6 {
            var sin = sockaddr_in6()
            sin.sin6_family = sa_family_t(AF_INET6)
            sin.sin6_port = port.bigEndian
            _ = inet_pton(AF_INET6, host, &sin.sin6_addr)
            return try withUnsafePointer(to: &sin) {
                try $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    try body($0, socklen_t(MemoryLayout<sockaddr_in6>.size))
                }
            }
        }
        var sin = sockaddr_in()
        sin.sin_family = sa_family_t(AF_INET)
        sin.sin_port = port.bigEndian
        _ = inet_pton(AF_INET, host, &sin.sin_addr)
        return try withUnsafePointer(to: &sin) {
            try $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                try body($0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
    }

    /// The peer address of a connected socket.
    static func peer(of fd: Int32) -> SocketAddress? {
        var ss = sockaddr_storage()
        var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let r = withUnsafeMutablePointer(to: &ss) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getpeername(fd, $0, &len) }
        }
        return r == 0 ? SocketAddress(storage: &ss) : nil
    }

    /// The local address of a socket.
    static func local(of fd: Int32) -> SocketAddress? {
        var ss = sockaddr_storage()
        var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let r = withUnsafeMutablePointer(to: &ss) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
        }
        return r == 0 ? SocketAddress(storage: &ss) : nil
    }

    /// The original destination of a REDIRECTed connection (`SO_ORIGINAL_DST`, v4 or v6).
    static func originalDestination(of fd: Int32) -> SocketAddress? {
        guard let local = local(of: fd) else { return nil }
        var ss = sockaddr_storage()
        var len = socklen_t(0)
        guard ugate_original_dst(fd, &ss, &len, local.isIPv6 ? 1 : 0) == 0 else { return nil }
        return SocketAddress(storage: &ss)
    }
}

extension Sys {
    /// Opens a non-blocking listening socket (TCP or UDP) bound to `address`.
    static func listen(
        _ address: SocketAddress, udp: Bool = false, transparent: Bool = false, reusePort: Bool = false, backlog: Int32 = 4096
    ) throws -> Int32 {
        let family = address.isIPv6 ? AF_INET6 : AF_INET
        let type = (udp ? Int32(SOCK_DGRAM.rawValue) : Int32(SOCK_STREAM.rawValue)) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue)
        let fd = socket(family, type, 0)
        try check(fd, "socket")
        do {
            try setInt(fd, SOL_SOCKET, SO_REUSEADDR, 1, "setsockopt(SO_REUSEADDR)")
            if reusePort { try setInt(fd, SOL_SOCKET, SO_REUSEPORT, 1, "setsockopt(SO_REUSEPORT)") }
            if address.isIPv6, address.host == "::" {
                try setInt(fd, Int32(IPPROTO_IPV6), IPV6_V6ONLY, 0, "setsockopt(IPV6_V6ONLY)")
            }
            if transparent {
                try check(ugate_set_transparent(fd, address.isIPv6 ? 1 : 0), "setsockopt(IP_TRANSPARENT)")
                if udp {
                    try check(ugate_set_recv_origdst(fd, address.isIPv6 ? 1 : 0), "setsockopt(IP_RECVORIGDSTADDR)")
                }
            }
            try address.withSockAddr { try check(bind(fd, $0, $1), "bind \(address)") }
            if !udp {
                try check(Glibc.listen(fd, backlog), "listen \(address)")
            }
            return fd
        } catch {
            Glibc.close(fd)
            throw error
        }
    }
}
