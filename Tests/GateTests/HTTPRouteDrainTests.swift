import Foundation
import Glibc
import XCTest

@testable import Gate

/// Graceful drain beyond the idle timeout: on `ugate run`'s SIGTERM, and when a reload removes
/// the Gateway listener a configured listener serves, HTTP/2 connections get GOAWAY(2^31−1) +
/// PING, then GOAWAY(last stream) after the PING ACK, and the stream in flight completes before
/// the close; an HTTP/1.1 request in flight is answered with `Connection: close`, an idle
/// HTTP/1.1 connection is closed. Requests are held at the backend until the test releases
/// them, so the order of events is fixed without timing. The h2c client is
/// `HTTPRouteIdleTests.client` (Python h2 + hyperframe).
final class HTTPRouteDrainTests: XCTestCase {
    /// A backend (started with its directory as the name) that, for paths containing `/hold`,
    /// creates `<dir>/<path>.arrived` and answers
    /// only once `<dir>/release` exists (at most 60 s); 30,000 bytes of body.
    static let holdBackend = """
        import http.server, os, sys, time
        directory = sys.argv[1]
        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            def do_GET(self):
                if "/hold" in self.path:
                    open(os.path.join(directory, self.path.strip("/") + ".arrived"), "w").close()
                    for _ in range(1200):
                        if os.path.exists(os.path.join(directory, "release")):
                            break
                        time.sleep(0.05)
                body = b"x" * 30000
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            def log_message(self, *args):
                pass
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        print(server.server_address[1], flush=True)
        server.serve_forever()
        """

    /// Python: `read_response(s)` reads one HTTP/1.1 response with a `Content-Length` body from
    /// socket `s` (buffering in the global `buf`): (status line, lower-cased fields, body).
    static let readResponse = """
        def read_response(s):
            global buf
            while b"\\r\\n\\r\\n" not in buf:
                data = s.recv(65536)
                if not data:
                    raise SystemExit("closed before a response")
                buf += data
            head, _, buf = buf.partition(b"\\r\\n\\r\\n")
            lines = head.decode().split("\\r\\n")
            fields = {l.split(":", 1)[0].lower(): l.split(":", 1)[1].strip() for l in lines[1:]}
            n = int(fields.get("content-length", "0"))
            while len(buf) < n:
                buf += s.recv(65536)
            body, buf = buf[:n], buf[n:]
            return lines[0], fields, body
        """

    /// Python: `until_closed(s)` reads socket `s` until the stream ends: `closed` (EOF),
    /// `reset`, `timeout` (the socket's own), or for TLS sockets `closed` on an SSL error.
    static let untilClosed = """
        def until_closed(s):
            try:
                while s.recv(65536):
                    pass
                return "closed"
            except TimeoutError:
                return "timeout"
            except ConnectionResetError:
                return "reset"
            except OSError as e:
                if type(e).__name__.startswith("SSL"):
                    return "closed"
                raise
        """

    /// HTTP/1.1 over one connection: GET `/quick` first (answered), then, when `path` is not
    /// `-`, GET `path`; then reads until EOF. Prints per response `status connection-header
    /// body-bytes`, then `closed`. Creates `<marker>` after the first response.
    static let http1Client = """
        import socket, sys
        port, path, marker = int(sys.argv[1]), sys.argv[2], sys.argv[3]
        s = socket.create_connection(("127.0.0.1", port), timeout=60)
        buf, out = b"", []
        \(HTTPRouteDrainTests.readResponse)
        \(HTTPRouteDrainTests.untilClosed)
        def response():
            status, fields, body = read_response(s)
            out.append("%s %s %d" % (status.split(" ")[1], fields.get("connection", "-"), len(body)))
        s.sendall(b"GET /quick HTTP/1.1\\r\\nHost: drain.example\\r\\n\\r\\n")
        response()
        open(marker, "w").close()
        if path != "-":
            s.sendall(("GET " + path + " HTTP/1.1\\r\\nHost: drain.example\\r\\n\\r\\n").encode())
            response()
        out.append(until_closed(s))
        print(" ".join(out))
        """

    /// A client process whose output is read when it exits.
    final class Client {
        let process = Process()
        let out = Pipe()
        init(_ script: String, _ args: [String]) throws {
            process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            process.arguments = ["python3", "-c", script] + args
            process.standardOutput = out
            try process.run()
        }

