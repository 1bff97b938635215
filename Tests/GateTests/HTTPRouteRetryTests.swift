import Foundation
import Glibc
import Synchronization
import XCTest

@testable import Gate

/// A loopback HTTP/1.1 backend on threads whose every answer is scripted: `behaviour` gets the
/// connection's number (0, 1, … in accept order), the request's number on that connection, its
/// method and path, and says what to do. Every request (its head and `Content-Length` body read
/// whole, unless the behaviour resets before the body) is recorded as `conn#N METHOD PATH
/// body-length` (or `body-partial` when reset before the body was read).
final class ScriptedBackend: @unchecked Sendable {  // fd and port are immutable; the record is behind a Mutex
    enum Action {
        /// Answer with `status` and `body` (keep-alive).
        case respond(Int, String)
        /// Answer, then close the connection at once (without `Connection: close`).
        case respondThenClose(Int, String)
        /// Close without answering (FIN), after reading the whole request.
        case close
        /// Reset (RST: SO_LINGER 0) after reading the request head only.
        case resetAfterHead
        /// Answer after `seconds` (a slow backend), keep-alive.
        case respondAfter(Double, Int, String)
    }

    let fd: Int32
    let port: UInt16
    private let log = Mutex<[String]>([])
    private let connections = Mutex(0)

    init(_ behaviour: @escaping @Sendable (_ conn: Int, _ request: Int, _ method: String, _ path: String) -> Action) throws {
        fd = try Sys.listen(try SocketAddress(host: "127.0.0.1", port: 0))
        _ = fcntl(fd, F_SETFL, 0)
        port = SocketAddress.local(of: fd)!.port
        let listenFd = fd
        Thread.detachNewThread { [self] in
            while true {
                let c = accept(listenFd, nil, nil)
                if c < 0 {
                    if errno == EINTR { continue }
                    return
                }
                let number = connections.withLock { n in
                    defer { n += 1 }
                    return n
                }
                Thread.detachNewThread { self.serve(c, number, behaviour) }
            }
        }
    }

    var address: String { "127.0.0.1:\(port)" }

    /// The requests seen so far.
    var requests: [String] { log.withLock { $0 } }

    private func serve(_ c: Int32, _ conn: Int, _ behaviour: (Int, Int, String, String) -> Action) {
        var pending: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        var index = 0
        func fill() -> Bool {
            let n = chunk.withUnsafeMutableBytes { recv(c, $0.baseAddress!, $0.count, 0) }
            if n <= 0 { return false }
            pending += chunk[0..<n]
            return true
        }
        while true {
            guard let end = pending.firstRange(of: Array("\r\n\r\n".utf8)) else {
                if !fill() { break }
                continue
            }
            let lines = String(decoding: pending[..<end.lowerBound], as: UTF8.self).components(separatedBy: "\r\n")
            pending.removeFirst(end.upperBound)
            let parts = lines[0].split(separator: " ")
            let method = String(parts[0])
            let path = String(parts[1])
            let action = behaviour(conn, index, method, path)
            index += 1
            if case .resetAfterHead = action {
                log.withLock { $0.append("conn#\(conn) \(method) \(path) body-partial") }
                var option = linger(l_onoff: 1, l_linger: 0)
                setsockopt(c, SOL_SOCKET, SO_LINGER, &option, socklen_t(MemoryLayout<linger>.size))
                break
            }
            let length = lines.first { $0.lowercased().hasPrefix("content-length:") }.flatMap { Int($0.dropFirst(15).trimmingCharacters(in: .whitespaces)) } ?? 0
            while pending.count < length {
                if !fill() { break }
            }
            let body = Array(pending.prefix(length))
            pending.removeFirst(min(length, pending.count))
            log.withLock { $0.append("conn#\(conn) \(method) \(path) \(body.count)") }
            if case .respondAfter(let seconds, _, _) = action { usleep(UInt32(seconds * 1_000_000)) }
            switch action {
            case .respond(let status, let text), .respondThenClose(let status, let text), .respondAfter(_, let status, let text):
                let reply = Array("HTTP/1.1 \(status) X\r\nContent-Length: \(text.utf8.count)\r\n\r\n\(text)".utf8)
                guard (try? TestSocket.writeAll(c, reply)) != nil else { break }
                if case .respondThenClose = action {
                    Glibc.close(c)
                    return
                }
                continue
            case .close, .resetAfterHead:
                break
            }
            break
        }
        Glibc.close(c)
    }

