import Foundation
import XCTest

@testable import Gate

/// Builds an HTTPRoute manifest: `rules` is the YAML of `spec.rules` (indented by 2).
func routeYAML(_ name: String, namespace: String = "default", created: String? = nil, hostnames: [String] = [], rules: String) -> String {
    var out = """
        apiVersion: gateway.networking.k8s.io/v1
        kind: HTTPRoute
        metadata:
          name: \(name)
          namespace: \(namespace)

        """
    if let created { out += "  creationTimestamp: \"\(created)\"\n" }
    out += "spec:\n"
    if !hostnames.isEmpty { out += "  hostnames: [\(hostnames.map { "\"\($0)\"" }.joined(separator: ", "))]\n" }
    out += "  rules:\n" + rules
    return out
}

final class HTTPRouteLoaderTests: XCTestCase {
    let loader = HTTPRouteLoader(services: ["store-v1": "127.0.0.1:9001", "prod/store-v2": "10.0.0.2"])

    func testLoadsMultiDocumentManifest() throws {
        let yaml = """
            apiVersion: gateway.networking.k8s.io/v1
            kind: Gateway
            metadata: {name: edge}
            spec:
              gatewayClassName: ugate
              listeners:
              - {name: http, port: 8080, protocol: HTTP}
            ---
            apiVersion: gateway.networking.k8s.io/v1
            kind: HTTPRoute
            metadata:
              name: store
              namespace: prod
              creationTimestamp: "2024-01-02T03:04:05Z"
              labels: {app: store}
            spec:
              parentRefs: [{name: edge, namespace: default}]
              hostnames: ["store.example.com", "*.store.example.com"]
              rules:
              - matches:
                - path: {type: PathPrefix, value: /api}
                  method: POST
                  headers: [{name: X-Env, value: canary}, {type: RegularExpression, name: x-id, value: "[0-9]+"}]
                  queryParams: [{name: debug, value: "1"}]
                filters:
                - type: RequestHeaderModifier
                  requestHeaderModifier: {set: [{name: X-A, value: "1"}], add: [{name: X-B, value: "2"}], remove: [X-C]}
                backendRefs:
                - {name: store-v1, port: 80, weight: 90}
                - {name: store-v2, port: 8080, weight: 10}
                timeouts: {request: 1m30s}
            """
        let m = try loader.load(yaml: yaml, file: "a.yaml")
        XCTAssertEqual(m.gateways.map(\.name), ["edge"])
        XCTAssertEqual(m.gateways[0].listeners, [.init(name: "http", port: 8080, hostname: nil)])
        XCTAssertEqual(m.routes.count, 1)
        let route = m.routes[0]
        XCTAssertEqual(route.key, "prod/store")
        XCTAssertEqual(route.created, ISO8601DateFormatter().date(from: "2024-01-02T03:04:05Z"))
        XCTAssertEqual(route.hostnames, ["store.example.com", "*.store.example.com"])
        XCTAssertEqual(route.parents, [ParentRef(namespace: "default", name: "edge", sectionName: nil)])
        let rule = route.rules[0]
        XCTAssertEqual(rule.matches[0].path, .prefix("/api"))
        XCTAssertEqual(rule.matches[0].method, "POST")
        XCTAssertEqual(rule.matches[0].headers.map(\.name), ["x-env", "x-id"])
        XCTAssertEqual(rule.matches[0].queryParams.map(\.name), ["debug"])
        XCTAssertEqual(rule.requestTimeout, 90)
        XCTAssertEqual(rule.backends.map(\.destination), [Destination(host: "127.0.0.1", port: 9001), Destination(host: "10.0.0.2", port: 8080)])
        XCTAssertEqual(rule.backends.map(\.weight), [90, 10])
        XCTAssertEqual(rule.filters, [.requestHeaderModifier(HeaderModifier(set: [HTTPField("X-A", "1")], add: [HTTPField("X-B", "2")], remove: ["X-C"]))])
    }

