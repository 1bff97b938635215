import Foundation
import Gate
import NIOCore
import XCTest

@testable import PeerMesh

final class WebPushServiceTests: XCTestCase {
    // MARK: helpers

    struct Running {
        var service: PushService
        var channel: any Channel
        var base: URL
    }

    private func start(config: PushServiceConfig = PushServiceConfig(), store: FilePushStore? = nil,
                       clock: @escaping @Sendable () -> Double = { Date().timeIntervalSince1970 }) async throws -> Running {
        let service = try PushService(config: config, store: store, clock: clock)
        let channel = try await AdminServer(routes: service.routes).start(host: "127.0.0.1", port: 0)
        return Running(service: service, channel: channel, base: URL(string: "http://127.0.0.1:\(channel.localAddress!.port!)")!)
    }

    /// A running service with an open subscription and one restricted to `vapid`'s key.
    private func startWithSubscriptions() async throws -> (Running, VAPIDSigner, PushSubscriber, PushSubscriber) {
        let node = try await start()
        let vapid = VAPIDSigner()
        let open = try await PushSubscriber.subscribe(service: node.base)
        let restricted = try await PushSubscriber.subscribe(service: node.base, applicationServerKey: vapid.publicKey)
        return (node, vapid, open, restricted)
    }

    private func temporaryDirectory() -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("ugate-push-test-\(UUID().uuidString)").path
        addTeardownBlock { try? FileManager.default.removeItem(atPath: path) }
        return path
    }

    /// Runs the Python peer off the cooperative pool (it blocks on the child process).
    private func python(_ command: String, _ request: [String: Any]) async throws -> [String: Any] {
        let box = UncheckedBox(request)
        return try await withCheckedThrowingContinuation { continuation in
            Thread.detachNewThread {
                do {
                    continuation.resume(returning: UncheckedBox(try WebPushFixtures.peer.call(command, box.value)))
                } catch {
                    continuation.resume(throwing: error)
                }
            }
        }.value
    }

    private func subscriptionInfo(_ s: PushSubscriber) -> [String: Any] {
        ["endpoint": s.w3c.endpoint, "keys": ["p256dh": s.w3c.keys.p256dh, "auth": s.w3c.keys.auth]]
    }

    private func receiveAll(_ s: PushSubscriber, wait: Int = 0) async throws -> [ReceivedPush] {
        try await PushHTTPClient.withConnection(to: s.subscriptionURL) { try await s.receive(on: $0, wait: wait) }
    }

    private func assertRefused(_ response: PushHTTPResponse, _ status: Int, _ words: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(response.status, status, response.text, file: file, line: line)
        XCTAssertTrue(response.text.lowercased().contains(words.lowercased()), "\(status) body \"\(response.text)\" lacks \"\(words)\"", file: file, line: line)
    }

    // MARK: state machine, no sockets

    func testStateMachineQueueRules() throws {
        var config = PushServiceConfig()
        config.maxQueuedPerSubscription = 2
        var state = PushServiceState(config: config)
        let now = 1000.0
        guard case .success(let (sub, saved)) = state.subscribe(id: "s1", pushID: "p1", applicationServerKey: nil, now: now) else { return XCTFail() }
        XCTAssertEqual(saved, [.saveSubscription(sub)])
        func push(_ id: String, ttl: Int = 60, topic: String? = nil, waiting: Bool = false, at t: Double = now) -> Result<(PushServiceState.Accepted, [PushServiceState.StoreAction]), PushRefusal> {
            state.push(pushID: "p1", messageID: id, .init(body: [1], ttl: ttl, urgency: .normal, topic: topic, vapidKey: nil), subscriberWaiting: waiting, now: t)
        }
        guard case .success(let (a, aActions)) = push("m1", topic: "t") else { return XCTFail() }
        XCTAssertEqual(aActions, [.saveMessage(a.message)])
        guard case .success(let (b, bActions)) = push("m2", topic: "t") else { return XCTFail() }
        XCTAssertEqual(b.replaced, "m1")
        XCTAssertEqual(bActions, [.removeMessage(subscription: "s1", id: "m1"), .saveMessage(b.message)])
        guard case .success = push("m3", ttl: 5) else { return XCTFail() }
        guard case .failure(let full) = push("m4") else { return XCTFail("queue of 2 accepted a third") }
        XCTAssertEqual(full.status, 429)
        // A Topic replacement still fits in a full queue.
        guard case .success = push("m5", topic: "t") else { return XCTFail() }
        // TTL 0 without a listener: accepted, not queued, nothing stored.
        guard case .success(let (zero, zeroActions)) = push("m6", ttl: 0, at: now + 10) else { return XCTFail() }
        XCTAssertFalse(zero.queued)
        XCTAssertEqual(zeroActions, [.removeMessage(subscription: "s1", id: "m3")])
        guard case .success(let (left, _)) = state.poll(subscription: "s1", minimumUrgency: .veryLow, now: now + 10) else { return XCTFail() }
        XCTAssertEqual(left.map(\.id), ["m5"])
        guard case .failure(let foreign) = state.acknowledge(message: "m5", subscription: "other") else { return XCTFail() }
        XCTAssertEqual(foreign.status, 404)
        guard case .success(let ack) = state.acknowledge(message: "m5", subscription: "s1") else { return XCTFail() }
        XCTAssertEqual(ack, [.removeMessage(subscription: "s1", id: "m5")])
        guard case .failure(let again) = state.acknowledge(message: "m5") else { return XCTFail() }
        XCTAssertEqual(again.status, 404)
        guard case .success = state.unsubscribe("s1", now: now + 11) else { return XCTFail() }
        guard case .failure(let gone) = push("m7", at: now + 12) else { return XCTFail() }
        XCTAssertEqual(gone.status, 410)
        guard case .failure(let unknown) = state.push(pushID: "nope", messageID: "x", .init(body: [], ttl: 1, urgency: .low, topic: nil, vapidKey: nil), subscriberWaiting: false, now: now) else { return XCTFail() }
        XCTAssertEqual(unknown.status, 404)
        // Tombstones are forgotten after their lifetime: 410 becomes 404.
        XCTAssertEqual(state.sweep(now: now + 11 + config.tombstoneLifetime), [.removeSubscription(id: "s1")])
        guard case .failure(let forgotten) = push("m8", at: now + 12 + config.tombstoneLifetime) else { return XCTFail() }
        XCTAssertEqual(forgotten.status, 404)
    }

    func testRequestParserRefusals() throws {
        let config = PushServiceConfig()
        let ua = WebPushReceiverKeys()
        let body = try WebPushEncryption.encrypt([1, 2, 3], uaPublicKey: ua.publicKey, authSecret: ua.authSecret)
        func parse(_ headers: [(String, String)], body: [UInt8] = body) -> PushRefusal? {
            let request = AdminRequest(method: "POST", uri: "/push/x", headers: [("Host", "h:1")] + headers, body: body, remote: "t")
            if case .failure(let r) = PushRequestParser.parse(request, config: config, now: 1_800_000_000) { return r }
            return nil
        }
        let ok: [(String, String)] = [("TTL", "60"), ("Content-Encoding", "aes128gcm")]
        XCTAssertNil(parse(ok))
        XCTAssertEqual(parse([("Content-Encoding", "aes128gcm")])?.status, 400)
        XCTAssertEqual(parse([("TTL", "-1"), ("Content-Encoding", "aes128gcm")])?.status, 400)
        XCTAssertEqual(parse(ok + [("Urgency", "urgent")])?.status, 400)
        XCTAssertEqual(parse(ok + [("Topic", "has space")])?.status, 400)
        XCTAssertEqual(parse(ok + [("Topic", String(repeating: "a", count: 33))])?.status, 400)
        XCTAssertNil(parse(ok + [("Topic", String(repeating: "a", count: 32)), ("Urgency", "very-low")]))
        XCTAssertEqual(parse([("TTL", "60"), ("Content-Encoding", "aesgcm")])?.status, 400)
        XCTAssertEqual(parse(ok, body: Array(body.prefix(40)))?.status, 400)
        XCTAssertEqual(parse(ok, body: [UInt8](repeating: 0, count: 4097))?.status, 413)
        XCTAssertNil(parse([("TTL", "0")], body: []))
        XCTAssertEqual(parse(ok + [("Authorization", "vapid t=abc")])?.status, 403)
    }

    // MARK: over real sockets

    /// pywebpush posts (with VAPID) to the node's push service; a ugate subscriber long-polling the
    /// subscription receives and decrypts it; a restricted subscription accepts the right key.
    func testPyWebPushReachesUgateSubscriber() async throws {
        let (node, vapid, open, restricted) = try await startWithSubscriptions()
        defer { node.channel.close(promise: nil) }
        // The poll waits while pywebpush sends: delivery wakes it.
        let waiting = Task { [open] in
            try await PushHTTPClient.withConnection(to: open.subscriptionURL) { try await open.receive(on: $0, wait: 30) }
        }
        let sent = try await python("webpush", [
            "subscription": subscriptionInfo(open), "data": Base64URL.encode(Array("hello from pywebpush".utf8)),
            "vapid_private_key": Base64URL.encode(vapid.rawPrivateKey), "ttl": 120, "topic": "greeting", "urgency": "high",
        ])
        XCTAssertEqual(sent["status"] as? Int, 201, "\(sent)")
        let got = try await waiting.value
        XCTAssertEqual(got.count, 1)
        XCTAssertEqual(got.first?.plaintext, Array("hello from pywebpush".utf8))
        XCTAssertEqual(got.first?.topic, "greeting")
        XCTAssertEqual(got.first?.urgency, .high)
        XCTAssertNil(got.first?.error)

        let toRestricted = try await python("webpush", [
            "subscription": subscriptionInfo(restricted), "data": Base64URL.encode(Array("restricted ok".utf8)),
            "vapid_private_key": Base64URL.encode(vapid.rawPrivateKey),
        ])
        XCTAssertEqual(toRestricted["status"] as? Int, 201, "\(toRestricted)")
        let restrictedGot = try await receiveAll(restricted)
        XCTAssertEqual(restrictedGot.map(\.plaintext), [Array("restricted ok".utf8)])
        // Acknowledged: nothing left.
        let leftOver = try await receiveAll(restricted)
        XCTAssertEqual(leftOver.count, 0)
        let queued = await node.service.queued(subscription: restricted.subscriptionURL.lastPathComponent)
        XCTAssertEqual(queued.count, 0)
    }

    /// Wrong aud, expired or far-future exp, missing or wrong VAPID key on a restricted subscription,
    /// oversized body, unknown and unsubscribed subscription: each gets the RFC's status and a reason.
    func testRefusalsOverHTTP() async throws {
        let (node, vapid, open, restricted) = try await startWithSubscriptions()
        defer { node.channel.close(promise: nil) }
        let data = Base64URL.encode(Array("x".utf8))
        let now = Int64(Date().timeIntervalSince1970)
        func pywebpush(_ sub: PushSubscriber, key: VAPIDSigner?, claims: [String: Any]? = nil) async throws -> (Int, String) {
            var request: [String: Any] = ["subscription": subscriptionInfo(sub), "data": data]
            if let key { request["vapid_private_key"] = Base64URL.encode(key.rawPrivateKey) }
            if let claims { request["claims"] = claims }
            let answer = try await python("webpush", request)
            return (answer["status"] as? Int ?? -1, answer["text"] as? String ?? "")
        }
        var (status, text) = try await pywebpush(open, key: vapid, claims: ["aud": "https://elsewhere.example", "sub": "mailto:a@b.c"])
        XCTAssertEqual(status, 403, text); XCTAssertTrue(text.contains("aud"), text)
        // webpush() renews a past exp by itself, so py_vapid signs the expired token and WebPusher posts it.
        let expired = try await python("vapid-sign", [
            "private_key": Base64URL.encode(vapid.rawPrivateKey),
            "claims": ["aud": node.base.absoluteString, "exp": now - 10, "sub": "mailto:a@b.c"],
        ])
        let expiredPost = try await python("webpush", ["subscription": subscriptionInfo(open), "data": data, "authorization": expired["authorization"] as! String])
        XCTAssertEqual(expiredPost["status"] as? Int, 403, "\(expiredPost)")
        XCTAssertTrue((expiredPost["text"] as? String ?? "").contains("expired"), "\(expiredPost)")
        (status, text) = try await pywebpush(open, key: vapid, claims: ["exp": now + 48 * 3600, "sub": "mailto:a@b.c"])
        XCTAssertEqual(status, 403, text); XCTAssertTrue(text.contains("24 h"), text)
        (status, text) = try await pywebpush(restricted, key: nil)
        XCTAssertEqual(status, 401, text); XCTAssertTrue(text.contains("VAPID authorization required"), text)
        (status, text) = try await pywebpush(restricted, key: VAPIDSigner())
        XCTAssertEqual(status, 403, text); XCTAssertTrue(text.contains("does not match"), text)

        let sender = PushSender(vapid: vapid)
        let big = try sender.prepare([UInt8](repeating: 1, count: 5000), to: open.w3c)
        assertRefused(try await sender.post(big), 413, "limit is 4096")
        let unknown = W3CPushSubscription(
            endpoint: node.base.appendingPathComponent("push/doesnotexist").absoluteString, p256dh: open.keys.publicKey, auth: open.keys.authSecret)
        assertRefused(try await sender.send([1], to: unknown), 404, "no push subscription")
        try await open.unsubscribe()
        assertRefused(try await sender.send([1], to: open.w3c), 410, "unsubscribed")
        assertRefused(try await PushHTTPClient.send("GET", open.subscriptionURL), 410, "unsubscribed")
        var noTTL = try sender.prepare([1], to: restricted.w3c)
        noTTL.headers.removeAll { $0.0 == "TTL" }
        assertRefused(try await sender.post(noTTL), 400, "TTL")
        assertRefused(try await sender.send([1], to: restricted.w3c, topic: "not a topic!"), 400, "Topic")
        assertRefused(try await PushHTTPClient.send("DELETE", node.base.appendingPathComponent("message/nothing")), 404, "no message")
        // The message resource acknowledges one message (RFC 8030 §6.2); a second DELETE finds nothing.
        let accepted = try await sender.send([1], to: restricted.w3c)
        assertStatus(accepted, 201)
        let location = node.base.appendingPathComponent(try XCTUnwrap(accepted.header("Location")))
        assertStatus(try await PushHTTPClient.send("DELETE", location), 204)
        assertRefused(try await PushHTTPClient.send("DELETE", location), 404, "no message")
        let nothingLeft = try await receiveAll(restricted)
        XCTAssertEqual(nothingLeft.count, 0)
    }

    /// TTL expiry, Topic replacement, a full queue (429), and a restart with undelivered messages
    /// kept in the store (and expired ones dropped on the way).
    func testTTLTopicQueueFullAndRestart() async throws {
        let clock = ManualClock(Date().timeIntervalSince1970)
        let directory = temporaryDirectory()
        var config = PushServiceConfig()
        config.maxQueuedPerSubscription = 3
        var node = try await start(config: config, store: FilePushStore(directory: directory), clock: clock.closure)
        let sender = PushSender(vapid: VAPIDSigner())
        let sub = try await PushSubscriber.subscribe(service: node.base)
        func send(_ text: String, ttl: Int, topic: String? = nil) async throws -> PushHTTPResponse {
            try await sender.post(sender.prepare(Array(text.utf8), to: sub.w3c, ttl: ttl, topic: topic, now: Date(timeIntervalSince1970: clock.now)))
        }
        assertStatus(try await send("short-lived", ttl: 10), 201)
        let first = try await send("status v1", ttl: 3600, topic: "status")
        XCTAssertEqual(first.status, 201)
        XCTAssertEqual(first.header("TTL"), "3600")
        assertStatus(try await send("status v2", ttl: 3600, topic: "status"), 201)
        assertStatus(try await send("keep", ttl: 3600), 201)
        assertRefused(try await send("one too many", ttl: 3600), 429, "queue is full")
        clock.advance(11)
        // The short-lived one expired, which frees a place.
        assertStatus(try await send("after expiry", ttl: 100), 201)

        // Restart: a new service on the same store; the old subscription and its messages survive.
        try await node.channel.close()
        clock.advance(200)  // "after expiry" (TTL 100) dies while the service is down.
        node = try await start(config: config, store: FilePushStore(directory: directory), clock: clock.closure)
        defer { node.channel.close(promise: nil) }
        var moved = URLComponents(url: sub.subscriptionURL, resolvingAgainstBaseURL: false)!
        moved.port = node.base.port
        let restarted = PushSubscriber(subscriptionURL: moved.url!, endpoint: sub.endpoint, keys: sub.keys)
        let got = try await receiveAll(restarted)
        XCTAssertEqual(got.compactMap { $0.plaintext.map { String(decoding: $0, as: UTF8.self) } }, ["status v2", "keep"])
        XCTAssertEqual(got.map(\.topic), ["status", nil])
        // Acknowledged messages are gone from disk too.
        let files = try FileManager.default.contentsOfDirectory(atPath: directory + "/" + sub.subscriptionURL.lastPathComponent)
        XCTAssertEqual(files, ["subscription.json"])
    }
}

/// Carries a non-Sendable JSON value across the thread hop to the Python runner; the value is
/// only touched by one side at a time.
struct UncheckedBox<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}