    func stop() {
        shutdown(fd, Int32(SHUT_RDWR))
        Glibc.close(fd)
    }
}

extension HTTPRouteRetryTests {
    /// Writes `file` in the test's folder: the HTTPRoute `namespace/name` whose `spec.rules`
    /// are the YAML `rules` lines (nil lines left out).
    func writeRoute(_ file: String, _ namespace: String, _ name: String, rules: [String?]) throws {
        let lines = ["apiVersion: gateway.networking.k8s.io/v1", "kind: HTTPRoute", "metadata: {name: \(name), namespace: \(namespace)}", "spec:", "  rules:"]
            + rules.compactMap { $0.map { "  " + $0 } }
        try (lines.joined(separator: "\n") + "\n").write(toFile: "\(dir)/\(file)", atomically: true, encoding: .utf8)
    }

    /// The rule of `r.yaml` (HTTPRoute shop/r) with one `field` line (e.g. `retry: {…}`) and
    /// one backend, as the loader reads it.
    func loadRule(_ field: String) throws -> RouteRule {
        try writeRoute("r.yaml", "shop", "r", rules: ["- \(field)", "  backendRefs: [{name: b, port: 80}]"])
        return try HTTPRouteLoader(services: [:]).load(directory: dir).routes[0].rules[0]
    }
}

/// A blocking HTTP/1.1 client on one kept-alive connection: `send` writes a request and reads
/// its response (head and `Content-Length` body).
struct KeptAliveClient {
    let fd: Int32

    init(port: UInt16) throws { fd = try TestSocket.connect("127.0.0.1", port) }

    func send(_ method: String, _ path: String, headers: [String] = [], body: [UInt8] = []) throws -> (status: Int, body: String) {
        var head = "\(method) \(path) HTTP/1.1\r\nHost: retry.example\r\n"
        for line in headers { head += line + "\r\n" }
        if !body.isEmpty || method == "POST" || method == "PUT" { head += "Content-Length: \(body.count)\r\n" }
        try TestSocket.writeAll(fd, Array((head + "\r\n").utf8) + body)
        var received: [UInt8] = []
        while received.firstRange(of: Array("\r\n\r\n".utf8)) == nil {
            received += try TestSocket.readExactly(fd, 1)
        }
        let text = String(decoding: received, as: UTF8.self)
        let status = Int(text.split(separator: " ")[1]) ?? 0
        let length = text.components(separatedBy: "\r\n").first { $0.lowercased().hasPrefix("content-length:") }
            .flatMap { Int($0.dropFirst(15).trimmingCharacters(in: .whitespaces)) } ?? 0
        return (status, String(decoding: try TestSocket.readExactly(fd, length), as: UTF8.self))
    }

    func close() { Glibc.close(fd) }
}

/// Retries after a backend accepted the connection: the stale kept-alive race (a pooled
/// connection closed or reset before any response byte) is retried once for idempotent
/// requests only; the rule's `retry` (codes, attempts, backoff) sends an idempotent request
/// again, its body replayed; a POST is never replayed once its bytes were written.
final class HTTPRouteRetryTests: XCTestCase {
    let capture = LogCapture()
    let metrics = PrometheusMetrics()
    var dir = ""
    var loops: GateLoopGroup!
    var gateway: HTTPGateway?

