import Foundation
import XCTest

@testable import Gate

/// The gateway's own HTTP/2 codec (`HTTP2ServerCodec` in `HTTP2RouteHandler`) against foreign
/// peers on real sockets, over h2c and over TLS (ALPN h2): the Python `h2` library (which
/// enforces flow control on what it receives and raises on any protocol violation by the
/// server) for raw frame sequences — a 1,000-byte client window with a 600 KB response (the backend paused while more than 256 KiB wait), a 2 MB
/// response needing many WINDOW_UPDATEs, a 1 MB upload, 60 concurrent streams, PING,
/// SETTINGS changed mid-connection (window and frame size), GOAWAY both ways (the client's:
/// no new stream; a protocol violation: GOAWAY with PROTOCOL_ERROR and a debug message) —,
/// `nghttp` with tiny windows, `h2load` with many streams, and curl with `--http2` (TLS) and
/// `--http2-prior-knowledge`.
final class HTTPRouteH2InteropTests: XCTestCase {
    /// argv: port, mode (h2c|tls), scenario. Prints one line of results.
    static let client = """
        import hashlib, os, socket, ssl, sys, time
        import h2.config, h2.connection, h2.events, h2.settings
        from hyperframe.frame import Frame, GoAwayFrame, HeadersFrame, RstStreamFrame, SettingsFrame, WindowUpdateFrame
        port, mode, scenario = int(sys.argv[1]), sys.argv[2], sys.argv[3]
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        if mode == "tls":
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            context.set_alpn_protocols(["h2"])
            sock = context.wrap_socket(sock, server_hostname="interop.example")
            assert sock.selected_alpn_protocol() == "h2"
        scheme = "https" if mode == "tls" else "http"
        conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        def headers(path, method="GET"):
            return [(":method", method), (":path", path), (":scheme", scheme), (":authority", "interop.example")]
        def flush():
            data = conn.data_to_send()
            if data:
                sock.sendall(data)
        streams = {}
        def pump(until):
            # Reads and handles events until until() is true; acknowledges received DATA.
            events_seen = []
            while not until():
                data = sock.recv(65536)
                if not data:
                    raise SystemExit("connection closed early")
                for event in conn.receive_data(data):
                    events_seen.append(event)
                    if isinstance(event, h2.events.ResponseReceived):
                        streams.setdefault(event.stream_id, {"body": b"", "frames": []})["status"] = dict(event.headers)[":status"]
                    elif isinstance(event, h2.events.DataReceived):
                        s = streams.setdefault(event.stream_id, {"body": b"", "frames": []})
                        s["body"] += event.data
                        s["frames"].append(event.flow_controlled_length)
                        conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                    elif isinstance(event, h2.events.StreamEnded):
                        streams.setdefault(event.stream_id, {"body": b"", "frames": []})["ended"] = True
                    elif isinstance(event, h2.events.StreamReset):
                        streams.setdefault(event.stream_id, {"body": b"", "frames": []})["reset"] = int(event.error_code)
                    elif isinstance(event, h2.events.PingAckReceived):
                        streams["ping"] = event.ping_data
                flush()
            return events_seen
        def ended(*ids):
            return lambda: all(streams.get(i, {}).get("ended") or "reset" in streams.get(i, {}) for i in ids)
        if scenario == "tinywindow":
            conn.initiate_connection()
            conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1000})
            conn.send_headers(1, headers("/big/600000"), end_stream=True)
            flush()
            pump(ended(1))
            s = streams[1]
            print(s["status"], len(s["body"]), max(s["frames"]) <= 1000, len(s["frames"]) >= 600)
        elif scenario == "large":
            conn.initiate_connection()
            conn.send_headers(1, headers("/big/2000000"), end_stream=True)
            flush()
            pump(ended(1))
            print(streams[1]["status"], len(streams[1]["body"]), streams[1]["body"] == b"x" * 2000000)
        elif scenario == "upload":
            conn.initiate_connection()
            body = os.urandom(1000000)
            conn.send_headers(1, headers("/up", "POST"))
            flush()
            sent = 0
            while sent < len(body):
                window = min(conn.local_flow_control_window(1), conn.max_outbound_frame_size)
                if window == 0:
                    # Wait for the server's WINDOW_UPDATE (credited as the backend reads).
                    for event in conn.receive_data(sock.recv(65536)):
                        pass
                    flush()
                    continue
                chunk = body[sent:sent + window]
                conn.send_data(1, chunk, end_stream=sent + len(chunk) == len(body))
                sent += len(chunk)
                flush()
            pump(ended(1))
            print(streams[1]["status"], hashlib.sha256(body).hexdigest() in streams[1]["body"].decode())
        elif scenario == "many":
            conn.initiate_connection()
            ids = [1 + 2 * i for i in range(60)]
            for i in ids:
                conn.send_headers(i, headers("/many/%d" % i), end_stream=True)
            flush()
            pump(ended(*ids))
            ok = all(streams[i]["status"] == "200" and ('"/many/%d"' % i) in streams[i]["body"].decode() for i in ids)
            print(len(ids), ok)
        elif scenario == "ping":
            conn.initiate_connection()
            conn.ping(b"12345678")
            flush()
            pump(lambda: "ping" in streams)
            print(streams["ping"])
        elif scenario == "settings":
            conn.initiate_connection()
            conn.send_headers(1, headers("/first"), end_stream=True)
            flush()
            pump(ended(1))
            # Mid-connection: a 1,000-byte stream window and 20,000-byte frames; both acknowledged.
            conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1000, h2.settings.SettingCodes.MAX_FRAME_SIZE: 20000})
            flush()
            conn.send_headers(3, headers("/big/50000"), end_stream=True)
            flush()
            pump(ended(3))
            print(streams[1]["status"], streams[3]["status"], len(streams[3]["body"]), max(streams[3]["frames"]) <= 1000)
        elif scenario == "goaway":
            # The client's GOAWAY: the server opens nothing new for it; stream 3 sent after it is refused.
            conn.initiate_connection()
            conn.send_headers(1, headers("/before"), end_stream=True)
            flush()
            pump(ended(1))
            sock.sendall(GoAwayFrame(0, last_stream_id=0, error_code=0).serialize())
            block = conn.encoder.encode(headers("/after"))
            sock.sendall(HeadersFrame(3, block, flags=["END_HEADERS", "END_STREAM"]).serialize())
            buf, answer = b"", None
            \(pythonNextFrame.replacingOccurrences(of: "\n", with: "\n    "))
            while answer is None:
                frame = next_frame()
                if isinstance(frame, RstStreamFrame) and frame.stream_id == 3:
                    answer = "rst%d" % frame.error_code
                elif isinstance(frame, HeadersFrame) and frame.stream_id == 3:
                    answer = "served"
            # A protocol violation (WINDOW_UPDATE on an idle stream): GOAWAY(PROTOCOL_ERROR), then the close.
            sock.sendall(WindowUpdateFrame(9, window_increment=1).serialize())
            goaway = None
            while True:
                frame = next_frame()
                if frame is None:
                    break
                if isinstance(frame, GoAwayFrame):
                    goaway = (frame.last_stream_id, frame.error_code, frame.additional_data.decode())
            print(streams[1]["status"], answer, goaway)
        """

