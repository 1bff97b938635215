import Foundation
import Glibc
import XCTest

@testable import Gate

/// A Python `http.server` backend on loopback (ephemeral port), started by the test and
/// stopped by PID. Answers every method with JSON naming itself and what it received;
/// a path containing `/slow` waits 3 s first. Optionally inside a network namespace,
/// appending each request line to a record file, or speaking TLS with a given certificate.
final class PythonBackend {
    static let script = """
        import http.server, json, ssl, sys, time
        name, record, cert, key = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            wbufsize = 65536  # head and body in one write (no Nagle / delayed-ACK stall)
            def answer(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                if record:
                    with open(record, "a") as f:
                        f.write(self.command + " " + self.path + "\\n")
                if "/slow" in self.path:
                    time.sleep(3)
                out = json.dumps({"backend": name, "method": self.command, "path": self.path,
                    "headers": {k.lower(): v for k, v in self.headers.items()}, "body": len(body),
                    "peer": self.client_address[1]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.send_header("X-Backend", name)
                self.end_headers()
                self.wfile.write(out)
            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = answer
            def log_message(self, *args):
                pass
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        if cert:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(cert, key)
            server.socket = context.wrap_socket(server.socket, server_side=True)
        print(server.server_address[1], flush=True)
        server.serve_forever()
        """
    let process = Process()
    let port: UInt16
    let name: String

    /// `script` gets `name record cert key` as arguments and prints its port.
    init(
        _ name: String, namespace: String? = nil, record: String = "", tls: (cert: String, key: String)? = nil, script: String = PythonBackend.script
    ) throws {
        self.name = name
        let args = ["-c", script, name, record, tls?.cert ?? "", tls?.key ?? ""]
        if let namespace {
            process.executableURL = URL(fileURLWithPath: try tool("ip"))
            process.arguments = ["netns", "exec", namespace, try tool("python3")] + args
        } else {
            process.executableURL = URL(fileURLWithPath: try tool("python3"))
            process.arguments = args
        }
        let out = Pipe()
        process.standardOutput = out
        try process.run()
        var line = ""
        let handle = out.fileHandleForReading
        for _ in 0..<100 where !line.contains("\n") {
            let data = handle.availableData
            if data.isEmpty { break }
            line += String(decoding: data, as: UTF8.self)
        }
        guard let port = UInt16(line.trimmingCharacters(in: .whitespacesAndNewlines)) else {
            process.terminate()
            throw GateError(.config, "python backend \(name) did not print its port: \(line)")
        }
        self.port = port
    }

    var address: String { "127.0.0.1:\(port)" }

    func stop() {
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }
}

final class HTTPRouteGatewayTests: XCTestCase {
    var backends: [String: PythonBackend] = [:]
    var loops: GateLoopGroup!
    var gateway: HTTPGateway!
    let capture = LogCapture()
    let metrics = PrometheusMetrics()
    var dir = ""

