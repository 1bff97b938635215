import Foundation
import Glibc
import XCTest

@testable import Gate

/// ReferenceGrant (cross-namespace backendRefs) and `allowedRoutes.namespaces.from: Selector`
/// (labels of `Namespace` manifests): loading, errors, tables, and end to end with curl and a
/// reload that adds the grant.
final class HTTPRouteReferenceGrantTests: XCTestCase {
    static func route(_ name: String, namespace: String, host: String, backend: String, backendNamespace: String?, kind: String = "HTTPRoute")
        -> String
    {
        let ref = "{name: \(backend), port: 80\(backendNamespace.map { ", namespace: \($0)" } ?? "")}"
        if kind == "TLSRoute" {
            return """
                apiVersion: gateway.networking.k8s.io/v1alpha2
                kind: TLSRoute
                metadata: {name: \(name), namespace: \(namespace)}
                spec:
                  hostnames: [\(host)]
                  rules: [{backendRefs: [\(ref)]}]

                """
        }
        return """
            apiVersion: gateway.networking.k8s.io/v1
            kind: HTTPRoute
            metadata: {name: \(name), namespace: \(namespace)}
            spec:
              hostnames: [\(host)]
              rules: [{backendRefs: [\(ref)]}]

            """
    }

    static func grant(namespace: String, from: String, fromKind: String = "HTTPRoute", toName: String? = nil) -> String {
        """
        apiVersion: gateway.networking.k8s.io/v1beta1
        kind: ReferenceGrant
        metadata: {name: allow-\(from), namespace: \(namespace)}
        spec:
          from: [{group: gateway.networking.k8s.io, kind: \(fromKind), namespace: \(from)}]
          to: [{group: "", kind: Service\(toName.map { ", name: \($0)" } ?? "")}]

        """
    }

    /// Which cross-namespace references each grant allows.
    func testReferenceGrantTable() throws {
        let loader = HTTPRouteLoader(services: ["store/db": "127.0.0.1:1"])
        let route = Self.route("r", namespace: "web", host: "a.example", backend: "db", backendNamespace: "store")
        let cases: [(String, String, Bool)] = [
            ("no grant", "", false),
            ("grant for HTTPRoutes from web", Self.grant(namespace: "store", from: "web"), true),
            ("grant naming the service", Self.grant(namespace: "store", from: "web", toName: "db"), true),
            ("grant naming another service", Self.grant(namespace: "store", from: "web", toName: "cache"), false),
            ("grant from another namespace", Self.grant(namespace: "store", from: "api"), false),
            ("grant in the route's namespace", Self.grant(namespace: "web", from: "web"), false),
            ("grant for TLSRoutes only", Self.grant(namespace: "store", from: "web", fromKind: "TLSRoute"), false),
        ]
        for (label, grant, allowed) in cases {
            let loaded = try loader.load(yaml: route + (grant.isEmpty ? "" : "---\n" + grant), file: "g.yaml")
            // A refused backend stays in its rule (its share answers 500), marked refused.
            XCTAssertEqual(loaded.routes[0].rules[0].backends.count, 1, label)
            XCTAssertEqual(loaded.routes[0].rules[0].backends[0].refused == nil, allowed, label)
            XCTAssertEqual(loaded.routes[0].refusedRefs.isEmpty, allowed, label)
            if !allowed {
                XCTAssertTrue(loaded.routes[0].refusedRefs[0].contains("RefNotPermitted"), label)
                XCTAssertTrue(loaded.routes[0].refusedRefs[0].contains("store/db:80"), label)
            }
        }
        // Same namespace needs no grant; TLSRoutes follow the same rule with kind TLSRoute.
        XCTAssertEqual(try loader.load(yaml: Self.route("r", namespace: "store", host: "a.example", backend: "db", backendNamespace: nil), file: "s.yaml")
            .routes[0].rules[0].backends.count, 1)
        let tls = Self.route("t", namespace: "web", host: "t.example", backend: "db", backendNamespace: "store", kind: "TLSRoute")
        XCTAssertNotNil(try loader.load(yaml: tls, file: "t.yaml").tlsRoutes[0].backends[0].refused)
        XCTAssertNil(try loader.load(yaml: tls + "---\n" + Self.grant(namespace: "store", from: "web", fromKind: "TLSRoute"), file: "t.yaml")
            .tlsRoutes[0].backends[0].refused)
        // A RequestMirror into another namespace needs the grant too.
        let mirror = """
            apiVersion: gateway.networking.k8s.io/v1
            kind: HTTPRoute
            metadata: {name: m, namespace: web}
            spec:
              rules:
              - filters: [{type: RequestMirror, requestMirror: {backendRef: {name: db, namespace: store, port: 80}}}]
                backendRefs: [{name: front, port: 80}]

            """
        let mirrored = try loader.load(yaml: mirror, file: "m.yaml")
        XCTAssertEqual(mirrored.routes[0].rules[0].filters, [])
        XCTAssertEqual(mirrored.routes[0].refusedRefs.count, 1)

        let head = "apiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: {name: g, namespace: store}\n"
        let bad: [(String, String, String)] = [
            (head + "spec: {to: [{group: \"\", kind: Service}]}\n", "spec.from", "required field missing"),
            (head + "spec: {from: [], to: [{group: \"\", kind: Service}]}\n", "spec.from", "at least one"),
            (head + "spec: {from: [{group: g, kind: HTTPRoute}], to: [{group: \"\", kind: Service}]}\n", "spec.from[0].namespace", "required field missing"),
            (head + "spec: {from: [{group: g, kind: HTTPRoute, namespace: a}], to: [{group: \"\", kind: Service, port: 1}]}\n", "spec.to[0].port",
             "not implemented"),
        ]
        for (yaml, field, text) in bad {
            assertRefused(yaml, object: "ReferenceGrant store/g", field: field, text)
        }
    }