    var dir = ""
    var backend: BodyBackend!
    var loops: GateLoopGroup!
    var service: HTTPRouteService!

    override func setUpWithError() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("h2interop-\(getpid())-\(UUID())").path
        for sub in ["routes", "certs"] { try FileManager.default.createDirectory(atPath: "\(dir)/\(sub)", withIntermediateDirectories: true) }
        _ = try makeCertificate("interop.example", file: "interop.example", in: "\(dir)/certs")
        backend = try BodyBackend(record: "\(dir)/backend.log")
        try writeOneBackendRoute("interop", in: "\(dir)/routes")
        loops = try GateLoopGroup(count: 1)
        let json = """
            {"manifests": "\(dir)/routes", "services": {"interop": "\(backend.address)"},
             "listeners": [{"name": "h2c", "port": 0}, {"name": "tls", "port": 0, "tls": {"certificateDir": "\(dir)/certs"}}]}
            """
        service = try HTTPRouteService(config: try JSONDecoder().decode(HTTPRouteConfig.self, from: Data(json.utf8)), bind: "127.0.0.1", loops: loops)
    }

    override func tearDown() {
        service?.stop()
        loops?.shutdown()
        backend?.stop()
        try? FileManager.default.removeItem(atPath: dir)
    }

    var h2cPort: Int { Int(service.bound[0].address.port) }
    var tlsPort: Int { Int(service.bound[1].address.port) }

    func python(_ mode: String, _ scenario: String) throws -> String {
        try pythonScenario(Self.client, port: mode == "tls" ? tlsPort : h2cPort, mode, scenario)
    }

    func testPythonH2FrameSequences() throws {
        for mode in ["h2c", "tls"] {
            XCTAssertEqual(try python(mode, "tinywindow"), "200 600000 True True", mode)
            XCTAssertEqual(try python(mode, "large"), "200 2000000 True", mode)
            XCTAssertEqual(try python(mode, "upload"), "200 True", mode)
            XCTAssertEqual(try python(mode, "many"), "60 True", mode)
            XCTAssertEqual(try python(mode, "ping"), "b'12345678'", mode)
            XCTAssertEqual(try python(mode, "settings"), "200 200 50000 True", mode)
            XCTAssertEqual(try python(mode, "goaway"), "200 rst7 (1, 1, 'WINDOW_UPDATE on idle stream 9')", mode)
        }
    }

    /// An HTTP/2 connection's handler, its streams (held by their exchanges, the handler's
    /// timers and a request body's credit callback) and the backend connections (held by
    /// their channel's handler until it closes) reference each other strongly — weak
    /// references put every retain and release of an object on the runtime's slow path — and
    /// still leave nothing alive once the connections close: requests with and without a
    /// body, 60 streams at once, a protocol violation closing the connection, over h2c and TLS,
    /// h2load's streams; then the backend's kept-alive connections, closed by the backend.
    /// (`LiveObjects` counts them in debug builds.)
    func testConnectionsStreamsAndBackendConnectionsAreFreed() throws {
        func live() -> [Int] { ["HTTP2RouteHandler", "HTTP2RouteStream", "NIOBackendConnection"].map(LiveObjects.count) }
        let before = live()
        for mode in ["h2c", "tls"] {
            XCTAssertEqual(try python(mode, "upload"), "200 True", mode)
            XCTAssertEqual(try python(mode, "many"), "60 True", mode)
            XCTAssertEqual(try python(mode, "goaway"), "200 rst7 (1, 1, 'WINDOW_UPDATE on idle stream 9')", mode)
        }
        let load = try runProcess(try tool("h2load"), ["-n", "200", "-c", "4", "-m", "10", "http://127.0.0.1:\(h2cPort)/load"], timeout: 60)
        XCTAssertTrue(load.out.contains("200 succeeded, 0 failed, 0 errored"), load.out + load.err)
        XCTAssertTrue(eventually(10) { Array(live().prefix(2)) == Array(before.prefix(2)) }, "\(live()) alive, \(before) before")
        XCTAssertGreaterThan(live()[2], before[2], "kept-alive backend connections")
        backend.stop()
        backend = nil
        XCTAssertTrue(eventually(10) { live() == before }, "\(live()) alive, \(before) before")
    }

    /// Response backpressure: a client that reads a 64 MiB response slowly (64 KiB, then 2 ms)
    /// through `ugate run` (its own process, so its memory is measured alone). The codec holds
    /// what the client's window does not allow yet and pauses the backend above 256 KiB, so
    /// the node's peak resident memory grows by far less than the response (with
    /// `NIOHTTP2Handler`, which buffered without bound, it grew by the whole response).
    func testSlowReaderBoundsResponseMemory() throws {
        let slowReader = """
            import socket, sys, time
            import h2.config, h2.connection, h2.events
            sock = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=60)
            conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True))
            conn.initiate_connection()
            conn.send_headers(1, [(":method", "GET"), (":path", sys.argv[2]), (":scheme", "http"), (":authority", "interop.example")], end_stream=True)
            sock.sendall(conn.data_to_send())
            total, status, done = 0, None, False
            while not done:
                data = sock.recv(65536)
                if not data:
                    break
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.ResponseReceived):
                        status = dict(event.headers)[b":status"].decode()
                    elif isinstance(event, h2.events.DataReceived):
                        total += len(event.data)
                        conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                    elif isinstance(event, h2.events.StreamEnded):
                        done = True
                sock.sendall(conn.data_to_send())
                time.sleep(0.002)
            print(status, total)
            """
        let node = try httpRouteNode(dir: dir, service: "interop", at: backend.address)
        defer { node.stop() }
        try checkNodeHolds64MiB(node, listener: "web", client: slowReader, "h2c download of 64 MiB by a slow reader")
    }

    /// Reads 1 MiB (warm-up), then 64 MiB with `client` (a Python script; argv: port, path,
    /// prints `status bytes`) from `node`'s listener `listener`, and checks that the node's
    /// peak resident memory grew by less than 16 MiB during the 64 MiB read (`what` names the
    /// case in the printed numbers).
    func checkNodeHolds64MiB(_ node: UgateNode, listener: String, client: String, _ what: String) throws {
        let address = node.address(listener)
        XCTAssertFalse(address.isEmpty, node.banner)
        let port = String(address.split(separator: ":").last ?? "")
        func read(_ size: Int) throws -> String {
            let r = try runProcess("/usr/bin/env", ["python3", "-c", client, port, "/big/\(size)"], timeout: 240)
            XCTAssertEqual(r.status, 0, r.err)
            return r.out.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        XCTAssertEqual(try read(1 << 20), "200 \(1 << 20)")
        let pid = node.process.processIdentifier
        let baseline = try HTTPRouteUploadTests.memory(pid, "VmRSS")
        try "5".write(toFile: "/proc/\(pid)/clear_refs", atomically: false, encoding: .utf8)
        XCTAssertEqual(try read(64 << 20), "200 \(64 << 20)")
        let peak = try HTTPRouteUploadTests.memory(pid, "VmHWM")
        print("\(what): node RSS \(baseline) KiB before, peak \(peak) KiB, growth \(peak - baseline) KiB")
        XCTAssertLessThan(peak - baseline, 16 * 1024, "the node buffered the response: peak \(peak) KiB vs \(baseline) KiB before")
    }

    func testNghttpH2loadAndCurl() throws {
        let h2c = "http://127.0.0.1:\(h2cPort)"
        // nghttp with a 1,023-byte stream window and a 4,095-byte connection window.
        let nghttp = try runProcess(try tool("nghttp"), ["-w", "10", "-W", "12", "\(h2c)/big/200000"], timeout: 60)
        XCTAssertEqual(nghttp.status, 0, nghttp.err)
        XCTAssertEqual(nghttp.out.utf8.count, 200_000)
        let stats = try runProcess(try tool("nghttp"), ["-nv", "-m", "20", "\(h2c)/n"], timeout: 60)
        XCTAssertEqual(stats.out.components(separatedBy: ":status: 200").count - 1, 20, stats.out)
        // h2load: 400 requests on 4 connections, 20 streams each at a time, h2c and TLS.
        for (uri, extra) in [("\(h2c)/load", [String]()), ("https://interop.example/load", ["--connect-to=127.0.0.1:\(tlsPort)"])] {
            let load = try runProcess(try tool("h2load"), ["-n", "400", "-c", "4", "-m", "20"] + extra + [uri], timeout: 60)
            XCTAssertTrue(load.out.contains("400 succeeded, 0 failed, 0 errored"), load.out + load.err)
        }
        // curl: --http2-prior-knowledge (h2c) and --http2 over TLS (ALPN), down and up.
        var generator = SystemRandomNumberGenerator()
        let body = Data((0..<300_000).map { _ in UInt8.random(in: 0...255, using: &generator) })
        try body.write(to: URL(fileURLWithPath: "\(dir)/up"))
        let sha = try runProcess(try tool("sha256sum"), ["\(dir)/up"], timeout: 10).out.split(separator: " ")[0]
        let tls = ["--http2", "-k", "--resolve", "interop.example:\(tlsPort):127.0.0.1", "https://interop.example:\(tlsPort)"]
        for (flags, base) in [(["--http2-prior-knowledge"], h2c), (Array(tls.dropLast()), tls.last!)] {
            let down = try runProcess(try tool("curl"), ["-sS", "--max-time", "30"] + flags + ["-o", "/dev/null", "-w", "%{http_version} %{size_download}", "\(base)/big/1000000"], timeout: 60)
            XCTAssertEqual(down.out, "2 1000000", down.err)
            let up = try runProcess(try tool("curl"), ["-sS", "--max-time", "30"] + flags + ["--data-binary", "@\(dir)/up", "\(base)/up"], timeout: 60)
            XCTAssertTrue(up.out.contains(String(sha)), up.out + up.err)
        }
    }
}

/// `ugate run` (its own process) with an `httproute` section: the manifests in `dir/routes`,
/// `service` at `address`, one plain listener `web` on an ephemeral port, a 300 s request timeout.
func httpRouteNode(dir: String, service: String, at address: String) throws -> UgateNode {
    try #"""
        {"httproute": {"manifests": "\#(dir)/routes", "services": {"\#(service)": "\#(address)"}, "requestTimeout": 300,
                       "listeners": [{"name": "web", "port": 0}]}}
        """#.write(toFile: "\(dir)/ugate.json", atomically: true, encoding: .utf8)
    return try UgateNode(["run", "--config", "\(dir)/ugate.json", "--base-port", "0", "--identity-dir", "\(dir)/node", "--log-level", "warning"])
}
