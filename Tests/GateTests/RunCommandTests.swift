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
    }

    func testDefaultNodePrintsPortsAndServesSOCKS5() throws {
        let origin = try TinyHTTPServer()
        defer { origin.stop() }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: ugatePath)
        p.arguments = ["run", "--base-port", "0"]
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle.nullDevice
        try p.run()
        defer {
            kill(p.processIdentifier, SIGTERM)
            p.waitUntilExit()
        }
        var text = ""
        let reader = out.fileHandleForReading
        while !text.contains("redirect-in") {
            let data = reader.availableData
            if data.isEmpty { break }
            text += String(decoding: data, as: UTF8.self)
        }
        XCTAssertTrue(text.contains("admin"), text)
        let socksLine = text.split(separator: "\n").first { $0.contains("socks5") }.map(String.init) ?? ""
        let port = socksLine.split(separator: ":").last.map { String($0) } ?? ""
        XCTAssertFalse(port.isEmpty, text)
        let curl = try tool("curl")
        let r = try runProcess(curl, ["-sS", "--max-time", "20", "--socks5-hostname", "127.0.0.1:\(port)", "http://127.0.0.1:\(origin.port)/run"])
        XCTAssertEqual(r.status, 0, r.err)
        XCTAssertTrue(r.out.contains("request=GET /run"), r.out)
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
