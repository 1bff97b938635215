import Foundation
import Yams

/// The objects loaded from a folder of Gateway API manifests.
public struct RouteManifests: Sendable, Equatable {
    public var routes: [HTTPRouteObject] = []
    public var gateways: [GatewayObject] = []
    public var tlsRoutes: [TLSRouteObject] = []
    public var referenceGrants: [ReferenceGrantObject] = []
    /// `Namespace` manifests: name → labels (for `allowedRoutes.namespaces.from: Selector`).
    public var namespaceLabels: [String: [String: String]] = [:]
    /// `XBackendTrafficPolicy` objects (retry budgets of Services).
    public var backendPolicies: [BackendTrafficPolicyObject] = []
    /// Per object (`Kind namespace/name`): its `metadata.generation` and a digest of its
    /// `spec`, for the status's `observedGeneration` (`StatusHistory`).
    public var generations: [String: ObjectGeneration] = [:]

    public init(routes: [HTTPRouteObject] = [], gateways: [GatewayObject] = []) {
        self.routes = routes
        self.gateways = gateways
    }

    mutating func append(_ other: RouteManifests) {
        routes += other.routes
        gateways += other.gateways
        tlsRoutes += other.tlsRoutes
        referenceGrants += other.referenceGrants
        namespaceLabels.merge(other.namespaceLabels) { a, _ in a }
        backendPolicies += other.backendPolicies
        generations.merge(other.generations) { a, _ in a }
    }

    /// The policy in force for each targeted Service (`namespace/service`): among the policies
    /// with a `retryConstraint` that target it, the oldest `creationTimestamp` (undated =
    /// newest), then `namespace/name` alphabetically — the Gateway API's rule for conflicting
    /// policies (GEP-713); the others are `Conflicted` in the status.
    func backendPolicyInForce() -> [String: BackendTrafficPolicyObject] {
        let ordered = backendPolicies.filter { $0.retryConstraint != nil }.sorted { a, b in
            switch (a.created, b.created) {
            case (let x?, let y?) where x != y: return x < y
            case (.some, nil): return true
            case (nil, .some): return false
            default: return a.key < b.key
            }
        }
        var result: [String: BackendTrafficPolicyObject] = [:]
        for policy in ordered {
            for target in policy.targets where result[target] == nil {
                result[target] = policy
            }
        }
        return result
    }

    /// Gives every HTTPRoute backend the `retryConstraint` of the policy in force for its
    /// Service (`backendPolicyInForce`), or none.
    mutating func applyBackendPolicies() {
        let inForce = backendPolicyInForce()
        for r in routes.indices {
            for i in routes[r].rules.indices {
                for b in routes[r].rules[i].backends.indices {
                    routes[r].rules[i].backends[b].retryConstraint = inForce[routes[r].rules[i].backends[b].serviceKey]?.retryConstraint
                }
            }
        }
    }

    /// Whether a `kind` route in `namespace` may use `backend` (same namespace, or a
    /// `ReferenceGrant` in the backend's namespace allows it).
    func permits(_ backend: RouteBackend, kind: String, from namespace: String) -> Bool {
        backend.namespace == namespace
            || referenceGrants.contains {
                $0.namespace == backend.namespace && $0.allows(fromKind: kind, fromNamespace: namespace, toKind: "Service", toName: backend.service)
            }
    }

    /// Applies the ReferenceGrants: a cross-namespace backendRef that no grant allows stays
    /// in its rule with its weight, marked `refused` (its share of the requests answers 500,
    /// of TLS connections is closed), and is recorded in `refusedRefs`; a refused
    /// RequestMirror backend is removed from its rule (recorded too), and so is a
    /// Gateway listener's `certificateRefs` Secret in another namespace (grant from `Gateway`
    /// to `Secret`).
    mutating func resolveReferences() {
        let grants = self
        func refusal(_ backend: RouteBackend, _ kind: String, _ namespace: String) -> String? {
            grants.permits(backend, kind: kind, from: namespace)
                ? nil : "backendRef \(backend.name): RefNotPermitted: no ReferenceGrant in namespace \(backend.namespace) allows \(kind)s from \(namespace)"
        }
        for r in routes.indices {
            let route = routes[r]
            for i in route.rules.indices {
                for b in route.rules[i].backends.indices {
                    if let message = refusal(route.rules[i].backends[b], "HTTPRoute", route.namespace) {
                        routes[r].refusedRefs.append(message)
                        routes[r].rules[i].backends[b].refused = message
                    }
                }
                var filters: [RouteFilter] = []
                for filter in route.rules[i].filters {
                    if case .requestMirror(let backend) = filter, let message = refusal(backend, "HTTPRoute", route.namespace) {
                        routes[r].refusedRefs.append(message)
                    } else {
                        filters.append(filter)
                    }
                }
                routes[r].rules[i].filters = filters
            }
        }
        for g in gateways.indices {
            let gateway = gateways[g]
            for l in gateway.listeners.indices {
                var kept: [String] = []
                for secret in gateway.listeners[l].certificateRefs {
                    let parts = secret.split(separator: "/", maxSplits: 1).map(String.init)
                    let permitted =
                        parts.count == 1
                        || referenceGrants.contains {
                            $0.namespace == parts[0]
                                && $0.allows(fromKind: "Gateway", fromNamespace: gateway.namespace, toKind: "Secret", toName: parts[1])
                        }
                    if permitted {
                        kept.append(secret)
                    } else {
                        let message = "certificateRef \(secret): RefNotPermitted: no ReferenceGrant in namespace \(parts[0]) allows Gateways from \(gateway.namespace)"
                        gateways[g].refusedRefs.append("listener \(gateway.listeners[l].name) " + message)
                        gateways[g].listeners[l].refusedCertificateRefs.append(message)
                    }
                }
                gateways[g].listeners[l].certificateRefs = kept
            }
        }
        for t in tlsRoutes.indices {
            let route = tlsRoutes[t]
            for b in route.backends.indices {
                if let message = refusal(route.backends[b], "TLSRoute", route.namespace) {
                    tlsRoutes[t].refusedRefs.append(message)
                    tlsRoutes[t].backends[b].refused = message
                }
            }
        }
    }
}

