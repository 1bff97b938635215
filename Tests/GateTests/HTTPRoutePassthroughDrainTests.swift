import Foundation
import Glibc
import XCTest

@testable import Gate

/// TLS passthrough streams drain like the connections NIO serves: on `ugate run`'s SIGTERM the
/// listener stops accepting and an open passthrough stream keeps working until it ends (the
/// node then exits) or until `shutdownTimeout` (then it is closed and the node exits); a reload
/// that removes the Gateway listener leaves the stream running and closes it after
/// `shutdownTimeout`. The client (Python `ssl`, verifying the backend's own certificate, so
/// the stream is really passed through) makes one request, then waits for the test's go
/// before a second one, so the order of events is fixed without timing.
final class HTTPRoutePassthroughDrainTests: XCTestCase {
    /// `port name cafile marks second`: GET /first over TLS to `name` through `port`, creates
    /// `<marks>/first`; waits (at most 60 s) for `<marks>/go`; when `second` is 1 makes a second
    /// request on the same stream and closes it, otherwise (or when `second` is 2, after the
    /// second request) reads until the stream ends. Prints the statuses and how it ended.
    static let client = """
        import os, socket, ssl, sys, time
        port, name, cafile, marks, second = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
        context = ssl.create_default_context(cafile=cafile)
        s = context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=60), server_hostname=name)
        buf, out = b"", []
        \(HTTPRouteDrainTests.readResponse)
        \(HTTPRouteDrainTests.untilClosed)
        def get(path):
            s.sendall(("GET " + path + " HTTP/1.1\\r\\nHost: " + name + "\\r\\n\\r\\n").encode())
            out.append(read_response(s)[0].split(" ")[1])
        get("/first")
        open(os.path.join(marks, "first"), "w").close()
        if second != "0":
            for _ in range(1200):
                if os.path.exists(os.path.join(marks, "go")):
                    break
                time.sleep(0.05)
            get("/second")
        if second == "1":
            s.close()
            out.append("client-closed")
        else:
            out.append(until_closed(s))
        print(" ".join(out))
        """

    var dir = ""
    var backend: PythonBackend!
    var cert: (cert: String, key: String) = ("", "")

