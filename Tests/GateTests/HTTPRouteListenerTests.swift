import Foundation
import Glibc
import XCTest

@testable import Gate

/// A Gateway `infra/gw` manifest with `listeners` (YAML list items indented by two spaces).
func infraGateway(_ listeners: String) -> String {
    "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: infra}\nspec:\n  gatewayClassName: ugate\n  listeners:\n" + listeners
}

/// curl to `address` with `Host: host`: the name of the `PythonBackend` that answered 200, or
/// the status code of any other answer.
func answeringBackend(_ address: SocketAddress, host: String, path: String = "/x", file: StaticString = #filePath, line: UInt = #line) throws -> String {
    let r = try runProcess(
        try tool("curl"), ["-sS", "--max-time", "20", "-w", "\n%{http_code}", "-H", "Host: \(host)", "http://\(address)\(path)"], timeout: 60)
    XCTAssertEqual(r.status, 0, r.err, file: file, line: line)
    let lines = r.out.split(separator: "\n")
    guard lines.last == "200" else { return String(lines.last ?? "") }
    let body = (try? JSONSerialization.jsonObject(with: Data((lines.first ?? "").utf8))) as? [String: Any]
    return body?["backend"] as? String ?? r.out
}

/// Gateway listener semantics: hostname intersection between a listener's `hostname` and a
/// route's `hostnames`, `allowedRoutes.namespaces.from`, `parentRefs` `sectionName` / `port`,
/// and the same through a real `HTTPRouteService` listener with curl.
final class HTTPRouteListenerTests: XCTestCase {
    func testHostnameIntersectionTable() {
        struct Case {
            var listener: String?
            var route: [String]
            var expected: [String]
        }
        let cases: [Case] = [
            // No listener hostname: the route's names as they are (none = any host).
            Case(listener: nil, route: [], expected: []),
            Case(listener: nil, route: ["a.example.com", "*.b.com"], expected: ["a.example.com", "*.b.com"]),
            // No route hostnames: the listener's.
            Case(listener: "foo.example.com", route: [], expected: ["foo.example.com"]),
            Case(listener: "*.example.com", route: [], expected: ["*.example.com"]),
            // Exact vs exact.
            Case(listener: "foo.example.com", route: ["foo.example.com"], expected: ["foo.example.com"]),
            Case(listener: "foo.example.com", route: ["bar.example.com"], expected: []),
            // Wildcard listener, exact route names: those below the wildcard, any depth, not the apex.
            Case(listener: "*.example.com", route: ["foo.example.com", "a.b.example.com", "example.com", "foo.other.com"],
                 expected: ["foo.example.com", "a.b.example.com"]),
            // Exact listener, wildcard route: the listener's name when the wildcard covers it.
            Case(listener: "foo.example.com", route: ["*.example.com"], expected: ["foo.example.com"]),
            Case(listener: "example.com", route: ["*.example.com"], expected: []),
            Case(listener: "foo.example.com", route: ["*.other.com", "*.example.com", "foo.example.com"], expected: ["foo.example.com"]),
            // Wildcard vs wildcard: the more specific one.
            Case(listener: "*.example.com", route: ["*.example.com"], expected: ["*.example.com"]),
            Case(listener: "*.example.com", route: ["*.foo.example.com"], expected: ["*.foo.example.com"]),
            Case(listener: "*.foo.example.com", route: ["*.example.com"], expected: ["*.foo.example.com"]),
            Case(listener: "*.foo.example.com", route: ["*.bar.example.com"], expected: []),
            // A suffix that is not on a label boundary does not count.
            Case(listener: "*.example.com", route: ["fooexample.com", "*.myexample.com"], expected: []),
        ]
        for c in cases {
            XCTAssertEqual(RouteHostnames.intersect(listener: c.listener, route: c.route), c.expected, "\(c.listener ?? "nil") ∩ \(c.route)")
        }
    }