/// Loads `HTTPRoute` (gateway.networking.k8s.io/v1), `Gateway`, `TLSRoute` (v1alpha2),
/// `ReferenceGrant` (v1beta1), `Namespace` (v1, for its labels) and `XBackendTrafficPolicy`
/// (gateway.networking.x-k8s.io/v1alpha1, retry budgets) objects from YAML.
///
/// Strict: a missing or mistyped field, or a field or value this gateway does not implement
/// (ExtensionRef, sessionPersistence, …), refuses the manifest with an
/// `HTTPRouteError` naming the file, the object and the field. `metadata` fields other than
/// name, namespace, creationTimestamp, generation (for the status's `observedGeneration`)
/// (and a Namespace's labels) and the `status` section are ignored (they do not change routing).
public struct HTTPRouteLoader: Sendable {
    /// Service name (`name` or `namespace/name`) → `host` or `host:port`. A backendRef whose
    /// name is not listed is dialled as a literal host name.
    public var services: [String: String]

    public init(services: [String: String] = [:]) {
        self.services = services
    }

    /// Loads every `*.yaml` / `*.yml` file of `directory` (sorted by name), then applies the
    /// ReferenceGrants (`RouteManifests.resolveReferences`).
    public func load(directory: String) throws(HTTPRouteError) -> RouteManifests {
        let names: [String]
        do {
            names = try FileManager.default.contentsOfDirectory(atPath: directory)
        } catch {
            throw HTTPRouteError(.unreadable, file: directory, object: "", field: "", "cannot list directory: \(error.localizedDescription)")
        }
        var result = RouteManifests()
        for name in names.sorted() where name.hasSuffix(".yaml") || name.hasSuffix(".yml") {
            let path = (directory as NSString).appendingPathComponent(name)
            guard let data = FileManager.default.contents(atPath: path), let text = String(data: data, encoding: .utf8) else {
                throw HTTPRouteError(.unreadable, file: path, object: "", field: "", "cannot read file as UTF-8")
            }
            result.append(try documents(yaml: text, file: path))
        }
        try Self.checkUnique(result)
        result.resolveReferences()
        result.applyBackendPolicies()
        return result
    }

    /// Loads the objects of one (multi-document) YAML text; `file` names it in errors.
    public func load(yaml: String, file: String) throws(HTTPRouteError) -> RouteManifests {
        var result = try documents(yaml: yaml, file: file)
        try Self.checkUnique(result)
        result.resolveReferences()
        result.applyBackendPolicies()
        return result
    }

    private static func checkUnique(_ manifests: RouteManifests) throws(HTTPRouteError) {
        var seen = Set<String>()
        for route in manifests.routes where !seen.insert(route.key).inserted {
            throw HTTPRouteError(.invalid, file: route.file, object: "HTTPRoute \(route.key)", field: "metadata.name", "defined twice")
        }
        seen = []
        for route in manifests.tlsRoutes where !seen.insert(route.key).inserted {
            throw HTTPRouteError(.invalid, file: route.file, object: "TLSRoute \(route.key)", field: "metadata.name", "defined twice")
        }
        seen = []
        for policy in manifests.backendPolicies where !seen.insert(policy.key).inserted {
            throw HTTPRouteError(.invalid, file: policy.file, object: "\(policy.kind) \(policy.key)", field: "metadata.name", "defined twice")
        }
    }

    /// The API versions accepted per kind.
    static let apiVersions: [String: [String]] = [
        "HTTPRoute": ["gateway.networking.k8s.io/v1", "gateway.networking.k8s.io/v1beta1"],
        "Gateway": ["gateway.networking.k8s.io/v1", "gateway.networking.k8s.io/v1beta1"],
        "TLSRoute": ["gateway.networking.k8s.io/v1alpha2", "gateway.networking.k8s.io/v1alpha3"],
        "ReferenceGrant": ["gateway.networking.k8s.io/v1beta1", "gateway.networking.k8s.io/v1alpha2"],
        "Namespace": ["v1"],
        "XBackendTrafficPolicy": ["gateway.networking.x-k8s.io/v1alpha1"],
        "BackendTrafficPolicy": ["gateway.networking.x-k8s.io/v1alpha1"],
    ]

