import Synchronization

/// When and where a forwarded request is sent again: a pure decision (no sockets, no clock;
/// the random source is passed in), taken by `Exchange` when a backend connection cannot be
/// made, when it ends before any response byte, and when a response head arrives.
///
/// The rule's backends are *candidates* by index: 0 is the one the weighted choice picked
/// (`RouteAction.Forward.backend`), then `Forward.fallbacks` (the rule's other permitted
/// backends with weight > 0). Every try marks its candidate as tried.
///
/// A request whose bytes reached a backend is sent again only when that is safe:
/// * its method is idempotent (RFC 9110 §9.2.2: GET, HEAD, OPTIONS, TRACE, PUT, DELETE) or it
///   carries an `Idempotency-Key` field (draft-ietf-httpapi-idempotency-key-header) — a POST
///   whose bytes reached a backend is never replayed, it gets its 502;
/// * every body byte sent so far can be replayed (the exchange keeps up to
///   `retryBodyLimit` bytes, 64 KiB by default; beyond that nothing is retried).
///
/// Then:
/// * a **connect failure** (nothing was written, so any method) → at once to an untried
///   candidate; once every candidate failed, with the rule's `retry` one of its `attempts`;
///   without `retry`, 503;
/// * a **kept-alive connection** taken from the pool that closes or resets before any response
///   byte (the backend closed it while the request was on its way, RFC 9112 §9.3.1) → once, at
///   once, on a new connection — whether or not the rule has a `retry`;
/// * with the rule's `retry` (`RetryPolicy`): a connection that fails before the response
///   (`HTTPRouteRetryConnectionError`), a response status in `codes` (`HTTPRouteRetryCodes`,
///   400–599 as the Gateway API v1 allows: 429 or 408 too), or a try that reached the rule's
///   `timeouts.backendRequest` without a response head → up to `attempts` more tries, each
///   after a backoff (`delay`). A retried response is discarded (its connection closed); the
///   last try's response is relayed. The route's `RetryBudget` can still refuse such a retry
///   (`isPolicyRetry` tells the exchange which decisions it has to ask about).
///
/// **Where** (`pick`): a weighted choice among the candidates not tried yet, the way Envoy's
/// `previous_hosts` retry predicate skips hosts already attempted; when every candidate was
/// tried (a rule with one backend: always), a weighted choice among all of them.
///
/// **When** (`backoff`): GEP-1731's `backoff` is the *minimum* wait; the n-th policy retry waits
/// a uniformly random time in [backoff, min(2ⁿ, `backoffCap`) × backoff] — exponential growth
/// with full jitter above the minimum, capped at 10 × backoff (Envoy's default `max_interval`),
/// so retries of many clients do not arrive in lockstep and never before the minimum.
struct RetryRule {
    /// Request body bytes an exchange keeps for a replay by default (`retryBodyLimit`).
    static let replayLimit = HTTPRouteConfig.defaultRetryBodyLimit
    /// The longest backoff, as a multiple of the rule's `backoff`.
    static let backoffCap = 10.0

    var policy: RetryPolicy?
    /// The method is idempotent or the request has an `Idempotency-Key`.
    var idempotent: Bool
    /// Policy retries made so far.
    private(set) var retries = 0
    /// Whether the one stale-connection retry was used.
    private(set) var staleRetried = false
    /// The last `.retry` decision used one of the rule's `attempts` (the retry budget applies
    /// to those; moves after a connect failure and the stale-connection retry are not counted).
    private(set) var isPolicyRetry = false
    /// The candidates tried so far, a bit per index (indices from 64 on are never marked: such a
    /// rule may try one of them twice before it has tried them all).
    private(set) var tried: UInt64 = 1

    enum Decision: Equatable {
        /// Send the request again after `delay` seconds to candidate `backend`; `fresh`: on a new
        /// connection (not one from the pool).
        case retry(delay: Double, fresh: Bool, backend: Int)
        case giveUp
    }

    /// Why a try is made again (the `reason` of `ugate_httproute_retries_total`).
    enum Reason: String {
        case connect, stale, connection, status, timeout
    }

    init(policy: RetryPolicy?, method: String, headers: [HTTPField]) {
        self.policy = policy
        idempotent = Self.idempotent(method) || headers.contains { HopByHop.named($0.name, "idempotency-key") }
    }

    /// Times the request was sent again (the stale-connection retry included; a move to
    /// another backend after a connect failure sent nothing and does not count), for the
    /// access log.
    var total: Int { retries + (staleRetried ? 1 : 0) }