    /// Label selectors against Namespace labels, and the Namespace / Selector errors.
    func testNamespaceSelectorTable() throws {
        let namespaces = """
            apiVersion: v1
            kind: Namespace
            metadata: {name: prod, labels: {env: prod, team: shop}}
            ---
            apiVersion: v1
            kind: Namespace
            metadata: {name: dev, labels: {env: dev}}
            ---
            apiVersion: v1
            kind: Namespace
            metadata: {name: bare}

            """
        let cases: [(String, [String: Bool])] = [
            ("{matchLabels: {env: prod}}", ["prod": true, "dev": false, "bare": false, "unknown": false]),
            ("{matchExpressions: [{key: env, operator: In, values: [prod, dev]}]}", ["prod": true, "dev": true, "bare": false]),
            ("{matchExpressions: [{key: env, operator: NotIn, values: [prod]}]}", ["prod": false, "dev": true, "bare": true, "unknown": false]),
            ("{matchExpressions: [{key: team, operator: Exists}]}", ["prod": true, "dev": false]),
            ("{matchExpressions: [{key: team, operator: DoesNotExist}]}", ["prod": false, "dev": true, "bare": true]),
            ("{matchLabels: {env: prod}, matchExpressions: [{key: team, operator: In, values: [other]}]}", ["prod": false]),
            ("{}", ["prod": true, "bare": true, "unknown": false]),
        ]
        for (selector, expected) in cases {
            let gateway = """
                apiVersion: gateway.networking.k8s.io/v1
                kind: Gateway
                metadata: {name: gw, namespace: infra}
                spec:
                  listeners: [{name: web, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: Selector, selector: \(selector)}}}]

                """
            var yaml = namespaces + "---\n" + gateway
            for namespace in expected.keys.sorted() {
                yaml += "---\n" + Self.route("r", namespace: namespace, host: "a.example", backend: "b", backendNamespace: nil)
                    .replacingOccurrences(of: "spec:\n", with: "spec:\n  parentRefs: [{name: gw, namespace: infra}]\n")
            }
            let loaded = try HTTPRouteLoader().load(yaml: yaml, file: "sel.yaml")
            let listener = loaded.gateways[0].listeners[0]
            for (namespace, admitted) in expected {
                let route = loaded.routes.first { $0.namespace == namespace }!
                XCTAssertEqual(
                    listener.attach(route, of: loaded.gateways[0], namespaceLabels: loaded.namespaceLabels) != nil, admitted, "\(selector) \(namespace)")
            }
        }
        let listener = { (namespaces: String) in
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: gw}\nspec:\n  listeners: [{name: web, port: 80, protocol: HTTP, allowedRoutes: {namespaces: \(namespaces)}}]\n"
        }
        let bad: [(String, String, String, String)] = [
            (listener("{from: Selector, selector: {matchExpressions: [{key: a, operator: Near, values: [x]}]}}"), "Gateway default/gw",
             "spec.listeners[0].allowedRoutes.namespaces.selector.matchExpressions[0].operator", "In, NotIn"),
            (listener("{from: Selector, selector: {matchExpressions: [{key: a, operator: In}]}}"), "Gateway default/gw",
             "spec.listeners[0].allowedRoutes.namespaces.selector.matchExpressions[0].values", "needs values"),
            (listener("{from: Selector, selector: {matchExpressions: [{key: a, operator: Exists, values: [x]}]}}"), "Gateway default/gw",
             "spec.listeners[0].allowedRoutes.namespaces.selector.matchExpressions[0].values", "takes no values"),
            (listener("{from: All, selector: {matchLabels: {a: b}}}"), "Gateway default/gw", "spec.listeners[0].allowedRoutes.namespaces.selector",
             "needs from: Selector"),
            (listener("{from: Selector, selector: {matchLabels: {a: 1}}}"), "Gateway default/gw",
             "spec.listeners[0].allowedRoutes.namespaces.selector.matchLabels.a", "expected a string"),
            ("apiVersion: v1\nkind: Namespace\nmetadata: {name: n, labels: {a: [1]}}\n", "Namespace n", "metadata.labels.a", "expected a string"),
            ("apiVersion: v2\nkind: Namespace\nmetadata: {name: n}\n", "Namespace n", "apiVersion", "v1"),
        ]
        for (yaml, object, field, text) in bad {
            assertRefused(yaml, object: object, field: field, text)
        }
    }

    /// A rule of `web` splitting between `web/app` (permitted) and `store/db` (refused: no
    /// grant) with the given weights.
    static func split(appWeight: Int, dbWeight: Int, grant: Bool = false, dbNamespace: String = "store") -> String {
        """
        apiVersion: gateway.networking.k8s.io/v1
        kind: HTTPRoute
        metadata: {name: split, namespace: web}
        spec:
          hostnames: [split.example]
          rules: [{backendRefs: [{name: app, port: 80, weight: \(appWeight)}, {name: db, namespace: \(dbNamespace), port: 80, weight: \(dbWeight)}]}]

        """ + (grant ? "---\n" + Self.grant(namespace: "store", from: "web") : "")
    }

    /// Partial refusal: the refused backend keeps its weight and its share answers 500; the
    /// permitted backend is never given the refused share and a refused one is never a
    /// fallback. 10,000 seeded decisions per case.
    func testPartialRefusalTable() throws {
        let loader = HTTPRouteLoader(services: ["web/app": "127.0.0.1:1", "store/db": "127.0.0.1:2"])
        struct Case {
            var name: String
            var yaml: String
            /// Expected share of 500s (refused), 0…1.
            var refusedShare: Double
        }
        let cases = [
            Case(name: "1:1, db refused", yaml: Self.split(appWeight: 1, dbWeight: 1), refusedShare: 0.5),
            Case(name: "3:1, db refused", yaml: Self.split(appWeight: 3, dbWeight: 1), refusedShare: 0.25),
            Case(name: "1:1, db granted", yaml: Self.split(appWeight: 1, dbWeight: 1, grant: true), refusedShare: 0),
            Case(name: "1:0, db refused with weight 0", yaml: Self.split(appWeight: 1, dbWeight: 0), refusedShare: 0),
            Case(name: "0:1, only db has weight", yaml: Self.split(appWeight: 0, dbWeight: 1), refusedShare: 1),
            Case(name: "1:1, same namespace", yaml: Self.split(appWeight: 1, dbWeight: 1, dbNamespace: "web")
                .replacingOccurrences(of: "name: db, namespace: web", with: "name: app2, namespace: web"), refusedShare: 0),
        ]
        let request = RouteRequest(method: "GET", host: "split.example", path: "/")
        for c in cases {
            let manifests = try loader.load(yaml: c.yaml, file: "split.yaml")
            let table = RouteTable(routes: manifests.routes)
            var generator = SeededGenerator(seed: 7)
            let n = 10_000
            var refused = 0
            for _ in 0..<n {
                switch table.decide(request, using: &generator) {
                case .refusedBackend(let route, let reason):
                    refused += 1
                    XCTAssertEqual(route, "web/split#0", c.name)
                    XCTAssertTrue(reason.contains("store/db:80") && reason.contains("RefNotPermitted"), "\(c.name): \(reason)")
                case .forward(let forward):
                    XCTAssertNil(forward.backend.refused, c.name)
                    XCTAssertTrue(forward.fallbacks.allSatisfy { $0.refused == nil }, c.name)
                default:
                    XCTFail("\(c.name): unexpected action")
                }
            }
            // Binomial: within 4.5 standard deviations (p < 1e-5 for a correct split).
            let p = c.refusedShare
            let tolerance = 4.5 * (Double(n) * p * (1 - p)).squareRoot()
            XCTAssertLessThanOrEqual(abs(Double(refused) - Double(n) * p), tolerance, "\(c.name): \(refused) refused of \(n)")
            // The status row names the refused reference exactly when there is one.
            let resolved = RouteStatus.compute(manifests).first { $0.kind == "HTTPRoute" }?
                .parents.first?.conditions.first { $0.type == "ResolvedRefs" }
            XCTAssertEqual(resolved?.reason, manifests.routes[0].refusedRefs.isEmpty ? "ResolvedRefs" : "RefNotPermitted", c.name)
            XCTAssertEqual(manifests.routes[0].refusedRefs.isEmpty, !c.yaml.contains("namespace: store") || c.yaml.contains("ReferenceGrant"), c.name)
        }
    }

    /// End to end with curl: a 1:1 split between a permitted and a refused backend; 400
    /// requests on one kept-alive connection get both 200s (from the permitted backend) and
    /// 500s naming the refused reference, the 500 count within a binomial tolerance.
    func testPartialRefusalEndToEnd() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("refsplit-\(getpid())-\(UUID())").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let app = try PythonBackend("app", record: "\(dir)/app.log")
        defer { app.stop() }
        let db = try PythonBackend("db", record: "\(dir)/db.log")
        defer { db.stop() }
        try writeManifest(Self.split(appWeight: 1, dbWeight: 1), "split.yaml", in: dir)
        let manifests = try HTTPRouteLoader(services: ["web/app": app.address, "store/db": db.address]).load(directory: dir)
        let loops = try GateLoopGroup(count: 1)
        defer { loops.shutdown() }
        let gateway = try HTTPGateway(table: RouteTable(routes: manifests.routes), loops: loops)
        defer { gateway.stop() }
        let url = "http://127.0.0.1:\(gateway.address.port)/"
        let n = 400
        var args = ["-sS", "--max-time", "60", "-H", "Host: split.example", "-w", "%{http_code} %{num_connects}\n"]
        for _ in 0..<n { args += [url, "-o", "/dev/null"] }
        let r = try runProcess(try tool("curl"), args, timeout: 120)
        XCTAssertEqual(r.status, 0, r.err)
        let lines = r.out.split(separator: "\n")
        XCTAssertEqual(lines.count, n, r.out)
        let codes = lines.map { $0.split(separator: " ")[0] }
        let failures = codes.filter { $0 == "500" }.count
        let successes = codes.filter { $0 == "200" }.count
        XCTAssertEqual(failures + successes, n, r.out)
        XCTAssertGreaterThan(failures, 0)
        XCTAssertGreaterThan(successes, 0)
        // Binomial(400, 0.5): sd 10; 4.5 sd is p < 1e-5 for a correct split.
        XCTAssertLessThanOrEqual(abs(failures - n / 2), 45, "\(failures) of \(n) answered 500")
        // One connection: 500s are ordinary answers, the connection stays up.
        XCTAssertEqual(lines.filter { $0.hasSuffix(" 1") }.count, 1, r.out)
        // The refused backend never saw a request; a 500's body names the reference.
        XCTAssertFalse(FileManager.default.fileExists(atPath: "\(dir)/db.log"))
        let served = (try? String(contentsOfFile: "\(dir)/app.log", encoding: .utf8)) ?? ""
        XCTAssertEqual(served.split(separator: "\n").count, successes)
        var body = ""
        for _ in 0..<50 where !body.contains("500") {
            let one = try runProcess(try tool("curl"), ["-sS", "--max-time", "20", "-H", "Host: split.example", "-w", "\n%{http_code}", url])
            if one.out.hasSuffix("\n500") { body = one.out }
        }
        XCTAssertTrue(body.contains("backendRef store/db:80: RefNotPermitted"), body)
        XCTAssertTrue(body.contains("web/split#0"), body)
    }

    /// End to end: a route in `web` whose backend lives in `store` answers 500 until a
    /// ReferenceGrant file appears (then 200 from that backend, after the reload); a Gateway
    /// listener with a Selector admits the route from the `prod`-labelled namespace, not the
    /// one from `dev` (404), and follows a relabelled Namespace on reload.
    func testGrantAndSelectorEndToEnd() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("refgrant-\(getpid())-\(UUID())").path
        try FileManager.default.createDirectory(atPath: "\(dir)/routes", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var backends: [String: PythonBackend] = [:]
        defer { backends.values.forEach { $0.stop() } }
        for name in ["db", "prodapp", "devapp"] { backends[name] = try PythonBackend(name) }
        func namespace(_ name: String, env: String) -> String {
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: \(name), labels: {env: \(env)}}\n"
        }
        let attached = { (yaml: String) in yaml.replacingOccurrences(of: "spec:\n", with: "spec:\n  parentRefs: [{name: gw, namespace: infra}]\n") }
        try writeManifest(
            """
            apiVersion: gateway.networking.k8s.io/v1
            kind: Gateway
            metadata: {name: gw, namespace: infra}
            spec:
              listeners: [{name: web, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: Selector, selector: {matchLabels: {env: prod}}}}}]
            ---
            \(namespace("web", env: "prod"))---
            \(attached(Self.route("cross", namespace: "web", host: "cross.example", backend: "db", backendNamespace: "store")))---
            \(attached(Self.route("app", namespace: "web", host: "prod.example", backend: "prodapp", backendNamespace: nil)))---
            \(attached(Self.route("app", namespace: "lab", host: "dev.example", backend: "devapp", backendNamespace: nil)))
            """, "routes.yaml", in: "\(dir)/routes")
        try writeManifest(namespace("lab", env: "dev"), "lab.yaml", in: "\(dir)/routes")
        let loops = try GateLoopGroup(count: 1)
        defer { loops.shutdown() }
        var config = HTTPRouteConfig(
            manifests: "\(dir)/routes",
            services: ["store/db": backends["db"]!.address, "prodapp": backends["prodapp"]!.address, "devapp": backends["devapp"]!.address],
            listeners: [HTTPRouteListenerConfig(name: "web", port: 0, gateway: "infra/gw")])
        config.reloadInterval = 0.05
        let service = try HTTPRouteService(config: config, bind: "127.0.0.1", loops: loops)
        defer { service.stop() }
        func get(_ host: String) throws -> (code: String, body: String) {
            let r = try runProcess(
                try tool("curl"),
                ["-sS", "--max-time", "20", "-w", "\n%{http_code}", "-H", "Host: \(host)", "http://127.0.0.1:\(service.bound[0].address.port)/"])
            let lines = r.out.split(separator: "\n", omittingEmptySubsequences: false)
            return (String(lines.last ?? ""), lines.dropLast().joined(separator: "\n") + r.err)
        }
        let refused = try get("cross.example")
        XCTAssertEqual(refused.code, "500", refused.body)
        XCTAssertTrue(try get("prod.example").body.contains("\"backend\": \"prodapp\""))
        XCTAssertEqual(try get("dev.example").code, "404")

        try writeManifest(Self.grant(namespace: "store", from: "web", toName: "db"), "grant.yaml", in: "\(dir)/routes")
        XCTAssertTrue(try eventually { try get("cross.example").body.contains("\"backend\": \"db\"") }, "grant not applied")
        // Relabel lab as prod: its route attaches.
        try writeManifest(namespace("lab", env: "prod"), "lab.yaml", in: "\(dir)/routes")
        XCTAssertTrue(try eventually { try get("dev.example").body.contains("\"backend\": \"devapp\"") }, "relabelled namespace not admitted")
    }

    /// A Gateway listener's certificateRef to a Secret of another namespace: refused (listener
    /// status `ResolvedRefs False / RefNotPermitted`) without a grant from Gateways of the Gateway's
    /// namespace; with one, `<certificateDir>/<namespace>/<secret>.crt` is served by SNI
    /// (`openssl s_client` sees it).
    func testCrossNamespaceCertificateRef() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("refgrant-cert-\(getpid())-\(UUID())").path
        for sub in ["routes", "certs/vault"] { try FileManager.default.createDirectory(atPath: "\(dir)/\(sub)", withIntermediateDirectories: true) }
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let secret = try makeCertificate("secure.example", file: "shop-tls", in: "\(dir)/certs/vault")
        let gateway = """
            apiVersion: gateway.networking.k8s.io/v1
            kind: Gateway
            metadata: {name: gw, namespace: infra}
            spec:
              listeners:
              - {name: https, port: 443, protocol: HTTPS, hostname: secure.example, tls: {certificateRefs: [{name: shop-tls, namespace: vault}]}}

            """
        let grant = """
            apiVersion: gateway.networking.k8s.io/v1beta1
            kind: ReferenceGrant
            metadata: {name: tls, namespace: vault}
            spec:
              from: [{group: gateway.networking.k8s.io, kind: Gateway, namespace: infra}]
              to: [{group: "", kind: Secret, name: shop-tls}]

            """
        let refused = try HTTPRouteLoader().load(yaml: gateway, file: "gw.yaml")
        XCTAssertEqual(refused.gateways[0].listeners[0].certificateRefs, [])
        XCTAssertTrue(refused.gateways[0].refusedRefs.first?.contains("certificateRef vault/shop-tls: RefNotPermitted") == true, "\(refused.gateways[0])")
        let status = HTTPRouteStatusReport.compute(refused, listeners: nil).gateways.first?.listeners.first
        XCTAssertEqual(status?.conditions.first { $0.type == "ResolvedRefs" }?.reason, "RefNotPermitted")
        // A grant for routes (not Gateways) does not count.
        let routeGrant = grant.replacingOccurrences(of: "kind: Gateway", with: "kind: HTTPRoute")
        XCTAssertEqual(try HTTPRouteLoader().load(yaml: gateway + "---\n" + routeGrant, file: "gw.yaml").gateways[0].listeners[0].certificateRefs, [])
        XCTAssertEqual(
            try HTTPRouteLoader().load(yaml: gateway + "---\n" + grant, file: "gw.yaml").gateways[0].listeners[0].certificateRefs, ["vault/shop-tls"])

        try writeManifest(gateway + "---\n" + grant, "gw.yaml", in: "\(dir)/routes")
        let loops = try GateLoopGroup(count: 1)
        defer { loops.shutdown() }
        let service = try HTTPRouteService(
            config: HTTPRouteConfig(
                manifests: "\(dir)/routes",
                listeners: [HTTPRouteListenerConfig(name: "https", port: 0, gateway: "infra/gw", tls: HTTPRouteTLSConfig(certificateDir: "\(dir)/certs"))]),
            bind: "127.0.0.1", loops: loops)
        defer { service.stop() }
        let seen = try servedCertificate(port: service.bound[0].address.port, serverName: "secure.example")
        XCTAssertEqual(seen.fingerprint, try fileFingerprint(secret.cert), seen.output)
    }
}