    override func setUpWithError() throws {
        for name in ["v1", "v2", "prod", "canary", "store", "search", "rewrite"] { backends[name] = try PythonBackend(name) }
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("httproute-gw-\(getpid())-\(UUID())").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        // The Gateway API documentation's examples (traffic splitting, header matching,
        // redirects, rewrites, several routes on one hostname), as manifests.
        try """
            apiVersion: gateway.networking.k8s.io/v1
            kind: Gateway
            metadata: {name: example-gateway}
            spec:
              gatewayClassName: ugate
              listeners: [{name: http, protocol: HTTP, port: 80}]
            ---
            apiVersion: gateway.networking.k8s.io/v1
            kind: HTTPRoute
            metadata: {name: foo-route}
            spec:
              parentRefs: [{name: example-gateway}]
              hostnames: ["foo.example.com"]
              rules:
              - backendRefs:
                - {name: foo-v1, port: 8080, weight: 50}
                - {name: foo-v2, port: 8080, weight: 50}
            ---
            apiVersion: gateway.networking.k8s.io/v1
            kind: HTTPRoute
            metadata: {name: split-70-30}
            spec:
              parentRefs: [{name: example-gateway}]
              hostnames: ["split.example.com"]
              rules: [{backendRefs: [{name: foo-v1, port: 8080, weight: 70}, {name: foo-v2, port: 8080, weight: 30}]}]
            ---
            apiVersion: gateway.networking.k8s.io/v1
            kind: HTTPRoute
            metadata: {name: bar-route}
            spec:
              parentRefs: [{name: example-gateway}]
              hostnames: ["bar.example.com"]
              rules:
              - matches: [{headers: [{type: Exact, name: env, value: canary}]}]
                backendRefs: [{name: bar-canary, port: 8080}]
              - backendRefs: [{name: bar-prod, port: 8080}]
                filters:
                - type: ResponseHeaderModifier
                  responseHeaderModifier: {add: [{name: X-Served-By, value: ugate}], remove: [X-Backend]}
            """.write(toFile: dir + "/10-split-headers.yaml", atomically: true, encoding: .utf8)
        try """
            apiVersion: gateway.networking.k8s.io/v1
            kind: HTTPRoute
            metadata: {name: http-filter-redirect}
            spec:
              hostnames: ["redirect.example"]
              rules:
              - filters:
                - type: RequestRedirect
                  requestRedirect: {scheme: https, statusCode: 301}
            ---
            apiVersion: gateway.networking.k8s.io/v1
            kind: HTTPRoute
            metadata: {name: http-filter-rewrite}
            spec:
              hostnames: ["rewrite.example"]
              rules:
              - matches: [{path: {type: PathPrefix, value: /prefix/one}}]
                filters:
                - type: URLRewrite
                  urlRewrite:
                    hostname: elsewhere.example
                    path: {type: ReplacePrefixMatch, replacePrefixMatch: /two}
                - type: RequestHeaderModifier
                  requestHeaderModifier: {set: [{name: X-Route, value: rewrite}]}
                backendRefs: [{name: rewrite, port: 8080}]
            ---
            apiVersion: gateway.networking.k8s.io/v1
            kind: HTTPRoute
            metadata: {name: store}
            spec:
              hostnames: ["example.com"]
              rules:
              - matches: [{path: {type: PathPrefix, value: /store}}]
                backendRefs: [{name: store, port: 8080}]
                timeouts: {request: 1s}
              - matches: [{path: {type: PathPrefix, value: /down}}]
                backendRefs: [{name: down, port: 8080}]
              - matches: [{path: {type: PathPrefix, value: /retry}}]
                backendRefs: [{name: down, port: 8080, weight: 99}, {name: store, port: 8080, weight: 1}]
            ---
            apiVersion: gateway.networking.k8s.io/v1
            kind: HTTPRoute
            metadata: {name: search}
            spec:
              hostnames: ["example.com"]
              rules:
              - matches: [{path: {type: PathPrefix, value: /search}, method: GET}]
                backendRefs: [{name: search, port: 8080}]
            """.write(toFile: dir + "/20-filters.yaml", atomically: true, encoding: .utf8)
        loops = try GateLoopGroup(count: 2)
        gateway = try HTTPGateway(
            table: RouteTable(routes: try loader().load(directory: dir).routes), loops: loops, defaultTimeout: 10,
            accessLog: capture.logger("access"), log: capture.logger("gate"), metrics: metrics)
    }

    /// A port nothing listens on: bound, then closed.
    func deadPort() throws -> UInt16 {
        let fd = try Sys.listen(try SocketAddress(host: "127.0.0.1", port: 0), transparent: false, reusePort: false)
        defer { close(fd) }
        return SocketAddress.local(of: fd)!.port
    }

    func loader() throws -> HTTPRouteLoader {
        HTTPRouteLoader(services: [
            "foo-v1": backends["v1"]!.address, "foo-v2": backends["v2"]!.address, "bar-canary": backends["canary"]!.address,
            "bar-prod": backends["prod"]!.address, "store": backends["store"]!.address, "search": backends["search"]!.address,
            "rewrite": backends["rewrite"]!.address, "down": "127.0.0.1:\(try deadPort())",
        ])
    }

