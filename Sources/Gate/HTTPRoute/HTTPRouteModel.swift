import Foundation

/// The error type of the HTTP routing gateway: what was wrong and where (file, object, field).
public struct HTTPRouteError: Error, CustomStringConvertible, Sendable, Equatable {
    public enum Code: String, Sendable {
        /// A manifest file could not be read or is not YAML.
        case unreadable
        /// A manifest is well-formed YAML but not a valid object (missing or wrong field).
        case invalid
        /// A manifest uses a Gateway API field or value this gateway does not implement.
        case unsupported
    }

    public var code: Code
    /// The manifest file.
    public var file: String
    /// `Kind namespace/name` of the object, or `document N` when it has no name yet.
    public var object: String
    /// The field path inside the object (`spec.rules[0].matches[1].path.type`).
    public var field: String
    public var message: String

    public init(_ code: Code, file: String, object: String, field: String, _ message: String) {
        self.code = code
        self.file = file
        self.object = object
        self.field = field
        self.message = message
    }

    public var description: String {
        "\(file): \(object): \(field.isEmpty ? "" : field + ": ")\(code == .unsupported ? "unsupported: " : "")\(message)"
    }
}

/// A compiled regular expression (RE2-like syntax as far as Swift `Regex` shares it), matched
/// against the whole string.
///
/// The `Regex` is held in a class: `Regex` comes from another module whose types' layouts are
/// not known at compile time, so a struct or enum holding it directly — `PathMatch`,
/// `ValueMatch`, `RouteMatch`, the route table's entries — was copied and destroyed through
/// the runtime's type metadata, on every request (`pathMatches`: about 140 instructions).
public struct RouteRegex: Sendable, Hashable {
    public let pattern: String
    private let compiled: Compiled

    /// Immutable after compilation.
    private final class Compiled: @unchecked Sendable {
        let regex: Regex<AnyRegexOutput>
        init(_ regex: Regex<AnyRegexOutput>) { self.regex = regex }
    }

    public init(_ pattern: String) throws {
        self.pattern = pattern
        compiled = Compiled(try Regex(pattern))
    }

    public func matches(_ text: String) -> Bool { (try? compiled.regex.wholeMatch(in: text)) != nil }
    public static func == (a: RouteRegex, b: RouteRegex) -> Bool { a.pattern == b.pattern }
    public func hash(into hasher: inout Hasher) { hasher.combine(pattern) }
}

/// `HTTPPathMatch`: how a rule matches the request path.
public enum PathMatch: Hashable, Sendable {
    case exact(String)
    /// Matches the prefix on `/`-separated segment boundaries (`/foo` matches `/foo` and
    /// `/foo/bar`, not `/foobar`).
    case prefix(String)
    case regularExpression(RouteRegex)
}

/// `HTTPHeaderMatch` / `HTTPQueryParamMatch`: `Exact` or `RegularExpression` on a value.
public struct ValueMatch: Hashable, Sendable {
    public var name: String
    public var exact: String?
    public var regex: RouteRegex?

    public func matches(_ value: String) -> Bool {
        if let exact { return value == exact }
        return regex?.matches(value) ?? false
    }
}

/// One `HTTPRouteMatch`: every condition must hold.
public struct RouteMatch: Hashable, Sendable {
    public var path: PathMatch = .prefix("/")
    public var method: String?
    public var headers: [ValueMatch] = []
    public var queryParams: [ValueMatch] = []
}

/// `HTTPHeaderFilter`: set (replace), add (append), remove, applied in that order.
public struct HeaderModifier: Hashable, Sendable {
    public var set: [HTTPField] = []
    public var add: [HTTPField] = []
    public var remove: [String] = []

    /// Applies the modifier to a header list (names compare case-insensitively).
    public func apply(to headers: inout [HTTPField]) {
        for field in set {
            let name = field.name.lowercased()
            if let first = headers.firstIndex(where: { $0.name.lowercased() == name }) {
                headers[first].value = field.value
                var index = headers.count - 1
                while index > first {
                    if headers[index].name.lowercased() == name { headers.remove(at: index) }
                    index -= 1
                }
            } else {
                headers.append(field)
            }
        }
        for field in add {
            let name = field.name.lowercased()
            if let index = headers.firstIndex(where: { $0.name.lowercased() == name }) {
                headers[index].value += "," + field.value
            } else {
                headers.append(field)
            }
        }
        let removed = Set(remove.map { $0.lowercased() })
        headers.removeAll { removed.contains($0.name.lowercased()) }
    }
}

