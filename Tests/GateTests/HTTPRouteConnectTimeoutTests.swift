import Foundation
import Glibc
import XCTest

@testable import Gate

/// A loopback address that never completes a TCP handshake: a socket listening with backlog 0
/// whose accept queue is filled by one connection that is never accepted, so Linux drops every
/// further SYN (deterministic, no firewall needed). Closed by `close()`.
final class BlackholePort {
    let fd: Int32
    let port: UInt16
    private var fillers: [Int32] = []

    init() throws {
        fd = try Sys.listen(try SocketAddress(host: "127.0.0.1", port: 0), transparent: false, reusePort: false, backlog: 0)
        port = SocketAddress.local(of: fd)!.port
        // Fill the accept queue (one established connection is enough with backlog 0).
        for _ in 0..<2 {
            let c = try BlackholePort.startConnect(port)
            fillers.append(c)
            _ = BlackholePort.connected(c, waitMillis: 500)
        }
        // The precondition the tests rely on: a new connection does not complete.
        let probe = try BlackholePort.startConnect(port)
        defer { Glibc.close(probe) }
        guard !BlackholePort.connected(probe, waitMillis: 1000) else { throw GateError(.config, "blackhole port \(port) accepted a handshake") }
    }

    var address: String { "127.0.0.1:\(port)" }

    /// A non-blocking socket connecting to 127.0.0.1:`port`.
    static func startConnect(_ port: UInt16) throws -> Int32 {
        let c = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard c >= 0 else { throw GateError(.syscall, "socket: errno \(errno)") }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = port.bigEndian
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let r = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(c, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard r == 0 || errno == EINPROGRESS else {
            Glibc.close(c)
            throw GateError(.syscall, "connect: errno \(errno)")
        }
        return c
    }

    /// Whether the non-blocking connect of `fd` completed successfully within `waitMillis`.
    static func connected(_ fd: Int32, waitMillis: Int32) -> Bool {
        var p = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
        guard poll(&p, 1, waitMillis) == 1 else { return false }
        var error: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length)
        return error == 0
    }

    func close() {
        fillers.forEach { Glibc.close($0) }
        Glibc.close(fd)
    }
}

/// Stands in for a mesh peer's upstream whose stream never opens: `dial` connects to the
/// destination (a `BlackholePort`) without a timeout of its own and returns only if the
/// handshake completes, giving up after 60 s or when cancelled.
struct HangingUpstream: Upstream {
    let name = "mesh:hanging"
    let attempts = Counter()

    final class Counter: @unchecked Sendable {  // `value` is behind the lock
        private let lock = NSLock()
        private var count = 0
        var value: Int { lock.withLock { count } }
        func increment() { lock.withLock { count += 1 } }
    }

    func dial(_ destination: Destination, for info: StreamInfo) async throws -> Int32 {
        attempts.increment()
        let fd = try BlackholePort.startConnect(destination.port)
        for _ in 0..<600 {
            if BlackholePort.connected(fd, waitMillis: 0) { return fd }
            if Task.isCancelled { break }
            try? await Task.sleep(nanoseconds: 100_000_000)
        }
        Glibc.close(fd)
        throw GateError(.timeout, "hanging upstream gave up")
    }
}

/// Two blackhole ports and a router (over `loops`) that sends the second one through a
/// `HangingUpstream` (standing in for a mesh peer whose stream never opens) and the first
/// one direct.
struct BlackholeRoutes {
    let direct: BlackholePort
    let viaMesh: BlackholePort
    let upstream = HangingUpstream()
    let router: Router

    init(loops: GateLoopGroup) throws {
        direct = try BlackholePort()
        viaMesh = try BlackholePort()
        router = try Router(
            rules: [RouteConfig(dest: viaMesh.address, to: upstream.name)], hosts: [:], direct: DirectUpstream(loops: loops),
            upstreams: [upstream.name: upstream])
    }

    func close() {
        direct.close()
        viaMesh.close()
    }
}

