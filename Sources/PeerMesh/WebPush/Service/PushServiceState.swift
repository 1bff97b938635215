/// The push service's bookkeeping as a value-type state machine: events in (subscribe, push, poll,
/// ack, unsubscribe, sweep), results and store actions out. No clock (every event carries `now`),
/// no I/O; `PushService` performs the store actions and wakes long-polls.
public struct PushServiceState: Sendable {
    /// What the store must do so a restart finds the same state.
    public enum StoreAction: Equatable, Sendable {
        case saveSubscription(PushSubscriptionRecord)
        case removeSubscription(id: String)
        case saveMessage(PushMessage)
        case removeMessage(subscription: String, id: String)
    }

    /// A push request after header parsing and VAPID verification.
    public struct PushRequest: Sendable {
        public var body: [UInt8]
        public var ttl: Int
        public var urgency: PushUrgency
        public var topic: String?
        /// The verified VAPID key, nil when the request carried none.
        public var vapidKey: [UInt8]?

        public init(body: [UInt8], ttl: Int, urgency: PushUrgency, topic: String?, vapidKey: [UInt8]?) {
            self.body = body
            self.ttl = ttl
            self.urgency = urgency
            self.topic = topic
            self.vapidKey = vapidKey
        }
    }

    public struct Accepted: Equatable, Sendable {
        public var message: PushMessage
        /// The queued message with the same Topic that this one replaced.
        public var replaced: String?
        /// False when TTL was 0 and nobody was listening: accepted and dropped (RFC 8030 §5.2).
        public var queued: Bool
    }

    public let config: PushServiceConfig
    private(set) var subscriptions: [String: PushSubscriptionRecord] = [:]
    private var byPushID: [String: String] = [:]
    private var queues: [String: [PushMessage]] = [:]
    private var messageOwner: [String: String] = [:]
    private var nextSequence: UInt64 = 0

    public init(config: PushServiceConfig) {
        self.config = config
    }

    /// The subscription a push resource belongs to.
    public func subscriptionID(forPushID pushID: String) -> String? { byPushID[pushID] }

    /// Messages queued on a subscription (for status and tests).
    public func queued(_ subscription: String) -> [PushMessage] { queues[subscription] ?? [] }

    /// Rebuilds the state from stored records (a restart). Expired messages are dropped.
    public mutating func restore(subscriptions stored: [PushSubscriptionRecord], messages: [PushMessage], now: Double) -> [StoreAction] {
        for s in stored { insert(s) }
        var actions: [StoreAction] = []
        for m in messages.sorted(by: { $0.sequence < $1.sequence }) {
            nextSequence = max(nextSequence, m.sequence + 1)
            guard let s = subscriptions[m.subscription], !s.gone, m.expires > now else {
                actions.append(.removeMessage(subscription: m.subscription, id: m.id))
                continue
            }
            queues[s.id, default: []].append(m)
            messageOwner[m.id] = s.id
        }
        return actions + sweep(now: now)
    }

    private mutating func insert(_ s: PushSubscriptionRecord) {
        subscriptions[s.id] = s
        byPushID[s.pushID] = s.id
    }

    /// [RFC 8030 §4](https://www.rfc-editor.org/rfc/rfc8030#section-4): a new subscription.
    public mutating func subscribe(id: String, pushID: String, applicationServerKey: [UInt8]?, now: Double)
        -> Result<(PushSubscriptionRecord, [StoreAction]), PushRefusal>
    {
        let live = subscriptions.values.lazy.filter { !$0.gone }.count
        guard live < config.maxSubscriptions else {
            return .failure(PushRefusal(429, "push service holds its maximum of \(config.maxSubscriptions) subscriptions", retryAfter: 60))
        }
        let s = PushSubscriptionRecord(
            id: id, pushID: pushID, applicationServerKey: applicationServerKey, created: now,
            expires: now + config.subscriptionLifetime, gone: false)
        insert(s)
        return .success((s, [.saveSubscription(s)]))
    }

