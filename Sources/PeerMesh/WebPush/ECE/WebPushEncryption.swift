import Crypto
import Foundation

/// Message encryption for Web Push, [RFC 8291](https://www.rfc-editor.org/rfc/rfc8291):
/// ECDH between the application server's (sender's) ephemeral P-256 key and the user agent's
/// (receiver's) `p256dh` key, mixed with the 16-byte `auth` secret, then `aes128gcm` (RFC 8188).
///
/// Key schedule ([RFC 8291 §3.4](https://www.rfc-editor.org/rfc/rfc8291#section-3.4)):
/// ```
/// ecdh_secret = ECDH(as_private, ua_public)
/// key_info    = "WebPush: info" ‖ 0x00 ‖ ua_public ‖ as_public
/// IKM         = HKDF(salt = auth_secret, ikm = ecdh_secret, info = key_info, L = 32)
/// PRK         = HKDF-Extract(salt, IKM)             -- RFC 8188 §2.2, salt from the header
/// CEK         = HKDF-Expand(PRK, "Content-Encoding: aes128gcm\0", 16)
/// NONCE       = HKDF-Expand(PRK, "Content-Encoding: nonce\0", 12)
/// ```
/// The body is the RFC 8188 header with `keyid` = as_public (65 bytes) followed by the records
/// ([RFC 8291 §4](https://www.rfc-editor.org/rfc/rfc8291#section-4)).
public enum WebPushEncryption {
    /// The `auth` secret length ([RFC 8291 §3.2](https://www.rfc-editor.org/rfc/rfc8291#section-3.2)).
    public static let authSecretLength = 16
    /// The default record size, as http_ece and pywebpush use.
    public static let defaultRecordSize = 4096

    /// Every intermediate value of the key schedule (exposed for test vectors).
    public struct KeySchedule: Sendable {
        public var ecdhSecret: [UInt8]
        public var ikm: [UInt8]
        public var prk: [UInt8]
        public var keys: RecordKeys
    }

    /// Runs the RFC 8291 key schedule.
    public static func keySchedule(
        ecdhSecret: [UInt8], authSecret: [UInt8], uaPublic: [UInt8], asPublic: [UInt8], salt: [UInt8]
    ) -> KeySchedule {
        let info = Array("WebPush: info\0".utf8) + uaPublic + asPublic
        let ikm = HKDF<SHA256>.deriveKey(
            inputKeyMaterial: SymmetricKey(data: ecdhSecret), salt: authSecret, info: info, outputByteCount: 32)
        let ikmBytes = ikm.withUnsafeBytes { Array($0) }
        let (prk, keys) = RecordKeys.derive(ikm: ikmBytes, salt: salt)
        return KeySchedule(ecdhSecret: ecdhSecret, ikm: ikmBytes, prk: prk, keys: keys)
    }

    /// Encrypts a push message for a subscription.
    /// - Parameters:
    ///   - uaPublicKey: the subscription's `p256dh`, 65-byte uncompressed point.
    ///   - authSecret: the subscription's `auth`, 16 bytes.
    ///   - asPrivateKey: the sender's ephemeral key; random when nil (RFC 8291 §3.1: use a fresh key per message).
    ///   - salt: 16 bytes; random when nil.
    ///   - recordSize: `rs`; RFC 8291 §4 wants one record, so the default 4096 fits any push message.
    ///   - padding: zero octets added after the data (hides the length).
    /// - Throws: `.badKey` for a malformed key or secret, `.badParameter` for a bad record size or padding.
    public static func encrypt(
        _ plaintext: [UInt8], uaPublicKey: [UInt8], authSecret: [UInt8],
        asPrivateKey: P256.KeyAgreement.PrivateKey = P256.KeyAgreement.PrivateKey(),
        salt: [UInt8]? = nil, recordSize: Int = defaultRecordSize, padding: Int = 0
    ) throws -> [UInt8] {
        guard authSecret.count == authSecretLength else {
            throw WebPushError(.badKey, "auth secret must be \(authSecretLength) bytes, got \(authSecret.count)")
        }
        let uaKey = try publicKey(uaPublicKey, what: "user agent p256dh key")
        let asPublic = Array(asPrivateKey.publicKey.x963Representation)
        let header = try ContentCodingHeader(salt: salt ?? randomBytes(16), recordSize: recordSize, keyID: asPublic)
        let shared = try asPrivateKey.sharedSecretFromKeyAgreement(with: uaKey).withUnsafeBytes { Array($0) }
        let schedule = keySchedule(ecdhSecret: shared, authSecret: authSecret, uaPublic: uaPublicKey, asPublic: asPublic, salt: header.salt)
        return try AES128GCMRecords.encrypt(plaintext, header: header, keys: schedule.keys, padding: padding)
    }