    func testLoadsDirectorySortedAndRefusesDuplicates() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("httproute-\(getpid())-\(UUID())").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let rule = "  - backendRefs: [{name: a.internal, port: 80}]\n"
        try routeYAML("b", rules: rule).write(toFile: dir + "/2.yaml", atomically: true, encoding: .utf8)
        try routeYAML("a", rules: rule).write(toFile: dir + "/1.yml", atomically: true, encoding: .utf8)
        try "not a manifest".write(toFile: dir + "/README.txt", atomically: true, encoding: .utf8)
        XCTAssertEqual(try loader.load(directory: dir).routes.map(\.name), ["a", "b"])
        try routeYAML("a", rules: rule).write(toFile: dir + "/3.yaml", atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try loader.load(directory: dir)) { error in
            XCTAssertEqual((error as? HTTPRouteError)?.field, "metadata.name")
            XCTAssertTrue("\(error)".contains("3.yaml"), "\(error)")
        }
    }

    /// Each invalid manifest is refused with the file, the object and the field.
    func testInvalidManifestsNameFileObjectAndField() {
        let cases: [(String, HTTPRouteError.Code, String, String)] = [
            (routeYAML("r", rules: "  - matches: [{path: {type: Fuzzy, value: /}}]\n"), .invalid, "HTTPRoute default/r", "spec.rules[0].matches[0].path.type"),
            (routeYAML("r", rules: "  - matches: [{path: {value: nope}}]\n"), .invalid, "HTTPRoute default/r", "spec.rules[0].matches[0].path.value"),
            (routeYAML("r", rules: "  - matches: [{path: {type: RegularExpression, value: \"(\"}}]\n"), .invalid, "HTTPRoute default/r", "spec.rules[0].matches[0].path.value"),
            (routeYAML("r", rules: "  - filters: [{type: ExtensionRef, extensionRef: {group: x, kind: y, name: z}}]\n"), .unsupported, "HTTPRoute default/r", "spec.rules[0].filters[0].type"),
            (routeYAML("r", rules: "  - sessionPersistence: {sessionName: x}\n"), .unsupported, "HTTPRoute default/r", "spec.rules[0].sessionPersistence"),
            (routeYAML("r", rules: "  - backendRefs: [{name: svc}]\n"), .invalid, "HTTPRoute default/r", "spec.rules[0].backendRefs[0].port"),
            (routeYAML("r", rules: "  - backendRefs: [{name: svc, port: 80, weight: -1}]\n"), .invalid, "HTTPRoute default/r", "spec.rules[0].backendRefs[0].weight"),
            (routeYAML("r", rules: "  - filters: [{type: RequestRedirect, requestRedirect: {statusCode: 307}}]\n"), .unsupported, "HTTPRoute default/r", "spec.rules[0].filters[0].requestRedirect.statusCode"),
            (routeYAML("r", rules: "  - timeouts: {request: soon}\n"), .invalid, "HTTPRoute default/r", "spec.rules[0].timeouts.request"),
            (routeYAML("r", hostnames: ["bad host"], rules: "  - {}\n"), .invalid, "HTTPRoute default/r", "spec.hostnames[0]"),
            (routeYAML("r", rules: "  - filters: [{type: ResponseHeaderModifier, responseHeaderModifier: {set: [{name: X-A, value: \"a\\r\\nX-Evil: 1\"}]}}]\n"),
             .invalid, "HTTPRoute default/r", "spec.rules[0].filters[0].responseHeaderModifier.set[0].value"),
            (routeYAML("r", rules: "  - filters: [{type: RequestHeaderModifier, requestHeaderModifier: {add: [{name: \"bad name\", value: v}]}}]\n"),
             .invalid, "HTTPRoute default/r", "spec.rules[0].filters[0].requestHeaderModifier.add[0].name"),
            (routeYAML("r", rules: "  - filters: [{type: RequestHeaderModifier, requestHeaderModifier: {remove: [\"x:y\"]}}]\n"),
             .invalid, "HTTPRoute default/r", "spec.rules[0].filters[0].requestHeaderModifier.remove[0]"),
            ("apiVersion: gateway.networking.k8s.io/v1\nkind: TCPRoute\nmetadata: {name: t}\nspec: {}\n", .unsupported, "TCPRoute default/t", "kind"),
            ("apiVersion: v1\nkind: HTTPRoute\nmetadata: {name: t}\nspec: {}\n", .unsupported, "HTTPRoute default/t", "apiVersion"),
            ("apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {}\nspec: {}\n", .invalid, "document 1", "metadata.name"),
            ("kind: HTTPRoute\nmetadata: {name: x}\nspec: [\n", .unreadable, "document 1", ""),
            ("apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: ok}\nspec: {}\n---\nkind: [\n", .unreadable, "document 2", ""),
        ]
        for (yaml, code, object, field) in cases {
            XCTAssertThrowsError(try loader.load(yaml: yaml, file: "bad.yaml"), yaml) { error in
                guard let error = error as? HTTPRouteError else { return XCTFail("\(error)") }
                XCTAssertEqual(error.code, code, "\(error)")
                XCTAssertEqual(error.file, "bad.yaml")
                XCTAssertEqual(error.object, object, "\(error)")
                XCTAssertEqual(error.field, field, "\(error)")
            }
        }
    }
}