    func testAttachmentTable() {
        let gateway = GatewayObject(
            namespace: "infra", name: "gw",
            listeners: [
                .init(name: "web", port: 80, hostname: "*.shop.example"),
                .init(name: "open", port: 8080, hostname: nil, allowedNamespaces: .all),
            ], file: "g.yaml")
        let web = gateway.listeners[0], open = gateway.listeners[1]
        func route(_ namespace: String, _ hostnames: [String], _ parents: [ParentRef]) -> HTTPRouteObject {
            HTTPRouteObject(namespace: namespace, name: "r", created: nil, hostnames: hostnames, parents: parents, rules: [], file: "r.yaml")
        }
        func ref(_ namespace: String = "infra", name: String = "gw", section: String? = nil, port: Int? = nil) -> ParentRef {
            ParentRef(namespace: namespace, name: name, sectionName: section, port: port)
        }
        struct Case {
            var name: String
            var route: HTTPRouteObject
            var listener: GatewayObject.Listener
            var hostnames: [String]?  // nil: does not attach
        }
        let cases: [Case] = [
            Case(name: "same namespace, no section", route: route("infra", ["a.shop.example"], [ref()]), listener: web, hostnames: ["a.shop.example"]),
            Case(name: "other namespace refused by Same", route: route("team", ["a.shop.example"], [ref()]), listener: web, hostnames: nil),
            Case(name: "other namespace admitted by All", route: route("team", ["a.shop.example"], [ref()]), listener: open, hostnames: ["a.shop.example"]),
            Case(name: "sectionName selects", route: route("infra", [], [ref(section: "web")]), listener: web, hostnames: ["*.shop.example"]),
            Case(name: "sectionName of another listener", route: route("infra", [], [ref(section: "web")]), listener: open, hostnames: nil),
            Case(name: "port selects", route: route("infra", ["p.example"], [ref(port: 8080)]), listener: open, hostnames: ["p.example"]),
            Case(name: "port of another listener", route: route("infra", ["p.shop.example"], [ref(port: 8080)]), listener: web, hostnames: nil),
            Case(name: "section and port must both hold", route: route("infra", [], [ref(section: "web", port: 8080)]), listener: web, hostnames: nil),
            Case(name: "other gateway", route: route("infra", [], [ref(name: "other")]), listener: open, hostnames: nil),
            Case(name: "one of several parentRefs", route: route("infra", [], [ref(name: "other"), ref(section: "open")]), listener: open, hostnames: []),
            Case(name: "hostnames disjoint from the listener's", route: route("infra", ["api.example"], [ref()]), listener: web, hostnames: nil),
            Case(name: "hostnames narrowed", route: route("infra", ["api.example", "*.example"], [ref()]), listener: web, hostnames: ["*.shop.example"]),
            Case(name: "no parentRefs: every listener, still narrowed", route: route("team", ["x.shop.example", "y.example"], []), listener: web,
                 hostnames: ["x.shop.example"]),
            Case(name: "no parentRefs, no listener hostname", route: route("team", [], []), listener: open, hostnames: []),
        ]
        for c in cases {
            XCTAssertEqual(c.listener.attach(c.route, of: gateway)?.hostnames, c.hostnames, c.name)
        }
    }

