import Foundation
import Glibc
import XCTest

/// `ugate webrtc` (the built binary) with `--stun`, `--turn … --relay-only` against a real coturn.
/// Everything runs in a network namespace the test creates (`ugate-wrtc-<pid>-<n>`): coturn on
/// 10.202.0.3:3478, the offerer on 10.202.0.1, the answerer on 10.202.0.2 (addresses on the
/// namespace's loopback), and pair.py relays the signalling. For the STUN case an nftables source
/// NAT rewrites the offerer's packets to coturn to come from 10.202.0.9, so the server-reflexive
/// candidate differs from the host candidate (libnice drops a srflx equal to its host).
final class WebRTCTURNTests: XCTestCase {
    static let payload = 3_000_000

    func testRelayOnlyOverTURNUDP() throws { try relayOnly(transport: "udp") }
    func testRelayOnlyOverTURNTCP() throws { try relayOnly(transport: "tcp") }

    /// Both sides `--relay-only` through coturn: only relay candidates are signalled, the selected
    /// pair is relay↔relay (the offerer's result line), the payload comes back intact, and coturn
    /// logged the allocations.
    private func relayOnly(transport: String) throws {
        let lab = try TURNLab(nat: false)
        defer { lab.delete() }
        let turn = "--turn turn:\(TURNLab.server):3478?transport=\(transport) --turn-user \(TURNLab.user) --turn-password \(TURNLab.password) --relay-only"
        var signalled: [String] = []
        let summary = try WebRTCInteropTests.runPair(
            offer: WebRTCInteropTests.ugateCommand("offer", "\(turn) --send \(Self.payload)", address: TURNLab.offerer),
            answer: WebRTCInteropTests.ugateCommand("answer", "\(turn) --echo", address: TURNLab.answerer),
            netns: "none", launcher: lab.exec, inspect: { signalled = try Self.candidates(in: $0) })
        WebRTCInteropTests.assertIntact(summary, sender: "offer", payload: Self.payload)
        let result = (summary["results"] as? [String: [String: Any]])?["offer"] ?? [:]
        XCTAssertEqual(result["localCandidate"] as? String, "relay", "\(result)")
        XCTAssertEqual(result["remoteCandidate"] as? String, "relay", "\(result)")
        XCTAssertFalse(signalled.isEmpty, "no candidates signalled")
        XCTAssertTrue(signalled.allSatisfy { $0.contains(" typ relay ") }, "relay-only signals only relay candidates: \(signalled)")
        XCTAssertTrue(signalled.allSatisfy { $0.contains(" \(TURNLab.server) ") }, "relayed addresses are coturn's: \(signalled)")
        let log = lab.coturnLog
        XCTAssertGreaterThanOrEqual(log.components(separatedBy: "ALLOCATE processed, success").count - 1, 2, "coturn log:\n\(log.suffix(3000))")
    }

    /// `--stun` gathers a server-reflexive candidate (the NAT's address, raddr the host's) and
    /// signals it next to the host candidate; the transfer still completes.
    func testSTUNGathersServerReflexive() throws {
        let lab = try TURNLab(nat: true)
        defer { lab.delete() }
        var signalled: [String] = []
        let summary = try WebRTCInteropTests.runPair(
            offer: WebRTCInteropTests.ugateCommand("offer", "--stun stun:\(TURNLab.server):3478 --send \(Self.payload)", address: TURNLab.offerer),
            answer: WebRTCInteropTests.ugateCommand("answer", "--echo", address: TURNLab.answerer),
            netns: "none", launcher: lab.exec, inspect: { signalled = try Self.candidates(in: $0, side: "offer") })
        WebRTCInteropTests.assertIntact(summary, sender: "offer", payload: Self.payload)
        XCTAssertTrue(signalled.contains { $0.contains(" \(TURNLab.nat) ") && $0.contains(" typ srflx raddr \(TURNLab.offerer) ") },
                      "no srflx candidate \(TURNLab.nat) raddr \(TURNLab.offerer): \(signalled)")
        XCTAssertTrue(signalled.contains { $0.contains(" \(TURNLab.offerer) ") && $0.contains(" typ host") }, "\(signalled)")
    }

    /// Candidate lines (`candidate:…`) in the SDPs and trickled candidates that `side` (or both) signalled.
    private static func candidates(in logs: URL, side: String? = nil) throws -> [String] {
        var found: [String] = []
        for role in side.map({ [$0] }) ?? ["offer", "answer"] {
            let text = try String(contentsOf: logs.appendingPathComponent("\(role).jsonl"), encoding: .utf8)
            for line in text.split(separator: "\n") {
                guard let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else { continue }
                if let sdp = object["sdp"] as? String {
                    found += sdp.split(whereSeparator: \.isNewline).filter { $0.hasPrefix("a=candidate:") }.map { String($0.dropFirst(2)) }
                }
                if let candidate = object["candidate"] as? String, !candidate.isEmpty { found.append(candidate) }
            }
        }
        return found
    }
}

