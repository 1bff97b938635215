import Foundation
import Glibc
import XCTest

@testable import Gate

/// Certificates re-read without a restart, from each of the three sources (a `certificates`
/// entry, a `certificateDir` pair, a Gateway `tls.certificateRefs` Secret): `openssl s_client`
/// sees the new fingerprint, a TLS connection opened before the change keeps working with the
/// old certificate, and a broken new PEM is refused with an error naming host and file while
/// the old certificate stays in use.
final class HTTPRouteCertReloadTests: XCTestCase {
    /// A Python client that opens one TLS connection, sends a request, writes the peer
    /// certificate's SHA-256 to `ready`, waits for `go` (at most 60 s), sends a second request
    /// on the same connection and prints both statuses and the fingerprint.
    static let heldClient = """
        import hashlib, os, socket, ssl, sys, time
        port, name, ready, go = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        context.set_alpn_protocols(["http/1.1"])
        conn = context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=30), server_hostname=name)
        fingerprint = hashlib.sha256(conn.getpeercert(binary_form=True)).hexdigest()
        def request(path):
            conn.sendall(("GET " + path + " HTTP/1.1\\r\\nHost: " + name + "\\r\\n\\r\\n").encode())
            data = b""
            while b"\\r\\n\\r\\n" not in data:
                data += conn.recv(65536)
            head, _, body = data.partition(b"\\r\\n\\r\\n")
            length = int([l.split(b":")[1] for l in head.split(b"\\r\\n") if l.lower().startswith(b"content-length")][0])
            while len(body) < length:
                body += conn.recv(65536)
            return head.split(b" ")[1].decode()
        first = request("/before")
        open(ready, "w").write(fingerprint)
        for _ in range(1200):
            if os.path.exists(go):
                break
            time.sleep(0.05)
        second = request("/after")
        print(first, second, fingerprint)
        """

    func testCertificatesReloadFromEverySource() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("certreload-\(getpid())-\(UUID())").path
        for sub in ["routes", "certs", "map", "new"] {
            try FileManager.default.createDirectory(atPath: "\(dir)/\(sub)", withIntermediateDirectories: true)
        }
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let backend = try PythonBackend("web")
        defer { backend.stop() }
        // Three names, one per source.
        let mapped = try makeCertificate("map.example", file: "map", in: "\(dir)/map")
        let inDir = try makeCertificate("dir.example", file: "dir.example", in: "\(dir)/certs")
        let secret = try makeCertificate("ref.example", file: "refsecret", in: "\(dir)/certs")
        try writeManifest(
            """
            apiVersion: gateway.networking.k8s.io/v1
            kind: Gateway
            metadata: {name: gw}
            spec:
              listeners:
              - {name: refs, port: 443, protocol: HTTPS, hostname: ref.example, tls: {certificateRefs: [{name: refsecret}]}}
            ---
            apiVersion: gateway.networking.k8s.io/v1
            kind: HTTPRoute
            metadata: {name: web}
            spec:
              rules: [{backendRefs: [{name: web, port: 80}]}]

            """, "routes.yaml", in: "\(dir)/routes")
        let capture = LogCapture()
        let loops = try GateLoopGroup(count: 1)
        defer { loops.shutdown() }
        var config = HTTPRouteConfig(
            manifests: "\(dir)/routes", services: ["web": backend.address],
            listeners: [
                HTTPRouteListenerConfig(
                    name: "https", port: 0, gateway: "gw",
                    tls: HTTPRouteTLSConfig(
                        certificates: ["map.example": CertificateFiles(cert: mapped.cert, key: mapped.key)], certificateDir: "\(dir)/certs"))
            ])
        config.reloadInterval = 0.05
        let service = try HTTPRouteService(config: config, bind: "127.0.0.1", loops: loops, log: capture.logger("ugate.httproute"))
        defer { service.stop() }
        let port = service.bound[0].address.port

        let sources: [(name: String, files: (cert: String, key: String))] = [("map.example", mapped), ("dir.example", inDir), ("ref.example", secret)]
        for (name, files) in sources {
            let old = try fileFingerprint(files.cert)
            XCTAssertEqual(try servedCertificate(port: port, serverName: name).fingerprint, old, name)

            // A connection opened before the change.
            let ready = "\(dir)/\(name).ready"
            let go = "\(dir)/\(name).go"
            let held = Process()
            held.executableURL = URL(fileURLWithPath: try tool("python3"))
            held.arguments = ["-c", Self.heldClient, "\(port)", name, ready, go]
            let out = Pipe()
            held.standardOutput = out
            try held.run()
            defer { if held.isRunning { kill(held.processIdentifier, SIGKILL) } }
            XCTAssertTrue(eventually { FileManager.default.fileExists(atPath: ready) }, "held client for \(name) did not connect")

            // New certificate and key (same name), moved over the old files.
            let fresh = try makeCertificate(name, file: name, in: "\(dir)/new")
            XCTAssertEqual(rename(fresh.key, files.key), 0)
            XCTAssertEqual(rename(fresh.cert, files.cert), 0)
            let new = try fileFingerprint(files.cert)
            XCTAssertNotEqual(new, old)
            XCTAssertTrue(try eventually { try servedCertificate(port: port, serverName: name).fingerprint == new }, "\(name) not reloaded")
            XCTAssertNotNil(capture.waitForLine(containing: ["TLS certificate loaded", name]))

            // The held connection still works, on the old certificate.
            XCTAssertTrue(FileManager.default.createFile(atPath: go, contents: Data()))
            let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            held.waitUntilExit()
            XCTAssertEqual(
                text.trimmingCharacters(in: .whitespacesAndNewlines), "200 200 \(old.replacingOccurrences(of: ":", with: "").lowercased())", name)

            // A broken PEM: refused with a clear error, the new certificate stays.
            let before = capture.lines.count
            try "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n".write(toFile: "\(dir)/new/broken", atomically: false, encoding: .utf8)
            XCTAssertEqual(rename("\(dir)/new/broken", files.cert), 0)
            let logged = eventually {
                capture.lines.dropFirst(before).contains {
                    $0.contains("TLS certificate not reloaded, keeping the previous certificate") && $0.contains(name) && $0.contains(files.cert)
                }
            }
            XCTAssertTrue(logged, "no error logged for the broken \(name)")
            XCTAssertEqual(try servedCertificate(port: port, serverName: name).fingerprint, new, name)
            let r = try runProcess(
                try tool("curl"), ["-sS", "--max-time", "20", "-k", "--resolve", "\(name):\(port):127.0.0.1", "https://\(name):\(port)/still"])
            XCTAssertTrue(r.out.contains("\"backend\": \"web\""), r.out + r.err)
        }
    }

    /// A certificate file that is broken at start refuses the start, naming host and file.
    func testBrokenCertificateAtStartIsRefused() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("certbroken-\(getpid())-\(UUID())").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let files = try makeCertificate("bad.example", file: "bad.example", in: dir)
        try "garbage\n".write(toFile: files.key, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try HTTPRouteTLS(HTTPRouteTLSConfig(certificateDir: dir))) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains("bad.example") && text.contains(files.key), text)
        }
    }
}
