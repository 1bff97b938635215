import Foundation
import Glibc
import Logging
import NIOPosix
import Synchronization
import XCTest

@testable import Gate

/// Collects log lines (message + metadata) so tests can check the access log.
final class LogCapture: @unchecked Sendable {  // `lines` is behind a Mutex
    private let storage = Mutex<[String]>([])

    var lines: [String] { storage.withLock { $0 } }

    func logger(_ label: String) -> Logger {
        Logger(label: label) { _ in CaptureHandler(capture: self) }
    }

    fileprivate func append(_ line: String) { storage.withLock { $0.append(line) } }

    /// Waits (bounded) until a line contains every fragment.
    func waitForLine(containing fragments: [String], timeout: Double = 10) -> String? {
        let end = Date().addingTimeInterval(timeout)
        while Date() < end {
            if let line = lines.first(where: { l in fragments.allSatisfy { l.contains($0) } }) { return line }
            usleep(20_000)
        }
        return nil
    }
}

private struct CaptureHandler: LogHandler {
    let capture: LogCapture
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .trace

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        let meta = (event.metadata ?? [:]).merging(metadata) { a, _ in a }
        let text = meta.keys.sorted().map { "\($0)=\(meta[$0]!)" }.joined(separator: " ")
        capture.append("\(event.message) \(text)")
    }
}

/// A loopback TCP port where connections are refused: a socket bound to an ephemeral port and
/// never listening, held until `close()`, so no other process can take the port meanwhile.
final class RefusedPort {
    let port: UInt16
    private let fd: Int32

    init() throws {
        let loopback = try SocketAddress(host: "127.0.0.1", port: 0)
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw GateError(.syscall, "socket", errno: errno) }
        guard loopback.withSockAddr({ bind(fd, $0, $1) }) == 0, let bound = SocketAddress.local(of: fd) else {
            let e = errno
            Glibc.close(fd)
            throw GateError(.syscall, "bind 127.0.0.1:0", errno: e)
        }
        self.fd = fd
        port = bound.port
    }

    func close() { Glibc.close(fd) }
}

/// Blocking client sockets with timeouts, for driving the node like an application would.
enum TestSocket {
    static func connect(_ host: String, _ port: UInt16, timeout: Int = 10) throws -> Int32 {
        let address = try SocketAddress(host: host, port: port)
        let fd = socket(address.isIPv6 ? AF_INET6 : AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw GateError(.syscall, "socket", errno: errno) }
        var tv = timeval(tv_sec: timeout, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        let r = address.withSockAddr { Glibc.connect(fd, $0, $1) }
        guard r == 0 else {
            let e = errno
            close(fd)
            throw GateError(.syscall, "connect \(address)", errno: e)
        }
        return fd
    }

    static func connect(_ address: SocketAddress) throws -> Int32 {
        try connect(address.host, address.port)
    }

    static func writeAll(_ fd: Int32, _ bytes: [UInt8]) throws {
        var off = 0
        while off < bytes.count {
            let n = bytes.withUnsafeBytes { send(fd, $0.baseAddress! + off, $0.count - off, Int32(MSG_NOSIGNAL)) }
            guard n > 0 else { throw GateError(.syscall, "send", errno: errno) }
            off += n
        }
    }

    /// Reads exactly `count` bytes (throws on EOF/timeout before that).
    static func readExactly(_ fd: Int32, _ count: Int) throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        var off = 0
        while off < count {
            let n = out.withUnsafeMutableBytes { recv(fd, $0.baseAddress! + off, count - off, 0) }
            guard n > 0 else { throw GateError(.syscall, "recv got \(off)/\(count)", errno: n == 0 ? 0 : errno) }
            off += n
        }
        return out
    }

    /// Reads until EOF; throws on timeout or error (a reset is an error, not EOF).
    static func readToEOF(_ fd: Int32, limit: Int = 1 << 26) throws -> [UInt8] {
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while out.count < limit {
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress!, $0.count, 0) }
            if n == 0 { return out }
            guard n > 0 else { throw GateError(.syscall, "recv after \(out.count) bytes", errno: errno) }
            out += chunk[0..<n]
        }
        return out
    }
}

