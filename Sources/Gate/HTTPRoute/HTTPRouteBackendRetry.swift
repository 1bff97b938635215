/// When a forwarded request is sent to its backend again: a pure decision (no sockets, no
/// clock), taken by `Exchange` when a backend connection ends before any response byte or a
/// response head arrives.
///
/// A request is sent again only when that is safe:
/// * its method is idempotent (RFC 9110 §9.2.2: GET, HEAD, OPTIONS, TRACE, PUT, DELETE) or it
///   carries an `Idempotency-Key` field (draft-ietf-httpapi-idempotency-key-header) — a POST
///   whose bytes reached a backend is never replayed, it gets its 502;
/// * every body byte sent so far can be replayed (the exchange keeps up to
///   `replayLimit` bytes; beyond that nothing is retried).
///
/// Then:
/// * a **kept-alive connection** taken from the pool that closes or resets before any response
///   byte (the backend closed it while the request was on its way, RFC 9112 §9.3.1) → once,
///   at once, on a new connection — whether or not the rule has a `retry`;
/// * with the rule's `retry` (`RetryPolicy`): a connection that fails before the response
///   (`HTTPRouteRetryConnectionError`) or a response status in `codes`
///   (`HTTPRouteRetryCodes`) → up to `attempts` more tries, each after `backoff`. A retried
///   response is discarded (its connection closed); the last try's response is relayed.
struct RetryRule {
    /// Request body bytes an exchange keeps for a replay.
    static let replayLimit = 65536

    var policy: RetryPolicy?
    /// The method is idempotent or the request has an `Idempotency-Key`.
    var idempotent: Bool
    /// Policy retries made so far.
    private(set) var retries = 0
    /// Whether the one stale-connection retry was used.
    private(set) var staleRetried = false

    enum Decision: Equatable {
        /// Send the request again after `delay` seconds; `fresh`: on a new connection.
        case retry(delay: Double, fresh: Bool)
        case giveUp
    }

    init(policy: RetryPolicy?, method: String, headers: [HTTPField]) {
        self.policy = policy
        idempotent = Self.idempotent(method) || headers.contains { HopByHop.named($0.name, "idempotency-key") }
    }

    /// Tries made beyond the first (stale-connection retry included), for the access log.
    var total: Int { retries + (staleRetried ? 1 : 0) }

    /// RFC 9110 §9.2.2: the safe methods, PUT and DELETE.
    static func idempotent(_ method: String) -> Bool {
        switch method {
        case "GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE": true
        default: false
        }
    }

    /// The backend connection ended before any response byte. `reused`: it came from the
    /// pool; `replayable`: every request byte sent so far is kept.
    mutating func connectionLost(reused: Bool, replayable: Bool) -> Decision {
        guard idempotent, replayable else { return .giveUp }
        if reused, !staleRetried {
            staleRetried = true
            return .retry(delay: 0, fresh: true)
        }
        return usePolicy(fresh: true)
    }

    /// A response head with `status` arrived (nothing of it relayed yet).
    mutating func responded(status: Int, replayable: Bool) -> Decision {
        guard let policy, policy.codes.contains(status), idempotent, replayable else { return .giveUp }
        return usePolicy(fresh: false)
    }

    private mutating func usePolicy(fresh: Bool) -> Decision {
        guard let policy, retries < policy.attempts else { return .giveUp }
        retries += 1
        return .retry(delay: policy.backoff, fresh: fresh)
    }
}
