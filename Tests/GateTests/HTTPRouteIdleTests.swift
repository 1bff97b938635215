import Foundation
import Glibc
import XCTest

@testable import Gate

/// The HTTP/2 idle timeout (`http2IdleTimeout`), next to the HTTP/1.1 `keepAliveTimeout` in the
/// `httproute` section: a Python `h2` client over h2c and over TLS (ALPN h2) sees the two-step
/// graceful GOAWAY (NO_ERROR, last stream 2^31−1 with a PING; then the real last stream) and
/// the close once no stream has been open for the idle time; a stream that stays open longer
/// than the idle time (a slow backend) is not cut; a request sent after the first GOAWAY left
/// the server (racing the idle close) is served; a client that never answers the PING still
/// gets the final GOAWAY (grace timer). The pure `HTTP2IdleMachine` has a table test.
final class HTTPRouteIdleTests: XCTestCase {
    /// Modes: `now` sends GET `path` at once (twice when `path` is `/slow`: one slow, then
    /// one quick); `race` sends it only after reading the first GOAWAY (before answering the
    /// PING that follows it); `noack` is `now` without answering PINGs. h2 builds the requests
    /// and decodes headers; frames are read with hyperframe (h2's own framing layer), because
    /// h2's connection state machine refuses every frame after a GOAWAY. Prints the statuses
    /// (`-unfinished` without END_STREAM), the GOAWAYs (error code, last stream ID) and
    /// `closed` (or `timeout` after 30 s). An optional fifth argument names a file created when
    /// a GOAWAY arrives.
    static let client = """
        import socket, ssl, sys
        import h2.config, h2.connection
        from hyperframe.frame import Frame, DataFrame, GoAwayFrame, HeadersFrame, PingFrame, SettingsFrame
        port, mode, send, path = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
        marker = sys.argv[5] if len(sys.argv) > 5 else None
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
        def request():
            paths = [path] + (["/quick"] if path == "/slow" else [])
            for i, p in enumerate(paths):
                conn.send_headers(1 + 2 * i, [(":method", "GET"), (":path", p), (":scheme", "https" if mode == "tls" else "http"),
                    (":authority", "idle.example")], end_stream=True)
        if send != "race":
            request()
        sock.sendall(conn.data_to_send())
        buf, statuses, ended, goaways, result = b"", {}, set(), [], "timeout"
        \(pythonNextFrame)
        try:
            while True:
                frame = next_frame()
                if frame is None:
                    result = "closed"
                    break
                if isinstance(frame, SettingsFrame) and "ACK" not in frame.flags:
                    sock.sendall(SettingsFrame(0, flags=["ACK"]).serialize())
                elif isinstance(frame, PingFrame) and "ACK" not in frame.flags and send != "noack":
                    sock.sendall(PingFrame(0, frame.opaque_data, flags=["ACK"]).serialize())
                elif isinstance(frame, HeadersFrame):
                    statuses[frame.stream_id] = dict(conn.decoder.decode(frame.data, raw=True))[b":status"].decode()
                elif isinstance(frame, GoAwayFrame):
                    goaways.append((frame.error_code, frame.last_stream_id))
                    if marker:
                        open(marker, "w").close()
                    if send == "race" and len(goaways) == 1:
                        # The request raced the idle close: sent before the client saw the GOAWAY.
                        request()
                        sock.sendall(conn.data_to_send())
                if isinstance(frame, (HeadersFrame, DataFrame)) and "END_STREAM" in frame.flags:
                    ended.add(frame.stream_id)
        except socket.timeout:
            pass
        except (ConnectionResetError, BrokenPipeError, ssl.SSLError):
            result = "closed"
        print(" ".join(statuses[s] + ("" if s in ended else "-unfinished") for s in sorted(statuses)), goaways, result)
        """