    private func documents(yaml: String, file: String) throws(HTTPRouteError) -> RouteManifests {
        var result = RouteManifests()
        var documents: [Any?] = []
        if let (document, message) = ManifestBounds.problem(yaml) {
            throw HTTPRouteError(.unreadable, file: file, object: "document \(document)", field: "", message)
        }
        do {
            // YamlSequence stops at a syntax error and keeps it in `error` instead of throwing.
            var sequence = try Yams.load_all(yaml: yaml)
            while let document = sequence.next() { documents.append(document) }
            if let error = sequence.error { throw error }
        } catch {
            throw HTTPRouteError(.unreadable, file: file, object: "document \(documents.count + 1)", field: "", "invalid YAML: \(error)")
        }
        for (index, document) in documents.enumerated() {
            guard let document else { continue }
            var node = Node(file: file, object: "document \(index + 1)", path: "", value: document)
            let top = try node.map()
            let kind = try node.child("kind").string()
            let metadata = try node.child("metadata")
            let name = try metadata.child("name").string()
            let namespace = try metadata.optional("namespace")?.string() ?? "default"
            node.object = kind == "Namespace" ? "Namespace \(name)" : "\(kind) \(namespace)/\(name)"
            try node.allow(top, ["apiVersion", "kind", "metadata", "spec", "status"])
            guard let versions = Self.apiVersions[kind] else {
                throw node.field("kind").error(.unsupported, "kind \(kind) (HTTPRoute, Gateway, TLSRoute, ReferenceGrant, Namespace, XBackendTrafficPolicy are)")
            }
            let apiVersion = try node.child("apiVersion").string()
            guard versions.contains(apiVersion) else {
                throw node.field("apiVersion").error(.unsupported, "apiVersion \(apiVersion) for \(kind) (\(versions.joined(separator: ", ")))")
            }
            var meta = metadata
            meta.object = node.object
            if kind == "Namespace" {
                // Only the labels matter (a Namespace's spec holds finalizers).
                var labels: [String: String] = [:]
                if let map = try meta.optional("labels") {
                    for (key, value) in try map.map() {
                        guard let text = value as? String else { throw map.field(key).error(.invalid, "expected a string label value, got \(value)") }
                        labels[key] = text
                    }
                }
                result.namespaceLabels[name] = labels
                continue
            }
            var created: Date?
            if let stamp = try meta.optional("creationTimestamp") { created = try stamp.timestamp() }
            var spec = try node.child("spec")
            spec.object = node.object
            var declared: Int?
            if let generation = try meta.optional("generation") {
                declared = try generation.int()
                guard declared! >= 1 else { throw generation.error(.invalid, "generation \(declared!) is below 1") }
            }
            result.generations["\(kind) \(namespace)/\(name)"] = ObjectGeneration(declared: declared, specDigest: ObjectGeneration.digest(spec.value))
            switch kind {
            case "HTTPRoute":
                result.routes.append(try route(spec, namespace: namespace, name: name, created: created, file: file))
            case "Gateway":
                result.gateways.append(try gateway(spec, namespace: namespace, name: name, file: file))
            case "TLSRoute":
                result.tlsRoutes.append(try tlsRoute(spec, namespace: namespace, name: name, created: created, file: file))
            case "XBackendTrafficPolicy", "BackendTrafficPolicy":
                result.backendPolicies.append(try backendPolicy(spec, kind: kind, namespace: namespace, name: name, created: created, file: file))
            default:
                result.referenceGrants.append(try referenceGrant(spec, namespace: namespace, name: name, file: file))
            }
        }
        return result
    }

    private func gateway(_ spec: Node, namespace: String, name: String, file: String) throws(HTTPRouteError) -> GatewayObject {
        try spec.allow(try spec.map(), ["gatewayClassName", "listeners", "addresses", "infrastructure"])
        var addresses: [String] = []
        var addressHostnames: [String] = []
        for item in try spec.optional("addresses")?.list() ?? [] {
            try item.allow(try item.map(), ["type", "value"])
            let type = try item.optional("type")?.string() ?? "IPAddress"
            guard type == "IPAddress" || type == "Hostname" else {
                throw item.field("type").error(.unsupported, "address type \(type) (IPAddress and Hostname are: the listeners bind these addresses)")
            }
            let node = try item.child("value")
            guard type == "IPAddress" else {
                let host = try hostname(node)
                guard !host.hasPrefix("*.") else { throw node.error(.unsupported, "wildcard hostname \(host): it names no address to bind") }
                guard !addressHostnames.contains(host) else { throw node.error(.invalid, "hostname \(host) is listed twice") }
                addressHostnames.append(host)
                continue
            }
            let value = try node.string()
            guard let address = try? SocketAddress(host: value, port: 0) else {
                throw node.error(.invalid, "\"\(value)\" is not an IPv4 or IPv6 address")
            }
            guard !addresses.contains(address.host) else { throw node.error(.invalid, "address \(value) is listed twice") }
            addresses.append(address.host)
        }
        var listeners: [GatewayObject.Listener] = []
        for item in try spec.child("listeners").list() {
            try item.allow(try item.map(), ["name", "port", "protocol", "hostname", "allowedRoutes", "tls"])
            let protoName = try item.child("protocol").string()
            guard let proto = GatewayObject.ListenerProtocol(rawValue: protoName) else {
                throw item.field("protocol").error(.unsupported, "protocol \(protoName) (HTTP, HTTPS, TLS are)")
            }
            var certificateRefs: [String] = []
            switch proto {
            case .https:
                certificateRefs = try self.certificateRefs(try item.child("tls"), namespace: namespace)
            case .tlsPassthrough:
                let tls = try item.child("tls")
                try tls.allow(try tls.map(), ["mode"])
                let mode = try tls.optional("mode")?.string() ?? "Terminate"
                guard mode == "Passthrough" else {
                    throw tls.field("mode").error(.unsupported, "protocol TLS with mode \(mode) (Passthrough is; terminate TLS with protocol HTTPS)")
                }
            case .http:
                if try item.optional("tls") != nil { throw item.field("tls").error(.invalid, "tls on a protocol HTTP listener") }
            }
            let port = try item.child("port").int()
            guard (1...65535).contains(port) else { throw item.field("port").error(.invalid, "port \(port) out of range 1…65535") }
            var listener = GatewayObject.Listener(
                name: try item.child("name").string(), port: port, hostname: try item.optional("hostname").map(hostname), proto: proto)
            listener.certificateRefs = certificateRefs
            if let routes = try item.optional("allowedRoutes") {
                try routes.allow(try routes.map(), ["namespaces", "kinds"])
                for kind in try routes.optional("kinds")?.list() ?? [] {
                    try kind.allow(try kind.map(), ["group", "kind"])
                    let name = try kind.child("kind").string()
                    guard name == listener.routeKind else {
                        throw kind.field("kind").error(.unsupported, "route kind \(name) on a protocol \(protoName) listener (\(listener.routeKind) is)")
                    }
                }
                if let namespaces = try routes.optional("namespaces") {
                    listener.allowedNamespaces = try allowedNamespaces(namespaces)
                }
            }
            listeners.append(listener)
        }
        var object = GatewayObject(namespace: namespace, name: name, listeners: listeners, file: file)
        object.addresses = addresses
        object.addressHostnames = addressHostnames
        if let node = try spec.optional("infrastructure") {
            object.infrastructure = try infrastructure(node)
        }
        return object
    }

