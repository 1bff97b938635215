import Foundation
import Glibc
import XCTest

@testable import Gate

/// A `ugate run` process (stdout read until its banner is complete, stderr to `stderr` or
/// discarded), stopped with SIGTERM by `stop()`.
final class UgateNode {
    let process = Process()
    /// The startup banner (listener lines, up to the `ready` line).
    private(set) var banner = ""

    init(_ args: [String], stderr: String? = nil) throws {
        process.executableURL = URL(fileURLWithPath: ugateExecutable())
        process.arguments = args
        let out = Pipe()
        process.standardOutput = out
        if let stderr {
            guard FileManager.default.createFile(atPath: stderr, contents: nil) else { throw GateError(.config, "cannot create \(stderr)") }
            process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: stderr))
        } else {
            process.standardError = FileHandle.nullDevice
        }
        try process.run()
        for _ in 0..<200 where !banner.contains("ready") {
            let data = out.fileHandleForReading.availableData
            if data.isEmpty { break }
            banner += String(decoding: data, as: UTF8.self)
        }
    }

    /// The address (last word) of the banner line starting with `name`.
    func address(_ name: String) -> String {
        let line = banner.split(separator: "\n").first { $0.trimmingCharacters(in: .whitespaces).hasPrefix(name + " ") }
        return line.flatMap { $0.split(separator: " ").last }.map(String.init) ?? ""
    }

    /// The node ID `ugate id` creates (or reads) in `identityDir`.
    static func nodeID(_ identityDir: String) throws -> String {
        let r = try runProcess(ugateExecutable(), ["id", "--identity-dir", identityDir, "--json"])
        let id = (try? JSONSerialization.jsonObject(with: Data(r.out.utf8)) as? [String: Any])?["id"] as? String
        guard let id, r.status == 0 else { throw GateError(.config, "ugate id failed: \(r.out) \(r.err)") }
        return id
    }

    func stop() {
        kill(process.processIdentifier, SIGTERM)
        process.waitUntilExit()
    }

    /// Starts node "bob" (identity in `<dir>/bob`) whose mesh admits node "alice" (identity in
    /// `<dir>/alice`, created here) to the `allowing` destinations; returns bob, his node ID and
    /// his mesh (`mesh-dm`) address.
    static func bob(in dir: String, allowing destinations: [String]) throws -> (UgateNode, String, String) {
        let aliceID = try nodeID("\(dir)/alice")
        let bobID = try nodeID("\(dir)/bob")
        let allowed = destinations.map { "\"\($0)\"" }.joined(separator: ", ")
        try #"{"mesh": {"peers": [{"id": "\#(aliceID)", "destinations": [\#(allowed)]}]}}"#
            .write(toFile: "\(dir)/bob.json", atomically: true, encoding: .utf8)
        let bob = try UgateNode(["run", "--config", "\(dir)/bob.json", "--base-port", "0", "--identity-dir", "\(dir)/bob"])
        let mesh = bob.address("mesh-dm")
        guard !mesh.isEmpty else {
            bob.stop()
            throw GateError(.config, "bob printed no mesh-dm address: \(bob.banner)")
        }
        return (bob, bobID, mesh)
    }
}

