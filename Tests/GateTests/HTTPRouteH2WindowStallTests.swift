import Foundation
import XCTest

@testable import Gate

/// The send timeout of HTTP/2 flow control (`sendTimeout`, here 1 s): a client that reads its
/// socket but never grants window — a slowloris reader over HTTP/2 — written with Python's
/// `hyperframe` (HPACK from `h2`), over h2c and TLS with ALPN h2. It asks for 4 MiB and sends
/// no WINDOW_UPDATE:
///
/// * with stream windows of 1 KiB (the connection's the default 64 KiB), stream 1 stalls on
///   its own window: it is reset with RST_STREAM(CANCEL) after the timeout, stream 3 of the
///   same connection (1,000 bytes) is served meanwhile, and the connection goes on (stream 5,
///   opened after the reset, is served; no GOAWAY);
/// * with the largest stream windows, the connection's 64 KiB window runs out: GOAWAY
///   (ENHANCE_YOUR_CALM) and the close after the timeout.
///
/// The same with a response the gateway holds whole (200,000 bytes, below the 256 KiB at which
/// the backend is paused): its backend ends and the exchange finishes before the timeout, but
/// its access-log line waits for the stream's end, so it too names the send timeout.
///
/// Each time the access log says `error=send timeout: the client granted no HTTP/2 … window`,
/// `ugate_httproute_send_timeouts_total{proto}` counts it, the paused backend connection is
/// closed (no established one with unread bytes is left), and another client (curl)
/// is served while the stalled one waits. Without the timeout the stalled stream stays held
/// forever: the client's bounded wait ends with `timeout`.
extension HTTPRouteSendTimeoutTests {
    /// argv: port, mode (h2c|tls), scenario (stream|connection), path of stream 1. Prints one line.
    static let windowClient = """
        \(pythonH2Client(host: "stall.example", timeout: 15))
        # No WINDOW_UPDATE is ever sent: stream windows of 1 KiB, or the largest (the connection's stays 65,535).
        big = sys.argv[4]
        window = 1024 if scenario == "stream" else 2**31 - 1
        sock.sendall(b"PRI * HTTP/2.0\\r\\n\\r\\nSM\\r\\n\\r\\n" + SettingsFrame(0, settings={SettingsFrame.INITIAL_WINDOW_SIZE: window}).serialize())
        send(HeadersFrame(1, conn.encoder.encode(headers(big)), flags=["END_HEADERS", "END_STREAM"]))
        if scenario == "stream":
            send(HeadersFrame(3, conn.encoder.encode(headers("/big/1000")), flags=["END_HEADERS", "END_STREAM"]))
        status, received, ended, rst, goaway, result = {}, {}, set(), {}, None, "timeout"
        # The stream scenario ends once streams 3 and 5 are answered, the connection one at the close.
        wanted = {3, 5} if scenario == "stream" else {0}
        try:
            frame = next_frame_acked()
            while frame is not None and not wanted <= ended:
                if isinstance(frame, HeadersFrame):
                    status[frame.stream_id] = dict(conn.decoder.decode(frame.data, raw=True))[b":status"].decode()
                elif isinstance(frame, DataFrame):
                    received[frame.stream_id] = received.get(frame.stream_id, 0) + len(frame.data)
                elif isinstance(frame, RstStreamFrame):
                    rst[frame.stream_id] = frame.error_code
                    if frame.stream_id == 1:
                        # The connection goes on: a new stream is served.
                        send(HeadersFrame(5, conn.encoder.encode(headers("/big/10")), flags=["END_HEADERS", "END_STREAM"]))
                elif isinstance(frame, GoAwayFrame):
                    goaway = "%d:%s" % (frame.error_code, frame.additional_data.decode())
                if isinstance(frame, (HeadersFrame, DataFrame)) and "END_STREAM" in frame.flags:
                    ended.add(frame.stream_id)
                if not wanted <= ended:
                    frame = next_frame_acked()
            result = "open" if wanted <= ended else "closed"
        except (socket.timeout, TimeoutError):
            pass
        except (ConnectionResetError, ssl.SSLError):
            result = "closed"
        def stream(n):
            return "s%d=%s/%s/%d" % (n, status.get(n), ("rst%d" % rst[n]) if n in rst else ("end" if n in ended else "open"), received.get(n, 0))
        print(" ".join(stream(n) for n in sorted(status)), "goaway=%s" % goaway, result)
        """

