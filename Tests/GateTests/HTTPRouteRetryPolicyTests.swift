import Foundation
import Synchronization
import XCTest

@testable import Gate

/// GEP-3388 retry budgets: `XBackendTrafficPolicy` (gateway.networking.x-k8s.io/v1alpha1)
/// `retryConstraint` loaded with the API's validation (errors naming file, object and field;
/// unknown fields refused), reported in the status (`Accepted`, `Conflicted`,
/// `TargetNotFound`), and used by the gateway instead of the route's default budget: shared by
/// every route to the targeted Service, and a refused retry answered 503.
extension HTTPRouteRetryTests {
    /// A policy manifest (file `policy.yaml` unless named) with `spec` lines under `spec:`.
    func writePolicy(_ name: String, _ spec: [String], kind: String = "XBackendTrafficPolicy", file: String = "policy.yaml", extra: String = "") throws {
        let lines = ["apiVersion: gateway.networking.x-k8s.io/v1alpha1", "kind: \(kind)", "metadata: {name: \(name), namespace: shop\(extra)}", "spec:"]
            + spec.map { "  " + $0 }
        try (lines.joined(separator: "\n") + "\n").write(toFile: "\(dir)/\(file)", atomically: true, encoding: .utf8)
    }

    // MARK: - Loader

    /// Every field, and the API's defaults for what a policy leaves out; the constraint reaches
    /// the backends of the targeted Service only; `BackendTrafficPolicy` is the same kind.
    func testPolicyLoadsWithTheAPIDefaults() throws {
        try writeRoute("r.yaml", "shop", "r", rules: ["- backendRefs: [{name: cart, port: 80}, {name: other, port: 80}]"])
        try writePolicy(
            "budget",
            [
                "targetRefs: [{group: \"\", kind: Service, name: cart}]",
                "retryConstraint: {budget: {percent: 35, interval: 1m}, minRetryRate: {count: 4, interval: 500ms}}",
            ])
        var loaded = try HTTPRouteLoader().load(directory: dir)
        XCTAssertEqual(loaded.backendPolicies.count, 1)
        let backends = loaded.routes[0].rules[0].backends
        XCTAssertEqual(backends[0].retryConstraint, RetryConstraint(percent: 35, interval: 60, minRetryCount: 4, minRetryInterval: 0.5))
        XCTAssertNil(backends[1].retryConstraint)
        try writePolicy("budget", ["targetRefs: [{group: \"\", kind: Service, name: cart}]", "retryConstraint: {}"], kind: "BackendTrafficPolicy")
        loaded = try HTTPRouteLoader().load(directory: dir)
        XCTAssertEqual(loaded.routes[0].rules[0].backends[0].retryConstraint, RetryConstraint(percent: 20, interval: 10, minRetryCount: 10, minRetryInterval: 1))
        try writePolicy("budget", ["targetRefs: [{group: \"\", kind: Service, name: cart}]", "retryConstraint: {budget: {percent: 0}, minRetryRate: {count: 2}}"])
        loaded = try HTTPRouteLoader().load(directory: dir)
        XCTAssertEqual(loaded.routes[0].rules[0].backends[0].retryConstraint, RetryConstraint(percent: 0, interval: 10, minRetryCount: 2, minRetryInterval: 1))
        // Without retryConstraint the policy asks for nothing.
        try writePolicy("budget", ["targetRefs: [{group: \"\", kind: Service, name: cart}]"])
        XCTAssertNil(try HTTPRouteLoader().load(directory: dir).routes[0].rules[0].backends[0].retryConstraint)
    }