    /// RFC 9110 §9.2.2: the safe methods, PUT and DELETE.
    static func idempotent(_ method: String) -> Bool {
        switch method {
        case "GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE": true
        default: false
        }
    }

    /// Connecting to a candidate failed (nothing of the request was written). `weights`: the
    /// candidates' weights by index.
    mutating func connectFailed(weights: [Int], using random: inout some RandomNumberGenerator) -> Decision {
        if let backend = Self.pick(weights, excluding: tried, untriedOnly: true, using: &random) {
            return choose(backend, delay: 0, fresh: false)
        }
        return usePolicy(fresh: false, weights: weights, using: &random)
    }

    /// The backend connection ended before any response byte. `reused`: it came from the
    /// pool; `replayable`: every request byte sent so far is kept.
    mutating func connectionLost(
        reused: Bool, replayable: Bool, weights: [Int], using random: inout some RandomNumberGenerator
    ) -> Decision {
        guard idempotent, replayable else { return .giveUp }
        if reused, !staleRetried {
            staleRetried = true
            let backend = Self.pick(weights, excluding: tried, untriedOnly: false, using: &random) ?? 0
            return choose(backend, delay: 0, fresh: true)
        }
        return usePolicy(fresh: true, weights: weights, using: &random)
    }

    /// A response head with `status` arrived (nothing of it relayed yet).
    mutating func responded(
        status: Int, replayable: Bool, weights: [Int], using random: inout some RandomNumberGenerator
    ) -> Decision {
        guard let policy, policy.codes.contains(status), idempotent, replayable else { return .giveUp }
        return usePolicy(fresh: false, weights: weights, using: &random)
    }

    /// The try reached the rule's `timeouts.backendRequest` before a response head (its
    /// connection is closed): with the rule's `retry`, an idempotent request whose bytes can be
    /// replayed goes to a candidate not tried yet when there is one, after at least the backoff
    /// (GEP-1731), on a new connection.
    mutating func attemptTimedOut(replayable: Bool, weights: [Int], using random: inout some RandomNumberGenerator) -> Decision {
        guard idempotent, replayable else { return .giveUp }
        return usePolicy(fresh: true, weights: weights, using: &random)
    }

    private mutating func usePolicy(fresh: Bool, weights: [Int], using random: inout some RandomNumberGenerator) -> Decision {
        guard let policy, retries < policy.attempts else { return .giveUp }
        retries += 1
        let backend = Self.pick(weights, excluding: tried, untriedOnly: false, using: &random) ?? 0
        return choose(backend, delay: Self.backoff(policy.backoff, retry: retries, using: &random), fresh: fresh, policy: true)
    }

    private mutating func choose(_ backend: Int, delay: Double, fresh: Bool, policy: Bool = false) -> Decision {
        if backend < 64 { tried |= 1 << UInt64(backend) }
        isPolicyRetry = policy
        return .retry(delay: delay, fresh: fresh, backend: backend)
    }

    /// A weighted choice among the candidates with weight > 0 not in `tried`; when there is
    /// none, nil if `untriedOnly`, else a weighted choice among all of them (nil: no weight).
    static func pick(
        _ weights: [Int], excluding tried: UInt64, untriedOnly: Bool, using random: inout some RandomNumberGenerator
    ) -> Int? {
        func isTried(_ index: Int) -> Bool { index < 64 && tried & (1 << UInt64(index)) != 0 }
        var total = 0
        for index in weights.indices where !isTried(index) { total += max(weights[index], 0) }
        guard total > 0 else {
            return untriedOnly ? nil : pick(weights, excluding: 0, untriedOnly: true, using: &random)
        }
        var point = Int.random(in: 0..<total, using: &random)
        for index in weights.indices where !isTried(index) {
            let weight = max(weights[index], 0)
            if point < weight { return index }
            point -= weight
        }
        return nil
    }

    /// The wait before the `retry`-th policy retry (1-based): uniform in
    /// [base, min(2^retry, backoffCap) × base]; 0 when `base` is 0.
    static func backoff(_ base: Double, retry: Int, using random: inout some RandomNumberGenerator) -> Double {
        guard base > 0 else { return 0 }
        let factor = min(Double(1 << UInt64(min(max(retry, 1), 16))), backoffCap)
        return Double.random(in: base...(base * factor), using: &random)
    }
}

