import Foundation
import Glibc
import XCTest

@testable import Gate

/// Route status (Gateway API conditions Accepted / ResolvedRefs with reasons): computed per
/// route and parentRef, printed by `ugate httproute status` (table, JSON, exit codes) and
/// served on the admin port's `/httproute/status` by `ugate run`.
final class HTTPRouteStatusTests: XCTestCase {
    static let manifests = """
        apiVersion: gateway.networking.k8s.io/v1
        kind: Gateway
        metadata: {name: gw, namespace: infra}
        spec:
          listeners:
          - {name: web, port: 80, protocol: HTTP, hostname: "*.shop.example", allowedRoutes: {namespaces: {from: All}}}
          - {name: internal, port: 8080, protocol: HTTP}
          - {name: tls, port: 443, protocol: TLS, tls: {mode: Passthrough}, allowedRoutes: {namespaces: {from: All}}}
        ---
        apiVersion: gateway.networking.k8s.io/v1
        kind: HTTPRoute
        metadata: {name: good, namespace: shop}
        spec:
          parentRefs: [{name: gw, namespace: infra, sectionName: web}]
          hostnames: [www.shop.example]
          rules: [{backendRefs: [{name: web, port: 80}]}]
        ---
        apiVersion: gateway.networking.k8s.io/v1
        kind: HTTPRoute
        metadata: {name: elsewhere, namespace: shop}
        spec:
          parentRefs: [{name: gw, namespace: infra, sectionName: web}]
          hostnames: [www.other.example]
          rules: [{backendRefs: [{name: web, port: 80}]}]
        ---
        apiVersion: gateway.networking.k8s.io/v1
        kind: HTTPRoute
        metadata: {name: outsider, namespace: shop}
        spec:
          parentRefs: [{name: gw, namespace: infra, sectionName: internal}]
          rules: [{backendRefs: [{name: web, port: 80}]}]
        ---
        apiVersion: gateway.networking.k8s.io/v1
        kind: HTTPRoute
        metadata: {name: lost, namespace: shop}
        spec:
          parentRefs: [{name: nogw, namespace: infra}, {name: gw, namespace: infra, sectionName: nosuch}]
          rules: [{backendRefs: [{name: web, port: 80}]}]
        ---
        apiVersion: gateway.networking.k8s.io/v1
        kind: HTTPRoute
        metadata: {name: crossref, namespace: shop}
        spec:
          parentRefs: [{name: gw, namespace: infra, sectionName: web}]
          rules: [{backendRefs: [{name: db, namespace: store, port: 5432}]}]
        ---
        apiVersion: gateway.networking.k8s.io/v1
        kind: HTTPRoute
        metadata: {name: bare}
        spec:
          rules: [{backendRefs: [{name: web, port: 80}]}]
        ---
        apiVersion: gateway.networking.k8s.io/v1alpha2
        kind: TLSRoute
        metadata: {name: db, namespace: shop}
        spec:
          parentRefs: [{name: gw, namespace: infra, sectionName: tls}]
          hostnames: [db.shop.example]
          rules: [{backendRefs: [{name: db, port: 5432}]}]
        ---
        apiVersion: gateway.networking.k8s.io/v1alpha2
        kind: TLSRoute
        metadata: {name: wrongkind, namespace: shop}
        spec:
          parentRefs: [{name: gw, namespace: infra, sectionName: web}]
          rules: [{backendRefs: [{name: db, port: 5432}]}]

        """

    /// (kind, route, parent) → (Accepted, ResolvedRefs) as "True" or the reason.
    static let expected: [String: (String, String)] = [
        "HTTPRoute shop/good infra/gw/web": ("True", "True"),
        "HTTPRoute shop/elsewhere infra/gw/web": ("NoMatchingListenerHostname", "True"),
        "HTTPRoute shop/outsider infra/gw/internal": ("NotAllowedByListeners", "True"),
        "HTTPRoute shop/lost infra/nogw": ("NoMatchingParent", "True"),
        "HTTPRoute shop/lost infra/gw/nosuch": ("NoMatchingParent", "True"),
        "HTTPRoute shop/crossref infra/gw/web": ("True", "RefNotPermitted"),
        "HTTPRoute default/bare *": ("True", "True"),
        "TLSRoute shop/db infra/gw/tls": ("True", "True"),
        "TLSRoute shop/wrongkind infra/gw/web": ("NotAllowedByListeners", "True"),
    ]

