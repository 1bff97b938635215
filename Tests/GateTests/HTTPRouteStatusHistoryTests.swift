import Foundation
import XCTest

@testable import Gate

/// `observedGeneration` and `lastTransitionTime` on every route, Gateway and listener
/// condition (`StatusHistory`): the generation is `metadata.generation` when given, else a
/// counter bumped by reloads that change the spec; the time moves only when a condition's
/// status changes. Checked step by step with given times, then across real reloads of a
/// running `HTTPRouteService`.
final class HTTPRouteStatusHistoryTests: XCTestCase {
    /// A Gateway (listener `web`, `*.shop.example`) and two routes: `counted` without
    /// `metadata.generation` (its hostname given), `declared` with generation `declared`.
    static func manifests(host: String, declared: Int, listenerHost: String = "*.shop.example", comment: String = "") -> String {
        """
        # \(comment)
        apiVersion: gateway.networking.k8s.io/v1
        kind: Gateway
        metadata: {name: gw, namespace: infra}
        spec:
          listeners:
          - {name: web, port: 80, protocol: HTTP, hostname: "\(listenerHost)", allowedRoutes: {namespaces: {from: All}}}
        ---
        apiVersion: gateway.networking.k8s.io/v1
        kind: HTTPRoute
        metadata: {name: counted, namespace: shop}
        spec:
          parentRefs: [{name: gw, namespace: infra}]
          hostnames: [\(host)]
          rules: [{backendRefs: [{name: web, port: 80}]}]
        ---
        apiVersion: gateway.networking.k8s.io/v1
        kind: HTTPRoute
        metadata: {name: declared, namespace: shop, generation: \(declared)}
        spec:
          parentRefs: [{name: gw, namespace: infra}]
          rules: [{backendRefs: [{name: web, port: 80}]}]

        """
    }

    /// "status generation time" of one route condition.
    static func route(_ report: HTTPRouteStatusReport, _ name: String, _ type: String) -> String {
        let condition = report.routes.first { $0.name == name }?.parents.first?.conditions.first { $0.type == type }
        return condition.map { "\($0.status) \($0.observedGeneration ?? -1) \($0.lastTransitionTime ?? "-")" } ?? "missing"
    }

    static func listener(_ report: HTTPRouteStatusReport, _ type: String) -> String {
        let condition = report.gateways.first?.listeners.first?.conditions.first { $0.type == type }
        return condition.map { "\($0.status) \($0.observedGeneration ?? -1) \($0.lastTransitionTime ?? "-")" } ?? "missing"
    }

