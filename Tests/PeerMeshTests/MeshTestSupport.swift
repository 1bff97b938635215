import Crypto
import Foundation
import Gate
import Glibc
import Logging
import NIOCore
import NIOPosix
import Synchronization
import XCTest
@testable import PeerMesh

/// A TCP echo server on 127.0.0.1 (ephemeral port) that passes half-close on: after the client's
/// FIN it finishes echoing and then sends its own FIN.
final class EchoServer: Sendable {
    let channel: any Channel
    private let counter: AcceptCounter

    var port: Int { channel.localAddress!.port! }
    /// Connections accepted so far.
    var accepted: Int { counter.count.withLock { $0 } }

    private init(channel: any Channel, counter: AcceptCounter) {
        self.channel = channel
        self.counter = counter
    }

    static func start() async throws -> EchoServer {
        let counter = AcceptCounter()
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            // Room for the 1000-stream test's burst of connects.
            .serverChannelOption(.backlog, value: 2048)
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .childChannelInitializer { channel in
                counter.count.withLock { $0 += 1 }
                return channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(EchoHandler()) }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        return EchoServer(channel: channel, counter: counter)
    }

    func stop() async { try? await channel.close() }
}

private final class AcceptCounter: Sendable {
    let count = Mutex(0)
}

private final class EchoHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    private var lastWrite: EventLoopFuture<Void>?

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let promise = context.eventLoop.makePromise(of: Void.self)
        context.write(data, promise: promise)
        lastWrite = promise.futureResult
    }

    func channelReadComplete(context: ChannelHandlerContext) { context.flush() }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard let event = event as? ChannelEvent, event == .inputClosed else { return }
        context.flush()
        let close = { context.close(mode: .output, promise: nil) }
        if let lastWrite { lastWrite.assumeIsolated().whenComplete { _ in close() } } else { close() }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) { context.close(promise: nil) }
}

/// Collects log messages so tests can check that refusals are logged with a clear reason.
final class LogCapture: Sendable {
    private let lines = Mutex<[(message: String, detailed: String)]>([])

    /// `level message` per line.
    var messages: [String] { lines.withLock { $0.map(\.message) } }
    /// `message key=value key=value …` per line (metadata sorted by key, each followed by a
    /// space), for checks on fields such as an access log's byte counts.
    var detailed: [String] { lines.withLock { $0.map(\.detailed) } }

    func logger(_ label: String) -> Logger {
        Logger(label: label) { _ in CapturingHandler(capture: self) }
    }

    fileprivate func append(_ message: String, _ detailed: String) { lines.withLock { $0.append((message, detailed)) } }

    func contains(_ text: String) -> Bool { messages.contains { $0.contains(text) } }
}

private struct CapturingHandler: LogHandler {
    let capture: LogCapture
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .debug

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        let fields = (event.metadata ?? [:]).merging(metadata) { event, _ in event }
        capture.append(
            "\(event.level) \(event.message)", "\(event.message) " + fields.keys.sorted().map { "\($0)=\(fields[$0]!) " }.joined())
    }
}

/// Blocking helpers over the non-blocking descriptors `Upstream.dial` returns, every wait bounded.
enum FD {
    static let timeoutMs: Int32 = 30_000

    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    private static func wait(_ fd: Int32, _ events: Int16) throws -> Int16 {
        var pfd = pollfd(fd: fd, events: events, revents: 0)
        let n = poll(&pfd, 1, timeoutMs)
        if n == 0 { throw Failure(description: "timed out after \(timeoutMs) ms waiting on fd \(fd)") }
        if n < 0 { throw Failure(description: "poll: \(String(cString: strerror(errno)))") }
        return pfd.revents
    }

    /// A blocking TCP connection to 127.0.0.1:`port`.
    static func connect(port: UInt16) throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = port.bigEndian
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &addr) { ptr in
            ptr.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
        guard connected else {
            let reason = String(cString: strerror(errno))
            close(fd)
            throw Failure(description: "connect to 127.0.0.1:\(port): \(reason)")
        }
        return fd
    }

    /// Reads exactly `count` bytes.
    static func read(_ fd: Int32, count: Int) throws -> [UInt8] {
        var out: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 64 << 10)
        while out.count < count {
            _ = try wait(fd, Int16(POLLIN))
            let n = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, min($0.count, count - out.count)) }
            if n == 0 { throw Failure(description: "EOF after \(out.count) of \(count) bytes") }
            if n < 0 {
                if errno == EAGAIN || errno == EINTR { continue }
                throw Failure(description: "read: \(String(cString: strerror(errno)))")
            }
            out += buffer[0..<n]
        }
        return out
    }

    /// Writes all of `bytes`.
    static func write(_ fd: Int32, _ bytes: [UInt8]) throws {
        try exchange(fd, send: bytes, halfClose: false, receive: false)
    }

    /// The half-close check's second half: sends `bytes`, shuts down our write side right after
    /// the last byte while the echo is still arriving, and reads until EOF. Returns what was read.
    @discardableResult
    static func exchange(_ fd: Int32, send bytes: [UInt8], halfClose: Bool = true, receive: Bool = true) throws -> [UInt8] {
        var sent = 0
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 64 << 10)
        var shut = false
        while true {
            if sent == bytes.count, halfClose, !shut {
                guard shutdown(fd, Int32(SHUT_WR)) == 0 else { throw Failure(description: "shutdown: \(String(cString: strerror(errno)))") }
                shut = true
            }
            if sent == bytes.count, !receive { return received }
            var events = Int16(0)
            if sent < bytes.count { events |= Int16(POLLOUT) }
            if receive { events |= Int16(POLLIN) }
            let revents = try wait(fd, events)
            if revents & Int16(POLLIN | POLLHUP | POLLERR) != 0, receive {
                let n = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
                if n == 0 { return received }
                if n < 0, errno != EAGAIN, errno != EINTR {
                    throw Failure(description: "read after \(received.count) bytes: \(String(cString: strerror(errno)))")
                }
                if n > 0 { received += buffer[0..<n] }
            }
            if revents & Int16(POLLOUT) != 0, sent < bytes.count {
                let n = bytes[sent...].withUnsafeBytes { Glibc.write(fd, $0.baseAddress, min($0.count, 256 << 10)) }
                if n < 0, errno != EAGAIN, errno != EINTR {
                    throw Failure(description: "write after \(sent) bytes: \(String(cString: strerror(errno)))")
                }
                if n > 0 { sent += n }
            }
        }
    }
}

