import Foundation
import Glibc
import XCTest

@testable import Gate

/// `ugate run` as a user runs it: the default node prints its ports and serves; a bad config
/// is rejected with the field's name.
final class RunCommandTests: XCTestCase {
    private var ugatePath: String { ugateExecutable() }

    func testBadConfigNamesTheField() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("ugate-bad-\(getpid()).json").path
        try #"{"listeners": {":8080": {"forwardto": "x:1"}}}"#.write(toFile: path, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let r = try runProcess(ugatePath, ["run", "--config", path])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.err.contains(#"listeners[":8080"].forwardto"#), r.err)
        try #"{"mesh": {"peers": [{"id": "x"}]}}"#.write(toFile: path, atomically: true, encoding: .utf8)
        let dir = try temporaryDirectory("bad")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let mesh = try runProcess(ugatePath, ["run", "--config", path, "--identity-dir", dir])
        XCTAssertNotEqual(mesh.status, 0)
        XCTAssertTrue(mesh.err.contains(#"peer ID "x" is not a 52-character base32 node ID"#), mesh.err)
        try #"{"mesh": {"relays": [{"gateway": "gw", "pool": 2}]}}"#.write(toFile: path, atomically: true, encoding: .utf8)
        let unknown = try runProcess(ugatePath, ["run", "--config", path, "--identity-dir", dir])
        XCTAssertNotEqual(unknown.status, 0)
        XCTAssertTrue(unknown.err.contains("unknown field mesh.relays[0].pool"), unknown.err)
        try #"{"mesh": {"reverseTunnels": ["gw"]}}"#.write(toFile: path, atomically: true, encoding: .utf8)
        let unnamed = try runProcess(ugatePath, ["run", "--config", path, "--identity-dir", dir])
        XCTAssertNotEqual(unnamed.status, 0)
        XCTAssertTrue(unnamed.err.contains("field mesh.reverseTunnels[0]: gw is not the name or ID of a peer"), unnamed.err)
    }

    func testDefaultNodePrintsPortsAndServesSOCKS5() throws {
        let origin = try TinyHTTPServer()
        defer { origin.stop() }
        let dir = try temporaryDirectory("run")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (p, text) = try startNode(["run", "--base-port", "0", "--identity-dir", "\(dir)/id"])
        defer { stop(p) }
        XCTAssertTrue(text.contains("admin"), text)
        let port = bannerPort(text, "socks5")
        XCTAssertFalse(port.isEmpty, text)
        let curl = try tool("curl")
        let r = try runProcess(curl, ["-sS", "--max-time", "20", "--socks5-hostname", "127.0.0.1:\(port)", "http://127.0.0.1:\(origin.port)/run"])
        XCTAssertEqual(r.status, 0, r.err)
        XCTAssertTrue(r.out.contains("request=GET /run"), r.out)
    }

    /// The wiring of `ugate run` beyond the gate: the WebPush service answers on the admin port,
    /// the mesh ports speak mTLS with ALPN h2 to a configured peer and refuse a stranger, and a
    /// route may name the peer's upstream `mesh:<name>`.
    func testNodeServesPushAndMeshPorts() throws {
        let dir = try temporaryDirectory("wiring")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let peer = try runProcess(ugatePath, ["id", "--identity-dir", "\(dir)/peer", "--json"])
        XCTAssertEqual(peer.status, 0, peer.err)
        let peerID = try XCTUnwrap(
            (try JSONSerialization.jsonObject(with: Data(peer.out.utf8)) as? [String: Any])?["id"] as? String, peer.out)
        XCTAssertEqual(try runProcess(ugatePath, ["id", "--identity-dir", "\(dir)/stranger"]).status, 0)
        let config = "\(dir)/ugate.json"
        try #"{"mesh": {"peers": [{"id": "\#(peerID)", "name": "bob"}]}, "routes": [{"dest": "10.9.9.9:80", "to": "mesh:bob"}]}"#
            .write(toFile: config, atomically: true, encoding: .utf8)
        let (p, text) = try startNode(["run", "--config", config, "--base-port", "0", "--identity-dir", "\(dir)/node"])
        defer { stop(p) }
        XCTAssertTrue(text.contains("mesh:bob"), text)
        XCTAssertTrue(FileManager.default.fileExists(atPath: "\(dir)/node/key.pem"))

        let curl = try tool("curl")
        let sub = try runProcess(curl, [
            "-sS", "--max-time", "20", "-X", "POST", "-o", "/dev/null", "-D", "-",
            "http://127.0.0.1:\(bannerPort(text, "admin"))/subscribe",
        ])
        XCTAssertEqual(sub.status, 0, sub.err)
        XCTAssertTrue(sub.out.hasPrefix("HTTP/1.1 201"), sub.out)
        XCTAssertTrue(sub.out.lowercased().contains("location: /subscription/"), sub.out)
        XCTAssertTrue(FileManager.default.fileExists(atPath: "\(dir)/node/push"))

        let openssl = try tool("openssl")
        for name in ["mesh-dm", "mesh-hbone"] {
            let port = bannerPort(text, name)
            XCTAssertFalse(port.isEmpty, text)
            let known = try runProcess(openssl, [
                "s_client", "-connect", "127.0.0.1:\(port)", "-alpn", "h2",
                "-cert", "\(dir)/peer/cert.pem", "-key", "\(dir)/peer/key.pem",
            ], timeout: 20)
            XCTAssertTrue(known.out.contains("ALPN protocol: h2"), known.out + known.err)
            XCTAssertTrue(known.out.contains("CN = \(bannerValue(text, "node-id"))"), known.out)
            XCTAssertFalse(known.err.contains("alert"), known.err)
            // -ign_eof reads on after the handshake: the server's alert for the unknown key ends it.
            let stranger = try runProcess(openssl, [
                "s_client", "-connect", "127.0.0.1:\(port)", "-alpn", "h2", "-ign_eof",
                "-cert", "\(dir)/stranger/cert.pem", "-key", "\(dir)/stranger/key.pem",
            ], timeout: 20)
            XCTAssertTrue(stranger.err.contains("alert certificate unknown"), stranger.out + stranger.err)
        }
    }

    /// Two `ugate run` nodes: alice routes 127.0.0.1 to `mesh:bob`; bob lets alice reach only
    /// the first origin. A SOCKS5 request at alice reaches that origin through bob; one for the
    /// second origin is refused by bob's policy (it would succeed dialled directly).
    func testRouteSendsStreamsThroughPeer() throws {
        let allowed = try TinyHTTPServer()
        defer { allowed.stop() }
        let other = try TinyHTTPServer()
        defer { other.stop() }
        let dir = try temporaryDirectory("mesh-route")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (bob, bobID, bobPort) = try startBob(dir, allowing: allowed.port)
        defer { stop(bob) }
        try #"""
            {"mesh": {"peers": [{"id": "\#(bobID)", "name": "bob", "addresses": ["127.0.0.1:\#(bobPort)"]}]},
             "routes": [{"dest": "127.0.0.1", "to": "mesh:bob"}]}
            """#.write(toFile: "\(dir)/alice.json", atomically: true, encoding: .utf8)
        let (alice, aliceText) = try startNode(["run", "--config", "\(dir)/alice.json", "--base-port", "0", "--identity-dir", "\(dir)/alice"])
        defer { stop(alice) }
        let socks = "127.0.0.1:\(bannerPort(aliceText, "socks5"))"
        let curl = try tool("curl")
        let ok = try runProcess(curl, ["-sS", "--max-time", "20", "--socks5-hostname", socks, "http://127.0.0.1:\(allowed.port)/via-bob"])
        XCTAssertEqual(ok.status, 0, ok.err)
        XCTAssertTrue(ok.out.contains("request=GET /via-bob"), ok.out)
        let refused = try runProcess(curl, ["-sS", "--max-time", "20", "--socks5-hostname", socks, "http://127.0.0.1:\(other.port)/x"])
        XCTAssertNotEqual(refused.status, 0, refused.out)
        let direct = try runProcess(curl, ["-sS", "--max-time", "20", "http://127.0.0.1:\(other.port)/x"])
        XCTAssertEqual(direct.status, 0, direct.err)
    }

    /// HTTPRoute backends as upstreams of the route table: alice's `httproute` listener sends
    /// `/via-bob` to a backend that alice's route table routes to `mesh:bob`; the request goes
    /// through bob to an HTTP server next to bob (two requests on one client connection, the
    /// second over the pooled mesh stream). A backend bob's policy does not allow answers 503
    /// naming it, though it is reachable directly: the backend really was dialled through bob.
    func testHTTPRouteBackendIsAMeshUpstream() throws {
        let store = try TinyHTTPServer()
        defer { store.stop() }
        let other = try TinyHTTPServer()
        defer { other.stop() }
        let dir = try temporaryDirectory("mesh-httproute")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (bob, bobID, bobPort) = try startBob(dir, allowing: store.port)
        defer { stop(bob) }
        try FileManager.default.createDirectory(atPath: "\(dir)/routes", withIntermediateDirectories: true)
        try """
            apiVersion: gateway.networking.k8s.io/v1
            kind: HTTPRoute
            metadata: {name: shop}
            spec:
              hostnames: ["shop.example"]
              rules:
              - matches: [{path: {type: PathPrefix, value: /via-bob}}]
                backendRefs: [{name: store, port: \(store.port)}]
              - matches: [{path: {type: PathPrefix, value: /not-allowed}}]
                backendRefs: [{name: other, port: \(other.port)}]
            """.write(toFile: "\(dir)/routes/shop.yaml", atomically: true, encoding: .utf8)
        try #"""
            {"mesh": {"peers": [{"id": "\#(bobID)", "name": "bob", "addresses": ["127.0.0.1:\#(bobPort)"]}]},
             "routes": [{"dest": "127.0.0.1:\#(store.port)", "to": "mesh:bob"}, {"dest": "127.0.0.1:\#(other.port)", "to": "mesh:bob"}],
             "httproute": {"manifests": "\#(dir)/routes", "services": {"store": "127.0.0.1", "other": "127.0.0.1"},
                           "listeners": [{"name": "web", "port": 0}]}}
            """#.write(toFile: "\(dir)/alice.json", atomically: true, encoding: .utf8)
        let (alice, aliceText) = try startNode(["run", "--config", "\(dir)/alice.json", "--base-port", "0", "--identity-dir", "\(dir)/alice"])
        defer { stop(alice) }
        let web = "127.0.0.1:\(bannerPort(aliceText, "web"))"
        XCTAssertNotEqual(web, "127.0.0.1:", aliceText)
        let curl = try tool("curl")
        let ok = try runProcess(curl, [
            "-sS", "--max-time", "20", "-H", "Host: shop.example", "http://\(web)/via-bob/1", "http://\(web)/via-bob/2",
        ])
        XCTAssertEqual(ok.status, 0, ok.err)
        XCTAssertTrue(ok.out.contains("request=GET /via-bob/1 HTTP/1.1"), ok.out)
        XCTAssertTrue(ok.out.contains("request=GET /via-bob/2 HTTP/1.1"), ok.out)
        let refused = try runProcess(curl, ["-sS", "--max-time", "20", "-H", "Host: shop.example", "http://\(web)/not-allowed"])
        XCTAssertTrue(refused.out.contains("backend default/other:\(other.port)"), refused.out + refused.err)
        let status = try runProcess(curl, ["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "20", "-H", "Host: shop.example", "http://\(web)/not-allowed"])
        XCTAssertEqual(status.out, "503")
        let direct = try runProcess(curl, ["-sS", "--max-time", "20", "http://127.0.0.1:\(other.port)/x"])
        XCTAssertEqual(direct.status, 0, direct.err)
    }

    /// Three `ugate run` nodes from ugate.json alone: bob (as behind NAT) keeps relay-over-SNI
    /// registrations and a reverse tunnel with gate. alice reaches bob's origin (1) by bob's
    /// mangled hostname with no route naming bob (the name routes to `mesh:bob`, which dials
    /// bob at gate's address; gate splices the TLS into a bob registration) and (2) by
    /// `bobID:port` routed to `mesh:gate`, which reaches bob over its reverse tunnel.
    func testConfiguredRelayAndReverseTunnelReachANodeBehindNAT() throws {
        let origin = try TinyHTTPServer()
        defer { origin.stop() }
        let dir = try temporaryDirectory("mesh-nat")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (aliceID, gateID, bobID) = (try nodeID("\(dir)/alice"), try nodeID("\(dir)/gate"), try nodeID("\(dir)/bob"))
        func start(_ name: String, _ config: String) throws -> (Process, String) {
            try config.write(toFile: "\(dir)/\(name).json", atomically: true, encoding: .utf8)
            return try startNode(["run", "--config", "\(dir)/\(name).json", "--base-port", "0", "--identity-dir", "\(dir)/\(name)"])
        }
        let (gate, gateText) = try start("gate", #"""
            {"mesh": {"peers": [{"id": "\#(aliceID)", "destinations": ["\#(bobID):\#(origin.port)"]}, {"id": "\#(bobID)"}]}}
            """#)
        defer { stop(gate) }
        let gateMesh = "127.0.0.1:\(bannerPort(gateText, "mesh-dm"))"
        let (bob, bobText) = try start("bob", #"""
            {"mesh": {"peers": [{"id": "\#(gateID)", "name": "gw", "addresses": ["\#(gateMesh)"],
                                 "destinations": ["127.0.0.1:\#(origin.port)"]},
                                {"id": "\#(aliceID)", "destinations": ["127.0.0.1:\#(origin.port)"]}],
                      "relays": [{"gateway": "gw", "poolSize": 2}], "reverseTunnels": ["gw"]}}
            """#)
        defer { stop(bob) }
        XCTAssertTrue(bobText.contains("sni-relay") && bobText.contains("reverse"), bobText)
        let (alice, aliceText) = try start("alice", #"""
            {"mesh": {"peers": [{"id": "\#(gateID)", "name": "gate", "addresses": ["\#(gateMesh)"], "transport": "hbone"},
                                {"id": "\#(bobID)", "name": "bob", "addresses": ["\#(gateMesh)"]}]},
             "routes": [{"dest": "\#(bobID)", "to": "mesh:gate"}]}
            """#)
        defer { stop(alice) }
        let socks = "127.0.0.1:\(bannerPort(aliceText, "socks5"))"
        let curl = try tool("curl")
        // bob registers and tunnels in the background: retry (bounded) until each path is up.
        for (url, tag) in [("http://\(bobID.lowercased()).default.cluster.local:\(origin.port)/by-name", "by-name"),
                           ("http://\(bobID):\(origin.port)/by-tunnel", "by-tunnel")] {
            var last = (status: Int32(-1), out: "", err: "")
            for _ in 0..<40 {
                last = try runProcess(curl, ["-sS", "--max-time", "10", "--socks5-hostname", socks, url])
                if last.status == 0 { break }
                usleep(250_000)
            }
            XCTAssertEqual(last.status, 0, "\(url): \(last.err)")
            XCTAssertTrue(last.out.contains("request=GET /\(tag)"), last.out)
        }
    }

    /// Starts bob for a two-node test in `dir`: his mesh section admits alice (identity in
    /// `dir/alice`) to `127.0.0.1:port` only. Returns bob, his node ID and his mesh-dm port.
    private func startBob(_ dir: String, allowing port: UInt16) throws -> (Process, String, String) {
        let aliceID = try nodeID("\(dir)/alice")
        let bobID = try nodeID("\(dir)/bob")
        try #"{"mesh": {"peers": [{"id": "\#(aliceID)", "destinations": ["127.0.0.1:\#(port)"]}]}}"#
            .write(toFile: "\(dir)/bob.json", atomically: true, encoding: .utf8)
        let (bob, bobText) = try startNode(["run", "--config", "\(dir)/bob.json", "--base-port", "0", "--identity-dir", "\(dir)/bob"])
        let bobPort = bannerPort(bobText, "mesh-dm")
        XCTAssertFalse(bobPort.isEmpty, bobText)
        return (bob, bobID, bobPort)
    }

    /// The node ID `ugate id` creates (or reads) in `identityDir`.
    private func nodeID(_ identityDir: String) throws -> String {
        let r = try runProcess(ugatePath, ["id", "--identity-dir", identityDir, "--json"])
        XCTAssertEqual(r.status, 0, r.err)
        return (try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as? [String: Any])?["id"] as? String ?? ""
    }

    private func temporaryDirectory(_ tag: String) throws -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("ugate-\(tag)-\(getpid())").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return dir
    }

    /// Starts `ugate` with `args` and returns it with its startup banner (read up to the last
    /// default listener).
    private func startNode(_ args: [String]) throws -> (Process, String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: ugatePath)
        p.arguments = args
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle.nullDevice
        try p.run()
        var text = ""
        let reader = out.fileHandleForReading
        while !text.contains("redirect-in") {
            let data = reader.availableData
            if data.isEmpty { break }
            text += String(decoding: data, as: UTF8.self)
        }
        return (p, text)
    }

    private func stop(_ p: Process) {
        kill(p.processIdentifier, SIGTERM)
        p.waitUntilExit()
    }

    /// The last word of the banner line starting with `name`.
    private func bannerValue(_ banner: String, _ name: String) -> String {
        let line = banner.split(separator: "\n").first { $0.trimmingCharacters(in: .whitespaces).hasPrefix(name + " ") }
        return line.flatMap { $0.split(separator: " ").last }.map(String.init) ?? ""
    }

    /// The port at the end of the banner line starting with `name`.
    private func bannerPort(_ banner: String, _ name: String) -> String {
        String(bannerValue(banner, name).split(separator: ":").last?.prefix { $0.isNumber } ?? "")
    }

    /// `ugate bench-gate` runs the benchmark script with the options it was given and passes its
    /// exit status on (a stand-in script records the arguments; the real benchmark is not a test).
    func testBenchGateRunsTheScriptWithItsOptions() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("ugate-bench-\(getpid())").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let script = "\(dir)/bench-gate"
        try "#!/bin/sh\necho \"args: $*\"\nexit 3\n".write(toFile: script, atomically: true, encoding: .utf8)
        XCTAssertEqual(chmod(script, 0o755), 0)
        let r = try runProcess(ugatePath, ["bench-gate", "--script", script, "--seconds", "2", "--skip-build", "--only", "conn"])
        XCTAssertEqual(r.status, 3, r.err)
        XCTAssertEqual(r.out, "args: --seconds 2 --skip-build --only conn\n")
        let bad = try runProcess(ugatePath, ["bench-gate", "--only", "nope"])
        XCTAssertNotEqual(bad.status, 0)
        XCTAssertTrue(bad.err.contains("--only must be tcp, http, conn or mem"), bad.err)
        // The top-level help lists the subcommand.
        let help = try runProcess(ugatePath, ["--help"])
        XCTAssertTrue(help.out.contains("bench-gate"), help.out)
    }
}
