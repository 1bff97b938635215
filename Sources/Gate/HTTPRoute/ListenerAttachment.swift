import Foundation

/// Gateway API hostname intersection between a listener's `hostname` and a route's `hostnames`.
///
/// A name covers another when they are equal or the first is `*.suffix` and the second ends
/// in `.suffix` with at least one more label (`*.example.com` covers `a.example.com`,
/// `a.b.example.com` and `*.a.example.com`, not `example.com`). Two names intersect when
/// one covers the other; the intersection is the more specific (covered) one.
public enum RouteHostnames {
    /// Whether `pattern` (exact or wildcard) covers `name` (exact or wildcard).
    public static func covers(_ pattern: String, _ name: String) -> Bool {
        if pattern == name { return true }
        guard pattern.hasPrefix("*.") else { return false }
        let suffix = pattern.dropFirst()
        return name.hasSuffix(suffix) && name.count > suffix.count
    }

    /// The names a request on a listener with `listener` hostname may match for a route with
    /// `route` hostnames: the route's names narrowed to the listener's (an empty route list
    /// inherits the listener's name); empty when they do not intersect. A nil listener
    /// hostname accepts every name (and an empty result there means "any host").
    public static func intersect(listener: String?, route: [String]) -> [String] {
        guard let listener else { return route }
        if route.isEmpty { return [listener] }
        var result: [String] = []
        for name in route {
            let common = covers(listener, name) ? name : covers(name, listener) ? listener : nil
            if let common, !result.contains(common) { result.append(common) }
        }
        return result
    }
}

/// What listener attachment needs of a route (`HTTPRoute` or `TLSRoute`).
public protocol AttachableRoute: Sendable {
    var namespace: String { get }
    var name: String { get }
    var parents: [ParentRef] { get }
    var hostnames: [String] { get set }
    /// `HTTPRoute` or `TLSRoute`.
    static var kind: String { get }
}

extension HTTPRouteObject: AttachableRoute {
    public static var kind: String { "HTTPRoute" }
}

extension TLSRouteObject: AttachableRoute {
    public static var kind: String { "TLSRoute" }
}

extension GatewayObject.Listener {
    /// Why `route` does not attach to this listener of `gateway` (Gateway API reasons), nil
    /// when it attaches. See `attach`.
    public func refusal<R: AttachableRoute>(
        _ route: R, of gateway: GatewayObject, matchPort: Bool = true, namespaceLabels: [String: [String: String]] = [:]
    ) -> (reason: String, message: String)? {
        guard R.kind == routeKind else { return ("NotAllowedByListeners", "listener \(name) is protocol \(proto.rawValue); it takes \(routeKind)s") }
        if !route.parents.isEmpty {
            let named = route.parents.contains {
                $0.name == gateway.name && $0.namespace == gateway.namespace && ($0.sectionName ?? name) == name
                    && (!matchPort || ($0.port ?? port) == port)
            }
            guard named else { return ("NoMatchingParent", "no parentRef names listener \(name) (port \(port))") }
            let admitted: Bool
            switch allowedNamespaces {
            case .all: admitted = true
            case .same: admitted = route.namespace == gateway.namespace
            case .selector(let selector): admitted = namespaceLabels[route.namespace].map(selector.matches) ?? false
            }
            guard admitted else {
                return ("NotAllowedByListeners", "listener \(name) allowedRoutes does not admit namespace \(route.namespace)")
            }
        }
        if hostname != nil && RouteHostnames.intersect(listener: hostname, route: route.hostnames).isEmpty {
            return ("NoMatchingListenerHostname", "no hostname in common with listener \(name) (\(hostname!))")
        }
        return nil
    }

    /// `route` as it attaches to this listener of `gateway`, nil when it does not.
    ///
    /// The route kind must be the listener's (`HTTPRoute` on HTTP/HTTPS, `TLSRoute` on a TLS
    /// passthrough listener). A route with `parentRefs` attaches when an entry names the
    /// gateway and, when given, this listener's `sectionName` and `port` (`matchPort: false`
    /// ignores the port), and the listener's `allowedRoutes.namespaces` admits the route's
    /// namespace (`Same`: the gateway's own; `Selector`: by the labels of the route's
    /// `Namespace` manifest in `namespaceLabels` — a namespace without one matches no
    /// selector). A route without `parentRefs` attaches to every listener (a ugate extension:
    /// a folder of bare routes works without a Gateway). Either way the route's hostnames are
    /// narrowed to their intersection with the listener's `hostname`; a route with none in
    /// common does not attach.
    public func attach<R: AttachableRoute>(
        _ route: R, of gateway: GatewayObject, matchPort: Bool = true, namespaceLabels: [String: [String: String]] = [:]
    ) -> R? {
        guard refusal(route, of: gateway, matchPort: matchPort, namespaceLabels: namespaceLabels) == nil else { return nil }
        guard hostname != nil else { return route }
        var narrowed = route
        narrowed.hostnames = RouteHostnames.intersect(listener: hostname, route: route.hostnames)
        return narrowed
    }
}

