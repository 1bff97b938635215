import Foundation

/// A route kind a listener takes (Gateway API `RouteGroupKind`, `status.listeners[].supportedKinds`).
public struct RouteGroupKind: Codable, Sendable, Equatable {
    public var group: String
    public var kind: String
}

/// The status of one Gateway listener, as the Gateway API's `status.listeners[]` would hold it
/// (`ListenerStatus`: name, supportedKinds, attachedRoutes, conditions; port and protocol added
/// for reading).
public struct GatewayListenerStatus: Codable, Sendable, Equatable {
    public var name: String
    public var port: Int
    /// `HTTP`, `HTTPS` or `TLS`.
    public var proto: String
    public var supportedKinds: [RouteGroupKind]
    /// Routes attached by `parentRefs` and `allowedRoutes` (and ugate's parentless routes).
    public var attachedRoutes: Int
    /// `Accepted`, `ResolvedRefs`, `Programmed`, `Conflicted`.
    public var conditions: [RouteCondition]

    private enum CodingKeys: String, CodingKey {
        case name, port, proto = "protocol", supportedKinds, attachedRoutes, conditions
    }
}

/// The status of one Gateway: its conditions (`Accepted`, `Programmed`, `ResolvedRefs`,
/// summarising the listeners') and one entry per listener.
public struct GatewayStatus: Codable, Sendable, Equatable {
    public var namespace: String
    public var name: String
    public var file: String
    public var conditions: [RouteCondition]
    public var listeners: [GatewayListenerStatus]
    /// `status.addresses`: the addresses the configured listeners serving this Gateway are
    /// bound to (its `spec.addresses`, Hostnames resolved, or their `host`), once each.
    public var addresses: [GatewayStatusAddress] = []
    /// `spec.infrastructure`'s labels and annotations, shown as given (ugate applies them to
    /// nothing); nil when the Gateway has none.
    public var infrastructure: GatewayObject.Infrastructure?
}

/// One entry of a Gateway's `status.addresses`.
public struct GatewayStatusAddress: Codable, Sendable, Equatable {
    /// `IPAddress` (the only type ugate binds).
    public var type: String
    public var value: String

    public init(type: String = "IPAddress", value: String) {
        self.type = type
        self.value = value
    }
}

/// What the running service (or `ugate httproute status --config`) knows of one configured
/// listener of the `httproute` section: whether its socket is bound, and the state of
/// certificate files.
public struct ConfiguredListenerState: Sendable {
    public enum Binding: Sendable, Equatable {
        /// Offline check: the socket is not bound by the check.
        case notChecked
        /// Bound to this address.
        case bound(String)
        /// Binding failed with this error (retried on every reload tick).
        case failed(String)
    }

    public var config: HTTPRouteListenerConfig
    public var binding: Binding
    /// The IP addresses its sockets are bound to (empty offline or before binding).
    public var addresses: [String] = []
    /// With `.failed`: the address that could not be bound (nil: its `host`).
    public var unboundHost: String?
    /// The Gateway's Hostnames that give nothing to bind (do not resolve, or not to an address
    /// of this node); empty offline.
    var addressProblems: [GatewayBindAddresses.AddressProblem] = []
    /// Whether a certificate from these files is served (`loaded`), and why the current files
    /// do not load (`error`, nil when they do).
    public var certificate: @Sendable (CertificateFiles) -> (loaded: Bool, error: String?)

    public init(
        config: HTTPRouteListenerConfig, binding: Binding, certificate: @escaping @Sendable (CertificateFiles) -> (loaded: Bool, error: String?)
    ) {
        self.config = config
        self.binding = binding
        self.certificate = certificate
    }

    /// The offline view of a configured listener: not bound, certificates checked by loading
    /// their files (as the service would at start), the Hostname addresses of its Gateway in
    /// `manifests` resolved (as the service would bind them).
    public static func offline(_ config: HTTPRouteListenerConfig, manifests: RouteManifests) -> ConfiguredListenerState {
        var state = ConfiguredListenerState(config: config, binding: .notChecked) { files in
            for path in [files.cert, files.key] where !FileManager.default.fileExists(atPath: path) {
                return (false, "\(path): no such file")
            }
            do {
                _ = try HTTPRouteTLS.context(files)
                return (true, nil)
            } catch {
                return (false, "\(files.cert), \(files.key): \(error)")
            }
        }
        state.addressProblems = config.bindAddresses(in: manifests, bind: "", resolve: { GatewayBindAddresses.getaddrinfo($0) }).problems
        return state
    }
}

