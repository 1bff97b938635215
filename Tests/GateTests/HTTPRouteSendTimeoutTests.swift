import Foundation
import Glibc
import Synchronization
import XCTest

@testable import Gate

/// The send timeout (`sendTimeout`, here 1 s): a client with a 4 KiB receive buffer asks for
/// 64 MiB and never reads. The gateway closes its connection once nothing could be written to
/// it for the timeout — on all three client paths: HTTP/1.1 on the gate loops, h2c (the
/// gateway's HTTP/2 codec; the client grants the largest windows, so bytes wait for the socket,
/// not for flow control) and HTTP/1.1 over TLS (NIO) —, closes the backend connection (no
/// established connection to the backend is left), writes the access-log line with the status
/// and the reason, counts it in `ugate_httproute_send_timeouts_total`, and goes on serving
/// other clients meanwhile. The stalled client then reads what was queued and sees the end of
/// the stream before the 64 MiB. Without the timeout the connection (and its backend
/// connection) stays open for as long as the client does not read.
final class HTTPRouteSendTimeoutTests: XCTestCase {
    /// argv: port, mode (h1|h2c|tls), marker file. Connects with a 4 KiB receive buffer,
    /// requests /big/64 MiB, reads nothing until `marker` exists, then reads until the end of
    /// the stream; prints `eof <bytes>` (or `timeout <bytes>`).
    static let client = """
        import os, socket, ssl, sys, time
        port, mode, marker = int(sys.argv[1]), sys.argv[2], sys.argv[3]
        path = "/big/%d" % (64 << 20)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", port))
        sock.settimeout(30)
        \(pythonTLSWrap)
        if mode == "tls":
            sock = tls_wrap(sock, "stall.example", "http/1.1")
        if mode == "h2c":
            import h2.config, h2.connection, h2.settings
            conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True))
            conn.local_settings = h2.settings.Settings(client=True, initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 2**31 - 1})
            conn.initiate_connection()
            conn.increment_flow_control_window(2**31 - 1 - 65535)
            conn.send_headers(1, [(":method", "GET"), (":path", path), (":scheme", "http"), (":authority", "stall.example")], end_stream=True)
            sock.sendall(conn.data_to_send())
        else:
            sock.sendall(("GET %s HTTP/1.1\\r\\nHost: stall.example\\r\\n\\r\\n" % path).encode())
        for _ in range(1200):
            if os.path.exists(marker):
                break
            time.sleep(0.05)
        total, result = 0, "timeout"
        try:
            while True:
                data = sock.recv(1 << 20)
                if not data:
                    result = "eof"
                    break
                total += len(data)
        except (ConnectionResetError, ssl.SSLError, OSError) as error:
            result = "timeout" if isinstance(error, socket.timeout) else "eof"
        print(result, total)
        """

    let capture = LogCapture()
    let metrics = PrometheusMetrics()
    var gateways: GatewayPair!

    override func setUpWithError() throws {
        let (capture, metrics) = (capture, metrics)
        gateways = try GatewayPair(name: "stall") { table, loops, tls in
            try HTTPGateway(
                table: table, loops: loops, defaultTimeout: 300, sendTimeout: 1, accessLog: capture.logger("access"), log: capture.logger("gate"),
                metrics: metrics, tls: tls, name: tls == nil ? "plain" : "secure")
        }
    }

    override func tearDown() {
        gateways?.stop()
    }

    func testHTTP1OnTheGateLoops() throws {
        try checkStalledClientIsClosed(mode: "h1", proto: "http/1.1")
    }

    func testH2C() throws {
        try checkStalledClientIsClosed(mode: "h2c", proto: "h2c")
    }

    func testHTTP1OverTLS() throws {
        try checkStalledClientIsClosed(mode: "tls", proto: "http/1.1+tls")
    }

    /// Runs the stalled client on `port`, waits (bounded) for the gateway to give it up, checks
    /// the access log, the counter, the backend connections and another client meanwhile,
    /// then lets the stalled client read to the end of its (cut) stream.
    func checkStalledClientIsClosed(mode: String, proto: String) throws {
        let port = gateways.port(mode)
        let marker = "\(gateways.dir)/read-now"
        let client = BackgroundProcess("/usr/bin/env", ["python3", "-c", Self.client, "\(port)", mode, marker], timeout: 120)
        var finished = false
        defer {
            // A failed check: the client still ends (it reads once the marker exists).
            if !finished {
                XCTAssertTrue(FileManager.default.createFile(atPath: marker, contents: nil))
                _ = client.wait(120)
            }
        }
        // The request reached the backend, and the gateway gives the client up.
        let line = capture.waitForLine(containing: ["proto=\(proto)", "send timeout"], timeout: 30)
        XCTAssertNotNil(line, "no send timeout for \(mode): \(capture.lines.suffix(5))")
        let access = capture.waitForLine(containing: ["path=/big/\(64 << 20)", "proto=\(proto)", "error=send timeout: the client read nothing for 1.0 s"], timeout: 10)
        XCTAssertNotNil(access, "access log of \(mode): \(capture.lines.suffix(5))")
        XCTAssertTrue(access?.contains("status=200") ?? false, access ?? "")
        XCTAssertTrue(
            eventually(10) { metrics.render().contains("ugate_httproute_send_timeouts_total{proto=\"\(proto)\"} 1") }, metrics.render())
        // The backend connection was closed, not kept for reuse.
        XCTAssertTrue(try eventually(10) { try establishedConnections(to: gateways.backend.address) == 0 }, "a backend connection is still open")
        // Other clients are served.
        let scheme = mode == "tls" ? "https" : "http"
        let extra = mode == "tls" ? ["-k", "--resolve", "stall.example:\(port):127.0.0.1"] : []
        let host = mode == "tls" ? "stall.example" : "127.0.0.1"
        let ok = try runProcess(try tool("curl"), ["-sS", "--max-time", "20", "-o", "/dev/null", "-w", "%{http_code}"] + extra + ["\(scheme)://\(host):\(port)/big/1000"], timeout: 30)
        XCTAssertEqual(ok.out, "200", ok.err)
        // The stalled client now reads what was queued and meets the end of the stream.
        XCTAssertTrue(FileManager.default.createFile(atPath: marker, contents: nil))
        let r = client.wait(120)
        finished = true
        XCTAssertEqual(r?.status, 0, r?.err ?? "client did not run or finish")
        let words = (r?.out ?? "").trimmingCharacters(in: .whitespacesAndNewlines).split(separator: " ")
        XCTAssertEqual(words.first, "eof", r?.out ?? "")
        XCTAssertLessThan(Int(words.last ?? "") ?? Int.max, 64 << 20, r?.out ?? "")
    }