    /// `spec.infrastructure`: `labels` and `annotations` are kept and shown in the status
    /// (ugate creates no resources to put them on), validated as the Gateway API does (at most
    /// 8 each; label and annotation keys `[prefix/]name`; label values of at most 63
    /// characters, annotation values of at most 4096); `parametersRef` is refused (there is no
    /// GatewayClass parameters object: `ugate.json` configures the listeners).
    private func infrastructure(_ node: Node) throws(HTTPRouteError) -> GatewayObject.Infrastructure {
        try node.allow(try node.map(), ["labels", "annotations", "parametersRef"])
        if try node.optional("parametersRef") != nil {
            throw node.field("parametersRef").error(
                .unsupported, "parametersRef (ugate has no infrastructure parameters: ugate.json's httproute listeners configure what serves the Gateway)")
        }
        var result = GatewayObject.Infrastructure()
        for (field, label) in [("labels", true), ("annotations", false)] {
            guard let map = try node.optional(field) else { continue }
            var entries: [String: String] = [:]
            let items = try map.map()
            guard items.count <= 8 else { throw map.error(.invalid, "\(items.count) \(field) (at most 8 are allowed)") }
            for (key, value) in items {
                guard let text = value as? String else { throw map.field(key).error(.invalid, "expected a string, got \(value)") }
                guard Self.validMetadataKey(key) else {
                    throw map.field(key).error(.invalid, "key \"\(key)\" is not a [prefix/]name key (name: 1…63 of A-Z a-z 0-9 - _ ., alphanumeric at both ends)")
                }
                if label {
                    guard text.count <= 63, text.isEmpty || Self.validName(text) else {
                        throw map.field(key).error(.invalid, "label value \"\(text)\" is not 0…63 of A-Z a-z 0-9 - _ ., alphanumeric at both ends")
                    }
                } else if text.utf8.count > 4096 {
                    throw map.field(key).error(.invalid, "annotation value of \(text.utf8.count) bytes (at most 4096)")
                }
                entries[key] = text
            }
            if label { result.labels = entries } else { result.annotations = entries }
        }
        return result
    }

    /// A Kubernetes label or annotation key: an optional DNS-subdomain prefix (at most 253) and
    /// `/`, then a name (`validName`).
    static func validMetadataKey(_ key: String) -> Bool {
        let parts = key.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count <= 2, let name = parts.last else { return false }
        if parts.count == 2 {
            let prefix = parts[0]
            let labels = prefix.split(separator: ".", omittingEmptySubsequences: false)
            guard prefix.count <= 253, labels.allSatisfy({ label in
                !label.isEmpty && label.allSatisfy { ($0.isASCII && ($0.isLowercase || $0.isNumber)) || $0 == "-" } && label.first != "-" && label.last != "-"
            }) else { return false }
        }
        return validName(Substring(name))
    }

    /// 1…63 of `A-Z a-z 0-9 - _ .`, alphanumeric at both ends.
    static func validName<S: StringProtocol>(_ name: S) -> Bool {
        func alphanumeric(_ c: Character) -> Bool { c.isASCII && (c.isLetter || c.isNumber) }
        guard (1...63).contains(name.count), let first = name.first, let last = name.last, alphanumeric(first), alphanumeric(last) else { return false }
        return name.allSatisfy { alphanumeric($0) || $0 == "-" || $0 == "_" || $0 == "." }
    }

    /// An `XBackendTrafficPolicy` (GEP-3388) with the API's validation: `targetRefs` (1…16,
    /// distinct; group "" kind Service — a TargetRef is a Service of the policy's namespace),
    /// `retryConstraint.budget` (`percent` 0…100, default 20; `interval` 1 s…1 h, default
    /// 10 s) and `retryConstraint.minRetryRate` (`count` 1…1,000,000, default 10; `interval`
    /// above 0, at most 1 h, default 1 s). `sessionPersistence` is not implemented (refused);
    /// the pre-v1.3 flat fields `budgetPercent` / `budgetInterval` are refused naming the
    /// current ones.
    private func backendPolicy(
        _ spec: Node, kind: String, namespace: String, name: String, created: Date?, file: String
    ) throws(HTTPRouteError) -> BackendTrafficPolicyObject {
        try spec.allow(try spec.map(), ["targetRefs", "retryConstraint"])
        let refs = try spec.child("targetRefs").list()
        guard (1...16).contains(refs.count) else {
            throw spec.field("targetRefs").error(.invalid, "\(refs.count) targetRefs (1…16 are allowed)")
        }
        var services: [String] = []
        for ref in refs {
            try ref.allow(try ref.map(), ["group", "kind", "name"])
            let group = try ref.child("group").string()
            let targetKind = try ref.child("kind").string()
            guard group == "", targetKind == "Service" else {
                throw ref.field(group == "" ? "kind" : "group").error(
                    .unsupported, "target \(group.isEmpty ? "" : group + "/")\(targetKind) (a Service of the core group \"\" is)")
            }
            let service = try ref.child("name").string()
            guard !service.isEmpty else { throw ref.field("name").error(.invalid, "empty name") }
            guard !services.contains(service) else { throw ref.field("name").error(.invalid, "Service \(service) is targeted twice") }
            services.append(service)
        }
        var constraint: RetryConstraint?
        if let node = try spec.optional("retryConstraint") {
            let map = try node.map()
            for old in ["budgetPercent", "budgetInterval"] where map[old] != nil {
                throw node.field(old).error(.unsupported, "\(old) is the pre-v1.3 field; use budget.percent and budget.interval")
            }
            try node.allow(map, ["budget", "minRetryRate"])
            var value = RetryConstraint()
            if let budget = try node.optional("budget") {
                try budget.allow(try budget.map(), ["percent", "interval"])
                if let percent = try budget.optional("percent") {
                    value.percent = try percent.int()
                    guard (0...100).contains(value.percent) else { throw percent.error(.invalid, "percent \(value.percent) outside 0…100") }
                }
                if let interval = try budget.optional("interval") {
                    value.interval = try interval.duration()
                    guard value.interval >= 1, value.interval <= 3600 else {
                        throw interval.error(.invalid, "interval \(value.interval) s: it cannot be greater than one hour or less than one second")
                    }
                }
            }
            if let rate = try node.optional("minRetryRate") {
                try rate.allow(try rate.map(), ["count", "interval"])
                if let count = try rate.optional("count") {
                    value.minRetryCount = try count.int()
                    guard (1...1_000_000).contains(value.minRetryCount) else {
                        throw count.error(.invalid, "count \(value.minRetryCount) outside 1…1000000")
                    }
                }
                if let interval = try rate.optional("interval") {
                    value.minRetryInterval = try interval.duration()
                    guard value.minRetryInterval > 0, value.minRetryInterval <= 3600 else {
                        throw interval.error(.invalid, "interval \(value.minRetryInterval) s: it must be above 0 and at most one hour")
                    }
                }
            }
            constraint = value
        }
        return BackendTrafficPolicyObject(
            kind: kind, namespace: namespace, name: name, created: created, services: services, retryConstraint: constraint, file: file)
    }