/// TLSRoute backends are upstreams of the node's route table, like HTTPRoute backends.
final class HTTPRouteTLSRouteMeshTests: XCTestCase {
    /// Two `ugate run` nodes: alice's TLS listener passes `db.example.com` through to a TLS
    /// backend her `routes` send to `mesh:bob`; curl verifies the backend's own certificate
    /// (passthrough through bob, two connections). `other.example` goes to a backend bob's
    /// `destinations` do not allow: the connection is closed and alice logs the refusal, though
    /// that backend is reachable directly (the test fails when passthrough dials directly).
    func testTLSRouteBackendIsAMeshUpstream() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("tlsroute-mesh-\(getpid())-\(UUID())").path
        for sub in ["routes", "backend"] {
            try FileManager.default.createDirectory(atPath: "\(dir)/\(sub)", withIntermediateDirectories: true)
        }
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let dbCert = try makeCertificate("db.example.com", file: "db", in: "\(dir)/backend")
        let otherCert = try makeCertificate("other.example", file: "other", in: "\(dir)/backend")
        let db = try PythonBackend("db", tls: dbCert)
        defer { db.stop() }
        let other = try PythonBackend("other", tls: otherCert)
        defer { other.stop() }
        let (bob, bobID, bobMesh) = try UgateNode.bob(in: dir, allowing: ["127.0.0.1:\(db.port)"])
        defer { bob.stop() }
        func route(_ name: String, _ host: String, _ port: UInt16) -> String {
            "apiVersion: gateway.networking.k8s.io/v1alpha2\nkind: TLSRoute\nmetadata: {name: \(name)}\n"
                + "spec: {hostnames: [\(host)], rules: [{backendRefs: [{name: \(name), port: \(port)}]}]}\n"
        }
        try writeManifest(
            route("db", "db.example.com", db.port) + "---\n" + route("other", "other.example", other.port), "tls.yaml", in: "\(dir)/routes")
        try #"""
            {"mesh": {"peers": [{"id": "\#(bobID)", "name": "bob", "addresses": ["\#(bobMesh)"]}]},
             "routes": [{"dest": "127.0.0.1:\#(db.port)", "to": "mesh:bob"}, {"dest": "127.0.0.1:\#(other.port)", "to": "mesh:bob"}],
             "httproute": {"manifests": "\#(dir)/routes", "services": {"db": "127.0.0.1", "other": "127.0.0.1"},
                           "listeners": [{"name": "tls", "port": 0, "tls": {}}]}}
            """#.write(toFile: "\(dir)/alice.json", atomically: true, encoding: .utf8)
        let alice = try UgateNode(
            ["run", "--config", "\(dir)/alice.json", "--base-port", "0", "--identity-dir", "\(dir)/alice"], stderr: "\(dir)/alice.log")
        defer { alice.stop() }
        let port = try XCTUnwrap(UInt16(alice.address("tls").split(separator: ":").last ?? ""), alice.banner)
        func curl(_ name: String, cacert: String, target: UInt16) throws -> (status: Int32, out: String) {
            let r = try runProcess(
                try tool("curl"),
                ["-sS", "--max-time", "20", "--resolve", "\(name):\(target):127.0.0.1", "--cacert", cacert, "https://\(name):\(target)/x"],
                timeout: 60)
            return (r.status, r.out + r.err)
        }
        for _ in 0..<2 {
            let through = try curl("db.example.com", cacert: dbCert.cert, target: port)
            XCTAssertEqual(through.status, 0, through.out)
            XCTAssertTrue(through.out.contains("\"backend\": \"db\""), through.out)
        }
        let refused = try curl("other.example", cacert: otherCert.cert, target: port)
        XCTAssertNotEqual(refused.status, 0, refused.out)
        XCTAssertTrue(
            eventually(10) { ((try? String(contentsOfFile: "\(dir)/alice.log", encoding: .utf8)) ?? "").contains("passthrough failed") },
            (try? String(contentsOfFile: "\(dir)/alice.log", encoding: .utf8)) ?? "")
        let log = (try? String(contentsOfFile: "\(dir)/alice.log", encoding: .utf8)) ?? ""
        let line = log.split(separator: "\n").first { $0.contains("passthrough failed") } ?? ""
        XCTAssertTrue(line.contains("127.0.0.1:\(other.port)") && line.contains("other.example"), String(line))
        // The refused backend itself is up: only bob's policy stopped the connection.
        let direct = try curl("other.example", cacert: otherCert.cert, target: other.port)
        XCTAssertEqual(direct.status, 0, direct.out)
    }
}
