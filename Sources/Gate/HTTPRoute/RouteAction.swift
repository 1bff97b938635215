/// What the gateway does with a request, decided by `RouteTable.decide` as a value.
public enum RouteAction: Sendable, Hashable {
    /// No route matched: 404.
    case notFound
    /// A RequestRedirect filter: answer `status` with `Location`.
    case redirect(status: Int, location: String, route: String)
    /// The rule has no usable backend (none listed, or every weight 0): 500, as the
    /// Gateway API specifies for a rule without valid backends.
    case noBackend(route: String)
    /// The weighted choice fell on a backend no `ReferenceGrant` permits: 500 for that share
    /// (Gateway API: requests to an invalid backendRef get 500); `reason` names the reference.
    case refusedBackend(route: String, reason: String)
    /// Forward to `backend` with the rewritten target and headers.
    case forward(Forward)

    /// A forwarded request: its rule's fixed parts (`ForwardRule`, made once per table entry
    /// and shared by reference) and what depends on the request.
    ///
    /// A reference instead of the rule's fields: a `Forward` is copied several times per
    /// request (into the action, the gateway's decision, the exchange), and each copy of the
    /// fields retained every string and array in them (about 30 `swift_retain` per request
    /// on the HTTP/1.1 path); now a copy retains the rule, the target and the headers.
    public struct Forward: Sendable, Hashable {
        let rule: ForwardRule
        /// The chosen backend's index in the rule's backends.
        let backendIndex: Int
        /// Origin-form target (path and query) for the backend.
        public var target: String
        /// The request headers after RequestHeaderModifier and URLRewrite hostname.
        public var headers: [HTTPField]

        public var route: String { rule.route }
        public var backend: RouteBackend { rule.backends[backendIndex] }
        /// The rule's other permitted backends with weight > 0, in rule order: where a connect
        /// failure or a retry may go (`RetryRule` picks among them by weight, untried ones
        /// first); refused backends are never tried. Made when asked (only after a failure).
        public var fallbacks: [RouteBackend] {
            let backends = rule.backends
            guard backends.count > 1 else { return [] }
            let chosen = backends[backendIndex]
            return backends.filter { $0 != chosen && $0.refused == nil && $0.weight > 0 }
        }
        public var responseModifiers: [HeaderModifier] { rule.responseModifiers }
        public var timeout: Double? { rule.timeout }
        /// The rule's `timeouts.backendRequest`: the limit of each try (nil: none).
        public var attemptTimeout: Double? { rule.attemptTimeout }
        /// RequestMirror backends: each gets a fire-and-forget copy of the request.
        public var mirrors: [RouteBackend] { rule.mirrors }
        /// The rule's `retry` (nil: none).
        public var retry: RetryPolicy? { rule.retry }
    }
}

/// What one rule match of a `RouteTable` gives every request it forwards: the label, the
/// backends, the response modifiers and mirrors of its filters, the timeout and retry
/// policy. Made when the table is built; immutable.
final class ForwardRule: Sendable, Hashable {
    /// `namespace/name#rule`, for logs and counters.
    let route: String
    let match: RouteMatch
    let filters: [RouteFilter]
    let backends: [RouteBackend]
    let responseModifiers: [HeaderModifier]
    let mirrors: [RouteBackend]
    let timeout: Double?
    let attemptTimeout: Double?
    let retry: RetryPolicy?
    /// Whether a filter changes the request (headers, path) or answers it (redirect).
    let changesRequest: Bool

    init(route: String, rule: RouteRule, match: RouteMatch) {
        self.route = route
        self.match = match
        filters = rule.filters
        backends = rule.backends
        var responseModifiers: [HeaderModifier] = []
        var mirrors: [RouteBackend] = []
        var changesRequest = false
        for filter in rule.filters {
            switch filter {
            case .responseHeaderModifier(let modifier): responseModifiers.append(modifier)
            case .requestMirror(let backend): mirrors.append(backend)
            case .requestHeaderModifier, .requestRedirect, .urlRewrite: changesRequest = true
            }
        }
        self.responseModifiers = responseModifiers
        self.mirrors = mirrors
        self.changesRequest = changesRequest
        timeout = rule.requestTimeout
        attemptTimeout = rule.backendRequestTimeout
        retry = rule.retry
    }

    static func == (a: ForwardRule, b: ForwardRule) -> Bool {
        a === b
            || (a.route == b.route && a.match == b.match && a.filters == b.filters && a.backends == b.backends && a.timeout == b.timeout
                && a.attemptTimeout == b.attemptTimeout && a.retry == b.retry)
    }