    /// `allowedRoutes.namespaces`: `from` Same (default), All or Selector (with `selector`).
    private func allowedNamespaces(_ node: Node) throws(HTTPRouteError) -> GatewayObject.AllowedNamespaces {
        try node.allow(try node.map(), ["from", "selector"])
        let from = try node.optional("from")
        let value = try from?.string() ?? "Same"
        let selector = try node.optional("selector")
        switch value {
        case "Same", "All":
            if selector != nil { throw node.field("selector").error(.invalid, "selector needs from: Selector") }
            return value == "Same" ? .same : .all
        case "Selector":
            guard let selector else { throw node.field("selector").error(.invalid, "from: Selector needs a selector") }
            return .selector(try labelSelector(selector))
        default:
            throw node.field("from").error(.invalid, "from \(value) (Same, All, Selector)")
        }
    }

    /// A Kubernetes `LabelSelector`: `matchLabels` and `matchExpressions` (In, NotIn, Exists, DoesNotExist).
    private func labelSelector(_ node: Node) throws(HTTPRouteError) -> LabelSelector {
        try node.allow(try node.map(), ["matchLabels", "matchExpressions"])
        var result = LabelSelector()
        if let labels = try node.optional("matchLabels") {
            for (key, value) in try labels.map() {
                guard let text = value as? String else { throw labels.field(key).error(.invalid, "expected a string, got \(value)") }
                result.matchLabels[key] = text
            }
        }
        for item in try node.optional("matchExpressions")?.list() ?? [] {
            try item.allow(try item.map(), ["key", "operator", "values"])
            let opName = try item.child("operator").string()
            guard let op = LabelSelector.Requirement.Operator(rawValue: opName) else {
                throw item.field("operator").error(.invalid, "operator \(opName) (In, NotIn, Exists, DoesNotExist)")
            }
            var values: [String] = []
            for value in try item.optional("values")?.list() ?? [] { values.append(try value.string()) }
            if (op == .in || op == .notIn) && values.isEmpty { throw item.field("values").error(.invalid, "\(opName) needs values") }
            if (op == .exists || op == .doesNotExist) && !values.isEmpty { throw item.field("values").error(.invalid, "\(opName) takes no values") }
            result.matchExpressions.append(.init(key: try item.child("key").string(), op: op, values: values))
        }
        return result
    }

    /// A TLSRoute: hostnames, parentRefs, and the backendRefs of every rule (weights).
    private func tlsRoute(_ spec: Node, namespace: String, name: String, created: Date?, file: String) throws(HTTPRouteError) -> TLSRouteObject {
        try spec.allow(try spec.map(), ["parentRefs", "hostnames", "rules"])
        var backends: [RouteBackend] = []
        for item in try spec.child("rules").list() {
            try item.allow(try item.map(), ["name", "backendRefs"])
            for ref in try item.child("backendRefs").list() {
                backends.append(try backend(ref, namespace: namespace))
            }
        }
        var hostnames: [String] = []
        for item in try spec.optional("hostnames")?.list() ?? [] {
            hostnames.append(try hostname(item))
        }
        return TLSRouteObject(
            namespace: namespace, name: name, created: created, hostnames: hostnames, parents: try parentRefs(spec, namespace: namespace),
            backends: backends, file: file)
    }

    /// A ReferenceGrant: `from` (group, kind, namespace) and `to` (group, kind, optional name).
    private func referenceGrant(_ spec: Node, namespace: String, name: String, file: String) throws(HTTPRouteError) -> ReferenceGrantObject {
        try spec.allow(try spec.map(), ["from", "to"])
        var from: [ReferenceGrantObject.From] = []
        for item in try spec.child("from").list() {
            try item.allow(try item.map(), ["group", "kind", "namespace"])
            from.append(.init(group: try item.child("group").string(), kind: try item.child("kind").string(), namespace: try item.child("namespace").string()))
        }
        var to: [ReferenceGrantObject.To] = []
        for item in try spec.child("to").list() {
            try item.allow(try item.map(), ["group", "kind", "name"])
            to.append(.init(group: try item.child("group").string(), kind: try item.child("kind").string(), name: try item.optional("name")?.string()))
        }
        guard !from.isEmpty else { throw spec.field("from").error(.invalid, "at least one from entry is required") }
        guard !to.isEmpty else { throw spec.field("to").error(.invalid, "at least one to entry is required") }
        return ReferenceGrantObject(namespace: namespace, name: name, from: from, to: to, file: file)
    }

    /// `tls` of an HTTPS listener: mode Terminate, Secrets by name (`namespace/name` for a
    /// Secret in another namespace: usable once a ReferenceGrant allows it).
    private func certificateRefs(_ tls: Node, namespace: String) throws(HTTPRouteError) -> [String] {
        try tls.allow(try tls.map(), ["mode", "certificateRefs"])
        if let mode = try tls.optional("mode"), try mode.string() != "Terminate" {
            throw mode.error(.invalid, "mode \(try mode.string()) on a protocol HTTPS listener (Terminate; for passthrough use protocol TLS and TLSRoutes)")
        }
        var names: [String] = []
        for ref in try tls.child("certificateRefs").list() {
            try ref.allow(try ref.map(), ["group", "kind", "name", "namespace"])
            if let kind = try ref.optional("kind"), try kind.string() != "Secret" {
                throw kind.error(.unsupported, "kind \(try kind.string()) (Secret is)")
            }
            if let group = try ref.optional("group"), try group.string() != "" {
                throw group.error(.unsupported, "group \(try group.string()) (the core group \"\" is)")
            }
            let name = try ref.child("name").string()
            let other = try ref.optional("namespace")?.string() ?? namespace
            names.append(other == namespace ? name : "\(other)/\(name)")
        }
        guard !names.isEmpty else { throw tls.field("certificateRefs").error(.invalid, "an HTTPS listener needs a certificateRef") }
        return names
    }