    /// The idle close as a value: events in, actions out.
    func testIdleMachineTable() {
        typealias M = HTTP2IdleMachine
        enum Event { case start, opened(Int), closed, idle, drained, channelClosed }
        let cases: [(String, [Event], [[M.Action]])] = [
            ("idle from the start: first GOAWAY + PING, then final GOAWAY naming no stream, close",
             [.start, .idle, .drained],
             [[.armIdleTimer], [.goAway(lastStreamID: M.maxStreamID), .ping, .armGraceTimer], [.goAway(lastStreamID: 0), .close]]),
            ("a stream cancels the idle timer; its close re-arms it",
             [.start, .opened(1), .closed, .idle, .drained],
             [[.armIdleTimer], [.cancelIdleTimer], [.armIdleTimer], [.goAway(lastStreamID: M.maxStreamID), .ping, .armGraceTimer],
              [.goAway(lastStreamID: 1), .close]]),
            ("streams that join an open one change nothing; the last to close re-arms the timer",
             [.start, .opened(1), .opened(3), .closed, .closed],
             [[.armIdleTimer], [.cancelIdleTimer], [], [], [.armIdleTimer]]),
            ("a timer that fires while a stream is open does nothing",
             [.start, .opened(1), .idle, .drained], [[.armIdleTimer], [.cancelIdleTimer], [], []]),
            ("a request racing the close: served, named by the final GOAWAY, close after it",
             [.start, .opened(1), .closed, .idle, .opened(3), .drained, .closed],
             [[.armIdleTimer], [.cancelIdleTimer], [.armIdleTimer], [.goAway(lastStreamID: M.maxStreamID), .ping, .armGraceTimer], [],
              [.goAway(lastStreamID: 3)], [.close]]),
            ("a racing stream that ends before the PING ACK",
             [.start, .idle, .opened(1), .closed, .drained],
             [[.armIdleTimer], [.goAway(lastStreamID: M.maxStreamID), .ping, .armGraceTimer], [], [], [.goAway(lastStreamID: 1), .close]]),
            ("PING ACK and grace timer both arrive: the second does nothing",
             [.start, .idle, .drained, .drained],
             [[.armIdleTimer], [.goAway(lastStreamID: M.maxStreamID), .ping, .armGraceTimer], [.goAway(lastStreamID: 0), .close], []]),
            ("closed by the client while active: no more timers",
             [.start, .channelClosed, .idle, .drained], [[.armIdleTimer], [.cancelIdleTimer], [], []]),
        ]
        for (name, events, expected) in cases {
            var machine = M()
            var actions: [[M.Action]] = []
            for event in events {
                switch event {
                case .start: actions.append(machine.start())
                case .opened(let id): actions.append(machine.streamOpened(id))
                case .closed: actions.append(machine.streamClosed())
                case .idle: actions.append(machine.idleTimerFired())
                case .drained: actions.append(machine.drained())
                case .channelClosed: actions.append(machine.channelClosed())
                }
            }
            XCTAssertEqual(actions, expected, name)
        }
        XCTAssertEqual(HTTP2IdleHandler.goAwayFrame(lastStreamID: M.maxStreamID), [0, 0, 8, 7, 0, 0, 0, 0, 0, 0x7f, 0xff, 0xff, 0xff, 0, 0, 0, 0])
        XCTAssertEqual(HTTP2IdleHandler.goAwayFrame(lastStreamID: 0x0102_0305), [0, 0, 8, 7, 0, 0, 0, 0, 0, 1, 2, 3, 5, 0, 0, 0, 0])
    }

    func testHTTP2ConnectionsIdleOutWithGoaway() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("h2idle-\(getpid())-\(UUID())").path
        for sub in ["routes", "certs"] { try FileManager.default.createDirectory(atPath: "\(dir)/\(sub)", withIntermediateDirectories: true) }
        defer { try? FileManager.default.removeItem(atPath: dir) }
        _ = try makeCertificate("idle.example", file: "idle.example", in: "\(dir)/certs")
        let backend = try PythonBackend("idle")
        defer { backend.stop() }
        try writeOneBackendRoute("idle", in: "\(dir)/routes")
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
        let last = "(0, 2147483647)"
        for (listener, mode) in [(0, "h2c"), (1, "tls")] {
            let port = "\(service.bound[listener].address.port)"
            func run(_ send: String, _ path: String) throws -> String {
                let r = try python(["-c", Self.client, port, mode, send, path])
                XCTAssertEqual(r.status, 0, mode + r.err)
                return r.out.trimmingCharacters(in: .whitespacesAndNewlines)
            }
            XCTAssertEqual(try run("now", "/quick"), "200 [\(last), (0, 1)] closed", mode)
            // The slow stream (3 s) outlives the 1 s idle time: both streams complete, then GOAWAY.
            XCTAssertEqual(try run("now", "/slow"), "200 200 [\(last), (0, 3)] closed", mode)
            // Sent after the first GOAWAY left the server: served, and the final GOAWAY names it.
            XCTAssertEqual(try run("race", "/raced"), "200 [\(last), (0, 1)] closed", mode)
            XCTAssertEqual(try run("race", "/slow"), "200 200 [\(last), (0, 3)] closed", mode)
            // A client that never answers the PING: the grace timer sends the final GOAWAY.
            XCTAssertEqual(try run("noack", "/quick"), "200 [\(last), (0, 1)] closed", mode)
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