    func testH2StreamWithoutWindowIsResetAndTheConnectionGoesOn() throws {
        for (mode, proto) in [("h2c", "h2c"), ("tls", "h2")] {
            let out = try runWindowStalledClient(mode: mode, scenario: "stream", proto: proto, cause: "stream")
            XCTAssertEqual(out, "s1=200/rst8/1024 s3=200/end/1000 s5=200/end/10 goaway=None open", mode)
        }
    }

    func testH2ConnectionWithoutWindowIsClosedWithGoAway() throws {
        for (mode, proto) in [("h2c", "h2c"), ("tls", "h2")] {
            let out = try runWindowStalledClient(mode: mode, scenario: "connection", proto: proto, cause: "connection")
            XCTAssertEqual(out, "s1=200/open/65535 goaway=11:send timeout: no connection window granted for 1.0 s closed", mode)
        }
    }

    func testH2StreamHeldWholeAfterItsBackendEndedIsLoggedWithTheSendTimeout() throws {
        for (mode, proto) in [("h2c", "h2c"), ("tls", "h2")] {
            let out = try runWindowStalledClient(mode: mode, scenario: "stream", proto: proto, cause: "stream", path: "/big/200000")
            XCTAssertEqual(out, "s1=200/rst8/1024 s3=200/end/1000 s5=200/end/10 goaway=None open", mode)
            checkOneAccessLine(path: "/big/200000", proto: proto)
        }
    }

    func testH2ConnectionHeldWholeAfterItsBackendEndedIsLoggedWithTheSendTimeout() throws {
        for (mode, proto) in [("h2c", "h2c"), ("tls", "h2")] {
            let out = try runWindowStalledClient(mode: mode, scenario: "connection", proto: proto, cause: "connection", path: "/big/200000")
            XCTAssertEqual(out, "s1=200/open/65535 goaway=11:send timeout: no connection window granted for 1.0 s closed", mode)
            checkOneAccessLine(path: "/big/200000", proto: proto)
        }
    }

    /// The request has one access-log line (the one naming the send timeout), with the bytes
    /// its backend sent.
    func checkOneAccessLine(path: String, proto: String) {
        let lines = capture.lines.filter { $0.hasPrefix("request ") && $0.contains("path=\(path) ") && $0.contains("proto=\(proto) ") }
        XCTAssertEqual(lines.count, 1, "one access-log line per request: \(lines)")
        XCTAssertTrue(lines.first?.contains("bytes=\(path.dropFirst(5)) ") ?? false, "\(lines)")
    }

    /// Runs the Python client, serves curl while it is stalled, and checks the access log, the
    /// counter and the backend connections; returns the client's line.
    func runWindowStalledClient(mode: String, scenario: String, proto: String, cause: String, path: String = "/big/4194304") throws -> String {
        let port = Int(gateways.port(mode))
        let client = BackgroundProcess("/usr/bin/env", ["python3", "-c", Self.windowClient, "\(port)", mode, scenario, path], timeout: 60)
        // The big request reached the backend: another client is served meanwhile.
        XCTAssertFalse(gateways.backend.lines(waitingFor: ["GET \(path)"]).filter { $0.contains(path) }.isEmpty)
        let tls = mode == "tls"
        let args =
            ["-sS", "--max-time", "20", "-o", "/dev/null", "-w", "%{http_code} %{http_version}"]
            + (tls ? ["-k", "--http2", "--resolve", "stall.example:\(port):127.0.0.1", "https://stall.example:\(port)/big/100000"]
                : ["--http2-prior-knowledge", "http://127.0.0.1:\(port)/big/100000"])
        let other = try runProcess(try tool("curl"), args, timeout: 30)
        XCTAssertEqual(other.out, "200 2", other.err)
        let r = client.wait(90)
        XCTAssertEqual(r?.status, 0, r?.err ?? "client did not run or finish")
        let access = capture.waitForLine(
            containing: ["path=\(path)", "proto=\(proto)", "error=send timeout: the client granted no HTTP/2 \(cause) window for 1.0 s"], timeout: 10)
        XCTAssertNotNil(access, "access log of \(mode): \(capture.lines.suffix(5))")
        XCTAssertTrue(access?.contains("status=200") ?? false, access ?? "")
        XCTAssertTrue(eventually(10) { metrics.render().contains("ugate_httproute_send_timeouts_total{proto=\"\(proto)\"} 1") }, metrics.render())
        // The paused backend connection was closed (idle pooled ones of the other requests stay).
        XCTAssertTrue(
            try eventually(10) { try establishedConnections(to: gateways.backend.address, unreadOnly: true) == 0 }, "a paused backend connection is still open")
        return (r?.out ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
    }
}