/// A loopback TCP echo server on its own threads (blocking I/O): echoes everything; when the
/// client half-closes it sends `"BYE"` and then closes, so a test can see the reverse direction
/// keep flowing after the forward FIN.
final class EchoServer: @unchecked Sendable {  // fd is immutable; the accept thread owns the rest
    let fd: Int32
    let port: UInt16
    let host: String

    init(host: String = "127.0.0.1") throws {
        self.host = host
        let address = try SocketAddress(host: host, port: 0)
        fd = try Sys.listen(address)
        // The listener is non-blocking (Sys.listen); the accept thread wants blocking.
        _ = fcntl(fd, F_SETFL, 0)
        port = SocketAddress.local(of: fd)!.port
        let listenFd = fd
        let t = Thread {
            while true {
                let c = accept(listenFd, nil, nil)
                if c < 0 {
                    if errno == EINTR { continue }
                    return
                }
                Thread.detachNewThread { EchoServer.serve(c) }
            }
        }
        t.start()
    }

    var address: SocketAddress { try! SocketAddress(host: host, port: port) }

    static func serve(_ c: Int32) {
        var buf = [UInt8](repeating: 0, count: 1 << 20)
        while true {
            let n = buf.withUnsafeMutableBytes { recv(c, $0.baseAddress!, $0.count, 0) }
            if n <= 0 { break }
            if (try? TestSocket.writeAll(c, Array(buf[0..<n]))) == nil { break }
        }
        _ = try? TestSocket.writeAll(c, Array("BYE".utf8))
        close(c)
    }

    func stop() {
        shutdown(fd, Int32(SHUT_RDWR))
        close(fd)
    }
}

/// Builds a node with only the given listeners (ephemeral ports) and a captured access log.
extension TestSocket {
    /// A blocking listener on `host` (ephemeral port) whose accepted connections are each
    /// served by `serve` on a thread of their own, until the listener is closed.
    static func serveEachConnection(host: String = "127.0.0.1", _ serve: @escaping @Sendable (Int32) -> Void) throws -> (fd: Int32, port: UInt16) {
        let fd = try Sys.listen(try SocketAddress(host: host, port: 0))
        _ = fcntl(fd, F_SETFL, 0)
        Thread.detachNewThread {
            while true {
                let c = accept(fd, nil, nil)
                if c < 0 {
                    if errno == EINTR { continue }
                    return
                }
                Thread.detachNewThread { serve(c) }
            }
        }
        return (fd, SocketAddress.local(of: fd)!.port)
    }

    /// `Sys.openDescriptors()` once the process-wide runtime threads the gateway uses run: NIO's
    /// singleton loops (each opens an epoll, an eventfd and a timerfd when it starts; the
    /// gateway hands h2c and h2 to them) and libdispatch's event thread (the same three, the
    /// first time the process arms a Dispatch timer; checked: one `asyncAfter` adds exactly
    /// those). Whichever test starts them first would otherwise count them as left open.
    static func descriptorsWithRuntimeStarted() -> [Int32: String] {
        for loop in MultiThreadedEventLoopGroup.singleton.makeIterator() {
            _ = try? loop.submit {}.wait()
        }
        let fired = DispatchSemaphore(value: 0)
        DispatchQueue.global().asyncAfter(deadline: .now() + .milliseconds(1)) { fired.signal() }
        _ = fired.wait(timeout: .now() + 5)
        return Sys.openDescriptors()
    }

    /// The descriptors opened since `before` and still open, other than `kept` (the test's
    /// own), once there are none or after 5 s: empty when everything opened was closed.
    /// `socketsOnly`: only sockets count (a runtime thread started meanwhile, e.g. a Dispatch
    /// worker's eventfd/timerfd/epoll trio, is not the gateway's).
    static func descriptorsLeftOpen(since before: [Int32: String], except kept: Set<Int32> = [], socketsOnly: Bool = false) -> [Int32: String] {
        let left = { Sys.descriptorsOpened(since: before).filter { !kept.contains($0.key) && (!socketsOnly || $0.value.hasPrefix("socket:")) } }
        var now = left()
        for _ in 0..<100 where !now.isEmpty {
            usleep(50_000)
            now = left()
        }
        return now
    }
}

