import Foundation
import Glibc
import XCTest

@testable import Gate

/// HTTPRoute backends on a mesh peer ride the peer's HTTP/2 stream as their channel: no
/// socketpair in the gateway's process, keep-alive through the stream, bodies both ways.
final class HTTPRouteMeshBackendTests: XCTestCase {
    /// An origin next to bob that echoes the request body (Content-Length or chunked, the
    /// framing it saw in `X-Request-Framing`) — as a chunked response under `/chunked`, with
    /// Content-Length elsewhere — and names the TCP port of the connection it came on (`X-Peer`).
    static let echoScript = """
        import http.server, sys
        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            wbufsize = 65536
            def answer(self):
                if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                    body, framing = b"", "chunked"
                    while True:
                        size = int(self.rfile.readline().split(b";")[0], 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\\r\\n", b"\\n", b""):
                                pass
                            break
                        body += self.rfile.read(size)
                        self.rfile.readline()
                else:
                    n = int(self.headers.get("Content-Length") or 0)
                    body, framing = (self.rfile.read(n) if n else b""), "length"
                out = body or ("hello " + self.path).encode()
                self.send_response(200)
                self.send_header("X-Request-Framing", framing)
                self.send_header("X-Peer", str(self.client_address[1]))
                if "/chunked" in self.path:
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    for i in range(0, len(out), 7000):
                        part = out[i:i + 7000]
                        self.wfile.write(b"%x\\r\\n%s\\r\\n" % (len(part), part))
                    self.wfile.write(b"0\\r\\n\\r\\n")
                else:
                    self.send_header("Content-Length", str(len(out)))
                    self.end_headers()
                    self.wfile.write(out)
            do_GET = do_POST = do_PUT = answer
            def log_message(self, *args):
                pass
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        print(server.server_address[1], flush=True)
        server.serve_forever()
        """

    /// The AF_UNIX sockets process `pid` holds: descriptors in /proc/PID/fd whose socket inode
    /// /proc/net/unix lists (a socketpair between the gateway and the mesh adds two).
    static func unixSockets(of pid: Int32) throws -> Int {
        let table = try String(contentsOfFile: "/proc/net/unix", encoding: .utf8)
        var inodes = Set<String>()
        for line in table.split(separator: "\n").dropFirst() {
            let fields = line.split(separator: " ")
            if fields.count > 6 { inodes.insert(String(fields[6])) }
        }
        let fds = try FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd")
        return fds.reduce(0) { count, fd in
            guard let link = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/fd/\(fd)"),
                link.hasPrefix("socket:[")
            else { return count }
            return inodes.contains(String(link.dropFirst(8).dropLast())) ? count + 1 : count
        }
    }

