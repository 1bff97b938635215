import Foundation
import Glibc
import XCTest

@testable import Gate

/// HTTPRoute backends on a mesh peer ride the peer's HTTP/2 stream as their channel: no
/// socketpair in the gateway's process, keep-alive through the stream, bodies both ways.
final class HTTPRouteMeshBackendTests: XCTestCase {
    /// An origin next to bob that echoes the request body (Content-Length or chunked, the
    /// framing it saw in `X-Request-Framing`, the trailer fields after a chunked body in
    /// `X-Trailers`, `;`-separated) — as a chunked response under `/chunked`, with
    /// Content-Length elsewhere — and names the TCP port of the connection it came on (`X-Peer`).
    static let echoScript = """
        import http.server, sys
        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            wbufsize = 65536
            def answer(self):
                trailers = []
                if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                    body, framing = b"", "chunked"
                    while True:
                        size = int(self.rfile.readline().split(b";")[0], 16)
                        if size == 0:
                            while True:
                                line = self.rfile.readline()
                                if line in (b"\\r\\n", b"\\n", b""):
                                    break
                                trailers.append(line.decode().strip())
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
                self.send_header("X-Trailers", ";".join(trailers))
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
    /// `routes` put behind `mesh:bob`. `checkEchoRequests` over HTTP/1.1 (one kept-alive curl
    /// connection, eight requests) and h2c; the origin sees one TCP connection for the HTTP/1.1
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

        for h2 in [false, true] {
            let peers = try checkEchoRequests("http://\(web)", host: "shop.example", h2: h2, dir: dir, payload: payload, label: "mesh")
            if !h2 { XCTAssertEqual(peers.count, 1, "one backend connection (one mesh stream) for the curl run: \(peers)") }
            XCTAssertEqual(try Self.unixSockets(of: alice.process.processIdentifier), before, "no socketpair in alice")
        }
        let log = (try? String(contentsOfFile: "\(dir)/alice.log", encoding: .utf8)) ?? ""
        XCTAssertTrue(log.contains("path=/chunked/post-chunked") && log.contains("status=200"), log)
    }
}

/// Requests to the echo origin (`HTTPRouteMeshBackendTests.echoScript`) through a gateway at
/// `base`: GETs and POSTs of `payload` with Content-Length and chunked request bodies, answered
/// with Content-Length (`/cl/…`) and chunked (`/chunked/…`) bodies; every body must come back
/// whole and the origin must have seen the client's framing. HTTP/1.1: one curl run, one
/// kept-alive connection (`--next`). h2c: one curl run per request (curl 7.88 cannot reuse a
/// prior-knowledge connection: curl#10634, fixed in 8.0) plus three GETs as concurrent streams
/// of one nghttp connection. Returns the origin-side ports (`X-Peer`) the HTTP/1.1 run saw.
func checkEchoRequests(_ base: String, host: String?, h2: Bool, dir: String, payload: [UInt8], label: String) throws -> Set<String> {
    let requests: [(path: String, framing: String?)] = [
        ("/cl/get", nil), ("/chunked/get", nil), ("/cl/post", "length"), ("/chunked/post", "length"),
        ("/cl/post-chunked", "chunked"), ("/chunked/post-chunked", "chunked"), ("/cl/again", nil), ("/chunked/again", "length"),
    ].filter { !h2 || $0.framing != "chunked" }
    try Data(payload).write(to: URL(fileURLWithPath: "\(dir)/payload"))
    var runs: [[String]] = []
    for (index, request) in requests.enumerated() {
        var args = (host.map { ["-H", "Host: \($0)"] } ?? []) + ["-o", "\(dir)/body\(index)", "-D", "\(dir)/head\(index)"]
        if let framing = request.framing {
            args += ["--data-binary", "@\(dir)/payload", "-H", "Expect:"] + (framing == "chunked" ? ["-H", "Transfer-Encoding: chunked"] : [])
        }
        args.append(base + request.path)
        if h2 {
            runs.append(["--http2-prior-knowledge"] + args)
        } else if runs.isEmpty {
            runs.append(args)
        } else {
            runs[0] += ["--next"] + args
        }
    }
    for args in runs {
        let run = try runProcess(try tool("curl"), ["-sS", "--max-time", "30"] + args, timeout: 90)
        XCTAssertEqual(run.status, 0, "\(label) h2 \(h2): \(run.err)")
    }
    var peers = Set<String>()
    for (index, request) in requests.enumerated() {
        let head = (try? String(contentsOfFile: "\(dir)/head\(index)", encoding: .utf8)) ?? ""
        let body = (try? Data(contentsOf: URL(fileURLWithPath: "\(dir)/body\(index)"))) ?? Data()
        XCTAssertTrue(head.hasPrefix(h2 ? "HTTP/2 200" : "HTTP/1.1 200"), "\(label) \(request.path): \(head)")
        let expected = request.framing == nil ? Data("hello \(request.path)".utf8) : Data(payload)
        XCTAssertTrue(body == expected, "\(label) h2 \(h2) \(request.path): \(body.count) bytes, not the expected \(expected.count)")
        if let framing = request.framing {
            XCTAssertTrue(head.lowercased().contains("x-request-framing: \(framing)"), "\(label) \(request.path): \(head)")
        }
        if !h2 {
            let chunked = head.lowercased().contains("transfer-encoding: chunked")
            XCTAssertEqual(chunked, request.path.hasPrefix("/chunked"), "\(label) \(request.path): \(head)")
        }
        let peer = head.split(separator: "\r\n").first { $0.lowercased().hasPrefix("x-peer:") }
        peers.insert(peer.map { String($0.dropFirst(7)).trimmingCharacters(in: .whitespaces) } ?? "none")
    }
    if h2 {
        let paths = ["/cl/n1", "/chunked/n2", "/chunked/n3"]
        let run = try runProcess(
            try tool("nghttp"), (host.map { ["-H", ":authority: \($0)"] } ?? []) + paths.map { base + $0 }, timeout: 60)
        XCTAssertEqual(run.status, 0, "\(label) nghttp: \(run.err)")
        for path in paths { XCTAssertTrue(run.out.contains("hello \(path)"), "\(label) nghttp: \(run.out)") }
    }
    return peers
}