/// `HTTPPathModifier`.
public enum PathModifier: Hashable, Sendable {
    case replaceFullPath(String)
    /// Replaces the prefix the rule's `PathPrefix` match matched.
    case replacePrefixMatch(String)
}

/// `HTTPRequestRedirectFilter`.
public struct RequestRedirect: Hashable, Sendable {
    public var scheme: String?
    public var hostname: String?
    public var port: Int?
    public var path: PathModifier?
    public var statusCode: Int = 302
}

/// `HTTPURLRewriteFilter`.
public struct URLRewrite: Hashable, Sendable {
    public var hostname: String?
    public var path: PathModifier?
}

/// The filters this gateway implements.
public enum RouteFilter: Hashable, Sendable {
    case requestHeaderModifier(HeaderModifier)
    case responseHeaderModifier(HeaderModifier)
    case requestRedirect(RequestRedirect)
    case urlRewrite(URLRewrite)
    /// A copy of each request goes to this backend; its response is ignored.
    case requestMirror(RouteBackend)
}

/// A `backendRef` resolved to an address.
public struct RouteBackend: Hashable, Sendable {
    /// The reference as written: `namespace/name:port`.
    public var name: String
    public var destination: Destination
    public var weight: Int
    /// The namespace the `backendRef` points into (the route's own unless it names another:
    /// then a `ReferenceGrant` there must allow it).
    public var namespace: String = ""
    /// The referenced Service name.
    public var service: String = ""
    /// `namespace/service`: the Service as policies target it (`BackendTrafficPolicyObject.targets`).
    public var serviceKey: String { "\(namespace)/\(service)" }
    /// Set when no `ReferenceGrant` permits this cross-namespace reference (the refusal
    /// message). The backend keeps its weight: requests (or TLS connections) that pick it
    /// get a 500 (or are closed), as the Gateway API asks for the refused share of a split.
    public var refused: String?
    /// The retry budget of the `XBackendTrafficPolicy` that targets this Service (nil: none;
    /// the route's default budget applies).
    public var retryConstraint: RetryConstraint? = nil
}

/// A `retryConstraint` of an `XBackendTrafficPolicy` (gateway.networking.x-k8s.io/v1alpha1,
/// GEP-3388): retries to the targeted Service may be at most `percent` % of its requests of
/// the last `interval` seconds, plus `minRetryCount` per `minRetryInterval` seconds (so a
/// quiet Service can still retry). The defaults are the API's: 20 % of 10 s, 10 per 1 s.
public struct RetryConstraint: Hashable, Sendable {
    /// `budget.percent` (0…100).
    public var percent = 20
    /// `budget.interval` in seconds (1 s…1 h).
    public var interval: Double = 10
    /// `minRetryRate.count` (1…1,000,000).
    public var minRetryCount = 10
    /// `minRetryRate.interval` in seconds (above 0, at most 1 h).
    public var minRetryInterval: Double = 1

    /// The budget a route's retries have when no policy targets its backend: 20 % of the
    /// route's requests of the last 10 s plus 3 per second (ugate's own default; the API's
    /// default minimum rate, 10 per second, applies only to a policy that omits it).
    public static let routeDefault = RetryConstraint(percent: 20, interval: 10, minRetryCount: 3, minRetryInterval: 1)
}

/// An `XBackendTrafficPolicy` (or `BackendTrafficPolicy`, the name in the Gateway API's
/// documentation), gateway.networking.x-k8s.io/v1alpha1: a retry budget for the Services it
/// targets (same namespace).
public struct BackendTrafficPolicyObject: Hashable, Sendable {
    public var kind: String
    public var namespace: String
    public var name: String
    public var created: Date?
    /// The targeted Service names (`targetRefs`, group "" kind Service).
    public var services: [String]
    /// nil: the policy holds no `retryConstraint` (it then changes nothing).
    public var retryConstraint: RetryConstraint?
    public var file: String

    public var key: String { "\(namespace)/\(name)" }
    /// The targeted Services as `namespace/service` (`RouteBackend.serviceKey`).
    public var targets: [String] { services.map { "\(namespace)/\($0)" } }
}

