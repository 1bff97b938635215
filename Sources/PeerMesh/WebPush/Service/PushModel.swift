/// How soon a push message should reach the user agent,
/// [RFC 8030 §5.3](https://www.rfc-editor.org/rfc/rfc8030#section-5.3). Ordered: a subscriber that
/// asks for `normal` also gets `high`.
public enum PushUrgency: String, Codable, Sendable, Comparable, CaseIterable {
    case veryLow = "very-low"
    case low
    case normal
    case high

    private var rank: Int { Self.allCases.firstIndex(of: self) ?? 0 }
    public static func < (a: PushUrgency, b: PushUrgency) -> Bool { a.rank < b.rank }
}

/// One queued push message (stored as JSON, one file each).
public struct PushMessage: Codable, Equatable, Sendable {
    /// Random, unguessable; the message resource is `/message/<id>`.
    public var id: String
    /// The subscription it is queued on.
    public var subscription: String
    /// The encrypted body exactly as the application server sent it.
    public var body: [UInt8]
    /// `TTL` as accepted (after capping), seconds.
    public var ttl: Int
    public var urgency: PushUrgency
    public var topic: String?
    /// Seconds since the epoch.
    public var received: Double
    /// The instant the message is dropped if not acknowledged.
    public var expires: Double
    /// Arrival order within the service (kept across restarts, so queues reload in order).
    public var sequence: UInt64
    /// False for TTL 0 messages handed to a connected subscriber: those never reach the disk.
    public var durable: Bool
}

/// A push message subscription ([RFC 8030 §4](https://www.rfc-editor.org/rfc/rfc8030#section-4)).
public struct PushSubscriptionRecord: Codable, Equatable, Sendable {
    /// Secret capability: whoever knows it reads the messages (`/subscription/<id>`).
    public var id: String
    /// Public: application servers post to `/push/<pushID>`.
    public var pushID: String
    /// When set, pushes must carry VAPID with this key (RFC 8292 §4).
    public var applicationServerKey: [UInt8]?
    public var created: Double
    /// Renewed by every poll; after it passes, the subscription is gone (410).
    public var expires: Double
    /// Unsubscribed or expired: kept a while so pushes get 410 instead of 404.
    public var gone: Bool
}

/// A refusal with its HTTP status and a sentence saying why.
public struct PushRefusal: Error, Equatable, Sendable {
    public var status: Int
    public var reason: String
    /// Seconds for `Retry-After`, for 429.
    public var retryAfter: Int?

    public init(_ status: Int, _ reason: String, retryAfter: Int? = nil) {
        self.status = status
        self.reason = reason
        self.retryAfter = retryAfter
    }
}

/// Limits of a push service. Every queue is bounded.
public struct PushServiceConfig: Codable, Sendable {
    /// Largest accepted message body; RFC 8030 §7.2 requires at least 4096. Larger → 413.
    public var maxMessageBytes = 4096
    /// Messages queued per subscription; one more → 429.
    public var maxQueuedPerSubscription = 100
    /// Live subscriptions; one more → 429 on subscribe.
    public var maxSubscriptions = 10_000
    /// Unsubscribed/expired subscriptions remembered for 410; oldest forgotten first.
    public var maxTombstones = 10_000
    /// TTL cap, seconds (RFC 8030 §5.2 lets the service shorten it and say so in the response).
    public var maxTTL = 28 * 24 * 3600
    /// A subscription not polled for this long expires, seconds.
    public var subscriptionLifetime: Double = 7 * 24 * 3600
    /// How long a tombstone answers 410, seconds.
    public var tombstoneLifetime: Double = 7 * 24 * 3600
    /// Longest long-poll wait a subscriber may ask for, seconds.
    public var maxPollWait = 60
    /// Accepted VAPID `aud` values; empty = `http://` and `https://` + the request's Host.
    public var origins: [String] = []

    public init() {}
}
