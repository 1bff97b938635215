import Foundation
import Synchronization

/// Reuses signed VAPID tokens per audience. RFC 8292 §2 lets an application server reuse a token
/// until it expires; signing per message (as pywebpush does) costs an ECDSA signature each time.
/// A token is replaced when less than half of its lifetime remains.
public final class VAPIDTokenCache: Sendable {
    private let signer: VAPIDSigner
    private let subject: String
    private let lifetime: TimeInterval
    private let tokens = Mutex<[String: (credentials: VAPIDCredentials, renewAt: TimeInterval)]>([:])

    public init(signer: VAPIDSigner, subject: String, lifetime: TimeInterval = 12 * 3600) {
        self.signer = signer
        self.subject = subject
        self.lifetime = lifetime
    }

    /// Credentials for `endpoint`'s origin, valid at `now`.
    public func credentials(for endpoint: URL, now: Date) throws -> VAPIDCredentials {
        guard let audience = VAPIDVerifier.origin(of: endpoint) else {
            throw WebPushError(.vapidBadClaim, "endpoint \(endpoint) has no scheme and host for aud")
        }
        let t = now.timeIntervalSince1970
        if let cached = tokens.withLock({ $0[audience] }), cached.renewAt > t, cached.renewAt - lifetime / 2 <= t {
            return cached.credentials
        }
        let fresh = try signer.sign(VAPIDClaims(aud: audience, exp: Int64(t + lifetime), sub: subject))
        tokens.withLock { $0[audience] = (fresh, t + lifetime / 2) }
        return fresh
    }
}

/// Remembers tokens whose signature already verified, so a push service checks each distinct token's
/// ECDSA signature once. Claims (`aud`, `exp`, `sub`) are still checked on every request against the
/// current time. Bounded: when full, the cache is emptied (cheap, and only costs re-verification).
public final class VAPIDVerificationCache: Sendable {
    private let capacity: Int
    private let verified = Mutex<[String: VAPIDClaims]>([:])

    public init(capacity: Int = 4096) {
        self.capacity = capacity
    }

    /// `VAPIDVerifier.verify`, skipping the signature check for a token + key seen before.
    public func verify(_ credentials: VAPIDCredentials, audiences: [String], now: Int64) throws -> VAPIDClaims {
        let key = credentials.token + "," + Base64URL.encode(credentials.publicKey)
        if let claims = verified.withLock({ $0[key] }) {
            try VAPIDVerifier.checkClaims(claims, audiences: audiences, now: now)
            return claims
        }
        let claims = try VAPIDVerifier.verify(credentials, audiences: audiences, now: now)
        verified.withLock { cache in
            if cache.count >= capacity { cache.removeAll(keepingCapacity: true) }
            cache[key] = claims
        }
        return claims
    }
}