    func testGenerationsAndTransitionTimesAcrossReloads() throws {
        let loader = HTTPRouteLoader(services: ["web": "127.0.0.1:1"])
        let history = StatusHistory()
        let t = (0..<6).map { Date(timeIntervalSince1970: 1_790_000_000 + Double($0) * 60) }
        let time = t.map(StatusHistory.format)
        XCTAssertEqual(time[0], "2026-09-21T14:13:20Z")
        var steps: [(String, String, String, String, String)] = []
        func step(_ yaml: String, at now: Date) throws {
            let manifests = try loader.load(yaml: yaml, file: "routes.yaml")
            history.observe(manifests)
            let report = HTTPRouteStatusReport.compute(manifests, listeners: nil, history: history, now: now)
            steps.append((
                Self.route(report, "counted", "Accepted"), Self.route(report, "counted", "ResolvedRefs"),
                Self.route(report, "declared", "Accepted"), Self.listener(report, "Accepted"),
                report.gateways[0].conditions.first { $0.type == "Programmed" }.map { "\($0.observedGeneration ?? -1)" } ?? "-"))
        }
        // 0: first load.
        try step(Self.manifests(host: "a.shop.example", declared: 7), at: t[0])
        // 1: the file changes (a comment), no spec does: nothing moves.
        try step(Self.manifests(host: "a.shop.example", declared: 7, comment: "touched"), at: t[1])
        // 2: counted's hostname leaves the listener's: Accepted turns False (generation 2);
        //    ResolvedRefs stays True and keeps its time; declared's generation is its own.
        try step(Self.manifests(host: "a.other.example", declared: 8), at: t[2])
        // 3: another spec change with the same outcome: generation 3, times kept.
        try step(Self.manifests(host: "b.other.example", declared: 8), at: t[3])
        // 4: back inside: Accepted True again at t4, generation 4; the Gateway's spec changes.
        try step(Self.manifests(host: "b.shop.example", declared: 8, listenerHost: "*.example"), at: t[4])
        // 5: a status request without a reload: nothing moves.
        try step(Self.manifests(host: "b.shop.example", declared: 8, listenerHost: "*.example"), at: t[5])
        let expected = [
            ("True 1 \(time[0])", "True 1 \(time[0])", "True 7 \(time[0])", "True 1 \(time[0])", "1"),
            ("True 1 \(time[0])", "True 1 \(time[0])", "True 7 \(time[0])", "True 1 \(time[0])", "1"),
            ("False 2 \(time[2])", "True 2 \(time[0])", "True 8 \(time[0])", "True 1 \(time[0])", "1"),
            ("False 3 \(time[2])", "True 3 \(time[0])", "True 8 \(time[0])", "True 1 \(time[0])", "1"),
            ("True 4 \(time[4])", "True 4 \(time[0])", "True 8 \(time[0])", "True 2 \(time[0])", "2"),
            ("True 4 \(time[4])", "True 4 \(time[0])", "True 8 \(time[0])", "True 2 \(time[0])", "2"),
        ]
        XCTAssertEqual(steps.count, expected.count)
        for (index, (got, want)) in zip(steps, expected).enumerated() {
            XCTAssertEqual("\(got)", "\(want)", "step \(index)")
        }
        // A route that goes away and comes back starts afresh.
        try step(Self.manifests(host: "b.shop.example", declared: 8).replacingOccurrences(of: "name: counted", with: "name: renamed"), at: t[5])
        try step(Self.manifests(host: "b.shop.example", declared: 8), at: t[5])
        XCTAssertEqual(steps.last?.0, "True 1 \(time[5])")
    }

    /// Without a history (`ugate httproute status` offline): `metadata.generation` or 1, the
    /// time of the check; the JSON carries both fields; a bad generation is refused by name.
    func testOfflineStatusAndBadGenerations() throws {
        let now = Date(timeIntervalSince1970: 1_790_000_000)
        let manifests = try HTTPRouteLoader().load(yaml: Self.manifests(host: "a.shop.example", declared: 3), file: "routes.yaml")
        let report = HTTPRouteStatusReport.compute(manifests, listeners: nil, now: now)
        XCTAssertEqual(Self.route(report, "counted", "Accepted"), "True 1 2026-09-21T14:13:20Z")
        XCTAssertEqual(Self.route(report, "declared", "ResolvedRefs"), "True 3 2026-09-21T14:13:20Z")
        XCTAssertEqual(Self.listener(report, "Programmed"), "Unknown 1 2026-09-21T14:13:20Z")
        // The JSON carries both fields and reads back the same.
        XCTAssertTrue(report.json.contains("\"lastTransitionTime\"") && report.json.contains("\"observedGeneration\""), report.json)
        XCTAssertEqual(try JSONDecoder().decode(HTTPRouteStatusReport.self, from: Data(report.json.utf8)), report)
        for (value, message) in [("0", "below 1"), ("x", "expected an integer")] {
            let yaml = Self.manifests(host: "a.shop.example", declared: 1).replacingOccurrences(of: "generation: 1", with: "generation: \(value)")
            XCTAssertThrowsError(try HTTPRouteLoader().load(yaml: yaml, file: "bad.yaml")) { error in
                let error = error as? HTTPRouteError
                XCTAssertEqual(error?.field, "metadata.generation", "\(String(describing: error))")
                XCTAssertEqual(error?.object, "HTTPRoute shop/declared")
                XCTAssertTrue(error?.message.contains(message) == true, "\(String(describing: error))")
            }
        }
    }

