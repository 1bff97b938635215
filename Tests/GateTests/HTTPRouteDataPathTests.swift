import Foundation
import Glibc
import XCTest

@testable import Gate

/// A Python HTTP/1.1 backend (`PythonBackend` with another script) that reads request bodies
/// (Content-Length or chunked), records `METHOD PATH LENGTH SHA256` per request in a file, and
/// answers the body's length and hash as JSON (or `N` bytes of `x` for `/big/N`; `/slow`
/// answers after 3 s).
struct BodyBackend {
    static let script = """
        import hashlib, http.server, json, sys, time
        record = sys.argv[2]
        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            wbufsize = 65536
            def body(self):
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    data = b""
                    while True:
                        size = int(self.rfile.readline().split(b";")[0], 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\\r\\n", b"\\n", b""):
                                pass
                            return data
                        data += self.rfile.read(size)
                        self.rfile.readline()
                n = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(n) if n else b""
            def answer(self):
                body = self.body()
                digest = hashlib.sha256(body).hexdigest()
                with open(record, "a") as f:
                    f.write("%s %s %d %s\\n" % (self.command, self.path, len(body), digest))
                if "/slow" in self.path:
                    time.sleep(3)
                if "/big/" in self.path:
                    out = b"x" * int(self.path.split("/big/")[1])
                else:
                    out = json.dumps({"len": len(body), "sha": digest, "path": self.path}).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(out)
            do_GET = do_POST = do_PUT = do_HEAD = answer
            def log_message(self, *args):
                pass
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        print(server.server_address[1], flush=True)
        server.serve_forever()
        """
    let backend: PythonBackend
    let record: String

    init(record: String) throws {
        self.record = record
        backend = try PythonBackend("body", record: record, script: Self.script)
    }

    var address: String { backend.address }

    /// The recorded lines, waiting (bounded) until one contains every string of `containing`.
    func lines(waitingFor containing: [String] = []) -> [String] {
        var text = ""
        for _ in 0..<100 {
            text = (try? String(contentsOfFile: record, encoding: .utf8)) ?? ""
            if containing.isEmpty || text.split(separator: "\n").contains(where: { line in containing.allSatisfy(line.contains) }) { break }
            usleep(50_000)
        }
        return text.split(separator: "\n").map(String.init)
    }

    func stop() { backend.stop() }
}

/// The NIO data path: RequestMirror with request bodies (and the body cap), `Upgrade: h2c`
/// with nghttp and curl, HTTP/2 flow control both ways on the frame-level stream handler.
final class HTTPRouteDataPathTests: XCTestCase {
    let capture = LogCapture()
    let metrics = PrometheusMetrics()
    var dir = ""
    var primary: BodyBackend!
    var mirror: BodyBackend!
    var loops: GateLoopGroup!
    var gateway: HTTPGateway!