    func testLoaderListenerFieldsAndErrors() throws {
        let loader = HTTPRouteLoader()
        func gatewayYAML(_ listener: String) -> String { infraGateway("  - " + listener + "\n") }
        let ok = try loader.load(
            yaml: gatewayYAML("{name: web, port: 80, protocol: HTTP, hostname: \"*.Shop.example\", allowedRoutes: {namespaces: {from: All}, kinds: [{kind: HTTPRoute}]}}")
                + "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r}\nspec:\n  parentRefs: [{name: gw, namespace: infra, sectionName: web, port: 80}]\n",
            file: "ok.yaml")
        XCTAssertEqual(ok.gateways[0].listeners, [.init(name: "web", port: 80, hostname: "*.shop.example", allowedNamespaces: .all)])
        XCTAssertEqual(ok.routes[0].parents, [ParentRef(namespace: "infra", name: "gw", sectionName: "web", port: 80)])
        let plain = try loader.load(yaml: gatewayYAML("{name: web, port: 80, protocol: HTTP}"), file: "plain.yaml")
        XCTAssertEqual(plain.gateways[0].listeners[0].allowedNamespaces, .same)
        let https = try loader.load(
            yaml: gatewayYAML("{name: web, port: 443, protocol: HTTPS, tls: {mode: Terminate, certificateRefs: [{kind: Secret, group: \"\", name: c1}, {name: c2}]}}"),
            file: "https.yaml")
        XCTAssertEqual(https.gateways[0].listeners[0].certificateRefs, ["c1", "c2"])
        let bad: [(String, HTTPRouteError.Code, String, String)] = [
            ("{name: web, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: Selector}}}", .invalid,
             "spec.listeners[0].allowedRoutes.namespaces.selector", "needs a selector"),
            ("{name: web, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: Some}}}", .invalid,
             "spec.listeners[0].allowedRoutes.namespaces.from", "Same, All"),
            ("{name: web, port: 80, protocol: HTTP, allowedRoutes: {kinds: [{kind: GRPCRoute}]}}", .unsupported,
             "spec.listeners[0].allowedRoutes.kinds[0].kind", "GRPCRoute"),
            ("{name: web, port: 80, protocol: HTTP, allowedRoutes: {other: 1}}", .unsupported, "spec.listeners[0].allowedRoutes.other", "not implemented"),
            ("{name: web, port: 80, protocol: HTTP, hostname: \"a b\"}", .invalid, "spec.listeners[0].hostname", "not a DNS name"),
            ("{name: web, port: 443, protocol: HTTPS}", .invalid, "spec.listeners[0].tls", "required field missing"),
            ("{name: web, port: 443, protocol: HTTPS, tls: {mode: Passthrough, certificateRefs: [{name: c}]}}", .invalid,
             "spec.listeners[0].tls.mode", "protocol TLS"),
            ("{name: web, port: 443, protocol: HTTPS, tls: {certificateRefs: [{kind: ConfigMap, name: c}]}}", .unsupported,
             "spec.listeners[0].tls.certificateRefs[0].kind", "ConfigMap"),
            ("{name: web, port: 443, protocol: HTTPS, tls: {certificateRefs: []}}", .invalid, "spec.listeners[0].tls.certificateRefs", "needs a certificateRef"),
            ("{name: web, port: 443, protocol: HTTPS, tls: {certificateRefs: [{name: c}], options: {a: b}}}", .unsupported, "spec.listeners[0].tls.options",
             "not implemented"),
            ("{name: web, port: 80, protocol: HTTP, tls: {certificateRefs: [{name: c}]}}", .invalid, "spec.listeners[0].tls", "protocol HTTP"),
            ("{name: web, port: 443, protocol: TLS}", .invalid, "spec.listeners[0].tls", "required field missing"),
            ("{name: web, port: 443, protocol: TLS, tls: {mode: Terminate}}", .unsupported, "spec.listeners[0].tls.mode", "Passthrough is"),
            ("{name: web, port: 443, protocol: TLS, tls: {mode: Passthrough}, allowedRoutes: {kinds: [{kind: HTTPRoute}]}}", .unsupported,
             "spec.listeners[0].allowedRoutes.kinds[0].kind", "TLSRoute is"),
            ("{name: web, port: 53, protocol: UDP}", .unsupported, "spec.listeners[0].protocol", "UDP"),
        ]
        for (listener, code, field, text) in bad {
            assertRefused(gatewayYAML(listener), code: code, object: "Gateway infra/gw", field: field, text)
        }
    }