/// Everything `ugate httproute status` and `/httproute/status` report: the Gateways' listener
/// status and the routes' status.
public struct HTTPRouteStatusReport: Codable, Sendable, Equatable {
    public var gateways: [GatewayStatus]
    public var routes: [RouteStatus]
    /// `XBackendTrafficPolicy` objects (`BackendPolicyStatus`).
    public var policies: [BackendPolicyStatus] = []

    /// ugate's `controllerName` in a policy's status (the Gateway API's domain-prefixed path).
    public static let controllerName = "ugate/httproute"

    /// The status of every Gateway and route of `manifests`. `listeners`: the configured
    /// listeners with what is known of them (nil: not known — no `--config` — so listeners'
    /// `Programmed` is `Unknown`). Every condition gets `observedGeneration` and
    /// `lastTransitionTime` from `history` (the running service's, kept across reloads); without
    /// one (an offline check) the generation is `metadata.generation` or 1 and the time `now`.
    public static func compute(
        _ manifests: RouteManifests, listeners: [ConfiguredListenerState]?, history: StatusHistory? = nil, now: Date = Date()
    ) -> HTTPRouteStatusReport {
        let report = HTTPRouteStatusReport(
            gateways: manifests.gateways.map { GatewayStatus.compute($0, manifests, listeners) },
            routes: RouteStatus.compute(manifests, listeners: listeners?.map(\.config) ?? []),
            policies: BackendPolicyStatus.compute(manifests))
        let history =
            history
            ?? {
                let fresh = StatusHistory()
                fresh.observe(manifests)
                return fresh
            }()
        return history.stamp(report, manifests: manifests, now: now)
    }

    /// Whether every condition is in its good state: no `False` (and `Conflicted` not
    /// `True`); `Unknown` (not checked) counts as good.
    public var healthy: Bool {
        let policyConditions: [RouteCondition] = policies.flatMap { $0.ancestors.flatMap(\.conditions) }
        let conditions =
            gateways.flatMap { $0.conditions + $0.listeners.flatMap(\.conditions) } + routes.flatMap { $0.parents.flatMap(\.conditions) }
            + policyConditions
        return conditions.allSatisfy { $0.type == "Conflicted" ? $0.status != "True" : $0.status != "False" }
    }

    /// The routes' table (`RouteStatus.table`), then one line per Gateway listener, then one
    /// per backend policy and ancestor.
    public var table: String {
        var text = RouteStatus.table(routes)
        if !gateways.isEmpty { text += "\n\n" + GatewayStatus.table(gateways) }
        if !policies.isEmpty { text += "\n\n" + BackendPolicyStatus.table(policies) }
        return text
    }

    /// Pretty-printed JSON (sorted keys): `{"gateways": […], "policies": […], "routes": […]}`.
    public var json: String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        return String(decoding: (try? encoder.encode(self)) ?? Data("{}".utf8), as: UTF8.self)
    }
}

extension GatewayStatus {
    static let group = "gateway.networking.k8s.io"

