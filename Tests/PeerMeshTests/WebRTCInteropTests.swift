import Foundation
import XCTest

@testable import PeerMesh

/// `ugate webrtc offer|answer` (the built binary) against aiortc (PyPI), pion (Debian's Go
/// packages), libdatachannel (pylibdatachannel, PyPI), headless Chromium (Debian) and against
/// itself, relayed by `interop/webrtc/pair.py`: JSON-line signalling on stdin/stdout, ICE on
/// loopback (Chromium pairs inside a namespace pair.py creates; libdatachannel pairs over a
/// veth pair between two namespaces, since libjuice gathers no loopback candidates), a
/// multi-megabyte payload sent by one side and echoed by the other, SHA-256 compared, and the
/// sender's close observed by the echoing side (it must exit by itself).
final class WebRTCInteropTests: XCTestCase {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let payload = 6_000_000

    /// `address` defaults to pair.py's `{addr}` placeholder (127.0.0.1, or the veth address).
    static func ugateCommand(_ role: String, _ action: String, address: String = "{addr}") throws -> String {
        let binary = Self.root.appendingPathComponent(".build/debug/ugate").path
        guard FileManager.default.isExecutableFile(atPath: binary) else {
            XCTFail("\(binary) missing: run `swift build --build-tests` first")
            throw CocoaError(.fileNoSuchFile)
        }
        return "\(binary) webrtc \(role) --local-address \(address) --timeout 100 \(action)"
    }

    /// Fails the test (loudly, no skip) when `python3 -c CODE` fails: a tool is missing.
    private func require(python code: String, _ message: String) throws {
        let check = Process()
        check.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        check.arguments = ["python3", "-c", code]
        check.standardError = FileHandle.nullDevice
        try check.run()
        check.waitUntilExit()
        guard check.terminationStatus == 0 else {
            XCTFail(message)
            throw CocoaError(.executableNotLoadable)
        }
    }

    private func aiortcCommand(_ role: String, _ action: String) throws -> String {
        try require(python: "import aiortc", "aiortc is not installed: pip install aiortc")
        return "python3 \(Self.root.path)/interop/webrtc/aiortc_peer.py \(role) --host-address {addr} \(action)"
    }

    private func libdatachannelCommand(_ role: String, _ action: String) throws -> String {
        try require(python: "import pylibdatachannel", "libdatachannel is not installed: pip install pylibdatachannel")
        return "python3 \(Self.root.path)/interop/webrtc/libdatachannel_peer.py \(role) \(action)"
    }

    private func chromiumCommand(_ role: String, _ action: String) throws -> String {
        try require(python: "import shutil, sys; sys.exit(shutil.which('chromium') is None)",
                    "chromium is not installed: apt-get install chromium")
        return "python3 \(Self.root.path)/interop/webrtc/chromium_peer.py \(role) \(action)"
    }

    /// The pion peer, built offline from Debian's Go packages by `pion_peer/build.sh`, which
    /// rebuilds it when missing or older than its source (the same script interop/run uses).
    private func pionCommand(_ role: String, _ action: String) throws -> String {
        let binary = Self.root.appendingPathComponent(".build/interop/pion_peer").path
        let build = Process()
        build.executableURL = URL(fileURLWithPath: Self.root.path + "/interop/webrtc/pion_peer/build.sh")
        build.arguments = [binary]
        try build.run()
        build.waitUntilExit()
        guard build.terminationStatus == 0, FileManager.default.isExecutableFile(atPath: binary) else {
            XCTFail("building the pion peer failed: apt-get install golang-go golang-github-pion-webrtc.v3-dev")
            throw CocoaError(.executableNotLoadable)
        }
        return "\(binary) \(role) \(action)"
    }

