import ArgumentParser
import Foundation
import Gate
import PeerMesh

/// `ugate push bench`: end-to-end messages per second through the node's push service
/// (encrypt + VAPID + POST + long-poll delivery + decrypt + ack) and the per-message cost of
/// encrypt+sign against pywebpush in the same run. Prints numbers; asserts nothing about time.
struct BenchPush: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench", abstract: "Benchmark the push path end to end and encrypt+sign against pywebpush.")

    @Option(help: "Messages sent end to end.") var messages = 2000
    @Option(help: "Concurrent sender connections.") var senders = 4
    @Option(help: "Plaintext bytes per message.") var payload = 200
    @Option(help: "Encrypt+sign iterations for the per-message comparison.") var iterations = 1000
    @Flag(help: "fsync every stored message (crash-safe store); off measures the protocol path alone.") var fsync = false
    @Option(help: "The interop script (http_ece, py_vapid, pywebpush).") var peerScript = "interop/webpush/webpush_peer.py"

    func run() async throws {
        let storeDir = FileManager.default.temporaryDirectory.appendingPathComponent("ugate-push-bench-\(getpid())").path
        defer { try? FileManager.default.removeItem(atPath: storeDir) }
        var config = PushServiceConfig()
        config.maxQueuedPerSubscription = messages
        let service = try PushService(config: config, store: FilePushStore(directory: storeDir, sync: fsync))
        let channel = try await AdminServer(routes: service.routes).start(host: "127.0.0.1", port: 0)
        let base = URL(string: "http://127.0.0.1:\(channel.localAddress?.port ?? 0)")!
        let subscriber = try await PushSubscriber.subscribe(service: base)
        let sender = PushSender(vapid: VAPIDSigner())
        let plaintext = [UInt8](repeating: 0x61, count: payload)
        let target = messages

        let start = Date()
        let receiver = Task {
            try await PushHTTPClient.withConnection(to: subscriber.subscriptionURL) { connection in
                var got = 0
                var failed = 0
                while got < target && Date().timeIntervalSince(start) < 300 {
                    for message in try await subscriber.receive(on: connection, wait: 5) {
                        if message.plaintext?.count == plaintext.count { got += 1 } else { failed += 1 }
                    }
                }
                return (got, failed)
            }
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for s in 0..<senders {
                let share = target / senders + (s < target % senders ? 1 : 0)
                group.addTask {
                    try await PushHTTPClient.withConnection(to: base) { connection in
                        for _ in 0..<share {
                            let response = try await sender.post(sender.prepare(plaintext, to: subscriber.w3c), on: connection)
                            guard response.status == 201 else { throw ValidationError("push refused: \(response.status) \(response.text)") }
                        }
                    }
                }
            }
            try await group.waitForAll()
        }
        let (received, failed) = try await receiver.value
        let elapsed = Date().timeIntervalSince(start)
        try await channel.close()

        // Per message: encrypt + a VAPID token, reused (the default) and signed fresh as pywebpush does.
        func perMessage(_ s: PushSender) throws -> Double {
            let begin = Date()
            for _ in 0..<iterations { _ = try s.prepare(plaintext, to: subscriber.w3c) }
            return Date().timeIntervalSince(begin) / Double(iterations)
        }
        let swiftPer = try perMessage(sender)
        let swiftFresh = try perMessage(PushSender(vapid: sender.vapid, reuseTokens: false))
        let python = try PythonPeer(script: peerScript).call("bench", [
            "subscription": ["endpoint": subscriber.w3c.endpoint, "keys": ["p256dh": subscriber.w3c.keys.p256dh, "auth": subscriber.w3c.keys.auth]],
            "vapid_private_key": Base64URL.encode(sender.vapid?.rawPrivateKey ?? []),
            "aud": base.absoluteString, "count": iterations, "data": Base64URL.encode(plaintext),
        ])
        let pythonPer = ((python["seconds"] as? Double) ?? .nan) / Double(iterations)

        print("push bench: \(received)/\(target) messages (\(failed) undecryptable), \(payload)-byte payload, \(senders) senders, store fsync \(fsync ? "on" : "off")")
        print(String(format: "  end to end: %.0f messages/s (%.2f s)", Double(received) / elapsed, elapsed))
        print(String(format: "  encrypt+sign per message, token signed each time: ugate %.1f µs, pywebpush %.1f µs, ratio %.1f×",
                     swiftFresh * 1e6, pythonPer * 1e6, pythonPer / swiftFresh))
        print(String(format: "  encrypt+sign per message, token reused (ugate default): ugate %.1f µs, ratio %.1f×",
                     swiftPer * 1e6, pythonPer / swiftPer))
        if received != target { throw ExitCode(1) }
    }
}