    /// A Gateway API `Hostname`: a DNS name or `*.` + DNS name, lowercased.
    private func hostname(_ item: Node) throws(HTTPRouteError) -> String {
        let host = try item.string().lowercased()
        let bare = host.hasPrefix("*.") ? String(host.dropFirst(2)) : host
        guard !bare.isEmpty, !bare.contains("*"), !bare.contains(":"),
            bare.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" || $0 == "." })
        else { throw item.error(.invalid, "hostname \"\(host)\" is not a DNS name or *.wildcard") }
        return host
    }

    private func route(_ spec: Node, namespace: String, name: String, created: Date?, file: String) throws(HTTPRouteError) -> HTTPRouteObject {
        try spec.allow(try spec.map(), ["parentRefs", "hostnames", "rules"])
        let parents = try parentRefs(spec, namespace: namespace)
        var hostnames: [String] = []
        for item in try spec.optional("hostnames")?.list() ?? [] {
            hostnames.append(try hostname(item))
        }
        var rules: [RouteRule] = []
        for item in try spec.optional("rules")?.list() ?? [] {
            rules.append(try rule(item, namespace: namespace))
        }
        if rules.isEmpty {
            rules = [RouteRule(matches: [RouteMatch()], filters: [], backends: [], requestTimeout: nil)]
        }
        return HTTPRouteObject(namespace: namespace, name: name, created: created, hostnames: hostnames, parents: parents, rules: rules, file: file)
    }

    /// `spec.parentRefs`: Gateways (namespace defaults to the route's).
    private func parentRefs(_ spec: Node, namespace: String) throws(HTTPRouteError) -> [ParentRef] {
        var parents: [ParentRef] = []
        for item in try spec.optional("parentRefs")?.list() ?? [] {
            try item.allow(try item.map(), ["name", "namespace", "sectionName", "group", "kind", "port"])
            if let kind = try item.optional("kind")?.string(), kind != "Gateway" {
                throw item.field("kind").error(.unsupported, "parent kind \(kind) (Gateway is)")
            }
            parents.append(ParentRef(
                namespace: try item.optional("namespace")?.string() ?? namespace, name: try item.child("name").string(),
                sectionName: try item.optional("sectionName")?.string(), port: try item.optional("port")?.int()))
        }
        return parents
    }

    private func rule(_ node: Node, namespace: String) throws(HTTPRouteError) -> RouteRule {
        try node.allow(try node.map(), ["name", "matches", "filters", "backendRefs", "timeouts", "retry"])
        var matches: [RouteMatch] = []
        for item in try node.optional("matches")?.list() ?? [] {
            matches.append(try match(item))
        }
        if matches.isEmpty { matches = [RouteMatch()] }
        var filters: [RouteFilter] = []
        for item in try node.optional("filters")?.list() ?? [] {
            filters.append(try filter(item, namespace: namespace))
        }
        let redirects = filters.filter { if case .requestRedirect = $0 { true } else { false } }.count
        let rewrites = filters.filter { if case .urlRewrite = $0 { true } else { false } }.count
        if redirects > 1 || (redirects == 1 && rewrites > 0) {
            throw node.field("filters").error(.invalid, "RequestRedirect cannot be combined with another RequestRedirect or URLRewrite")
        }
        for case .requestRedirect(let r) in filters {
            if case .replacePrefixMatch = r.path, !matches.allSatisfy({ if case .prefix = $0.path { true } else { false } }) {
                throw node.field("filters").error(.invalid, "ReplacePrefixMatch needs PathPrefix matches")
            }
        }
        var backends: [RouteBackend] = []
        for item in try node.optional("backendRefs")?.list() ?? [] {
            backends.append(try backend(item, namespace: namespace))
        }
        var timeout: Double?
        var perTry: Double?
        if let timeouts = try node.optional("timeouts") {
            try timeouts.allow(try timeouts.map(), ["request", "backendRequest"])
            if let request = try timeouts.optional("request") { timeout = try request.duration() }
            if let backendRequest = try timeouts.optional("backendRequest") {
                let value = try backendRequest.duration()
                // Gateway API: backendRequest must not be longer than request.
                if let timeout, value > timeout {
                    throw backendRequest.error(.invalid, "backendRequest \(value) s is longer than request \(timeout) s")
                }
                perTry = value
            }
        }
        var rule = RouteRule(matches: matches, filters: filters, backends: backends, requestTimeout: timeout, backendRequestTimeout: perTry)
        if let retry = try node.optional("retry") { rule.retry = try self.retry(retry) }
        return rule
    }

    /// `retry` (GEP-1731, Gateway API v1 `HTTPRouteRetry`): `attempts` (0…10, default 1),
    /// `codes` (400–599, the range `HTTPRouteRetryStatusCode` allows: 5xx and 4xx such as 429
    /// or 408), `backoff` (a Duration).
    private func retry(_ node: Node) throws(HTTPRouteError) -> RetryPolicy {
        try node.allow(try node.map(), ["attempts", "codes", "backoff"])
        var policy = RetryPolicy()
        if let attempts = try node.optional("attempts") {
            policy.attempts = try attempts.int()
            guard (0...10).contains(policy.attempts) else { throw attempts.error(.invalid, "attempts \(policy.attempts) outside 0…10") }
        }
        for item in try node.optional("codes")?.list() ?? [] {
            let code = try item.int()
            guard (400...599).contains(code) else { throw item.error(.invalid, "code \(code) is not an HTTP error status (400…599)") }
            if !policy.codes.contains(code) { policy.codes.append(code) }
        }
        if let backoff = try node.optional("backoff") { policy.backoff = try backoff.duration() }
        return policy
    }

