import Foundation
import Glibc
import XCTest

@testable import Gate

/// HTTP/1.1 over TLS on the gate loops (`LoopTLSHandshake`, `LoopTLSSession`,
/// `HTTP1LoopConnection` over TLS) against real peers: curl, `openssl s_client` and Python's
/// ssl module (`SSLObject` on a raw socket, to send garbage, skip close_notify and see the
/// gateway's). h2 over TLS stays on NIO.
final class HTTPRouteLoopTLSTests: XCTestCase {
    let capture = LogCapture()
    var dir = ""
    var backend: BodyBackend!
    var loops: GateLoopGroup!
    var gateway: HTTPGateway!
    var certs: [String: (cert: String, key: String)] = [:]

    override func setUpWithError() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("httproute-looptls-\(getpid())-\(UUID())").path
        try FileManager.default.createDirectory(atPath: "\(dir)/certs", withIntermediateDirectories: true)
        certs["a"] = try makeCertificate("a.example.com", file: "a.example.com", in: "\(dir)/certs")
        certs["b"] = try makeCertificate("*.b.example.com", file: "_.b.example.com", in: "\(dir)/certs")
        backend = try BodyBackend(record: "\(dir)/backend.log")
        try writeOneBackendRoute("body", in: dir)
        let table = RouteTable(routes: try HTTPRouteLoader(services: ["body": backend.address]).load(directory: dir).routes)
        loops = try GateLoopGroup(count: 1)
        gateway = try HTTPGateway(
            table: table, loops: loops, defaultTimeout: 30, accessLog: capture.logger("access"), log: capture.logger("gate"),
            tls: try HTTPRouteTLS(HTTPRouteTLSConfig(certificateDir: "\(dir)/certs")))
    }

    override func tearDown() {
        gateway?.stop()
        gateway?.closeConnections()
        loops?.shutdown()
        backend?.stop()
        try? FileManager.default.removeItem(atPath: dir)
    }

    var port: UInt16 { gateway.address.port }

    /// Handshakes the gateway finished on its gate loop (its debug line per connection).
    var loopHandshakes: Int { capture.lines.filter { $0.hasPrefix("TLS handshake finished on the gate loop") }.count }

    /// curl over TLS to `host` (resolved to the gateway, checked against its certificate).
    func curl(_ host: String, _ path: String, ca: String, _ extra: [String] = []) throws -> (status: Int32, out: String, err: String) {
        try runProcess(
            try tool("curl"),
            ["-sS", "-v", "--max-time", "30", "--cacert", ca, "--resolve", "\(host):\(port):127.0.0.1"] + extra + ["https://\(host):\(port)\(path)"],
            timeout: 60)
    }

    func json(_ text: String) -> [String: Any] {
        (try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any]) ?? [:]
    }

    func testCurlHTTP11OverTLSIsServedOnTheGateLoop() throws {
        let r = try curl("a.example.com", "/one", ca: certs["a"]!.cert, ["--http1.1"])
        XCTAssertEqual(r.status, 0, r.err)
        XCTAssertEqual(json(r.out)["path"] as? String, "/one", r.out)
        XCTAssertTrue(r.err.contains("ALPN: server accepted http/1.1"), r.err)
        XCTAssertNotNil(capture.waitForLine(containing: ["TLS handshake finished on the gate loop", "alpn=http/1.1", "sni=a.example.com"]))
        XCTAssertNotNil(capture.waitForLine(containing: ["request", "path=/one", "proto=http/1.1+tls", "status=200"]))
        // The wildcard certificate for a name below b.example.com, chosen by SNI.
        let b = try curl("x.b.example.com", "/two", ca: certs["b"]!.cert, ["--http1.1"])
        XCTAssertEqual(b.status, 0, b.err)
        XCTAssertEqual(json(b.out)["path"] as? String, "/two", b.out)
        XCTAssertEqual(loopHandshakes, 2)
    }

    func testH2OverTLSStaysOnNIO() throws {
        let r = try curl("a.example.com", "/h2", ca: certs["a"]!.cert, ["--http2"])
        XCTAssertEqual(r.status, 0, r.err)
        XCTAssertTrue(r.err.contains("ALPN: server accepted h2"), r.err)
        XCTAssertEqual(json(r.out)["path"] as? String, "/h2", r.out)
        XCTAssertNotNil(capture.waitForLine(containing: ["request", "path=/h2", "proto=h2", "status=200"]))
        XCTAssertEqual(loopHandshakes, 0, "an h2 client went to the gate loop: \(capture.lines)")
        // A client offering h2 and http/1.1 gets h2 from NIO too.
        let both = try runProcess(
            try tool("openssl"), ["s_client", "-connect", "127.0.0.1:\(port)", "-servername", "a.example.com", "-alpn", "h2,http/1.1"], timeout: 30)
        XCTAssertTrue(both.out.contains("ALPN protocol: h2"), both.out)
        XCTAssertEqual(loopHandshakes, 0)
    }

    func testOpenSSLClientGetsTheCertificateOfItsSNI() throws {
        func sClient(_ sni: String, _ alpn: [String]) throws -> String {
            // The request goes in on stdin; `-ign_eof` waits for the gateway's close.
            let request = "GET /s-client HTTP/1.1\r\nHost: \(sni)\r\nConnection: close\r\n\r\n"
            let script = "printf '\(request.replacingOccurrences(of: "\r\n", with: "\\r\\n"))' | openssl s_client -ign_eof -connect 127.0.0.1:\(port) -servername \(sni) \(alpn.joined(separator: " "))"
            return try runProcess("/bin/sh", ["-c", script], timeout: 30).out
        }
        let a = try sClient("a.example.com", ["-alpn", "http/1.1"])
        XCTAssertTrue(a.contains("subject=CN = a.example.com"), a)
        XCTAssertTrue(a.contains("ALPN protocol: http/1.1"), a)
        XCTAssertTrue(a.contains("HTTP/1.1 200 OK") && a.contains("\"path\": \"/s-client\""), a)
        let b = try sClient("deep.b.example.com", ["-alpn", "http/1.1"])
        XCTAssertTrue(b.contains("subject=CN = *.b.example.com"), b)
        XCTAssertTrue(b.contains("HTTP/1.1 200 OK"), b)
        // No ALPN at all: no ALPN in the answer either, HTTP/1.1 served.
        let none = try sClient("a.example.com", [])
        XCTAssertTrue(none.contains("No ALPN negotiated"), none)
        XCTAssertTrue(none.contains("HTTP/1.1 200 OK"), none)
        XCTAssertEqual(loopHandshakes, 3)
    }

    /// TLS connections gather on the first gate loop while it is not busy (`GateLoopGroup.
    /// packed`), whichever loop's listening socket accepted them: each connection's socket goes
    /// to a loop after its ClientHello anyway. Without it the kernel spreads the eight
    /// connections over both loops' `SO_REUSEPORT` sockets (all on one in 2 of 256 cases).
    func testTLSConnectionsGatherOnTheFirstLoopWhileItIsNotBusy() throws {
        let twoLoops = try GateLoopGroup(count: 2)
        defer { twoLoops.shutdown() }
        let table = RouteTable(routes: try HTTPRouteLoader(services: ["body": backend.address]).load(directory: dir).routes)
        let gate = try HTTPGateway(
            table: table, loops: twoLoops, defaultTimeout: 30, accessLog: capture.logger("access"), log: capture.logger("gate"),
            tls: try HTTPRouteTLS(HTTPRouteTLSConfig(certificateDir: "\(dir)/certs")))
        defer {
            gate.stop()
            gate.closeConnections()
        }
        let client = BackgroundProcess(
            "/usr/bin/env", ["python3", "-c", Self.client, "\(gate.address.port)", "a.example.com", "gather", dir], timeout: 90)
        defer { _ = FileManager.default.createFile(atPath: "\(dir)/go", contents: nil) }
        XCTAssertTrue(eventually(30) { FileManager.default.fileExists(atPath: "\(dir)/hello") }, "the client's requests were not answered")
        let loops = gate.loopConnectionHandles.map(\.loop.index)
        XCTAssertEqual(loops, Array(repeating: 0, count: 8), "the loops serving the eight connections")
        XCTAssertTrue(FileManager.default.createFile(atPath: "\(dir)/go", contents: nil))
        let r = client.wait(90)
        XCTAssertEqual(r?.out.trimmingCharacters(in: .whitespacesAndNewlines), "served", r?.err ?? "client did not finish")
    }

    /// Which loop `packed` picks: the first below half busy, else the least busy.
    func testPackedPicksTheFirstLoopBelowHalfBusyElseTheLeastBusy() {
        XCTAssertEqual(GateLoopGroup.packed([0, 0]), 0)
        XCTAssertEqual(GateLoopGroup.packed([499, 0]), 0)
        XCTAssertEqual(GateLoopGroup.packed([500, 100]), 1)
        XCTAssertEqual(GateLoopGroup.packed([900, 600, 200]), 2)
        XCTAssertEqual(GateLoopGroup.packed([900, 600, 700]), 1)
        XCTAssertEqual(GateLoopGroup.packed([]), nil)
    }

    func testKeepAliveAndPipeliningOnOneTLSConnection() throws {
        let out = try pythonScenario(Self.client, port: Int(port), "a.example.com", "keepalive")
        XCTAssertEqual(out, "alpn=http/1.1 responses=/k0,/k1,/k2,/k3,/k4,/p0,/p1,/p2", out)
        XCTAssertEqual(loopHandshakes, 1, "one connection for all eight requests")
        let served = backend.lines(waitingFor: ["GET /p2"]).filter { $0.hasPrefix("GET /k") || $0.hasPrefix("GET /p") }
        XCTAssertEqual(served.count, 8, "\(served)")
    }

    func testLargeUploadAndDownload() throws {
        var generator = SystemRandomNumberGenerator()
        let size = 6_000_000
        let upload = Data((0..<size).map { _ in UInt8.random(in: 0...255, using: &generator) })
        try upload.write(to: URL(fileURLWithPath: "\(dir)/upload"))
        let sha = try runProcess(try tool("sha256sum"), ["\(dir)/upload"]).out.split(separator: " ").first.map(String.init) ?? "?"
        let up = try curl("a.example.com", "/upload", ca: certs["a"]!.cert, ["--http1.1", "--data-binary", "@\(dir)/upload"])
        XCTAssertEqual(up.status, 0, up.err)
        XCTAssertEqual(json(up.out)["len"] as? Int, size, up.out)
        XCTAssertEqual(json(up.out)["sha"] as? String, sha, up.out)
        // 24 MB down (the backend's `/big/N`: N bytes of "x").
        let count = 24_000_000
        let down = try curl("a.example.com", "/big/\(count)", ca: certs["a"]!.cert, ["--http1.1", "-o", "\(dir)/download"])
        XCTAssertEqual(down.status, 0, down.err)
        let bytes = try Data(contentsOf: URL(fileURLWithPath: "\(dir)/download"))
        XCTAssertEqual(bytes.count, count)
        XCTAssertTrue(bytes.allSatisfy { $0 == UInt8(ascii: "x") }, "the download is not all x")
        XCTAssertNotNil(capture.waitForLine(containing: ["request", "path=/big/\(count)", "proto=http/1.1+tls", "bytes=\(count)"]))
    }

    func testBrokenClientsGetClearErrorsWhileOthersAreServed() throws {
        // A first request leaves its backend connection in the pool: counted in `start`.
        XCTAssertEqual(try curl("a.example.com", "/warm", ca: certs["a"]!.cert, ["--http1.1"]).status, 0)
        usleep(300_000)
        let start = Sys.openDescriptors()
        // No cipher in common (RSA key exchange only; the certificate is ECDSA).
        let noCipher = try runProcess(
            try tool("openssl"),
            ["s_client", "-connect", "127.0.0.1:\(port)", "-servername", "a.example.com", "-tls1_2", "-cipher", "AES128-SHA", "-alpn", "http/1.1"],
            timeout: 30)
        XCTAssertNotEqual(noCipher.status, 0)
        let failed = capture.waitForLine(containing: ["TLS handshake failed", "sni=a.example.com", "no shared cipher"])
        XCTAssertNotNil(failed, capture.lines.joined(separator: "\n"))
        // A ClientHello followed by a record that is no handshake message; garbage after a
        // finished handshake, while another connection stays open and is served after it.
        XCTAssertEqual(try pythonScenario(Self.client, port: Int(port), "a.example.com", "badhandshake"), "closed")
        XCTAssertNotNil(capture.waitForLine(containing: ["TLS handshake failed", "src=127.0.0.1"]))
        XCTAssertEqual(try pythonScenario(Self.client, port: Int(port), "a.example.com", "garbage"), "before=200 garbage=closed after=200")
        XCTAssertNotNil(capture.waitForLine(containing: ["TLS error, connection closed", "sni=a.example.com", "bad record mac"]), capture.lines.joined(separator: "\n"))
        // Not TLS at all (a handshake record that is no ClientHello): refused before any TLS.
        let fd = try TestSocket.connect("127.0.0.1", port)
        try TestSocket.writeAll(fd, [0x16, 0x03, 0x01, 0x00, 0x05] + Array("hello".utf8))
        XCTAssertEqual(try TestSocket.readToEOF(fd), [])
        close(fd)
        XCTAssertNotNil(capture.waitForLine(containing: ["not a TLS ClientHello"]))
        // Still served, and every descriptor of the failed connections closed.
        let r = try curl("a.example.com", "/still", ca: certs["a"]!.cert, ["--http1.1"])
        XCTAssertEqual(json(r.out)["path"] as? String, "/still", r.err)
        XCTAssertEqual(TestSocket.descriptorsLeftOpen(since: start, socketsOnly: true), [:], "sockets left open by the gateway")
        XCTAssertTrue(eventually(10) { gateway.openConnections == 0 }, "\(gateway.openConnections) connections left")
    }

    func testCloseNotifyBothWays() throws {
        // The client closes without close_notify: the connection ends quietly (debug log).
        XCTAssertEqual(try pythonScenario(Self.client, port: Int(port), "a.example.com", "nonotify"), "200")
        XCTAssertNotNil(capture.waitForLine(containing: ["TLS client closed without close_notify", "sni=a.example.com"]))
        XCTAssertFalse(capture.lines.contains { $0.hasPrefix("TLS error") }, capture.lines.joined(separator: "\n"))
        // The gateway closes (Connection: close): close_notify before its FIN (`idle`: the
        // same wait after a kept-alive response, for the drain test).
        XCTAssertEqual(try pythonScenario(Self.client, port: Int(port), "a.example.com", "servernotify"), "200 close_notify")
        XCTAssertTrue(eventually(10) { gateway.openConnections == 0 }, "\(gateway.openConnections) connections left")
    }

    func testDrainClosesAnIdleTLSConnectionWithCloseNotify() throws {
        // A kept-alive client waits after its request; draining the listener closes it.
        let client = Process()
        client.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        client.arguments = ["python3", "-c", Self.client, "\(port)", "a.example.com", "idle"]
        let out = Pipe()
        client.standardOutput = out
        try client.run()
        defer { if client.isRunning { client.terminate() } }
        XCTAssertNotNil(capture.waitForLine(containing: ["request", "path=/idle", "proto=http/1.1+tls", "status=200"]))
        XCTAssertEqual(gateway.openConnections, 1)
        gateway.drain()
        client.waitUntilExit()
        let said = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        XCTAssertEqual(said.trimmingCharacters(in: .whitespacesAndNewlines), "200 close_notify")
        XCTAssertTrue(eventually(10) { gateway.openConnections == 0 }, "\(gateway.openConnections) connections left")
    }

    /// A drain that begins while a TLS handshake is in progress on the gate loop waits for it:
    /// the handshake is a registered connection (`openConnections`), it finishes, and the
    /// client's first request is answered with `Connection: close`, then close_notify and the
    /// close; every descriptor of it is closed. Without the registration the drain saw no
    /// connection and the request was answered as on any kept-alive connection.
    func testDrainWaitsForATLSHandshakeInProgress() throws {
        try checkDrainWaits("slowhandshake", for: "the handshake in progress")
    }

    /// The drain scenarios: the Python client (`scenario`) stops until the test says `go`; the
    /// connection counts in `openConnections` before and after `drain()` (no second handshake
    /// finished), then its first request is answered with `Connection: close`, close_notify and
    /// the close, and every descriptor is closed.
    func checkDrainWaits(_ scenario: String, for what: String) throws {
        // A first request leaves its backend connection in the pool: counted in `start`.
        XCTAssertEqual(try curl("a.example.com", "/warm", ca: certs["a"]!.cert, ["--http1.1"]).status, 0)
        XCTAssertTrue(eventually(10) { gateway.openConnections == 0 })
        usleep(300_000)
        let start = Sys.openDescriptors()
        let client = BackgroundProcess("/usr/bin/env", ["python3", "-c", Self.client, "\(port)", "a.example.com", scenario, dir], timeout: 90)
        defer { _ = FileManager.default.createFile(atPath: "\(dir)/go", contents: nil) }
        XCTAssertTrue(eventually(30) { FileManager.default.fileExists(atPath: "\(dir)/hello") }, "the client's handshake did not start")
        XCTAssertTrue(eventually(10) { gateway.openConnections == 1 }, "\(what) is not a registered connection")
        gateway.drain()
        XCTAssertEqual(gateway.openConnections, 1, "the drain did not wait for \(what)")
        XCTAssertEqual(loopHandshakes, 1, "only the warm-up's handshake finished")
        XCTAssertTrue(FileManager.default.createFile(atPath: "\(dir)/go", contents: nil))
        let r = client.wait(90)
        XCTAssertEqual(r?.status, 0, r?.err ?? "client did not run or finish")
        XCTAssertEqual(r?.out.trimmingCharacters(in: .whitespacesAndNewlines), "200 close close_notify")
        XCTAssertNotNil(capture.waitForLine(containing: ["request", "path=/drained", "proto=http/1.1+tls", "status=200"]))
        XCTAssertTrue(eventually(10) { gateway.openConnections == 0 }, "\(gateway.openConnections) connections left")
        XCTAssertEqual(TestSocket.descriptorsLeftOpen(since: start, socketsOnly: true), [:], "sockets left open by the gateway")
    }

    /// Shutdown with a TLS handshake that never finishes: the drain waits for it until its time
    /// is up, then closes it (`closeConnections`, logged as a failed handshake naming the drain
    /// timeout) — not the handshake timeout, nor the loops' stop — and its descriptor and SSL
    /// object go.
    func testShutdownClosesAStalledTLSHandshakeAtTheDrainTimeout() throws {
        usleep(300_000)
        let start = Sys.openDescriptors()
        let client = BackgroundProcess("/usr/bin/env", ["python3", "-c", Self.client, "\(port)", "a.example.com", "stalledhandshake", dir], timeout: 90)
        XCTAssertTrue(eventually(30) { FileManager.default.fileExists(atPath: "\(dir)/hello") }, "the client's handshake did not start")
        gateway.drain(permanently: true)
        XCTAssertEqual(gateway.openConnections, 1, "the drain does not wait for the handshake in progress")
        gateway.closeConnections()
        let r = client.wait(90)
        XCTAssertEqual(r?.out.trimmingCharacters(in: .whitespacesAndNewlines), "closed", r?.err ?? "client did not run or finish")
        XCTAssertNotNil(
            capture.waitForLine(containing: ["TLS handshake failed", "sni=a.example.com", "error=shutdown: drain timeout"]), capture.lines.joined(separator: "\n"))
        XCTAssertTrue(eventually(10) { gateway.openConnections == 0 }, "\(gateway.openConnections) connections left")
        XCTAssertEqual(TestSocket.descriptorsLeftOpen(since: start, socketsOnly: true), [:], "sockets left open by the gateway")
    }

    /// A drain that begins while a ClientHello is still arriving (the task reading it, before
    /// the gate loop's handshake) waits for it: the connection counts in `openConnections`
    /// before and after the drain; once the rest of the ClientHello comes, the handshake starts
    /// quiesced, and the first request is answered with `Connection: close`, then close_notify
    /// and the close; every descriptor is closed. Without the registration the drain saw no
    /// connection, and the handshake after it was not quiesced.
    func testDrainWaitsForAClientHelloStillArriving() throws {
        try checkDrainWaits("slowhello", for: "the ClientHello being read")
    }

    /// A reload that removes the Gateway listener while an h2 client's ClientHello is still
    /// arriving (its first 10 bytes sent): the drain waits for the connection (it counts in
    /// `openConnections`), and when the rest comes and NIO takes it (ALPN h2) it is quiesced like
    /// the listener's other connections — GOAWAY(2^31−1) + PING, its request (sent with its
    /// preface) answered, GOAWAY(1), the close. Without it the connection was not quiesced: no
    /// GOAWAY, left open until the drain's end.
    func testRemovedListenerQuiescesAnH2ClientWhoseClientHelloWasArriving() throws {
        let routes = "\(dir)/routes"
        try FileManager.default.createDirectory(atPath: routes, withIntermediateDirectories: true)
        try writeOneBackendRoute("body", in: routes)
        func gateway(_ listener: String) throws {
            try writeManifest(
                """
                apiVersion: gateway.networking.k8s.io/v1
                kind: Gateway
                metadata: {name: gw}
                spec:
                  listeners: [{name: \(listener), port: 443, protocol: HTTPS, tls: {certificateRefs: [{name: a.example.com}]}}]

                """, "gw.yaml", in: routes)
        }
        try gateway("web")
        var config = HTTPRouteConfig(
            manifests: routes, services: ["body": backend.address],
            listeners: [HTTPRouteListenerConfig(name: "web", port: 0, gateway: "gw", tls: HTTPRouteTLSConfig(certificateDir: "\(dir)/certs"))])
        config.reloadInterval = 0.05
        let service = try HTTPRouteService(
            config: config, bind: "127.0.0.1", loops: loops, log: capture.logger("ugate.httproute"), accessLog: capture.logger("access"))
        defer { service.stop() }
        try checkH2Drained("slowhelloh2", port: service.bound[0].address.port, for: "the ClientHello being read", connections: { service.openConnections }) {
            try gateway("renamed")
            XCTAssertNotNil(capture.waitForLine(containing: ["Gateway listener removed, draining its connections", "web"]))
        }
    }

    /// The h2 drain scenarios: the Python client (`scenario`) stops until the test says `go`;
    /// the connection counts in `connections` before and after `drain`, then the client sees
    /// GOAWAY(2^31−1), its request answered to the end, GOAWAY(1) and the close. The client
    /// is waited for on this thread (no worker thread whose exit would close descriptors
    /// during the next test's count).
    func checkH2Drained(_ scenario: String, port: UInt16, for what: String, connections: () -> Int, drain: () throws -> Void) throws {
        let client = try HTTPRouteDrainTests.Client(Self.client, ["\(port)", "a.example.com", scenario, dir])
        defer {
            _ = FileManager.default.createFile(atPath: "\(dir)/go", contents: nil)
            client.kill()
        }
        XCTAssertTrue(eventually(30) { FileManager.default.fileExists(atPath: "\(dir)/hello") }, "the client did not start")
        XCTAssertTrue(eventually(10) { connections() == 1 }, "\(what) is not a registered connection")
        try drain()
        XCTAssertEqual(connections(), 1, "the drain did not wait for \(what)")
        XCTAssertTrue(FileManager.default.createFile(atPath: "\(dir)/go", contents: nil))
        XCTAssertEqual(client.result(), "200 ended [(0, 2147483647), (0, 1)] closed")
        XCTAssertNotNil(capture.waitForLine(containing: ["request", "path=/drained-h2", "proto=h2", "status=200"]))
        XCTAssertTrue(eventually(10) { connections() == 0 }, "\(connections()) connections left")
    }

    /// A drain that begins while an h2 client's TLS handshake is in progress on NIO (its
    /// Finished held back): no HTTP/2 handler is in the pipeline to hear it yet, so
    /// `QuiesceLatch` holds it until ALPN has installed one; the client then gets
    /// GOAWAY(2^31−1), its request (sent with its Finished and preface) answered, GOAWAY(1) and
    /// the close. Without the latch the drain was dropped: no GOAWAY, the connection left open.
    func testDrainDuringAnH2TLSHandshakeOnNIOQuiescesIt() throws {
        try checkH2Drained("slowhandshakeh2", port: port, for: "the handshake in progress", connections: { gateway.openConnections }) { gateway.drain() }
    }

    /// Shutdown with a ClientHello that never completes (a raw client sends a record header and
    /// a few bytes of it): the drain waits for the connection until its time is up, then
    /// `closeConnections` ends the read (`shutdown(2)`; the reading task closes the socket
    /// itself) — not the handshake timeout — so the client sees the close at once and the
    /// descriptor goes. Without the registration the drain saw no connection and the socket
    /// stayed open until the handshake timeout.
    func testShutdownClosesAConnectionWhoseClientHelloIsStillArriving() throws {
        usleep(300_000)
        let start = Sys.openDescriptors()
        let fd = try TestSocket.connect("127.0.0.1", port)
        defer { close(fd) }
        // A handshake record of 512 bytes, a ClientHello of 508, and its first 4 bytes only.
        try TestSocket.writeAll(fd, [0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xFC])
        XCTAssertTrue(eventually(10) { gateway.openConnections == 1 }, "the ClientHello being read is not a registered connection")
        gateway.drain(permanently: true)
        XCTAssertEqual(gateway.openConnections, 1, "the drain does not wait for the ClientHello being read")
        gateway.closeConnections()
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        XCTAssertEqual(try TestSocket.readToEOF(fd), [], "the connection was not closed by closeConnections")
        XCTAssertTrue(eventually(10) { gateway.openConnections == 0 }, "\(gateway.openConnections) connections left")
        XCTAssertEqual(TestSocket.descriptorsLeftOpen(since: start, except: [fd], socketsOnly: true), [:], "sockets left open by the gateway (other than the client's own)")
        XCTAssertEqual(loopHandshakes, 0)
    }

    /// The Python client of the scenarios: TLS through `ssl.SSLObject` over a raw socket, so
    /// raw bytes can be sent and the close seen as it is. Arguments: port, SNI, scenario (the
    /// handshake scenarios: and a folder for their marker files `hello`, `go`).
    static let client = """
        import os, socket, ssl, sys
        port, host, scenario = int(sys.argv[1]), sys.argv[2], sys.argv[3]

        class Conn:
            def __init__(self, alpn=("http/1.1",), handshake=True):
                ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
                if alpn:
                    ctx.set_alpn_protocols(list(alpn))
                self.raw = socket.create_connection(("127.0.0.1", port), timeout=20)
                self.inc, self.out = ssl.MemoryBIO(), ssl.MemoryBIO()
                self.tls = ctx.wrap_bio(self.inc, self.out, server_hostname=host)
                self.buffer = b""
                if handshake:
                    self.handshake()
                    self.flush()
            def handshake(self):
                # Done once the client's last flight is made (left in `out`, not sent).
                while True:
                    try:
                        self.tls.do_handshake()
                        return
                    except ssl.SSLWantReadError:
                        self.flush()
                        self.fill()
            def flush(self):
                data = self.out.read()
                if data:
                    self.raw.sendall(data)
            def fill(self):
                data = self.raw.recv(65536)
                if data:
                    self.inc.write(data)
                else:
                    self.inc.write_eof()
            def send(self, data):
                self.tls.write(data)
                self.flush()
            def read(self):
                while True:
                    try:
                        return self.tls.read(65536)
                    except ssl.SSLWantReadError:
                        self.fill()
            def response(self):
                while b"\\r\\n\\r\\n" not in self.buffer:
                    data = self.read()
                    if not data:
                        raise Exception("closed before a response head")
                    self.buffer += data
                head, self.buffer = self.buffer.split(b"\\r\\n\\r\\n", 1)
                self.head = head.decode().lower()
                lines = head.decode().split("\\r\\n")
                length = 0
                for line in lines[1:]:
                    name, value = line.split(":", 1)
                    if name.lower() == "content-length":
                        length = int(value)
                while len(self.buffer) < length:
                    self.buffer += self.read()
                body, self.buffer = self.buffer[:length], self.buffer[length:]
                return int(lines[0].split(" ")[1]), body
            def raw_until_eof(self):
                while self.raw.recv(65536):
                    pass

        \(pythonNextFrame)
        def wait_go():
            for _ in range(1200):
                if os.path.exists(sys.argv[4] + "/go"):
                    break
                __import__("time").sleep(0.05)

        def get(path, close=False):
            return ("GET %s HTTP/1.1\\r\\nHost: %s\\r\\n%s\\r\\n" % (path, host, "Connection: close\\r\\n" if close else "")).encode()

        if scenario == "keepalive":
            c = Conn()
            paths = []
            for i in range(5):
                c.send(get("/k%d" % i))
                status, body = c.response()
                assert status == 200, status
                paths.append(__import__("json").loads(body)["path"])
            c.send(get("/p0") + get("/p1") + get("/p2"))
            for i in range(3):
                status, body = c.response()
                paths.append(__import__("json").loads(body)["path"])
            print("alpn=%s responses=%s" % (c.tls.selected_alpn_protocol(), ",".join(paths)))
        elif scenario == "badhandshake":
            c = Conn(handshake=False)
            try:
                c.tls.do_handshake()
            except ssl.SSLWantReadError:
                pass
            c.raw.sendall(c.out.read() + b"\\x16\\x03\\x03\\x00\\x04\\xff\\xff\\xff\\xff")
            c.raw_until_eof()
            print("closed")
        elif scenario == "garbage":
            a = Conn()
            a.send(get("/before"))
            before, _ = a.response()
            b = Conn()
            b.raw.sendall(b"\\x17\\x03\\x03\\x00\\x20" + os.urandom(32))
            b.raw_until_eof()
            a.send(get("/after"))
            after, _ = a.response()
            print("before=%d garbage=closed after=%d" % (before, after))
        elif scenario == "gather":
            # Eight kept-alive connections, one request each, held open until `go`.
            conns = [Conn() for _ in range(8)]
            for i, c in enumerate(conns):
                c.send(get("/gather%d" % i))
                status, _ = c.response()
                assert status == 200, status
            open(sys.argv[4] + "/hello", "w").close()
            wait_go()
            print("served")
        elif scenario == "nonotify":
            c = Conn()
            c.send(get("/nonotify"))
            status, _ = c.response()
            c.raw.close()
            print(status)
        elif scenario in ("slowhandshake", "stalledhandshake", "slowhello", "slowhelloh2", "slowhandshakeh2"):
            # slowhandshake, stalledhandshake: the ClientHello out and the gateway's flight in;
            # the client's Finished is held back (the handshake in progress on the gateway)
            # until the test says `go`. slowhello: the first 10 bytes of the ClientHello out,
            # the rest after `go`. The h2 ones the same offering h2, then one h2 request.
            marker = sys.argv[4]
            c = Conn(alpn=("h2", "http/1.1") if scenario.endswith("h2") else ("http/1.1",), handshake=False)
            if scenario.startswith("slowhello"):
                try:
                    c.tls.do_handshake()
                except ssl.SSLWantReadError:
                    pass
                hello = c.out.read()
                c.raw.sendall(hello[:10])
                open(marker + "/hello", "w").close()
                wait_go()
                c.raw.sendall(hello[10:])
                c.fill()
                c.handshake()
                c.flush()
            else:
                c.handshake()
                open(marker + "/hello", "w").close()
            if scenario.startswith("slowhandshake"):
                wait_go()
            if scenario.endswith("h2"):
                # The request goes with the client's preface, before any frame of the gateway is
                # read; prints the status, whether the stream ended, the GOAWAYs, then `closed`.
                import h2.config, h2.connection
                from hyperframe.frame import Frame, DataFrame, GoAwayFrame, HeadersFrame, PingFrame, SettingsFrame
                assert c.tls.selected_alpn_protocol() == "h2", c.tls.selected_alpn_protocol()
                h = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True))
                h.initiate_connection()
                h.send_headers(1, [(":method", "GET"), (":path", "/drained-h2"), (":scheme", "https"), (":authority", host)], end_stream=True)
                c.send(h.data_to_send())
                class Plain:
                    def recv(self, n):
                        try:
                            return c.read()
                        except (ssl.SSLEOFError, ssl.SSLZeroReturnError):
                            return b""
                sock, buf, status, ended, goaways = Plain(), b"", "-", "unfinished", []
                while True:
                    frame = next_frame()
                    if frame is None:
                        break
                    if isinstance(frame, SettingsFrame) and "ACK" not in frame.flags:
                        c.send(SettingsFrame(0, flags=["ACK"]).serialize())
                    elif isinstance(frame, PingFrame) and "ACK" not in frame.flags:
                        c.send(PingFrame(0, frame.opaque_data, flags=["ACK"]).serialize())
                    elif isinstance(frame, HeadersFrame):
                        status = dict(h.decoder.decode(frame.data, raw=True))[b":status"].decode()
                    elif isinstance(frame, GoAwayFrame):
                        goaways.append((frame.error_code, frame.last_stream_id))
                    if isinstance(frame, (HeadersFrame, DataFrame)) and "END_STREAM" in frame.flags:
                        ended = "ended"
                print(status, ended, goaways, "closed")
                sys.exit(0)
            if scenario == "stalledhandshake":
                c.raw_until_eof()
                print("closed")
                sys.exit(0)
            c.send(get("/drained"))
            status, _ = c.response()
            try:
                while c.read():
                    pass
                print(status, "connection: close" in c.head and "close" or "keep-alive", "close_notify")
            except ssl.SSLEOFError:
                print(status, "eof without close_notify")
        elif scenario in ("servernotify", "idle"):
            c = Conn()
            c.send(get("/bye", close=True) if scenario == "servernotify" else get("/idle"))
            status, _ = c.response()
            try:
                while c.read():
                    pass
                print(status, "close_notify")
            except ssl.SSLEOFError:
                print(status, "eof without close_notify")
        """
}