    /// The API's validation ranges and the strict field checks, each error naming the file, the
    /// object and the field.
    func testInvalidPoliciesNameFileObjectAndField() throws {
        let target = "targetRefs: [{group: \"\", kind: Service, name: cart}]"
        let object = "\(dir)/policy.yaml: XBackendTrafficPolicy shop/budget: "
        let cases: [([String], String)] = [
            ([target, "retryConstraint: {budget: {percent: 101}}"], "spec.retryConstraint.budget.percent: percent 101 outside 0…100"),
            ([target, "retryConstraint: {budget: {percent: -1}}"], "spec.retryConstraint.budget.percent: percent -1 outside 0…100"),
            ([target, "retryConstraint: {budget: {interval: 500ms}}"], "spec.retryConstraint.budget.interval: interval 0.5 s: it cannot be greater than one hour or less than one second"),
            ([target, "retryConstraint: {budget: {interval: 2h}}"], "spec.retryConstraint.budget.interval: interval 7200.0 s: it cannot be greater than one hour or less than one second"),
            ([target, "retryConstraint: {budget: {interval: soon}}"], "spec.retryConstraint.budget.interval: bad duration \"soon\""),
            ([target, "retryConstraint: {minRetryRate: {count: 0}}"], "spec.retryConstraint.minRetryRate.count: count 0 outside 1…1000000"),
            ([target, "retryConstraint: {minRetryRate: {count: 1000001}}"], "spec.retryConstraint.minRetryRate.count: count 1000001 outside 1…1000000"),
            ([target, "retryConstraint: {minRetryRate: {interval: 0s}}"], "spec.retryConstraint.minRetryRate.interval: interval 0.0 s: it must be above 0 and at most one hour"),
            ([target, "retryConstraint: {minRetryRate: {interval: 61m}}"], "spec.retryConstraint.minRetryRate.interval: interval 3660.0 s: it must be above 0 and at most one hour"),
            ([target, "retryConstraint: {budget: {percent: many}}"], "spec.retryConstraint.budget.percent: expected an integer, got many"),
            (["retryConstraint: {}"], "spec.targetRefs: required field missing"),
            (["targetRefs: []"], "spec.targetRefs: 0 targetRefs (1…16 are allowed)"),
            (
                ["targetRefs: [" + (0..<17).map { "{group: \"\", kind: Service, name: s\($0)}" }.joined(separator: ", ") + "]"],
                "spec.targetRefs: 17 targetRefs (1…16 are allowed)"
            ),
            (["targetRefs: [{group: \"\", kind: Service, name: cart}, {group: \"\", kind: Service, name: cart}]"], "spec.targetRefs[1].name: Service cart is targeted twice"),
            (["targetRefs: [{kind: Service, name: cart}]"], "spec.targetRefs[0].group: required field missing"),
            (["targetRefs: [{group: apps, kind: Deployment, name: cart}]"], "spec.targetRefs[0].group: unsupported: target apps/Deployment (a Service of the core group \"\" is)"),
            (["targetRefs: [{group: \"\", kind: ServiceImport, name: cart}]"], "spec.targetRefs[0].kind: unsupported: target ServiceImport (a Service of the core group \"\" is)"),
            // Unknown and unimplemented fields are reported, not ignored.
            ([target, "sessionPersistence: {sessionName: s}"], "spec.sessionPersistence: unsupported: field not implemented by this gateway"),
            ([target, "retryConstraint: {budget: {percent: 20, window: 5s}}"], "spec.retryConstraint.budget.window: unsupported: field not implemented by this gateway"),
            ([target, "retryConstraint: {retryOn: [5xx]}"], "spec.retryConstraint.retryOn: unsupported: field not implemented by this gateway"),
            (["targetRefs: [{group: \"\", kind: Service, name: cart, sectionName: http}]"], "spec.targetRefs[0].sectionName: unsupported: field not implemented by this gateway"),
            ([target, "retryConstraint: {budgetPercent: 20}"], "spec.retryConstraint.budgetPercent: unsupported: budgetPercent is the pre-v1.3 field; use budget.percent and budget.interval"),
        ]
        for (spec, expected) in cases {
            try writePolicy("budget", spec)
            XCTAssertThrowsError(try HTTPRouteLoader().load(directory: dir), expected) { error in
                XCTAssertEqual("\(error)", object + expected)
            }
        }
        // The wrong API group for the kind, and a second policy of the same name.
        try writePolicy("budget", [target])
        var text = try String(contentsOfFile: "\(dir)/policy.yaml", encoding: .utf8)
        try text.replacingOccurrences(of: "gateway.networking.x-k8s.io/v1alpha1", with: "gateway.networking.k8s.io/v1")
            .write(toFile: "\(dir)/policy.yaml", atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try HTTPRouteLoader().load(directory: dir)) { error in
            XCTAssertEqual(
                "\(error)", object + "apiVersion: unsupported: apiVersion gateway.networking.k8s.io/v1 for XBackendTrafficPolicy (gateway.networking.x-k8s.io/v1alpha1)")
        }
        try writePolicy("budget", [target])
        text = try String(contentsOfFile: "\(dir)/policy.yaml", encoding: .utf8)
        try (text + "---\n" + text).write(toFile: "\(dir)/policy.yaml", atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try HTTPRouteLoader().load(directory: dir)) { error in
            XCTAssertEqual("\(error)", object + "metadata.name: defined twice")
        }
    }

