/// The status of one `XBackendTrafficPolicy` as GEP-713's `PolicyAncestorStatus` list: one
/// entry per ancestor — each Gateway that an HTTPRoute sending to a targeted Service names in
/// its `parentRefs` (`ancestorRef`: a Gateway API `ParentReference`, per Gateway: the budget
/// is a Service's whichever listener a request came through, so no `sectionName`), or `*` for
/// ugate's routes without parentRefs (they attach to every configured listener) — with
/// `controllerName` and its `Accepted` condition and the reasons of the Gateway API's policy
/// attachment, judged on the targets reached through that ancestor:
///
/// * `True` / `Accepted`: the policy's budget is in force for the targeted Services reached
///   there (the message names any of them another policy holds);
/// * `False` / `Conflicted`: every targeted Service reached there is held by an older policy
///   (oldest `creationTimestamp`, then `namespace/name`, wins —
///   `RouteManifests.backendPolicyInForce`);
/// * a policy without `retryConstraint` is `True` / `Accepted` (it asks for nothing).
///
/// A policy no HTTPRoute `backendRefs` reaches has no ancestor: it gets one entry `-` with
/// `False` / `TargetNotFound`, so the status still says why it does nothing.
public struct BackendPolicyStatus: Codable, Sendable, Equatable {
    public var kind: String
    public var namespace: String
    public var name: String
    /// The targeted Services (`namespace/name`).
    public var targets: [String]
    public var ancestors: [PolicyAncestorStatus]

    static func compute(_ manifests: RouteManifests) -> [BackendPolicyStatus] {
        let inForce = manifests.backendPolicyInForce()
        // Per Service, the ancestors its routes reach it through (nil: routes without
        // parentRefs), in the manifests' order.
        var reachedThrough: [String: [AncestorRef?]] = [:]
        for route in manifests.routes {
            let ancestors: [AncestorRef?] = route.parents.isEmpty ? [nil] : route.parents.map { AncestorRef(namespace: $0.namespace, name: $0.name) }
            for rule in route.rules {
                for backend in rule.backends {
                    for ancestor in ancestors where !(reachedThrough[backend.serviceKey]?.contains(ancestor) ?? false) {
                        reachedThrough[backend.serviceKey, default: []].append(ancestor)
                    }
                }
            }
        }
        return manifests.backendPolicies.map { policy in
            let targets = policy.targets
            var ancestors: [AncestorRef?] = []
            for target in targets {
                for ancestor in reachedThrough[target] ?? [] where !ancestors.contains(ancestor) { ancestors.append(ancestor) }
            }
            let statuses: [PolicyAncestorStatus]
            if ancestors.isEmpty {
                let condition = RouteCondition(
                    type: "Accepted", status: "False", reason: "TargetNotFound",
                    message: "no HTTPRoute backendRef names \(targets.joined(separator: ", "))")
                statuses = [PolicyAncestorStatus(ancestor: "-", ancestorRef: nil, conditions: [condition])]
            } else {
                statuses = ancestors.map { ancestor in
                    let reached = targets.filter { reachedThrough[$0]?.contains(ancestor) ?? false }
                    return PolicyAncestorStatus(
                        ancestor: ancestor.map { "Gateway \($0.namespace)/\($0.name)" } ?? "*", ancestorRef: ancestor,
                        conditions: [accepted(policy, reached: reached, inForce)])
                }
            }
            return BackendPolicyStatus(kind: policy.kind, namespace: policy.namespace, name: policy.name, targets: targets, ancestors: statuses)
        }
    }

    /// `Accepted` of `policy` at an ancestor through which its targets `reached` are used.
    private static func accepted(
        _ policy: BackendTrafficPolicyObject, reached: [String], _ inForce: [String: BackendTrafficPolicyObject]
    ) -> RouteCondition {
        guard policy.retryConstraint != nil else {
            return RouteCondition(type: "Accepted", status: "True", reason: "Accepted", message: "no retryConstraint: nothing to apply")
        }
        let held = reached.filter { inForce[$0].map { $0.key != policy.key } ?? false }
        if held.count == reached.count {
            return RouteCondition(type: "Accepted", status: "False", reason: "Conflicted", message: conflicts(held, inForce))
        }
        return RouteCondition(
            type: "Accepted", status: "True", reason: "Accepted",
            message: held.isEmpty ? "retry budget in force" : "retry budget in force; " + conflicts(held, inForce))
    }

    private static func conflicts(_ held: [String], _ inForce: [String: BackendTrafficPolicyObject]) -> String {
        held.map { "\($0) is held by the older \(inForce[$0]!.kind) \(inForce[$0]!.key)" }.joined(separator: "; ")
    }

    /// One line per policy and ancestor: kind, name, ancestor, targets, `Accepted`, message.
    static func table(_ statuses: [BackendPolicyStatus]) -> String {
        var rows = [["KIND", "POLICY", "ANCESTOR", "TARGETS", "ACCEPTED", "MESSAGE"]]
        for status in statuses {
            for ancestor in status.ancestors {
                let accepted = ancestor.conditions.first { $0.type == "Accepted" }
                rows.append([
                    status.kind, "\(status.namespace)/\(status.name)", ancestor.ancestor, status.targets.joined(separator: ","),
                    accepted.map { $0.status == "True" ? "True" : "False (\($0.reason))" } ?? "-", accepted?.message ?? "-",
                ])
            }
        }
        return RouteStatus.columns(rows)
    }
}

/// The conditions of a policy for one ancestor (GEP-713 `PolicyAncestorStatus`): `ancestorRef`
/// the Gateway, `controllerName` ugate's, and `ancestor` the same as text for the table and
/// logs (`Gateway namespace/name`), `*` for routes without parentRefs and `-` when no route
/// reaches the policy's targets (both without `ancestorRef`: there is no Gateway to name).
public struct PolicyAncestorStatus: Codable, Sendable, Equatable {
    public var ancestor: String
    public var ancestorRef: AncestorRef?
    public var controllerName = HTTPRouteStatusReport.controllerName
    public var conditions: [RouteCondition]
}

/// A Gateway as a policy's ancestor, in the shape of the Gateway API's `ParentReference`
/// (`group`, `kind`, `namespace`, `name`).
public struct AncestorRef: Codable, Sendable, Equatable {
    public var group = GatewayStatus.group
    public var kind = "Gateway"
    public var namespace: String
    public var name: String
}