func makeNode(
    _ listeners: [String: ListenerConfig], defaults: Bool = false, configure: (inout GateConfig) -> Void = { _ in }
) throws -> (GateNode, LogCapture) {
    var config = GateConfig()
    config.basePort = 0
    config.defaultListeners = defaults
    config.listeners = listeners
    config.loops = 2
    configure(&config)
    let capture = LogCapture()
    let node = try GateNode(config: config, logger: capture.logger("gate"), accessLog: capture.logger("access"))
    node.start()
    return (node, capture)
}

/// Echo + half-close check: write, read the echo, write the last bytes, SHUT_WR; the client
/// must still receive the last echo and the server's post-FIN bytes, then EOF.
func checkEchoHalfClose(_ connect: () throws -> Int32, file: StaticString = #filePath, line: UInt = #line) throws {
    let fd = try connect()
    defer { close(fd) }
    let first = Array("hello through the gate".utf8)
    try TestSocket.writeAll(fd, first)
    XCTAssertEqual(try TestSocket.readExactly(fd, first.count), first, file: file, line: line)
    let last = [UInt8]((0..<200_000).map { UInt8(truncatingIfNeeded: $0 &* 7) })
    try TestSocket.writeAll(fd, last)
    XCTAssertEqual(shutdown(fd, Int32(SHUT_WR)), 0, file: file, line: line)
    let rest = try TestSocket.readToEOF(fd)
    XCTAssertEqual(rest.count, last.count + 3, "last echo plus BYE, then EOF", file: file, line: line)
    XCTAssertEqual(Array(rest.prefix(last.count)), last, file: file, line: line)
    XCTAssertEqual(Array(rest.suffix(3)), Array("BYE".utf8), file: file, line: line)
}

/// Runs a process (stdin empty) to completion with a bounded wait; returns status, stdout and stderr.
@discardableResult
func runProcess(_ path: String, _ args: [String], timeout: Double = 60) throws -> (status: Int32, out: String, err: String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: path)
    p.arguments = args
    p.standardInput = FileHandle.nullDevice
    let out = Pipe()
    let err = Pipe()
    p.standardOutput = out
    p.standardError = err
    try p.run()
    let outData = Mutex<Data>(Data())
    let errData = Mutex<Data>(Data())
    let g = DispatchGroup()
    g.enter()
    DispatchQueue.global().async {
        let d = out.fileHandleForReading.readDataToEndOfFile()
        outData.withLock { $0 = d }
        g.leave()
    }
    g.enter()
    DispatchQueue.global().async {
        let d = err.fileHandleForReading.readDataToEndOfFile()
        errData.withLock { $0 = d }
        g.leave()
    }
    if g.wait(timeout: .now() + timeout) == .timedOut {
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
        throw GateError(.timeout, "\(path) \(args.joined(separator: " ")) did not finish in \(timeout) s")
    }
    p.waitUntilExit()
    return (
        p.terminationStatus, String(decoding: outData.withLock { $0 }, as: UTF8.self),
        String(decoding: errData.withLock { $0 }, as: UTF8.self)
    )
}

/// Path of a required tool; fails loudly (not skip) when missing.
func tool(_ name: String) throws -> String {
    for dir in ["/usr/bin", "/usr/sbin", "/bin", "/sbin", "/usr/local/bin"] where FileManager.default.isExecutableFile(atPath: "\(dir)/\(name)") {
        return "\(dir)/\(name)"
    }
    throw GateError(.config, "required tool \(name) is not installed (scripts/deps test installs it)")
}

/// A loopback HTTP/1.1 origin on threads (blocking I/O, keep-alive): answers every request
/// with `200` and a body naming the request line and Host it saw, or with `size` bytes for
/// `/bytes`.
final class TinyHTTPServer: @unchecked Sendable {  // fd and port are immutable; threads own the rest
    let fd: Int32
    let port: UInt16

    /// - Parameter closeAfterResponse: close every connection after one response without
    ///   saying so (`Connection: close`), like an origin whose keep-alive timer fired.
    init(host: String = "127.0.0.1", closeAfterResponse: Bool = false) throws {
        (fd, port) = try TestSocket.serveEachConnection(host: host) { TinyHTTPServer.serve($0, closeAfterResponse: closeAfterResponse) }
    }