    /// [RFC 8030 §5](https://www.rfc-editor.org/rfc/rfc8030#section-5): a push to `/push/<pushID>`.
    /// - Parameters:
    ///   - subscriberWaiting: a long-poll is open now (a TTL 0 message is only kept if so).
    public mutating func push(pushID: String, messageID: String, _ request: PushRequest, subscriberWaiting: Bool, now: Double)
        -> Result<(Accepted, [StoreAction]), PushRefusal>
    {
        guard let sid = byPushID[pushID], let s = subscriptions[sid] else {
            return .failure(PushRefusal(404, "no push subscription \(pushID)"))
        }
        if s.gone || s.expires <= now {
            return .failure(PushRefusal(410, "push subscription \(pushID) has expired or was unsubscribed"))
        }
        if let required = s.applicationServerKey {
            guard let key = request.vapidKey else {
                return .failure(PushRefusal(401, "subscription is restricted to an application server key: VAPID authorization required (RFC 8292 §4.2)"))
            }
            guard key == required else {
                return .failure(PushRefusal(403, "VAPID key k does not match the subscription's application server key (RFC 8292 §4.2)"))
            }
        }
        var queue = queues[sid] ?? []
        var actions: [StoreAction] = []
        queue.removeAll { m in
            if m.expires <= now { actions.append(.removeMessage(subscription: sid, id: m.id)); messageOwner[m.id] = nil; return true }
            return false
        }
        let replacedIndex = request.topic.flatMap { t in queue.firstIndex { $0.topic == t } }
        if replacedIndex == nil && queue.count >= config.maxQueuedPerSubscription {
            queues[sid] = queue
            return .failure(PushRefusal(429, "subscription queue is full (\(config.maxQueuedPerSubscription) undelivered messages)", retryAfter: 30))
        }
        let ttl = min(max(request.ttl, 0), config.maxTTL)
        let durable = ttl > 0
        // A TTL 0 message for a connected subscriber lives just long enough for the woken poll to collect it.
        let message = PushMessage(
            id: messageID, subscription: sid, body: request.body, ttl: ttl, urgency: request.urgency, topic: request.topic,
            received: now, expires: now + (durable ? Double(ttl) : 5), sequence: nextSequence, durable: durable)
        nextSequence += 1
        var replaced: String?
        if let i = replacedIndex {
            let old = queue.remove(at: i)
            replaced = old.id
            messageOwner[old.id] = nil
            if old.durable { actions.append(.removeMessage(subscription: sid, id: old.id)) }
        }
        let queuedNow = durable || subscriberWaiting
        if queuedNow {
            queue.append(message)
            messageOwner[message.id] = sid
            if durable { actions.append(.saveMessage(message)) }
        }
        queues[sid] = queue
        return .success((Accepted(message: message, replaced: replaced, queued: queuedNow), actions))
    }

    /// [RFC 8030 §6](https://www.rfc-editor.org/rfc/rfc8030#section-6) (long-poll fallback): the
    /// unacknowledged messages of at least `minimumUrgency`, oldest first; renews the subscription.
    public mutating func poll(subscription sid: String, minimumUrgency: PushUrgency, now: Double)
        -> Result<([PushMessage], [StoreAction]), PushRefusal>
    {
        guard var s = subscriptions[sid] else { return .failure(PushRefusal(404, "no subscription \(sid)")) }
        if s.gone || s.expires <= now { return .failure(PushRefusal(410, "subscription \(sid) has expired or was unsubscribed")) }
        var actions: [StoreAction] = []
        // Renewing rewrites the record; only do it when a meaningful part of the lifetime has passed.
        if s.expires - now < config.subscriptionLifetime * 0.9 {
            s.expires = now + config.subscriptionLifetime
            subscriptions[sid] = s
            actions.append(.saveSubscription(s))
        }
        var queue = queues[sid] ?? []
        queue.removeAll { m in
            if m.expires <= now {
                messageOwner[m.id] = nil
                if m.durable { actions.append(.removeMessage(subscription: sid, id: m.id)) }
                return true
            }
            return false
        }
        queues[sid] = queue
        return .success((queue.filter { $0.urgency >= minimumUrgency }, actions))
    }

    /// [RFC 8030 §6.2](https://www.rfc-editor.org/rfc/rfc8030#section-6.2): DELETE on a message
    /// resource acknowledges it.
    /// - Parameter subscription: when given, only a message queued on that subscription is acknowledged.
    public mutating func acknowledge(message id: String, subscription: String? = nil) -> Result<[StoreAction], PushRefusal> {
        guard let sid = messageOwner[id], subscription == nil || subscription == sid else {
            return .failure(PushRefusal(404, "no message \(id) (already acknowledged or expired)"))
        }
        messageOwner[id] = nil
        guard let i = queues[sid]?.firstIndex(where: { $0.id == id }), let m = queues[sid]?.remove(at: i) else { return .success([]) }
        return .success(m.durable ? [.removeMessage(subscription: sid, id: id)] : [])
    }

    /// DELETE on the subscription: later pushes get 410.
    public mutating func unsubscribe(_ sid: String, now: Double) -> Result<[StoreAction], PushRefusal> {
        guard let s = subscriptions[sid], !s.gone else { return .failure(PushRefusal(404, "no subscription \(sid)")) }
        return .success(bury(s, now: now))
    }

    /// Expires subscriptions not polled within their lifetime and forgets old tombstones.
    public mutating func sweep(now: Double) -> [StoreAction] {
        var actions: [StoreAction] = []
        for s in subscriptions.values where !s.gone && s.expires <= now {
            actions += bury(s, now: now)
        }
        var tombstones = subscriptions.values.filter(\.gone).sorted { $0.expires < $1.expires }
        while let oldest = tombstones.first,
              oldest.expires + config.tombstoneLifetime <= now || tombstones.count > config.maxTombstones {
            tombstones.removeFirst()
            subscriptions[oldest.id] = nil
            byPushID[oldest.pushID] = nil
            actions.append(.removeSubscription(id: oldest.id))
        }
        return actions
    }

    private mutating func bury(_ record: PushSubscriptionRecord, now: Double) -> [StoreAction] {
        var s = record
        s.gone = true
        s.expires = now
        subscriptions[s.id] = s
        let dropped = queues.removeValue(forKey: s.id) ?? []
        for m in dropped { messageOwner[m.id] = nil }
        return dropped.filter(\.durable).map { .removeMessage(subscription: s.id, id: $0.id) } + [.saveSubscription(s)]
    }
}
