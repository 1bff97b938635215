import Crypto
import Foundation
import Gate
import XCTest

@testable import PeerMesh

final class WebPushSignalingTests: XCTestCase {
    let now: Int64 = 1_800_000_000_000

    func testSignedMessageChecks() throws {
        let alice = SignalingSigner(key: P256.Signing.PrivateKey())
        let bob = SignalingSigner(key: P256.Signing.PrivateKey())
        var bobVerifier = SignalingVerifier(me: bob.nodeID, window: 60_000, capacity: 3)
        let offer = SignalingMessage(kind: .offer, session: "s1", to: bob.nodeID, seq: 1, ts: now, sdp: "v=0\r\n")
        let sealed = try alice.seal(offer)
        let (from, message) = try bobVerifier.open(sealed, now: now + 1000)
        XCTAssertEqual(from, alice.nodeID)
        XCTAssertEqual(message, offer)
        XCTAssertTrue(assertWebPushError(.signaling) { try bobVerifier.open(sealed, now: now + 2000) }.contains("replayed"))

        // Forgery: the message re-signed claims alice's key but carries mallory's signature.
        let mallory = SignalingSigner(key: P256.Signing.PrivateKey())
        var envelope = try JSONSerialization.jsonObject(with: Data(try mallory.seal(
            SignalingMessage(kind: .answer, session: "s1", to: bob.nodeID, seq: 2, ts: now)))) as! [String: Any]
        envelope["key"] = Base64URL.encode(alice.key.publicKey.x963Representation)
        XCTAssertTrue(assertWebPushError(.signaling) { try bobVerifier.open(Array(try JSONSerialization.data(withJSONObject: envelope)), now: now) }.contains("signature"))
        // Altered payload under a genuine signature.
        var altered = try JSONSerialization.jsonObject(with: Data(try alice.seal(
            SignalingMessage(kind: .candidate, session: "s1", to: bob.nodeID, seq: 3, ts: now, candidate: "a=candidate:1 1 udp 1 10.0.0.1 9 typ host")))) as! [String: Any]
        let msg = try JSONSerialization.jsonObject(with: Data(try Base64URL.decode(altered["msg"] as! String))) as! [String: Any]
        var changed = msg
        changed["candidate"] = "a=candidate:1 1 udp 1 6.6.6.6 9 typ host"
        altered["msg"] = Base64URL.encode(try JSONSerialization.data(withJSONObject: changed))
        XCTAssertTrue(assertWebPushError(.signaling) { try bobVerifier.open(Array(try JSONSerialization.data(withJSONObject: altered)), now: now) }.contains("signature"))
        // Addressed to someone else, too old, not an envelope.
        XCTAssertTrue(assertWebPushError(.signaling) {
            try bobVerifier.open(try alice.seal(SignalingMessage(kind: .bye, session: "s1", to: mallory.nodeID, seq: 4, ts: now)), now: now)
        }.contains("addressed"))
        XCTAssertTrue(assertWebPushError(.signaling) {
            try bobVerifier.open(try alice.seal(SignalingMessage(kind: .bye, session: "s1", to: bob.nodeID, seq: 5, ts: now - 61_000)), now: now)
        }.contains("outside"))
        assertWebPushError(.signaling) { try bobVerifier.open(Array("{}".utf8), now: now) }
        // A full replay cache raises the floor instead of forgetting: evicted nonces stay refused.
        for seq in 6..<10 {
            _ = try bobVerifier.open(try alice.seal(SignalingMessage(kind: .candidate, session: "s1", to: bob.nodeID, seq: UInt64(seq), ts: now + Int64(seq))), now: now)
        }
        XCTAssertTrue(assertWebPushError(.signaling) { try bobVerifier.open(sealed, now: now + 2000) }.contains("outside"))
    }