    private func match(_ node: Node) throws(HTTPRouteError) -> RouteMatch {
        try node.allow(try node.map(), ["path", "headers", "queryParams", "method"])
        var result = RouteMatch()
        if let path = try node.optional("path") {
            try path.allow(try path.map(), ["type", "value"])
            let type = try path.optional("type")?.string() ?? "PathPrefix"
            let value = try path.optional("value")?.string() ?? "/"
            switch type {
            case "Exact", "PathPrefix":
                guard value.hasPrefix("/") else { throw path.field("value").error(.invalid, "path \"\(value)\" must start with /") }
                result.path = type == "Exact" ? .exact(value) : .prefix(value)
            case "RegularExpression":
                do {
                    result.path = .regularExpression(try RouteRegex(value))
                } catch {
                    throw path.field("value").error(.invalid, "bad regular expression \"\(value)\": \(error)")
                }
            default:
                throw path.field("type").error(.invalid, "path type \(type) (Exact, PathPrefix or RegularExpression)")
            }
        }
        if let method = try node.optional("method") {
            let value = try method.string()
            guard ["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"].contains(value) else {
                throw method.error(.invalid, "method \(value) is not an HTTP method")
            }
            result.method = value
        }
        result.headers = try valueMatches(node.optional("headers"), lowercaseNames: true)
        result.queryParams = try valueMatches(node.optional("queryParams"), lowercaseNames: false)
        return result
    }

    private func valueMatches(_ node: Node?, lowercaseNames: Bool) throws(HTTPRouteError) -> [ValueMatch] {
        var result: [ValueMatch] = []
        for item in try node?.list() ?? [] {
            try item.allow(try item.map(), ["type", "name", "value"])
            let name = try item.child("name").string()
            let value = try item.child("value").string()
            let type = try item.optional("type")?.string() ?? "Exact"
            var match = ValueMatch(name: lowercaseNames ? name.lowercased() : name)
            switch type {
            case "Exact": match.exact = value
            case "RegularExpression":
                do {
                    match.regex = try RouteRegex(value)
                } catch {
                    throw item.field("value").error(.invalid, "bad regular expression \"\(value)\": \(error)")
                }
            default: throw item.field("type").error(.invalid, "match type \(type) (Exact or RegularExpression)")
            }
            if result.contains(where: { $0.name == match.name }) {
                throw item.field("name").error(.invalid, "\(name) matched twice")
            }
            result.append(match)
        }
        return result
    }

    private func filter(_ node: Node, namespace: String) throws(HTTPRouteError) -> RouteFilter {
        let type = try node.child("type").string()
        switch type {
        case "RequestHeaderModifier", "ResponseHeaderModifier":
            let key = type == "RequestHeaderModifier" ? "requestHeaderModifier" : "responseHeaderModifier"
            try node.allow(try node.map(), ["type", key])
            let body = try node.child(key)
            try body.allow(try body.map(), ["set", "add", "remove"])
            func fields(_ name: String) throws(HTTPRouteError) -> [HTTPField] {
                var out: [HTTPField] = []
                for item in try body.optional(name)?.list() ?? [] {
                    try item.allow(try item.map(), ["name", "value"])
                    out.append(HTTPField(try item.child("name").headerName(), try item.child("value").headerValue()))
                }
                return out
            }
            var modifier = HeaderModifier(set: try fields("set"), add: try fields("add"))
            for item in try body.optional("remove")?.list() ?? [] { modifier.remove.append(try item.headerName()) }
            return type == "RequestHeaderModifier" ? .requestHeaderModifier(modifier) : .responseHeaderModifier(modifier)
        case "RequestRedirect":
            try node.allow(try node.map(), ["type", "requestRedirect"])
            let body = try node.child("requestRedirect")
            try body.allow(try body.map(), ["scheme", "hostname", "port", "path", "statusCode"])
            var redirect = RequestRedirect()
            if let scheme = try body.optional("scheme") {
                let value = try scheme.string()
                guard value == "http" || value == "https" else { throw scheme.error(.invalid, "scheme \(value) (http or https)") }
                redirect.scheme = value
            }
            redirect.hostname = try body.optional("hostname")?.string()
            if let port = try body.optional("port") {
                redirect.port = try port.int()
                guard (1...65535).contains(redirect.port!) else { throw port.error(.invalid, "port out of range 1…65535") }
            }
            if let path = try body.optional("path") { redirect.path = try pathModifier(path) }
            if let status = try body.optional("statusCode") {
                redirect.statusCode = try status.int()
                guard redirect.statusCode == 301 || redirect.statusCode == 302 else {
                    throw status.error(.unsupported, "statusCode \(redirect.statusCode) (301 or 302)")
                }
            }
            return .requestRedirect(redirect)
        case "URLRewrite":
            try node.allow(try node.map(), ["type", "urlRewrite"])
            let body = try node.child("urlRewrite")
            try body.allow(try body.map(), ["hostname", "path"])
            var rewrite = URLRewrite(hostname: try body.optional("hostname")?.string())
            if let path = try body.optional("path") { rewrite.path = try pathModifier(path) }
            return .urlRewrite(rewrite)
        case "RequestMirror":
            try node.allow(try node.map(), ["type", "requestMirror"])
            let body = try node.child("requestMirror")
            try body.allow(try body.map(), ["backendRef"])
            return .requestMirror(try backend(try body.child("backendRef"), namespace: namespace))
        default:
            throw node.field("type").error(
                .unsupported, "filter type \(type) (RequestHeaderModifier, ResponseHeaderModifier, RequestRedirect, URLRewrite, RequestMirror are)")
        }
    }

    private func pathModifier(_ node: Node) throws(HTTPRouteError) -> PathModifier {
        try node.allow(try node.map(), ["type", "replaceFullPath", "replacePrefixMatch"])
        let type = try node.child("type").string()
        switch type {
        case "ReplaceFullPath": return .replaceFullPath(try node.child("replaceFullPath").string())
        case "ReplacePrefixMatch": return .replacePrefixMatch(try node.child("replacePrefixMatch").string())
        default: throw node.field("type").error(.invalid, "path modifier \(type) (ReplaceFullPath or ReplacePrefixMatch)")
        }
    }

