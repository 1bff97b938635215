import Crypto
import Foundation

/// The claims of a VAPID token, [RFC 8292 §2](https://www.rfc-editor.org/rfc/rfc8292#section-2).
public struct VAPIDClaims: Codable, Equatable, Sendable {
    /// The push resource's origin, `scheme://host[:port]`.
    public var aud: String
    /// Expiry, seconds since the epoch; at most 24 hours ahead.
    public var exp: Int64
    /// Contact for the application server operator: `mailto:` or `https:` URI.
    public var sub: String?

    public init(aud: String, exp: Int64, sub: String?) {
        self.aud = aud
        self.exp = exp
        self.sub = sub
    }
}

/// The `vapid` credentials carried by a push request: the JWT and the signer's public key.
public struct VAPIDCredentials: Equatable, Sendable {
    /// JWS compact serialization `header.claims.signature`.
    public var token: String
    /// 65-byte uncompressed P-256 point from `k` (or the legacy `Crypto-Key: p256ecdsa=`).
    public var publicKey: [UInt8]

    public init(token: String, publicKey: [UInt8]) {
        self.token = token
        self.publicKey = publicKey
    }

    /// The `Authorization` header value, [RFC 8292 §3](https://www.rfc-editor.org/rfc/rfc8292#section-3):
    /// `vapid t=<JWT>,k=<base64url key>` (no space after the comma: py_vapid's verifier splits on the last space).
    public var authorization: String { "vapid t=\(token),k=\(Base64URL.encode(publicKey))" }

    /// Reads credentials from request headers. Accepts the RFC 8292 form `Authorization: vapid t=…, k=…`
    /// and the older draft form `Authorization: WebPush <jwt>` with `Crypto-Key: p256ecdsa=<key>`
    /// (still sent by pywebpush for `aesgcm`).
    /// - Returns: nil when there is no `Authorization` header.
    /// - Throws: `.vapidMalformed` when the header is present but not a VAPID one or lacks `t`/`k`.
    public static func parse(authorization: String?, cryptoKey: String?) throws -> VAPIDCredentials? {
        guard let authorization = authorization?.trimmingCharacters(in: .whitespaces), !authorization.isEmpty else { return nil }
        let parts = authorization.split(separator: " ", maxSplits: 1)
        let scheme = parts[0].lowercased()
        let rest = parts.count > 1 ? String(parts[1]) : ""
        switch scheme {
        case "vapid":
            let params = parameters(rest, separators: [","])
            guard let t = params["t"], !t.isEmpty else { throw WebPushError(.vapidMalformed, "vapid authorization lacks the t= token") }
            guard let k = params["k"] else { throw WebPushError(.vapidMalformed, "vapid authorization lacks the k= public key") }
            return VAPIDCredentials(token: t, publicKey: try Base64URL.decode(k, what: "vapid k"))
        case "webpush":
            guard let key = parameters(cryptoKey ?? "", separators: [",", ";"])["p256ecdsa"] else {
                throw WebPushError(.vapidMalformed, "WebPush authorization without a Crypto-Key p256ecdsa= key")
            }
            return VAPIDCredentials(token: rest.trimmingCharacters(in: .whitespaces), publicKey: try Base64URL.decode(key, what: "Crypto-Key p256ecdsa"))
        default:
            throw WebPushError(.vapidMalformed, "authorization scheme \(parts[0]) is not vapid")
        }
    }

    /// `name=value` pairs split at any of `separators`; values may be quoted.
    private static func parameters(_ text: String, separators: Set<Character>) -> [String: String] {
        var out: [String: String] = [:]
        for item in text.split(whereSeparator: { separators.contains($0) }) {
            let pair = item.split(separator: "=", maxSplits: 1)
            guard pair.count == 2 else { continue }
            let name = pair[0].trimmingCharacters(in: .whitespaces).lowercased()
            out[name] = pair[1].trimmingCharacters(in: .whitespaces).trimmingCharacters(in: CharacterSet(charactersIn: "\""))
        }
        return out
    }
}

/// Signs VAPID tokens with an application server's P-256 key.
public struct VAPIDSigner: Sendable {
    public let privateKey: P256.Signing.PrivateKey

    public init(privateKey: P256.Signing.PrivateKey = P256.Signing.PrivateKey()) {
        self.privateKey = privateKey
    }

    /// The raw 32-byte private scalar (py_vapid's `from_raw` form, base64url-encoded).
    public var rawPrivateKey: [UInt8] { Array(privateKey.rawRepresentation) }

    /// The key in a PEM file (PKCS#8 or SEC1), created with mode 0600 when the file does not exist.
    public init(pemFile path: String) throws {
        if FileManager.default.fileExists(atPath: path) {
            let pem = try String(contentsOfFile: path, encoding: .utf8)
            do {
                self.privateKey = try P256.Signing.PrivateKey(pemRepresentation: pem)
            } catch {
                throw WebPushError(.badKey, "\(path) does not hold a P-256 private key in PEM: \(error)")
            }
            return
        }
        let fresh = P256.Signing.PrivateKey()
        try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        guard FileManager.default.createFile(atPath: path, contents: Data(fresh.pemRepresentation.utf8), attributes: [.posixPermissions: 0o600]) else {
            throw WebPushError(.badKey, "cannot create key file \(path)")
        }
        self.privateKey = fresh
    }

    /// The 65-byte uncompressed public key (the `applicationServerKey`).
    public var publicKey: [UInt8] { Array(privateKey.publicKey.x963Representation) }

