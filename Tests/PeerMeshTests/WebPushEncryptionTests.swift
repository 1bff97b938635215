import Crypto
import XCTest

@testable import PeerMesh

final class WebPushEncryptionTests: XCTestCase {
    private func receiver(_ c: [String: Any]) throws -> WebPushReceiverKeys {
        try WebPushReceiverKeys(privateKey: b64(c, "ua_private"), authSecret: b64(c, "auth"))
    }

    /// RFC 8291 Appendix A: every intermediate value and the body, byte for byte.
    func testRFC8291AppendixA() throws {
        let a = WebPushFixtures.appendixA
        let asKey = try P256.KeyAgreement.PrivateKey(rawRepresentation: b64(a, "as_private"))
        let ua = try receiver(a)
        XCTAssertEqual(ua.publicKey, b64(a, "ua_public"))
        XCTAssertEqual(Array(asKey.publicKey.x963Representation), b64(a, "as_public"))
        let shared = try asKey.sharedSecretFromKeyAgreement(with: P256.KeyAgreement.PublicKey(x963Representation: b64(a, "ua_public")))
        let ecdh = shared.withUnsafeBytes { Array($0) }
        XCTAssertEqual(ecdh, b64(a, "ecdh_secret"))
        let schedule = WebPushEncryption.keySchedule(
            ecdhSecret: ecdh, authSecret: b64(a, "auth"), uaPublic: b64(a, "ua_public"), asPublic: b64(a, "as_public"), salt: b64(a, "salt"))
        XCTAssertEqual(schedule.ikm, b64(a, "ikm"))
        XCTAssertEqual(schedule.prk, b64(a, "prk"))
        XCTAssertEqual(schedule.keys.contentKey, b64(a, "cek"))
        XCTAssertEqual(schedule.keys.baseNonce, b64(a, "nonce"))
        let header = try ContentCodingHeader(salt: b64(a, "salt"), recordSize: a["rs"] as! Int, keyID: b64(a, "as_public"))
        XCTAssertEqual(header.encode(), b64(a, "header"))
        let body = try WebPushEncryption.encrypt(
            b64(a, "plaintext"), uaPublicKey: b64(a, "ua_public"), authSecret: b64(a, "auth"),
            asPrivateKey: asKey, salt: b64(a, "salt"), recordSize: a["rs"] as! Int)
        XCTAssertEqual(body, b64(a, "body"))
        XCTAssertEqual(Array(body.dropFirst(header.encodedLength)), b64(a, "ciphertext"))
        XCTAssertEqual(try ua.decrypt(b64(a, "body")), Array((a["plaintext_utf8"] as! String).utf8))
    }