    /// Two policies on one Service: the older (`creationTimestamp`) is in force, the other is
    /// `Conflicted`; a policy whose Services no route uses is `TargetNotFound`; the table and
    /// the JSON carry them, and `healthy` turns false.
    func testPolicyStatus() throws {
        try writeRoute("r.yaml", "shop", "r", rules: ["- backendRefs: [{name: cart, port: 80}, {name: pay, port: 80}]"])
        try writePolicy(
            "newer", ["targetRefs: [{group: \"\", kind: Service, name: cart}]", "retryConstraint: {budget: {percent: 50}}"], file: "a.yaml",
            extra: ", creationTimestamp: \"2026-02-01T00:00:00Z\"")
        try writePolicy(
            "older", ["targetRefs: [{group: \"\", kind: Service, name: cart}, {group: \"\", kind: Service, name: pay}]", "retryConstraint: {budget: {percent: 5}}"],
            file: "b.yaml", extra: ", creationTimestamp: \"2026-01-01T00:00:00Z\"")
        try writePolicy("unused", ["targetRefs: [{group: \"\", kind: Service, name: nobody}]", "retryConstraint: {}"], file: "c.yaml")
        let loaded = try HTTPRouteLoader().load(directory: dir)
        XCTAssertEqual(loaded.routes[0].rules[0].backends.map { $0.retryConstraint?.percent }, [5, 5])
        let report = HTTPRouteStatusReport.compute(loaded, listeners: nil)
        // One ancestor each: `*` (the route has no parentRefs), `-` for the unused one.
        XCTAssertEqual(report.policies.map { $0.ancestors.map(\.ancestor) }, [["*"], ["*"], ["-"]])
        XCTAssertTrue(report.policies.allSatisfy { $0.ancestors.allSatisfy { $0.ancestorRef == nil && $0.controllerName == "ugate/httproute" } })
        XCTAssertFalse(report.json.contains("ancestorRef"), "no Gateway to name for * and -")
        let accepted = Dictionary(uniqueKeysWithValues: report.policies.map { ($0.name, $0.ancestors[0].conditions[0]) })
        XCTAssertEqual(accepted["older"]?.status, "True")
        XCTAssertEqual(accepted["newer"]?.reason, "Conflicted")
        XCTAssertEqual(accepted["newer"]?.message, "shop/cart is held by the older XBackendTrafficPolicy shop/older")
        XCTAssertEqual(accepted["unused"]?.reason, "TargetNotFound")
        XCTAssertEqual(accepted["unused"]?.observedGeneration, 1)
        XCTAssertNotNil(accepted["unused"]?.lastTransitionTime)
        XCTAssertFalse(report.healthy)
        XCTAssertTrue(report.table.contains("XBackendTrafficPolicy  shop/newer   *         shop/cart           False (Conflicted)"), report.table)
        XCTAssertTrue(report.json.contains("\"policies\""), report.json)
        XCTAssertEqual(try JSONDecoder().decode(HTTPRouteStatusReport.self, from: Data(report.json.utf8)), report)
    }

