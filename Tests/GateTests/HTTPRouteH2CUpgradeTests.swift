import Foundation
import Glibc
import XCTest

@testable import Gate

/// `Upgrade: h2c` beyond the first request (RFC 9113 §3.1 / RFC 7540 §3.2: a client asks on
/// its first request): on a later request of a kept-alive HTTP/1.1 connection it is not
/// honoured — the request is served over HTTP/1.1 with `Connection: close`, the upgrade fields
/// never reach the backend, and the connection closes after the response (NIO's parser stops
/// after a request asking to switch; before this, the connection stalled and the next request
/// was never answered). A first request with a body asking for it is served the same way, with
/// its body. Raw sockets (Python), so every byte of the answers is seen.
final class HTTPRouteH2CUpgradeTests: XCTestCase {
    /// Sends each request (separated by `|` in argv[2]) on one connection, reads each response
    /// (status line, Content-Length body) and prints per response `<status> <connection field>
    /// <backend's JSON: body length, upgrade/http2-settings fields seen>`, then whether the
    /// server closed the connection (`closed`) or kept it (`open`, after 5 s of silence).
    static let client = """
        import json, socket, sys
        port, requests = int(sys.argv[1]), sys.argv[2].split("|")
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        buf, out = b"", []
        \(HTTPRouteDrainTests.readResponse)
        for request in requests:
            s.sendall(request.replace("\\\\r\\\\n", "\\r\\n").encode())
            status, fields, body = read_response(s)
            seen = json.loads(body)
            h = seen["headers"]
            out.append("%s %s %s body=%d upgrade=%s settings=%s" % (status.split(" ")[0], status.split(" ")[1],
                fields.get("connection", "-"), seen["body"], h.get("upgrade", "-"), h.get("http2-settings", "-")))
        s.settimeout(5)
        try:
            out.append("closed" if not s.recv(1) else "data")
        except socket.timeout:
            out.append("open")
        print(" ; ".join(out))
        """

    func testUpgradeOnlyOnTheFirstRequestWithoutBody() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("h2cup-\(getpid())-\(UUID())").path
        try FileManager.default.createDirectory(atPath: "\(dir)/routes", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let backend = try PythonBackend("web")
        defer { backend.stop() }
        let manifests = try HTTPRouteLoader(services: ["web": backend.address]).load(
            yaml: "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: web}\nspec:\n  rules: [{backendRefs: [{name: web, port: 80}]}]\n",
            file: "web.yaml")
        let loops = try GateLoopGroup(count: 1)
        defer { loops.shutdown() }
        let capture = LogCapture()
        let gateway = try HTTPGateway(table: RouteTable(routes: manifests.routes), loops: loops, accessLog: capture.logger("ugate.httproute.access"))
        defer { gateway.stop() }

        let upgrade = "Connection: Upgrade, HTTP2-Settings\\r\\nUpgrade: h2c\\r\\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\\r\\n"
        func run(_ requests: [String]) throws -> String {
            let r = try runProcess(try tool("python3"), ["-c", Self.client, "\(gateway.address.port)", requests.joined(separator: "|")])
            XCTAssertEqual(r.status, 0, r.out + r.err)
            return r.out.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        // Plain requests keep the connection; a later one asking for h2c is answered over
        // HTTP/1.1 with `Connection: close`, the upgrade fields not forwarded, and the
        // connection closes.
        XCTAssertEqual(
            try run(["GET /one HTTP/1.1\\r\\nHost: up.example\\r\\n\\r\\n", "GET /two HTTP/1.1\\r\\nHost: up.example\\r\\n\\r\\n"]),
            ["HTTP/1.1 200 - body=0 upgrade=- settings=-", "HTTP/1.1 200 - body=0 upgrade=- settings=-", "open"].joined(separator: " ; "))
        XCTAssertEqual(
            try run([
                "GET /one HTTP/1.1\\r\\nHost: up.example\\r\\n\\r\\n",
                "GET /two HTTP/1.1\\r\\nHost: up.example\\r\\n\(upgrade)\\r\\n",
            ]),
            ["HTTP/1.1 200 - body=0 upgrade=- settings=-", "HTTP/1.1 200 close body=0 upgrade=- settings=-", "closed"].joined(separator: " ; "))
        // A first request with a body asking for h2c: served over HTTP/1.1 with its body, then closed.
        XCTAssertEqual(
            try run(["POST /body HTTP/1.1\\r\\nHost: up.example\\r\\nContent-Length: 5\\r\\n\(upgrade)\\r\\nhello"]),
            ["HTTP/1.1 200 close body=5 upgrade=- settings=-", "closed"].joined(separator: " ; "))
        // Another protocol (no upgrader for it) on the first request: the same.
        XCTAssertEqual(
            try run(["GET /ws HTTP/1.1\\r\\nHost: up.example\\r\\nConnection: Upgrade\\r\\nUpgrade: websocket\\r\\n\\r\\n"]),
            ["HTTP/1.1 200 close body=0 upgrade=- settings=-", "closed"].joined(separator: " ; "))
        // The control: the same upgrade on a first request without body switches (101).
        let r = try runProcess(
            try tool("python3"),
            [
                "-c",
                "import socket,sys\ns=socket.create_connection(('127.0.0.1',int(sys.argv[1])),timeout=30)\ns.sendall(sys.argv[2].replace('\\\\r\\\\n','\\r\\n').encode())\nprint(s.recv(4096).split(b'\\r\\n')[0].decode())",
                "\(gateway.address.port)", "GET /first HTTP/1.1\\r\\nHost: up.example\\r\\n\(upgrade)\\r\\n",
            ])
        XCTAssertEqual(r.out.trimmingCharacters(in: .whitespacesAndNewlines), "HTTP/1.1 101 Switching Protocols", r.err)
        // Every HTTP/1.1 request above was logged as such.
        XCTAssertNotNil(capture.waitForLine(containing: ["path=/body", "proto=http/1.1", "status=200"]), capture.lines.joined(separator: "\n"))
        XCTAssertNotNil(capture.waitForLine(containing: ["path=/two", "proto=http/1.1", "status=200"]))
    }
}