final class HTTPRoutePrecedenceTests: XCTestCase {
    struct Case {
        var name: String
        var routes: [String]
        var request: RouteRequest
        /// `namespace/name#rule`, nil for 404.
        var expect: String?
    }

    func route(_ yaml: String) throws -> HTTPRouteObject {
        try HTTPRouteLoader().load(yaml: yaml, file: "t.yaml").routes[0]
    }

    func testPrecedenceTable() throws {
        let b = "    backendRefs: [{name: b, port: 80}]\n"
        func rule(_ match: String) -> String { "  - matches: [\(match)]\n" + b }
        let cases: [Case] = [
            Case(name: "exact beats prefix", routes: [
                routeYAML("p", rules: rule("{path: {type: PathPrefix, value: /a}}")),
                routeYAML("e", rules: rule("{path: {type: Exact, value: /a}}")),
            ], request: RouteRequest(method: "GET", host: "x", path: "/a"), expect: "default/e#0"),
            Case(name: "longest prefix", routes: [
                routeYAML("short", rules: rule("{path: {type: PathPrefix, value: /a}}")),
                routeYAML("long", rules: rule("{path: {type: PathPrefix, value: /a/b}}")),
            ], request: RouteRequest(method: "GET", host: "x", path: "/a/b/c"), expect: "default/long#0"),
            Case(name: "prefix only on segment boundary", routes: [
                routeYAML("short", rules: rule("{path: {type: PathPrefix, value: /a}}")),
                routeYAML("long", rules: rule("{path: {type: PathPrefix, value: /a/b}}")),
            ], request: RouteRequest(method: "GET", host: "x", path: "/a/bc"), expect: "default/short#0"),
            Case(name: "trailing slash prefix", routes: [
                routeYAML("r", rules: rule("{path: {type: PathPrefix, value: /a/}}")),
            ], request: RouteRequest(method: "GET", host: "x", path: "/a"), expect: "default/r#0"),
            Case(name: "no segment match is 404", routes: [
                routeYAML("r", rules: rule("{path: {type: PathPrefix, value: /a}}")),
            ], request: RouteRequest(method: "GET", host: "x", path: "/ab"), expect: nil),
            Case(name: "method beats headers", routes: [
                routeYAML("h", rules: rule("{headers: [{name: a, value: '1'}, {name: b, value: '2'}]}")),
                routeYAML("m", rules: rule("{method: GET}")),
            ], request: RouteRequest(method: "GET", host: "x", path: "/", headers: [HTTPField("A", "1"), HTTPField("B", "2")]), expect: "default/m#0"),
            Case(name: "most headers", routes: [
                routeYAML("one", rules: rule("{headers: [{name: a, value: '1'}]}")),
                routeYAML("two", rules: rule("{headers: [{name: a, value: '1'}, {type: RegularExpression, name: b, value: '[0-9]'}]}")),
            ], request: RouteRequest(method: "GET", host: "x", path: "/", headers: [HTTPField("A", "1"), HTTPField("B", "2")]), expect: "default/two#0"),
            Case(name: "headers beat query params", routes: [
                routeYAML("q", rules: rule("{queryParams: [{name: v, value: '1'}, {name: w, value: '2'}]}")),
                routeYAML("h", rules: rule("{headers: [{name: a, value: '1'}]}")),
            ], request: RouteRequest(method: "GET", host: "x", path: "/", query: "v=1&w=2", headers: [HTTPField("a", "1")]), expect: "default/h#0"),
            Case(name: "most query params", routes: [
                routeYAML("q1", rules: rule("{queryParams: [{name: v, value: '1'}]}")),
                routeYAML("q2", rules: rule("{queryParams: [{name: v, value: '1'}, {type: RegularExpression, name: w, value: 'x.*'}]}")),
            ], request: RouteRequest(method: "GET", host: "x", path: "/", query: "v=1&w=xyz"), expect: "default/q2#0"),
            Case(name: "oldest route wins a tie", routes: [
                routeYAML("a-new", created: "2024-05-01T00:00:00Z", rules: rule("{path: {value: /}}")),
                routeYAML("z-old", created: "2023-05-01T00:00:00Z", rules: rule("{path: {value: /}}")),
            ], request: RouteRequest(method: "GET", host: "x", path: "/"), expect: "default/z-old#0"),
            Case(name: "alphabetical namespace/name on equal age", routes: [
                routeYAML("b", namespace: "ns1", created: "2023-05-01T00:00:00Z", rules: rule("{path: {value: /}}")),
                routeYAML("a", namespace: "ns2", created: "2023-05-01T00:00:00Z", rules: rule("{path: {value: /}}")),
            ], request: RouteRequest(method: "GET", host: "x", path: "/"), expect: "ns1/b#0"),
            Case(name: "first rule within a route", routes: [
                routeYAML("r", rules: rule("{path: {value: /}}") + rule("{path: {value: /}}")),
            ], request: RouteRequest(method: "GET", host: "x", path: "/"), expect: "default/r#0"),
            Case(name: "exact hostname beats wildcard", routes: [
                routeYAML("wild", hostnames: ["*.example.com"], rules: rule("{path: {type: Exact, value: /p}}")),
                routeYAML("exact", hostnames: ["foo.example.com"], rules: rule("{path: {value: /}}")),
            ], request: RouteRequest(method: "GET", host: "foo.example.com", path: "/p"), expect: "default/exact#0"),
            Case(name: "wildcard matches deeper names, not the apex", routes: [
                routeYAML("wild", hostnames: ["*.example.com"], rules: rule("{path: {value: /}}")),
            ], request: RouteRequest(method: "GET", host: "a.b.example.com", path: "/"), expect: "default/wild#0"),
            Case(name: "wildcard does not match apex", routes: [
                routeYAML("wild", hostnames: ["*.example.com"], rules: rule("{path: {value: /}}")),
            ], request: RouteRequest(method: "GET", host: "example.com", path: "/"), expect: nil),
            Case(name: "longer wildcard beats shorter", routes: [
                routeYAML("w1", hostnames: ["*.example.com"], rules: rule("{path: {value: /}}")),
                routeYAML("w2", hostnames: ["*.b.example.com"], rules: rule("{path: {value: /}}")),
            ], request: RouteRequest(method: "GET", host: "a.b.example.com", path: "/"), expect: "default/w2#0"),
            Case(name: "route without hostnames is the fallback", routes: [
                routeYAML("any", rules: rule("{path: {value: /}}")),
                routeYAML("named", hostnames: ["a.example"], rules: rule("{path: {value: /}}")),
            ], request: RouteRequest(method: "GET", host: "other.example", path: "/"), expect: "default/any#0"),
            Case(name: "regex path full match", routes: [
                routeYAML("re", rules: rule("{path: {type: RegularExpression, value: '/v[0-9]+/items'}}")),
            ], request: RouteRequest(method: "GET", host: "x", path: "/v2/items/extra"), expect: nil),
            Case(name: "prefix beats regex", routes: [
                routeYAML("re", rules: rule("{path: {type: RegularExpression, value: '/v[0-9]+/.*'}}")),
                routeYAML("p", rules: rule("{path: {value: /v2}}")),
            ], request: RouteRequest(method: "GET", host: "x", path: "/v2/items"), expect: "default/p#0"),
            Case(name: "header value mismatch is 404", routes: [
                routeYAML("h", rules: rule("{headers: [{name: env, value: canary}]}")),
            ], request: RouteRequest(method: "GET", host: "x", path: "/", headers: [HTTPField("Env", "prod")]), expect: nil),
        ]
        for c in cases {
            let table = RouteTable(routes: try c.routes.map(route))
            XCTAssertEqual(table.select(c.request)?.label, c.expect, c.name)
            // Input order must not matter.
            XCTAssertEqual(RouteTable(routes: try c.routes.reversed().map(route)).select(c.request)?.label, c.expect, c.name + " (reversed)")
        }
    }

