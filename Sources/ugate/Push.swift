import ArgumentParser
import Foundation
import Gate
import PeerMesh

/// `ugate push …`: the WebPush control path from the command line.
struct Push: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "WebPush: run a push service, subscribe, send (RFC 8030, 8291, 8292).",
        subcommands: [PushServe.self, PushSubscribe.self, PushSend.self, BenchPush.self])
}

/// The node's P-256 key (signs VAPID tokens and signaling messages): its identity key, or a PEM file.
struct NodeKeyOption: ParsableArguments {
    @Option(help: "Sign with this P-256 PEM key instead of the node identity (created if missing). Default: $UGATE_KEY, else the node key.")
    var key: String?

    @Option(help: "Node identity directory (the key of `ugate id` and `ugate run`), used when no --key is given.")
    var identityDir: String = Id.defaultIdentityDir

    /// The VAPID and signaling key: the node's own identity key unless a PEM file is named, so
    /// signaling messages carry the same node ID as the node's mesh certificate.
    func load() throws -> VAPIDSigner {
        if let path = key ?? ProcessInfo.processInfo.environment["UGATE_KEY"] {
            return try VAPIDSigner(pemFile: path)
        }
        return VAPIDSigner(privateKey: try NodeIdentity.loadOrCreate(directory: identityDir).privateKey)
    }
}

/// Writes a line to stdout and flushes, so a reading process sees it at once.
func emit(_ line: String) {
    FileHandle.standardOutput.write(Data((line + "\n").utf8))
}

struct PushServe: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve", abstract: "Run a standalone push service (the node's admin port serves it too once `run` exists).")

    @Option(help: "Address to bind.") var host = "127.0.0.1"
    @Option(help: "Port (0 = any free port; the bound one is printed).") var port = 0
    @Option(help: "Store directory for undelivered messages (kept across restarts).") var store: String
    @Option(help: "Origin clients use in VAPID aud (repeatable); default http(s):// + Host header.") var origin: [String] = []
    @Option(help: "Messages queued per subscription before 429.") var maxQueue = 100
    @Option(help: "Largest message body in bytes before 413.") var maxMessage = 4096

    func run() async throws {
        var config = PushServiceConfig()
        config.origins = origin
        config.maxQueuedPerSubscription = maxQueue
        config.maxMessageBytes = maxMessage
        let service = try PushService(config: config, store: FilePushStore(directory: store))
        let channel = try await AdminServer(routes: service.routes).start(host: host, port: port)
        emit("push service listening on http://\(host):\(channel.localAddress?.port ?? port)")
        try await channel.closeFuture.get()
    }
}

struct PushSubscribe: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "subscribe",
        abstract: "Subscribe, print the W3C PushSubscription JSON, then print each decrypted message as it arrives.")

    @Option(help: "Push service base URL, e.g. http://127.0.0.1:15000") var service: String
    @Option(help: "Restrict the subscription to pushes VAPID-signed with this base64url P-256 key.") var applicationServerKey: String?
    @Option(help: "Exit after this many messages (default: run until interrupted).") var count: Int?
    @Option(help: "Long-poll wait per request, seconds.") var wait = 30

    func run() async throws {
        guard let url = URL(string: service) else { throw ValidationError("--service \(service) is not a URL") }
        let key = try applicationServerKey.map { try Base64URL.decode($0, what: "--application-server-key") }
        let subscriber = try await PushSubscriber.subscribe(service: url, applicationServerKey: key)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        emit(String(decoding: try encoder.encode(subscriber.w3c), as: UTF8.self))
        var received = 0
        var backoff = Duration.milliseconds(100)
        // Keeps the subscription alive across push-service restarts and dropped connections:
        // reconnect with backoff (100 ms doubling to 5 s); stop only when the service says the
        // subscription is gone (404/410) or `--count` messages have arrived.
        while count.map({ received < $0 }) ?? true {
            do {
                try await PushHTTPClient.withConnection(to: subscriber.subscriptionURL) { connection in
                    while count.map({ received < $0 }) ?? true {
                        for message in try await subscriber.receive(on: connection, wait: wait) {
                            received += 1
                            if let plaintext = message.plaintext {
                                emit(String(decoding: plaintext, as: UTF8.self))
                            } else {
                                FileHandle.standardError.write(Data("undecryptable message \(message.id): \(message.error.map { "\($0)" } ?? "?")\n".utf8))
                            }
                        }
                        backoff = .milliseconds(100)
                    }
                }
            } catch let error as WebPushError where error.code == .http {
                FileHandle.standardError.write(Data("push service: \(error); retrying in \(backoff)\n".utf8))
                try await Task.sleep(for: backoff)
                backoff = min(backoff * 2, .seconds(5))
            }
        }
    }
}

struct PushSend: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "send", abstract: "Encrypt, sign with the node's VAPID key and post a push message; print the service's status.")

    @Option(help: "File holding the W3C PushSubscription JSON.") var subscription: String
    @Option(help: "Message text.") var data: String?
    @Option(help: "File whose bytes are the message.") var file: String?
    @Option(help: "TTL in seconds.") var ttl = 60
    @Option(help: "Topic (≤ 32 base64url characters): replaces a queued message with the same topic.") var topic: String?
    @Option(help: "Urgency: very-low, low, normal, high.") var urgency: String?
    @Option(help: "VAPID sub claim (mailto: or https:).") var subject = "mailto:ops@ugate.invalid"
    @OptionGroup var nodeKey: NodeKeyOption

    func validate() throws {
        guard (data == nil) != (file == nil) else { throw ValidationError("give exactly one of --data and --file") }
        if let urgency, PushUrgency(rawValue: urgency) == nil { throw ValidationError("--urgency must be very-low, low, normal or high") }
    }

    func run() async throws {
        let sub = try JSONDecoder().decode(W3CPushSubscription.self, from: Data(contentsOf: URL(fileURLWithPath: subscription)))
        let payload = try data.map { Array($0.utf8) } ?? Array(Data(contentsOf: URL(fileURLWithPath: file ?? "")))
        let sender = PushSender(vapid: try nodeKey.load(), subject: subject)
        let response = try await sender.send(payload, to: sub, ttl: ttl, topic: topic, urgency: urgency.flatMap(PushUrgency.init(rawValue:)))
        emit("\(response.status) \(response.header("Location") ?? response.text)")
        guard (200..<300).contains(response.status) else { throw ExitCode(1) }
    }
}
