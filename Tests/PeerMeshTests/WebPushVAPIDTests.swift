import Crypto
import Foundation
import XCTest

@testable import PeerMesh

final class WebPushVAPIDTests: XCTestCase {
    /// py_vapid tokens from the vectors verify at a time before their exp; the one whose k does not
    /// match the signing key is refused.
    func testPyVAPIDVectors() throws {
        XCTAssertEqual(WebPushFixtures.vapid.count, 3)
        for v in WebPushFixtures.vapid {
            let claims = v["claims"] as! [String: Any]
            let exp = (claims["exp"] as! NSNumber).int64Value
            let aud = claims["aud"] as! String
            let credentials = try XCTUnwrap(VAPIDCredentials.parse(authorization: v["authorization"] as? String, cryptoKey: nil))
            XCTAssertEqual(credentials.token, v["jwt"] as? String)
            XCTAssertEqual(credentials.publicKey, b64(v, "public_key"))
            if v["expect"] as? String == "verify-fail" {
                assertWebPushError(.vapidBadSignature) { try VAPIDVerifier.verify(credentials, audiences: [aud], now: exp - 3600) }
                continue
            }
            let verified = try VAPIDVerifier.verify(credentials, audiences: [aud], now: exp - 3600)
            XCTAssertEqual(verified, VAPIDClaims(aud: aud, exp: exp, sub: claims["sub"] as? String))
            // The same key signs a token of the same shape.
            let signer = VAPIDSigner(privateKey: try P256.Signing.PrivateKey(rawRepresentation: b64(v, "private_key")))
            XCTAssertEqual(signer.publicKey, b64(v, "public_key"))
            let mine = try signer.sign(verified)
            XCTAssertEqual(mine.token.split(separator: ".").prefix(2), credentials.token.split(separator: ".").prefix(2))
            XCTAssertEqual(try VAPIDVerifier.verify(mine, audiences: [aud], now: exp - 3600), verified)
        }
    }

    /// Each claim check refuses with a message naming the problem.
    func testClaimChecks() throws {
        let signer = VAPIDSigner()
        let now: Int64 = 1_800_000_000
        let aud = "http://127.0.0.1:8443"
        func verify(_ claims: VAPIDClaims, audiences: [String] = [aud]) throws -> VAPIDClaims {
            try VAPIDVerifier.verify(try signer.sign(claims), audiences: audiences, now: now)
        }
        XCTAssertNoThrow(try verify(VAPIDClaims(aud: aud, exp: now + 60, sub: "mailto:a@b.c")))
        XCTAssertNoThrow(try verify(VAPIDClaims(aud: aud + "/", exp: now + 86400, sub: "https://ops.example")))
        XCTAssertTrue(assertWebPushError(.vapidBadClaim) { try verify(VAPIDClaims(aud: "https://other.example", exp: now + 60, sub: "mailto:a@b.c")) }.contains("aud"))
        XCTAssertTrue(assertWebPushError(.vapidBadClaim) { try verify(VAPIDClaims(aud: aud, exp: now, sub: "mailto:a@b.c")) }.contains("expired"))
        XCTAssertTrue(assertWebPushError(.vapidBadClaim) { try verify(VAPIDClaims(aud: aud, exp: now + 86401, sub: "mailto:a@b.c")) }.contains("24 h"))
        XCTAssertTrue(assertWebPushError(.vapidBadClaim) { try verify(VAPIDClaims(aud: aud, exp: now + 60, sub: nil)) }.contains("sub"))
        XCTAssertTrue(assertWebPushError(.vapidBadClaim) { try verify(VAPIDClaims(aud: aud, exp: now + 60, sub: "ops@example")) }.contains("sub"))
    }