/// One `HTTPRouteRule`.
public struct RouteRule: Hashable, Sendable {
    public var matches: [RouteMatch]
    public var filters: [RouteFilter]
    public var backends: [RouteBackend]
    /// `timeouts.request` in seconds (nil: the gateway default).
    public var requestTimeout: Double?
    /// `timeouts.backendRequest` in seconds: the limit of each try (one request to a backend,
    /// until its whole response), after which it is retried (the rule's `retry`) or answered 504.
    public var backendRequestTimeout: Double? = nil
    /// `retry` (nil: no retries beyond the one after a stale kept-alive connection).
    public var retry: RetryPolicy? = nil
}

/// An `HTTPRouteRule.retry` (Gateway API, GEP-1731): a request to a backend that answers one
/// of `codes`, or whose connection fails before the response began, is sent again — at most
/// `attempts` more times, at least `backoff` seconds apart — when that is safe (an idempotent
/// method, a body the gateway can replay; see `RetryRule`).
public struct RetryPolicy: Hashable, Sendable {
    /// Retries after the first try (`attempts`; default 1).
    public var attempts: Int
    /// Response statuses (400–599) that are retried; empty: only connection failures and
    /// `backendRequest` timeouts.
    public var codes: [Int]
    /// Seconds between a failed try and the next (`backoff`; 0: at once).
    public var backoff: Double

    public init(attempts: Int = 1, codes: [Int] = [], backoff: Double = 0) {
        self.attempts = attempts
        self.codes = codes
        self.backoff = backoff
    }
}

/// A loaded `HTTPRoute`.
public struct HTTPRouteObject: Hashable, Sendable {
    public var namespace: String
    public var name: String
    /// `metadata.creationTimestamp` (nil: newest, it sorts after every dated route).
    public var created: Date?
    public var hostnames: [String]
    /// `parentRefs` as `namespace/name` (optionally `/sectionName`).
    public var parents: [ParentRef]
    public var rules: [RouteRule]
    /// The manifest file it came from.
    public var file: String
    /// Backend references refused when the manifests were resolved (a cross-namespace
    /// `backendRef` no `ReferenceGrant` allows): one message each. Those backends stay in
    /// their rules marked `refused` (their weight share answers 500); refused RequestMirror
    /// backends are left out.
    public var refusedRefs: [String] = []

    public var key: String { "\(namespace)/\(name)" }
}

/// A loaded `TLSRoute` (gateway.networking.k8s.io/v1alpha2): TLS connections whose SNI
/// matches one of `hostnames` are passed through untouched to one of `backends` (by weight).
public struct TLSRouteObject: Hashable, Sendable {
    public var namespace: String
    public var name: String
    public var created: Date?
    /// Exact or `*.wildcard`, lowercased; empty: every SNI (the least specific).
    public var hostnames: [String]
    public var parents: [ParentRef]
    /// The backendRefs of every rule, with their weights.
    public var backends: [RouteBackend]
    public var file: String
    /// See `HTTPRouteObject.refusedRefs`.
    public var refusedRefs: [String] = []

    public var key: String { "\(namespace)/\(name)" }
}

/// A `ReferenceGrant` (gateway.networking.k8s.io/v1beta1): lets objects of `from` refer to
/// objects of `to` in the grant's own namespace.
public struct ReferenceGrantObject: Hashable, Sendable {
    public struct From: Hashable, Sendable {
        public var group: String
        public var kind: String
        public var namespace: String
    }

    public struct To: Hashable, Sendable {
        public var group: String
        public var kind: String
        /// nil: every object of that kind.
        public var name: String?
    }

    public var namespace: String
    public var name: String
    public var from: [From]
    public var to: [To]
    public var file: String

    /// Whether a `fromKind` object (Gateway API group) in `fromNamespace` may refer to the
    /// `toKind` (core group) object `toName` in this grant's namespace.
    public func allows(fromKind: String, fromNamespace: String, toKind: String, toName: String, toGroup: String = "") -> Bool {
        from.contains { $0.group == "gateway.networking.k8s.io" && $0.kind == fromKind && $0.namespace == fromNamespace }
            && to.contains { $0.group == toGroup && $0.kind == toKind && ($0.name == nil || $0.name == toName) }
    }
}