/// Connect timeouts: a backend that never completes the TCP handshake — dialled directly or
/// through a (mesh) upstream — gives 503 after `connectTimeout`, naming the backend and the
/// timeout, not a hang; a rule deadline shorter than the connect timeout gives 504; a
/// connect timeout moves on to the rule's other backend.
final class HTTPRouteConnectTimeoutTests: XCTestCase {
    func testBlackholedBackendsTimeOut() throws {
        let loops = try GateLoopGroup(count: 1)
        defer { loops.shutdown() }
        let holes = try BlackholeRoutes(loops: loops)
        defer { holes.close() }
        let (direct, viaMesh, upstream) = (holes.direct, holes.viaMesh, holes.upstream)
        let live = try PythonBackend("live")
        defer { live.stop() }
        let yaml = """
            apiVersion: gateway.networking.k8s.io/v1
            kind: HTTPRoute
            metadata: {name: plain}
            spec:
              hostnames: [plain.example]
              rules: [{backendRefs: [{name: hole, port: 80}]}]
            ---
            apiVersion: gateway.networking.k8s.io/v1
            kind: HTTPRoute
            metadata: {name: mesh}
            spec:
              hostnames: [mesh.example]
              rules: [{backendRefs: [{name: meshhole, port: 80}]}]
            ---
            apiVersion: gateway.networking.k8s.io/v1
            kind: HTTPRoute
            metadata: {name: short}
            spec:
              hostnames: [short.example]
              rules: [{backendRefs: [{name: meshhole, port: 80}], timeouts: {request: 500ms}}]
            ---
            apiVersion: gateway.networking.k8s.io/v1
            kind: HTTPRoute
            metadata: {name: fallback}
            spec:
              hostnames: [fallback.example]
              rules: [{backendRefs: [{name: meshhole, port: 80, weight: 1000000}, {name: live, port: 80, weight: 1}]}]

            """
        let manifests = try HTTPRouteLoader(services: ["hole": direct.address, "meshhole": viaMesh.address, "live": live.address])
            .load(yaml: yaml, file: "timeouts.yaml")
        let gateway = try HTTPGateway(
            table: RouteTable(routes: manifests.routes), loops: loops, defaultTimeout: 30, connectTimeout: 1, router: holes.router)
        defer { gateway.stop() }

        func get(_ host: String) throws -> (code: String, body: String) {
            let r = try runProcess(
                try tool("curl"), ["-sS", "--max-time", "25", "-w", "\n%{http_code}", "-H", "Host: \(host)", "http://127.0.0.1:\(gateway.address.port)/"],
                timeout: 60)
            let lines = r.out.split(separator: "\n", omittingEmptySubsequences: false)
            return (String(lines.last ?? ""), lines.dropLast().joined(separator: "\n") + r.err)
        }
        let plain = try get("plain.example")
        XCTAssertEqual(plain.code, "503", plain.body)
        XCTAssertTrue(plain.body.contains("backend default/hole:80 (\(direct.address)) unavailable"), plain.body)
        XCTAssertTrue(plain.body.lowercased().contains("timeout"), plain.body)

        let mesh = try get("mesh.example")
        XCTAssertEqual(mesh.code, "503", mesh.body)
        XCTAssertTrue(mesh.body.contains("through upstream mesh:hanging timed out after 1.0 s"), mesh.body)
        XCTAssertTrue(mesh.body.contains("backend default/meshhole:80"), mesh.body)

        // The rule's deadline is shorter than the connect timeout: 504.
        let short = try get("short.example")
        XCTAssertEqual(short.code, "504", short.body)
        XCTAssertTrue(short.body.contains("did not respond within 0.5 s"), short.body)

        // A connect timeout moves on to the rule's other backend.
        let fallback = try get("fallback.example")
        XCTAssertEqual(fallback.code, "200", fallback.body)
        XCTAssertTrue(fallback.body.contains("\"backend\": \"live\""), fallback.body)
        XCTAssertGreaterThanOrEqual(upstream.attempts.value, 3)
    }

