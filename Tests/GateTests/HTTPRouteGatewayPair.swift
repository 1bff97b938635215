import Foundation
import Logging
import XCTest

@testable import Gate

/// A plain listener (HTTP/1.1 on the gate loops and h2c) and a TLS listener (`name.example`,
/// ALPN h2 or http/1.1) in front of one `BodyBackend`, on one gate loop, each with its own
/// temporary folder; for tests that check one behaviour on every client path.
final class GatewayPair {
    let dir: String
    let backend: BodyBackend
    let loops: GateLoopGroup
    let plain: HTTPGateway
    let secure: HTTPGateway

    /// `configure` makes each listener from the route table, the loops and its TLS (nil: plain).
    init(name: String, configure: (RouteTable, GateLoopGroup, HTTPRouteTLS?) throws -> HTTPGateway) throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("\(name)-\(getpid())-\(UUID())").path
        for sub in ["routes", "certs"] { try FileManager.default.createDirectory(atPath: "\(dir)/\(sub)", withIntermediateDirectories: true) }
        _ = try makeCertificate("\(name).example", file: "\(name).example", in: "\(dir)/certs")
        backend = try BodyBackend(record: "\(dir)/backend.log")
        try writeOneBackendRoute(name, in: "\(dir)/routes")
        let table = RouteTable(routes: try HTTPRouteLoader(services: [name: backend.address]).load(directory: "\(dir)/routes").routes)
        loops = try GateLoopGroup(count: 1)
        plain = try configure(table, loops, nil)
        secure = try configure(table, loops, try HTTPRouteTLS(HTTPRouteTLSConfig(certificateDir: "\(dir)/certs")))
    }

    /// The port of the listener `mode` names (`tls`, else the plain one).
    func port(_ mode: String) -> UInt16 { mode == "tls" ? secure.address.port : plain.address.port }

    func stop() {
        plain.stop()
        secure.stop()
        plain.closeConnections()
        secure.closeConnections()
        loops.shutdown()
        backend.stop()
        try? FileManager.default.removeItem(atPath: dir)
    }
}

/// A Python function for test clients: `tls_wrap(sock, hostname, alpn)` wraps a connected
/// socket in TLS (no certificate check) offering one ALPN protocol.
let pythonTLSWrap = """
    import ssl
    def tls_wrap(sock, hostname, alpn):
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        context.set_alpn_protocols([alpn])
        return context.wrap_socket(sock, server_hostname=hostname)
    """

/// Runs the Python `script` with the arguments `port mode scenario` (a test's scenario of a
/// client script), checks it succeeded, and returns its output, trimmed.
func pythonScenario(_ script: String, port: Int, _ mode: String, _ scenario: String) throws -> String {
    let r = try runProcess("/usr/bin/env", ["python3", "-c", script, "\(port)", mode, scenario], timeout: 60)
    XCTAssertEqual(r.status, 0, "\(mode) \(scenario): \(r.err)")
    return r.out.trimmingCharacters(in: .whitespacesAndNewlines)
}

/// The start of a hand-written HTTP/2 test client in Python (frames by `hyperframe`, HPACK by
/// the encoder and decoder of `h2`'s `conn`), argv `port mode scenario` (mode h2c or tls):
/// `sock` connected (TLS offering ALPN h2 with SNI `host` in mode tls, h2 checked),
/// `headers(path)` for a GET to `host`, `send(frame)`, `next_frame()` (None at the end of the
/// stream) and `next_frame_acked()` (the same, acknowledging the server's SETTINGS on the way).
func pythonH2Client(host: String, timeout: Int) -> String {
    """
    import socket, sys
    import h2.config, h2.connection
    from hyperframe.frame import Frame, DataFrame, GoAwayFrame, HeadersFrame, RstStreamFrame, SettingsFrame
    \(pythonTLSWrap)
    port, mode, scenario = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    sock = socket.create_connection(("127.0.0.1", port), timeout=\(timeout))
    if mode == "tls":
        sock = tls_wrap(sock, "\(host)", "h2")
        assert sock.selected_alpn_protocol() == "h2"
    conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True))
    def headers(path):
        return [(":method", "GET"), (":path", path), (":scheme", "https" if mode == "tls" else "http"), (":authority", "\(host)")]
    def send(frame):
        sock.sendall(frame.serialize())
    buf = b""
    \(pythonNextFrame)
    def next_frame_acked():
        frame = next_frame()
        if isinstance(frame, SettingsFrame) and "ACK" not in frame.flags:
            send(SettingsFrame(0, flags=["ACK"]))
        return frame
    """
}