    override func setUpWithError() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("ptdrain-\(getpid())-\(UUID())").path
        for sub in ["routes", "marks", "certs"] { try FileManager.default.createDirectory(atPath: "\(dir)/\(sub)", withIntermediateDirectories: true) }
        cert = try makeCertificate("db.example", file: "db", in: "\(dir)/certs")
        backend = try PythonBackend("db", tls: cert)
    }

    override func tearDown() {
        backend?.stop()
        try? FileManager.default.removeItem(atPath: dir)
    }

    func exists(_ name: String) -> Bool { FileManager.default.fileExists(atPath: "\(dir)/marks/\(name)") }

    /// `ugate run` with a TLS listener passing `db.example` through to the backend.
    func startNode(shutdownTimeout: Double) throws -> (UgateNode, String) {
        try writeManifest("# no routes\n", "empty.yaml", in: "\(dir)/routes")
        try #"""
            {"httproute": {"manifests": "\#(dir)/routes", "shutdownTimeout": \#(shutdownTimeout),
                           "listeners": [{"name": "edge", "port": 0, "tls": {"passthrough": {"db.example": "\#(backend.address)"}}}]}}
            """#.write(toFile: "\(dir)/ugate.json", atomically: true, encoding: .utf8)
        let node = try UgateNode(
            ["run", "--config", "\(dir)/ugate.json", "--base-port", "0", "--identity-dir", "\(dir)/node", "--log-level", "warning"])
        let port = try XCTUnwrap(node.address("edge").split(separator: ":").last.map(String.init), node.banner)
        return (node, port)
    }

    /// A new TLS connection to `db.example` through `port` (curl, verifying the backend's certificate).
    func curl(_ port: String) throws -> (status: Int32, out: String, err: String) {
        try runProcess(
            try tool("curl"),
            ["-sS", "--max-time", "10", "--cacert", cert.cert, "--resolve", "db.example:\(port):127.0.0.1", "-o", "/dev/null", "-w", "%{http_code}", "https://db.example:\(port)/new"])
    }

    /// SIGTERM with a passthrough stream open: new connections are refused, the node keeps
    /// running, the stream carries a second request, and once the client closes it the node
    /// exits 0 (long before its 60 s `shutdownTimeout`).
    func testPassthroughStreamFinishesAcrossSigterm() throws {
        let (node, port) = try startNode(shutdownTimeout: 60)
        defer { if node.process.isRunning { node.stop() } }
        XCTAssertEqual(try curl(port).out, "200")
        try assertStreamOutlivesSigterm(node, port: port)
    }

    /// A passthrough stream through `node`'s `port` (first request answered), then SIGTERM:
    /// new connections are refused, the node keeps running, the stream carries a second
    /// request, and once the client closes it the node exits 0.
    func assertStreamOutlivesSigterm(_ node: UgateNode, port: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let client = try HTTPRouteDrainTests.Client(Self.client, [port, "db.example", cert.cert, "\(dir)/marks", "1"])
        defer { client.kill() }
        XCTAssertTrue(eventually { exists("first") }, file: file, line: line)
        kill(node.process.processIdentifier, SIGTERM)
        XCTAssertTrue(try eventually { try curl(port).status == 7 }, "the listener still accepts after SIGTERM", file: file, line: line)
        XCTAssertTrue(node.process.isRunning, "the node must wait for the passthrough stream", file: file, line: line)
        XCTAssertTrue(FileManager.default.createFile(atPath: "\(dir)/marks/go", contents: Data()), file: file, line: line)
        XCTAssertEqual(client.result(), "200 200 client-closed", file: file, line: line)
        XCTAssertTrue(eventually(30) { !node.process.isRunning }, "the node did not exit once the stream ended", file: file, line: line)
        XCTAssertEqual(node.process.terminationStatus, 0, file: file, line: line)
    }

    /// SIGTERM with a passthrough stream the client keeps open: after `shutdownTimeout` (1 s)
    /// the node closes it and exits 0.
    func testPassthroughStreamClosedAtShutdownTimeout() throws {
        let (node, port) = try startNode(shutdownTimeout: 1)
        defer { if node.process.isRunning { node.stop() } }
        let client = try HTTPRouteDrainTests.Client(Self.client, [port, "db.example", cert.cert, "\(dir)/marks", "0"])
        defer { client.kill() }
        XCTAssertTrue(eventually { exists("first") })
        kill(node.process.processIdentifier, SIGTERM)
        XCTAssertEqual(client.result(), "200 closed")
        XCTAssertTrue(eventually(30) { !node.process.isRunning }, "the node did not exit")
        XCTAssertEqual(node.process.terminationStatus, 0)
    }

    /// A reload that removes the Gateway listener a configured TLS listener serves: the open
    /// passthrough stream keeps working (a second request) and is closed after
    /// `shutdownTimeout`; the listener keeps accepting (new connections get what the folder
    /// now says: the TLSRoute still attaches to the renamed TLS listener on the port).
    func testRemovedGatewayListenerClosesPassthroughAfterTimeout() throws {
        func manifests(_ listener: String) -> String {
            """
            apiVersion: gateway.networking.k8s.io/v1
            kind: Gateway
            metadata: {name: gw}
            spec:
              gatewayClassName: ugate
              listeners: [{name: \(listener), port: 443, protocol: TLS, tls: {mode: Passthrough}}]
            ---
            apiVersion: gateway.networking.k8s.io/v1alpha2
            kind: TLSRoute
            metadata: {name: db}
            spec:
              hostnames: [db.example]
              parentRefs: [{name: gw}]
              rules: [{backendRefs: [{name: db, port: \(backend.port)}]}]

            """
        }
        try writeManifest(manifests("edge"), "gw.yaml", in: "\(dir)/routes")
        let capture = LogCapture()
        let loops = try GateLoopGroup(count: 1)
        defer { loops.shutdown() }
        var config = HTTPRouteConfig(
            manifests: "\(dir)/routes", services: ["db": "127.0.0.1"],
            listeners: [HTTPRouteListenerConfig(name: "edge", port: 0, gateway: "gw", tls: HTTPRouteTLSConfig())])
        config.reloadInterval = 0.05
        config.shutdownTimeout = 8
        let service = try HTTPRouteService(config: config, bind: "127.0.0.1", loops: loops, log: capture.logger("ugate.httproute"))
        defer { service.stop() }
        let port = "\(service.bound[0].address.port)"

        let client = try HTTPRouteDrainTests.Client(Self.client, [port, "db.example", cert.cert, "\(dir)/marks", "2"])
        defer { client.kill() }
        XCTAssertTrue(eventually { exists("first") })
        XCTAssertTrue(eventually { service.openPassthroughStreams == 1 })

        try writeManifest(manifests("renamed"), "gw.yaml", in: "\(dir)/routes")
        XCTAssertNotNil(capture.waitForLine(containing: ["Gateway listener removed, draining its connections", "edge"]))
        XCTAssertTrue(FileManager.default.createFile(atPath: "\(dir)/marks/go", contents: Data()))
        XCTAssertEqual(client.result(), "200 200 closed")
        XCTAssertTrue(eventually { service.openPassthroughStreams == 0 })
        XCTAssertEqual(try curl(port).out, "200")
    }

    /// The same through a mesh peer: alice's passthrough backend is routed to `mesh:bob` (the
    /// stream is relayed over bob's mesh stream); SIGTERM to alice leaves the stream working
    /// (a second request), refuses new connections, and alice exits 0 once the client closed it.
    func testPassthroughThroughMeshFinishesAcrossSigterm() throws {
        let (bob, bobID, bobMesh) = try UgateNode.bob(in: dir, allowing: ["127.0.0.1:\(backend.port)"])
        defer { bob.stop() }
        try writeManifest("# no routes\n", "empty.yaml", in: "\(dir)/routes")
        try #"""
            {"mesh": {"peers": [{"id": "\#(bobID)", "name": "bob", "addresses": ["\#(bobMesh)"]}]},
             "routes": [{"dest": "\#(backend.address)", "to": "mesh:bob"}],
             "httproute": {"manifests": "\#(dir)/routes", "shutdownTimeout": 60,
                           "listeners": [{"name": "edge", "port": 0, "tls": {"passthrough": {"db.example": "\#(backend.address)"}}}]}}
            """#.write(toFile: "\(dir)/alice.json", atomically: true, encoding: .utf8)
        let alice = try UgateNode(
            ["run", "--config", "\(dir)/alice.json", "--base-port", "0", "--identity-dir", "\(dir)/alice"], stderr: "\(dir)/alice.log")
        defer { if alice.process.isRunning { alice.stop() } }
        let port = try XCTUnwrap(alice.address("edge").split(separator: ":").last.map(String.init), alice.banner)
        try assertStreamOutlivesSigterm(alice, port: port)
        // The stream went through bob (its summary line names the mesh upstream, not direct).
        let log = (try? String(contentsOfFile: "\(dir)/alice.log", encoding: .utf8)) ?? ""
        let line = log.split(separator: "\n").first { $0.contains("sni=db.example") && $0.contains("stream") }.map(String.init) ?? log
        XCTAssertFalse(line.contains("upstream=direct"), line)
        XCTAssertTrue(line.contains("upstream=mesh:bob") || line.contains("h2-dm"), line)
    }
}
