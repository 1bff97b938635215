import Foundation
import XCTest

@testable import Gate

/// Clients that send but do not read: what the gateway queues for them is bounded by the
/// socket's writability — for HTTP/2 not only by the flow-control windows the client grants,
/// and for HTTP/1.1 over TLS as for plain HTTP/1.1 (both on the gate loops).
extension HTTPRouteH2InteropTests {
    /// A PING flood from a client that never reads (a 4 KiB receive buffer; 600,000 PINGs, more
    /// than the kernel's largest send buffer of ACKs, `tcp_wmem` 4 MiB): once the socket backs
    /// up, at most `maxQueuedControlFrames` PING ACKs are queued before the gateway closes the
    /// connection with ENHANCE_YOUR_CALM. Without the limit the connection stays open and every
    /// ACK is queued: the client reads all 600,000 of them and then waits.
    func testPingFloodFromAClientThatDoesNotReadIsCutOff() throws {
        let flood = """
            import errno, socket, struct, sys, time
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(("127.0.0.1", int(sys.argv[1])))
            sock.settimeout(15)
            ping = struct.pack(">I", 8)[1:] + bytes([6, 0]) + struct.pack(">I", 0) + b"flooding"
            state = "open"
            try:
                # The preface, SETTINGS, and the ACK of the server's SETTINGS (always sent first),
                # so that the flood meets the control-frame bound, not the SETTINGS timeout.
                sock.sendall(b"PRI * HTTP/2.0\\r\\n\\r\\nSM\\r\\n\\r\\n" + bytes(3) + bytes([4, 0]) + bytes(4) + bytes(3) + bytes([4, 1]) + bytes(4))
                for _ in range(600):
                    sock.sendall(ping * 1000)
            except (BrokenPipeError, ConnectionResetError):
                state = "closed while sending"
            except socket.timeout:
                state = "send blocked"
            acks, buf, goaway = 0, b"", None
            deadline = time.monotonic() + 30
            while state != "closed while sending" and time.monotonic() < deadline:
                try:
                    data = sock.recv(1 << 20)
                except ConnectionResetError:
                    state = "closed"
                    break
                except socket.timeout:
                    break
                if not data:
                    state = "closed"
                    break
                buf += data
                while len(buf) >= 9:
                    length = int.from_bytes(buf[:3], "big")
                    if len(buf) < 9 + length:
                        break
                    kind, flags = buf[3], buf[4]
                    if kind == 6 and flags & 1:
                        acks += 1
                    elif kind == 7:
                        goaway = int.from_bytes(buf[13:17], "big")
                    buf = buf[9 + length:]
            print(state, acks < 600000, goaway in (None, 11))
            """
        let r = try runProcess("/usr/bin/env", ["python3", "-c", flood, "\(h2cPort)"], timeout: 120)
        XCTAssertEqual(r.status, 0, r.err)
        let out = r.out.trimmingCharacters(in: .whitespacesAndNewlines)
        XCTAssertTrue(out == "closed True True" || out == "closed while sending True True", out)
        // The gateway goes on serving other clients.
        let ok = try runProcess(try tool("curl"), ["-sS", "--max-time", "20", "--http2-prior-knowledge", "-o", "/dev/null", "-w", "%{http_code}", "http://127.0.0.1:\(h2cPort)/big/1000"], timeout: 30)
        XCTAssertEqual(ok.out, "200", ok.err)
    }

    /// A client that grants the largest windows (so nothing is held for flow control), asks
    /// for 64 MiB and does not read for a while: the gateway stops reading the backend once
    /// its socket is not writable, so the node's peak memory grows by far less than the
    /// response; then the client reads all of it. Without the writability check the node
    /// queued the whole response for the socket.
    func testWideOpenWindowsWithoutReadingHoldTheBackend() throws {
        let stalled = """
            import socket, sys, time
            import h2.config, h2.connection, h2.events, h2.settings
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            sock.connect(("127.0.0.1", int(sys.argv[1])))
            sock.settimeout(60)
            conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True))
            conn.local_settings = h2.settings.Settings(client=True, initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 2**31 - 1})
            conn.initiate_connection()
            conn.increment_flow_control_window(2**31 - 1 - 65535)
            conn.send_headers(1, [(":method", "GET"), (":path", sys.argv[2]), (":scheme", "http"), (":authority", "interop.example")], end_stream=True)
            sock.sendall(conn.data_to_send())
            time.sleep(4)
            total, status, done = 0, None, False
            while not done:
                data = sock.recv(1 << 20)
                if not data:
                    break
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.ResponseReceived):
                        status = dict(event.headers)[b":status"].decode()
                    elif isinstance(event, h2.events.DataReceived):
                        total += len(event.data)
                    elif isinstance(event, h2.events.StreamEnded):
                        done = True
                pending = conn.data_to_send()
                if pending:
                    sock.sendall(pending)
            print(status, total)
            """
        let node = try httpRouteNode(dir: dir, service: "interop", at: backend.address)
        defer { node.stop() }
        try checkNodeHolds64MiB(node, listener: "web", client: stalled, "h2c download of 64 MiB with open windows, client not reading for 4 s")
    }

    /// HTTP/1.1 over TLS (a NIO pipeline): a client that asks for 64 MiB and does not read for
    /// 4 s. The backend stops being read while the channel is not writable, so the node's peak
    /// memory grows by far less than the response; then the client reads all of it. Without
    /// the pause the node queued the whole response in the channel.
    func testHTTP1OverTLSClientThatDoesNotReadHoldsTheBackend() throws {
        let stalled = """
            import socket, ssl, sys, time
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            sock.connect(("127.0.0.1", int(sys.argv[1])))
            sock.settimeout(60)
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            context.set_alpn_protocols(["http/1.1"])
            sock = context.wrap_socket(sock, server_hostname="interop.example")
            sock.sendall(("GET %s HTTP/1.1\\r\\nHost: interop.example\\r\\nConnection: close\\r\\n\\r\\n" % sys.argv[2]).encode())
            time.sleep(4)
            data = bytearray()
            while True:
                chunk = sock.recv(1 << 20)
                if not chunk:
                    break
                data += chunk
            head, _, body = bytes(data).partition(b"\\r\\n\\r\\n")
            print(head.split(b" ")[1].decode(), len(body))
            """
        try #"""
            {"httproute": {"manifests": "\#(dir)/routes", "services": {"interop": "\#(backend.address)"}, "requestTimeout": 300,
                           "listeners": [{"name": "secure", "port": 0, "tls": {"certificateDir": "\#(dir)/certs"}}]}}
            """#.write(toFile: "\(dir)/ugate.json", atomically: true, encoding: .utf8)
        let node = try UgateNode(["run", "--config", "\(dir)/ugate.json", "--base-port", "0", "--identity-dir", "\(dir)/node", "--log-level", "warning"])
        defer { node.stop() }
        try checkNodeHolds64MiB(node, listener: "secure", client: stalled, "HTTP/1.1 over TLS download of 64 MiB, client not reading for 4 s")
    }
}