    /// GEP-713 `PolicyAncestorStatus`: one entry per Gateway whose routes reach a targeted
    /// Service, judged on the targets reached there. `cart` is reached through Gateway gw-a,
    /// `pay` through gw-b, `extra` through both. The older policy holds `cart` and `pay`
    /// (accepted at both). The newer one targets `cart` and `extra`: at gw-a, which reaches
    /// both, it is accepted naming the conflict over `cart`; at gw-b, which reaches only
    /// `extra`, it is in force. A third policy on `cart` alone is `Conflicted` at gw-a, its only
    /// ancestor. Each ancestor's condition is stamped, and the table has a line per ancestor.
    /// Each ancestor is a Gateway API `ParentReference` (group, kind, namespace, name) with
    /// ugate's `controllerName`, per Gateway: a route naming a listener by `sectionName` counts
    /// for its Gateway (one ancestor gw-a, no `sectionName`).
    func testPolicyStatusPerAncestorGateway() throws {
        func route(_ name: String, parents: String, backends: String) throws {
            let yaml = """
                apiVersion: gateway.networking.k8s.io/v1
                kind: HTTPRoute
                metadata: {name: \(name), namespace: shop}
                spec:
                  parentRefs: \(parents)
                  rules:
                  - backendRefs: \(backends)

                """
            try yaml.write(toFile: "\(dir)/\(name).yaml", atomically: true, encoding: .utf8)
        }
        try route("ra", parents: "[{name: gw-a, sectionName: web}]", backends: "[{name: cart, port: 80}]")
        try route("rb", parents: "[{name: gw-b}]", backends: "[{name: pay, port: 80}, {name: extra, port: 80}]")
        try route("rab", parents: "[{name: gw-a}, {name: gw-b}]", backends: "[{name: extra, port: 80}]")
        func service(_ name: String) -> String { "{group: \"\", kind: Service, name: \(name)}" }
        try writePolicy(
            "older", ["targetRefs: [\(service("cart")), \(service("pay"))]", "retryConstraint: {}"], file: "p1.yaml",
            extra: ", creationTimestamp: \"2026-01-01T00:00:00Z\"")
        try writePolicy(
            "newer", ["targetRefs: [\(service("cart")), \(service("extra"))]", "retryConstraint: {}"], file: "p2.yaml",
            extra: ", creationTimestamp: \"2026-02-01T00:00:00Z\"")
        try writePolicy(
            "newest", ["targetRefs: [\(service("cart"))]", "retryConstraint: {}"], file: "p3.yaml", extra: ", creationTimestamp: \"2026-03-01T00:00:00Z\"")
        let report = HTTPRouteStatusReport.compute(try HTTPRouteLoader().load(directory: dir), listeners: nil)
        let byName = Dictionary(uniqueKeysWithValues: report.policies.map { ($0.name, $0) })
        func accepted(_ policy: String) -> [String] {
            byName[policy]?.ancestors.map { a in
                let c = a.conditions[0]
                return "\(a.ancestor) \(c.status) \(c.reason): \(c.message)"
            } ?? []
        }
        XCTAssertEqual(accepted("older"), ["Gateway shop/gw-a True Accepted: retry budget in force", "Gateway shop/gw-b True Accepted: retry budget in force"])
        XCTAssertEqual(
            accepted("newer"),
            [
                "Gateway shop/gw-a True Accepted: retry budget in force; shop/cart is held by the older XBackendTrafficPolicy shop/older",
                "Gateway shop/gw-b True Accepted: retry budget in force",
            ])
        XCTAssertEqual(accepted("newest"), ["Gateway shop/gw-a False Conflicted: shop/cart is held by the older XBackendTrafficPolicy shop/older"])
        // The JSON's `status.ancestors[]` as the Gateway API has them.
        let json = try JSONSerialization.jsonObject(with: Data(report.json.utf8)) as? [String: Any]
        let newer = (json?["policies"] as? [[String: Any]])?.first { $0["name"] as? String == "newer" }
        let ancestors = newer?["ancestors"] as? [[String: Any]] ?? []
        XCTAssertEqual(
            ancestors.map { $0["ancestorRef"] as? [String: String] },
            [
                ["group": "gateway.networking.k8s.io", "kind": "Gateway", "namespace": "shop", "name": "gw-a"],
                ["group": "gateway.networking.k8s.io", "kind": "Gateway", "namespace": "shop", "name": "gw-b"],
            ])
        XCTAssertEqual(ancestors.map { $0["controllerName"] as? String }, ["ugate/httproute", "ugate/httproute"])
        XCTAssertFalse(report.healthy)
        XCTAssertTrue(byName.values.allSatisfy { $0.ancestors.allSatisfy { $0.conditions.allSatisfy { $0.lastTransitionTime != nil && $0.observedGeneration == 1 } } })
        let lines = report.table.split(separator: "\n").filter { $0.hasPrefix("XBackendTrafficPolicy") }
        XCTAssertEqual(lines.count, 5, report.table)
        XCTAssertTrue(lines.contains { $0.contains("shop/newest") && $0.contains("Gateway shop/gw-a") && $0.contains("False (Conflicted)") }, report.table)
        XCTAssertEqual(try JSONDecoder().decode(HTTPRouteStatusReport.self, from: Data(report.json.utf8)), report)
    }