    /// The status of `gateway`: per listener (Gateway API reasons)
    ///
    /// * `Accepted`: `True`, or `False` / `PortUnavailable` when the configured listener serving
    ///   it cannot bind its socket;
    /// * `ResolvedRefs`: `False` / `RefNotPermitted` for a cross-namespace certificateRef
    ///   without ReferenceGrant, `False` / `InvalidCertificateRef` when the Secret's PEM files
    ///   are missing or do not load, `Unknown` when no configured listener maps the Secret to
    ///   files;
    /// * `Programmed`: `True` when a configured listener of the `httproute` section serves it
    ///   (`gateway` naming this Gateway and `name` this listener or another listener of the
    ///   same protocol on its port; TLS passthrough listeners on its port; bound, with a
    ///   certificate for HTTPS), `False` / `Pending` when none does,
    ///   `False` / `Invalid` when it is not bound or has no certificate, `Unknown` when the
    ///   configured listeners are not known;
    /// * `Conflicted`: `True` / `ProtocolConflict` (HTTP next to HTTPS/TLS on one port) or
    ///   `HostnameConflict` (same hostname on one port), else `False` / `NoConflicts`.
    ///
    /// `attachedRoutes` counts the routes of the listener's kind that attach to it (see
    /// `GatewayObject.Listener.refusal`). The Gateway's own conditions summarise its
    /// listeners'; its `Programmed` is `False` / `AddressNotAssigned`, `AddressNotUsable` or
    /// (its first lookup still running) `Pending` when a `Hostname` address gives nothing to
    /// bind (`GatewayBindAddresses`), naming it.
    static func compute(_ gateway: GatewayObject, _ manifests: RouteManifests, _ configured: [ConfiguredListenerState]?) -> GatewayStatus {
        let own = configured?.filter { state in
            state.config.gatewayKey.map { $0 == (gateway.namespace, gateway.name) } ?? false
        }
        let listeners = gateway.listeners.map { listener($0, of: gateway, manifests, own) }
        func summary(_ type: String, good: String, bad: String) -> RouteCondition {
            let conditions = listeners.map { listener in (listener.name, listener.conditions.first { $0.type == type }!) }
            let failed = conditions.filter { $0.1.status == "False" }
            if !failed.isEmpty {
                let reason = type == "Programmed" ? (failed.contains { $0.1.reason == "Invalid" } ? "Invalid" : "Pending") : bad
                return RouteCondition(
                    type: type, status: type == "Accepted" ? "True" : "False", reason: reason,
                    message: "listeners " + failed.map(\.0).joined(separator: ", ") + ": " + failed.map(\.1.reason).joined(separator: ", "))
            }
            if conditions.contains(where: { $0.1.status == "Unknown" }) {
                return RouteCondition(type: type, status: "Unknown", reason: "Pending", message: "not checked")
            }
            return RouteCondition(type: type, status: "True", reason: good, message: "all listeners")
        }
        var addresses: [GatewayStatusAddress] = []
        for host in own?.flatMap(\.addresses) ?? [] where !addresses.contains(where: { $0.value == host }) {
            addresses.append(GatewayStatusAddress(value: host))
        }
        var programmed = summary("Programmed", good: "Programmed", bad: "Pending")
        var problems: [GatewayBindAddresses.AddressProblem] = []
        for problem in own?.flatMap(\.addressProblems) ?? [] where !problems.contains(problem) { problems.append(problem) }
        if !problems.isEmpty {
            // A requested address that gives nothing to bind: the Gateway API's reasons.
            let reason = ["AddressNotAssigned", "AddressNotUsable"].first { reason in problems.contains { $0.reason == reason } } ?? "Pending"
            let message = problems.map(\.message).joined(separator: "; ")
            programmed = RouteCondition(
                type: "Programmed", status: "False", reason: reason,
                message: programmed.status == "False" ? message + "; " + programmed.message : message)
        }
        return GatewayStatus(
            namespace: gateway.namespace, name: gateway.name, file: gateway.file,
            conditions: [
                summary("Accepted", good: "Accepted", bad: "ListenersNotValid"),
                programmed,
                summary("ResolvedRefs", good: "ResolvedRefs", bad: "ListenersNotResolved"),
            ],
            listeners: listeners, addresses: addresses, infrastructure: gateway.infrastructure)
    }