    override func setUpWithError() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("httproute-dp-\(getpid())-\(UUID())").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        primary = try BodyBackend(record: "\(dir)/primary.log")
        mirror = try BodyBackend(record: "\(dir)/mirror.log")
        try """
            apiVersion: gateway.networking.k8s.io/v1
            kind: HTTPRoute
            metadata: {name: data}
            spec:
              rules:
              - matches: [{path: {type: PathPrefix, value: /slow}}]
                timeouts: {request: 1s}
                backendRefs: [{name: primary, port: 80}]
              - matches: [{path: {type: PathPrefix, value: /mirrored}}]
                filters: [{type: RequestMirror, requestMirror: {backendRef: {name: mirror, port: 80}}}]
                backendRefs: [{name: primary, port: 80}]
              - backendRefs: [{name: primary, port: 80}]
            """.write(toFile: "\(dir)/routes.yaml", atomically: true, encoding: .utf8)
        let loader = HTTPRouteLoader(services: ["primary": primary.address, "mirror": mirror.address])
        loops = try GateLoopGroup(count: 1)
        gateway = try HTTPGateway(
            table: RouteTable(routes: try loader.load(directory: dir).routes), loops: loops, defaultTimeout: 20, mirrorBodyLimit: 100_000,
            accessLog: capture.logger("access"), log: capture.logger("gate"), metrics: metrics)
    }

    override func tearDown() {
        gateway?.stop()
        loops?.shutdown()
        primary?.stop()
        mirror?.stop()
        try? FileManager.default.removeItem(atPath: dir)
    }

    var base: String { "http://127.0.0.1:\(gateway.address.port)" }

    func run(_ name: String, _ args: [String]) throws -> (status: Int32, out: String, err: String) {
        try runProcess(try tool(name), args, timeout: 60)
    }

    /// A file of `size` pseudo-random bytes and its SHA-256 (hex).
    func bodyFile(_ name: String, size: Int) throws -> (path: String, sha: String) {
        var generator = SystemRandomNumberGenerator()
        let bytes = (0..<size).map { _ in UInt8.random(in: 0...255, using: &generator) }
        let path = "\(dir)/\(name)"
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        let sha = try run("sha256sum", [path]).out.split(separator: " ").first.map(String.init) ?? ""
        return (path, sha)
    }

    func json(_ text: String) -> [String: Any] {
        (try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any]) ?? [:]
    }

    func testMirrorReceivesRequestBodies() throws {
        let body = try bodyFile("body", size: 50_000)
        // HTTP/1.1 with Content-Length, HTTP/1.1 chunked, h2c prior knowledge (no length).
        let requests: [(String, [String])] = [
            ("/mirrored/h1", []),
            ("/mirrored/chunked", ["-H", "Transfer-Encoding: chunked"]),
            ("/mirrored/h2c", ["--http2-prior-knowledge"]),
        ]
        for (path, extra) in requests {
            let r = try run("curl", ["-sS", "--max-time", "20", "--data-binary", "@\(body.path)"] + extra + ["\(base)\(path)"])
            XCTAssertEqual(json(r.out)["sha"] as? String, body.sha, "\(path): \(r.out) \(r.err)")
            let lines = mirror.lines(waitingFor: ["POST \(path) 50000 \(body.sha)"])
            XCTAssertTrue(lines.contains("POST \(path) 50000 \(body.sha)"), "\(path): mirror saw \(lines)")
        }
        // A body over the limit (100,000 bytes) is served but not mirrored, counted and logged.
        let large = try bodyFile("large", size: 150_000)
        let r = try run("curl", ["-sS", "--max-time", "20", "--data-binary", "@\(large.path)", "\(base)/mirrored/large"])
        XCTAssertEqual(json(r.out)["sha"] as? String, large.sha, r.out + r.err)
        let h2 = try run("curl", ["-sS", "--max-time", "20", "--http2-prior-knowledge", "--data-binary", "@\(large.path)", "\(base)/mirrored/large-h2"])
        XCTAssertEqual(json(h2.out)["sha"] as? String, large.sha, h2.out + h2.err)
        XCTAssertNotNil(capture.waitForLine(containing: ["request not mirrored", "route=default/data#1"]))
        // A later small request shows that the mirror is up to date and saw no large body.
        _ = try run("curl", ["-sS", "--max-time", "20", "\(base)/mirrored/after"])
        let lines = mirror.lines(waitingFor: ["GET /mirrored/after 0"])
        XCTAssertTrue(lines.contains { $0.hasPrefix("GET /mirrored/after 0") }, "\(lines)")
        XCTAssertFalse(lines.contains { $0.contains("/mirrored/large") }, "\(lines)")
        for _ in 0..<100 where !metrics.render().contains("ugate_httproute_mirror_skipped_total{route=\"default/data#1\"} 2") { usleep(20_000) }
        XCTAssertTrue(metrics.render().contains("ugate_httproute_mirror_skipped_total{route=\"default/data#1\"} 2"), metrics.render())
        // A GET without body is mirrored with an empty body.
        XCTAssertTrue(primary.lines().contains { $0.hasPrefix("GET /mirrored/after 0") })
    }

    func testUpgradeH2CWithNghttp() throws {
        // nghttp -u: HTTP/1.1 request with Upgrade: h2c, then HTTP/2; the second URL is stream 3.
        let r = try run("nghttp", ["-u", "-v", "-n", "\(base)/up/one", "\(base)/up/two"])
        XCTAssertEqual(r.status, 0, r.out + r.err)
        XCTAssertTrue(r.out.contains("HTTP Upgrade response"), r.out)
        XCTAssertTrue(r.out.contains("HTTP/1.1 101"), r.out)
        XCTAssertTrue(r.out.contains("HTTP Upgrade success"), r.out)
        // The upgrade request is answered on stream 1 with the backend's 200, the next on 3.
        XCTAssertTrue(r.out.contains("recv HEADERS frame <length=") && r.out.contains("stream_id=1"), r.out)
        XCTAssertTrue(r.out.contains(":status: 200"), r.out)
        XCTAssertTrue(r.out.contains("stream_id=3"), r.out)
        let lines = primary.lines(waitingFor: ["GET /up/two"])
        XCTAssertTrue(lines.contains { $0.hasPrefix("GET /up/one 0") } && lines.contains { $0.hasPrefix("GET /up/two 0") }, "\(lines)")
        XCTAssertNotNil(capture.waitForLine(containing: ["request", "path=/up/one", "proto=h2c", "status=200"]))
    }

    func testUpgradeH2CWithCurl() throws {
        // curl --http2 on http:// asks for the upgrade and continues over HTTP/2.
        let r = try run("curl", ["-sS", "-v", "--max-time", "20", "--http2", "\(base)/curl/up"])
        XCTAssertEqual(r.status, 0, r.err)
        XCTAssertTrue(r.err.contains("HTTP/1.1 101"), r.err)
        XCTAssertTrue(r.err.contains("< HTTP/2 200"), r.err)
        XCTAssertEqual(json(r.out)["path"] as? String, "/curl/up", r.out)
        // A POST with a body asking for the upgrade is served over HTTP/1.1 (body intact).
        let body = try bodyFile("post", size: 20_000)
        let post = try run("curl", ["-sS", "-v", "--max-time", "20", "--http2", "--data-binary", "@\(body.path)", "\(base)/curl/post"])
        XCTAssertEqual(json(post.out)["sha"] as? String, body.sha, post.out + post.err)
        XCTAssertTrue(post.err.contains("< HTTP/1.1 200"), post.err)
        // Upgrade: h2c without HTTP2-Settings: no upgrade, plain HTTP/1.1.
        let plain = try run("curl", ["-sS", "-v", "--max-time", "20", "-H", "Upgrade: h2c", "-H", "Connection: Upgrade", "\(base)/curl/plain"])
        XCTAssertTrue(plain.err.contains("< HTTP/1.1 200"), plain.err)
        XCTAssertEqual(json(plain.out)["path"] as? String, "/curl/plain", plain.out)
    }

    func testHTTP1PipelinedRequestsAnsweredInOrder() throws {
        // Five requests in one write (the third with a body): five responses in order.
        let script = """
            import socket, sys
            s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
            out = b""
            for i in range(5):
                if i == 2:
                    out += b"POST /pipe/2 HTTP/1.1\\r\\nHost: x\\r\\nContent-Length: 1000\\r\\n\\r\\n" + b"y" * 1000
                else:
                    out += b"GET /pipe/%d HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n" % i
            s.sendall(out)
            s.settimeout(20)
            data = b""
            while data.count(b"HTTP/1.1 200") < 5 or not data.endswith(b"}"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
            print(data.decode())
            """
        let r = try run("python3", ["-c", script, "\(gateway.address.port)"])
        let positions = (0..<5).map { r.out.range(of: "\"path\": \"/pipe/\($0)\"")?.lowerBound }
        XCTAssertTrue(positions.allSatisfy { $0 != nil }, r.out + r.err)
        XCTAssertEqual(positions.compactMap { $0 }, positions.compactMap { $0 }.sorted(), r.out)
        XCTAssertTrue(r.out.contains("\"len\": 1000"), r.out)
    }

    func testExpectContinueIsRelayedFromTheBackend() throws {
        // curl asks `Expect: 100-continue` and would wait 30 s before sending anyway; the
        // backend's interim `100 Continue` must reach it, then the final 200 for the whole body.
        let body = try bodyFile("expect", size: 300_000)
        let r = try run("curl", ["-sS", "-v", "--expect100-timeout", "30", "-H", "Expect: 100-continue",
                                 "--data-binary", "@\(body.path)", "\(base)/expect"])
        XCTAssertTrue(r.err.contains("< HTTP/1.1 100"), r.err)
        XCTAssertTrue(r.err.contains("< HTTP/1.1 200"), r.err)
        XCTAssertEqual(json(r.out)["sha"] as? String, body.sha, r.out + r.err)
    }

    func testDeadlinesOverHTTP1AndHTTP2() throws {
        // The rule's 1 s deadline: 504 on both protocols, while a quick request on the same
        // HTTP/2 connection is answered (nghttp, two streams at once).
        let h1 = try run("curl", ["-sS", "--max-time", "20", "-w", "%{http_code}", "\(base)/slow/h1"])
        XCTAssertTrue(h1.out.hasSuffix("504"), h1.out + h1.err)
        XCTAssertNotNil(capture.waitForLine(containing: ["request", "path=/slow/h1", "status=504", "error=backend"]))
        let h2 = try run("nghttp", ["-n", "-v", "\(base)/slow/h2", "\(base)/quick"])
        XCTAssertTrue(h2.out.contains(":status: 504"), h2.out)
        XCTAssertTrue(h2.out.contains(":status: 200"), h2.out)
        XCTAssertNotNil(capture.waitForLine(containing: ["request", "path=/slow/h2", "status=504", "proto=h2c"]))
    }

    func testHTTP2FlowControlBothWays() throws {
        // 1 MB up and 2 MB down on one h2c connection: many windows of 65,535 bytes each way.
        let body = try bodyFile("mb", size: 1_000_000)
        let up = try run("curl", ["-sS", "--max-time", "30", "--http2-prior-knowledge", "--data-binary", "@\(body.path)", "\(base)/up"])
        XCTAssertEqual(json(up.out)["sha"] as? String, body.sha, up.out + up.err)
        let down = try run("curl", ["-sS", "--max-time", "30", "--http2-prior-knowledge", "-o", "\(dir)/down", "-w", "%{size_download} %{http_version}", "\(base)/big/2000000"])
        XCTAssertEqual(down.out, "2000000 2", down.err)
        // HEAD: the Content-Length of the body that is not sent.
        let head = try run("curl", ["-sS", "-I", "--max-time", "20", "--http2-prior-knowledge", "\(base)/big/5000"])
        XCTAssertTrue(head.out.contains("HTTP/2 200") && head.out.contains("content-length: 5000"), head.out + head.err)
        // 50 streams at once, 5 concurrent, on one connection (h2load), all answered.
        let load = try run("h2load", ["-n", "50", "-c", "1", "-m", "5", "\(base)/many"])
        XCTAssertTrue(load.out.contains("50 succeeded"), load.out + load.err)
    }
}