    /// Every http_ece case: re-encrypt byte-identically where deterministic, decrypt whole, split and
    /// drip-fed; the tampered one is refused.
    func testHTTPECEVectorsBothWays() throws {
        XCTAssertEqual(WebPushFixtures.aes128gcm.count, 7)
        for c in WebPushFixtures.aes128gcm {
            let name = c["name"] as! String
            let ua = try receiver(c)
            let body = b64(c, "body")
            if c["expect"] as? String == "decrypt-error" {
                let message = assertWebPushError(.authenticationFailed) { try ua.decrypt(body) }
                XCTAssertTrue(message.contains("authentication"), name)
                continue
            }
            let plaintext = b64(c, "plaintext")
            XCTAssertEqual(try ua.decrypt(body), plaintext, name)
            for piece in [1, 7, 86, 87, 1000] {
                XCTAssertEqual(try decryptInPieces(body, ua: ua, piece: piece), plaintext, "\(name) piece \(piece)")
            }
            if let headerOnly = c["body_http_ece_header_only"] as? String {
                XCTAssertEqual(try ua.decrypt(Base64URL.decode(headerOnly)), [], name)
                var strict = AES128GCMDecoder(acceptHeaderOnly: false, keys: WebPushEncryption.receiverKeys(uaPrivateKey: ua.privateKey, authSecret: ua.authSecret))
                assertWebPushError(.truncated) { try strict.feed(Base64URL.decode(headerOnly)) + strict.finish() }
            }
            guard c["as_private"] != nil else { continue }
            let asKey = try P256.KeyAgreement.PrivateKey(rawRepresentation: b64(c, "as_private"))
            let again = try WebPushEncryption.encrypt(
                plaintext, uaPublicKey: b64(c, "ua_public"), authSecret: b64(c, "auth"),
                asPrivateKey: asKey, salt: b64(c, "salt"), recordSize: c["rs"] as! Int)
            XCTAssertEqual(again, body, "\(name): re-encryption differs")
            let ecdh = try asKey.sharedSecretFromKeyAgreement(with: P256.KeyAgreement.PublicKey(x963Representation: b64(c, "ua_public")))
            let schedule = WebPushEncryption.keySchedule(
                ecdhSecret: ecdh.withUnsafeBytes { Array($0) }, authSecret: b64(c, "auth"),
                uaPublic: b64(c, "ua_public"), asPublic: b64(c, "as_public"), salt: b64(c, "salt"))
            XCTAssertEqual(schedule.ecdhSecret, b64(c, "ecdh_secret"), name)
            XCTAssertEqual(schedule.ikm, b64(c, "ikm"), name)
            XCTAssertEqual(schedule.prk, b64(c, "prk"), name)
            XCTAssertEqual(schedule.keys.contentKey, b64(c, "cek"), name)
            XCTAssertEqual(schedule.keys.baseNonce, b64(c, "nonce"), name)
        }
    }

    private func decryptInPieces(_ body: [UInt8], ua: WebPushReceiverKeys, piece: Int) throws -> [UInt8] {
        var decoder = AES128GCMDecoder(keys: WebPushEncryption.receiverKeys(uaPrivateKey: ua.privateKey, authSecret: ua.authSecret))
        var out: [UInt8] = []
        var i = 0
        while i < body.count {
            out += try decoder.feed(body[i..<min(i + piece, body.count)])
            i += piece
        }
        return out + (try decoder.finish())
    }

    /// Multi-record bodies with padding that spills into extra records: round trip in pieces.
    func testMultiRecordAndPaddingRoundTrip() throws {
        let ua = WebPushReceiverKeys()
        for (size, rs, padding) in [(0, 18, 0), (1, 18, 3), (100, 18, 0), (100, 25, 40), (1000, 100, 250), (4079, 4096, 0), (4080, 4096, 0), (3000, 4096, 2000)] {
            let plaintext = (0..<size).map { UInt8(truncatingIfNeeded: $0 * 7) }
            let body = try WebPushEncryption.encrypt(plaintext, uaPublicKey: ua.publicKey, authSecret: ua.authSecret, recordSize: rs, padding: padding)
            let records = (plaintext.count + padding) / (rs - 17) + 1
            XCTAssertLessThanOrEqual(body.count, 86 + records * rs, "size \(size) rs \(rs)")
            XCTAssertEqual(try ua.decrypt(body), plaintext, "size \(size) rs \(rs) padding \(padding)")
            XCTAssertEqual(try decryptInPieces(body, ua: ua, piece: 1), plaintext, "drip-fed size \(size) rs \(rs)")
            XCTAssertEqual(try decryptInPieces(body, ua: ua, piece: rs), plaintext, "record-sized pieces size \(size) rs \(rs)")
        }
    }