    /// The record-key derivation a receiver runs once the header has been read: the header's `keyid`
    /// must be the sender's 65-byte public key.
    public static func receiverKeys(uaPrivateKey: P256.KeyAgreement.PrivateKey, authSecret: [UInt8]) -> AES128GCMDecoder.KeyDerivation {
        let uaPublic = Array(uaPrivateKey.publicKey.x963Representation)
        return { header in
            guard authSecret.count == authSecretLength else {
                throw WebPushError(.badKey, "auth secret must be \(authSecretLength) bytes, got \(authSecret.count)")
            }
            guard header.keyID.count == 65 else {
                throw WebPushError(.badHeader, "keyid must be the sender's 65-byte P-256 key (RFC 8291 §4), got \(header.keyID.count) bytes")
            }
            let asKey = try publicKey(header.keyID, what: "sender key in keyid")
            let shared = try uaPrivateKey.sharedSecretFromKeyAgreement(with: asKey).withUnsafeBytes { Array($0) }
            return keySchedule(ecdhSecret: shared, authSecret: authSecret, uaPublic: uaPublic, asPublic: header.keyID, salt: header.salt).keys
        }
    }

    /// Decrypts a whole push message body.
    /// - Throws: `WebPushError` — `.authenticationFailed` for a tampered body or one meant for other
    ///   keys, `.truncated`, `.badPadding`, `.badHeader`, `.badKey`.
    public static func decrypt(_ body: [UInt8], uaPrivateKey: P256.KeyAgreement.PrivateKey, authSecret: [UInt8]) throws -> [UInt8] {
        var decoder = AES128GCMDecoder(keys: receiverKeys(uaPrivateKey: uaPrivateKey, authSecret: authSecret))
        return try decoder.feed(body) + decoder.finish()
    }

    static func publicKey(_ bytes: [UInt8], what: String) throws -> P256.KeyAgreement.PublicKey {
        guard bytes.count == 65, bytes[0] == 4, let key = try? P256.KeyAgreement.PublicKey(x963Representation: bytes) else {
            throw WebPushError(.badKey, "\(what) is not a 65-byte uncompressed P-256 point (\(bytes.count) bytes)")
        }
        return key
    }

    /// `count` bytes from the system's secure random generator.
    public static func randomBytes(_ count: Int) -> [UInt8] {
        var g = SystemRandomNumberGenerator()
        return (0..<count).map { _ in UInt8.random(in: .min ... .max, using: &g) }
    }
}

/// A user agent's keys for one push subscription: the `p256dh` ECDH key pair and the `auth` secret.
public struct WebPushReceiverKeys: Sendable {
    public let privateKey: P256.KeyAgreement.PrivateKey
    public let authSecret: [UInt8]

    /// Fresh random keys.
    public init() {
        self.privateKey = P256.KeyAgreement.PrivateKey()
        self.authSecret = WebPushEncryption.randomBytes(WebPushEncryption.authSecretLength)
    }

    /// Keys from stored values (raw 32-byte scalar and 16-byte secret).
    public init(privateKey raw: [UInt8], authSecret: [UInt8]) throws {
        guard let key = try? P256.KeyAgreement.PrivateKey(rawRepresentation: raw) else {
            throw WebPushError(.badKey, "p256dh private key must be a 32-byte P-256 scalar, got \(raw.count) bytes")
        }
        guard authSecret.count == WebPushEncryption.authSecretLength else {
            throw WebPushError(.badKey, "auth secret must be 16 bytes, got \(authSecret.count)")
        }
        self.privateKey = key
        self.authSecret = authSecret
    }

    /// The 65-byte uncompressed public key (`keys.p256dh`).
    public var publicKey: [UInt8] { Array(privateKey.publicKey.x963Representation) }

    /// Decrypts a push message body sent to these keys.
    public func decrypt(_ body: [UInt8]) throws -> [UInt8] {
        try WebPushEncryption.decrypt(body, uaPrivateKey: privateKey, authSecret: authSecret)
    }
}
