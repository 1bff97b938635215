import Foundation
import Glibc
import Synchronization
import XCTest

@testable import Gate

/// A self-signed ECDSA certificate for `host` made with the openssl CLI; returns (cert, key) paths.
func makeCertificate(_ host: String, file base: String, in dir: String) throws -> (cert: String, key: String) {
    let cert = "\(dir)/\(base).crt"
    let key = "\(dir)/\(base).key"
    let r = try runProcess(
        try tool("openssl"),
        [
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", cert,
            "-days", "2", "-subj", "/CN=\(host)", "-addext", "subjectAltName=DNS:\(host)",
        ])
    guard r.status == 0 else { throw GateError(.config, "openssl req for \(host) failed: \(r.err)") }
    return (cert, key)
}

/// The node's `httproute` service on loopback: plain listener (HTTP/1.1 and h2c), TLS
/// listener (certificates by SNI, HTTP/2 and HTTP/1.1 by ALPN, passthrough by SNI),
/// RequestMirror, config decoding, and manifests rewritten under load.
final class HTTPRouteServiceTests: XCTestCase {
    var backends: [String: PythonBackend] = [:]
    var loops: GateLoopGroup!
    var service: HTTPRouteService!
    var dir = ""
    var certs: [String: (cert: String, key: String)] = [:]