    /// The hostname score compared on bytes (ASCII names and hosts) is the score by
    /// characters, for exact and wildcard names, ASCII and not, including hosts whose
    /// characters combine across the wildcard's dot.
    func testHostScoreOnBytesEqualsTheScoreByCharacters() {
        func byCharacters(_ hostnames: [String], _ host: String) -> (Int, Int)? {
            if hostnames.isEmpty { return (0, 0) }
            var best: (Int, Int)?
            for name in hostnames {
                var score: (Int, Int)?
                if name.hasPrefix("*.") {
                    if host.hasSuffix(name.dropFirst()) && host.count > name.count - 1 { score = (0, name.count) }
                } else if name == host {
                    score = (name.count, name.count)
                }
                if let s = score, best == nil || s > best! { best = s }
            }
            return best
        }
        let names = ["bench.example", "*.example", "*.bench.example", "example", "*.ex", "bücher.example", "*.bücher.example", "*.é", "a"]
        let hosts = [
            "bench.example", "a.bench.example", "example", ".example", "x.example", "bücher.example", "a.bücher.example", "\u{0600}.example",
            "e\u{301}.example", "é", "x.é", "a", "", "bench.examplf", "xbench.example",
        ]
        for host in hosts {
            for count in 0...3 {
                for offset in names.indices {
                    let list = (0..<count).map { names[($0 + offset) % names.count] }
                    let expected = byCharacters(list, host)
                    let got = RouteTable.hostScore(list, host)
                    XCTAssertTrue(expected == nil ? got == nil : got.map { $0 == expected! } ?? false, "\(list) \(host): \(String(describing: got)) != \(String(describing: expected))")
                }
            }
        }
    }
}

