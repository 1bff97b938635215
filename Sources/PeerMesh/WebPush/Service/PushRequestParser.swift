import Foundation
import Gate

/// Turns an HTTP push request ([RFC 8030 §5](https://www.rfc-editor.org/rfc/rfc8030#section-5)) into a
/// `PushServiceState.PushRequest`, or the refusal to answer with. Pure: the time comes in as `now`.
///
/// Checked, in order: `TTL` present and a non-negative integer (400), `Urgency` one of the four
/// values (400), `Topic` ≤ 32 base64url characters (400), body size (413), `Content-Encoding:
/// aes128gcm` and an RFC 8291 header for a non-empty body (400), VAPID if present (403 when invalid:
/// bad signature, wrong `aud`, `exp` past or > 24 h ahead, `sub` missing).
public enum PushRequestParser {
    static let topicAlphabet = Set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")

    /// - Parameter verifier: remembers verified signatures; nil verifies every token in full.
    public static func parse(_ request: AdminRequest, config: PushServiceConfig, now: Int64, verifier: VAPIDVerificationCache? = nil)
        -> Result<PushServiceState.PushRequest, PushRefusal>
    {
        guard let ttlText = request.header("TTL")?.trimmingCharacters(in: .whitespaces) else {
            return .failure(PushRefusal(400, "TTL header missing (RFC 8030 §5.2 requires it)"))
        }
        guard let ttl = Int(ttlText), ttl >= 0 else {
            return .failure(PushRefusal(400, "TTL must be a non-negative integer number of seconds, got \(ttlText)"))
        }
        var urgency = PushUrgency.normal
        if let text = request.header("Urgency") {
            guard let u = PushUrgency(rawValue: text.trimmingCharacters(in: .whitespaces).lowercased()) else {
                return .failure(PushRefusal(400, "Urgency must be very-low, low, normal or high, got \(text)"))
            }
            urgency = u
        }
        let topic = request.header("Topic")?.trimmingCharacters(in: .whitespaces)
        if let topic, topic.isEmpty || topic.count > 32 || !topic.allSatisfy(topicAlphabet.contains) {
            return .failure(PushRefusal(400, "Topic must be 1 to 32 base64url characters (RFC 8030 §5.4), got \(topic)"))
        }
        guard request.body.count <= config.maxMessageBytes else {
            return .failure(PushRefusal(413, "push message body is \(request.body.count) bytes, the limit is \(config.maxMessageBytes)"))
        }
        if !request.body.isEmpty {
            let encoding = request.header("Content-Encoding")?.trimmingCharacters(in: .whitespaces).lowercased()
            guard encoding == "aes128gcm" else {
                return .failure(PushRefusal(400, "Content-Encoding must be aes128gcm (RFC 8291 §4), got \(encoding ?? "none")"))
            }
            guard let parsed = try? ContentCodingHeader.parse(request.body[...]), parsed.header.keyID.count == 65 else {
                return .failure(PushRefusal(400, "body does not start with an aes128gcm header carrying a 65-byte sender key (RFC 8291 §4)"))
            }
        }
        var vapidKey: [UInt8]?
        do {
            if let credentials = try VAPIDCredentials.parse(authorization: request.header("Authorization"), cryptoKey: request.header("Crypto-Key")) {
                let audiences = audiences(for: request, config: config)
                _ = try verifier?.verify(credentials, audiences: audiences, now: now)
                    ?? VAPIDVerifier.verify(credentials, audiences: audiences, now: now)
                vapidKey = credentials.publicKey
            }
        } catch let error as WebPushError {
            return .failure(PushRefusal(403, "VAPID authorization refused: \(error.context)"))
        } catch {
            return .failure(PushRefusal(403, "VAPID authorization refused: \(error)"))
        }
        return .success(.init(body: request.body, ttl: ttl, urgency: urgency, topic: topic, vapidKey: vapidKey))
    }

    /// The origins a VAPID `aud` may name: the configured ones, else `http://` and `https://` plus `Host`.
    public static func audiences(for request: AdminRequest, config: PushServiceConfig) -> [String] {
        if !config.origins.isEmpty { return config.origins }
        guard let host = request.header("Host") else { return [] }
        return ["http://" + host, "https://" + host]
    }

    /// The base URL for links in responses: the first configured origin, else `http://` + `Host`.
    public static func origin(for request: AdminRequest, config: PushServiceConfig) -> String {
        config.origins.first ?? "http://" + (request.header("Host") ?? "localhost")
    }
}