    /// `sendTimeout` and `http2SettingsTimeout` in the `httproute` config section reach the
    /// listeners `HTTPRouteService` binds (as under `ugate run`): the stalled HTTP/1.1 client is
    /// given up after 1 s, and an HTTP/2 client that never acknowledges SETTINGS gets
    /// GOAWAY(SETTINGS_TIMEOUT) after 1 s. Without the keys: 60 s and 10 s.
    func testConfigKeysReachTheListeners() throws {
        let json = """
            {"manifests": "\(gateways.dir)/routes", "services": {"stall": "\(gateways.backend.address)"}, "requestTimeout": 300,
             "sendTimeout": 1, "http2SettingsTimeout": 1, "listeners": [{"name": "web", "port": 0}]}
            """
        let config = try JSONDecoder().decode(HTTPRouteConfig.self, from: Data(json.utf8))
        XCTAssertEqual(config.sendTimeout, 1)
        XCTAssertEqual(config.http2SettingsTimeout, 1)
        let defaults = try JSONDecoder().decode(HTTPRouteConfig.self, from: Data(#"{"manifests": "/m"}"#.utf8))
        XCTAssertEqual(defaults.sendTimeout, 60)
        XCTAssertEqual(defaults.http2SettingsTimeout, 10)
        let service = try HTTPRouteService(
            config: config, bind: "127.0.0.1", loops: gateways.loops, log: capture.logger("gate"), accessLog: capture.logger("access"))
        defer { service.stop() }
        let port = Int(service.bound[0].address.port)
        XCTAssertEqual(try pythonScenario(HTTPRouteH2ConformanceTests.client, port: port, "h2c", "settings"), "goaway=4 closed")
        // The stalled client (`client`, h1) reads nothing until the marker exists.
        let marker = "\(gateways.dir)/read-now"
        let client = BackgroundProcess("/usr/bin/env", ["python3", "-c", Self.client, "\(port)", "h1", marker], timeout: 120)
        XCTAssertNotNil(
            capture.waitForLine(containing: ["request", "listener=web", "error=send timeout: the client read nothing for 1.0 s"], timeout: 30),
            "\(capture.lines.suffix(3))")
        XCTAssertTrue(FileManager.default.createFile(atPath: marker, contents: nil))
        XCTAssertNotNil(client.wait(120))
    }
}

/// A process run on another thread (`runProcess`), waited for later.
final class BackgroundProcess: @unchecked Sendable {  // the result is behind a Mutex; DispatchSemaphore is thread-safe
    private let result = Mutex<(status: Int32, out: String, err: String)?>(nil)
    private let done = DispatchSemaphore(value: 0)

    init(_ path: String, _ arguments: [String], timeout: Double) {
        DispatchQueue.global().async { [self] in
            let r = try? runProcess(path, arguments, timeout: timeout)
            result.withLock { $0 = r }
            done.signal()
        }
    }

    /// Waits at most `seconds`; the status and output (nil: not finished, or it could not run).
    func wait(_ seconds: Double) -> (status: Int32, out: String, err: String)? {
        guard done.wait(timeout: .now() + seconds) == .success else { return nil }
        done.signal()
        return result.withLock { $0 }
    }
}

/// Established TCP connections to `address` (`host:port`) on this machine (`ss`); `unreadOnly`:
/// only those with received bytes not yet read (`Recv-Q` > 0: a backend connection whose
/// reading is paused, not an idle pooled one).
func establishedConnections(to address: String, unreadOnly: Bool = false) throws -> Int {
    let port = address.split(separator: ":").last.map(String.init) ?? ""
    let r = try runProcess(try tool("ss"), ["-Htn", "state", "established", "dst", "127.0.0.1:\(port)"], timeout: 10)
    let lines = r.out.split(separator: "\n")
    guard unreadOnly else { return lines.count }
    return lines.filter { ($0.split(separator: " ").first.flatMap { Int($0) } ?? 0) > 0 }.count
}
