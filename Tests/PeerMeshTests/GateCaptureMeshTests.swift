import Foundation
import Glibc
import NIOCore
import Synchronization
import XCTest
@testable import Gate
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
    /// `beforeGate` runs with alice's two upstreams before the gate exists (a test's baseline).
    private func setup(
        allowed: [String], configure: (inout GateConfig) -> Void = { _ in },
        beforeGate: ([H2MeshUpstream]) async throws -> Void = { _ in }
    ) async throws -> Setup {
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
        configure(&config)
        let dm = try alice.upstream(to: bob, kind: .dm)
        let hbone = try alice.upstream(to: bob, kind: .hbone)
        try await beforeGate([dm, hbone])
        let access = LogCapture()
        let gate = try GateNode(config: config, upstreams: ["mesh-dm": dm, "mesh-hbone": hbone], accessLog: access.logger("access"))
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
            _ = try await onThread { try FD.exchange(warm.fd, send: Array("warm".utf8)) }
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

    // MARK: lifecycle of carried streams (/debug/streams, idle timeout, stop)

    /// GET /debug/streams from a real admin server serving the gate's routes.
    private func debugStreams(_ admin: any Channel) async throws -> [StreamSnapshot] {
        let port = UInt16(admin.localAddress!.port!)
        let response = try await onThread { () -> [UInt8] in
            let fd = try FD.connect(port: port)
            defer { close(fd) }
            try FD.write(fd, Array("GET /debug/streams HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n".utf8))
            return try FD.exchange(fd, send: [], halfClose: false)
        }
        let text = String(decoding: response, as: UTF8.self)
        guard text.hasPrefix("HTTP/1.1 200 "), let split = text.range(of: "\r\n\r\n") else {
            throw FD.Failure(description: "unexpected /debug/streams response: \(text)")
        }
        return try JSONDecoder().decode([StreamSnapshot].self, from: Data(text[split.upperBound...].utf8))
    }

    func testCarriedStreamIsListedInDebugStreamsWithGrowingByteCounts() async throws {
        let echo = try await echoServer()
        let s = try await setup(allowed: ["127.0.0.1:\(echo.port)"])
        let admin = try await AdminServer(routes: s.gate.adminRoutes()).start(host: "127.0.0.1", port: 0)
        cleanups.append { try? await admin.close() }
        let port = UInt16(echo.port)
        let viaSocks = try await onThread { try ProxyClient.socks5(proxy: s.socks, host: s.bobID, port: port) }
        defer { close(viaSocks.fd) }
        let viaConnect = try await onThread { try ProxyClient.connect(proxy: s.http, host: s.bobHost, port: port) }
        defer { close(viaConnect.fd) }
        var previous: [String: StreamSnapshot] = [:]
        for round in 1...3 {
            let payload = randomBytes(round * 10_000)
            for fd in [viaSocks.fd, viaConnect.fd] {
                try await onThread {
                    try FD.write(fd, payload)
                    guard try FD.read(fd, count: payload.count) == payload else { throw FD.Failure(description: "echo differs") }
                }
            }
            // The echo came back through the client socket: its counter saw every byte both ways.
            let listed = try await debugStreams(admin).filter { $0.mode == "stream" }
            XCTAssertEqual(listed.map(\.listener).sorted(), ["http", "socks5"], "both carried streams are listed: \(listed)")
            let total = UInt64((1...round).reduce(0) { $0 + $1 * 10_000 })
            for snapshot in listed {
                // The destination the client asked for (bob's ID or mangled hostname).
                XCTAssertEqual(snapshot.destination, "\(snapshot.listener == "socks5" ? s.bobID : s.bobHost):\(echo.port)")
                XCTAssertEqual(snapshot.upstream, "h2-\(snapshot.listener == "socks5" ? "dm" : "hbone"):\(s.bobID.prefix(8))")
                XCTAssertTrue(snapshot.source.hasPrefix("127.0.0.1:"), snapshot.source)
                XCTAssertEqual(snapshot.bytesUp, total, "bytes up after round \(round)")
                XCTAssertEqual(snapshot.bytesDown, total, "bytes down after round \(round)")
                if let before = previous[snapshot.listener] {
                    XCTAssertEqual(snapshot.id, before.id, "the same stream keeps its id")
                    XCTAssertGreaterThan(snapshot.bytesUp, before.bytesUp)
                    XCTAssertGreaterThanOrEqual(snapshot.ageMillis, before.ageMillis)
                }
                previous[snapshot.listener] = snapshot
            }
        }
        let status = await s.gate.statusText()
        XCTAssertTrue(status.contains("streams: 2 active"), status)
        // Once the streams end they leave the list (and the registry).
        for fd in [viaSocks.fd, viaConnect.fd] { try await onThread { _ = try FD.exchange(fd, send: []) } }
        try await waitUntil("carried streams leave the registry") { s.gate.context.carried.count == 0 }
        let after = try await debugStreams(admin)
        XCTAssertTrue(after.isEmpty, "\(after)")
    }

    /// `/debug/streams` reports each direction's half-close for carried streams, as for relays:
    /// the client's FIN passed on (`upFinished`) while the destination keeps sending, and the
    /// destination's FIN written to the client (`downFinished`) while the client keeps its side.
    func testCarriedStreamHalfCloseFlagsInDebugStreams() async throws {
        let holding = try HalfCloseServer(closesFirst: false)
        let closing = try HalfCloseServer(closesFirst: true)
        cleanups.append {
            holding.stop()
            closing.stop()
        }
        let s = try await setup(allowed: ["127.0.0.1:\(holding.port)", "127.0.0.1:\(closing.port)"])
        let admin = try await AdminServer(routes: s.gate.adminRoutes()).start(host: "127.0.0.1", port: 0)
        cleanups.append { try? await admin.close() }

        // The client half-closes; the destination reads its EOF and keeps its side open.
        let up = try await onThread { try ProxyClient.socks5(proxy: s.socks, host: s.bobID, port: holding.port) }
        defer { close(up.fd) }
        try await onThread { try FD.write(up.fd, Array("hello".utf8)) }
        XCTAssertEqual(shutdown(up.fd, Int32(SHUT_WR)), 0)
        try await waitUntil("the destination read the client's FIN") { holding.eofSeen }
        var listed = try await debugStreams(admin).filter { $0.mode == "stream" }
        XCTAssertEqual(listed.count, 1)
        XCTAssertEqual(listed.first?.upFinished, true, "\(listed)")
        XCTAssertEqual(listed.first?.downFinished, false, "\(listed)")
        holding.release()
        let rest = try await onThread { try FD.exchange(up.fd, send: [], halfClose: false) }
        XCTAssertEqual(rest, Array("BYE".utf8))
        try await waitUntil("the first stream left the registry") { s.gate.context.carried.count == 0 }

        // The destination closes first: its FIN reaches the client, the client keeps its side.
        let down = try await onThread { try ProxyClient.connect(proxy: s.http, host: s.bobHost, port: closing.port) }
        defer { close(down.fd) }
        let greeting = try await onThread { try FD.exchange(down.fd, send: [], halfClose: false) }
        XCTAssertEqual(greeting, Array("BYE".utf8), "the destination's bytes and then its FIN")
        listed = try await debugStreams(admin).filter { $0.mode == "stream" }
        XCTAssertEqual(listed.count, 1)
        XCTAssertEqual(listed.first?.downFinished, true, "\(listed)")
        XCTAssertEqual(listed.first?.upFinished, false, "\(listed)")
        XCTAssertEqual(shutdown(down.fd, Int32(SHUT_WR)), 0)
        try await waitUntil("the second stream left the registry") { s.gate.context.carried.count == 0 }
    }

    func testIdleCarriedStreamIsResetAfterTheIdleTimeout() async throws {
        let echo = try await echoServer()
        let s = try await setup(allowed: ["127.0.0.1:\(echo.port)"]) { $0.idleTimeout = 2 }
        let port = UInt16(echo.port)
        for (listener, host) in [("socks5", s.bobID), ("http", s.bobHost)] {
            let fd = try await onThread {
                listener == "socks5" ? try ProxyClient.socks5(proxy: s.socks, host: host, port: port).fd
                    : try ProxyClient.connect(proxy: s.http, host: host, port: port).fd
            }
            defer { close(fd) }
            // Traffic every 250 ms for 5 s (longer than two idle timeouts) keeps it open.
            try await onThread {
                for i in 0..<20 {
                    try FD.write(fd, [UInt8(i)])
                    guard try FD.read(fd, count: 1) == [UInt8(i)] else { throw FD.Failure(description: "echo differs") }
                    usleep(250_000)
                }
            }
            // Then silence: the gate resets it (the bounded read sees EOF or ECONNRESET).
            let ended = try await onThread { () -> String in
                do {
                    _ = try FD.read(fd, count: 1)
                    return "read a byte"
                } catch let failure as FD.Failure {
                    return failure.description
                }
            }
            XCTAssertTrue(ended.hasPrefix("EOF") || ended.contains("reset"), "the idle stream ends: \(ended)")
            try await waitUntil("access log end=idle for \(listener): \(s.access.detailed)") {
                s.access.detailed.contains {
                    $0.hasPrefix("stream ") && $0.contains("listener=\(listener) ") && $0.contains("mode=stream ")
                        && $0.contains("end=idle ") && $0.contains("detail=idle for 2000 ms ") && $0.contains("bytes.up=20 ")
                }
            }
            XCTAssertEqual(s.gate.context.carried.count, 0)
        }
    }

    func testGateStopResetsCarriedStreamsAndLeaksNoDescriptor() async throws {
        let echo = try await echoServer()
        var baseline: [Int32: String] = [:]
        let s = try await setup(allowed: ["127.0.0.1:\(echo.port)"]) { _ in } beforeGate: { upstreams in
            // Connect the pooled mesh connections first, so the baseline counts what they own.
            for upstream in upstreams { _ = try await upstream.connectionLoop() }
            try await Task.sleep(for: .milliseconds(200))
            baseline = Sys.openDescriptors()
        }
        let port = UInt16(echo.port)
        var fds: [Int32] = []
        for i in 0..<8 {
            let host = i % 2 == 0 ? s.bobID : s.bobHost
            fds.append(try await onThread {
                i % 4 < 2 ? try ProxyClient.socks5(proxy: s.socks, host: host, port: port).fd
                    : try ProxyClient.connect(proxy: s.http, host: host, port: port).fd
            })
        }
        let open = fds
        try await onThread {
            for fd in open {
                try FD.write(fd, [7])
                guard try FD.read(fd, count: 1) == [7] else { throw FD.Failure(description: "echo differs") }
            }
        }
        XCTAssertEqual(s.gate.context.carried.count, open.count)
        s.gate.stop()
        // Every client sees its stream end (EOF or RST) without sending anything more.
        let endings = try await onThread {
            open.map { fd -> String in
                do {
                    _ = try FD.exchange(fd, send: [], halfClose: false)
                    return "EOF"
                } catch let failure as FD.Failure {
                    return failure.description
                } catch {
                    return "\(error)"
                }
            }
        }
        for ending in endings { XCTAssertTrue(ending == "EOF" || ending.contains("reset"), ending) }
        for fd in open { close(fd) }
        try await waitUntil("\(open.count) access-log lines end=shutdown: \(s.access.detailed)") {
            s.access.detailed.filter { $0.contains("mode=stream ") && $0.contains("end=shutdown ") }.count == open.count
        }
        try await waitUntil("the registry is empty") { s.gate.context.carried.count == 0 }
        // The gate's listeners and loops, the adopted client sockets, bob's sockets to the echo
        // server and the echo server's: all closed again.
        try await waitUntil("descriptors left open: \(Sys.descriptorsOpened(since: baseline))") { Sys.descriptorsOpened(since: baseline).isEmpty }
        XCTAssertEqual(echo.accepted, open.count)
    }

    /// Absolute-URI HTTP proxying (`POST http://host:port/…`) to a mesh peer: the rewritten
    /// request head goes into the carried stream first and the client socket follows it — no
    /// AF_UNIX socket while the request is in flight (the old path dialled a socketpair) — and
    /// the origin sees origin-form, no hop-by-hop fields, the body whole; one access-log line.
    func testAbsoluteURIRequestThroughTheMeshUsesNoSocketpair() async throws {
        let origin = try RecordingOrigin()
        cleanups.append { origin.stop() }
        let s = try await setup(allowed: ["127.0.0.1:\(origin.port)"])
        for (index, (host, kind)) in [(s.bobID, "dm"), (s.bobHost, "hbone")].enumerated() {
            let baseline = UnixSockets.count()
            let fd = try FD.connect(port: s.http)
            defer { close(fd) }
            let head = "POST http://\(host):\(origin.port)/upload?n=\(index) HTTP/1.1\r\nHost: \(host):\(origin.port)\r\n"
                + "Proxy-Connection: keep-alive\r\nKeep-Alive: timeout=5\r\nContent-Length: 10\r\n\r\n01234"
            try await onThread { try FD.write(fd, Array(head.utf8)) }
            try await waitUntil("the origin read request \(index)'s head") { origin.heads.count == index + 1 }
            XCTAssertEqual(UnixSockets.count(), baseline, "a request carried by the mesh stream adds no AF_UNIX socket")
            let response = String(decoding: try await onThread { try FD.exchange(fd, send: Array("56789".utf8)) }, as: UTF8.self)
            XCTAssertTrue(response.hasPrefix("HTTP/1.1 200 OK\r\n"), response)
            XCTAssertTrue(response.hasSuffix("body=0123456789"), response)
            let seen = origin.heads[index]
            XCTAssertTrue(seen.hasPrefix("POST /upload?n=\(index) HTTP/1.1\r\n"), seen)
            XCTAssertTrue(seen.contains("\r\nConnection: close\r\n") && seen.contains("\r\nHost: \(host):\(origin.port)\r\n"), seen)
            XCTAssertFalse(seen.lowercased().contains("proxy-connection") || seen.lowercased().contains("keep-alive"), seen)
            let upstream = "h2-\(kind):\(s.bobID.prefix(8))"
            try await waitUntil("access log for \(upstream): \(s.access.detailed)") {
                s.access.detailed.contains {
                    $0.hasPrefix("stream ") && $0.contains("listener=http ") && $0.contains("upstream=\(upstream) ") && $0.contains("mode=stream ")
                        && $0.contains("end=done ")
                }
            }
        }
        // curl as the proxy client (absolute-form request through `-x`).
        let url = "http://\(s.bobHost):\(origin.port)/curl"
        let curl = try await onThread { try runCommand(["curl", "-sS", "--max-time", "20", "-x", "http://127.0.0.1:\(s.http)", "-d", "from-curl", url]) }
        XCTAssertEqual(curl, "body=from-curl")
        XCTAssertTrue(origin.heads.last?.hasPrefix("POST /curl HTTP/1.1\r\n") == true, "\(origin.heads)")
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

/// A loopback TCP listener on 127.0.0.1 (ephemeral port) whose every accepted connection is
/// served by `serve` on a thread of its own (blocking I/O; `serve` closes it).
final class ThreadedServer: Sendable {
    let fd: Int32
    let port: UInt16

    init(_ serve: @escaping @Sendable (Int32) -> Void) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let listening = fd
        let bound = withUnsafeMutablePointer(to: &addr) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.bind(listening, $0, length) == 0 && getsockname(listening, $0, &length) == 0 }
        }
        guard bound, listen(fd, 16) == 0 else { throw FD.Failure(description: "test server: bind/listen failed") }
        port = UInt16(bigEndian: addr.sin_port)
        Thread.detachNewThread {
            while true {
                let c = accept(listening, nil, nil)
                if c < 0 {
                    if errno == EINTR { continue }
                    return
                }
                Thread.detachNewThread { serve(c) }
            }
        }
    }

    func stop() {
        shutdown(fd, Int32(SHUT_RDWR))
        close(fd)
    }
}