    static func serve(_ c: Int32, closeAfterResponse: Bool) {
        defer { close(c) }
        var pending: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            guard let end = pending.firstRange(of: Array("\r\n\r\n".utf8)) else {
                let n = chunk.withUnsafeMutableBytes { recv(c, $0.baseAddress!, $0.count, 0) }
                if n <= 0 { return }
                pending += chunk[0..<n]
                continue
            }
            let head = String(decoding: pending[..<end.lowerBound], as: UTF8.self)
            pending.removeFirst(end.upperBound)
            let lines = head.components(separatedBy: "\r\n")
            let host = lines.first { $0.lowercased().hasPrefix("host:") }.map { String($0.dropFirst(5)).trimmingCharacters(in: .whitespaces) } ?? "-"
            // A request body: Content-Length bytes, or chunked up to the last chunk (no
            // extensions or trailers); the response names it.
            var requestBody: [UInt8]?
            let length = lines.first { $0.lowercased().hasPrefix("content-length:") }.flatMap { Int($0.dropFirst(15).trimmingCharacters(in: .whitespaces)) }
            let chunked = lines.contains { $0.lowercased() == "transfer-encoding: chunked" }
            while length.map({ pending.count < $0 }) ?? (chunked && pending.firstRange(of: Array("0\r\n\r\n".utf8)) == nil) {
                let n = chunk.withUnsafeMutableBytes { recv(c, $0.baseAddress!, $0.count, 0) }
                if n <= 0 { return }
                pending += chunk[0..<n]
            }
            if let length {
                requestBody = Array(pending[..<length])
                pending.removeFirst(length)
            } else if chunked, let last = pending.firstRange(of: Array("0\r\n\r\n".utf8)) {
                requestBody = Array(pending[..<last.upperBound])
                pending.removeFirst(last.upperBound)
            }
            let bodyNote = requestBody.map { " body=\(String(decoding: $0, as: UTF8.self).replacingOccurrences(of: "\r\n", with: "|"))" } ?? ""
            let body = Array("request=\(lines[0]) host=\(host) headers=\(lines.count - 1)\(bodyNote)\n".utf8)
            let close = lines.contains { $0.lowercased() == "connection: close" }
            let response = Array("HTTP/1.1 200 OK\r\nContent-Length: \(body.count)\r\nContent-Type: text/plain\r\n\(close ? "Connection: close\r\n" : "")\r\n".utf8) + body
            guard (try? TestSocket.writeAll(c, response)) != nil, !close, !closeAfterResponse else { return }
        }
    }

    func stop() {
        shutdown(fd, Int32(SHUT_RDWR))
        close(fd)
    }
}

/// SOCKS5 CONNECT by hand (no auth): returns the connected socket after a success reply, or
/// the reply code on failure.
func socks5Connect(_ proxy: SocketAddress, host: String, port: UInt16) throws -> (fd: Int32, code: UInt8) {
    let fd = try TestSocket.connect(proxy)
    try TestSocket.writeAll(fd, [5, 1, 0])
    XCTAssertEqual(try TestSocket.readExactly(fd, 2), [5, 0])
    var request: [UInt8] = [5, 1, 0]
    if let v4 = try? SocketAddress(host: host, port: port), !v4.isIPv6 {
        request += [1] + host.split(separator: ".").map { UInt8($0)! }
    } else {
        request += [3, UInt8(host.utf8.count)] + Array(host.utf8)
    }
    request += [UInt8(port >> 8), UInt8(port & 0xff)]
    try TestSocket.writeAll(fd, request)
    let head = try TestSocket.readExactly(fd, 4)
    let addressLength = head[3] == 1 ? 4 : head[3] == 4 ? 16 : Int(try TestSocket.readExactly(fd, 1)[0])
    _ = try TestSocket.readExactly(fd, addressLength + 2)
    return (fd, head[1])
}

/// The `ugate` executable next to the test bundle (`swift build --build-tests` builds both).
func ugateExecutable() -> String {
    final class Marker {}
    let bundle = Bundle(for: Marker.self).bundleURL
    let candidates = [bundle.appendingPathComponent("ugate"), bundle.deletingLastPathComponent().appendingPathComponent("ugate")]
    return (candidates.first { FileManager.default.isExecutableFile(atPath: $0.path) } ?? candidates[0]).path
}