/// A namespace with coturn in it: created by the test, deleted (coturn stopped by PID first) by ``delete()``.
private final class TURNLab {
    static let offerer = "10.202.0.1"
    static let answerer = "10.202.0.2"
    static let server = "10.202.0.3"
    static let nat = "10.202.0.9"
    static let user = "ugate"
    static let password = "relay-secret"

    let name = "ugate-wrtc-\(getpid())-\(UInt16.random(in: 0...UInt16.max))"
    /// Prefix that runs a command inside the namespace.
    var exec: [String] { ["ip", "netns", "exec", name] }
    private let coturn = Process()
    private let logPath: String

    init(nat: Bool) throws {
        logPath = FileManager.default.temporaryDirectory.appendingPathComponent("\(name)-turnserver.log").path
        try Self.ip(["netns", "add", name])
        do {
            try Self.ip(["-n", name, "link", "set", "lo", "up"])
            for address in [Self.offerer, Self.answerer, Self.server, Self.nat] {
                try Self.ip(["-n", name, "addr", "add", "\(address)/32", "dev", "lo"])
            }
            if nat {
                try runCommand(exec + ["nft", "-f", "-"], input: """
                    table ip ugate_wrtc_nat {
                      chain post {
                        type nat hook postrouting priority 100;
                        ip saddr \(Self.offerer) ip daddr \(Self.server) snat to \(Self.nat)
                      }
                    }
                    """)
            }
            guard let binary = ["/usr/bin/turnserver", "/usr/sbin/turnserver"].first(where: FileManager.default.isExecutableFile) else {
                throw NSError(domain: "WebRTCTURNTests", code: 1, userInfo: [NSLocalizedDescriptionKey: "turnserver not installed: apt-get install coturn"])
            }
            FileManager.default.createFile(atPath: logPath, contents: nil)
            coturn.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
            coturn.arguments = Array(exec.dropFirst()) + [
                binary, "-n", "--listening-ip=\(Self.server)", "--relay-ip=\(Self.server)", "--listening-port=3478",
                "--lt-cred-mech", "--user=\(Self.user):\(Self.password)", "--realm=mesh.test", "--no-tls", "--no-dtls",
                "--no-cli", "--fingerprint", "--pidfile=/tmp/\(name).pid", "--log-file=stdout", "--simple-log", "--verbose",
            ]
            let log = FileHandle(forWritingAtPath: logPath)
            coturn.standardOutput = log
            coturn.standardError = log
            try coturn.run()
            try waitForListener()
        } catch {
            delete()
            throw error
        }
    }

    var coturnLog: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    /// Polls `ss` in the namespace (every 50 ms, at most 10 s) until coturn listens on TCP 3478.
    private func waitForListener() throws {
        for _ in 0..<200 {
            if try runCommand(exec + ["ss", "-Hltn", "sport = :3478"]).contains("3478") { return }
            usleep(50_000)
        }
        throw NSError(domain: "WebRTCTURNTests", code: 2, userInfo: [NSLocalizedDescriptionKey: "coturn did not listen:\n\(coturnLog)"])
    }

    /// Stops coturn by PID (SIGTERM, SIGKILL after 1 s), kills what is left in the namespace
    /// (started by this test) and deletes it.
    func delete() {
        if coturn.isRunning {
            kill(coturn.processIdentifier, SIGTERM)
            for _ in 0..<20 where coturn.isRunning { usleep(50_000) }
            if coturn.isRunning { kill(coturn.processIdentifier, SIGKILL) }
            coturn.waitUntilExit()
        }
        for pid in ((try? runCommand(["ip", "netns", "pids", name])) ?? "").split(separator: "\n").compactMap({ Int32($0) }) {
            kill(pid, SIGKILL)
        }
        _ = try? Self.ip(["netns", "del", name])
        try? FileManager.default.removeItem(atPath: logPath)
        try? FileManager.default.removeItem(atPath: "/tmp/\(name).pid")
    }

    private static func ip(_ arguments: [String]) throws { _ = try runCommand(["ip"] + arguments) }
}

/// Runs a command (through /usr/bin/env), returns its stdout; throws when it fails.
@discardableResult
func runCommand(_ arguments: [String], input: String? = nil) throws -> String {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = arguments
    let output = Pipe()
    let stdin = Pipe()
    process.standardOutput = output
    process.standardError = output
    process.standardInput = stdin
    try process.run()
    if let input { stdin.fileHandleForWriting.write(Data(input.utf8)) }
    try stdin.fileHandleForWriting.close()
    let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    process.waitUntilExit()
    guard process.terminationStatus == 0 else {
        throw NSError(domain: "WebRTCTURNTests", code: 3, userInfo: [NSLocalizedDescriptionKey: "\(arguments.joined(separator: " ")) failed: \(text)"])
    }
    return text
}
