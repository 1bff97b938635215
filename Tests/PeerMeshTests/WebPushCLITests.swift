import Foundation
import Synchronization
import XCTest

@testable import PeerMesh

/// The `ugate push` command line, as a user runs it: `serve`, `subscribe`, `send` as separate
/// processes, plus pywebpush sending to the CLI subscriber.
final class WebPushCLITests: XCTestCase {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// A child process whose stdout is read line by line from a background thread.
    /// Unchecked: `Process` is started and stopped only by the test's thread; the output lines the
    /// reader thread produces are behind mutexes.
    final class Child: @unchecked Sendable {
        let process: Process
        private let lines = Mutex<[String]>([])
        private let partial = Mutex<[UInt8]>([])

        init(_ arguments: [String]) throws {
            let binary = WebPushCLITests.root.appendingPathComponent(".build/debug/ugate").path
            guard FileManager.default.isExecutableFile(atPath: binary) else {
                throw WebPushError(.http, "\(binary) missing: run `swift build --build-tests` first")
            }
            process = Process()
            process.executableURL = URL(fileURLWithPath: binary)
            process.arguments = arguments
            let out = Pipe()
            process.standardOutput = out
            let reader = out.fileHandleForReading
            try process.run()
            Thread.detachNewThread { [self] in
                while true {
                    let data = reader.availableData
                    if data.isEmpty { return }
                    partial.withLock { buffer in
                        buffer += data
                        while let newline = buffer.firstIndex(of: 10) {
                            let line = String(decoding: buffer[..<newline], as: UTF8.self)
                            buffer.removeSubrange(...newline)
                            lines.withLock { $0.append(line) }
                        }
                    }
                }
            }
        }

        /// The `index`-th output line, waiting at most `seconds`.
        func line(_ index: Int, seconds: Double = 30) throws -> String {
            let deadline = Date().addingTimeInterval(seconds)
            while Date() < deadline {
                if let line = lines.withLock({ $0.count > index ? $0[index] : nil }) { return line }
                Thread.sleep(forTimeInterval: 0.02)
            }
            throw WebPushError(.http, "no output line \(index) from \(process.arguments ?? []) within \(seconds) s")
        }

        func stop() {
            if process.isRunning { kill(process.processIdentifier, SIGTERM) }
            process.waitUntilExit()
        }
    }

    func testServeSubscribeSend() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("ugate-push-cli-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }

        let serve = try Child(["push", "serve", "--port", "0", "--store", dir + "/store"])
        defer { serve.stop() }
        let listening = try serve.line(0)
        let url = try XCTUnwrap(listening.split(separator: " ").last.map(String.init), listening)
        XCTAssertTrue(url.hasPrefix("http://127.0.0.1:"), listening)

        let subscribe = try Child(["push", "subscribe", "--service", url, "--count", "2", "--wait", "5"])
        defer { subscribe.stop() }
        let subscriptionJSON = try subscribe.line(0)
        let subscription = try JSONDecoder().decode(W3CPushSubscription.self, from: Data(subscriptionJSON.utf8))
        XCTAssertTrue(subscription.endpoint.hasPrefix(url + "/push/"))
        XCTAssertEqual(try Base64URL.decode(subscription.keys.p256dh).count, 65)
        XCTAssertEqual(try Base64URL.decode(subscription.keys.auth).count, 16)
        let file = dir + "/subscription.json"
        try Data(subscriptionJSON.utf8).write(to: URL(fileURLWithPath: file))

        let send = try Child(["push", "send", "--subscription", file, "--data", "hello from the cli", "--ttl", "60",
                              "--topic", "cli", "--urgency", "high", "--key", dir + "/node-key.pem"])
        let status = try send.line(0)
        send.process.waitUntilExit()
        XCTAssertTrue(status.hasPrefix("201 /message/"), status)
        XCTAssertEqual(send.process.terminationStatus, 0)
        XCTAssertEqual(try subscribe.line(1), "hello from the cli")

        // pywebpush reads the same JSON and reaches the CLI subscriber.
        let object = try JSONSerialization.jsonObject(with: Data(subscriptionJSON.utf8))
        let answer = try WebPushFixtures.peer.call("webpush", [
            "subscription": object, "data": Base64URL.encode(Array("hello from pywebpush".utf8)),
        ])
        XCTAssertEqual(answer["status"] as? Int, 201, "\(answer)")
        XCTAssertEqual(try subscribe.line(2), "hello from pywebpush")
        subscribe.process.waitUntilExit()
        XCTAssertEqual(subscribe.process.terminationStatus, 0)

        // A refused send exits 1 and prints the status and reason.
        let bad = try Child(["push", "send", "--subscription", file, "--data", "x", "--topic", "no spaces allowed", "--key", dir + "/node-key.pem"])
        let refusal = try bad.line(0)
        bad.process.waitUntilExit()
        XCTAssertTrue(refusal.hasPrefix("400 ") && refusal.contains("Topic"), refusal)
        XCTAssertEqual(bad.process.terminationStatus, 1)
    }

    /// A subscriber keeps its subscription across a restart of the push service: it reconnects
    /// by itself and receives what was sent after the restart; the restarted service still has
    /// the subscription (file store).
    func testSubscriberReconnectsAfterServiceRestart() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("ugate-push-restart-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }

        var serve = try Child(["push", "serve", "--port", "0", "--store", dir + "/store"])
        defer { serve.stop() }
        let listening = try serve.line(0)
        let url = try XCTUnwrap(listening.split(separator: " ").last.map(String.init), listening)
        let port = try XCTUnwrap(url.split(separator: ":").last.map(String.init))

        let subscribe = try Child(["push", "subscribe", "--service", url, "--count", "2", "--wait", "2"])
        defer { subscribe.stop() }
        let subscriptionJSON = try subscribe.line(0)
        let file = dir + "/subscription.json"
        try Data(subscriptionJSON.utf8).write(to: URL(fileURLWithPath: file))

        func send(_ text: String) throws {
            let send = try Child(["push", "send", "--subscription", file, "--data", text, "--key", dir + "/node-key.pem"])
            let status = try send.line(0)
            send.process.waitUntilExit()
            XCTAssertTrue(status.hasPrefix("201 "), status)
        }
        try send("before restart")
        XCTAssertEqual(try subscribe.line(1), "before restart")

        serve.stop()
        serve = try Child(["push", "serve", "--port", port, "--store", dir + "/store"])
        XCTAssertEqual(try serve.line(0), listening)
        try send("after restart")
        XCTAssertEqual(try subscribe.line(2), "after restart")
        subscribe.process.waitUntilExit()
        XCTAssertEqual(subscribe.process.terminationStatus, 0)
    }
}