    static func summary(_ statuses: [RouteStatus]) -> [String: (String, String)] {
        var result: [String: (String, String)] = [:]
        for status in statuses {
            for parent in status.parents {
                func value(_ type: String) -> String {
                    guard let c = parent.conditions.first(where: { $0.type == type }) else { return "missing" }
                    return c.status == "True" ? "True" : c.reason
                }
                result["\(status.kind) \(status.namespace)/\(status.name) \(parent.parent)"] = (value("Accepted"), value("ResolvedRefs"))
            }
        }
        return result
    }

    func assertExpected(_ statuses: [RouteStatus], file: StaticString = #filePath, line: UInt = #line) {
        let got = Self.summary(statuses)
        XCTAssertEqual(Set(got.keys), Set(Self.expected.keys), file: file, line: line)
        for (key, value) in Self.expected {
            XCTAssertEqual(got[key]?.0, value.0, "Accepted of \(key)", file: file, line: line)
            XCTAssertEqual(got[key]?.1, value.1, "ResolvedRefs of \(key)", file: file, line: line)
        }
    }

    func testStatusTable() throws {
        let loaded = try HTTPRouteLoader().load(yaml: Self.manifests, file: "routes.yaml")
        let statuses = RouteStatus.compute(loaded)
        assertExpected(statuses)
        // Messages say why.
        let crossref = statuses.first { $0.name == "crossref" }!.parents[0].conditions[1]
        XCTAssertTrue(crossref.message.contains("no ReferenceGrant in namespace store allows HTTPRoutes from shop"), crossref.message)
        let outsider = statuses.first { $0.name == "outsider" }!.parents[0].conditions[0]
        XCTAssertTrue(outsider.message.contains("does not admit namespace shop"), outsider.message)
        // A Gateway not in the manifests but named by a configured listener accepts by name.
        let configured = RouteStatus.compute(loaded, listeners: [HTTPRouteListenerConfig(name: "main", port: 80, gateway: "infra/nogw")])
        XCTAssertEqual(Self.summary(configured)["HTTPRoute shop/lost infra/nogw"]?.0, "True")
        let table = RouteStatus.table(statuses)
        XCTAssertTrue(table.contains("HTTPRoute  shop/elsewhere"), table)
        XCTAssertTrue(table.contains("False (NoMatchingListenerHostname)"), table)
    }