extension RouteManifests {
    /// The routes attached to `listener` of `gateway` (see `GatewayObject.Listener.attach`),
    /// hostnames narrowed to the listener's.
    public func routes(for gateway: GatewayObject, listener: GatewayObject.Listener, matchPort: Bool = true) -> [HTTPRouteObject] {
        routes.compactMap { listener.attach($0, of: gateway, matchPort: matchPort, namespaceLabels: namespaceLabels) }
    }

    /// The TLSRoutes attached to `listener` of `gateway`.
    public func tlsRoutes(for gateway: GatewayObject, listener: GatewayObject.Listener, matchPort: Bool = true) -> [TLSRouteObject] {
        tlsRoutes.compactMap { listener.attach($0, of: gateway, matchPort: matchPort, namespaceLabels: namespaceLabels) }
    }
}

extension HTTPRouteListenerConfig {
    /// The routes this configured listener serves. Without `gateway`: all of them. With
    /// `gateway: ns/name` (`name` alone: namespace `default`): when the manifests hold that
    /// Gateway with a listener of this listener's `name`, the routes attached to it and to
    /// every other HTTP listener (HTTPS for a `tls` configured listener) of the Gateway on
    /// its port (`servedListeners`) — each narrowed to its listener's hostname, so a route
    /// attached by `sectionName` to a second listener of the port (another hostname) is served
    /// for that hostname; otherwise routes attach by the gateway's name and `sectionName` only
    /// (any namespace, any port).
    public func routes(in manifests: RouteManifests) -> [HTTPRouteObject] {
        guard let (namespace, gatewayName) = gatewayKey else { return manifests.routes }
        if let object = gatewayObject(in: manifests), !servedListeners(of: object).isEmpty {
            return Self.merge(servedListeners(of: object).flatMap { manifests.routes(for: object, listener: $0) })
        }
        let listener = GatewayObject.Listener(name: name, port: port, hostname: nil, allowedNamespaces: .all)
        let object = GatewayObject(namespace: namespace, name: gatewayName, listeners: [listener], file: "")
        return manifests.routes(for: object, listener: listener, matchPort: false)
    }

    /// The TLSRoutes this configured `tls` listener passes through. Without `gateway`: all of
    /// them. With `gateway`, when the manifests hold that Gateway: the routes attached to its
    /// `protocol: TLS` (Passthrough) listeners on the port of the Gateway listener named like
    /// this one (all of its TLS listeners when none is named so); otherwise routes attach by
    /// the gateway's name and `sectionName` = this listener's name. Empty for a plain listener.
    public func tlsRoutes(in manifests: RouteManifests) -> [TLSRouteObject] {
        guard tls != nil else { return [] }
        guard let (namespace, gatewayName) = gatewayKey else { return manifests.tlsRoutes }
        if let object = gatewayObject(in: manifests) {
            let port = object.listeners.first { $0.name == name }?.port
            return object.listeners.filter { $0.proto == .tlsPassthrough && (port == nil || $0.port == port) }.flatMap {
                manifests.tlsRoutes(for: object, listener: $0)
            }
        }
        var listener = GatewayObject.Listener(name: name, port: port, hostname: nil, allowedNamespaces: .all)
        listener.proto = .tlsPassthrough
        let object = GatewayObject(namespace: namespace, name: gatewayName, listeners: [listener], file: "")
        return manifests.tlsRoutes(for: object, listener: listener, matchPort: false)
    }

    /// The listeners of `object` whose HTTPRoutes this configured listener serves: none when
    /// the Gateway has no listener of this listener's `name`; else that one and every other
    /// listener of the Gateway on its port whose protocol is this configured listener's (HTTPS
    /// for a `tls` one, HTTP otherwise).
    func servedListeners(of object: GatewayObject) -> [GatewayObject.Listener] {
        guard let named = object.listeners.first(where: { $0.name == name }) else { return [] }
        let proto: GatewayObject.ListenerProtocol = tls == nil ? .http : .https
        return [named] + object.listeners.filter { $0.name != name && $0.port == named.port && $0.proto == proto }
    }

