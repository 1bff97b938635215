import Crypto
import Foundation

/// One WebRTC signaling message carried inside an encrypted push.
public struct SignalingMessage: Codable, Equatable, Sendable {
    public enum Kind: String, Codable, Sendable {
        case offer, answer, candidate, bye
    }

    public var kind: Kind
    /// Correlates an offer with its answer, candidates and bye.
    public var session: String
    /// The receiving node's ID; a message addressed elsewhere is refused.
    public var to: String
    /// Sender's counter within the session (ordering of trickled candidates).
    public var seq: UInt64
    /// Sender's clock, milliseconds since the epoch.
    public var ts: Int64
    /// 16 random bytes, base64url: the replay key together with the sender.
    public var nonce: String
    /// SDP for offer/answer.
    public var sdp: String?
    /// `a=candidate:` line for candidate (empty string = end of candidates).
    public var candidate: String?
    /// Media id the candidate belongs to.
    public var mid: String?
    /// Where the receiver should answer: the sender's own push subscription.
    public var replyTo: W3CPushSubscription?

    public init(kind: Kind, session: String, to: NodeID, seq: UInt64, ts: Int64, nonce: String = Base64URL.encode(WebPushEncryption.randomBytes(16)),
                sdp: String? = nil, candidate: String? = nil, mid: String? = nil, replyTo: W3CPushSubscription? = nil) {
        self.kind = kind
        self.session = session
        self.to = to.id
        self.seq = seq
        self.ts = ts
        self.nonce = nonce
        self.sdp = sdp
        self.candidate = candidate
        self.mid = mid
        self.replyTo = replyTo
    }
}

/// Signs signaling messages with a node's P-256 identity key.
///
/// Wire format (the push plaintext, UTF-8 JSON; see docs/webpush.md):
/// ```
/// {"v":1,"key":"<b64url 65-byte node public key>","msg":"<b64url message JSON>","sig":"<b64url r‖s>"}
/// ```
/// `sig` is ES256 over `"ugate-signal-v1" ‖ 0x00 ‖ msg-bytes` (the decoded `msg`), so the exact
/// signed bytes travel with the signature and no JSON canonicalization is needed.
public struct SignalingSigner: Sendable {
    public let key: P256.Signing.PrivateKey
    public var nodeID: NodeID { NodeID(key.publicKey) }

    public init(key: P256.Signing.PrivateKey) {
        self.key = key
    }

    static let domain = Array("ugate-signal-v1\0".utf8)

    struct Envelope: Codable {
        var v: Int
        var key: String
        var msg: String
        var sig: String
    }

    /// The push plaintext for `message`.
    public func seal(_ message: SignalingMessage) throws -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let msg = Array(try encoder.encode(message))
        let signature = try key.signature(for: Self.domain + msg)
        let envelope = Envelope(
            v: 1, key: Base64URL.encode(key.publicKey.x963Representation), msg: Base64URL.encode(msg),
            sig: Base64URL.encode(signature.rawRepresentation))
        return Array(try encoder.encode(envelope))
    }
}

/// Verifies signaling messages for one receiving node and refuses replays. A value type: feed it
/// plaintexts and the current time; it keeps the nonces it has seen inside the time window.
public struct SignalingVerifier: Sendable {
    /// The receiving node.
    public let me: NodeID
    /// Messages whose `ts` is further than this from now are refused, milliseconds.
    public let window: Int64
    /// Replay-cache capacity; when full the oldest entries go and the acceptance floor rises with them.
    public let capacity: Int
    private var seen: [String: Int64] = [:]
    /// Messages with `ts` below this are refused (raised when the cache evicts before the window ends).
    private var floor: Int64 = .min

    public init(me: NodeID, window: Int64 = 120_000, capacity: Int = 4096) {
        self.me = me
        self.window = window
        self.capacity = capacity
    }

    /// Verifies a push plaintext.
    /// - Parameter now: milliseconds since the epoch.
    /// - Returns: the sender's node ID and the message.
    /// - Throws: `WebPushError.signaling` naming the failed check (format, signature, addressee,
    ///   time window, replay).
    public mutating func open(_ plaintext: [UInt8], now: Int64) throws -> (from: NodeID, message: SignalingMessage) {
        guard let envelope = try? JSONDecoder().decode(SignalingSigner.Envelope.self, from: Data(plaintext)), envelope.v == 1 else {
            throw WebPushError(.signaling, "not a version 1 signaling envelope {v, key, msg, sig}")
        }
        let keyBytes = try Base64URL.decode(envelope.key, what: "signaling key")
        let from: NodeID
        let key: P256.Signing.PublicKey
        do {
            from = try NodeID(publicKey: keyBytes)
            key = try P256.Signing.PublicKey(x963Representation: keyBytes)
        } catch {
            throw WebPushError(.signaling, "sender key is not a P-256 public key: \(error)")
        }
        let msg = try Base64URL.decode(envelope.msg, what: "signaling msg")
        let sig = try Base64URL.decode(envelope.sig, what: "signaling sig")
        guard let signature = try? P256.Signing.ECDSASignature(rawRepresentation: sig),
              key.isValidSignature(signature, for: SignalingSigner.domain + msg)
        else { throw WebPushError(.signaling, "signature does not verify under sender key \(from) (forged or altered)") }
        guard let message = try? JSONDecoder().decode(SignalingMessage.self, from: Data(msg)) else {
            throw WebPushError(.signaling, "signed message from \(from) is not a signaling message")
        }
        guard message.to == me.id else {
            throw WebPushError(.signaling, "message from \(from) is addressed to \(message.to), not to this node \(me)")
        }
        guard abs(now - message.ts) <= window, message.ts >= floor else {
            throw WebPushError(.signaling, "message from \(from) has timestamp \(message.ts), outside ±\(window) ms of now \(now)")
        }
        let replayKey = from.id + "/" + message.nonce
        guard seen[replayKey] == nil else {
            throw WebPushError(.signaling, "replayed message from \(from) (nonce \(message.nonce) already seen)")
        }
        remember(replayKey, ts: message.ts, now: now)
        return (from, message)
    }

    private mutating func remember(_ key: String, ts: Int64, now: Int64) {
        seen = seen.filter { $0.value >= now - window }
        if seen.count >= capacity, let oldest = seen.min(by: { $0.value < $1.value }) {
            seen[oldest.key] = nil
            floor = max(floor, oldest.value + 1)
        }
        seen[key] = ts
    }
}
