import Crypto
import Foundation

/// The W3C `PushSubscription` JSON (`PushSubscription.toJSON()`), the form pywebpush and web
/// application servers accept as `subscription_info`.
public struct W3CPushSubscription: Codable, Equatable, Sendable {
    public struct Keys: Codable, Equatable, Sendable {
        /// base64url 65-byte uncompressed P-256 key.
        public var p256dh: String
        /// base64url 16-byte secret.
        public var auth: String
    }

    public var endpoint: String
    public var expirationTime: Int64?
    public var keys: Keys

    public init(endpoint: String, expirationTime: Int64? = nil, p256dh: [UInt8], auth: [UInt8]) {
        self.endpoint = endpoint
        self.expirationTime = expirationTime
        self.keys = Keys(p256dh: Base64URL.encode(p256dh), auth: Base64URL.encode(auth))
    }
}

/// A message received on a subscription.
public struct ReceivedPush: Sendable {
    public var id: String
    public var topic: String?
    public var urgency: PushUrgency?
    /// The decrypted plaintext, or nil when decryption failed (see `error`).
    public var plaintext: [UInt8]?
    public var error: WebPushError?
}

/// The user agent side of a push subscription: creates it, polls (the long-poll fallback of
/// RFC 8030 §6), decrypts (RFC 8291) and acknowledges (RFC 8030 §6.2).
public struct PushSubscriber: Sendable {
    /// The secret subscription resource (whoever has it reads the messages).
    public let subscriptionURL: URL
    /// The push resource application servers post to.
    public let endpoint: URL
    public let keys: WebPushReceiverKeys
    public let expires: Int64?

    public init(subscriptionURL: URL, endpoint: URL, keys: WebPushReceiverKeys, expires: Int64? = nil) {
        self.subscriptionURL = subscriptionURL
        self.endpoint = endpoint
        self.keys = keys
        self.expires = expires
    }

    /// The subscription to hand to application servers.
    public var w3c: W3CPushSubscription {
        W3CPushSubscription(endpoint: endpoint.absoluteString, p256dh: keys.publicKey, auth: keys.authSecret)
    }

