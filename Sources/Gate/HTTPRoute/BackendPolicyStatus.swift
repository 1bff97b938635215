/// The status of one `XBackendTrafficPolicy`: its `Accepted` condition with the reasons of
/// the Gateway API's policy attachment (GEP-713). ugate reports it once per policy (it has one
/// data plane, no `status.ancestors` per Gateway to write back to):
///
/// * `True` / `Accepted`: the policy's budget is in force for its targeted Services (the
///   message names any target another policy holds);
/// * `False` / `Conflicted`: every targeted Service is held by an older policy (oldest
///   `creationTimestamp`, then `namespace/name`, wins — `RouteManifests.backendPolicyInForce`);
/// * `False` / `TargetNotFound`: no HTTPRoute `backendRefs` names a targeted Service;
/// * a policy without `retryConstraint` is `True` / `Accepted` (it asks for nothing).
public struct BackendPolicyStatus: Codable, Sendable, Equatable {
    public var kind: String
    public var namespace: String
    public var name: String
    /// The targeted Services (`namespace/name`).
    public var targets: [String]
    public var conditions: [RouteCondition]

    static func compute(_ manifests: RouteManifests) -> [BackendPolicyStatus] {
        let inForce = manifests.backendPolicyInForce()
        var used = Set<String>()
        for route in manifests.routes {
            for rule in route.rules {
                for backend in rule.backends { used.insert(backend.serviceKey) }
            }
        }
        return manifests.backendPolicies.map { policy in
            let targets = policy.targets
            let condition: RouteCondition
            let held = targets.filter { inForce[$0].map { $0.key != policy.key } ?? false }
            if policy.retryConstraint == nil {
                condition = RouteCondition(type: "Accepted", status: "True", reason: "Accepted", message: "no retryConstraint: nothing to apply")
            } else if !targets.contains(where: used.contains) {
                condition = RouteCondition(
                    type: "Accepted", status: "False", reason: "TargetNotFound",
                    message: "no HTTPRoute backendRef names \(targets.joined(separator: ", "))")
            } else if held.count == targets.count {
                condition = RouteCondition(
                    type: "Accepted", status: "False", reason: "Conflicted", message: conflicts(held, inForce))
            } else {
                condition = RouteCondition(
                    type: "Accepted", status: "True", reason: "Accepted",
                    message: held.isEmpty ? "retry budget in force" : "retry budget in force; " + conflicts(held, inForce))
            }
            return BackendPolicyStatus(kind: policy.kind, namespace: policy.namespace, name: policy.name, targets: targets, conditions: [condition])
        }
    }

    private static func conflicts(_ held: [String], _ inForce: [String: BackendTrafficPolicyObject]) -> String {
        held.map { "\($0) is held by the older \(inForce[$0]!.kind) \(inForce[$0]!.key)" }.joined(separator: "; ")
    }

    /// One line per policy: kind, name, targets, `Accepted`, message.
    static func table(_ statuses: [BackendPolicyStatus]) -> String {
        var rows = [["KIND", "POLICY", "TARGETS", "ACCEPTED", "MESSAGE"]]
        for status in statuses {
            let accepted = status.conditions.first { $0.type == "Accepted" }
            rows.append([
                status.kind, "\(status.namespace)/\(status.name)", status.targets.joined(separator: ","),
                accepted.map { $0.status == "True" ? "True" : "False (\($0.reason))" } ?? "-", accepted?.message ?? "-",
            ])
        }
        return RouteStatus.columns(rows)
    }
}