    override func setUpWithError() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("httproute-retry-\(getpid())-\(UUID())").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        loops = try GateLoopGroup(count: 1)
    }

    override func tearDown() {
        gateway?.stop()
        loops?.shutdown()
        try? FileManager.default.removeItem(atPath: dir)
    }

    /// A gateway whose rules send `/retry…` (with `retry`) and everything else (without) to `backend`.
    func start(_ backend: ScriptedBackend, retry: String = "{codes: [503], attempts: 2, backoff: 20ms}") throws -> UInt16 {
        try writeRoute(
            "routes.yaml", "default", "retry",
            rules: [
                "- matches: [{path: {type: PathPrefix, value: /retry}}]", "  retry: \(retry)", "  backendRefs: [{name: backend, port: 80}]",
                "- backendRefs: [{name: backend, port: 80}]",
            ])
        return try serve(services: ["backend": backend.address])
    }

    /// Starts a gateway for the manifest in `dir` with `services`; its port.
    func serve(services: [String: String]) throws -> UInt16 {
        let gateway = try HTTPGateway(
            table: RouteTable(routes: try HTTPRouteLoader(services: services).load(directory: dir).routes), loops: loops, defaultTimeout: 20,
            accessLog: capture.logger("access"), log: capture.logger("gate"), metrics: metrics)
        self.gateway = gateway
        return gateway.address.port
    }

    /// A backend that resets its first connection when the second request's head arrives and
    /// answers everything else with `conn<N>`.
    static func resettingSecondRequest() throws -> ScriptedBackend {
        try ScriptedBackend { conn, request, _, _ in conn == 0 && request == 1 ? .resetAfterHead : .respond(200, "conn\(conn)") }
    }

    /// Stops the running gateway, starts one for `backend` and connects a client to it.
    func restart(_ backend: ScriptedBackend, retry: String? = nil) throws -> KeptAliveClient {
        gateway?.stop()
        return try KeptAliveClient(port: try retry.map { try start(backend, retry: $0) } ?? start(backend))
    }

    /// The kept-alive connection is closed by the backend when the second request arrives (the
    /// race with an idle timeout): the GET is sent again on a new connection and answered.
    func testStaleKeptAliveConnectionRetriesIdempotentRequest() throws {
        let backend = try ScriptedBackend { conn, request, _, _ in
            conn == 0 && request == 1 ? .close : .respond(200, "conn\(conn)")
        }
        defer { backend.stop() }
        let client = try KeptAliveClient(port: try start(backend))
        defer { client.close() }
        XCTAssertEqual(try client.send("GET", "/a").body, "conn0")
        let second = try client.send("GET", "/b")
        XCTAssertEqual(second.status, 200, second.body)
        XCTAssertEqual(second.body, "conn1")
        XCTAssertEqual(backend.requests, ["conn#0 GET /a 0", "conn#0 GET /b 0", "conn#1 GET /b 0"])
        XCTAssertNotNil(capture.waitForLine(containing: ["request", "path=/b", "status=200", "retries=1"]), "\(capture.lines)")
        // Reset instead of FIN, and a DELETE (idempotent): sent again too.
        let reset = try Self.resettingSecondRequest()
        defer { reset.stop() }
        let other = try restart(reset)
        defer { other.close() }
        XCTAssertEqual(try other.send("GET", "/a").body, "conn0")
        XCTAssertEqual(try other.send("DELETE", "/b").body, "conn1")
        XCTAssertEqual(reset.requests, ["conn#0 GET /a 0", "conn#0 DELETE /b body-partial", "conn#1 DELETE /b 0"])
    }

    /// A backend that answers and closes at once (no `Connection: close`): however the race
    /// goes (the pool noticed the close, or the request found the connection closed), the next
    /// GET is answered.
    func testBackendClosingRightAfterEachResponse() throws {
        let backend = try ScriptedBackend { conn, _, _, _ in .respondThenClose(200, "conn\(conn)") }
        defer { backend.stop() }
        let client = try KeptAliveClient(port: try start(backend))
        defer { client.close() }
        for i in 0..<20 {
            let answer = try client.send("GET", "/n\(i)")
            XCTAssertEqual(answer.status, 200, "request \(i): \(answer.body)")
        }
        for i in 0..<20 { XCTAssertTrue(backend.requests.contains { $0.hasSuffix("GET /n\(i) 0") }, "\(backend.requests)") }
    }

    /// A POST whose bytes reached a kept-alive backend connection that then resets is answered
    /// 502 and never replayed — not by the stale-connection rule, not by the rule's `retry`.
    /// With an `Idempotency-Key` it is.
    func testPostIsNotReplayedAfterReset() throws {
        for path in ["/plain", "/retry"] {
            let backend = try Self.resettingSecondRequest()
            defer { backend.stop() }
            let client = try restart(backend, retry: "{codes: [500, 502, 503], attempts: 3}")
            defer { client.close() }
            XCTAssertEqual(try client.send("GET", path).status, 200)
            let answer = try client.send("POST", path, body: Array(repeating: 0x61, count: 1000))
            XCTAssertEqual(answer.status, 502, answer.body)
            XCTAssertTrue(answer.body.contains("not retried: POST is not idempotent"), answer.body)
            // Nothing more reaches the backend (a replay would open conn#1).
            usleep(300_000)
            XCTAssertEqual(backend.requests, ["conn#0 GET \(path) 0", "conn#0 POST \(path) body-partial"])
        }
        XCTAssertNotNil(capture.waitForLine(containing: ["request", "method=POST", "status=502"]), "\(capture.lines)")
        XCTAssertFalse(capture.lines.contains { $0.contains("method=POST") && $0.contains("retries=") }, "\(capture.lines)")

        let keyed = try Self.resettingSecondRequest()
        defer { keyed.stop() }
        let client = try restart(keyed)
        defer { client.close() }
        XCTAssertEqual(try client.send("GET", "/a").status, 200)
        let answer = try client.send("POST", "/a", headers: ["Idempotency-Key: \"8e03978e\""], body: Array("order".utf8))
        XCTAssertEqual(answer.body, "conn1")
        XCTAssertEqual(keyed.requests, ["conn#0 GET /a 0", "conn#0 POST /a body-partial", "conn#1 POST /a 5"])
    }

    /// `retry.codes`/`attempts`: a 503 is retried (the PUT's body replayed each time) until the
    /// backend answers 200 or the attempts are used up; the last answer is relayed. Without
    /// `retry` a 503 is relayed at once, and a POST is never retried on a code.
    func testRetryOnStatusCodes() throws {
        let failures = Mutex<[String: Int]>([:])
        let backend = try ScriptedBackend { _, _, method, path in
            // /retry/fail-N answers 503 N times, then 200.
            let n = Int(path.split(separator: "-").last ?? "") ?? 0
            let seen = failures.withLock { counts in
                defer { counts[method + path, default: 0] += 1 }
                return counts[method + path, default: 0]
            }
            return seen < n ? .respond(503, "busy \(seen)") : .respond(200, "ok after \(seen)")
        }
        defer { backend.stop() }
        let gatewayPort = try start(backend)
        let client = try KeptAliveClient(port: gatewayPort)
        defer { client.close() }
        let body = (0..<30_000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        let put = try client.send("PUT", "/retry/fail-2", body: body)
        XCTAssertEqual(put.status, 200)
        XCTAssertEqual(put.body, "ok after 2")
        XCTAssertEqual(backend.requests.filter { $0.contains("PUT /retry/fail-2 30000") }.count, 3, "\(backend.requests)")
        let exhausted = try client.send("GET", "/retry/fail-3")
        XCTAssertEqual(exhausted.status, 503)
        XCTAssertEqual(exhausted.body, "busy 2")
        XCTAssertEqual(try client.send("GET", "/plain/fail-1").body, "busy 0")
        XCTAssertEqual(try client.send("POST", "/retry/fail-1").body, "busy 0")
        XCTAssertEqual(backend.requests.filter { $0.contains("POST") }.count, 1)
        XCTAssertNotNil(capture.waitForLine(containing: ["request", "path=/retry/fail-2", "status=200", "retries=2"]), "\(capture.lines)")
        // The same over h2c (curl, prior knowledge): the HTTP/2 stream's body is replayed too.
        let file = "\(dir)/body"
        try Data(body).write(to: URL(fileURLWithPath: file))
        let h2 = try runProcess(
            try tool("curl"), ["-sS", "--http2-prior-knowledge", "-X", "PUT", "--data-binary", "@\(file)", "--max-time", "20",
                               "http://127.0.0.1:\(gatewayPort)/retry/h2-fail-1"])
        XCTAssertEqual(h2.out, "ok after 1", h2.err)
        XCTAssertEqual(backend.requests.filter { $0.contains("PUT /retry/h2-fail-1 30000") }.count, 2, "\(backend.requests)")
        XCTAssertNotNil(capture.waitForLine(containing: ["request", "path=/retry/fail-3", "status=503", "retries=2"]), "\(capture.lines)")
    }

    /// The rule's `retry` also covers a connection that fails before the response on a fresh
    /// connection (a GET: `attempts` more tries, each on a new connection).
    func testRetryOnConnectionFailureWithPolicy() throws {
        let backend = try ScriptedBackend { conn, _, _, _ in conn < 2 ? .close : .respond(200, "conn\(conn)") }
        defer { backend.stop() }
        let client = try KeptAliveClient(port: try start(backend))
        defer { client.close() }
        let answer = try client.send("GET", "/retry/x")
        XCTAssertEqual(answer.status, 200, answer.body)
        XCTAssertEqual(answer.body, "conn2")
        // Without `retry` a fresh connection that closes gets 502 at once.
        let closing = try ScriptedBackend { _, _, _, _ in .close }
        defer { closing.stop() }
        let other = try restart(closing)
        defer { other.close() }
        XCTAssertEqual(try other.send("GET", "/plain").status, 502)
        XCTAssertEqual(closing.requests.count, 1)
    }

    /// The loader reads `retry` and refuses what it cannot honour, naming the field.
    func testRetryFieldLoadsAndRefuses() throws {
        func load(_ retry: String) throws -> RouteRule { try loadRule("retry: \(retry)") }
        XCTAssertEqual(try load("{codes: [500, 503], attempts: 3, backoff: 1m30s}").retry, RetryPolicy(attempts: 3, codes: [500, 503], backoff: 90))
        XCTAssertEqual(try load("{}").retry, RetryPolicy(attempts: 1, codes: [], backoff: 0))
        // Gateway API v1 `HTTPRouteRetryStatusCode`: 400–599.
        XCTAssertEqual(try load("{codes: [429, 408, 599]}").retry, RetryPolicy(attempts: 1, codes: [429, 408, 599], backoff: 0))
        for (retry, message) in [
            ("{codes: [399]}", "spec.rules[0].retry.codes[0]: code 399 is not an HTTP error status"),
            ("{codes: [600]}", "spec.rules[0].retry.codes[0]: code 600 is not an HTTP error status"),
            ("{codes: [200]}", "spec.rules[0].retry.codes[0]: code 200 is not an HTTP error status"),
            ("{attempts: 11}", "spec.rules[0].retry.attempts: attempts 11 outside"),
            ("{backoff: soon}", "spec.rules[0].retry.backoff: bad duration"),
            ("{perTryTimeout: 1s}", "spec.rules[0].retry.perTryTimeout: unsupported"),
        ] {
            XCTAssertThrowsError(try load(retry), retry) { error in
                XCTAssertTrue("\(error)".contains("r.yaml: HTTPRoute shop/r: \(message)"), "\(error)")
            }
        }
    }
}