/// A Kubernetes label selector (`matchLabels` and `matchExpressions`), as used by
/// `allowedRoutes.namespaces.selector`.
public struct LabelSelector: Hashable, Sendable {
    public struct Requirement: Hashable, Sendable {
        public enum Operator: String, Hashable, Sendable {
            case `in` = "In"
            case notIn = "NotIn"
            case exists = "Exists"
            case doesNotExist = "DoesNotExist"
        }

        public var key: String
        public var op: Operator
        public var values: [String]
    }

    public var matchLabels: [String: String] = [:]
    public var matchExpressions: [Requirement] = []

    /// Whether `labels` satisfy every label and every expression (an empty selector selects everything).
    public func matches(_ labels: [String: String]) -> Bool {
        for (key, value) in matchLabels where labels[key] != value { return false }
        for requirement in matchExpressions {
            let value = labels[requirement.key]
            switch requirement.op {
            case .in: if value == nil || !requirement.values.contains(value!) { return false }
            case .notIn: if let value, requirement.values.contains(value) { return false }
            case .exists: if value == nil { return false }
            case .doesNotExist: if value != nil { return false }
            }
        }
        return true
    }
}

/// A `parentRefs` entry.
public struct ParentRef: Hashable, Sendable {
    public var namespace: String
    public var name: String
    public var sectionName: String?
    /// The listener port it names (nil: any).
    public var port: Int? = nil
}

/// A minimal `Gateway`: HTTP listeners by port.
public struct GatewayObject: Hashable, Sendable {
    /// `allowedRoutes.namespaces.from`: which namespaces' routes may attach by `parentRefs`.
    public enum AllowedNamespaces: Hashable, Sendable {
        /// Only routes in the Gateway's namespace (the Gateway API default).
        case same
        case all
        /// Namespaces whose labels (from `Namespace` manifests in the folder) the selector matches.
        case selector(LabelSelector)
    }

    /// A listener's `protocol` (with `tls.mode` for TLS).
    public enum ListenerProtocol: String, Hashable, Sendable {
        case http = "HTTP"
        case https = "HTTPS"
        /// `protocol: TLS`, `tls.mode: Passthrough`: TLSRoutes attach; nothing is decrypted.
        case tlsPassthrough = "TLS"
    }

    public struct Listener: Hashable, Sendable {
        public var name: String
        public var port: Int
        /// Exact or `*.wildcard`, lowercased; nil: any host.
        public var hostname: String?
        public var allowedNamespaces: AllowedNamespaces = .same
        /// `protocol: HTTPS`: the Secret names of `tls.certificateRefs` (mode Terminate),
        /// `namespace/name` for a Secret in another namespace (kept only when a ReferenceGrant
        /// allows it); empty for `protocol: HTTP`, and for an HTTPS listener whose only Secret
        /// was refused.
        public var certificateRefs: [String] = []
        /// Why each refused cross-namespace `certificateRefs` Secret is not used (RefNotPermitted).
        public var refusedCertificateRefs: [String] = []
        public var proto: ListenerProtocol = .http
        /// The route kind that attaches: `TLSRoute` on a TLS listener, `HTTPRoute` otherwise.
        public var routeKind: String { proto == .tlsPassthrough ? "TLSRoute" : "HTTPRoute" }
    }

    public var namespace: String
    public var name: String
    public var listeners: [Listener]
    public var file: String
    /// certificateRefs refused by `RouteManifests.resolveReferences` (no ReferenceGrant).
    public var refusedRefs: [String] = []
    /// `spec.addresses` of type `IPAddress`: the IP literals the configured listeners serving
    /// this Gateway bind (with `addressHostnames` empty too: their `host`, by default the
    /// config's `bind`).
    public var addresses: [String] = []
    /// `spec.addresses` of type `Hostname`: each binds the addresses of this node it resolves
    /// to (`GatewayBindAddresses`).
    public var addressHostnames: [String] = []
    /// `spec.infrastructure` (labels and annotations; nil when absent).
    public var infrastructure: Infrastructure?

    /// `spec.infrastructure`'s labels and annotations: kept and shown in the status, applied
    /// to nothing (ugate creates no resources for a Gateway).
    public struct Infrastructure: Codable, Hashable, Sendable {
        public var labels: [String: String] = [:]
        public var annotations: [String: String] = [:]
    }
}
