import Foundation
import XCTest
@testable import PeerMesh

/// A foreign HBONE client (Python `h2` over `ssl` with a client certificate,
/// interop/mesh/hbone_client.py) tunnels through a node to an echo server. Needs `python3` with
/// `h2` (pip install h2); fails, not skips, without them.
final class HBONEInteropTests: XCTestCase {
    private static let script = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("interop/mesh/hbone_client.py").path

    private struct Result: Decodable {
        var status: Int?
        var error: String?
        var sent: Int
        var received: Int
        var match: Bool
    }

    private func runClient(_ arguments: [String]) throws -> (Int32, Result?, String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", Self.script] + arguments
        let out = Pipe()
        let err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        let stdout = out.fileHandleForReading.readDataToEndOfFile()
        let stderr = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        let lastLine = String(decoding: stdout, as: UTF8.self).split(separator: "\n").last.map(String.init) ?? ""
        return (process.terminationStatus, try? JSONDecoder().decode(Result.self, from: Data(lastLine.utf8)), stderr)
    }

    func testPythonH2ClientTunnelsThroughHBONE() async throws {
        let echo = try await EchoServer.start()
        let forbidden = try await EchoServer.start()
        let clientDir = try temporaryDirectory("py-client")
        defer { try? FileManager.default.removeItem(atPath: clientDir) }
        let client = try NodeIdentity.loadOrCreate(directory: clientDir)
        let gateID = try NodeIdentity.generate()
        let config = MeshConfig(
            identityDir: "/nonexistent", peers: [PeerConfig(id: client.node.id, destinations: ["127.0.0.1:\(echo.port)"])],
            listenHost: "127.0.0.1")
        let gate = try MeshNode(config: config, identity: gateID)
        let port = try await gate.listen(port: 0, name: "mesh-hbone")
        let common = [
            "--connect", "127.0.0.1:\(port)", "--cert", "\(clientDir)/cert.pem", "--key", "\(clientDir)/key.pem",
            "--fingerprint", gateID.fingerprint, "--server-name", gateID.mangledHostname,
        ]

        let (status, result, stderr) = try runClient(common + ["--authority", "127.0.0.1:\(echo.port)", "--size", "\(2 << 20)"])
        XCTAssertEqual(status, 0, stderr)
        XCTAssertEqual(result?.status, 200)
        XCTAssertEqual(result?.received, 2 << 20)
        XCTAssertEqual(result?.match, true)
        XCTAssertEqual(echo.accepted, 1)

        let (refusedStatus, refused, refusedErr) = try runClient(
            common + ["--authority", "127.0.0.1:\(forbidden.port)", "--expect-status", "403"])
        XCTAssertEqual(refusedStatus, 0, refusedErr)
        XCTAssertEqual(refused?.status, 403)
        XCTAssertTrue(refused?.error?.contains("may not reach") ?? false, "\(String(describing: refused))")
        XCTAssertEqual(forbidden.accepted, 0)

        await gate.shutdown()
        await echo.stop()
        await forbidden.stop()
    }
}