    /// Two nodes exchange an SDP offer and answer through a third node acting as push service;
    /// the service could only see ciphertext; a replayed push and a forged one are refused.
    func testOfferAnswerThroughThirdNode() async throws {
        let service = try PushService(store: nil)
        let channel = try await AdminServer(routes: service.routes).start(host: "127.0.0.1", port: 0)
        defer { channel.close(promise: nil) }
        let base = URL(string: "http://127.0.0.1:\(channel.localAddress!.port!)")!

        struct Node {
            let signer: SignalingSigner
            let vapid: VAPIDSigner
            let inbox: PushSubscriber
            var verifier: SignalingVerifier
        }
        func makeNode() async throws -> Node {
            let key = P256.Signing.PrivateKey()
            let signer = SignalingSigner(key: key)
            return Node(signer: signer, vapid: VAPIDSigner(privateKey: key),
                        inbox: try await PushSubscriber.subscribe(service: base), verifier: SignalingVerifier(me: signer.nodeID))
        }
        var a = try await makeNode()
        var b = try await makeNode()
        let clockMS = { Int64(Date().timeIntervalSince1970 * 1000) }
        func receive(_ node: inout Node) async throws -> [Result<(NodeID, SignalingMessage), WebPushError>] {
            let inbox = node.inbox
            let pushes = try await PushHTTPClient.withConnection(to: inbox.subscriptionURL) { try await inbox.receive(on: $0, wait: 10) }
            return pushes.map { push in
                do { return .success(try node.verifier.open(push.plaintext ?? [], now: clockMS())) } catch let e as WebPushError { return .failure(e) } catch { return .failure(WebPushError(.signaling, "\(error)")) }
            }
        }

        let offerSDP = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=setup:actpass\r\n"
        let offer = SignalingMessage(kind: .offer, session: "call-1", to: b.signer.nodeID, seq: 1, ts: clockMS(), sdp: offerSDP, replyTo: a.inbox.w3c)
        let offerPush = try PushSender(vapid: a.vapid).prepare(try a.signer.seal(offer), to: b.inbox.w3c)
        XCTAssertNil(offerPush.body.firstRange(of: Array("webrtc-datachannel".utf8)), "the push service must see ciphertext only")
        assertStatus(try await PushSender(vapid: a.vapid).post(offerPush), 201)

        let atB = try await receive(&b)
        XCTAssertEqual(atB.count, 1)
        let (from, gotOffer) = try atB[0].get()
        XCTAssertEqual(from, a.signer.nodeID)
        XCTAssertEqual(gotOffer.sdp, offerSDP)
        let replyTo = try XCTUnwrap(gotOffer.replyTo)

        let answerSDP = offerSDP.replacingOccurrences(of: "actpass", with: "active")
        let answer = SignalingMessage(kind: .answer, session: gotOffer.session, to: from, seq: 1, ts: clockMS(), sdp: answerSDP)
        assertStatus(try await PushSender(vapid: b.vapid).send(try b.signer.seal(answer), to: replyTo), 201)
        let atA = try await receive(&a)
        let (answerFrom, gotAnswer) = try XCTUnwrap(atA.first).get()
        XCTAssertEqual(answerFrom, b.signer.nodeID)
        XCTAssertEqual(gotAnswer.kind, .answer)
        XCTAssertEqual(gotAnswer.sdp, answerSDP)

        // The service (or anyone who captured the push) replays the offer: B refuses it.
        assertStatus(try await PushSender(vapid: a.vapid).post(offerPush), 201)
        // A forged "bye" claiming to be A, signed by another key.
        let forger = SignalingSigner(key: P256.Signing.PrivateKey())
        var forged = try JSONSerialization.jsonObject(with: Data(try forger.seal(
            SignalingMessage(kind: .bye, session: "call-1", to: b.signer.nodeID, seq: 2, ts: clockMS())))) as! [String: Any]
        forged["key"] = Base64URL.encode(a.signer.key.publicKey.x963Representation)
        assertStatus(try await PushSender(vapid: nil).send(Array(try JSONSerialization.data(withJSONObject: forged)), to: b.inbox.w3c), 201)
        let refused = try await receive(&b)
        XCTAssertEqual(refused.count, 2)
        let reasons = refused.map { result -> String in
            if case .failure(let e) = result { return e.context }
            return "accepted"
        }
        XCTAssertTrue(reasons[0].contains("replayed"), reasons[0])
        XCTAssertTrue(reasons[1].contains("signature"), reasons[1])
    }
}