final class HTTPRouteFilterTests: XCTestCase {
    func decide(_ yaml: String, _ request: RouteRequest) throws -> RouteAction {
        var generator = SeededGenerator(seed: 1)
        return RouteTable(routes: try HTTPRouteLoader().load(yaml: yaml, file: "t.yaml").routes).decide(request, using: &generator)
    }

    func testRedirects() throws {
        func redirect(_ body: String, match: String = "{path: {value: /old}}", path: String = "/old/x", port: Int? = 8080) throws -> String? {
            let yaml = routeYAML("r", rules: "  - matches: [\(match)]\n    filters: [{type: RequestRedirect, requestRedirect: \(body)}]\n")
            guard case .redirect(_, let location, _) = try decide(yaml, RouteRequest(method: "GET", host: "a.example", port: port, path: path, query: "q=1")) else { return nil }
            return location
        }
        XCTAssertEqual(try redirect("{scheme: https}"), "https://a.example/old/x?q=1")
        XCTAssertEqual(try redirect("{hostname: b.example}"), "http://b.example:8080/old/x?q=1")
        XCTAssertEqual(try redirect("{scheme: https, port: 8443}"), "https://a.example:8443/old/x?q=1")
        XCTAssertEqual(try redirect("{port: 80}"), "http://a.example/old/x?q=1")
        XCTAssertEqual(try redirect("{path: {type: ReplaceFullPath, replaceFullPath: /new}}"), "http://a.example:8080/new?q=1")
        XCTAssertEqual(try redirect("{path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}}"), "http://a.example:8080/new/x?q=1")
        XCTAssertEqual(try redirect("{path: {type: ReplacePrefixMatch, replacePrefixMatch: /}}"), "http://a.example:8080/x?q=1")
        XCTAssertEqual(try redirect("{path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}}", path: "/old"), "http://a.example:8080/new?q=1")
        let yaml = routeYAML("r", rules: "  - filters: [{type: RequestRedirect, requestRedirect: {statusCode: 301, scheme: https}}]\n")
        guard case .redirect(let status, _, let route) = try decide(yaml, RouteRequest(method: "GET", host: "a", path: "/")) else { return XCTFail() }
        XCTAssertEqual(status, 301)
        XCTAssertEqual(route, "default/r#0")
    }