    private static let encodedHeader = Base64URL.encode(Array(#"{"typ":"JWT","alg":"ES256"}"#.utf8))

    /// A signed token for these claims: header `{"typ":"JWT","alg":"ES256"}`, ES256 signature r‖s.
    public func sign(_ claims: VAPIDClaims) throws -> VAPIDCredentials {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let input = Self.encodedHeader + "." + Base64URL.encode(try encoder.encode(claims))
        let signature = try privateKey.signature(for: Array(input.utf8))
        return VAPIDCredentials(token: input + "." + Base64URL.encode(signature.rawRepresentation), publicKey: publicKey)
    }

    /// Credentials for a push to `endpoint`: `aud` = its origin, `exp` = now + `lifetime` (≤ 24 h).
    public func sign(endpoint: URL, subject: String, now: Date = Date(), lifetime: TimeInterval = 12 * 3600) throws -> VAPIDCredentials {
        guard let origin = VAPIDVerifier.origin(of: endpoint) else {
            throw WebPushError(.vapidBadClaim, "endpoint \(endpoint) has no scheme and host for aud")
        }
        return try sign(VAPIDClaims(aud: origin, exp: Int64(now.timeIntervalSince1970 + lifetime), sub: subject))
    }
}

/// Verifies VAPID tokens as a push service, [RFC 8292 §4.2](https://www.rfc-editor.org/rfc/rfc8292#section-4.2).
public enum VAPIDVerifier {
    /// The longest allowed distance of `exp` into the future (RFC 8292 §2: "no more than 24 hours").
    public static let maxLifetime: Int64 = 24 * 3600

    /// Checks the signature under `credentials.publicKey`, `alg` = ES256, `aud` ∈ `audiences`,
    /// `now` < `exp` ≤ `now` + 24 h, and `sub` present as a `mailto:` or `https:` URI.
    /// - Parameter now: seconds since the epoch (a parameter, so tests pick the time).
    /// - Returns: the verified claims.
    /// - Throws: `.vapidMalformed`, `.vapidBadSignature` or `.vapidBadClaim` saying what failed.
    public static func verify(_ credentials: VAPIDCredentials, audiences: [String], now: Int64) throws -> VAPIDClaims {
        let parts = credentials.token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3 else {
            throw WebPushError(.vapidMalformed, "token has \(parts.count) dot-separated parts, a JWS has 3")
        }
        struct Header: Decodable { var alg: String? }
        let header: Header
        let claims: VAPIDClaims
        do {
            header = try JSONDecoder().decode(Header.self, from: Data(try Base64URL.decode(parts[0], what: "JWT header")))
            claims = try JSONDecoder().decode(VAPIDClaims.self, from: Data(try Base64URL.decode(parts[1], what: "JWT claims")))
        } catch let error as WebPushError {
            throw WebPushError(.vapidMalformed, error.context)
        } catch {
            throw WebPushError(.vapidMalformed, "JWT header or claims are not the expected JSON (aud string, exp number): \(error)")
        }
        guard header.alg == "ES256" else {
            throw WebPushError(.vapidMalformed, "JWT alg is \(header.alg ?? "missing"), VAPID requires ES256")
        }
        guard let key = try? P256.Signing.PublicKey(x963Representation: credentials.publicKey), credentials.publicKey.count == 65 else {
            throw WebPushError(.vapidMalformed, "k is not a 65-byte uncompressed P-256 public key (\(credentials.publicKey.count) bytes)")
        }
        let rawSignature = try Base64URL.decode(parts[2], what: "JWT signature")
        guard rawSignature.count == 64, let signature = try? P256.Signing.ECDSASignature(rawRepresentation: rawSignature) else {
            throw WebPushError(.vapidMalformed, "ES256 signature must be 64 bytes r‖s, got \(rawSignature.count)")
        }
        let signed = credentials.token.utf8.prefix(parts[0].utf8.count + 1 + parts[1].utf8.count)
        guard key.isValidSignature(signature, for: Array(signed)) else {
            throw WebPushError(.vapidBadSignature, "JWT signature does not verify under the key in k")
        }
        try checkClaims(claims, audiences: audiences, now: now)
        return claims
    }

    /// The claim checks alone (the signature already verified): `aud` ∈ `audiences`,
    /// `now` < `exp` ≤ `now` + 24 h, `sub` a `mailto:` or `https:` URI.
    public static func checkClaims(_ claims: VAPIDClaims, audiences: [String], now: Int64) throws {
        let aud = claims.aud.hasSuffix("/") ? String(claims.aud.dropLast()) : claims.aud
        guard audiences.contains(where: { $0.caseInsensitiveCompare(aud) == .orderedSame }) else {
            throw WebPushError(.vapidBadClaim, "aud \(claims.aud) is not this push service's origin (\(audiences.joined(separator: " or ")))")
        }
        guard claims.exp > now else {
            throw WebPushError(.vapidBadClaim, "token expired: exp \(claims.exp) is \(now - claims.exp) s in the past")
        }
        guard claims.exp <= now + maxLifetime else {
            throw WebPushError(.vapidBadClaim, "exp \(claims.exp) is \(claims.exp - now) s ahead, more than the 24 h RFC 8292 allows")
        }
        guard let sub = claims.sub, sub.hasPrefix("mailto:") || sub.hasPrefix("https:") else {
            throw WebPushError(.vapidBadClaim, "sub must be a mailto: or https: contact URI, got \(claims.sub ?? "none")")
        }
    }

    /// `scheme://host[:port]` of a URL, as `aud` wants it (default ports omitted).
    public static func origin(of url: URL) -> String? {
        guard let scheme = url.scheme?.lowercased(), let host = url.host else { return nil }
        let hostText = host.contains(":") && !host.hasPrefix("[") ? "[\(host)]" : host
        if let port = url.port, !(scheme == "https" && port == 443) && !(scheme == "http" && port == 80) {
            return "\(scheme)://\(hostText):\(port)"
        }
        return "\(scheme)://\(hostText)"
    }
}