    /// Malformed headers and tokens, a signature from another key, and the legacy WebPush form.
    func testHeaderForms() throws {
        let signer = VAPIDSigner()
        let now: Int64 = 1_800_000_000
        let aud = "https://push.example"
        let good = try signer.sign(VAPIDClaims(aud: aud, exp: now + 600, sub: "mailto:a@b.c"))
        XCTAssertNil(try VAPIDCredentials.parse(authorization: nil, cryptoKey: nil))
        XCTAssertEqual(try VAPIDCredentials.parse(authorization: good.authorization, cryptoKey: nil), good)
        XCTAssertEqual(try VAPIDCredentials.parse(authorization: "vapid t=\(good.token), k=\(Base64URL.encode(good.publicKey))", cryptoKey: nil), good)
        XCTAssertEqual(try VAPIDCredentials.parse(authorization: "WebPush \(good.token)", cryptoKey: "dh=BAAA;p256ecdsa=\(Base64URL.encode(good.publicKey))"), good)
        assertWebPushError(.vapidMalformed) { try VAPIDCredentials.parse(authorization: "Bearer abc", cryptoKey: nil) }
        assertWebPushError(.vapidMalformed) { try VAPIDCredentials.parse(authorization: "vapid k=\(Base64URL.encode(good.publicKey))", cryptoKey: nil) }
        assertWebPushError(.vapidMalformed) { try VAPIDCredentials.parse(authorization: "vapid t=\(good.token)", cryptoKey: nil) }
        assertWebPushError(.vapidMalformed) { try VAPIDCredentials.parse(authorization: "WebPush \(good.token)", cryptoKey: nil) }
        let other = VAPIDSigner()
        assertWebPushError(.vapidBadSignature) { try VAPIDVerifier.verify(VAPIDCredentials(token: good.token, publicKey: other.publicKey), audiences: [aud], now: now) }
        let parts = good.token.split(separator: ".").map(String.init)
        assertWebPushError(.vapidMalformed) { try VAPIDVerifier.verify(VAPIDCredentials(token: parts[0] + "." + parts[1], publicKey: good.publicKey), audiences: [aud], now: now) }
        let noneAlg = Base64URL.encode(Array(#"{"typ":"JWT","alg":"none"}"#.utf8))
        assertWebPushError(.vapidMalformed) { try VAPIDVerifier.verify(VAPIDCredentials(token: noneAlg + "." + parts[1] + "." + parts[2], publicKey: good.publicKey), audiences: [aud], now: now) }
        assertWebPushError(.vapidMalformed) { try VAPIDVerifier.verify(VAPIDCredentials(token: parts[0] + "." + parts[1] + ".AAAA", publicKey: good.publicKey), audiences: [aud], now: now) }
        let tamperedClaims = Base64URL.encode(Array(#"{"aud":"https://push.example","exp":1800000600,"sub":"mailto:x@b.c"}"#.utf8))
        assertWebPushError(.vapidBadSignature) { try VAPIDVerifier.verify(VAPIDCredentials(token: parts[0] + "." + tamperedClaims + "." + parts[2], publicKey: good.publicKey), audiences: [aud], now: now) }
        XCTAssertEqual(VAPIDVerifier.origin(of: URL(string: "https://push.example:443/push/abc")!), "https://push.example")
        XCTAssertEqual(VAPIDVerifier.origin(of: URL(string: "http://127.0.0.1:8080/push/abc")!), "http://127.0.0.1:8080")
    }

    /// Token reuse on the sender and verified-signature reuse on the service never skip the claim checks.
    func testCaches() throws {
        let signer = VAPIDSigner()
        let cache = VAPIDTokenCache(signer: signer, subject: "mailto:a@b.c", lifetime: 3600)
        let endpoint = URL(string: "http://127.0.0.1:9/push/x")!
        let t0 = Date(timeIntervalSince1970: 1_800_000_000)
        let first = try cache.credentials(for: endpoint, now: t0)
        XCTAssertEqual(try cache.credentials(for: endpoint, now: t0.addingTimeInterval(1799)), first)
        let renewed = try cache.credentials(for: endpoint, now: t0.addingTimeInterval(1800))
        XCTAssertNotEqual(renewed, first)
        XCTAssertNotEqual(try cache.credentials(for: URL(string: "http://127.0.0.1:10/push/x")!, now: t0), first)

        let verifier = VAPIDVerificationCache(capacity: 2)
        let now = Int64(t0.timeIntervalSince1970)
        XCTAssertEqual(try verifier.verify(first, audiences: ["http://127.0.0.1:9"], now: now).aud, "http://127.0.0.1:9")
        XCTAssertNoThrow(try verifier.verify(first, audiences: ["http://127.0.0.1:9"], now: now + 10))
        XCTAssertTrue(assertWebPushError(.vapidBadClaim) { try verifier.verify(first, audiences: ["http://127.0.0.1:9"], now: now + 3600) }.contains("expired"))
        assertWebPushError(.vapidBadClaim) { try verifier.verify(first, audiences: ["http://other:9"], now: now) }
        // The same token presented with another key is a different entry and fails its signature check.
        assertWebPushError(.vapidBadSignature) {
            try verifier.verify(VAPIDCredentials(token: first.token, publicKey: VAPIDSigner().publicKey), audiences: ["http://127.0.0.1:9"], now: now)
        }
    }
}
