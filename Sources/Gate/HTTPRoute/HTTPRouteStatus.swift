import Foundation
import Synchronization

/// One Gateway API condition (`Accepted`, `ResolvedRefs`, … of a route for one parent, of a
/// Gateway or of a listener), in the shape of Kubernetes' `metav1.Condition`.
public struct RouteCondition: Codable, Sendable, Equatable {
    public var type: String
    /// `True`, `False` or `Unknown`.
    public var status: String
    public var reason: String
    public var message: String
    /// When `status` last changed (RFC 3339), kept across reloads by `StatusHistory`.
    public var lastTransitionTime: String? = nil
    /// The object's generation the condition was computed from (`StatusHistory`).
    public var observedGeneration: Int? = nil
}

/// The conditions of a route for one `parentRefs` entry (`namespace/gateway[/section][:port]`,
/// or `*` for a route without parentRefs).
public struct RouteParentStatus: Codable, Sendable, Equatable {
    public var parent: String
    public var conditions: [RouteCondition]
}

/// The status of one HTTPRoute or TLSRoute, as the Gateway API's `status.parents` would hold it.
public struct RouteStatus: Codable, Sendable, Equatable {
    public var kind: String
    public var namespace: String
    public var name: String
    public var file: String
    public var parents: [RouteParentStatus]

    /// Computes the status of every route of `manifests` (they are not written back: ugate
    /// has no API server).
    ///
    /// Per parentRef, `Accepted` is `True` when the route attaches to at least one listener of
    /// the named Gateway (its `sectionName`/`port` when given); otherwise `False` with the
    /// Gateway API reason: `NoMatchingParent` (no such Gateway in the manifests or no such
    /// listener), `NotAllowedByListeners` (`allowedRoutes` namespaces or kinds, or a listener of
    /// the other protocol), `NoMatchingListenerHostname`. A Gateway missing from the manifests
    /// but named by a configured listener's `gateway` (`listeners`) accepts by name and
    /// `sectionName` (as the gateway serves it). `ResolvedRefs` is `False` /
    /// `RefNotPermitted` when a cross-namespace backendRef has no ReferenceGrant (those
    /// backends are not used). A route without parentRefs gets one entry `*` (it attaches to
    /// every configured listener, a ugate extension). Gateways and their listeners:
    /// `GatewayStatus` (a refused cross-namespace certificateRef is its listener's
    /// `ResolvedRefs: False / RefNotPermitted`).
    public static func compute(_ manifests: RouteManifests, listeners: [HTTPRouteListenerConfig] = []) -> [RouteStatus] {
        manifests.routes.map { status($0, file: $0.file, refused: $0.refusedRefs, manifests, listeners) }
            + manifests.tlsRoutes.map { status($0, file: $0.file, refused: $0.refusedRefs, manifests, listeners) }
    }

    private static func status<R: AttachableRoute>(
        _ route: R, file: String, refused: [String], _ manifests: RouteManifests, _ listeners: [HTTPRouteListenerConfig]
    ) -> RouteStatus {
        let resolved =
            refused.isEmpty
            ? RouteCondition(type: "ResolvedRefs", status: "True", reason: "ResolvedRefs", message: "all references resolved")
            : RouteCondition(type: "ResolvedRefs", status: "False", reason: "RefNotPermitted", message: refused.joined(separator: "; "))
        var parents: [RouteParentStatus] = []
        if route.parents.isEmpty {
            let accepted = RouteCondition(
                type: "Accepted", status: "True", reason: "Accepted", message: "no parentRefs: attaches to every configured listener")
            parents.append(RouteParentStatus(parent: "*", conditions: [accepted, resolved]))
        }
        for parent in route.parents {
            var label = "\(parent.namespace)/\(parent.name)" + (parent.sectionName.map { "/\($0)" } ?? "")
            if let port = parent.port { label += ":\(port)" }
            let accepted = acceptance(route, parent, manifests, listeners)
            parents.append(RouteParentStatus(parent: label, conditions: [accepted, resolved]))
        }
        return RouteStatus(kind: R.kind, namespace: route.namespace, name: route.name, file: file, parents: parents)
    }