    /// Tampered, truncated, wrongly keyed and malformed bodies are refused with the right code.
    func testRefusals() throws {
        let ua = WebPushReceiverKeys()
        let plaintext = Array("a message long enough to span several small records".utf8)
        let body = try WebPushEncryption.encrypt(plaintext, uaPublicKey: ua.publicKey, authSecret: ua.authSecret, recordSize: 20)
        let other = WebPushReceiverKeys()
        assertWebPushError(.authenticationFailed) { try other.decrypt(body) }
        let wrongAuth = try WebPushReceiverKeys(privateKey: Array(ua.privateKey.rawRepresentation), authSecret: other.authSecret)
        assertWebPushError(.authenticationFailed) { try wrongAuth.decrypt(body) }
        for index in [0, 16, 30, 86, 100, body.count - 1] {
            var bad = body
            bad[index] ^= 0x01
            XCTAssertThrowsError(try ua.decrypt(bad), "flipped byte \(index)") { XCTAssertTrue($0 is WebPushError) }
        }
        // Cut at a record boundary: the last remaining record says more follow (delimiter 1).
        XCTAssertTrue(assertWebPushError(.badPadding) { try ua.decrypt(Array(body.prefix(86 + 2 * 20))) }.contains("expected 2"))
        // Cut inside a record: authentication fails.
        assertWebPushError(.authenticationFailed) { try ua.decrypt(Array(body.prefix(86 + 20 + 18))) }
        // Cut inside the header, and a dangling short record.
        assertWebPushError(.truncated) { try ua.decrypt(Array(body.prefix(50))) }
        assertWebPushError(.truncated) { try ua.decrypt(Array(body.prefix(86 + 20 + 5))) }
        // Record size below 18.
        var smallRS = body
        smallRS[16...19] = [0, 0, 0, 17]
        assertWebPushError(.badHeader) { try ua.decrypt(smallRS) }
        // keyid that is not a 65-byte key.
        var shortID = body
        shortID[20] = 10
        assertWebPushError(.badHeader) { try ua.decrypt(shortID) }
        assertWebPushError(.badKey) { try WebPushEncryption.encrypt([1], uaPublicKey: [4, 1, 2], authSecret: ua.authSecret) }
        assertWebPushError(.badKey) { try WebPushEncryption.encrypt([1], uaPublicKey: ua.publicKey, authSecret: [1, 2, 3]) }
        assertWebPushError(.badParameter) { try WebPushEncryption.encrypt([1], uaPublicKey: ua.publicKey, authSecret: ua.authSecret, recordSize: 17) }
        assertWebPushError(.badParameter) { try WebPushEncryption.encrypt([1], uaPublicKey: ua.publicKey, authSecret: ua.authSecret, padding: -1) }
    }

    /// Delimiter rules of RFC 8188 §2 on hand-built records: 0x02 before the end, 0x01 at the end,
    /// and an all-zero record are refused.
    func testPaddingDelimiterRules() throws {
        let keys = RecordKeys(contentKey: Array(repeating: 7, count: 16), baseNonce: Array(repeating: 9, count: 12))
        let header = try ContentCodingHeader(salt: Array(repeating: 1, count: 16), recordSize: 20, keyID: [])
        func record(_ plain: [UInt8], _ seq: UInt64) throws -> [UInt8] {
            let box = try AES.GCM.seal(plain, using: SymmetricKey(data: keys.contentKey), nonce: AES.GCM.Nonce(data: keys.nonce(for: seq)))
            return Array(box.ciphertext) + Array(box.tag)
        }
        func decode(_ body: [UInt8]) throws -> [UInt8] {
            var d = AES128GCMDecoder { _ in keys }
            return try d.feed(body) + d.finish()
        }
        let good = header.encode() + (try record([1, 2, 3, 1], 0)) + (try record([4, 2, 0], 1))
        XCTAssertEqual(try decode(good), [1, 2, 3, 4])
        XCTAssertTrue(assertWebPushError(.badPadding) { try decode(header.encode() + (try record([1, 2, 3, 2], 0)) + (try record([4, 2], 1))) }
            .contains("not the last"))
        assertWebPushError(.badPadding) { try decode(header.encode() + (try record([1, 1, 0, 0], 0))) }
        assertWebPushError(.badPadding) { try decode(header.encode() + (try record([0, 0, 0], 0))) }
        XCTAssertEqual(try decode(header.encode() + (try record([9, 0, 2, 0], 0))), [9, 0])
    }
}