/// The end of a Python TLS echo client, for a script that has set `s` (a connected `SSLSocket`)
/// and `size`: sends `size` random bytes in 64 KiB pieces, each echoed back before the next (one
/// thread: an `SSLSocket` must not be read and written from two threads at once — a sender
/// thread made such tests flaky), prints JSON with `report` (dict entries), `received` and
/// `match`, and exits 1 unless the echo matched. Starts with a line break (a script's literal
/// ends without one).
func pythonPiecewiseEcho(report: String) -> String {
    """

    data, echoed = os.urandom(size), bytearray()
    for offset in range(0, size, 1 << 16):
        piece = data[offset:offset + (1 << 16)]
        s.sendall(piece)
        want = len(echoed) + len(piece)
        while len(echoed) < want and (chunk := s.recv(want - len(echoed))):
            echoed += chunk
    print(json.dumps({\(report), "received": len(echoed), "match": bytes(echoed) == data}))
    sys.exit(0 if bytes(echoed) == data else 1)
    """
}

func randomBytes(_ count: Int) -> [UInt8] {
    var bytes = [UInt8](repeating: 0, count: count)
    bytes.withUnsafeMutableBytes { buffer in
        var generator = SystemRandomNumberGenerator()
        var offset = 0
        while offset < buffer.count {
            var word = generator.next()
            let n = min(8, buffer.count - offset)
            withUnsafeBytes(of: &word) { buffer.baseAddress!.advanced(by: offset).copyMemory(from: $0.baseAddress!, byteCount: n) }
            offset += n
        }
    }
    return bytes
}

func temporaryDirectory(_ name: String) throws -> String {
    let path = FileManager.default.temporaryDirectory.appendingPathComponent("ugate-\(name)-\(UUID().uuidString)").path
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

/// Shared fixtures for the multi-node tests: nodes and echo servers on 127.0.0.1 with ephemeral
/// ports, all stopped in tearDown.
class MeshTestCase: XCTestCase {
    var cleanups: [() async -> Void] = []

    override func tearDown() async throws {
        for cleanup in cleanups.reversed() { await cleanup() }
        cleanups = []
    }

    func echoServer() async throws -> EchoServer {
        let echo = try await EchoServer.start()
        cleanups.append { await echo.stop() }
        return echo
    }

    /// Starts a node listening on 127.0.0.1:0; returns it and its port.
    /// `streamOpenTimeout` is generous by default: tests that open many streams on a loaded
    /// machine check completeness, not latency.
    func node(
        _ identity: NodeIdentity, peers: [PeerConfig], log: LogCapture = LogCapture(), streamOpenTimeout: Double = 60,
        forwarder: ForwardMode = .copy
    ) async throws -> (MeshNode, Int) {
        let config = MeshConfig(
            identityDir: "/nonexistent", peers: peers, listenHost: "127.0.0.1", streamOpenTimeout: streamOpenTimeout, forwarder: forwarder)
        let node = try MeshNode(config: config, identity: identity, logger: log.logger("test"))
        let port = try await node.listen(port: 0, name: "mesh")
        cleanups.append { await node.shutdown() }
        return (node, port)
    }

    func info(_ destination: Destination) -> StreamInfo {
        StreamInfo(listener: "test", source: "127.0.0.1:1", destination: destination)
    }

    /// write, read the echo, write more and shut down our write side, read the rest and EOF.
    func echoAndHalfClose(_ upstream: any Upstream, port: Int) async throws {
        try await echoAndHalfClose(upstream, to: Destination(host: "127.0.0.1", port: UInt16(port)))
    }

    func echoAndHalfClose(_ upstream: any Upstream, to destination: Destination) async throws {
        let fd = try await upstream.dial(destination, for: info(destination))
        defer { close(fd) }
        try echoAndHalfClose(socket: fd)
    }

    /// The exchange of `echoAndHalfClose` on a connected socket to an echo server.
    func echoAndHalfClose(socket fd: Int32) throws {
        let first = randomBytes(1000)
        try FD.write(fd, first)
        XCTAssertEqual(try FD.read(fd, count: first.count), first)
        let rest = randomBytes(3 << 20)
        let echoed = try FD.exchange(fd, send: rest)
        XCTAssertEqual(echoed.count, rest.count)
        XCTAssertTrue(echoed == rest, "echo differs")
    }

    /// Polls `condition` every 50 ms for at most `seconds`; `what` is read when it times out.
    func waitUntil(seconds: Double = 15, _ what: @autoclosure () -> String, _ condition: () -> Bool) async throws {
        let deadline = ContinuousClock.now + .seconds(seconds)
        while !condition() {
            guard ContinuousClock.now < deadline else { throw FD.Failure(description: "timed out waiting until \(what())") }
            try await Task.sleep(for: .milliseconds(50))
        }
    }
}