    /// Two configured listeners of one Gateway manifest: `web` (hostname `*.shop.example`,
    /// namespaces Same) and `open` (no hostname, namespaces All, port 8080 in the manifest).
    /// curl checks which backend each Host reaches on each listener.
    func testListenerSemanticsEndToEnd() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("httproute-listener-\(getpid())-\(UUID())").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var backends: [String: PythonBackend] = [:]
        defer { backends.values.forEach { $0.stop() } }
        for name in ["a", "b", "c"] { backends[name] = try PythonBackend(name) }
        func route(_ name: String, _ namespace: String, _ hostnames: [String], _ parent: String, _ backend: String) -> String {
            """
            ---
            apiVersion: gateway.networking.k8s.io/v1
            kind: HTTPRoute
            metadata: {name: \(name), namespace: \(namespace)}
            spec:
              parentRefs: [\(parent)]
              hostnames: [\(hostnames.joined(separator: ", "))]
              rules: [{backendRefs: [{name: \(backend), port: 80}]}]

            """
        }
        let manifest = infraGateway(
            """
              - {name: web, port: 80, protocol: HTTP, hostname: "*.shop.example"}
              - {name: open, port: 8080, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}

            """)
            + route("r1", "infra", ["a.shop.example", "api.example"], "{name: gw}", "a")
            + route("r2", "infra", [], "{name: gw, sectionName: web}", "b")
            + route("r3", "team", ["t.shop.example"], "{name: gw, namespace: infra}", "c")
            + route("r4", "infra", ["p.example"], "{name: gw, port: 8080}", "c")
        try manifest.write(toFile: "\(dir)/gw.yaml", atomically: true, encoding: .utf8)
        let loops = try GateLoopGroup(count: 1)
        defer { loops.shutdown() }
        let service = try HTTPRouteService(
            config: HTTPRouteConfig(
                manifests: dir, services: Dictionary(uniqueKeysWithValues: backends.map { ($0.key, $0.value.address) }),
                listeners: [
                    HTTPRouteListenerConfig(name: "web", port: 0, gateway: "infra/gw"),
                    HTTPRouteListenerConfig(name: "open", port: 0, gateway: "infra/gw"),
                ]), bind: "127.0.0.1", loops: loops)
        defer { service.stop() }
        func get(_ listener: Int, _ host: String) throws -> String { try answeringBackend(service.bound[listener].address, host: host) }
        let expected: [(Int, String, String)] = [
            (0, "a.shop.example", "a"),  // r1, narrowed to the listener's wildcard
            (0, "api.example", "404"),  // r1's other name is outside *.shop.example
            (0, "z.shop.example", "b"),  // r2 inherits *.shop.example
            (0, "t.shop.example", "b"),  // r3 (namespace team) refused by from: Same; r2 serves
            (0, "p.example", "404"),  // r4 names port 8080
            (0, "shop.example", "404"),  // the wildcard does not cover its apex
            (1, "api.example", "a"),
            (1, "t.shop.example", "c"),  // from: All admits r3
            (1, "p.example", "c"),
            (1, "z.shop.example", "404"),  // r2 is sectionName web only
        ]
        for (listener, host, answer) in expected {
            XCTAssertEqual(try get(listener, host), answer, "listener \(service.bound[listener].name) Host \(host)")
        }
    }

    /// Three HTTP listeners of one Gateway on manifest port 80 (`a.example`, `*.b.example`,
    /// `c.example`) and one on 8080, only `a` configured: routes attached by `sectionName` to
    /// `b` and `c` are served on `a`'s socket for their listener's hostnames (narrowed to them),
    /// a parentless route on every listener's names, the 8080 one not at all; `b` and `c` are
    /// `Programmed` by configured listener `a`, the 8080 one stays `Pending`. curl checks
    /// which backend each Host reaches.
    func testSectionNameOfAnotherListenerOnThePort() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("httproute-section-\(getpid())-\(UUID())").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var backends: [String: PythonBackend] = [:]
        defer { backends.values.forEach { $0.stop() } }
        for name in ["a", "b", "c", "d"] { backends[name] = try PythonBackend(name) }
        func route(_ name: String, _ hostnames: [String], _ parent: String, _ backend: String, path: String = "/") -> String {
            """
            ---
            apiVersion: gateway.networking.k8s.io/v1
            kind: HTTPRoute
            metadata: {name: \(name), namespace: infra}
            spec:
            \(parent.isEmpty ? "" : "  parentRefs: [\(parent)]\n")  hostnames: [\(hostnames.joined(separator: ", "))]
              rules: [{matches: [{path: {type: PathPrefix, value: \(path)}}], backendRefs: [{name: \(backend), port: 80}]}]

            """
        }
        let manifest = infraGateway(
            """
              - {name: a, port: 80, protocol: HTTP, hostname: a.example}
              - {name: b, port: 80, protocol: HTTP, hostname: "*.b.example"}
              - {name: c, port: 80, protocol: HTTP, hostname: c.example}
              - {name: far, port: 8080, protocol: HTTP, hostname: far.example}

            """)
            + route("ra", [], "{name: gw, sectionName: a}", "a")
            + route("rb", ["x.b.example", "a.example"], "{name: gw, sectionName: b}", "b")
            + route("rc", [], "{name: gw, sectionName: c}", "c")
            + route("rfar", [], "{name: gw, sectionName: far}", "d")
            + route("bare", [], "", "d", path: "/bare")
        try manifest.write(toFile: "\(dir)/gw.yaml", atomically: true, encoding: .utf8)
        let loops = try GateLoopGroup(count: 1)
        defer { loops.shutdown() }
        let config = HTTPRouteConfig(
            manifests: dir, services: Dictionary(uniqueKeysWithValues: backends.map { ($0.key, $0.value.address) }),
            listeners: [HTTPRouteListenerConfig(name: "a", port: 0, gateway: "infra/gw")])
        let service = try HTTPRouteService(config: config, bind: "127.0.0.1", loops: loops)
        defer { service.stop() }
        func get(_ host: String, _ path: String) throws -> String { try answeringBackend(service.bound[0].address, host: host, path: path) }
        let expected: [(String, String, String)] = [
            ("a.example", "/x", "a"),  // ra on its own listener
            ("x.b.example", "/x", "b"),  // rb by sectionName b, narrowed to *.b.example
            ("y.b.example", "/x", "404"),  // rb names only x.b.example
            ("c.example", "/x", "c"),  // rc inherits c.example
            ("far.example", "/x", "404"),  // listener far is on another port
            ("other.example", "/x", "404"),
            ("c.example", "/bare", "d"),  // the parentless route on every listener's names
            ("z.b.example", "/bare", "d"),
            ("x.b.example", "/bare", "b"),  // rb's exact name is more specific than bare's *.b.example
            ("other.example", "/bare", "404"),
        ]
        for (host, path, answer) in expected {
            XCTAssertEqual(try get(host, path), answer, "Host \(host) \(path)")
        }
        let listeners = Dictionary(uniqueKeysWithValues: service.status().gateways[0].listeners.map { ($0.name, $0) })
        for name in ["a", "b", "c"] {
            let programmed = listeners[name]?.conditions.first { $0.type == "Programmed" }
            XCTAssertEqual(programmed?.status, "True", name)
            XCTAssertTrue(programmed?.message.contains("served by configured listener a on 127.0.0.1:") == true, "\(name): \(programmed?.message ?? "-")")
        }
        XCTAssertEqual(listeners["far"]?.conditions.first { $0.type == "Programmed" }?.reason, "Pending")
        let routes = Dictionary(uniqueKeysWithValues: service.status().routes.map { ($0.name, $0) })
        XCTAssertEqual(routes["rb"]?.parents.first?.conditions.first?.status, "True")
    }

    /// An existing Gateway manifest's HTTPS listeners pick their certificates from the
    /// configured `certificateDir` by Secret name; checked with `openssl s_client -servername`
    /// and curl over TLS.
    func testGatewayCertificateRefsFromCertificateDir() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("httproute-certrefs-\(getpid())-\(UUID())").path
        for sub in ["routes", "certs"] { try FileManager.default.createDirectory(atPath: "\(dir)/\(sub)", withIntermediateDirectories: true) }
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let shop = try makeCertificate("shop.example.com", file: "shop-cert", in: "\(dir)/certs")
        let api = try makeCertificate("*.api.example", file: "api-cert", in: "\(dir)/certs")
        _ = try makeCertificate("fallback.example", file: "fallback-cert", in: "\(dir)/certs")
        let backend = try PythonBackend("a")
        defer { backend.stop() }
        let apiBackend = try PythonBackend("b")
        defer { apiBackend.stop() }
        try infraGateway(
            """
              - name: https-shop
                port: 443
                protocol: HTTPS
                hostname: shop.example.com
                tls: {mode: Terminate, certificateRefs: [{kind: Secret, group: "", name: shop-cert}]}
              - name: https-api
                port: 443
                protocol: HTTPS
                hostname: "*.api.example"
                tls: {certificateRefs: [{name: api-cert}]}
              - name: https-any
                port: 443
                protocol: HTTPS
                tls: {certificateRefs: [{name: fallback-cert}]}
              - name: other-port
                port: 8443
                protocol: HTTPS
                hostname: other.example
                tls: {certificateRefs: [{name: missing-cert}]}
            ---
            apiVersion: gateway.networking.k8s.io/v1
            kind: HTTPRoute
            metadata: {name: r, namespace: infra}
            spec:
              parentRefs: [{name: gw}]
              rules: [{backendRefs: [{name: a, port: 80}]}]
            ---
            apiVersion: gateway.networking.k8s.io/v1
            kind: HTTPRoute
            metadata: {name: api-only, namespace: infra}
            spec:
              parentRefs: [{name: gw, sectionName: https-api}]
              rules: [{matches: [{path: {type: PathPrefix, value: /only}}], backendRefs: [{name: b, port: 80}]}]

            """
        ).write(toFile: "\(dir)/routes/gw.yaml", atomically: true, encoding: .utf8)
        let loops = try GateLoopGroup(count: 1)
        defer { loops.shutdown() }
        let listener = HTTPRouteListenerConfig(name: "https-any", port: 0, gateway: "infra/gw", tls: HTTPRouteTLSConfig(certificateDir: "\(dir)/certs"))
        let service = try HTTPRouteService(
            config: HTTPRouteConfig(manifests: "\(dir)/routes", services: ["a": backend.address, "b": apiBackend.address], listeners: [listener]), bind: "127.0.0.1", loops: loops)
        defer { service.stop() }
        let port = service.bound[0].address.port
        for (sni, subject) in [("shop.example.com", "shop.example.com"), ("x.api.example", "*.api.example"), ("unknown.example", "fallback.example")] {
            let s = try runProcess(try tool("openssl"), ["s_client", "-connect", "127.0.0.1:\(port)", "-servername", sni, "-alpn", "h2"], timeout: 30)
            XCTAssertTrue(s.out.contains("subject=CN = \(subject)"), "\(sni): \(s.out)")
        }
        let r = try runProcess(
            try tool("curl"),
            ["-sS", "--max-time", "20", "--resolve", "shop.example.com:\(port):127.0.0.1", "--cacert", shop.cert, "https://shop.example.com:\(port)/tls"],
            timeout: 60)
        XCTAssertEqual(r.status, 0, r.err)
        XCTAssertTrue(r.out.contains("\"backend\": \"a\"") || r.out.contains("\"backend\":\"a\""), r.out)
        let viaAPI = try runProcess(
            try tool("curl"),
            ["-sS", "--max-time", "20", "--resolve", "x.api.example:\(port):127.0.0.1", "--cacert", api.cert, "https://x.api.example:\(port)/tls"],
            timeout: 60)
        XCTAssertEqual(viaAPI.status, 0, viaAPI.err)
        // A route attached by sectionName to https-api (another HTTPS listener of the port than
        // the configured https-any) is served for https-api's hostname only, over HTTP/2.
        for (host, cert, expected) in [("x.api.example", api.cert, "2 b"), ("shop.example.com", shop.cert, "2 a")] {
            let only = try runProcess(
                try tool("curl"),
                ["-sS", "--max-time", "20", "-w", "\n%{http_version}", "--resolve", "\(host):\(port):127.0.0.1", "--cacert", cert, "https://\(host):\(port)/only"],
                timeout: 60)
            let lines = only.out.split(separator: "\n")
            let body = (try? JSONSerialization.jsonObject(with: Data((lines.first ?? "").utf8))) as? [String: Any]
            XCTAssertEqual("\(lines.last ?? "") \(body?["backend"] as? String ?? "-")", expected, "\(host): \(only.out) \(only.err)")
        }
        // Without certificateDir the Gateway's certificateRefs cannot be found: a clear error.
        XCTAssertThrowsError(
            try HTTPRouteListenerConfig(name: "https-any", port: 0, gateway: "infra/gw", tls: HTTPRouteTLSConfig())
                .tlsConfig(in: HTTPRouteLoader().load(directory: "\(dir)/routes"))
        ) { XCTAssertTrue("\($0)".contains("listener https-shop has tls.certificateRefs; set tls.certificateDir"), "\($0)") }
    }
}