    /// One entry per route attached to several listeners of a port, its hostnames the union of
    /// its narrowed ones (none — any host — when one of them has none).
    private static func merge(_ routes: [HTTPRouteObject]) -> [HTTPRouteObject] {
        var merged: [HTTPRouteObject] = []
        var index: [String: Int] = [:]
        for route in routes {
            let key = "\(route.namespace)/\(route.name)"
            guard let at = index[key] else {
                index[key] = merged.count
                merged.append(route)
                continue
            }
            if merged[at].hostnames.isEmpty || route.hostnames.isEmpty {
                merged[at].hostnames = []
            } else {
                merged[at].hostnames += route.hostnames.filter { !merged[at].hostnames.contains($0) }
            }
        }
        return merged
    }

    /// `gateway` as (namespace, name).
    var gatewayKey: (String, String)? {
        guard let gateway else { return nil }
        let parts = gateway.split(separator: "/", maxSplits: 1).map(String.init)
        return parts.count == 2 ? (parts[0], parts[1]) : ("default", gateway)
    }

    /// The addresses this listener binds under `manifests`: its Gateway's `spec.addresses`
    /// (each Hostname as `resolve` answers it, `GatewayBindAddresses`) when the manifests hold
    /// that Gateway with addresses, else `host` (or `bind`).
    func bindAddresses(
        in manifests: RouteManifests, bind: String, resolve: (String) -> Result<[String], GatewayBindAddresses.ResolveError>?
    ) -> GatewayBindAddresses {
        guard let gateway = gatewayObject(in: manifests), !gateway.addresses.isEmpty || !gateway.addressHostnames.isEmpty else {
            return GatewayBindAddresses(hosts: [host ?? bind])
        }
        return GatewayBindAddresses.resolve(ips: gateway.addresses, hostnames: gateway.addressHostnames, resolve: resolve)
    }

    /// The `Hostname` addresses of this listener's Gateway in `manifests` (none without one).
    func addressHostnames(in manifests: RouteManifests) -> [String] {
        gatewayObject(in: manifests)?.addressHostnames ?? []
    }

    private func gatewayObject(in manifests: RouteManifests) -> GatewayObject? {
        guard let (namespace, gatewayName) = gatewayKey else { return nil }
        return manifests.gateways.first { $0.namespace == namespace && $0.name == gatewayName }
    }

    /// The listener of this listener's Gateway manifest that has its `name` (nil: no
    /// `gateway`, no such Gateway in the manifests, or no such listener).
    func gatewayListener(in manifests: RouteManifests) -> GatewayObject.Listener? {
        gatewayObject(in: manifests)?.listeners.first { $0.name == name }
    }

    /// This listener's `tls` with the Gateway manifest's certificates added: every HTTPS
    /// listener of the Gateway on the port of the listener named like this one (all of its
    /// HTTPS listeners when none is) contributes its first `certificateRefs` Secret as
    /// `<certificateDir>/<secret>.crt` + `.key` (`<certificateDir>/<namespace>/<secret>.crt` for
    /// a Secret of another namespace that a ReferenceGrant allows), for its `hostname` (exact or wildcard, chosen
    /// by SNI); one without hostname becomes the default certificate unless `defaultCertificate`
    /// is set. Entries of `certificates` win. Nil for a plain listener.
    public func tlsConfig(in manifests: RouteManifests) throws -> HTTPRouteTLSConfig? {
        guard var tls else { return nil }
        guard let object = gatewayObject(in: manifests) else { return tls }
        let port = object.listeners.first { $0.name == name }?.port
        for listener in object.listeners where !listener.certificateRefs.isEmpty && (port == nil || listener.port == port) {
            guard let dir = tls.certificateDir else {
                throw GateError(
                    .config,
                    "httproute listener \(name): Gateway \(object.namespace)/\(object.name) listener \(listener.name) has tls.certificateRefs; set tls.certificateDir to the folder of <secret>.crt/.key files (\(object.file))"
                )
            }
            // `<secret>` of the Gateway's namespace, `<namespace>/<secret>` of another (granted).
            let secret = listener.certificateRefs[0]
            let files = CertificateFiles(cert: "\(dir)/\(secret).crt", key: "\(dir)/\(secret).key")
            // A key with `/` is never an SNI name: the hostless listener's certificate is only the default.
            let host = listener.hostname ?? "secret/\(secret)"
            if tls.certificates[host] == nil { tls.certificates[host] = files }
            if listener.hostname == nil, tls.defaultCertificate == nil { tls.defaultCertificate = host }
        }
        return tls
    }
}
