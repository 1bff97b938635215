import Foundation
import Gate
import Glibc
import XCTest
@testable import PeerMesh

/// Gate capture fronts (SOCKS5, HTTP CONNECT) whose route sends the stream to a mesh peer over
/// HTTP/2: the upstream takes the captured client socket itself (`Upstream.open`,
/// `H2UpstreamStream`), no socketpair. alice runs a `GateNode` whose routes send `BOB-ID:port`
/// to `/dm/` and bob's mangled hostname to HBONE; bob joins each stream to an echo server on
/// 127.0.0.1.
final class GateCaptureMeshTests: MeshTestCase {
    private struct Setup {
        var gate: GateNode
        var access: LogCapture
        var bobID: String
        var bobHost: String
        var socks: UInt16
        var http: UInt16
    }

    /// bob lets alice reach only `allowed`; alice's gate has the default listeners (ephemeral).
    private func setup(allowed: [String]) async throws -> Setup {
        let aliceID = try NodeIdentity.generate()
        let bobID = try NodeIdentity.generate()
        let (_, bobPort) = try await node(bobID, peers: [PeerConfig(id: aliceID.node.id, destinations: allowed)])
        let (alice, _) = try await node(aliceID, peers: [PeerConfig(id: bobID.node.id, addresses: ["127.0.0.1:\(bobPort)"])])
        let bob = bobID.node.id
        let bobHost = aliceID.naming.hostname(for: bob)
        var config = GateConfig()
        config.basePort = 0
        config.loops = 2
        config.routes = [RouteConfig(dest: bob, to: "mesh-dm"), RouteConfig(host: bobHost, to: "mesh-hbone")]
        let access = LogCapture()
        let gate = try GateNode(
            config: config,
            upstreams: ["mesh-dm": try alice.upstream(to: bob, kind: .dm), "mesh-hbone": try alice.upstream(to: bob, kind: .hbone)],
            accessLog: access.logger("access"))
        gate.start()
        cleanups.append { gate.stop() }
        return Setup(
            gate: gate, access: access, bobID: bob, bobHost: bobHost, socks: gate.address(of: "socks5")!.port,
            http: gate.address(of: "http")!.port)
    }

    func testSOCKS5AndConnectThroughDMAndHBONEEchoWithHalfClose() async throws {
        let echo = try await echoServer()
        let s = try await setup(allowed: ["127.0.0.1:\(echo.port)"])
        let port = UInt16(echo.port)
        for host in [s.bobID, s.bobHost] {
            // The handshakes block on threads of their own; the exchange needs no task of the Gate's.
            let viaSocks = try await onThread { try ProxyClient.socks5(proxy: s.socks, host: host, port: port) }
            XCTAssertEqual(viaSocks.reply, 0)
            try echoAndHalfClose(socket: viaSocks.fd)
            close(viaSocks.fd)
            let viaConnect = try await onThread { try ProxyClient.connect(proxy: s.http, host: host, port: port) }
            XCTAssertTrue(viaConnect.head.hasPrefix("HTTP/1.1 200 "), viaConnect.head)
            try echoAndHalfClose(socket: viaConnect.fd)
            close(viaConnect.fd)
        }
        XCTAssertEqual(echo.accepted, 4)
        // One access-log line per stream with the bytes each way, carried by the mesh stream.
        let total = 1000 + (3 << 20)
        // The upstream's own name: `h2-<kind>:<first 8 characters of bob's ID>`.
        for (listener, kind) in [("socks5", "dm"), ("socks5", "hbone"), ("http", "dm"), ("http", "hbone")] {
            let upstream = "h2-\(kind):\(s.bobID.prefix(8))"
            try await waitUntil("access log for \(listener) via \(upstream): \(s.access.detailed)") {
                s.access.detailed.contains {
                    $0.hasPrefix("stream ") && $0.contains("listener=\(listener) ") && $0.contains("upstream=\(upstream) ")
                        && $0.contains("bytes.up=\(total) ") && $0.contains("bytes.down=\(total) ") && $0.contains("mode=stream ")
                        && $0.contains("end=done ")
                }
            }
        }
    }

    func testManyConcurrentCapturedStreamsUseNoSocketpair() async throws {
        let echo = try await echoServer()
        let s = try await setup(allowed: ["127.0.0.1:\(echo.port)"])
        let port = UInt16(echo.port)
        // Warm up both pooled connections, so the baseline counts what they own.
        for host in [s.bobID, s.bobHost] {
            let warm = try await onThread { try ProxyClient.socks5(proxy: s.socks, host: host, port: port) }
            try await onThread { try FD.exchange(warm.fd, send: Array("warm".utf8)) }
            close(warm.fd)
        }
        let baseline = UnixSockets.count()
        let streams = 64
        // Every stream is open (first echo read) before any ends: the count is taken with all live.
        var opening: [Int32] = []
        for i in 0..<streams {
            let host = i % 2 == 0 ? s.bobID : s.bobHost
            let fd = try await onThread {
                i % 4 < 2 ? try ProxyClient.socks5(proxy: s.socks, host: host, port: port).fd
                    : try ProxyClient.connect(proxy: s.http, host: host, port: port).fd
            }
            opening.append(fd)
        }
        let open = opening
        let payloads = (0..<streams).map { _ in randomBytes(64 << 10) }
        try await onThread {
            for (fd, payload) in zip(open, payloads) {
                try FD.write(fd, Array(payload.prefix(100)))
                guard try FD.read(fd, count: 100) == Array(payload.prefix(100)) else { throw FD.Failure(description: "first echo differs") }
            }
        }
        let during = UnixSockets.count()
        XCTAssertEqual(during, baseline, "\(streams) live captured mesh streams must add no AF_UNIX socket (a socketpair adds two each)")
        let results = try await withThrowingTaskGroup(of: Bool.self) { group in
            for (fd, payload) in zip(open, payloads) {
                group.addTask {
                    try await onThread { try FD.exchange(fd, send: Array(payload.dropFirst(100))) == Array(payload.dropFirst(100)) }
                }
            }
            return try await group.reduce(into: [Bool]()) { $0.append($1) }
        }
        for fd in open { close(fd) }
        XCTAssertEqual(results.filter { $0 }.count, streams, "every stream echoes its bytes and ends after the half-close")
        try await waitUntil("\(streams) clean access-log lines") {
            s.access.detailed.filter { $0.contains("bytes.up=\(64 << 10) ") && $0.contains("bytes.down=\(64 << 10) ") && $0.contains("end=done ") }
                .count == streams
        }
    }