    /// Through a real mesh upstream: `ugate run` with a peer `bob` whose address accepts TCP
    /// and never answers (a listening socket nobody accepts on: the mTLS handshake never
    /// completes) and a route sending the backend to `mesh:bob`; the `httproute` section's
    /// `connectTimeout: 1` gives 503 naming bob's mesh upstream and the timeout (the mesh pool's own
    /// connect timeout is 10 s and it has no handshake timeout). The same for TLS passthrough:
    /// a `tls` listener passing `db.example` through to a backend routed to `mesh:bob` closes
    /// the client's connection and logs the SNI, bob's upstream and the timeout.
    func testSilentMeshPeerTimesOut() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("mesh-silent-\(getpid())-\(UUID())").path
        try FileManager.default.createDirectory(atPath: "\(dir)/routes", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let silent = try Sys.listen(try SocketAddress(host: "127.0.0.1", port: 0), transparent: false, reusePort: false, backlog: 16)
        defer { Glibc.close(silent) }
        let silentPort = SocketAddress.local(of: silent)!.port
        let bobID = try UgateNode.nodeID("\(dir)/bob")
        try writeManifest(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: far}\nspec:\n  rules: [{backendRefs: [{name: far, port: 80}]}]\n",
            "far.yaml", in: "\(dir)/routes")
        try #"""
            {"mesh": {"peers": [{"id": "\#(bobID)", "name": "bob", "addresses": ["127.0.0.1:\#(silentPort)"]}]},
             "routes": [{"dest": "10.77.0.1:80", "to": "mesh:bob"}, {"dest": "10.77.0.2:443", "to": "mesh:bob"}],
             "httproute": {"manifests": "\#(dir)/routes", "services": {"far": "10.77.0.1:80"}, "connectTimeout": 1,
                           "listeners": [{"name": "web", "port": 0},
                                         {"name": "tls", "port": 0, "tls": {"passthrough": {"db.example": "10.77.0.2:443"}}}]}}
            """#.write(toFile: "\(dir)/alice.json", atomically: true, encoding: .utf8)
        let node = try UgateNode(
            ["run", "--config", "\(dir)/alice.json", "--base-port", "0", "--identity-dir", "\(dir)/alice", "--log-level", "info"],
            stderr: "\(dir)/alice.log")
        defer { node.stop() }
        let address = node.address("web")
        XCTAssertFalse(address.isEmpty, node.banner)
        let r = try runProcess(try tool("curl"), ["-sS", "--max-time", "25", "-w", "\n%{http_code}", "http://\(address)/x"], timeout: 60)
        XCTAssertTrue(r.out.hasSuffix("\n503"), r.out + r.err)
        XCTAssertTrue(r.out.contains("backend default/far:80 (10.77.0.1:80) unavailable"), r.out)
        // The mesh upstream of bob is named after its transport and bob's node ID.
        XCTAssertTrue(r.out.contains("through upstream h2-dm:\(bobID.prefix(8))"), r.out)
        XCTAssertTrue(r.out.contains("timed out after 1.0 s"), r.out)

        // TLS passthrough through bob: no handshake, the connection is closed, the reason logged.
        let port = try XCTUnwrap(node.address("tls").split(separator: ":").last.flatMap { UInt16($0) }, node.banner)
        let seen = try servedCertificate(port: port, serverName: "db.example")
        XCTAssertEqual(seen.fingerprint, "", seen.output)
        let logged = eventually {
            let log = (try? String(contentsOfFile: "\(dir)/alice.log", encoding: .utf8)) ?? ""
            return log.split(separator: "\n").contains {
                $0.contains("passthrough failed") && $0.contains("sni=db.example") && $0.contains("through upstream h2-dm:\(bobID.prefix(8))")
                    && $0.contains("timed out after 1.0 s")
            }
        }
        XCTAssertTrue(logged, (try? String(contentsOfFile: "\(dir)/alice.log", encoding: .utf8)) ?? "")
    }
}