    /// `RetryBudget` with a policy's constraint, as a value: 50 % of the requests of a 2 s
    /// interval plus 1 per second (a reserve of 2 in the window), the window sliding by a tenth
    /// of the interval (200 ms); `percent: 100` lets every request be retried once more;
    /// `RetryBudgets` starts a budget afresh when its policy changes.
    func testPolicyBudgetTable() {
        var budget = RetryBudget(RetryConstraint(percent: 50, interval: 2, minRetryCount: 1, minRetryInterval: 1))
        let start: UInt64 = 5_000_000
        XCTAssertEqual((0..<10).filter { _ in budget.retry(now: start) }.count, 2)
        for _ in 0..<10 { budget.request(now: start + 100) }
        XCTAssertEqual((0..<10).filter { _ in budget.retry(now: start + 150) }.count, 5)
        // 1.999 s later the first bucket is still in the window; at 2 s everything has left it.
        XCTAssertFalse(budget.retry(now: start + 1_999))
        XCTAssertEqual((0..<10).filter { _ in budget.retry(now: start + 2_000) }.count, 2)
        var all = RetryBudget(RetryConstraint(percent: 100, interval: 3600, minRetryCount: 1, minRetryInterval: 3600))
        for _ in 0..<20 { all.request(now: start) }
        XCTAssertEqual((0..<40).filter { _ in all.retry(now: start) }.count, 21)
        let budgets = RetryBudgets()
        let hourly = RetryConstraint(percent: 0, interval: 3600, minRetryCount: 3, minRetryInterval: 3600)
        XCTAssertEqual((0..<5).filter { _ in budgets.retry("service shop/cart", hourly) }.count, 3)
        var changed = hourly
        changed.minRetryCount = 4
        XCTAssertEqual((0..<5).filter { _ in budgets.retry("service shop/cart", changed) }.count, 4)
        XCTAssertEqual((0..<5).filter { _ in budgets.retry("service shop/pay", hourly) }.count, 3)
    }

    // MARK: - Real sockets

    /// A backend that answers every request 500, rules with `codes: [500], attempts: 3` in two
    /// HTTPRoutes to it. Without a policy each route has its own default budget (30 retries
    /// each on a quiet route) and the backend's 500 is relayed. With an `XBackendTrafficPolicy`
    /// on the Service (`percent: 0`, at least 5 per hour) the two routes share one budget of 5
    /// retries: the backend gets exactly 60 + 5 requests, and a request whose retry the budget
    /// refuses is answered 503 (GEP-3388), counted and named in the access log.
    func testPolicyBudgetBoundsRetriesAcrossRoutes() throws {
        let backend = try ScriptedBackend { _, _, _, _ in .respond(500, "broken") }
        defer { backend.stop() }
        for route in ["a", "b"] {
            try writeRoute(
                "\(route).yaml", "shop", route,
                rules: ["- matches: [{path: {type: PathPrefix, value: /\(route)}}]", "  retry: {codes: [500], attempts: 3}", "  backendRefs: [{name: cart, port: 80}]"])
        }
        func run(_ requests: Int) throws -> (statuses: [Int], sent: Int) {
            let before = backend.requests.count
            let port = try serve(services: ["cart": backend.address])
            var statuses: [Int] = []
            // A connection per request: the gateway's own 503 closes its connection.
            for i in 0..<requests {
                let client = try KeptAliveClient(port: port)
                defer { client.close() }
                statuses.append(try client.send("GET", "/\(i % 2 == 0 ? "a" : "b")/\(i)").status)
            }
            gateway?.stop()
            return (statuses, backend.requests.count - before)
        }
        // The route defaults: 30 retries per route, both routes retry.
        let defaults = try run(20)
        XCTAssertEqual(defaults.sent, 80, "every request tried 4 times within the default budgets")
        XCTAssertEqual(Set(defaults.statuses), [500])
        // The Service's policy: 5 retries for both routes together.
        try writePolicy("budget", ["targetRefs: [{group: \"\", kind: Service, name: cart}]", "retryConstraint: {budget: {percent: 0, interval: 1h}, minRetryRate: {count: 5, interval: 1h}}"])
        let budgeted = try run(60)
        XCTAssertEqual(budgeted.sent, 65, "retries beyond the Service's budget of 5")
        // The first request used 3 retries, the second 2 before the refusal; every later one is refused at once.
        XCTAssertEqual(budgeted.statuses[0], 500)
        XCTAssertEqual(Array(budgeted.statuses.dropFirst()), Array(repeating: 503, count: 59))
        let refused = metrics.render().split(separator: "\n").filter { $0.hasPrefix("ugate_httproute_retries_refused_total{route=\"shop/") }
            .compactMap { Int($0.split(separator: " ").last ?? "") }.reduce(0, +)
        XCTAssertEqual(refused, 59, metrics.render())
        XCTAssertNotNil(
            capture.waitForLine(containing: ["request", "route=shop/b#0", "status=503", "retry refused: the retry budget of Service shop/cart is spent"]),
            "\(capture.lines.suffix(3))")
    }
}

