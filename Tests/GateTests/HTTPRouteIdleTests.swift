import Foundation
import Glibc
import XCTest

@testable import Gate

/// The HTTP/2 idle timeout (`http2IdleTimeout`), next to the HTTP/1.1 `keepAliveTimeout` in the
/// `httproute` section: a Python `h2` client over h2c and over TLS (ALPN h2) sees GOAWAY
/// (NO_ERROR, last stream 1 or 3) and the close once no stream has been open for the idle
/// time; a stream that stays open longer than the idle time (a slow backend) is not cut.
final class HTTPRouteIdleTests: XCTestCase {
    /// Sends GET `path` (twice when `path` is `/slow`: one slow, then one quick), reads the
    /// responses, then reads until the server closes: prints the statuses, the GOAWAY's error
    /// code and last stream ID, and `closed` (or `timeout` after 30 s).
    static let client = """
        import socket, ssl, sys
        import h2.config, h2.connection, h2.events
        port, mode, path = int(sys.argv[1]), sys.argv[2], sys.argv[3]
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        if mode == "tls":
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            context.set_alpn_protocols(["h2"])
            sock = context.wrap_socket(sock, server_hostname="idle.example")
            assert sock.selected_alpn_protocol() == "h2", sock.selected_alpn_protocol()
        conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True))
        conn.initiate_connection()
        paths = [path] + (["/quick"] if path == "/slow" else [])
        for i, p in enumerate(paths):
            conn.send_headers(1 + 2 * i, [(":method", "GET"), (":path", p), (":scheme", "https" if mode == "tls" else "http"),
                (":authority", "idle.example")], end_stream=True)
        sock.sendall(conn.data_to_send())
        statuses, ended, goaway, result = {}, set(), None, "timeout"
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    result = "closed"
                    break
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.ResponseReceived):
                        statuses[event.stream_id] = dict(event.headers)[b":status"].decode()
                    elif isinstance(event, h2.events.StreamEnded):
                        ended.add(event.stream_id)
                    elif isinstance(event, h2.events.DataReceived):
                        conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                    elif isinstance(event, h2.events.ConnectionTerminated):
                        goaway = (int(event.error_code), event.last_stream_id)
                sock.sendall(conn.data_to_send())
        except socket.timeout:
            pass
        except (ConnectionResetError, BrokenPipeError, ssl.SSLError):
            result = "closed"
        print(" ".join(statuses[s] + ("" if s in ended else "-unfinished") for s in sorted(statuses)), goaway, result)
        """

    func testHTTP2ConnectionsIdleOutWithGoaway() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("h2idle-\(getpid())-\(UUID())").path
        for sub in ["routes", "certs"] { try FileManager.default.createDirectory(atPath: "\(dir)/\(sub)", withIntermediateDirectories: true) }
        defer { try? FileManager.default.removeItem(atPath: dir) }
        _ = try makeCertificate("idle.example", file: "idle.example", in: "\(dir)/certs")
        let backend = try PythonBackend("idle")
        defer { backend.stop() }
        try writeManifest(
            """
            apiVersion: gateway.networking.k8s.io/v1
            kind: HTTPRoute
            metadata: {name: idle}
            spec:
              rules: [{backendRefs: [{name: idle, port: 80}]}]

            """, "routes.yaml", in: "\(dir)/routes")
        let loops = try GateLoopGroup(count: 1)
        defer { loops.shutdown() }
        let json = """
            {"manifests": "\(dir)/routes", "services": {"idle": "\(backend.address)"}, "http2IdleTimeout": 1, "keepAliveTimeout": 1,
             "listeners": [{"name": "h2c", "port": 0}, {"name": "tls", "port": 0, "tls": {"certificateDir": "\(dir)/certs"}}]}
            """
        let config = try JSONDecoder().decode(HTTPRouteConfig.self, from: Data(json.utf8))
        XCTAssertEqual(config.http2IdleTimeout, 1)
        XCTAssertEqual(config.keepAliveTimeout, 1)
        let service = try HTTPRouteService(config: config, bind: "127.0.0.1", loops: loops)
        defer { service.stop() }
        // The PATH's python3: the one scripts/deps pip-installs `h2` into.
        func python(_ args: [String]) throws -> (status: Int32, out: String, err: String) {
            try runProcess("/usr/bin/env", ["python3"] + args, timeout: 60)
        }
        for (listener, mode) in [(0, "h2c"), (1, "tls")] {
            let port = "\(service.bound[listener].address.port)"
            let quick = try python(["-c", Self.client, port, mode, "/quick"])
            XCTAssertEqual(quick.out.trimmingCharacters(in: .whitespacesAndNewlines), "200 (0, 1) closed", mode + quick.err)
            // The slow stream (3 s) outlives the 1 s idle time: both streams complete, then GOAWAY.
            let slow = try python(["-c", Self.client, port, mode, "/slow"])
            XCTAssertEqual(slow.out.trimmingCharacters(in: .whitespacesAndNewlines), "200 200 (0, 3) closed", mode + slow.err)
        }
        // HTTP/1.1 on the plain listener: the configured keepAliveTimeout closes an idle connection.
        let http1 = """
            import socket, sys
            s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=30)
            s.sendall(b"GET /one HTTP/1.1\\r\\nHost: idle.example\\r\\n\\r\\n")
            data = b""
            try:
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        print("closed", data.split(b" ")[1].decode())
                        break
                    data += chunk
            except socket.timeout:
                print("timeout")
            """
        let h1 = try python(["-c", http1, "\(service.bound[0].address.port)"])
        XCTAssertEqual(h1.out.trimmingCharacters(in: .whitespacesAndNewlines), "closed 200", h1.err)
    }
}