    override func setUpWithError() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("httproute-svc-\(getpid())-\(UUID())").path
        for sub in ["routes", "certs", "other"] { try FileManager.default.createDirectory(atPath: "\(dir)/\(sub)", withIntermediateDirectories: true) }
        certs["a"] = try makeCertificate("a.example.com", file: "a.example.com", in: "\(dir)/certs")
        certs["b"] = try makeCertificate("*.b.example.com", file: "_.b.example.com", in: "\(dir)/certs")
        certs["pass"] = try makeCertificate("pass.example.com", file: "pass", in: "\(dir)/other")
        for name in ["a", "b"] { backends[name] = try PythonBackend(name) }
        for name in ["v1", "v2"] { backends[name] = try PythonBackend(name, record: "\(dir)/\(name).log") }
        backends["mirror"] = try PythonBackend("mirror", record: "\(dir)/mirror.log")
        backends["pass"] = try PythonBackend("pass", tls: certs["pass"]!)
        try writeRoutes(version: "v1")
        loops = try GateLoopGroup(count: 2)
        var config = HTTPRouteConfig(
            manifests: "\(dir)/routes",
            services: [
                "v1": backends["v1"]!.address, "v2": backends["v2"]!.address, "a": backends["a"]!.address, "b": backends["b"]!.address,
                "mirror": backends["mirror"]!.address, "dead": "127.0.0.1:\(try deadPort())",
            ],
            listeners: [
                HTTPRouteListenerConfig(name: "http", port: 0),
                HTTPRouteListenerConfig(
                    name: "https", port: 0,
                    tls: HTTPRouteTLSConfig(certificateDir: "\(dir)/certs", passthrough: ["pass.example.com": backends["pass"]!.address])),
            ])
        config.reloadInterval = 0.05
        service = try HTTPRouteService(config: config, bind: "127.0.0.1", loops: loops)
    }

    override func tearDown() {
        service?.stop()
        loops?.shutdown()
        for backend in backends.values { backend.stop() }
        try? FileManager.default.removeItem(atPath: dir)
    }

    func deadPort() throws -> UInt16 {
        let fd = try Sys.listen(try SocketAddress(host: "127.0.0.1", port: 0), transparent: false, reusePort: false)
        defer { close(fd) }
        return SocketAddress.local(of: fd)!.port
    }

    /// `reload.example` goes to `version`; a.example.com and *.b.example.com to their backends;
    /// mirror.example mirrors to the recording backend and to a dead port.
    func writeRoutes(version: String) throws { try Self.writeRoutes(version: version, dir: dir) }

    static func writeRoutes(version: String, dir: String) throws {
        let text = """
            apiVersion: gateway.networking.k8s.io/v1
            kind: HTTPRoute
            metadata: {name: reload}
            spec:
              hostnames: ["reload.example"]
              rules: [{backendRefs: [{name: \(version), port: 80}]}]
            ---
            apiVersion: gateway.networking.k8s.io/v1
            kind: HTTPRoute
            metadata: {name: sites}
            spec:
              hostnames: ["a.example.com", "*.b.example.com"]
              rules:
              - matches: [{headers: [{name: Host, type: RegularExpression, value: "a\\\\.example\\\\.com(:[0-9]+)?"}]}]
                backendRefs: [{name: a, port: 80}]
              - backendRefs: [{name: b, port: 80}]
            ---
            apiVersion: gateway.networking.k8s.io/v1
            kind: HTTPRoute
            metadata: {name: mirrored}
            spec:
              hostnames: ["mirror.example"]
              rules:
              - filters:
                - {type: RequestMirror, requestMirror: {backendRef: {name: mirror, port: 80}}}
                - {type: RequestMirror, requestMirror: {backendRef: {name: dead, port: 80}}}
                backendRefs: [{name: v1, port: 80}]
            """
        // Written to a temporary name and renamed: the watcher never sees half a file.
        try text.write(toFile: "\(dir)/routes/.tmp", atomically: false, encoding: .utf8)
        _ = rename("\(dir)/routes/.tmp", "\(dir)/routes/routes.yaml")
    }

    var plain: UInt16 { service.bound[0].address.port }
    var tlsPort: UInt16 { service.bound[1].address.port }

    func curl(_ args: [String]) throws -> (status: Int32, out: String, err: String) {
        try runProcess(try tool("curl"), ["-sS", "--max-time", "20"] + args, timeout: 120)
    }

    func json(_ text: String) -> [String: Any] {
        (try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any]) ?? [:]
    }

    func testH2cPriorKnowledgeAndHTTP1OnOnePort() throws {
        let h2 = try curl(["--http2-prior-knowledge", "-w", "\n%{http_version}", "-H", "Host: a.example.com", "http://127.0.0.1:\(plain)/x?y=1"])
        XCTAssertEqual(h2.status, 0, h2.err)
        let lines = h2.out.split(separator: "\n")
        XCTAssertEqual(lines.last, "2", h2.out)
        let seen = json(String(lines.first ?? ""))
        XCTAssertEqual(seen["backend"] as? String, "a", h2.out)
        XCTAssertEqual(seen["path"] as? String, "/x?y=1", h2.out)
        // 20 concurrent streams on one HTTP/2 connection (nghttp; curl 7.88 cannot reuse an h2c
        // connection), and a POST body.
        let many = try runProcess(
            try tool("nghttp"), ["-n", "-v", "-H", ":authority: x.b.example.com"] + (0..<20).map { "http://127.0.0.1:\(plain)/\($0)" }, timeout: 60)
        XCTAssertEqual(many.status, 0, many.err)
        XCTAssertEqual(many.out.components(separatedBy: ":status: 200").count - 1, 20, many.out)
        XCTAssertEqual(many.out.components(separatedBy: "] Connected").count - 1, 1, many.out)
        let post = try curl(["--http2-prior-knowledge", "-H", "Host: a.example.com", "--data-binary", String(repeating: "z", count: 100_000), "http://127.0.0.1:\(plain)/post"])
        XCTAssertEqual(json(post.out)["body"] as? Int, 100_000, post.out + post.err)
        let notFound = try curl(["--http2-prior-knowledge", "-o", "/dev/null", "-w", "%{http_code}", "-H", "Host: nowhere.example", "http://127.0.0.1:\(plain)/"])
        XCTAssertEqual(notFound.out, "404")
        let h1 = try curl(["-H", "Host: a.example.com", "http://127.0.0.1:\(plain)/h1"])
        XCTAssertEqual(json(h1.out)["backend"] as? String, "a", h1.out)
    }

    func testTLSCertificateBySNIWithHTTP2AndHTTP1() throws {
        for (host, key, backend) in [("a.example.com", "a", "a"), ("deep.b.example.com", "b", "b")] {
            let resolve = ["--resolve", "\(host):\(tlsPort):127.0.0.1", "--cacert", certs[key]!.cert]
            let h2 = try curl(resolve + ["-w", "\n%{http_version}", "https://\(host):\(tlsPort)/tls"])
            XCTAssertEqual(h2.status, 0, h2.err)
            XCTAssertEqual(h2.out.split(separator: "\n").last, "2", h2.out)
            XCTAssertEqual(json(String(h2.out.split(separator: "\n").first ?? ""))["backend"] as? String, backend, h2.out)
            let h1 = try curl(resolve + ["--http1.1", "-w", "\n%{http_version}", "https://\(host):\(tlsPort)/tls1"])
            XCTAssertEqual(h1.status, 0, h1.err)
            XCTAssertEqual(h1.out.split(separator: "\n").last, "1.1", h1.out)
            XCTAssertEqual(json(String(h1.out.split(separator: "\n").first ?? ""))["backend"] as? String, backend, h1.out)
            // The certificate served is the one for the SNI name.
            let s = try runProcess(
                try tool("openssl"), ["s_client", "-connect", "127.0.0.1:\(tlsPort)", "-servername", host, "-alpn", "h2"], timeout: 30)
            XCTAssertTrue(s.out.contains("subject=CN = \(key == "a" ? "a.example.com" : "*.b.example.com")"), s.out)
            XCTAssertTrue(s.out.contains("ALPN protocol: h2"), s.out)
        }
        // No certificate and no passthrough for this name: the connection is closed.
        let unknown = try curl(["-k", "--resolve", "c.example.com:\(tlsPort):127.0.0.1", "https://c.example.com:\(tlsPort)/"])
        XCTAssertNotEqual(unknown.status, 0, unknown.out)
    }

    /// Sequential requests on one client connection reuse one backend connection, on the
    /// HTTP/1.1 path and on the NIO (TLS) path.
    func testBackendConnectionsAreReused() throws {
        let plainRun = try curl(["-w", "\n", "-H", "Host: a.example.com"] + (0..<10).map { "http://127.0.0.1:\(plain)/reuse/\($0)" })
        let tlsRun = try curl(
            ["--http1.1", "-w", "\n", "--resolve", "a.example.com:\(tlsPort):127.0.0.1", "--cacert", certs["a"]!.cert]
                + (0..<10).map { "https://a.example.com:\(tlsPort)/reuse/\($0)" })
        for run in [plainRun, tlsRun] {
            XCTAssertEqual(run.status, 0, run.err)
            let answers = run.out.split(separator: "\n").map { json(String($0)) }
            XCTAssertEqual(answers.count, 10, run.out)
            XCTAssertEqual(answers.compactMap { $0["backend"] as? String }, Array(repeating: "a", count: 10), run.out)
            // One backend source port for all ten: the backend connection was kept alive.
            XCTAssertEqual(Set(answers.compactMap { $0["peer"] as? Int }).count, 1, run.out)
        }
    }

    func testTLSPassthroughBySNI() throws {
        // The gateway has no certificate for pass.example.com: the backend's own TLS answers.
        let r = try curl([
            "--resolve", "pass.example.com:\(tlsPort):127.0.0.1", "--cacert", certs["pass"]!.cert, "https://pass.example.com:\(tlsPort)/through",
        ])
        XCTAssertEqual(r.status, 0, r.err)
        XCTAssertEqual(json(r.out)["backend"] as? String, "pass", r.out)
        XCTAssertEqual(json(r.out)["path"] as? String, "/through", r.out)
    }

    func testRequestMirror() throws {
        let h1 = try curl(["-H", "Host: mirror.example", "http://127.0.0.1:\(plain)/m1"])
        XCTAssertEqual(json(h1.out)["backend"] as? String, "v1", h1.out + h1.err)
        let h2 = try curl(["--http2-prior-knowledge", "-H", "Host: mirror.example", "http://127.0.0.1:\(plain)/m2"])
        XCTAssertEqual(json(h2.out)["backend"] as? String, "v1", h2.out + h2.err)
        let tls = try curl([
            "--resolve", "a.example.com:\(tlsPort):127.0.0.1", "--cacert", certs["a"]!.cert, "-H", "Host: mirror.example",
            "https://a.example.com:\(tlsPort)/m3",
        ])
        XCTAssertEqual(json(tls.out)["backend"] as? String, "v1", tls.out + tls.err)
        // The mirror saw all three (its answers were ignored; the dead mirror broke nothing).
        var log = ""
        for _ in 0..<100 {
            log = (try? String(contentsOfFile: "\(dir)/mirror.log", encoding: .utf8)) ?? ""
            if ["GET /m1", "GET /m2", "GET /m3"].allSatisfy(log.contains) { break }
            usleep(50_000)
        }
        for line in ["GET /m1", "GET /m2", "GET /m3"] { XCTAssertTrue(log.contains(line), log) }
    }

    func testConfigSection() throws {
        let config = try GateConfig.decode(Data("""
            {"httproute": {"manifests": "/r", "services": {"a": "1.2.3.4:80"}, "reloadInterval": 2,
             "listeners": [{"name": "http", "port": 80}, {"name": "https", "port": 443, "gateway": "default/gw",
               "tls": {"certificates": {"a.example.com": {"cert": "/a.crt", "key": "/a.key"}}, "passthrough": {"p.example.com": "10.0.0.1:443"}}}]}}
            """.utf8))
        XCTAssertEqual(config.httproute?.listeners.count, 2)
        XCTAssertEqual(config.httproute?.listeners[1].tls?.certificates["a.example.com"]?.cert, "/a.crt")
        XCTAssertEqual(config.httproute?.reloadInterval, 2)
        XCTAssertThrowsError(try GateConfig.decode(Data(#"{"httproute": {"manifests": "/r", "listeners": [{"name": "x", "port": 1, "tls": {"certs": {}}}]}}"#.utf8))) {
            XCTAssertTrue("\($0)".contains("unknown field httproute.listeners[0].tls.certs"), "\($0)")
        }
        XCTAssertThrowsError(try GateConfig.decode(Data(#"{"httproute": {"listeners": []}}"#.utf8))) {
            XCTAssertTrue("\($0)".contains("missing field httproute.manifests"), "\($0)")
        }
        // A certificate file that does not exist is refused with its name.
        let missing = HTTPRouteTLSConfig(certificates: ["x.example": CertificateFiles(cert: "/nonexistent.crt", key: "/nonexistent.key")])
        XCTAssertThrowsError(try HTTPRouteTLS(missing)) { XCTAssertTrue("\($0)".contains("x.example (/nonexistent.crt"), "\($0)") }
        // Listener attachment by gateway and sectionName (no Gateway manifest for it).
        let listener = HTTPRouteListenerConfig(name: "https", port: 443, gateway: "default/gw")
        func attaches(_ parents: [ParentRef]) -> Bool {
            let route = HTTPRouteObject(namespace: "default", name: "r", created: nil, hostnames: [], parents: parents, rules: [], file: "f")
            return listener.routes(in: RouteManifests(routes: [route])).count == 1
        }
        XCTAssertTrue(attaches([]))
        XCTAssertTrue(attaches([ParentRef(namespace: "default", name: "gw", sectionName: nil)]))
        XCTAssertTrue(attaches([ParentRef(namespace: "default", name: "gw", sectionName: "https")]))
        XCTAssertTrue(attaches([ParentRef(namespace: "default", name: "gw", sectionName: "https", port: 80)]))
        XCTAssertFalse(attaches([ParentRef(namespace: "default", name: "gw", sectionName: "http")]))
        XCTAssertFalse(attaches([ParentRef(namespace: "default", name: "other", sectionName: nil)]))
    }

    /// Clients keep sending while the manifest folder is rewritten several times: every
    /// request succeeds, the rewrites took effect during the load (v2 served some), and the
    /// last version is in force.
    func testReloadUnderLoadDropsNothing() throws {
        let count = 600
        let dir = dir
        let port = plain
        let curlPath = try tool("curl")
        let writer = Thread {
            // Rewrites start once the load reaches the backend (process start-up can be slow).
            for _ in 0..<400 where !((try? String(contentsOfFile: "\(dir)/v1.log", encoding: .utf8)) ?? "").contains("/load/") { usleep(50_000) }
            for i in 0..<8 {
                usleep(250_000)
                try? Self.writeRoutes(version: i % 2 == 0 ? "v2" : "v1", dir: dir)
            }
        }
        // HTTP/1.1 (curl, one kept-alive connection) and h2c (h2load: 2 connections, 4 streams each) at once.
        let runs: [(String, [String])] = [
            (curlPath, ["-sS", "--max-time", "60", "-H", "Host: reload.example", "-w", "%{http_code}\n"] + (0..<count).map { "http://127.0.0.1:\(port)/load/\($0)" }),
            (try tool("h2load"), ["-n", "\(count)", "-c", "2", "-m", "4", "-H", "Host: reload.example", "http://127.0.0.1:\(port)/load/h2"]),
        ]
        let results = Mutex<[String: (status: Int32, out: String, err: String)]>([:])
        let group = DispatchGroup()
        writer.start()
        for (path, args) in runs {
            group.enter()
            DispatchQueue.global().async {
                let r = (try? runProcess(path, args, timeout: 120)) ?? (-1, "", "\(path) did not run")
                results.withLock { $0[path] = r }
                group.leave()
            }
        }
        XCTAssertEqual(group.wait(timeout: .now() + 120), .success)
        for _ in 0..<100 where !writer.isFinished { usleep(50_000) }
        let h1 = results.withLock { $0[curlPath] ?? (-1, "", "") }
        XCTAssertEqual(h1.status, 0, h1.err)
        let lines = h1.out.split(separator: "\n")
        XCTAssertEqual(lines.count, count)
        XCTAssertEqual(lines.filter { $0.hasSuffix("}200") }.count, count, h1.out)
        let h2 = results.withLock { $0[runs[1].0] ?? (-1, "", "") }
        XCTAssertEqual(h2.status, 0, h2.err)
        XCTAssertTrue(h2.out.contains("requests: \(count) total, \(count) started, \(count) done, \(count) succeeded, 0 failed"), h2.out)
        XCTAssertTrue(h2.out.contains("status codes: \(count) 2xx"), h2.out)
        let v2 = (try? String(contentsOfFile: "\(dir)/v2.log", encoding: .utf8)) ?? ""
        XCTAssertTrue(v2.contains("GET /load/"), "no request reached v2 during the rewrites")
        // The last rewrite (i = 7) points at v1; the watcher applies it within a few polls
        // (the load may end before the last rewrite does).
        var seen = try curl(["-H", "Host: reload.example", "http://127.0.0.1:\(plain)/after"])
        for _ in 0..<50 where json(seen.out)["backend"] as? String != "v1" {
            usleep(100_000)
            seen = try curl(["-H", "Host: reload.example", "http://127.0.0.1:\(plain)/after"])
        }
        XCTAssertEqual(json(seen.out)["backend"] as? String, "v1", seen.out)
    }
}