/// How many requests may be sent again (a retry of the rule's `retry`), so that retries cannot
/// multiply the load on backends that are failing (a retry storm): over the last `interval`
/// seconds, retries may be at most `percent` % of the requests plus `minRetryCount` per
/// `minRetryInterval` seconds — Linkerd's budget (`retryRatio` over a `ttl`, with a
/// `minRetriesPerSecond` reserve of rate × ttl), the model GEP-3388's `retryConstraint`
/// takes its fields and defaults from. Without a policy a route has `RetryConstraint.routeDefault`
/// (20 % of 10 s + 3/s); an `XBackendTrafficPolicy` gives its Service its own. A value: time in
/// (milliseconds), no clock inside.
///
/// Counted in a ring of ten buckets of a tenth of the interval each (requests, and the
/// retries let through), so the window slides by a tenth of the interval.
struct RetryBudget {
    static let buckets = 10
    /// The route default's figures (`RetryConstraint.routeDefault`).
    static let ratio = Double(RetryConstraint.routeDefault.percent) / 100
    static let floorPerSecond = Double(RetryConstraint.routeDefault.minRetryCount) / RetryConstraint.routeDefault.minRetryInterval
    static let window = Int(RetryConstraint.routeDefault.interval)

    let constraint: RetryConstraint
    /// A bucket's width in milliseconds.
    private let width: UInt64
    /// Retries allowed in a window whatever the requests (the minimum rate over the interval).
    private let floor: Double
    private let ratio: Double
    private var requests = [Int](repeating: 0, count: buckets)
    private var retries = [Int](repeating: 0, count: buckets)
    /// The bucket number (`now / width`) of the newest bucket.
    private var slot: UInt64 = 0

    init(_ constraint: RetryConstraint = .routeDefault) {
        self.constraint = constraint
        width = max(UInt64(constraint.interval * 1000) / UInt64(Self.buckets), 1)
        floor = Double(constraint.minRetryCount) * constraint.interval / constraint.minRetryInterval
        ratio = Double(constraint.percent) / 100
    }

    /// A request began.
    mutating func request(now: UInt64) {
        requests[advance(now)] += 1
    }

    /// Whether a retry may go now; counted when it may.
    mutating func retry(now: UInt64) -> Bool {
        let bucket = advance(now)
        let allowed = Double(retries.reduce(0, +)) < ratio * Double(requests.reduce(0, +)) + floor
        if allowed { retries[bucket] += 1 }
        return allowed
    }

    /// Moves the ring to `now`'s bucket (clearing the buckets passed); the bucket of `now`.
    private mutating func advance(_ now: UInt64) -> Int {
        let current = now / width
        if current > slot {
            let passed = min(current - slot, UInt64(Self.buckets))
            for step in 1...passed {
                let bucket = Int((slot + step) % UInt64(Self.buckets))
                requests[bucket] = 0
                retries[bucket] = 0
            }
            slot = current
        }
        return Int(slot % UInt64(Self.buckets))
    }
}

/// A node's retry budgets, shared by the connections of all its listeners on every loop
/// (`HTTPRouteService` gives every listener the same): one per route (by route label) with the
/// route default, and one per Service an `XBackendTrafficPolicy` targets (`service
/// namespace/name`) with the policy's constraint. Only requests of rules with a `retry`, or to
/// a Service with a policy, are counted (no lock for the others).
public final class RetryBudgets: Sendable {
    private let budgets = Mutex<[String: RetryBudget]>([:])

    public init() {}

    /// The key of a Service's budget (route labels always contain `#`, Service keys never).
    static func serviceKey(_ backend: RouteBackend) -> String { "service " + backend.serviceKey }

    func request(_ key: String, _ constraint: RetryConstraint = .routeDefault) {
        let now = GateLoop.monotonicMillis()
        budgets.withLock { $0[key, default: RetryBudget(constraint)].request(now: now, constraint) }
    }

    /// Whether a request counted under `key` may be sent again now.
    func retry(_ key: String, _ constraint: RetryConstraint = .routeDefault) -> Bool {
        let now = GateLoop.monotonicMillis()
        return budgets.withLock { $0[key, default: RetryBudget(constraint)].retry(now: now, constraint) }
    }
}

extension RetryBudget {
    /// `request(now:)` under `constraint`: a budget whose policy changed (a reload) starts afresh.
    fileprivate mutating func request(now: UInt64, _ constraint: RetryConstraint) {
        if self.constraint != constraint { self = RetryBudget(constraint) }
        request(now: now)
    }

    fileprivate mutating func retry(now: UInt64, _ constraint: RetryConstraint) -> Bool {
        if self.constraint != constraint { self = RetryBudget(constraint) }
        return retry(now: now)
    }
}