/// A loopback HTTP/1.1 origin: reads one request (head and `Content-Length` body), records
/// the head as received, answers `200` with `body=<the body>` and closes.
final class RecordingOrigin: Sendable {
    private final class Heads: Sendable {
        let list = Mutex<[String]>([])
    }

    private let seen: Heads
    private let server: ThreadedServer

    init() throws {
        let seen = Heads()
        self.seen = seen
        server = try ThreadedServer { c in Self.serve(c, seen) }
    }

    var port: UInt16 { server.port }
    var heads: [String] { seen.list.withLock { $0 } }

    private static func serve(_ c: Int32, _ seen: Heads) {
        defer { close(c) }
        var received: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        func fill() -> Bool {
            let n = chunk.withUnsafeMutableBytes { recv(c, $0.baseAddress!, $0.count, 0) }
            guard n > 0 else { return false }
            received += chunk[0..<n]
            return true
        }
        while received.firstRange(of: Array("\r\n\r\n".utf8)) == nil {
            guard fill() else { return }
        }
        let end = received.firstRange(of: Array("\r\n\r\n".utf8))!.upperBound
        let head = String(decoding: received[..<end], as: UTF8.self)
        seen.list.withLock { $0.append(head) }
        let length = head.components(separatedBy: "\r\n").first { $0.lowercased().hasPrefix("content-length:") }
            .flatMap { Int($0.dropFirst(15).trimmingCharacters(in: .whitespaces)) } ?? 0
        while received.count < end + length {
            guard fill() else { return }
        }
        let body = "body=" + String(decoding: received[end..<(end + length)], as: UTF8.self)
        let reply = "HTTP/1.1 200 OK\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n" + body
        _ = try? FD.write(c, Array(reply.utf8))
    }

    func stop() { server.stop() }
}

/// A loopback TCP server for half-close checks: `closesFirst` — sends `BYE` and closes at
/// once; otherwise reads until the client's EOF (`eofSeen`), then waits for `release()` and
/// sends `BYE` and closes.
final class HalfCloseServer: Sendable {
    private final class Flags: Sendable {
        let eof = Mutex(false)
        let released = DispatchSemaphore(value: 0)
    }

    private let flags: Flags
    private let server: ThreadedServer

    init(closesFirst: Bool) throws {
        let flags = Flags()
        self.flags = flags
        server = try ThreadedServer { c in
            defer { close(c) }
            if !closesFirst {
                var chunk = [UInt8](repeating: 0, count: 4096)
                while chunk.withUnsafeMutableBytes({ recv(c, $0.baseAddress!, $0.count, 0) }) > 0 {}
                flags.eof.withLock { $0 = true }
                guard flags.released.wait(timeout: .now() + 30) == .success else { return }
            }
            _ = try? FD.write(c, Array("BYE".utf8))
        }
    }

    var port: UInt16 { server.port }
    var eofSeen: Bool { flags.eof.withLock { $0 } }

    func release() { flags.released.signal() }

    func stop() { server.stop() }
}