    /// Creates a subscription on the push service at `service` (its base URL).
    /// - Parameter applicationServerKey: restrict the subscription to pushes VAPID-signed by this key.
    public static func subscribe(service: URL, applicationServerKey: [UInt8]? = nil, keys: WebPushReceiverKeys = WebPushReceiverKeys()) async throws -> PushSubscriber {
        let body = applicationServerKey.map { Array(#"{"applicationServerKey":"\#(Base64URL.encode($0))"}"#.utf8) } ?? []
        let url = service.appendingPathComponent("subscribe")
        let response = try await PushHTTPClient.send("POST", url, headers: body.isEmpty ? [] : [("Content-Type", "application/json")], body: body)
        guard response.status == 201 else {
            throw WebPushError(.http, "subscribe at \(url) answered \(response.status): \(response.text)")
        }
        struct Created: Decodable { var subscription: String; var endpoint: String; var expires: Int64? }
        guard let created = try? JSONDecoder().decode(Created.self, from: Data(response.body)),
              let sub = URL(string: created.subscription), let endpoint = URL(string: created.endpoint)
        else { throw WebPushError(.http, "subscribe at \(url): 201 without the expected JSON body: \(response.text)") }
        return PushSubscriber(subscriptionURL: sub, endpoint: endpoint, keys: keys, expires: created.expires)
    }

    /// Waits up to `wait` seconds for messages, decrypts and acknowledges each one.
    /// - Parameter connection: a connection to the push service (from `PushHTTPClient.withConnection`).
    /// - Throws: `WebPushError.subscriptionGone` on 404/410; `WebPushError.http` when the service
    ///   is unreachable or answers anything else unexpected.
    public func receive(on connection: PushHTTPConnection, wait: Int = 30) async throws -> [ReceivedPush] {
        let path = PushHTTPClient.pathAndQuery(subscriptionURL) + "?wait=\(wait)"
        let response = try await connection.send("GET", path)
        if response.status == 204 { return [] }
        if response.status == 404 || response.status == 410 {
            throw WebPushError(.subscriptionGone, "poll \(subscriptionURL) answered \(response.status): \(response.text)")
        }
        guard response.status == 200 else {
            throw WebPushError(.http, "poll \(subscriptionURL) answered \(response.status): \(response.text)")
        }
        struct Item: Decodable { var id: String; var topic: String?; var urgency: String?; var body: String }
        struct List: Decodable { var messages: [Item] }
        guard let list = try? JSONDecoder().decode(List.self, from: Data(response.body)) else {
            throw WebPushError(.http, "poll \(subscriptionURL): unexpected body \(response.text.prefix(200))")
        }
        var out: [ReceivedPush] = []
        for item in list.messages {
            var received = ReceivedPush(id: item.id, topic: item.topic, urgency: item.urgency.flatMap(PushUrgency.init(rawValue:)))
            do {
                received.plaintext = try keys.decrypt(try Base64URL.decode(item.body, what: "message body"))
            } catch let error as WebPushError {
                received.error = error
            }
            out.append(received)
        }
        // One request acknowledges the whole batch (DELETE /message/<id> per message also works).
        if !out.isEmpty {
            let ack = try await connection.send("POST", PushHTTPClient.pathAndQuery(subscriptionURL) + "/ack",
                                                body: Array(out.map(\.id).joined(separator: "\n").utf8))
            guard ack.status == 204 else {
                throw WebPushError(.http, "acknowledge on \(subscriptionURL) answered \(ack.status): \(ack.text)")
            }
        }
        return out
    }

    /// Deletes the subscription; later pushes to it get 410.
    public func unsubscribe() async throws {
        let response = try await PushHTTPClient.send("DELETE", subscriptionURL)
        guard response.status == 204 else {
            throw WebPushError(.http, "unsubscribe \(subscriptionURL) answered \(response.status): \(response.text)")
        }
    }
}

/// An encrypted, signed push ready to post.
public struct PreparedPush: Sendable {
    public var endpoint: URL
    public var headers: [(String, String)]
    public var body: [UInt8]
}

/// The application server side: encrypts for a subscription (RFC 8291), signs VAPID (RFC 8292)
/// and posts (RFC 8030 §5).
public struct PushSender: Sendable {
    public let vapid: VAPIDSigner?
    /// The VAPID `sub` contact, `mailto:` or `https:`.
    public let subject: String
    private let tokens: VAPIDTokenCache?

    /// - Parameter reuseTokens: sign one VAPID token per push service origin and reuse it for half
    ///   its 12 h lifetime (RFC 8292 allows reuse); false signs every message, as pywebpush does.
    public init(vapid: VAPIDSigner?, subject: String = "mailto:ops@ugate.invalid", reuseTokens: Bool = true) {
        self.vapid = vapid
        self.subject = subject
        self.tokens = reuseTokens ? vapid.map { VAPIDTokenCache(signer: $0, subject: subject) } : nil
    }

    /// Encrypts `plaintext` for `subscription` and builds the request.
    public func prepare(
        _ plaintext: [UInt8], to subscription: W3CPushSubscription,
        ttl: Int = 60, topic: String? = nil, urgency: PushUrgency? = nil, now: Date = Date()
    ) throws -> PreparedPush {
        guard let endpoint = URL(string: subscription.endpoint) else {
            throw WebPushError(.badParameter, "subscription endpoint \(subscription.endpoint) is not a URL")
        }
        let body = try WebPushEncryption.encrypt(
            plaintext, uaPublicKey: try Base64URL.decode(subscription.keys.p256dh, what: "keys.p256dh"),
            authSecret: try Base64URL.decode(subscription.keys.auth, what: "keys.auth"))
        var headers: [(String, String)] = [("TTL", String(ttl)), ("Content-Encoding", "aes128gcm"), ("Content-Type", "application/octet-stream")]
        if let topic { headers.append(("Topic", topic)) }
        if let urgency { headers.append(("Urgency", urgency.rawValue)) }
        if let tokens {
            headers.append(("Authorization", try tokens.credentials(for: endpoint, now: now).authorization))
        } else if let vapid {
            headers.append(("Authorization", try vapid.sign(endpoint: endpoint, subject: subject, now: now).authorization))
        }
        return PreparedPush(endpoint: endpoint, headers: headers, body: body)
    }

    /// Posts a prepared push on `connection` (nil: a fresh connection).
    public func post(_ push: PreparedPush, on connection: PushHTTPConnection? = nil) async throws -> PushHTTPResponse {
        if let connection {
            return try await connection.send("POST", PushHTTPClient.pathAndQuery(push.endpoint), headers: push.headers, body: push.body)
        }
        return try await PushHTTPClient.send("POST", push.endpoint, headers: push.headers, body: push.body)
    }

    /// Encrypts, signs and posts; returns the push service's answer (201 when accepted).
    public func send(
        _ plaintext: [UInt8], to subscription: W3CPushSubscription,
        ttl: Int = 60, topic: String? = nil, urgency: PushUrgency? = nil
    ) async throws -> PushHTTPResponse {
        try await post(prepare(plaintext, to: subscription, ttl: ttl, topic: topic, urgency: urgency))
    }
}