/// The retry budgets of a node: the listeners of one `HTTPRouteService` share them.
extension HTTPRouteRetryTests {
    /// Two listeners of one node, a route attached to both with `codes: [500], attempts: 3`, a
    /// backend that answers everything 500, 40 requests alternating between the listeners. The
    /// route's default budget is one for the node: the backend gets what one `RetryBudget`
    /// lets through, not what two would. With an `XBackendTrafficPolicy` on the Service (5
    /// retries per hour) the two listeners share its 5: 40 + 5 requests reach the backend
    /// (each listener with its own budget: 40 + 10), every request after the budget is spent
    /// answered 503.
    func testRetryBudgetsAreSharedByTheListenersOfANode() throws {
        let backend = try ScriptedBackend { _, _, _, _ in .respond(500, "broken") }
        defer { backend.stop() }
        try writeRoute("a.yaml", "shop", "a", rules: ["- retry: {codes: [500], attempts: 3}", "  backendRefs: [{name: cart, port: 80}]"])
        let json = """
            {"manifests": "\(dir)", "services": {"cart": "\(backend.address)"}, "listeners": [{"name": "one", "port": 0}, {"name": "two", "port": 0}]}
            """
        let config = try JSONDecoder().decode(HTTPRouteConfig.self, from: Data(json.utf8))
        let requests = 40
        func run() throws -> (statuses: [Int], sent: Int) {
            let before = backend.requests.count
            let service = try HTTPRouteService(config: config, bind: "127.0.0.1", loops: loops, log: capture.logger("gate"), accessLog: capture.logger("access"))
            defer { service.stop() }
            let ports = service.bound.map { UInt16($0.address.port) }
            XCTAssertEqual(ports.count, 2)
            var statuses: [Int] = []
            // A connection per request: the gateway's own 503 closes its connection.
            for i in 0..<requests {
                let client = try KeptAliveClient(port: ports[i % 2])
                defer { client.close() }
                statuses.append(try client.send("GET", "/\(i)").status)
            }
            return (statuses, backend.requests.count - before)
        }
        /// The backend requests `budgets` route budgets let through, the requests alternating
        /// between them (all within one window: the run takes well under its 10 s).
        func sent(budgets: Int) -> Int {
            var budget = [RetryBudget](repeating: RetryBudget(), count: budgets)
            var sent = 0
            for i in 0..<requests {
                budget[i % budgets].request(now: 1000)
                sent += 1
                for _ in 0..<3 {
                    guard budget[i % budgets].retry(now: 1000) else { break }
                    sent += 1
                }
            }
            return sent
        }
        XCTAssertNotEqual(sent(budgets: 1), sent(budgets: 2))
        let defaults = try run()
        XCTAssertEqual(defaults.sent, sent(budgets: 1), "the route's budget is not one for the node")
        XCTAssertEqual(Set(defaults.statuses), [500])
        try writePolicy("budget", ["targetRefs: [{group: \"\", kind: Service, name: cart}]", "retryConstraint: {budget: {percent: 0, interval: 1h}, minRetryRate: {count: 5, interval: 1h}}"])
        let budgeted = try run()
        XCTAssertEqual(budgeted.sent, requests + 5, "the Service's budget is not one for the node")
        XCTAssertEqual(budgeted.statuses[0], 500)
        XCTAssertEqual(Array(budgeted.statuses.dropFirst()), Array(repeating: 503, count: requests - 1))
    }
}

