import Foundation
import XCTest

@testable import Gate

/// RFC 9113 corners of the gateway's HTTP/2 codec answered over real sockets (h2c and TLS with
/// ALPN h2), frames written by hand with Python's `hyperframe` and HPACK from `h2`:
/// HEADERS and DATA on a stream that closed normally get RST_STREAM(STREAM_CLOSED) and the
/// connection goes on serving (§5.1, §6.1, §6.2); a client that never acknowledges the
/// gateway's SETTINGS gets GOAWAY(SETTINGS_TIMEOUT) and the close after `http2SettingsTimeout`
/// (§6.5.3; 1 s here).
final class HTTPRouteH2ConformanceTests: XCTestCase {
    /// argv: port, mode (h2c|tls), scenario (closed|settings). Prints one line.
    static let client = """
        \(pythonH2Client(host: "conform.example", timeout: 30))
        if scenario == "closed":
            sock.sendall(b"PRI * HTTP/2.0\\r\\n\\r\\nSM\\r\\n\\r\\n" + SettingsFrame(0).serialize())
            send(HeadersFrame(1, conn.encoder.encode(headers("/first")), flags=["END_HEADERS", "END_STREAM"]))
            ended, rst, goaway, status3 = set(), {}, None, None
            while 1 not in ended:
                frame = next_frame()
                if frame is None:
                    break
                if isinstance(frame, SettingsFrame) and "ACK" not in frame.flags:
                    send(SettingsFrame(0, flags=["ACK"]))
                if isinstance(frame, HeadersFrame):
                    conn.decoder.decode(frame.data, raw=True)  # keeps the HPACK table in step
                if isinstance(frame, (HeadersFrame, DataFrame)) and "END_STREAM" in frame.flags:
                    ended.add(frame.stream_id)
            # Stream 1 is closed (both sides ended it): late HEADERS and DATA on it, then stream 3.
            send(HeadersFrame(1, conn.encoder.encode(headers("/late")), flags=["END_HEADERS", "END_STREAM"]))
            send(DataFrame(1, b"late", flags=["END_STREAM"]))
            send(HeadersFrame(3, conn.encoder.encode(headers("/third")), flags=["END_HEADERS", "END_STREAM"]))
            while 3 not in ended:
                frame = next_frame()
                if frame is None:
                    break
                if isinstance(frame, RstStreamFrame):
                    rst[frame.stream_id] = frame.error_code
                elif isinstance(frame, GoAwayFrame):
                    goaway = frame.error_code
                elif isinstance(frame, HeadersFrame) and frame.stream_id == 3:
                    status3 = dict(conn.decoder.decode(frame.data, raw=True))[b":status"].decode()
                if isinstance(frame, (HeadersFrame, DataFrame)) and "END_STREAM" in frame.flags:
                    ended.add(frame.stream_id)
            print("rst1=%s goaway=%s stream3=%s" % (rst.get(1), goaway, status3))
        else:
            # The client's preface and SETTINGS; the server's SETTINGS is never acknowledged.
            sock.sendall(b"PRI * HTTP/2.0\\r\\n\\r\\nSM\\r\\n\\r\\n" + SettingsFrame(0).serialize())
            goaway, result = None, "timeout"
            try:
                frame = next_frame()
                while frame is not None:
                    if isinstance(frame, GoAwayFrame):
                        goaway = frame.error_code
                    frame = next_frame()
                result = "closed"
            except socket.timeout:
                pass
            except (ConnectionResetError, ssl.SSLError):
                result = "closed"
            print("goaway=%s %s" % (goaway, result))
        """

    var gateways: GatewayPair!

    override func setUpWithError() throws {
        gateways = try GatewayPair(name: "conform") { table, loops, tls in
            try HTTPGateway(table: table, loops: loops, http2SettingsTimeout: 1, metrics: PrometheusMetrics(), tls: tls, name: tls == nil ? "plain" : "secure")
        }
    }

    override func tearDown() {
        gateways?.stop()
    }

    func python(_ mode: String, _ scenario: String) throws -> String {
        try pythonScenario(Self.client, port: Int(gateways.port(mode)), mode, scenario)
    }

    func testHeadersAndDataOnAClosedStreamAreStreamErrors() throws {
        for mode in ["h2c", "tls"] {
            XCTAssertEqual(try python(mode, "closed"), "rst1=5 goaway=None stream3=200", mode)
        }
    }

    func testUnacknowledgedSettingsEndTheConnection() throws {
        for mode in ["h2c", "tls"] {
            XCTAssertEqual(try python(mode, "settings"), "goaway=4 closed", mode)
        }
    }
}