    func testRewriteAndHeaderModifiers() throws {
        let yaml = routeYAML("r", rules: """
              - matches: [{path: {value: /shop}}]
                filters:
                - {type: URLRewrite, urlRewrite: {hostname: backend.internal, path: {type: ReplacePrefixMatch, replacePrefixMatch: /store}}}
                - {type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: x-set, value: s}], add: [{name: X-Add, value: b}], remove: [x-drop]}}
                - {type: ResponseHeaderModifier, responseHeaderModifier: {add: [{name: X-Resp, value: r}]}}
                backendRefs: [{name: 127.0.0.1, port: 9000}]

            """)
        let request = RouteRequest(
            method: "GET", host: "shop.example", path: "/shop/cart", query: "id=3",
            headers: [HTTPField("Host", "shop.example"), HTTPField("X-Set", "old"), HTTPField("x-set", "old2"), HTTPField("X-Add", "a"), HTTPField("X-Drop", "1")])
        guard case .forward(let f) = try decide(yaml, request) else { return XCTFail() }
        XCTAssertEqual(f.target, "/store/cart?id=3")
        XCTAssertEqual(f.headers, [HTTPField("Host", "backend.internal"), HTTPField("X-Set", "s"), HTTPField("X-Add", "a,b")])
        XCTAssertEqual(f.backend.destination, Destination(host: "127.0.0.1", port: 9000))
        XCTAssertEqual(f.responseModifiers, [HeaderModifier(add: [HTTPField("X-Resp", "r")])])
        guard case .forward(let full) = try decide(
            routeYAML("r", rules: "  - filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplaceFullPath, replaceFullPath: /x}}}]\n    backendRefs: [{name: h, port: 1}]\n"),
            RouteRequest(method: "GET", host: "a", path: "/deep/path"))
        else { return XCTFail() }
        XCTAssertEqual(full.target, "/x")
        guard case .forward(let timed) = try decide(
            routeYAML("r", rules: "  - backendRefs: [{name: h, port: 1}]\n    timeouts: {request: 1s}\n"), RouteRequest(method: "GET", host: "a", path: "/"))
        else { return XCTFail() }
        XCTAssertEqual(timed.timeout, 1)
    }

    func testNoBackendAndNotFound() throws {
        let yaml = routeYAML("r", rules: "  - matches: [{path: {value: /z}}]\n    backendRefs: [{name: h, port: 1, weight: 0}]\n")
        XCTAssertEqual(try decide(yaml, RouteRequest(method: "GET", host: "a", path: "/z")), .noBackend(route: "default/r#0"))
        XCTAssertEqual(try decide(yaml, RouteRequest(method: "GET", host: "a", path: "/y")), .notFound)
    }

    /// 10,000 seeded picks over weights 70/20/10: Pearson's chi-square with 2 degrees of
    /// freedom stays below 13.82 (p = 0.001), and zero-weight backends are never picked.
    func testWeightedSplitChiSquare() {
        let backends = [("a", 70), ("b", 20), ("c", 10), ("never", 0)].map {
            RouteBackend(name: $0.0, destination: Destination(host: $0.0, port: 80), weight: $0.1)
        }
        for seed in [1, 2, 3] as [UInt64] {
            var generator = SeededGenerator(seed: seed)
            var counts: [String: Int] = [:]
            for _ in 0..<10_000 { counts[RouteTable.pick(backends, using: &generator)!.name, default: 0] += 1 }
            XCTAssertNil(counts["never"])
            let chi = [("a", 7000.0), ("b", 2000.0), ("c", 1000.0)].reduce(0.0) { sum, e in
                let observed = Double(counts[e.0] ?? 0)
                return sum + (observed - e.1) * (observed - e.1) / e.1
            }
            XCTAssertLessThan(chi, 13.82, "seed \(seed): \(counts)")
        }
    }
}