    private func backend(_ node: Node, namespace: String) throws(HTTPRouteError) -> RouteBackend {
        try node.allow(try node.map(), ["name", "namespace", "port", "weight", "group", "kind"])
        if let kind = try node.optional("kind")?.string(), kind != "Service" {
            throw node.field("kind").error(.unsupported, "backend kind \(kind) (Service is)")
        }
        let name = try node.child("name").string()
        let refNamespace = try node.optional("namespace")?.string() ?? namespace
        let port = try node.optional("port")?.int()
        let weight = try node.optional("weight")?.int() ?? 1
        guard (0...1_000_000).contains(weight) else { throw node.field("weight").error(.invalid, "weight \(weight) out of range 0…1000000") }
        var host = name
        var resolvedPort = port
        if let mapped = services["\(refNamespace)/\(name)"] ?? services[name] {
            if let colon = mapped.lastIndex(of: ":"), !mapped.hasSuffix("]"), let p = Int(mapped[mapped.index(after: colon)...]) {
                host = String(mapped[..<colon])
                resolvedPort = p
            } else {
                host = mapped
            }
        }
        host = host.trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
        guard let p = resolvedPort, (1...65535).contains(p) else {
            throw node.field("port").error(.invalid, "backend \(name) needs a port 1…65535 (in backendRefs or the service map)")
        }
        return RouteBackend(
            name: "\(refNamespace)/\(name):\(port ?? p)", destination: Destination(host: host, port: UInt16(p)), weight: weight,
            namespace: refNamespace, service: name)
    }
}

/// A position in a parsed YAML document, for typed access with errors naming the field.
struct Node {
    var file: String
    var object: String
    var path: String
    var value: Any

    func error(_ code: HTTPRouteError.Code, _ message: String) -> HTTPRouteError {
        HTTPRouteError(code, file: file, object: object, field: path, message)
    }

    /// A header field name (RFC 9110 §5.1: a token), as a filter writes it onto the wire.
    func headerName() throws(HTTPRouteError) -> String {
        let name = try string()
        guard !name.isEmpty, name.utf8.allSatisfy(isTokenChar) else {
            throw error(.invalid, "\"\(name)\" is not a valid header name (RFC 9110 token characters only)")
        }
        return name
    }

    /// A header field value (RFC 9110 §5.5): no control characters but HTAB, so a manifest
    /// cannot split a header (CR/LF) or end a head early.
    func headerValue() throws(HTTPRouteError) -> String {
        let value = try string()
        if let bad = value.utf8.first(where: { ($0 < 0x20 && $0 != 0x09) || $0 == 0x7F }) {
            throw error(.invalid, "header value contains control character 0x\(String(bad, radix: 16, uppercase: true)) (CR, LF, NUL and other controls are not allowed)")
        }
        return value
    }

    /// The node of field `key` for an error message (its value is not looked at).
    func field(_ key: String) -> Node { at(key, 0) }

    private func at(_ key: String, _ value: Any) -> Node {
        Node(file: file, object: object, path: path.isEmpty ? key : "\(path).\(key)", value: value)
    }

    func map() throws(HTTPRouteError) -> [String: Any] {
        guard let map = value as? [String: Any] else { throw error(.invalid, "expected a mapping") }
        return map
    }

    func list() throws(HTTPRouteError) -> [Node] {
        guard let list = value as? [Any] else { throw error(.invalid, "expected a list") }
        return list.enumerated().map { Node(file: file, object: object, path: "\(path)[\($0.offset)]", value: $0.element) }
    }

    /// The child `key`; a missing key is an error naming it.
    func child(_ key: String) throws(HTTPRouteError) -> Node {
        guard let node = try optional(key) else { throw at(key, 0).error(.invalid, "required field missing") }
        return node
    }

    func optional(_ key: String) throws(HTTPRouteError) -> Node? {
        guard let value = try map()[key], !(value is NSNull) else { return nil }
        return at(key, value)
    }

    /// Refuses keys outside `known`.
    func allow(_ map: [String: Any], _ known: Set<String>) throws(HTTPRouteError) {
        if let unknown = map.keys.sorted().first(where: { !known.contains($0) }) {
            throw at(unknown, 0).error(.unsupported, "field not implemented by this gateway")
        }
    }

    func string() throws(HTTPRouteError) -> String {
        guard let string = value as? String else { throw error(.invalid, "expected a string, got \(value)") }
        return string
    }

    func int() throws(HTTPRouteError) -> Int {
        guard let int = value as? Int else { throw error(.invalid, "expected an integer, got \(value)") }
        return int
    }

    func timestamp() throws(HTTPRouteError) -> Date {
        if let date = value as? Date { return date }
        if let text = value as? String, let date = try? Date(text, strategy: .iso8601) { return date }
        throw error(.invalid, "expected an RFC 3339 timestamp, got \(value)")
    }

    /// A Gateway API `Duration` (`1h`, `30s`, `500ms`, `1m30s`) in seconds.
    func duration() throws(HTTPRouteError) -> Double {
        let text = try string()
        var total = 0.0
        var number = ""
        var rest = Substring(text)
        while let c = rest.first {
            if c.isNumber {
                number.append(c)
                rest = rest.dropFirst()
                continue
            }
            guard let n = Double(number) else { throw error(.invalid, "bad duration \"\(text)\"") }
            if rest.hasPrefix("ms") {
                total += n / 1000
                rest = rest.dropFirst(2)
            } else if c == "s" || c == "m" || c == "h" {
                total += n * (c == "s" ? 1 : c == "m" ? 60 : 3600)
                rest = rest.dropFirst()
            } else {
                throw error(.invalid, "bad duration \"\(text)\"")
            }
            number = ""
        }
        guard number.isEmpty, !text.isEmpty else { throw error(.invalid, "bad duration \"\(text)\" (e.g. 10s, 500ms, 1m30s)") }
        return total
    }
}