    /// Runs pair.py (bounded by its own --timeout and by a 180 s kill here) and returns its summary.
    /// `launcher` prefixes pair.py's command line (e.g. `ip netns exec NAME`); `inspect` sees the
    /// log directory (peers' stderr, `offer.jsonl`/`answer.jsonl` signalling) before it is removed.
    static func runPair(offer: String, answer: String, netns: String, launcher: [String] = [],
                        inspect: (URL) throws -> Void = { _ in },
                        file: StaticString = #filePath, line: UInt = #line) throws -> [String: Any] {
        let logs = FileManager.default.temporaryDirectory.appendingPathComponent("ugate-webrtc-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: logs, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: logs) }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = launcher + ["python3", Self.root.path + "/interop/webrtc/pair.py", "--offer", offer, "--answer", answer,
                                        "--timeout", "120", "--log", logs.path, "--netns", netns]
        let output = Pipe()
        process.standardOutput = output
        try process.run()
        let watchdog = DispatchWorkItem { if process.isRunning { process.terminate() } }
        DispatchQueue.global().asyncAfter(deadline: .now() + 180, execute: watchdog)
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        watchdog.cancel()
        let summary = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] ?? [:]
        try inspect(logs)
        if summary["ok"] as? Bool != true {
            let offerLog = (try? String(contentsOf: logs.appendingPathComponent("offer.log"), encoding: .utf8)) ?? ""
            let answerLog = (try? String(contentsOf: logs.appendingPathComponent("answer.log"), encoding: .utf8)) ?? ""
            XCTFail("pair failed: \(String(decoding: data, as: UTF8.self))\n--- offer log\n\(offerLog.suffix(3000))\n--- answer log\n\(answerLog.suffix(3000))",
                    file: file, line: line)
        }
        return summary
    }

    static func assertIntact(_ summary: [String: Any], sender: String, payload: Int, file: StaticString = #filePath, line: UInt = #line) {
        let results = summary["results"] as? [String: [String: Any]] ?? [:]
        guard let result = results[sender] else {
            return XCTFail("no result from the \(sender) side: \(summary)", file: file, line: line)
        }
        XCTAssertEqual(result["bytes"] as? Int, payload, file: file, line: line)
        XCTAssertEqual(result["receivedBytes"] as? Int, payload, file: file, line: line)
        XCTAssertEqual(result["sentSHA256"] as? String, result["receivedSHA256"] as? String, file: file, line: line)
        XCTAssertEqual((result["sentSHA256"] as? String)?.count, 64, file: file, line: line)
        XCTAssertEqual(summary["closeSeen"] as? Bool, true, "the echoing side did not see the close", file: file, line: line)
    }

    private enum Peer { case ugate, aiortc, pion, libdatachannel, chromium }

    /// One pair run: `sender` ("offer" or "answer") sends `payload` bytes, the other side
    /// echoes. pion v3.1.56 cannot receive messages of 65536 bytes or more (INTEROP.md), so
    /// ugate sends 16 KiB messages when pion is the peer. `trickle` applies to ugate sides.
    private func check(_ offerer: Peer, _ answerer: Peer, sender: String, trickle: Bool = false, payload: Int = payload,
                       file: StaticString = #filePath, line: UInt = #line) throws {
        let small = offerer == .pion || answerer == .pion
        func command(_ peer: Peer, _ role: String) throws -> String {
            let sends = role == sender
            let action = sends ? "--send \(payload)" : "--echo"
            switch peer {
            case .ugate:
                return try Self.ugateCommand(role, (sends ? "--message-size \(small ? 16384 : 65536) " : "") + action + (trickle ? " --trickle" : ""))
            case .aiortc: return try aiortcCommand(role, action)
            case .pion: return try pionCommand(role, action)
            case .libdatachannel: return try libdatachannelCommand(role, action)
            case .chromium: return try chromiumCommand(role, action)
            }
        }
        let peers = [offerer, answerer]
        let netns = peers.contains(.libdatachannel) ? "veth" : peers.contains(.chromium) ? "same" : "none"
        let summary = try Self.runPair(offer: command(offerer, "offer"), answer: command(answerer, "answer"), netns: netns,
                                  file: file, line: line)
        Self.assertIntact(summary, sender: sender, payload: payload, file: file, line: line)
        let sendingPeer = sender == "offer" ? offerer : answerer
        if sendingPeer == .ugate, peers.contains(where: { $0 != .ugate }) {
            // Foreign stacks never advertise a=ugate-max-datagram-size: ugate stays at 1200.
            let result = (summary["results"] as? [String: [String: Any]])?[sender]
            XCTAssertEqual(result?["datagramSize"] as? Int, 1200, "\(summary)", file: file, line: line)
        }
    }

    func testUgateOffersAndSendsAiortcEchoes() throws { try check(.ugate, .aiortc, sender: "offer") }
    func testUgateOffersAndEchoesAiortcSends() throws { try check(.ugate, .aiortc, sender: "answer") }
    func testAiortcOffersUgateAnswersAndSends() throws { try check(.aiortc, .ugate, sender: "answer") }
    func testAiortcOffersAndSendsUgateAnswersAndEchoes() throws { try check(.aiortc, .ugate, sender: "offer", trickle: true) }
    func testUgateCommandLineBothSidesTrickle() throws { try check(.ugate, .ugate, sender: "offer", trickle: true) }
    func testUgateOffersAndSendsPionEchoes() throws { try check(.ugate, .pion, sender: "offer") }
    func testUgateOffersAndEchoesPionSends() throws { try check(.ugate, .pion, sender: "answer") }
    func testPionOffersUgateAnswersAndSends() throws { try check(.pion, .ugate, sender: "answer") }
    func testPionOffersAndSendsUgateAnswersAndEchoes() throws { try check(.pion, .ugate, sender: "offer", trickle: true) }

    // libdatachannel (libjuice ICE) over veth between two namespaces.
    func testUgateOffersAndSendsLibdatachannelEchoes() throws { try check(.ugate, .libdatachannel, sender: "offer") }
    func testUgateOffersAndEchoesLibdatachannelSends() throws { try check(.ugate, .libdatachannel, sender: "answer") }
    func testLibdatachannelOffersUgateAnswersAndSends() throws { try check(.libdatachannel, .ugate, sender: "answer", trickle: true) }
    func testLibdatachannelOffersAndSendsUgateAnswersAndEchoes() throws { try check(.libdatachannel, .ugate, sender: "offer") }

    // Headless Chromium inside a namespace (2 MB: a browser start costs more than the payload).
    func testUgateOffersAndSendsChromiumEchoes() throws { try check(.ugate, .chromium, sender: "offer", payload: 2_000_000) }
    func testUgateOffersAndEchoesChromiumSends() throws { try check(.ugate, .chromium, sender: "answer", payload: 2_000_000) }
    func testChromiumOffersUgateAnswersAndSends() throws { try check(.chromium, .ugate, sender: "answer", trickle: true, payload: 2_000_000) }
    func testChromiumOffersAndSendsUgateAnswersAndEchoes() throws { try check(.chromium, .ugate, sender: "offer", payload: 2_000_000) }

    /// `--signal file:DIR`: both sides exchange descriptions through DIR/offer.jsonl and
    /// DIR/answer.jsonl; the offerer prints only its result line on stdout.
    func testUgateFileSignalling() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("ugate-webrtc-sig-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: dir) }
        func start(_ role: String, _ action: String) throws -> (Process, Pipe) {
            let words = try Self.ugateCommand(role, "--signal file:\(dir.path) \(action)", address: "127.0.0.1").split(separator: " ").map(String.init)
            let process = Process()
            process.executableURL = URL(fileURLWithPath: words[0])
            process.arguments = Array(words.dropFirst())
            let output = Pipe()
            process.standardOutput = output
            process.standardError = FileHandle.nullDevice
            try process.run()
            return (process, output)
        }
        let (answerer, _) = try start("answer", "--echo")
        let (offerer, offerOutput) = try start("offer", "--send \(Self.payload)")
        defer { for p in [offerer, answerer] where p.isRunning { p.terminate() } }
        let text = String(decoding: offerOutput.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        offerer.waitUntilExit()
        answerer.waitUntilExit()  // bounded: --timeout 100, and it exits once the offerer closes
        XCTAssertEqual(offerer.terminationStatus, 0)
        XCTAssertEqual(answerer.terminationStatus, 0)
        let lines = text.split(separator: "\n")
        XCTAssertEqual(lines.count, 1, "stdout must carry only the result line: \(text)")
        let result = try JSONDecoder().decode(ChannelTransfer.Result.self, from: Data((lines.first ?? "").utf8))
        XCTAssertEqual(result.bytes, Self.payload)
        XCTAssertTrue(result.intact, "\(result)")
        let offerLines = try String(contentsOf: dir.appendingPathComponent("offer.jsonl"), encoding: .utf8)
        XCTAssertTrue(offerLines.hasPrefix("{"), offerLines)
        XCTAssertTrue(offerLines.contains("\"type\":\"offer\""), offerLines)
    }
}
