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

    public struct Forward: Sendable, Hashable {
        public var route: String
        public var backend: RouteBackend
        /// The rule's other permitted backends with weight > 0, in rule order: where a connect
        /// failure or a retry may go (`RetryRule` picks among them by weight, untried ones
        /// first); refused backends are never tried.
        public var fallbacks: [RouteBackend]
        /// Origin-form target (path and query) for the backend.
        public var target: String
        /// The request headers after RequestHeaderModifier and URLRewrite hostname.
        public var headers: [HTTPField]
        public var responseModifiers: [HeaderModifier]
        public var timeout: Double?
        /// The rule's `timeouts.backendRequest`: the limit of each try (nil: none).
        public var attemptTimeout: Double? = nil
        /// RequestMirror backends: each gets a fire-and-forget copy of the request.
        public var mirrors: [RouteBackend] = []
        /// The rule's `retry` (nil: none).
        public var retry: RetryPolicy? = nil
    }
}

extension RouteTable {
    /// Selects the rule for `request`, applies its filters and picks a backend by weight.
    public func decide(_ request: RouteRequest, using generator: inout some RandomNumberGenerator) -> RouteAction {
        guard let index = selectedEntry(request) else { return .notFound }
        let rule = routes[entries[index].route].rules[entries[index].rule]
        let label = entries[index].label
        var headers = request.headers
        var path = request.path
        var responseModifiers: [HeaderModifier] = []
        var mirrors: [RouteBackend] = []
        for filter in rule.filters {
            switch filter {
            case .requestHeaderModifier(let modifier):
                modifier.apply(to: &headers)
            case .responseHeaderModifier(let modifier):
                responseModifiers.append(modifier)
            case .requestRedirect(let redirect):
                return .redirect(status: redirect.statusCode, location: Self.location(redirect, request, entries[index].match), route: label)
            case .urlRewrite(let rewrite):
                if let host = rewrite.hostname { HeaderModifier(set: [HTTPField("Host", host)]).apply(to: &headers) }
                if let modifier = rewrite.path { path = Self.rewrite(path, modifier, entries[index].match) }
            case .requestMirror(let backend):
                mirrors.append(backend)
            }
        }
        guard let backend = Self.pick(rule.backends, using: &generator) else { return .noBackend(route: label) }
        if let reason = backend.refused { return .refusedBackend(route: label, reason: reason) }
        let target = request.query.map { path + "?" + $0 } ?? path
        let fallbacks = rule.backends.count > 1 ? rule.backends.filter { $0 != backend && $0.refused == nil && $0.weight > 0 } : []
        return .forward(.init(
            route: label, backend: backend, fallbacks: fallbacks, target: target, headers: headers,
            responseModifiers: responseModifiers, timeout: rule.requestTimeout, attemptTimeout: rule.backendRequestTimeout, mirrors: mirrors,
            retry: rule.retry))
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