    private static func listener(
        _ listener: GatewayObject.Listener, of gateway: GatewayObject, _ manifests: RouteManifests, _ configured: [ConfiguredListenerState]?
    ) -> GatewayListenerStatus {
        func condition(_ type: String, _ status: String, _ reason: String, _ message: String) -> RouteCondition {
            RouteCondition(type: type, status: status, reason: reason, message: message)
        }
        let attached =
            listener.proto == .tlsPassthrough
            ? manifests.tlsRoutes.filter { listener.refusal($0, of: gateway, namespaceLabels: manifests.namespaceLabels) == nil }.count
            : manifests.routes.filter { listener.refusal($0, of: gateway, namespaceLabels: manifests.namespaceLabels) == nil }.count

        // Which configured listener serves it: by name (HTTP, HTTPS) or as another listener of
        // the port of its named one (`servedListeners`), or a TLS listener whose same-named
        // Gateway listener is on this port (TLS passthrough; HTTPS certificates).
        let sameName =
            configured?.first { $0.config.name == listener.name }
            ?? configured?.first { state in state.config.servedListeners(of: gateway).contains { $0.name == listener.name } }
        let onPort = configured?.first { state in
            guard state.config.tls != nil else { return false }
            let named = gateway.listeners.first { $0.name == state.config.name }
            return named == nil || named!.port == listener.port
        }
        let serving = listener.proto == .tlsPassthrough ? onPort : sameName

        // Accepted.
        var accepted = condition("Accepted", "True", "Accepted", "listener accepted")
        if let serving, case .failed(let error) = serving.binding {
            accepted = condition(
                "Accepted", "False", "PortUnavailable",
                "configured listener \(serving.config.name) cannot bind \(serving.unboundHost ?? serving.config.host ?? "*"):\(serving.config.port): \(error)")
        }

        // ResolvedRefs, and whether a certificate is served (HTTPS).
        var resolved = condition("ResolvedRefs", "True", "ResolvedRefs", "all references resolved")
        var certificate: (served: Bool, why: String) = (true, "")
        if listener.proto == .https {
            let carrier = sameName?.config.tls != nil ? sameName : onPort
            if !listener.refusedCertificateRefs.isEmpty {
                resolved = condition("ResolvedRefs", "False", "RefNotPermitted", listener.refusedCertificateRefs.joined(separator: "; "))
            }
            if let secret = listener.certificateRefs.first {
                if let carrier, let dir = carrier.config.tls?.certificateDir {
                    let files = CertificateFiles(cert: "\(dir)/\(secret).crt", key: "\(dir)/\(secret).key")
                    let state = carrier.certificate(files)
                    if let error = state.error, listener.refusedCertificateRefs.isEmpty {
                        resolved = condition("ResolvedRefs", "False", "InvalidCertificateRef", "certificateRef \(secret): \(error)")
                    }
                    certificate = (state.loaded, state.error.map { "certificateRef \(secret) does not load: \($0)" } ?? "certificate not loaded")
                } else if let carrier {
                    resolved = condition(
                        "ResolvedRefs", "False", "InvalidCertificateRef",
                        "certificateRef \(secret): configured listener \(carrier.config.name) has no tls.certificateDir holding <secret>.crt/.key")
                    certificate = (false, "no certificateDir")
                } else if let configured, !configured.isEmpty {
                    resolved = condition(
                        "ResolvedRefs", "False", "InvalidCertificateRef",
                        "certificateRef \(secret): no configured tls listener on its port has a certificateDir to hold it")
                    certificate = (false, "no configured tls listener serves its certificate")
                } else {
                    resolved = condition(
                        "ResolvedRefs", "Unknown", "Pending", "not checked: the certificateDir comes from a configured listener of this Gateway")
                    certificate = (false, "no configured tls listener serves its certificate")
                }
            } else {
                certificate = (false, "no permitted certificateRef")
            }
        }

        // Programmed.
        let programmed: RouteCondition
        if configured == nil {
            programmed = condition("Programmed", "Unknown", "Pending", "not checked: no httproute listeners given (--config)")
        } else if let serving {
            let plain = serving.config.tls == nil
            if listener.proto == .http ? !plain : plain {
                programmed = condition(
                    "Programmed", "False", "Invalid",
                    "configured listener \(serving.config.name) is \(plain ? "plain HTTP" : "TLS"), the listener is \(listener.proto.rawValue)")
            } else if case .failed = serving.binding {
                programmed = condition("Programmed", "False", "Invalid", "configured listener \(serving.config.name) is not bound")
            } else if !certificate.served {
                programmed = condition("Programmed", "False", "Invalid", certificate.why)
            } else if case .bound(let address) = serving.binding {
                programmed = condition("Programmed", "True", "Programmed", "served by configured listener \(serving.config.name) on \(address)")
            } else {
                programmed = condition(
                    "Programmed", "True", "Programmed",
                    "served by configured listener \(serving.config.name) (port \(serving.config.port); not bound by this check)")
            }
        } else if listener.proto == .https, let carrier = onPort {
            programmed = condition(
                "Programmed", "False", "Pending",
                "no configured listener named \(listener.name): its certificate is served on \(carrier.config.name), HTTPRoutes naming it by sectionName are not")
        } else {
            programmed = condition(
                "Programmed", "False", "Pending",
                "no listener of the httproute config serves it (one with gateway \(gateway.namespace)/\(gateway.name) and name \(listener.name))")
        }

        // Conflicted: listeners of this Gateway on the same port.
        let others = gateway.listeners.filter { $0.port == listener.port && $0.name != listener.name }
        let http = listener.proto == .http
        var conflicted = condition("Conflicted", "False", "NoConflicts", "no conflicts")
        if let other = others.first(where: { ($0.proto == .http) != http }) {
            conflicted = condition(
                "Conflicted", "True", "ProtocolConflict", "listener \(other.name) on port \(listener.port) is \(other.proto.rawValue), this one \(listener.proto.rawValue)")
        } else if let other = others.first(where: { $0.hostname == listener.hostname }) {
            conflicted = condition(
                "Conflicted", "True", "HostnameConflict", "listener \(other.name) on port \(listener.port) has the same hostname (\(listener.hostname ?? "none"))")
        }

        return GatewayListenerStatus(
            name: listener.name, port: listener.port, proto: listener.proto.rawValue,
            supportedKinds: [RouteGroupKind(group: group, kind: listener.routeKind)], attachedRoutes: attached,
            conditions: [accepted, resolved, programmed, conflicted])
    }