/// `retryBodyLimit` (Envoy's `per_request_buffer_limit_in_bytes`): how much of a request body
/// the gateway keeps so that the request can be sent again.
extension HTTPRouteRetryTests {
    /// A PUT of 100,000 bytes to a backend that answers 503 the first time it sees a path (then
    /// 200), a rule with `retry: {codes: [503]}`: with the default limit (64 KiB) the body is
    /// not kept, so the 503 is relayed and the backend saw one request; with
    /// `"retryBodyLimit": 262144` in the `httproute` section (through `HTTPRouteService`, as
    /// under `ugate run`) the whole body is sent again and the retry's 200 relayed.
    func testRetryBodyLimitDecidesWhetherALargeBodyIsReplayed() throws {
        let seen = Mutex<Set<String>>([])
        let backend = try ScriptedBackend { _, _, _, path in
            seen.withLock { $0.insert(path).inserted } ? .respond(503, "first") : .respond(200, "again")
        }
        defer { backend.stop() }
        try writeRoute("routes.yaml", "default", "retry", rules: ["- retry: {codes: [503], attempts: 1}", "  backendRefs: [{name: backend, port: 80}]"])
        let body = [UInt8](repeating: 0x61, count: 100_000)
        let client = try KeptAliveClient(port: try serve(services: ["backend": backend.address]))
        let small = try client.send("PUT", "/default-limit", body: body)
        client.close()
        XCTAssertEqual(small.status, 503, small.body)
        XCTAssertEqual(backend.requests, ["conn#0 PUT /default-limit 100000"])
        gateway?.stop()
        let json = """
            {"manifests": "\(dir)", "services": {"backend": "\(backend.address)"}, "retryBodyLimit": 262144, "listeners": [{"name": "web", "port": 0}]}
            """
        let config = try JSONDecoder().decode(HTTPRouteConfig.self, from: Data(json.utf8))
        XCTAssertEqual(config.retryBodyLimit, 262_144)
        let service = try HTTPRouteService(config: config, bind: "127.0.0.1", loops: loops, log: capture.logger("gate"), accessLog: capture.logger("access"))
        defer { service.stop() }
        let large = try KeptAliveClient(port: UInt16(service.bound[0].address.port))
        defer { large.close() }
        let answer = try large.send("PUT", "/larger-limit", body: body)
        XCTAssertEqual(answer.status, 200, answer.body)
        XCTAssertEqual(answer.body, "again")
        XCTAssertEqual(backend.requests.filter { $0.contains("/larger-limit") }.map { $0.split(separator: " ").last }, ["100000", "100000"])
        XCTAssertNotNil(capture.waitForLine(containing: ["request", "path=/larger-limit", "status=200", "retries=1"]), "\(capture.lines.suffix(3))")
    }

    /// The key's default and range.
    func testRetryBodyLimitConfig() throws {
        XCTAssertEqual(try JSONDecoder().decode(HTTPRouteConfig.self, from: Data(#"{"manifests": "/m"}"#.utf8)).retryBodyLimit, 65536)
        XCTAssertEqual(try JSONDecoder().decode(HTTPRouteConfig.self, from: Data(#"{"manifests": "/m", "retryBodyLimit": 0}"#.utf8)).retryBodyLimit, 0)
        for bad in ["-1", "16777217", "\"big\""] {
            XCTAssertThrowsError(try JSONDecoder().decode(HTTPRouteConfig.self, from: Data(#"{"manifests": "/m", "retryBodyLimit": \#(bad)}"#.utf8)), bad)
        }
    }
}