    /// A running service: rewriting a route's spec bumps its `observedGeneration` on the next
    /// reload; its `lastTransitionTime` stays while the condition keeps its status and moves
    /// when the route stops attaching (and the listener's `attachedRoutes` follows).
    func testRunningServiceKeepsHistoryAcrossReloads() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("statushist-\(getpid())-\(UUID())").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try Self.manifests(host: "a.shop.example", declared: 5).write(toFile: "\(dir)/routes.yaml", atomically: true, encoding: .utf8)
        let loops = try GateLoopGroup(count: 1)
        defer { loops.shutdown() }
        let capture = LogCapture()
        var config = HTTPRouteConfig(manifests: dir, services: ["web": "127.0.0.1:1"], listeners: [HTTPRouteListenerConfig(name: "web", port: 0, gateway: "infra/gw")])
        config.reloadInterval = 0.05
        let service = try HTTPRouteService(config: config, bind: "127.0.0.1", loops: loops, log: capture.logger("ugate.httproute"))
        defer { service.stop() }
        func accepted() -> RouteCondition? {
            service.status().routes.first { $0.name == "counted" }?.parents.first?.conditions.first { $0.type == "Accepted" }
        }
        let first = try XCTUnwrap(accepted())
        XCTAssertEqual(first.status, "True")
        XCTAssertEqual(first.observedGeneration, 1)
        let since = try XCTUnwrap(first.lastTransitionTime)
        XCTAssertEqual(service.status().routes.first { $0.name == "declared" }?.parents.first?.conditions.first?.observedGeneration, 5)

