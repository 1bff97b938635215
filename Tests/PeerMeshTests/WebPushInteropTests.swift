import Crypto
import Foundation
import XCTest

@testable import PeerMesh

/// A second implementation agrees: Python http_ece and py_vapid (interop/webpush/webpush_peer.py).
/// These tests fail, not skip, when python3 or the packages are missing.
final class WebPushInteropTests: XCTestCase {
    let peer = WebPushFixtures.peer

    /// What ugate encrypts, http_ece decrypts: sizes around record boundaries, several record
    /// sizes, padding.
    func testHTTPECEDecryptsOurOutput() throws {
        let ua = WebPushReceiverKeys()
        for (size, rs, padding) in [(0, 4096, 0), (1, 4096, 0), (300, 4096, 17), (3993, 4096, 0), (500, 100, 0), (64, 18, 5), (1000, 4096, 2000)] {
            let plaintext = (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 5) }
            let body = try WebPushEncryption.encrypt(plaintext, uaPublicKey: ua.publicKey, authSecret: ua.authSecret, recordSize: rs, padding: padding)
            let answer = try peer.call("decrypt", [
                "body": Base64URL.encode(body), "ua_private": Base64URL.encode(ua.privateKey.rawRepresentation),
                "auth": Base64URL.encode(ua.authSecret),
            ])
            XCTAssertNil(answer["error"], "http_ece refused size \(size) rs \(rs) padding \(padding): \(answer)")
            XCTAssertEqual(try Base64URL.decode(answer["plaintext"] as? String ?? "-"), plaintext, "size \(size) rs \(rs)")
        }
        // And http_ece refuses what was encrypted for someone else, as we do.
        let other = WebPushReceiverKeys()
        let body = try WebPushEncryption.encrypt([1, 2, 3], uaPublicKey: other.publicKey, authSecret: other.authSecret)
        let answer = try peer.call("decrypt", [
            "body": Base64URL.encode(body), "ua_private": Base64URL.encode(ua.privateKey.rawRepresentation), "auth": Base64URL.encode(ua.authSecret),
        ])
        XCTAssertNotNil(answer["error"])
    }

    /// What http_ece encrypts now (fresh random keys, multi-record), ugate decrypts.
    func testWeDecryptHTTPECEOutput() throws {
        let ua = WebPushReceiverKeys()
        for (size, rs) in [(0, 4096), (10, 4096), (2000, 4096), (700, 64), (4079, 4096), (4080, 4096)] {
            let plaintext = (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 13) }
            let answer = try peer.call("encrypt", [
                "plaintext": Base64URL.encode(plaintext), "ua_public": Base64URL.encode(ua.publicKey),
                "auth": Base64URL.encode(ua.authSecret), "rs": rs,
            ])
            XCTAssertEqual(try ua.decrypt(Base64URL.decode(answer["body"] as! String)), plaintext, "size \(size) rs \(rs)")
        }
    }

    /// A token ugate signs verifies with py_vapid's Vapid02.verify; a token py_vapid signs now
    /// verifies with ugate; a token with a swapped key fails in both.
    func testVAPIDAgreesWithPyVAPID() throws {
        let signer = VAPIDSigner()
        let now = Int64(Date().timeIntervalSince1970)
        let claims = VAPIDClaims(aud: "http://127.0.0.1:15000", exp: now + 3600, sub: "mailto:ops@mesh.test")
        let mine = try signer.sign(claims)
        let answer = try peer.call("vapid-verify", ["authorization": mine.authorization])
        XCTAssertEqual(answer["ok"] as? Bool, true, "\(answer)")
        XCTAssertEqual((answer["claims"] as? [String: Any])?["aud"] as? String, claims.aud)
        let swapped = VAPIDCredentials(token: mine.token, publicKey: VAPIDSigner().publicKey)
        XCTAssertEqual(try peer.call("vapid-verify", ["authorization": swapped.authorization])["ok"] as? Bool, false)

        let signed = try peer.call("vapid-sign", [
            "private_key": Base64URL.encode(signer.rawPrivateKey),
            "claims": ["aud": claims.aud, "exp": claims.exp, "sub": claims.sub!],
        ])
        let theirs = try XCTUnwrap(VAPIDCredentials.parse(authorization: signed["authorization"] as? String, cryptoKey: nil))
        XCTAssertEqual(theirs.publicKey, signer.publicKey)
        XCTAssertEqual(try VAPIDVerifier.verify(theirs, audiences: [claims.aud], now: now), claims)
    }
}