    override func tearDown() {
        gateway?.stop()
        loops?.shutdown()
        for backend in backends.values { backend.stop() }
        try? FileManager.default.removeItem(atPath: dir)
    }

    var base: String { "http://127.0.0.1:\(gateway.address.port)" }

    func curl(_ args: [String]) throws -> (status: Int32, out: String, err: String) {
        try runProcess(try tool("curl"), ["-sS", "--max-time", "20"] + args, timeout: 60)
    }

    func json(_ text: String) throws -> [String: Any] {
        try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any] ?? [:]
    }

    /// The bodies of 100 answers of the 50/50 foo-route: all from v1 or v2, at least 20 each
    /// (fewer than 20 on one side has probability < 1e-9).
    func assertEvenSplit(_ bodies: String, file: StaticString = #filePath, line: UInt = #line) {
        let v1 = bodies.components(separatedBy: "\"backend\": \"v1\"").count - 1
        let v2 = bodies.components(separatedBy: "\"backend\": \"v2\"").count - 1
        XCTAssertEqual(v1 + v2, 100, bodies, file: file, line: line)
        XCTAssertGreaterThanOrEqual(v1, 20, file: file, line: line)
        XCTAssertGreaterThanOrEqual(v2, 20, file: file, line: line)
    }

    func testTrafficSplitOverKeepAlive() throws {
        let urls = (0..<100).map { "\(base)/item/\($0)" }
        let r = try curl(["-v", "-H", "Host: foo.example.com", "-w", "\n"] + urls)
        XCTAssertEqual(r.status, 0, r.err)
        assertEvenSplit(r.out)
        // One TCP connection for all 100 requests (keep-alive).
        XCTAssertEqual(r.err.components(separatedBy: "Connected to").count - 1, 1, r.err)
        XCTAssertNotNil(capture.waitForLine(containing: ["request", "route=default/foo-route#0", "host=foo.example.com", "status=200", "method=GET"]))
        // Per-route counters (the access-log line and the counters are written after the response).
        for _ in 0..<200 where !metrics.render().contains("ugate_httproute_requests_total{route=\"default/foo-route#0\",status=\"200\"} 100") { usleep(20_000) }
        XCTAssertTrue(metrics.render().contains("ugate_httproute_requests_total{route=\"default/foo-route#0\",status=\"200\"} 100"), metrics.render())
        XCTAssertTrue(metrics.render().contains("ugate_httproute_response_bytes_total{route=\"default/foo-route#0\"}"), metrics.render())
    }

    /// The same documented examples with HTTP/2 clients (h2c prior knowledge): the 50/50 split
    /// over one connection (nghttp, 100 streams), header matching and ResponseHeaderModifier,
    /// redirect, rewrite, several routes on one hostname with a 100 kB POST, 404s (curl
    /// `--http2-prior-knowledge`, one request per connection: curl 7.88 does not reuse h2c ones).
    func testDocumentedExamplesOverHTTP2() throws {
        let split = try runProcess(
            try tool("nghttp"), ["-H", ":authority: foo.example.com"] + (0..<100).map { "\(base)/item/\($0)" }, timeout: 60)
        XCTAssertEqual(split.status, 0, split.err)
        assertEvenSplit(split.out)
        XCTAssertNotNil(capture.waitForLine(containing: ["request", "route=default/foo-route#0", "proto=h2c", "status=200"]))

        func h2(_ args: [String]) throws -> (status: Int32, out: String, err: String) { try curl(["--http2-prior-knowledge"] + args) }
        XCTAssertEqual(try json(try h2(["-H", "Host: bar.example.com", "-H", "env: canary", "\(base)/"]).out)["backend"] as? String, "canary")
        let prod = try h2(["-D", "-", "-o", "/dev/null", "-H", "Host: bar.example.com", "\(base)/"])
        XCTAssertTrue(prod.out.hasPrefix("HTTP/2 200"), prod.out)
        XCTAssertTrue(prod.out.lowercased().contains("x-served-by: ugate"), prod.out)
        XCTAssertFalse(prod.out.lowercased().contains("x-backend"), prod.out)
        let redirect = try h2(["-o", "/dev/null", "-w", "%{http_version} %{http_code} %{redirect_url}", "-H", "Host: redirect.example", "\(base)/a/b?c=d"])
        XCTAssertEqual(redirect.out, "2 301 https://redirect.example/a/b?c=d")
        let seen = try json(try h2(["-H", "Host: rewrite.example", "\(base)/prefix/one/three?x=1"]).out)
        XCTAssertEqual(seen["path"] as? String, "/two/three?x=1")
        XCTAssertEqual((seen["headers"] as? [String: String])?["host"], "elsewhere.example")
        XCTAssertEqual((seen["headers"] as? [String: String])?["x-route"], "rewrite")
        let store = try json(try h2(["-H", "Host: example.com", "--data-binary", String(repeating: "x", count: 100_000), "\(base)/store/cart"]).out)
        XCTAssertEqual(store["backend"] as? String, "store")
        XCTAssertEqual(store["body"] as? Int, 100_000)
        XCTAssertEqual(try json(try h2(["-H", "Host: example.com", "\(base)/search?q=1"]).out)["backend"] as? String, "search")
        XCTAssertEqual(try h2(["-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", "-H", "Host: example.com", "\(base)/search"]).out, "404")
        let unknown = try h2(["-w", "\n%{http_code}", "-H", "Host: nowhere.example", "\(base)/"])
        XCTAssertTrue(unknown.out.hasSuffix("404") && unknown.out.contains("no route for nowhere.example/"), unknown.out)
    }

    /// Weighted split with real requests: 10,000 HTTP/2 requests (h2load, 4 connections × 16
    /// streams) to a 70/30 route; the access log's backend counts are within 4.5 binomial
    /// standard deviations (±206) of 7,000 / 3,000 (a false failure has probability < 1e-5).
    func testWeightedSplitOf10000Requests() throws {
        let r = try runProcess(
            try tool("h2load"), ["-n", "10000", "-c", "4", "-m", "16", "-H", ":authority: split.example.com", "\(base)/split"], timeout: 300)
        XCTAssertEqual(r.status, 0, r.err)
        XCTAssertTrue(r.out.contains("10000 succeeded"), r.out)
        XCTAssertTrue(r.out.contains("status codes: 10000 2xx"), r.out)
        func count(_ backend: String) -> Int {
            capture.lines.filter { $0.contains("host=split.example.com") && $0.contains("backend=default/\(backend):8080") && $0.contains("status=200") }.count
        }
        XCTAssertTrue(eventually { count("foo-v1") + count("foo-v2") == 10000 }, "\(count("foo-v1")) + \(count("foo-v2"))")
        let v1 = count("foo-v1")
        XCTAssertLessThanOrEqual(abs(v1 - 7000), 206, "foo-v1 got \(v1) of 10000 (70 % expected)")
    }

    func testHeaderMatchingAndResponseHeaders() throws {
        let canary = try curl(["-H", "Host: bar.example.com", "-H", "env: canary", "\(base)/"])
        XCTAssertEqual(try json(canary.out)["backend"] as? String, "canary", canary.out + canary.err)
        let prod = try curl(["-D", "-", "-o", "/dev/null", "-H", "Host: bar.example.com", "\(base)/"])
        XCTAssertTrue(prod.out.contains("X-Served-By: ugate"), prod.out)
        XCTAssertFalse(prod.out.lowercased().contains("x-backend"), prod.out)
        let body = try curl(["-H", "Host: bar.example.com", "-H", "env: prod", "\(base)/"])
        XCTAssertEqual(try json(body.out)["backend"] as? String, "prod")
    }

    func testRedirectAndRewrite() throws {
        let redirect = try curl(["-o", "/dev/null", "-w", "%{http_code} %{redirect_url}", "-H", "Host: redirect.example", "\(base)/a/b?c=d"])
        XCTAssertEqual(redirect.out, "301 https://redirect.example/a/b?c=d")
        let rewrite = try curl(["-H", "Host: rewrite.example", "\(base)/prefix/one/three?x=1"])
        let seen = try json(rewrite.out)
        XCTAssertEqual(seen["path"] as? String, "/two/three?x=1", rewrite.out)
        let headers = seen["headers"] as? [String: String] ?? [:]
        XCTAssertEqual(headers["host"], "elsewhere.example")
        XCTAssertEqual(headers["x-route"], "rewrite")
    }

    func testMultipleRoutesOnOneHostnameAndBodies() throws {
        let store = try curl(["-H", "Host: example.com", "--data-binary", String(repeating: "x", count: 100_000), "\(base)/store/cart"])
        let seen = try json(store.out)
        XCTAssertEqual(seen["backend"] as? String, "store")
        XCTAssertEqual(seen["body"] as? Int, 100_000)
        XCTAssertEqual(try json(try curl(["-H", "Host: example.com", "\(base)/search?q=1"]).out)["backend"] as? String, "search")
        // POST /search matches no rule (method GET only): 404.
        let post = try curl(["-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", "-H", "Host: example.com", "\(base)/search"])
        XCTAssertEqual(post.out, "404")
        let unknown = try curl(["-w", "\n%{http_code}", "-H", "Host: nowhere.example", "\(base)/"])
        XCTAssertTrue(unknown.out.hasSuffix("404"), unknown.out)
        XCTAssertTrue(unknown.out.contains("no route for nowhere.example/"), unknown.out)
    }

    func testBackendFailures() throws {
        let down = try curl(["-w", "\n%{http_code}", "-H", "Host: example.com", "\(base)/down"])
        XCTAssertTrue(down.out.hasSuffix("503"), down.out)
        XCTAssertTrue(down.out.contains("backend default/down:8080"), down.out)
        // The dead backend has 99 % of the weight; every request still lands on the live one.
        for _ in 0..<5 {
            XCTAssertEqual(try json(try curl(["-H", "Host: example.com", "\(base)/retry"]).out)["backend"] as? String, "store")
        }
        XCTAssertNotNil(capture.waitForLine(containing: ["route=default/store#2", "backend=default/store:8080", "status=200", "error=backend default/down:8080"]))
        let slow = try curl(["-w", "\n%{http_code}", "-H", "Host: example.com", "\(base)/store/slow"])
        XCTAssertTrue(slow.out.hasSuffix("504"), slow.out + capture.lines.joined(separator: "\n"))
        XCTAssertTrue(slow.out.contains("did not respond within 1.0 s"), slow.out)
        XCTAssertNotNil(capture.waitForLine(containing: ["route=default/store#0", "status=504", "backend=default/store:8080"]))
        XCTAssertEqual(try curl(["-o", "/dev/null", "-w", "%{http_code}", "-H", "Host: example.com", "\(base)/store/ok"]).out, "200")
    }

    /// A kept-alive HTTP/1.1 connection idle longer than `keepAliveTimeout` is closed by the
    /// gateway after its response (the socket's 10 s receive timeout would fail the read
    /// otherwise).
    func testIdleKeptAliveConnectionIsClosed() throws {
        let idle = try HTTPGateway(
            table: RouteTable(routes: try loader().load(directory: dir).routes), loops: loops, keepAliveTimeout: 0.5,
            accessLog: capture.logger("access"), log: capture.logger("gate"), metrics: metrics)
        defer { idle.stop() }
        let fd = try TestSocket.connect("127.0.0.1", idle.address.port)
        defer { close(fd) }
        try TestSocket.writeAll(fd, Array("GET /x HTTP/1.1\r\nHost: nowhere.example\r\n\r\n".utf8))
        let reply = String(decoding: try TestSocket.readToEOF(fd), as: UTF8.self)
        XCTAssertTrue(reply.hasPrefix("HTTP/1.1 404"), reply)
        XCTAssertFalse(reply.lowercased().contains("connection: close"), reply)
    }

    func testMalformedAndOversizedRequestsKeepServing() throws {
        let fd = try TestSocket.connect("127.0.0.1", gateway.address.port)
        try TestSocket.writeAll(fd, Array("GET / HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n".utf8))
        let reply = String(decoding: try TestSocket.readToEOF(fd), as: UTF8.self)
        close(fd)
        XCTAssertTrue(reply.hasPrefix("HTTP/1.1 400 Bad Request"), reply)
        let big = try curl(["-o", "/dev/null", "-w", "%{http_code}", "-H", "Host: example.com", "-H", "X-Big: " + String(repeating: "a", count: 20_000), "\(base)/search"])
        XCTAssertEqual(big.out, "431")
        let noHost = try TestSocket.connect("127.0.0.1", gateway.address.port)
        try TestSocket.writeAll(noHost, Array("GET / HTTP/1.1\r\n\r\n".utf8))
        XCTAssertTrue(String(decoding: try TestSocket.readToEOF(noHost), as: UTF8.self).hasPrefix("HTTP/1.1 400"))
        close(noHost)
        XCTAssertEqual(try curl(["-o", "/dev/null", "-w", "%{http_code}", "-H", "Host: example.com", "\(base)/search"]).out, "200")
    }

    /// The watcher picks up a changed folder; an invalid change is logged and the old routes
    /// keep serving.
    func testReloaderAppliesValidChangesOnly() throws {
        let gateway = self.gateway!
        let reloader = HTTPRouteReloader(directory: dir, loader: try loader(), interval: 0.1, log: capture.logger("reload")) { manifests in
            gateway.update(RouteTable(routes: manifests.routes))
        }
        defer { reloader.stop() }
        try "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: broken}\nspec:\n  rules: [{matches: [{method: FETCH}]}]\n"
            .write(toFile: dir + "/40-new.yaml", atomically: true, encoding: .utf8)
        XCTAssertNotNil(capture.waitForLine(containing: ["routes not reloaded", "40-new.yaml: HTTPRoute default/broken: spec.rules[0].matches[0].method"]))
        XCTAssertEqual(try curl(["-o", "/dev/null", "-w", "%{http_code}", "-H", "Host: example.com", "\(base)/search"]).out, "200")
        try "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: added}\nspec:\n  hostnames: [added.example]\n  rules: [{backendRefs: [{name: store, port: 8080}]}]\n"
            .write(toFile: dir + "/40-new.yaml", atomically: true, encoding: .utf8)
        XCTAssertNotNil(capture.waitForLine(containing: ["routes reloaded"]))
        XCTAssertEqual(try json(try curl(["-H", "Host: added.example", "\(base)/"]).out)["backend"] as? String, "store")
    }

    func testGatewayListenerAttachment() throws {
        let manifests = try loader().load(directory: dir)
        let gateway = try XCTUnwrap(manifests.gateways.first)
        // foo-route, split-70-30 and bar-route name example-gateway; the other four have no parentRefs.
        XCTAssertEqual(manifests.routes(for: gateway, listener: gateway.listeners[0]).count, 7)
        let other = GatewayObject(namespace: "default", name: "other", listeners: [.init(name: "http", port: 81)], file: "")
        XCTAssertEqual(Set(manifests.routes(for: other, listener: other.listeners[0]).map(\.name)), ["http-filter-redirect", "http-filter-rewrite", "store", "search"])
    }

    func testInvalidYAMLIsRefusedAndReloadKeepsServing() throws {
        try "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: broken}\nspec:\n  rules:\n  - matches: [{path: {type: Nope}}]\n"
            .write(toFile: dir + "/30-broken.yaml", atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try loader().load(directory: dir)) { error in
            XCTAssertTrue("\(error)".contains("30-broken.yaml: HTTPRoute default/broken: spec.rules[0].matches[0].path.type"), "\(error)")
        }
        XCTAssertEqual(try curl(["-o", "/dev/null", "-w", "%{http_code}", "-H", "Host: example.com", "\(base)/search"]).out, "200")
        // A valid change replaces the table: the broken file fixed to route /new on a new host.
        try "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: broken}\nspec:\n  hostnames: [new.example]\n  rules:\n  - backendRefs: [{name: search, port: 8080}]\n"
            .write(toFile: dir + "/30-broken.yaml", atomically: true, encoding: .utf8)
        gateway.update(RouteTable(routes: try loader().load(directory: dir).routes))
        XCTAssertEqual(try json(try curl(["-H", "Host: new.example", "\(base)/x"]).out)["backend"] as? String, "search")
    }
}
