/// The one error type of the WebPush area (encryption, VAPID, push service, client, signaling):
/// a machine-readable `code` plus `context` that says what was wrong and where.
public struct WebPushError: Error, Equatable, CustomStringConvertible, Sendable {
    public enum Code: String, Sendable {
        /// The RFC 8188 content-coding header is malformed (too short, bad `rs`, bad key id).
        case badHeader
        /// A record failed authentication: tampered, truncated or encrypted under another key.
        case authenticationFailed
        /// A record decrypted but its padding delimiter is wrong (RFC 8188 §2), or all zero.
        case badPadding
        /// The body ends early or has a record after the last one.
        case truncated
        /// A key, salt or secret has the wrong length or is not a valid P-256 point.
        case badKey
        /// Encryption parameters out of range (record size, padding).
        case badParameter
        /// Text was not valid base64url.
        case badBase64
        /// The VAPID `Authorization` header or JWT is malformed.
        case vapidMalformed
        /// The VAPID JWT signature does not verify under the key in `k`.
        case vapidBadSignature
        /// A VAPID claim (`aud`, `exp`, `sub`) is missing or unacceptable.
        case vapidBadClaim
        /// An HTTP exchange with a push service failed or returned an unexpected status.
        case http
        /// The push service no longer knows the subscription (404 or 410): polling again is useless.
        case subscriptionGone
        /// A signaling message is malformed, forged, replayed or not addressed to us.
        case signaling
        /// The push service's message store failed.
        case store
    }

    public let code: Code
    public let context: String

    public init(_ code: Code, _ context: String) {
        self.code = code
        self.context = context
    }

    public var description: String { "webpush \(code.rawValue): \(context)" }
}