        /// Stdout once the process ended (bounded by its own 60 s socket timeout).
        func result() -> String {
            let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            process.waitUntilExit()
            return text.trimmingCharacters(in: .whitespacesAndNewlines)
        }

        func kill() { if process.isRunning { Glibc.kill(process.processIdentifier, SIGKILL) } }
    }

    func exists(_ path: String) -> Bool { FileManager.default.fileExists(atPath: path) }

    /// SIGTERM to `ugate run` while an h2c request and an HTTP/1.1 request are in flight and an
    /// HTTP/1.1 connection is idle: the listener stops accepting, the h2c client sees the
    /// two-step GOAWAY and then its response, the HTTP/1.1 request is answered with
    /// `Connection: close`, the idle connection is closed, and the node exits 0 once they are done.
    func testInFlightRequestsCompleteAcrossSigterm() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("drain-\(getpid())-\(UUID())").path
        for sub in ["routes", "marks"] { try FileManager.default.createDirectory(atPath: "\(dir)/\(sub)", withIntermediateDirectories: true) }
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let backend = try PythonBackend("\(dir)/marks", script: Self.holdBackend)
        defer { backend.stop() }
        try writeManifest(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: hold}\nspec:\n  rules: [{backendRefs: [{name: hold, port: 80}]}]\n",
            "hold.yaml", in: "\(dir)/routes")
        try #"""
            {"httproute": {"manifests": "\#(dir)/routes", "services": {"hold": "\#(backend.address)"}, "shutdownTimeout": 60,
                           "listeners": [{"name": "web", "port": 0}]}}
            """#.write(toFile: "\(dir)/ugate.json", atomically: true, encoding: .utf8)
        let node = try UgateNode(
            ["run", "--config", "\(dir)/ugate.json", "--base-port", "0", "--identity-dir", "\(dir)/node", "--log-level", "warning"])
        defer { if node.process.isRunning { node.stop() } }
        let address = node.address("web")
        let port = try XCTUnwrap(address.split(separator: ":").last.map(String.init), node.banner)

        let h2 = try Client(HTTPRouteIdleTests.client, [port, "h2c", "now", "/hold-h2", "\(dir)/marks/h2.goaway"])
        defer { h2.kill() }
        let h1 = try Client(Self.http1Client, [port, "/hold-h1", "\(dir)/marks/h1.first"])
        defer { h1.kill() }
        let idle = try Client(Self.http1Client, [port, "-", "\(dir)/marks/idle.first"])
        defer { idle.kill() }
        XCTAssertTrue(eventually { exists("\(dir)/marks/hold-h2.arrived") && exists("\(dir)/marks/hold-h1.arrived") && exists("\(dir)/marks/idle.first") })

        kill(node.process.processIdentifier, SIGTERM)
        XCTAssertTrue(eventually { exists("\(dir)/marks/h2.goaway") }, "no GOAWAY after SIGTERM")
        // The idle HTTP/1.1 connection is closed at once; no new connection is accepted.
        XCTAssertEqual(idle.result(), "200 - 30000 closed")
        XCTAssertTrue(try eventually { try runProcess(try tool("curl"), ["-sS", "--max-time", "5", "http://\(address)/quick"]).status == 7 })
        XCTAssertTrue(node.process.isRunning, "the node must wait for the requests in flight")

        XCTAssertTrue(FileManager.default.createFile(atPath: "\(dir)/marks/release", contents: Data()))
        XCTAssertEqual(h2.result(), "200 [(0, 2147483647), (0, 1)] closed")
        XCTAssertEqual(h1.result(), "200 - 30000 200 close 30000 closed")
        XCTAssertTrue(eventually(30) { !node.process.isRunning }, "the node did not exit after draining")
        XCTAssertEqual(node.process.terminationStatus, 0)
    }

    /// A reload that removes the Gateway listener a configured listener serves drains that
    /// listener's connections (in-flight h2c stream completes after the two-step GOAWAY, idle
    /// HTTP/1.1 connection closed); the listener itself keeps serving new connections.
    func testRemovedGatewayListenerDrainsItsConnections() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("drainreload-\(getpid())-\(UUID())").path
        for sub in ["routes", "marks"] { try FileManager.default.createDirectory(atPath: "\(dir)/\(sub)", withIntermediateDirectories: true) }
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let backend = try PythonBackend("\(dir)/marks", script: Self.holdBackend)
        defer { backend.stop() }
        func gateway(_ listener: String) -> String {
            """
            apiVersion: gateway.networking.k8s.io/v1
            kind: Gateway
            metadata: {name: gw}
            spec:
              listeners: [{name: \(listener), port: 80, protocol: HTTP}]
            ---
            apiVersion: gateway.networking.k8s.io/v1
            kind: HTTPRoute
            metadata: {name: hold}
            spec:
              rules: [{backendRefs: [{name: hold, port: 80}]}]

            """
        }
        try writeManifest(gateway("web"), "gw.yaml", in: "\(dir)/routes")
        let capture = LogCapture()
        let loops = try GateLoopGroup(count: 1)
        defer { loops.shutdown() }
        var config = HTTPRouteConfig(
            manifests: "\(dir)/routes", services: ["hold": backend.address], listeners: [HTTPRouteListenerConfig(name: "web", port: 0, gateway: "gw")])
        config.reloadInterval = 0.05
        let service = try HTTPRouteService(config: config, bind: "127.0.0.1", loops: loops, log: capture.logger("ugate.httproute"))
        defer { service.stop() }
        let port = "\(service.bound[0].address.port)"

        let h2 = try Client(HTTPRouteIdleTests.client, [port, "h2c", "now", "/hold-h2", "\(dir)/marks/h2.goaway"])
        defer { h2.kill() }
        let idle = try Client(Self.http1Client, [port, "-", "\(dir)/marks/idle.first"])
        defer { idle.kill() }
        XCTAssertTrue(eventually { exists("\(dir)/marks/hold-h2.arrived") && exists("\(dir)/marks/idle.first") })
        XCTAssertEqual(service.openConnections, 2)

        // A reload that keeps the listener drains nothing.
        try writeManifest(gateway("web") + "# touched\n", "gw.yaml", in: "\(dir)/routes")
        XCTAssertNotNil(capture.waitForLine(containing: ["routes reloaded"]))
        XCTAssertFalse(exists("\(dir)/marks/h2.goaway"))

        try writeManifest(gateway("renamed"), "gw.yaml", in: "\(dir)/routes")
        XCTAssertNotNil(capture.waitForLine(containing: ["Gateway listener removed, draining its connections", "web"]))
        XCTAssertTrue(eventually { exists("\(dir)/marks/h2.goaway") }, "no GOAWAY after the listener was removed")
        XCTAssertEqual(idle.result(), "200 - 30000 closed")
        XCTAssertTrue(FileManager.default.createFile(atPath: "\(dir)/marks/release", contents: Data()))
        XCTAssertEqual(h2.result(), "200 [(0, 2147483647), (0, 1)] closed")
        XCTAssertTrue(eventually { service.openConnections == 0 })
        // New connections are still served by the configured listener.
        let r = try runProcess(try tool("curl"), ["-sS", "--max-time", "20", "-o", "/dev/null", "-w", "%{http_code}", "http://127.0.0.1:\(port)/quick"])
        XCTAssertEqual(r.out, "200", r.err)
    }

    /// `HTTP2IdleMachine.quiesce`: the same two-step GOAWAY with streams open.
    func testQuiesceMachine() {
        typealias M = HTTP2IdleMachine
        var machine = M()
        XCTAssertEqual(machine.start(), [.armIdleTimer])
        XCTAssertEqual(machine.streamOpened(1), [.cancelIdleTimer])
        XCTAssertEqual(machine.streamOpened(3), [], "a stream joining an open one: the timer is already stopped")
        XCTAssertEqual(machine.quiesce(), [.cancelIdleTimer, .goAway(lastStreamID: M.maxStreamID), .ping, .armGraceTimer])
        XCTAssertEqual(machine.quiesce(), [], "a second quiesce does nothing")
        XCTAssertEqual(machine.idleTimerFired(), [])
        XCTAssertEqual(machine.streamOpened(5), [], "a stream that raced the GOAWAY is accepted")
        XCTAssertEqual(machine.streamClosed(), [])
        XCTAssertEqual(machine.drained(), [.goAway(lastStreamID: 5)])
        XCTAssertEqual(machine.streamClosed(), [])
        XCTAssertEqual(machine.streamClosed(), [.close])
        // Already draining for idleness: quiesce adds nothing.
        var idle = M()
        _ = idle.start()
        _ = idle.idleTimerFired()
        XCTAssertEqual(idle.quiesce(), [])
    }
}