    func testDestinationThePeerRefusesGivesAClearErrorAndRelaysNothing() async throws {
        let allowed = try await echoServer()
        let forbidden = try await echoServer()
        let s = try await setup(allowed: ["127.0.0.1:\(allowed.port)"])
        let port = UInt16(forbidden.port)
        for host in [s.bobID, s.bobHost] {
            let socks = try await onThread { try ProxyClient.socks5(proxy: s.socks, host: host, port: port) }
            close(socks.fd)
            XCTAssertEqual(socks.reply, 0x02, "SOCKS5 reply: connection not allowed by ruleset")
            let connect = try await onThread { try ProxyClient.connect(proxy: s.http, host: host, port: port) }
            let body = try await onThread { String(decoding: try FD.exchange(connect.fd, send: []), as: UTF8.self) }
            close(connect.fd)
            XCTAssertTrue(connect.head.hasPrefix("HTTP/1.1 403 "), connect.head)
            XCTAssertTrue(body.contains("may not reach \(host):\(port) through this node"), body)
        }
        XCTAssertEqual(forbidden.accepted, 0, "nothing may be relayed to a refused destination")
    }
}

/// Runs blocking socket work on a thread of its own (not the cooperative pool the Gate's
/// fronts run on).
func onThread<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread.detachNewThread { continuation.resume(with: Result { try work() }) }
    }
}

/// Blocking SOCKS5 (RFC 1928) and HTTP CONNECT clients for 127.0.0.1 proxies.
enum ProxyClient {
    /// CONNECT by domain name; returns the socket and the reply code (0 = succeeded).
    static func socks5(proxy: UInt16, host: String, port: UInt16) throws -> (fd: Int32, reply: UInt8) {
        let fd = try FD.connect(port: proxy)
        try FD.write(fd, [5, 1, 0])
        guard try FD.read(fd, count: 2) == [5, 0] else { throw FD.Failure(description: "SOCKS5 method not accepted") }
        try FD.write(fd, [5, 1, 0, 3, UInt8(host.utf8.count)] + Array(host.utf8) + [UInt8(port >> 8), UInt8(port & 0xff)])
        let reply = try FD.read(fd, count: 4)
        switch reply[3] {
        case 1: _ = try FD.read(fd, count: 6)
        case 4: _ = try FD.read(fd, count: 18)
        default: throw FD.Failure(description: "SOCKS5 reply with address type \(reply[3])")
        }
        return (fd, reply[1])
    }

    /// `CONNECT host:port`; returns the socket and the response head (status line and fields).
    static func connect(proxy: UInt16, host: String, port: UInt16) throws -> (fd: Int32, head: String) {
        let fd = try FD.connect(port: proxy)
        try FD.write(fd, Array("CONNECT \(host):\(port) HTTP/1.1\r\nHost: \(host):\(port)\r\n\r\n".utf8))
        var head: [UInt8] = []
        while !head.suffix(4).elementsEqual("\r\n\r\n".utf8) {
            guard head.count < 8192 else { throw FD.Failure(description: "CONNECT response head too long") }
            head += try FD.read(fd, count: 1)
        }
        return (fd, String(decoding: head, as: UTF8.self))
    }
}

/// Counts this process's open AF_UNIX sockets: descriptors in /proc/self/fd whose socket inode
/// is listed in /proc/net/unix.
enum UnixSockets {
    static func count() -> Int {
        guard let table = readProcFile("/proc/net/unix") else { return -1 }
        let unixInodes = Set(table.split(separator: "\n").dropFirst().compactMap { line -> Substring? in
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            return fields.count > 6 ? fields[6] : nil
        })
        let fds = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
        return fds.filter { fd in
            guard let target = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/\(fd)"),
                target.hasPrefix("socket:["), target.hasSuffix("]")
            else { return false }
            return unixInodes.contains(target.dropFirst(8).dropLast())
        }.count
    }

    /// The whole of a /proc file (it reports size 0, and Foundation's one-shot read stops at a page).
    private static func readProcFile(_ path: String) -> String? {
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 64 << 10)
        while true {
            let n = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { return n == 0 ? String(decoding: bytes, as: UTF8.self) : nil }
            bytes += chunk[0..<n]
        }
    }
}
