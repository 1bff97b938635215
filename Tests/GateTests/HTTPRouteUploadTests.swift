import Foundation
import Glibc
import XCTest

@testable import Gate

/// Upload backpressure: an HTTP/2 stream's flow-control credit goes back to the client only as
/// its body is written to the backend (HTTP/1.1: the client is not read while 256 KiB wait),
/// so a backend that reads slowly slows the client down instead of the body piling up in the
/// gateway. `ugate run` (its own process, so its memory is measured alone) proxies a 64 MiB
/// upload (curl, h2c and HTTP/1.1) to a backend that reads 64 KiB every 2 ms; the body arrives
/// intact (SHA-256) and the node's peak resident memory grows by far less than the body (it
/// grew by the whole body when credit was returned on receipt).
final class HTTPRouteUploadTests: XCTestCase {
    /// Reads the body (Content-Length) 64 KiB at a time with a pause after each read; answers
    /// `<length> <sha256>`.
    static let slowReader = """
        import hashlib, http.server, sys, time
        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            def do_POST(self):
                left = int(self.headers["Content-Length"])
                digest, total = hashlib.sha256(), 0
                while left > 0:
                    chunk = self.rfile.read(min(65536, left))
                    if not chunk:
                        break
                    digest.update(chunk)
                    total += len(chunk)
                    left -= len(chunk)
                    time.sleep(0.002)
                out = ("%d %s" % (total, digest.hexdigest())).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)
            def log_message(self, *args):
                pass
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        print(server.server_address[1], flush=True)
        server.serve_forever()
        """

    /// `VmRSS` or `VmHWM` of a process, in KiB.
    static func memory(_ pid: Int32, _ field: String) throws -> Int {
        let status = try String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)
        let line = status.split(separator: "\n").first { $0.hasPrefix(field + ":") }
        guard let value = line?.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first.flatMap({ Int($0) }) else {
            throw GateError(.config, "no \(field) in /proc/\(pid)/status")
        }
        return value
    }

    func testSlowBackendBoundsUploadMemory() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("upload-\(getpid())-\(UUID())").path
        try FileManager.default.createDirectory(atPath: "\(dir)/routes", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let backend = try PythonBackend("slow", script: Self.slowReader)
        defer { backend.stop() }
        try writeManifest(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: up}\nspec:\n  rules: [{backendRefs: [{name: slow, port: 80}]}]\n",
            "up.yaml", in: "\(dir)/routes")
        let node = try httpRouteNode(dir: dir, service: "slow", at: backend.address)
        defer { node.stop() }
        let address = node.address("web")
        XCTAssertFalse(address.isEmpty, node.banner)

        func upload(_ file: String, http2: Bool = true) throws -> String {
            let r = try runProcess(
                try tool("curl"),
                ["-sS", "--max-time", "240", http2 ? "--http2-prior-knowledge" : "--http1.1", "--data-binary", "@\(file)", "http://\(address)/upload"],
                timeout: 300)
            XCTAssertEqual(r.status, 0, r.err)
            return r.out.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        func sha256(_ file: String) throws -> String {
            String(try runProcess(try tool("sha256sum"), [file]).out.prefix(64))
        }
        func makeFile(_ name: String, mebibytes: Int) throws -> String {
            let path = "\(dir)/\(name)"
            XCTAssertEqual(try runProcess(try tool("sh"), ["-c", "head -c \(mebibytes << 20) /dev/urandom > \(path)"]).status, 0)
            return path
        }

        // Warm up (pools, buffers, code paths), then take the baseline.
        let small = try makeFile("small", mebibytes: 1)
        XCTAssertEqual(try upload(small), "\(1 << 20) \(try sha256(small))")
        XCTAssertEqual(try upload(small, http2: false), "\(1 << 20) \(try sha256(small))")
        let pid = node.process.processIdentifier
        let big = try makeFile("big", mebibytes: 64)
        let hash = try sha256(big)
        for http2 in [true, false] {
            let baseline = try Self.memory(pid, "VmRSS")
            // Reset the peak (VmHWM) to the current RSS (proc(5), clear_refs "5").
            try "5".write(toFile: "/proc/\(pid)/clear_refs", atomically: false, encoding: .utf8)
            XCTAssertEqual(try upload(big, http2: http2), "\(64 << 20) \(hash)")
            let peak = try Self.memory(pid, "VmHWM")
            let growth = peak - baseline
            let proto = http2 ? "h2c" : "HTTP/1.1"
            print("\(proto) upload of 64 MiB through a slow backend: node RSS \(baseline) KiB before, peak \(peak) KiB, growth \(growth) KiB")
            // Without backpressure the whole body (65,536 KiB) waited in the node.
            XCTAssertLessThan(growth, 16 * 1024, "\(proto): the node buffered the upload: peak \(peak) KiB vs \(baseline) KiB before")
        }
    }
}