    /// Two `ugate run` nodes on loopback: alice's HTTPRoute sends `shop.example` to an origin her
    /// `routes` put behind `mesh:bob`. curl keeps one connection for eight requests over
    /// HTTP/1.1 (and four over h2c): GETs and POSTs with Content-Length and chunked request
    /// bodies (100,000 bytes), answered with Content-Length and chunked bodies; every body comes
    /// back whole, the origin sees the framing the client chose and one TCP connection per curl
    /// run (the pooled mesh stream was reused), and alice's process holds no more AF_UNIX
    /// sockets than before (a socketpair per backend connection would add two).
    func testHTTPRouteBackendRidesTheMeshStream() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("httproute-mesh-\(getpid())-\(UUID())").path
        try FileManager.default.createDirectory(atPath: "\(dir)/routes", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let origin = try PythonBackend("origin", script: Self.echoScript)
        defer { origin.stop() }
        let (bob, bobID, bobMesh) = try UgateNode.bob(in: dir, allowing: [origin.address])
        defer { bob.stop() }
        try writeManifest(
            """
            apiVersion: gateway.networking.k8s.io/v1
            kind: HTTPRoute
            metadata: {name: shop}
            spec:
              hostnames: [shop.example]
              rules: [{backendRefs: [{name: origin, port: \(origin.port)}]}]
            """, "shop.yaml", in: "\(dir)/routes")
        try #"""
            {"mesh": {"peers": [{"id": "\#(bobID)", "name": "bob", "addresses": ["\#(bobMesh)"]}]},
             "routes": [{"dest": "\#(origin.address)", "to": "mesh:bob"}],
             "httproute": {"manifests": "\#(dir)/routes", "services": {"origin": "127.0.0.1"},
                           "listeners": [{"name": "web", "port": 0}]}}
            """#.write(toFile: "\(dir)/alice.json", atomically: true, encoding: .utf8)
        let alice = try UgateNode(
            ["run", "--config", "\(dir)/alice.json", "--base-port", "0", "--identity-dir", "\(dir)/alice"], stderr: "\(dir)/alice.log")
        defer { alice.stop() }
        let web = alice.address("web")
        XCTAssertFalse(web.isEmpty, alice.banner)
        let before = try Self.unixSockets(of: alice.process.processIdentifier)
        let payload = (0..<100_000).map { UInt8(truncatingIfNeeded: $0 &* 13 &+ $0 >> 9) }
        try Data(payload).write(to: URL(fileURLWithPath: "\(dir)/payload"))

        for h2 in [false, true] {
            // path, request framing (nil: no body), what comes back
            let requests: [(path: String, framing: String?)] =
                h2
                ? [("/cl/h2-get", nil), ("/chunked/h2-post", "length"), ("/cl/h2-post", "length"), ("/chunked/h2-get", nil)]
                : [("/cl/get", nil), ("/chunked/get", nil), ("/cl/post-cl", "length"), ("/chunked/post-cl", "length"),
                   ("/cl/post-chunked", "chunked"), ("/chunked/post-chunked", "chunked"), ("/cl/get-again", nil),
                   ("/chunked/post-cl-again", "length")]
            var args = ["-sS", "--max-time", "30"] + (h2 ? ["--http2-prior-knowledge"] : [])
            for (index, request) in requests.enumerated() {
                if index > 0 { args.append("--next") }
                if h2 { args.append("--http2-prior-knowledge") }
                args += ["-H", "Host: shop.example", "-o", "\(dir)/body\(index)", "-D", "\(dir)/head\(index)"]
                if let framing = request.framing {
                    args += ["--data-binary", "@\(dir)/payload", "-H", "Expect:"]
                    if framing == "chunked" { args += ["-H", "Transfer-Encoding: chunked"] }
                }
                args.append("http://\(web)\(request.path)")
            }
            let run = try runProcess(try tool("curl"), args, timeout: 90)
            XCTAssertEqual(run.status, 0, run.err)
            var peers = Set<String>()
            for (index, request) in requests.enumerated() {
                let head = (try? String(contentsOfFile: "\(dir)/head\(index)", encoding: .utf8)) ?? ""
                let body = (try? Data(contentsOf: URL(fileURLWithPath: "\(dir)/body\(index)"))) ?? Data()
                XCTAssertTrue(head.hasPrefix(h2 ? "HTTP/2 200" : "HTTP/1.1 200"), "\(request.path): \(head)")
                if request.framing == nil {
                    XCTAssertEqual(String(decoding: body, as: UTF8.self), "hello \(request.path)", request.path)
                } else {
                    XCTAssertEqual(body.count, payload.count, request.path)
                    XCTAssertTrue(body == Data(payload), "\(request.path): the body came back altered")
                    XCTAssertTrue(head.lowercased().contains("x-request-framing: \(request.framing!)"), "\(request.path): \(head)")
                }
                if !h2 {
                    let chunked = head.lowercased().contains("transfer-encoding: chunked")
                    XCTAssertEqual(chunked, request.path.hasPrefix("/chunked"), "\(request.path): \(head)")
                }
                let peer = head.split(separator: "\r\n").first { $0.lowercased().hasPrefix("x-peer:") }
                peers.insert(peer.map { String($0.dropFirst(7)).trimmingCharacters(in: .whitespaces) } ?? "none")
            }
            XCTAssertEqual(peers.count, 1, "one backend connection (one mesh stream) per curl run: \(peers)")
            XCTAssertEqual(try Self.unixSockets(of: alice.process.processIdentifier), before, "no socketpair in alice")
        }
        let log = (try? String(contentsOfFile: "\(dir)/alice.log", encoding: .utf8)) ?? ""
        XCTAssertTrue(log.contains("path=/chunked/post-chunked") && log.contains("status=200"), log)
    }
}