    func hash(into hasher: inout Hasher) {
        hasher.combine(route)
    }

    /// Whether `request` matches this rule's match (`RouteTable.matches`).
    func matches(_ request: RouteRequest) -> Bool {
        RouteTable.matches(match, request)
    }
}

extension RouteTable {
    /// Selects the rule for `request`, applies its filters and picks a backend by weight.
    public func decide(_ request: RouteRequest, using generator: inout some RandomNumberGenerator) -> RouteAction {
        guard let index = selectedEntry(request) else { return .notFound }
        let rule = entries[index].forward
        var headers = request.headers
        var path = request.path
        if rule.changesRequest {
            for filter in rule.filters {
                switch filter {
                case .requestHeaderModifier(let modifier):
                    modifier.apply(to: &headers)
                case .requestRedirect(let redirect):
                    return .redirect(status: redirect.statusCode, location: Self.location(redirect, request, rule.match), route: rule.route)
                case .urlRewrite(let rewrite):
                    if let host = rewrite.hostname { HeaderModifier(set: [HTTPField("Host", host)]).apply(to: &headers) }
                    if let modifier = rewrite.path { path = Self.rewrite(path, modifier, rule.match) }
                case .responseHeaderModifier, .requestMirror:
                    break
                }
            }
        }
        guard let backend = Self.pickIndex(rule.backends, using: &generator) else { return .noBackend(route: rule.route) }
        if let reason = rule.backends[backend].refused { return .refusedBackend(route: rule.route, reason: reason) }
        let target = request.query.map { path + "?" + $0 } ?? path
        return .forward(.init(rule: rule, backendIndex: backend, target: target, headers: headers))
    }

    /// Weighted choice among the backends with weight > 0 (refused ones included: they keep
    /// their share); nil when there is none.
    public static func pick(_ backends: [RouteBackend], using generator: inout some RandomNumberGenerator) -> RouteBackend? {
        pickIndex(backends, using: &generator).map { backends[$0] }
    }

    /// `pick` as an index (iterating the backends would copy each, a retain per field).
    static func pickIndex(_ backends: [RouteBackend], using generator: inout some RandomNumberGenerator) -> Int? {
        var total = 0
        for index in backends.indices { total += backends[index].weight }
        guard total > 0 else { return nil }
        var point = Int.random(in: 0..<total, using: &generator)
        for index in backends.indices {
            let weight = backends[index].weight
            if point < weight { return index }
            point -= weight
        }
        return nil
    }

    /// Applies a path modifier. `ReplacePrefixMatch` replaces the matched `PathPrefix` on its
    /// segment boundary: `/foo` → `/bar` turns `/foo/x` into `/bar/x`; `/foo` → `/` turns
    /// `/foo/x` into `/x` and `/foo` into `/`.
    static func rewrite(_ path: String, _ modifier: PathModifier, _ match: RouteMatch) -> String {
        switch modifier {
        case .replaceFullPath(let full): return full
        case .replacePrefixMatch(let replacement):
            guard case .prefix(let raw) = match.path else { return replacement }
            let prefix = trimmedPrefix(raw)
            let rest = prefix == "/" ? String(path.dropFirst()) : String(path.dropFirst(prefix.count).drop(while: { $0 == "/" }))
            let base = replacement.hasSuffix("/") ? String(replacement.dropLast()) : replacement
            if rest.isEmpty { return base.isEmpty ? "/" : (replacement.hasSuffix("/") && !base.isEmpty ? base + "/" : base) }
            return base + "/" + rest
        }
    }

    /// The `Location` of a RequestRedirect. Unset parts keep the request's; the port is
    /// omitted when it is the scheme's default, and a redirect that changes the scheme
    /// without a port uses the new scheme's default port.
    static func location(_ redirect: RequestRedirect, _ request: RouteRequest, _ match: RouteMatch) -> String {
        let scheme = redirect.scheme ?? "http"
        let host = redirect.hostname ?? request.host
        let port = redirect.port ?? (redirect.scheme == nil ? request.port : nil)
        let defaultPort = scheme == "https" ? 443 : 80
        let authority = (host.contains(":") ? "[\(host)]" : host) + (port.map { $0 == defaultPort ? "" : ":\($0)" } ?? "")
        let path = redirect.path.map { rewrite(request.path, $0, match) } ?? request.path
        return "\(scheme)://\(authority)\(path)" + (request.query.map { "?" + $0 } ?? "")
    }
}