        // A spec change that keeps the route attached: generation 2, same transition time.
        try Self.manifests(host: "b.shop.example", declared: 5).write(toFile: "\(dir)/routes.yaml", atomically: true, encoding: .utf8)
        XCTAssertTrue(eventually { accepted()?.observedGeneration == 2 }, "\(String(describing: accepted()))")
        XCTAssertEqual(accepted()?.lastTransitionTime, since)
        XCTAssertEqual(accepted()?.status, "True")
        // Only a comment: reloaded, nothing changes.
        func reloads() -> Int { capture.lines.filter { $0.contains("routes reloaded") }.count }
        let before = reloads()
        try Self.manifests(host: "b.shop.example", declared: 5, comment: "again").write(toFile: "\(dir)/routes.yaml", atomically: true, encoding: .utf8)
        XCTAssertTrue(eventually { reloads() > before })
        XCTAssertEqual(accepted()?.observedGeneration, 2)
        XCTAssertEqual(accepted()?.lastTransitionTime, since)
        // Detached: status False, generation 3, the transition stamped when it happened.
        let detachedAt = StatusHistory.format(Date())
        try Self.manifests(host: "b.other.example", declared: 6).write(toFile: "\(dir)/routes.yaml", atomically: true, encoding: .utf8)
        XCTAssertTrue(eventually { accepted()?.status == "False" })
        XCTAssertEqual(accepted()?.observedGeneration, 3)
        XCTAssertEqual(accepted()?.reason, "NoMatchingListenerHostname")
        XCTAssertGreaterThanOrEqual(try XCTUnwrap(accepted()?.lastTransitionTime), detachedAt)
        XCTAssertEqual(service.status().routes.first { $0.name == "declared" }?.parents.first?.conditions.first?.observedGeneration, 6)
        XCTAssertEqual(service.status().gateways[0].listeners[0].attachedRoutes, 1)
    }

    /// With a file the history survives a restart: counters and transition times are read back
    /// by a new `StatusHistory`; the file is replaced atomically (no temporary left); a corrupt
    /// file is reported and the history starts afresh.
    func testHistoryFileSurvivesRestart() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("statusfile-\(getpid())-\(UUID())").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let file = "\(dir)/httproute-status.json"
        let loader = HTTPRouteLoader(services: ["web": "127.0.0.1:1"])
        let t = (0..<4).map { Date(timeIntervalSince1970: 1_790_000_000 + Double($0) * 60) }
        let time = t.map(StatusHistory.format)
        let inside = try loader.load(yaml: Self.manifests(host: "a.shop.example", declared: 7), file: "routes.yaml")
        let outside = try loader.load(yaml: Self.manifests(host: "a.other.example", declared: 7), file: "routes.yaml")
        func report(_ history: StatusHistory, _ manifests: RouteManifests, at now: Date) -> HTTPRouteStatusReport {
            history.observe(manifests)
            return HTTPRouteStatusReport.compute(manifests, listeners: nil, history: history, now: now)
        }
        let first = StatusHistory(file: file)
        _ = report(first, inside, at: t[0])
        let before = report(first, outside, at: t[1])
        XCTAssertEqual(Self.route(before, "counted", "Accepted"), "False 2 \(time[1])")
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir), ["httproute-status.json"])
        let saved = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: file))) as? [String: Any]
        XCTAssertEqual(saved?["version"] as? Int, 1)

        // "Restart": a new history from the file, the same manifests later.
        let second = StatusHistory(file: file)
        let after = report(second, outside, at: t[3])
        XCTAssertEqual(Self.route(after, "counted", "Accepted"), "False 2 \(time[1])")
        XCTAssertEqual(Self.route(after, "counted", "ResolvedRefs"), "True 2 \(time[0])")
        XCTAssertEqual(Self.listener(after, "Accepted"), "True 1 \(time[0])")
        // A spec changed while the node was down still counts as a change.
        XCTAssertEqual(Self.route(report(StatusHistory(file: file), inside, at: t[3]), "counted", "Accepted"), "True 3 \(time[3])")

        // A corrupt file: reported, fresh history, then replaced by a valid one.
        try "{\"version\": 1, \"objects\": [".write(toFile: file, atomically: true, encoding: .utf8)
        let capture = LogCapture()
        let fresh = StatusHistory(file: file, log: capture.logger("ugate.httproute"))
        XCTAssertNotNil(capture.waitForLine(containing: ["status history not readable", file]), "\(capture.lines)")
        XCTAssertEqual(Self.route(report(fresh, outside, at: t[3]), "counted", "Accepted"), "False 1 \(time[3])")
        XCTAssertNotNil(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: file))) as? [String: Any])
    }

    /// The running service with a state directory: generations and transition times survive
    /// stopping it and starting a new one on the same folder and directory.
    func testServiceRestartKeepsHistory() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("statusrestart-\(getpid())-\(UUID())").path
        for sub in ["routes", "state"] { try FileManager.default.createDirectory(atPath: "\(dir)/\(sub)", withIntermediateDirectories: true) }
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try Self.manifests(host: "a.shop.example", declared: 5).write(toFile: "\(dir)/routes/routes.yaml", atomically: true, encoding: .utf8)
        let loops = try GateLoopGroup(count: 1)
        defer { loops.shutdown() }
        var config = HTTPRouteConfig(
            manifests: "\(dir)/routes", services: ["web": "127.0.0.1:1"], listeners: [HTTPRouteListenerConfig(name: "web", port: 0, gateway: "infra/gw")])
        config.reloadInterval = 0.05
        func accepted(_ service: HTTPRouteService) -> RouteCondition? {
            service.status().routes.first { $0.name == "counted" }?.parents.first?.conditions.first { $0.type == "Accepted" }
        }
        let service = try HTTPRouteService(config: config, bind: "127.0.0.1", loops: loops, stateDirectory: "\(dir)/state")
        let since = try XCTUnwrap(accepted(service)?.lastTransitionTime)
        try Self.manifests(host: "b.shop.example", declared: 5).write(toFile: "\(dir)/routes/routes.yaml", atomically: true, encoding: .utf8)
        XCTAssertTrue(eventually { accepted(service)?.observedGeneration == 2 }, "\(String(describing: accepted(service)))")
        service.stop()
        // Transition times have a resolution of a second: a restart a second later must not move them.
        sleep(1)
        let restarted = try HTTPRouteService(config: config, bind: "127.0.0.1", loops: loops, stateDirectory: "\(dir)/state")
        defer { restarted.stop() }
        XCTAssertEqual(accepted(restarted)?.observedGeneration, 2)
        XCTAssertEqual(accepted(restarted)?.lastTransitionTime, since)
        XCTAssertTrue(FileManager.default.fileExists(atPath: "\(dir)/state/\(HTTPRouteService.statusHistoryFile)"))
    }
}
