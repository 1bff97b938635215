import Foundation
import Glibc
import XCTest

@testable import Gate

/// REDIRECT capture inside a network namespace this test creates: the node binary runs in it
/// with the exempt group, `ugate iptables --netns` installs the rules, and a client that knows
/// nothing of the proxy (curl) reaches an HTTP server through the node.
final class RedirectTests: XCTestCase {
    private var processes: [Process] = []
    private var namespace = ""

    override func tearDown() {
        for p in processes where p.isRunning {
            kill(p.processIdentifier, SIGTERM)
            for _ in 0..<50 where p.isRunning { usleep(100_000) }
            if p.isRunning { kill(p.processIdentifier, SIGKILL) }
            p.waitUntilExit()
        }
        processes = []
        if !namespace.isEmpty { _ = try? runProcess("/usr/sbin/ip", ["netns", "del", namespace]) }
    }

    /// The `ugate` executable next to the test bundle (swift build --build-tests builds both).
    private var ugatePath: String {
        let bundle = Bundle(for: RedirectTests.self).bundleURL
        let candidates = [bundle.appendingPathComponent("ugate"), bundle.deletingLastPathComponent().appendingPathComponent("ugate")]
        return (candidates.first { FileManager.default.isExecutableFile(atPath: $0.path) } ?? candidates[0]).path
    }

    private func start(_ args: [String], log: String) throws -> Process {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
        p.arguments = ["netns", "exec", namespace] + args
        FileManager.default.createFile(atPath: log, contents: nil)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        p.standardOutput = handle
        p.standardError = handle
        try p.run()
        processes.append(p)
        return p
    }

    private func inNamespace(_ args: [String], timeout: Double = 30) throws -> (status: Int32, out: String, err: String) {
        try runProcess("/usr/sbin/ip", ["netns", "exec", namespace] + args, timeout: timeout)
    }

    private func waitFor(_ path: String, _ fragments: [String], timeout: Double = 15) -> String? {
        let end = Date().addingTimeInterval(timeout)
        while Date() < end {
            let text = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
            if let line = text.split(separator: "\n").first(where: { l in fragments.allSatisfy { l.contains($0) } }) { return String(line) }
            usleep(100_000)
        }
        return nil
    }

    func testRedirectCaptureInNamespaceShowsOriginalDestination() throws {
        _ = try tool("nft")
        _ = try tool("curl")
        _ = try tool("setpriv")
        namespace = "ugate-gt-\(getpid())"
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent(namespace).path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }

        XCTAssertEqual(try runProcess("/usr/sbin/ip", ["netns", "add", namespace]).status, 0)
        XCTAssertEqual(try inNamespace(["ip", "link", "set", "lo", "up"]).status, 0)
        XCTAssertEqual(try inNamespace(["ip", "addr", "add", "10.77.0.2/32", "dev", "lo"]).status, 0)

        let nodeLog = "\(dir)/node.log"
        _ = try start(["setpriv", "--regid", "1337", "--clear-groups", ugatePath, "run"], log: nodeLog)
        XCTAssertNotNil(waitFor(nodeLog, ["ready"]), (try? String(contentsOfFile: nodeLog, encoding: .utf8)) ?? "")
        let rules = try inNamespace([ugatePath, "iptables", "--netns", namespace, "--apply"])
        XCTAssertEqual(rules.status, 0, rules.err)
        // The rules are only inside the namespace (nft runs there).
        XCTAssertTrue(try inNamespace(["nft", "list", "table", "inet", "ugate"]).out.contains("redirect to :15001"))

        _ = try start(["python3", "-m", "http.server", "8000", "--bind", "10.77.0.2", "--directory", dir], log: "\(dir)/http.log")
        var response = (status: Int32(-1), out: "", err: "")
        for _ in 0..<50 where response.status != 0 {
            response = try inNamespace(["curl", "-sS", "--max-time", "5", "http://10.77.0.2:8000/node.log"])
            if response.status != 0 { usleep(100_000) }
        }
        XCTAssertEqual(response.status, 0, response.err)
        XCTAssertTrue(response.out.contains("ready"), "the file came through: \(response.out)")

        let line = waitFor(nodeLog, ["stream", "listener=redirect-out", "dst=10.77.0.2:8000", "proto=http/1.1", "sni=10.77.0.2"])
        XCTAssertNotNil(line, (try? String(contentsOfFile: nodeLog, encoding: .utf8)) ?? "")

        // The node's metrics count the captured stream (its own traffic to 127.0.0.1 is not captured).
        let metrics = try inNamespace(["curl", "-sS", "--max-time", "5", "http://127.0.0.1:15000/metrics"])
        XCTAssertTrue(metrics.out.contains("ugate_gate_streams_opened_total"), metrics.out + metrics.err)

        let removed = try inNamespace([ugatePath, "iptables", "--netns", namespace, "--apply", "--remove"])
        XCTAssertEqual(removed.status, 0, removed.err)
    }
}