    /// A fixed-width table: one line per Gateway listener.
    public static func table(_ statuses: [GatewayStatus]) -> String {
        var rows = [["GATEWAY", "LISTENER", "PORT", "PROTOCOL", "ROUTES", "ACCEPTED", "PROGRAMMED", "RESOLVEDREFS", "CONFLICTED", "MESSAGE"]]
        for status in statuses {
            if let row = gatewayRow(status) { rows.append(row) }
            for listener in status.listeners {
                func cell(_ type: String) -> String { Self.cell(listener.conditions, type) }
                let bad = listener.conditions.filter { $0.type == "Conflicted" ? $0.status == "True" : $0.status != "True" }
                let message = (bad.isEmpty ? listener.conditions.filter { $0.type == "Programmed" } : bad).map(\.message).joined(separator: "; ")
                rows.append([
                    "\(status.namespace)/\(status.name)", listener.name, "\(listener.port)", listener.proto, "\(listener.attachedRoutes)",
                    cell("Accepted"), cell("Programmed"), cell("ResolvedRefs"), cell("Conflicted"), message,
                ])
            }
        }
        return RouteStatus.columns(rows)
    }

    /// A table cell: the status of condition `type` in `conditions`, with its reason when it
    /// is not the good one (`-` when absent).
    private static func cell(_ conditions: [RouteCondition], _ type: String) -> String {
        guard let c = conditions.first(where: { $0.type == type }) else { return "-" }
        return c.status == (type == "Conflicted" ? "False" : "True") ? c.status : "\(c.status) (\(c.reason))"
    }

    /// A line for the Gateway itself (listener `-`) when it has something of its own to say:
    /// requested addresses that give nothing to bind, or `infrastructure` labels and annotations.
    private static func gatewayRow(_ status: GatewayStatus) -> [String]? {
        var message: [String] = []
        let programmed = status.conditions.first { $0.type == "Programmed" }
        let addressProblem = programmed.map { $0.reason == "AddressNotAssigned" || $0.reason == "AddressNotUsable" } ?? false
        if addressProblem, let programmed { message.append(programmed.message) }
        if let infrastructure = status.infrastructure {
            func pairs(_ map: [String: String]) -> String { map.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ",") }
            if !infrastructure.labels.isEmpty { message.append("infrastructure labels " + pairs(infrastructure.labels)) }
            if !infrastructure.annotations.isEmpty { message.append("infrastructure annotations " + pairs(infrastructure.annotations)) }
        }
        guard !message.isEmpty else { return nil }
        func cell(_ type: String) -> String { Self.cell(status.conditions, type) }
        return [
            "\(status.namespace)/\(status.name)", "-", "-", "-", "-", cell("Accepted"), cell("Programmed"), cell("ResolvedRefs"), "-",
            message.joined(separator: "; "),
        ]
    }
}
