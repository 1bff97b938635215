import Foundation
import Glibc
import XCTest

@testable import Gate

/// Captured ports 80 and 443 inside a network namespace this test creates: nftables
/// redirects them to the `ugate run` node's HTTPRoute listeners; a client that knows nothing
/// of the proxy (curl, openssl s_client) talks to `10.77.0.2`, and its requests reach the
/// backends the manifests name, with TLS terminated by the certificate of the SNI name.
final class HTTPRouteCaptureTests: XCTestCase {
    private var node: Process?
    private var backends: [PythonBackend] = []
    private var namespace = ""
    private var dir = ""

    override func tearDown() {
        if let node, node.isRunning {
            kill(node.processIdentifier, SIGTERM)
            for _ in 0..<50 where node.isRunning { usleep(100_000) }
            if node.isRunning { kill(node.processIdentifier, SIGKILL) }
            node.waitUntilExit()
        }
        for backend in backends { backend.stop() }
        if !namespace.isEmpty { _ = try? runProcess("/usr/sbin/ip", ["netns", "del", namespace]) }
        if !dir.isEmpty { try? FileManager.default.removeItem(atPath: dir) }
    }

    private func inNamespace(_ args: [String], timeout: Double = 30) throws -> (status: Int32, out: String, err: String) {
        try runProcess(try tool("ip"), ["netns", "exec", namespace] + args, timeout: timeout)
    }

    func testCapturedPorts80And443ReachRoutesWithSNICertificates() throws {
        _ = try tool("nft")
        _ = try tool("setpriv")
        namespace = "ugate-hr-\(getpid())"
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("httproute-capture-\(getpid())-\(UUID())").path
        for sub in ["routes", "certs", "id"] { try FileManager.default.createDirectory(atPath: "\(dir)/\(sub)", withIntermediateDirectories: true) }
        let ip = try tool("ip")
        XCTAssertEqual(try runProcess(ip, ["netns", "add", namespace]).status, 0)
        for command in [
            ["link", "set", "lo", "up"], ["link", "add", "hr0", "type", "veth", "peer", "name", "hr1"],
            ["addr", "add", "10.77.0.1/24", "dev", "hr0"], ["link", "set", "hr0", "up"], ["link", "set", "hr1", "up"],
        ] {
            let r = try runProcess(ip, ["-n", namespace] + command)
            XCTAssertEqual(r.status, 0, "ip \(command): \(r.err)")
        }
        let certA = try makeCertificate("a.example.com", file: "a.example.com", in: "\(dir)/certs")
        let certB = try makeCertificate("b.example.com", file: "b.example.com", in: "\(dir)/certs")
        let siteA = try PythonBackend("site-a", namespace: namespace)
        let siteB = try PythonBackend("site-b", namespace: namespace)
        let api = try PythonBackend("api", namespace: namespace)
        backends = [siteA, siteB, api]
        try """
            apiVersion: gateway.networking.k8s.io/v1
            kind: HTTPRoute
            metadata: {name: a}
            spec:
              hostnames: ["a.example.com"]
              rules:
              - matches: [{path: {type: PathPrefix, value: /api}}]
                backendRefs: [{name: api, port: 80}]
              - backendRefs: [{name: site-a, port: 80}]
            ---
            apiVersion: gateway.networking.k8s.io/v1
            kind: HTTPRoute
            metadata: {name: b}
            spec:
              hostnames: ["b.example.com"]
              rules: [{backendRefs: [{name: site-b, port: 80}]}]
            """.write(toFile: "\(dir)/routes/routes.yaml", atomically: true, encoding: .utf8)
        try """
            {"basePort": 0, "defaultListeners": false,
             "httproute": {"manifests": "\(dir)/routes",
               "services": {"site-a": "\(siteA.address)", "site-b": "\(siteB.address)", "api": "\(api.address)"},
               "listeners": [{"name": "http", "port": 15080}, {"name": "https", "port": 15443, "tls": {"certificateDir": "\(dir)/certs"}}]}}
            """.write(toFile: "\(dir)/ugate.json", atomically: true, encoding: .utf8)
        // The node's own connections (gid 1337) are exempt; everything else to ports 80/443 is captured.
        try """
            table ip ugatehr {
              chain out {
                type nat hook output priority -100; policy accept;
                meta skgid 1337 return
                tcp dport 80 redirect to :15080
                tcp dport 443 redirect to :15443
              }
            }
            """.write(toFile: "\(dir)/capture.nft", atomically: true, encoding: .utf8)
        let applied = try inNamespace(["nft", "-f", "\(dir)/capture.nft"])
        XCTAssertEqual(applied.status, 0, applied.err)

        let log = "\(dir)/node.log"
        FileManager.default.createFile(atPath: log, contents: nil)
        let node = Process()
        node.executableURL = URL(fileURLWithPath: ip)
        node.arguments = [
            "netns", "exec", namespace, "setpriv", "--regid", "1337", "--clear-groups", ugateExecutable(), "run", "--config", "\(dir)/ugate.json",
            "--identity-dir", "\(dir)/id",
        ]
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        node.standardOutput = handle
        node.standardError = handle
        try node.run()
        self.node = node
        var text = ""
        // The listener summary (`ugate run` prints it once every listener is up), not the
        // earlier `listener=https` log line, which also contains "https".
        for _ in 0..<300 where !text.contains("https 127.0.0.1:15443") {
            usleep(100_000)
            text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
            if !node.isRunning { break }
        }
        XCTAssertTrue(text.contains("http 127.0.0.1:15080"), text)
        XCTAssertTrue(text.contains("https 127.0.0.1:15443"), text)

        func json(_ text: String) -> [String: Any] {
            (try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any]) ?? [:]
        }
        // Plain HTTP on captured port 80, routed by host and path.
        for (host, path, backend) in [("a.example.com", "/", "site-a"), ("a.example.com", "/api/v1", "api"), ("b.example.com", "/x", "site-b")] {
            let r = try inNamespace(["curl", "-sS", "--max-time", "10", "--resolve", "\(host):80:10.77.0.2", "http://\(host)\(path)"])
            XCTAssertEqual(r.status, 0, r.err)
            XCTAssertEqual(json(r.out)["backend"] as? String, backend, r.out)
        }
        // TLS on captured port 443: HTTP/2 by ALPN, the certificate of the SNI name.
        for (host, cert, backend) in [("a.example.com", certA.cert, "site-a"), ("b.example.com", certB.cert, "site-b")] {
            let r = try inNamespace([
                "curl", "-sS", "--max-time", "10", "-w", "\n%{http_version}", "--resolve", "\(host):443:10.77.0.2", "--cacert", cert, "https://\(host)/tls",
            ])
            XCTAssertEqual(r.status, 0, r.err)
            XCTAssertEqual(r.out.split(separator: "\n").last, "2", r.out)
            XCTAssertEqual(json(String(r.out.split(separator: "\n").first ?? ""))["backend"] as? String, backend, r.out)
            let s = try inNamespace(["openssl", "s_client", "-connect", "10.77.0.2:443", "-servername", host, "-CAfile", cert])
            XCTAssertTrue(s.out.contains("subject=CN = \(host)"), s.out)
            XCTAssertTrue(s.out.contains("Verify return code: 0 (ok)"), s.out)
        }
        // The access log names route, backend and protocol.
        text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        XCTAssertTrue(text.contains("route=default/a#0") && text.contains("proto=h2"), text)
    }
}