    func testStatusCommandAndAdminEndpoint() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("routestatus-\(getpid())-\(UUID())").path
        try FileManager.default.createDirectory(atPath: "\(dir)/routes", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try writeManifest(Self.manifests, "routes.yaml", in: "\(dir)/routes")
        let ugate = ugateExecutable()

        // The table: exit status 2 (some route is not Accepted), one line per route and parent.
        let table = try runProcess(ugate, ["httproute", "status", "--manifests", "\(dir)/routes"])
        XCTAssertEqual(table.status, 2, table.err)
        XCTAssertTrue(table.out.hasPrefix("KIND"), table.out)
        let tables = table.out.components(separatedBy: "\n\n")
        XCTAssertEqual(tables[0].split(separator: "\n").count, Self.expected.count + 1, table.out)
        XCTAssertTrue(table.out.contains("False (RefNotPermitted)"), table.out)
        // Then the Gateway's listeners (Programmed not checked without --config).
        XCTAssertEqual(tables.count, 2, table.out)
        XCTAssertTrue(tables.last!.hasPrefix("GATEWAY"), table.out)
        XCTAssertEqual(tables.last!.split(separator: "\n").count, 4, table.out)
        XCTAssertTrue(tables.last!.contains("Unknown (Pending)"), table.out)
        // JSON: the same conditions.
        let json = try runProcess(ugate, ["httproute", "status", "--manifests", "\(dir)/routes", "--json"])
        XCTAssertEqual(json.status, 2, json.err)
        assertExpected(try JSONDecoder().decode(HTTPRouteStatusReport.self, from: Data(json.out.utf8)).routes)
        // All accepted: exit 0.
        try FileManager.default.createDirectory(atPath: "\(dir)/good", withIntermediateDirectories: true)
        try writeManifest(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: ok}\nspec:\n  rules: [{backendRefs: [{name: a, port: 80}]}]\n",
            "ok.yaml", in: "\(dir)/good")
        XCTAssertEqual(try runProcess(ugate, ["httproute", "status", "--manifests", "\(dir)/good"]).status, 0)
        // An invalid manifest: exit 1, the error names file, object and field.
        try writeManifest(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: broken}\nspec:\n  rules: [{backendRefs: [{name: a}]}]\n",
            "broken.yaml", in: "\(dir)/good")
        let broken = try runProcess(ugate, ["httproute", "status", "--manifests", "\(dir)/good"])
        XCTAssertEqual(broken.status, 1)
        XCTAssertTrue(broken.err.contains("broken.yaml: HTTPRoute default/broken: spec.rules[0].backendRefs[0].port"), broken.err)

        // `ugate run`: the admin port serves the same status.
        let config = "\(dir)/ugate.json"
        try """
            {"httproute": {"manifests": "\(dir)/routes", "listeners": [{"name": "web", "port": 0, "gateway": "infra/gw"}]}}
            """.write(toFile: config, atomically: true, encoding: .utf8)
        let node = Process()
        node.executableURL = URL(fileURLWithPath: ugate)
        node.arguments = ["run", "--config", config, "--base-port", "0", "--identity-dir", "\(dir)/node", "--log-level", "warning"]
        let out = Pipe()
        node.standardOutput = out
        node.standardError = FileHandle.nullDevice
        try node.run()
        defer {
            kill(node.processIdentifier, SIGTERM)
            node.waitUntilExit()
        }
        var banner = ""
        for _ in 0..<200 where !banner.contains("ready") || !banner.contains("admin") {
            let data = out.fileHandleForReading.availableData
            if data.isEmpty { break }
            banner += String(decoding: data, as: UTF8.self)
        }
        let adminLine = banner.split(separator: "\n").first { $0.trimmingCharacters(in: .whitespaces).hasPrefix("admin ") }
        let adminURL = try XCTUnwrap(adminLine?.split(separator: " ").last.map { String($0).trimmingCharacters(in: CharacterSet(charactersIn: "/")) }, banner)
        let served = try runProcess(try tool("curl"), ["-sS", "--max-time", "20", "\(adminURL)/httproute/status"])
        XCTAssertEqual(served.status, 0, served.err)
        let report = try JSONDecoder().decode(HTTPRouteStatusReport.self, from: Data(served.out.utf8))
        assertExpected(report.routes)
        // The Gateway's listeners as the node serves them: web bound by the configured listener.
        let listeners = Dictionary(uniqueKeysWithValues: report.gateways[0].listeners.map { ($0.name, $0) })
        XCTAssertEqual(listeners["web"]?.conditions.first { $0.type == "Programmed" }?.status, "True", "\(report.gateways)")
        XCTAssertTrue(listeners["web"]?.conditions.first { $0.type == "Programmed" }?.message.contains("served by configured listener web on 127.0.0.1:") == true)
        XCTAssertEqual(listeners["internal"]?.conditions.first { $0.type == "Programmed" }?.reason, "Pending")
        // good, crossref and the parentless bare (elsewhere: no common hostname; outsider, lost: other sections).
        XCTAssertEqual(listeners["web"]?.attachedRoutes, 3)
        let text = try runProcess(try tool("curl"), ["-sS", "--max-time", "20", "\(adminURL)/httproute/status?format=table"])
        XCTAssertTrue(text.out.hasPrefix("KIND"), text.out)
    }
}