    private static func acceptance<R: AttachableRoute>(
        _ route: R, _ parent: ParentRef, _ manifests: RouteManifests, _ listeners: [HTTPRouteListenerConfig]
    ) -> RouteCondition {
        func refused(_ reason: String, _ message: String) -> RouteCondition {
            RouteCondition(type: "Accepted", status: "False", reason: reason, message: message)
        }
        guard let gateway = manifests.gateways.first(where: { $0.namespace == parent.namespace && $0.name == parent.name }) else {
            let configured = listeners.filter { listener in
                guard let key = listener.gateway else { return false }
                let named = key.contains("/") ? key == "\(parent.namespace)/\(parent.name)" : parent.namespace == "default" && key == parent.name
                return named && (parent.sectionName ?? listener.name) == listener.name
            }
            if let listener = configured.first {
                return RouteCondition(
                    type: "Accepted", status: "True", reason: "Accepted",
                    message: "Gateway not in the manifests; attached by name to configured listener \(listener.name)")
            }
            return refused("NoMatchingParent", "Gateway \(parent.namespace)/\(parent.name) is not in the manifests")
        }
        let candidates = gateway.listeners.filter {
            (parent.sectionName ?? $0.name) == $0.name && (parent.port ?? $0.port) == $0.port
        }
        guard !candidates.isEmpty else {
            return refused("NoMatchingParent", "Gateway \(gateway.namespace)/\(gateway.name) has no listener matching sectionName/port")
        }
        var reasons: [(reason: String, message: String)] = []
        for listener in candidates {
            // Only this parentRef counts: the route as if it named just this parent.
            guard let reason = listener.refusal(route, of: gateway, namespaceLabels: manifests.namespaceLabels) else {
                return RouteCondition(type: "Accepted", status: "True", reason: "Accepted", message: "attached to listener \(listener.name)")
            }
            reasons.append(reason)
        }
        let order = ["NotAllowedByListeners", "NoMatchingListenerHostname", "NoMatchingParent"]
        let first = reasons.min { (order.firstIndex(of: $0.reason) ?? 9) < (order.firstIndex(of: $1.reason) ?? 9) }!
        return refused(first.reason, reasons.map(\.message).joined(separator: "; "))
    }

    /// A fixed-width table: one line per route and parent.
    public static func table(_ statuses: [RouteStatus]) -> String {
        var rows = [["KIND", "ROUTE", "PARENT", "ACCEPTED", "RESOLVEDREFS", "MESSAGE"]]
        for status in statuses {
            for parent in status.parents {
                let accepted = parent.conditions.first { $0.type == "Accepted" }
                let resolved = parent.conditions.first { $0.type == "ResolvedRefs" }
                let messages = parent.conditions.filter { $0.status == "False" }.map(\.message)
                rows.append([
                    status.kind, "\(status.namespace)/\(status.name)", parent.parent,
                    accepted.map { $0.status == "True" ? "True" : "False (\($0.reason))" } ?? "-",
                    resolved.map { $0.status == "True" ? "True" : "False (\($0.reason))" } ?? "-",
                    messages.isEmpty ? "-" : messages.joined(separator: "; "),
                ])
            }
        }
        return columns(rows)
    }

    /// Rows as fixed-width columns (two spaces apart), the last column unpadded.
    static func columns(_ rows: [[String]]) -> String {
        let count = rows.first?.count ?? 0
        let widths = (0..<count).map { column in rows.map { $0[column].count }.max() ?? 0 }
        return rows.map { row in
            (0..<count - 1).map { row[$0].padding(toLength: widths[$0], withPad: " ", startingAt: 0) }.joined(separator: "  ") + "  " + row[count - 1]
        }.joined(separator: "\n")
    }
}

/// The manifests in force, shared between the reloader and `HTTPRouteService.status()`.
final class RouteManifestsBox: Sendable {
    private let value: Mutex<RouteManifests>
    init(_ manifests: RouteManifests) { value = Mutex(manifests) }
    var manifests: RouteManifests {
        get { value.withLock { $0 } }
        set { value.withLock { $0 = newValue } }
    }
}

extension HTTPRouteService {
    /// Where the admin route finds the service once it runs (the admin server starts first).
    public final class Slot: Sendable {
        private let value = Mutex<HTTPRouteService?>(nil)
        public init() {}
        /// The running service (nil: none, or not started yet).
        public var service: HTTPRouteService? {
            get { value.withLock { $0 } }
            set { value.withLock { $0 = newValue } }
        }
    }

    /// The admin route `/httproute/status`: the Gateways' and routes' status as JSON
    /// (`HTTPRouteStatusReport`; `?format=table` for the tables of `ugate httproute status`);
    /// 404 while `slot` holds no service (no `httproute` section, or not started yet).
    public static func adminRoute(_ slot: Slot) -> AdminServer.Route {
        AdminServer.Route(prefix: "/httproute/status") { request in
            guard let service = slot.service else { return .text(404, "no httproute section in this node's config") }
            let report = service.status()
            if request.query?.contains("format=table") == true { return .text(200, report.table) }
            return AdminResponse(status: 200, headers: [("Content-Type", "application/json")], body: Array(report.json.utf8))
        }
    }
}
