import Foundation
import Gate
import Logging
import Metrics

/// An RFC 8030 push service ("message gate") mounted on the node's admin HTTP server.
///
/// Resources (all under the admin port, base+0):
/// ```
/// POST   /subscribe              new subscription; optional JSON {"applicationServerKey": "<b64url>"}
///                                → 201, Location: /subscription/<sid>, Link: </push/<pid>>; rel="urn:ietf:params:push"
/// POST   /push/<pid>             push a message (TTL, Urgency, Topic, VAPID) → 201, Location: /message/<mid>
/// GET    /subscription/<sid>     long-poll for messages (?wait=seconds, Urgency: minimum) → 200 JSON | 204
/// DELETE /subscription/<sid>     unsubscribe → 204; later pushes get 410
/// DELETE /message/<mid>          acknowledge a delivered message → 204
/// POST   /subscription/<sid>/ack acknowledge several: body = message ids, one per line → 204
/// ```
/// RFC 8030 §6 delivers with HTTP/2 server push, which no client library exposes any more; the
/// long-poll GET above is the fallback (see docs/webpush.md).
///
/// Threading: an actor. Request parsing and VAPID signature checks run outside it (in the admin
/// server's tasks), so only the queue bookkeeping and the store writes are serialized.
public actor PushService {
    private var state: PushServiceState
    private let store: FilePushStore?
    private let clock: @Sendable () -> Double
    private let logger: Logger
    private var waiters: [String: [Int: (CheckedContinuation<Void, Never>, Task<Void, Never>)]] = [:]
    private var nextWaiter = 0
    private let accepted = Counter(label: "ugate_push_accepted_total")
    private let refused = Counter(label: "ugate_push_refused_total")
    private let delivered = Counter(label: "ugate_push_delivered_total")
    public nonisolated let config: PushServiceConfig
    private nonisolated let verifier = VAPIDVerificationCache()

    /// - Parameters:
    ///   - store: where undelivered messages survive a restart; nil keeps them in memory only.
    ///   - clock: seconds since the epoch (tests pass their own).
    public init(
        config: PushServiceConfig = PushServiceConfig(), store: FilePushStore?,
        clock: @escaping @Sendable () -> Double = { Date().timeIntervalSince1970 },
        logger: Logger = Logger(label: "ugate.push")
    ) throws {
        self.config = config
        self.store = store
        self.clock = clock
        self.logger = logger
        var state = PushServiceState(config: config)
        if let store {
            let loaded = store.load()
            for problem in loaded.problems { logger.warning("push store: unreadable file", metadata: ["problem": "\(problem)"]) }
            try store.apply(state.restore(subscriptions: loaded.subscriptions, messages: loaded.messages, now: clock()))
            logger.info("push store loaded", metadata: [
                "subscriptions": "\(loaded.subscriptions.count)", "messages": "\(loaded.messages.count)"])
        }
        self.state = state
    }

    /// The admin-server routes of this service.
    public nonisolated var routes: [AdminServer.Route] {
        ["/subscribe", "/subscription", "/push", "/message"].map { prefix in
            AdminServer.Route(prefix: prefix) { [self] request in await self.handle(request) }
        }
    }

    /// Answers one request to any of the service's paths.
    public nonisolated func handle(_ request: AdminRequest) async -> AdminResponse {
        let parts = request.path.split(separator: "/").map(String.init)
        let response: AdminResponse
        switch (request.method, parts.count, parts.first) {
        case ("POST", 1, "subscribe"):
            response = await subscribe(request)
        case ("POST", 2, "push"):
            switch PushRequestParser.parse(request, config: config, now: Int64(clock()), verifier: verifier) {
            case .success(let parsed): response = await push(pushID: parts[1], parsed)
            case .failure(let refusal): response = Self.refuse(refusal)
            }
        case ("GET", 2, "subscription"):
            response = await poll(request, subscription: parts[1])
        case ("DELETE", 2, "subscription"):
            response = await unsubscribe(parts[1])
        case ("DELETE", 2, "message"):
            response = await acknowledge([parts[1]], subscription: nil)
        case ("POST", 3, "subscription") where parts[2] == "ack":
            let ids = String(decoding: request.body, as: UTF8.self).split(whereSeparator: \.isNewline).map(String.init)
            response = await acknowledge(ids, subscription: parts[1])
        default:
            response = .text(parts.count == 2 || parts == ["subscribe"] ? 405 : 404,
                             "no push service resource \(request.method) \(request.path)")
        }
        if response.status >= 400 { refused.increment() }
        return response
    }

    private func subscribe(_ request: AdminRequest) -> AdminResponse {
        var key: [UInt8]?
        if !request.body.isEmpty {
            struct Body: Decodable { var applicationServerKey: String? }
            guard let body = try? JSONDecoder().decode(Body.self, from: Data(request.body)) else {
                return .text(400, "subscribe body must be JSON {\"applicationServerKey\": \"<base64url P-256 key>\"}")
            }
            if let text = body.applicationServerKey {
                guard let bytes = try? Base64URL.decode(text), bytes.count == 65, bytes[0] == 4 else {
                    return .text(400, "applicationServerKey must be a base64url 65-byte uncompressed P-256 key")
                }
                key = bytes
            }
        }
        let now = clock()
        do { try store?.apply(state.sweep(now: now)) } catch { return storeFailure(error) }
        switch state.subscribe(id: Self.newID(), pushID: Self.newID(), applicationServerKey: key, now: now) {
        case .failure(let refusal):
            return Self.refuse(refusal)
        case .success(let (s, actions)):
            do { try store?.apply(actions) } catch { return storeFailure(error) }
            let origin = PushRequestParser.origin(for: request, config: config)
            let json: [String: Any] = [
                "subscription": origin + "/subscription/" + s.id, "endpoint": origin + "/push/" + s.pushID,
                "expires": Int(s.expires), "restricted": key != nil,
            ]
            logger.debug("push subscription created", metadata: ["push.id": "\(s.pushID)", "restricted": "\(key != nil)"])
            return AdminResponse(
                status: 201,
                headers: [("Location", "/subscription/" + s.id),
                          ("Link", "</push/\(s.pushID)>; rel=\"urn:ietf:params:push\""),
                          ("Content-Type", "application/json")],
                body: Array((try? JSONSerialization.data(withJSONObject: json, options: [.sortedKeys])) ?? Data()))
        }
    }

    private func push(pushID: String, _ request: PushServiceState.PushRequest) -> AdminResponse {
        let waiting = state.subscriptionID(forPushID: pushID).map { !(waiters[$0]?.isEmpty ?? true) } ?? false
        switch state.push(pushID: pushID, messageID: Self.newID(), request, subscriberWaiting: waiting, now: clock()) {
        case .failure(let refusal):
            return Self.refuse(refusal)
        case .success(let (result, actions)):
            do { try store?.apply(actions) } catch { return storeFailure(error) }
            accepted.increment()
            if result.queued { wake(result.message.subscription) }
            logger.trace("push accepted", metadata: [
                "push.id": "\(pushID)", "bytes": "\(request.body.count)", "ttl": "\(result.message.ttl)",
                "replaced": "\(result.replaced ?? "-")", "queued": "\(result.queued)"])
            return AdminResponse(status: 201, headers: [("Location", "/message/" + result.message.id), ("TTL", String(result.message.ttl))])
        }
    }

    private func poll(_ request: AdminRequest, subscription sid: String) async -> AdminResponse {
        let waitParameter = request.query?.split(separator: "&").first { $0.hasPrefix("wait=") }.flatMap { Int($0.dropFirst(5)) }
        let wait = min(max(waitParameter ?? 0, 0), config.maxPollWait)
        var minimum = PushUrgency.veryLow
        if let text = request.header("Urgency") {
            guard let u = PushUrgency(rawValue: text.lowercased()) else {
                return .text(400, "Urgency must be very-low, low, normal or high, got \(text)")
            }
            minimum = u
        }
        let deadline = clock() + Double(wait)
        while true {
            switch state.poll(subscription: sid, minimumUrgency: minimum, now: clock()) {
            case .failure(let refusal):
                return Self.refuse(refusal)
            case .success(let (messages, actions)):
                do { try store?.apply(actions) } catch { return storeFailure(error) }
                if !messages.isEmpty {
                    delivered.increment(by: messages.count)
                    return AdminResponse(status: 200, headers: [("Content-Type", "application/json")], body: Self.encode(messages))
                }
            }
            let remaining = deadline - clock()
            if remaining <= 0 { return AdminResponse(status: 204) }
            await waitForMessages(sid, seconds: remaining)
        }
    }

    private func unsubscribe(_ sid: String) -> AdminResponse {
        switch state.unsubscribe(sid, now: clock()) {
        case .failure(let refusal): return Self.refuse(refusal)
        case .success(let actions):
            do { try store?.apply(actions) } catch { return storeFailure(error) }
            wake(sid)
            return AdminResponse(status: 204)
        }
    }

    /// One id: 404 when unknown. Several (the batch form, scoped to `subscription`): unknown ids are
    /// skipped, as they were acknowledged or expired already.
    private func acknowledge(_ ids: [String], subscription: String?) -> AdminResponse {
        var actions: [PushServiceState.StoreAction] = []
        for id in ids {
            switch state.acknowledge(message: id, subscription: subscription) {
            case .failure(let refusal) where subscription == nil: return Self.refuse(refusal)
            case .failure: continue
            case .success(let done): actions += done
            }
        }
        do { try store?.apply(actions) } catch { return storeFailure(error) }
        return AdminResponse(status: 204)
    }

    /// Messages queued on a subscription, for tests and status pages.
    public func queued(subscription: String) -> [PushMessage] { state.queued(subscription) }

    // MARK: long-poll waiters

    private func waitForMessages(_ sid: String, seconds: Double) async {
        let id = nextWaiter
        nextWaiter += 1
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let timer = Task { [weak self] in
                try? await Task.sleep(for: .milliseconds(Int(seconds * 1000)))
                await self?.resumeWaiter(sid, id)
            }
            waiters[sid, default: [:]][id] = (continuation, timer)
        }
    }

    private func resumeWaiter(_ sid: String, _ id: Int) {
        guard let entry = waiters[sid]?.removeValue(forKey: id) else { return }
        if waiters[sid]?.isEmpty == true { waiters[sid] = nil }
        entry.0.resume()
    }

    private func wake(_ sid: String) {
        guard let all = waiters.removeValue(forKey: sid) else { return }
        for (continuation, timer) in all.values {
            timer.cancel()
            continuation.resume()
        }
    }

    // MARK: helpers

    private static func encode(_ messages: [PushMessage]) -> [UInt8] {
        let list: [[String: Any]] = messages.map { m in
            var item: [String: Any] = [
                "id": m.id, "location": "/message/" + m.id, "ttl": m.ttl, "urgency": m.urgency.rawValue,
                "received": m.received, "body": Base64URL.encode(m.body),
            ]
            if let topic = m.topic { item["topic"] = topic }
            return item
        }
        return Array((try? JSONSerialization.data(withJSONObject: ["messages": list], options: [.sortedKeys])) ?? Data())
    }

    private static func refuse(_ refusal: PushRefusal) -> AdminResponse {
        var response = AdminResponse.text(refusal.status, refusal.reason)
        if let retry = refusal.retryAfter { response.headers.append(("Retry-After", String(retry))) }
        if refusal.status == 401 { response.headers.append(("WWW-Authenticate", "vapid")) }
        return response
    }

    private func storeFailure(_ error: any Error) -> AdminResponse {
        logger.error("push store failed", metadata: ["error": "\(error)"])
        return .text(500, "push service could not store the change: \(error)")
    }

    /// 16 random bytes, base64url: unguessable resource names.
    static func newID() -> String { Base64URL.encode(WebPushEncryption.randomBytes(16)) }
}
