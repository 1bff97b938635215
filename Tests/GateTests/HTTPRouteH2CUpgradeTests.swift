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

    /// One route sending everything to `backend`.
    static func table(_ backend: PythonBackend) throws -> RouteTable {
        let manifests = try HTTPRouteLoader(services: ["web": backend.address]).load(
            yaml: "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: web}\nspec:\n  rules: [{backendRefs: [{name: web, port: 80}]}]\n",
            file: "web.yaml")
        return RouteTable(routes: manifests.routes)
    }

    func testUpgradeOnlyOnTheFirstRequestWithoutBody() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("h2cup-\(getpid())-\(UUID())").path
        try FileManager.default.createDirectory(atPath: "\(dir)/routes", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let backend = try PythonBackend("web")
        defer { backend.stop() }
        let loops = try GateLoopGroup(count: 1)
        defer { loops.shutdown() }
        let capture = LogCapture()
        let gateway = try HTTPGateway(table: try Self.table(backend), loops: loops, accessLog: capture.logger("ugate.httproute.access"))
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

    /// `HTTP2-Settings` applied (RFC 7540 §3.2.1): the upgrade asks for
    /// `SETTINGS_INITIAL_WINDOW_SIZE` 1000 and the client's own SETTINGS frame after the
    /// preface is empty, so only the field can set it. Frames read with hyperframe: exactly
    /// 1000 bytes of the 30,000-byte response on stream 1 arrive before the client's PING is
    /// answered (the default window would let all of it through), exactly one SETTINGS ACK
    /// (the field's settings are acknowledged implicitly), and the rest after a WINDOW_UPDATE.
    static let settingsClient = """
        import socket, struct, sys
        from hyperframe.frame import Frame, DataFrame, SettingsFrame, PingFrame, WindowUpdateFrame
        s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=30)
        s.sendall(("GET /big HTTP/1.1\\r\\nHost: up.example\\r\\nConnection: Upgrade, HTTP2-Settings\\r\\n"
                   "Upgrade: h2c\\r\\nHTTP2-Settings: " + sys.argv[2] + "\\r\\n\\r\\n").encode())
        buf = b""
        while b"\\r\\n\\r\\n" not in buf:
            buf += s.recv(65536)
        head, _, buf = buf.partition(b"\\r\\n\\r\\n")
        status = head.split(b" ")[1].decode()
        s.sendall(b"PRI * HTTP/2.0\\r\\n\\r\\nSM\\r\\n\\r\\n" + SettingsFrame(0).serialize())
        def frames():
            global buf
            while True:
                while len(buf) >= 9:
                    frame, length = Frame.parse_frame_header(memoryview(buf[:9]))
                    if len(buf) < 9 + length:
                        break
                    frame.parse_body(memoryview(buf[9:9 + length]))
                    buf = buf[9 + length:]
                    yield frame
                data = s.recv(65536)
                if not data:
                    raise SystemExit("closed")
                buf += data
        acks, data, ended, pinged = 0, 0, False, False
        for frame in frames():
            if isinstance(frame, SettingsFrame) and "ACK" in frame.flags:
                acks += 1
            elif isinstance(frame, DataFrame) and frame.stream_id == 1:
                data += len(frame.data)
                ended = ended or "END_STREAM" in frame.flags
            elif isinstance(frame, PingFrame) and "ACK" in frame.flags:
                break
            if (data >= 1000 or ended) and not pinged:
                s.sendall(PingFrame(0, opaque_data=b"12345678").serialize())
                pinged = True
        first = data
        s.sendall(WindowUpdateFrame(1, window_increment=1 << 20).serialize() + WindowUpdateFrame(0, window_increment=1 << 20).serialize())
        for frame in frames():
            if isinstance(frame, DataFrame) and frame.stream_id == 1:
                data += len(frame.data)
                if "END_STREAM" in frame.flags:
                    break
        print(status, "acks=%d" % acks, "first=%d" % first, "total=%d" % data)
        """

    func testHTTP2SettingsAppliedAndMalformedOnesRefused() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("h2cset-\(getpid())-\(UUID())").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let backend = try PythonBackend(dir, script: HTTPRouteDrainTests.holdBackend)
        defer { backend.stop() }
        let loops = try GateLoopGroup(count: 1)
        defer { loops.shutdown() }
        let gateway = try HTTPGateway(table: try Self.table(backend), loops: loops)
        defer { gateway.stop() }
        let port = "\(gateway.address.port)"

        // SETTINGS_INITIAL_WINDOW_SIZE (0x4) = 1000.
        // The python3 on PATH: scripts/deps pip-installs h2 (and its hyperframe) for it.
        let r = try runProcess("/usr/bin/env", ["python3", "-c", Self.settingsClient, port, "AAQAAAPo"])
        XCTAssertEqual(r.out.trimmingCharacters(in: .whitespacesAndNewlines), "101 acks=1 first=1000 total=30000", r.err)

        // Malformed: answered 400 by the gateway (the body names the problem), connection closed.
        let statusLine = "import socket,sys\ns=socket.create_connection(('127.0.0.1',int(sys.argv[1])),timeout=30)\ns.sendall(sys.argv[2].replace('\\\\r\\\\n','\\r\\n').encode())\nd=b''\nwhile True:\n  m=s.recv(65536)\n  if not m: break\n  d+=m\nprint(d.split(b'\\r\\n')[0].decode(), d.split(b'\\r\\n\\r\\n',1)[1].decode())"
        let upgrade = "GET /bad HTTP/1.1\\r\\nHost: up.example\\r\\nConnection: Upgrade, HTTP2-Settings\\r\\nUpgrade: h2c\\r\\n"
        for (settings, message) in [
            ("HTTP2-Settings: AA!AAAPo\\r\\n", "not base64url"),
            ("HTTP2-Settings: AAQAAAPoAA\\r\\n", "not whole 6-byte settings"),
            ("HTTP2-Settings: AAIAAAAC\\r\\n", "SETTINGS_ENABLE_PUSH 2"),
            ("HTTP2-Settings: AAUAAAAB\\r\\n", "SETTINGS_MAX_FRAME_SIZE 1"),
            ("HTTP2-Settings: AAQAAAPo\\r\\nHTTP2-Settings: AAQAAAPo\\r\\n", "repeated"),
        ] {
            let r = try runProcess(try tool("python3"), ["-c", statusLine, port, upgrade + settings + "\\r\\n"])
            XCTAssertTrue(r.out.hasPrefix("HTTP/1.1 400 "), "\(settings): \(r.out) \(r.err)")
            XCTAssertTrue(r.out.contains(message), "\(settings): \(r.out)")
        }

        // Over TLS `Upgrade: h2c` is ignored (RFC 7540 §3.2), a malformed field with it: served
        // over HTTP/1.1 (and closed, as every request asking to switch that is not switched).
        let cert = try makeCertificate("up.example", file: "up", in: dir)
        let tls = try HTTPRouteTLS(HTTPRouteTLSConfig(certificates: ["up.example": CertificateFiles(cert: cert.cert, key: cert.key)]))
        let secure = try HTTPGateway(table: try Self.table(backend), loops: loops, tls: tls)
        defer { secure.stop() }
        let overTLS = """
            import socket, ssl, sys
            context = ssl.create_default_context(cafile=sys.argv[2])
            s = context.wrap_socket(socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=30), server_hostname="up.example")
            s.sendall(sys.argv[3].replace("\\\\r\\\\n", "\\r\\n").encode())
            d = b""
            while True:
                m = s.recv(65536)
                if not m:
                    break
                d += m
            print(d.split(b"\\r\\n")[0].decode(), len(d.split(b"\\r\\n\\r\\n", 1)[1]))
            """
        let plain = try runProcess(
            try tool("python3"), ["-c", overTLS, "\(secure.address.port)", cert.cert, upgrade + "HTTP2-Settings: AA!AAAPo\\r\\n\\r\\n"])
        XCTAssertEqual(plain.out.trimmingCharacters(in: .whitespacesAndNewlines), "HTTP/1.1 200 OK 30000", plain.err)
    }
}
