import Foundation
import Glibc
import XCTest

@testable import Gate

/// Writes `text` to `dir/name` through a temporary file and a rename (the watcher never sees
/// half a file).
func writeManifest(_ text: String, _ name: String, in dir: String) throws {
    try text.write(toFile: "\(dir)/.\(name).tmp", atomically: false, encoding: .utf8)
    guard rename("\(dir)/.\(name).tmp", "\(dir)/\(name)") == 0 else { throw GateError(.config, "rename \(name) failed") }
}

/// Python for the raw HTTP/2 test clients: `next_frame()` reads one frame (hyperframe's
/// `Frame`, imported by the client) from the global `sock`, keeping what follows in the global
/// `buf`; None once the peer closed.
let pythonNextFrame = """
    def next_frame():
        global buf
        while True:
            if len(buf) >= 9:
                frame, length = Frame.parse_frame_header(memoryview(buf[:9]))
                if len(buf) >= 9 + length:
                    frame.parse_body(memoryview(buf[9:9 + length]))
                    buf = buf[9 + length:]
                    return frame
            data = sock.recv(65536)
            if not data:
                return None
            buf += data
    """

/// `routes.yaml` in `dir`: one HTTPRoute `name` sending everything to the service `name`.
func writeOneBackendRoute(_ name: String, in dir: String) throws {
    try writeManifest(
        """
        apiVersion: gateway.networking.k8s.io/v1
        kind: HTTPRoute
        metadata: {name: \(name)}
        spec:
          rules: [{backendRefs: [{name: \(name), port: 80}]}]

        """, "routes.yaml", in: dir)
}

/// Polls `condition` every 50 ms for at most `seconds`; true once it holds.
func eventually(_ seconds: Double = 20, _ condition: () throws -> Bool) rethrows -> Bool {
    let end = Date().addingTimeInterval(seconds)
    while Date() < end {
        if try condition() { return true }
        usleep(50_000)
    }
    return try condition()
}

/// `openssl s_client -servername NAME` through `port`: the subject and SHA-256 fingerprint of
/// the certificate the client saw ("" when the handshake failed).
func servedCertificate(port: UInt16, serverName: String) throws -> (subject: String, fingerprint: String, output: String) {
    let script = """
        echo | \(try tool("openssl")) s_client -connect 127.0.0.1:\(port) -servername \(serverName) 2>/dev/null \
          | \(try tool("openssl")) x509 -noout -subject -fingerprint -sha256 2>&1
        """
    let r = try runProcess(try tool("sh"), ["-c", script], timeout: 30)
    var subject = ""
    var fingerprint = ""
    for line in r.out.split(separator: "\n") {
        if line.hasPrefix("subject=") { subject = String(line.dropFirst(8)).replacingOccurrences(of: " ", with: "") }
        if line.lowercased().hasPrefix("sha256 fingerprint=") { fingerprint = String(line.split(separator: "=")[1]) }
    }
    return (subject, fingerprint, r.out + r.err)
}

/// Checks that loading `yaml` (as file `bad.yaml`) is refused with an `HTTPRouteError` naming
/// the file, `object` and `field`, whose text contains `text` (and whose code is `code`, when given).
func assertRefused(
    _ yaml: String, code: HTTPRouteError.Code? = nil, object: String, field: String, _ text: String, file: StaticString = #filePath, line: UInt = #line
) {
    XCTAssertThrowsError(try HTTPRouteLoader().load(yaml: yaml, file: "bad.yaml"), yaml, file: file, line: line) { error in
        guard let e = error as? HTTPRouteError else { return XCTFail("\(error)", file: file, line: line) }
        if let code { XCTAssertEqual(e.code, code, "\(e)", file: file, line: line) }
        XCTAssertEqual(e.file, "bad.yaml", file: file, line: line)
        XCTAssertEqual(e.object, object, "\(e)", file: file, line: line)
        XCTAssertEqual(e.field, field, "\(e)", file: file, line: line)
        XCTAssertTrue(e.description.contains(text), e.description, file: file, line: line)
    }
}

/// The SHA-256 fingerprint of a PEM certificate file.
func fileFingerprint(_ cert: String) throws -> String {
    let r = try runProcess(try tool("openssl"), ["x509", "-in", cert, "-noout", "-fingerprint", "-sha256"])
    return r.out.split(separator: "=").last.map { $0.trimmingCharacters(in: .whitespacesAndNewlines) } ?? ""
}

/// TLSRoute manifests: loading and errors, SNI precedence (`PassthroughTable`), and end to end
/// through a `protocol: TLS` / `Passthrough` Gateway listener next to an HTTPS one on the same
/// configured port: curl and `openssl s_client` see the backends' own certificates (no
/// termination), the manifests reload, ugate.json passthrough keeps working.
final class HTTPRouteTLSRouteTests: XCTestCase {
    func tlsRouteYAML(_ name: String, namespace: String = "default", hostnames: [String], backends: String, parents: String = "", created: String? = nil)
        -> String
    {
        """
        apiVersion: gateway.networking.k8s.io/v1alpha2
        kind: TLSRoute
        metadata: {name: \(name), namespace: \(namespace)\(created.map { ", creationTimestamp: \"\($0)\"" } ?? "")}
        spec:
          hostnames: [\(hostnames.map { "\"\($0)\"" }.joined(separator: ", "))]
        \(parents.isEmpty ? "" : "  parentRefs: [\(parents)]\n")  rules:
          - backendRefs: [\(backends)]

        """
    }

    func testLoaderFieldsAndErrors() throws {
        let loader = HTTPRouteLoader(services: ["db": "127.0.0.1:5432"])
        let loaded = try loader.load(
            yaml: tlsRouteYAML(
                "db", namespace: "data", hostnames: ["DB.example.com", "*.db.example.com"],
                backends: "{name: db, port: 5432, weight: 3}, {name: replica, port: 5433, weight: 1}",
                parents: "{name: gw, namespace: infra, sectionName: tls, port: 443}"),
            file: "tls.yaml")
        XCTAssertEqual(loaded.tlsRoutes.count, 1)
        let route = loaded.tlsRoutes[0]
        XCTAssertEqual(route.key, "data/db")
        XCTAssertEqual(route.hostnames, ["db.example.com", "*.db.example.com"])
        XCTAssertEqual(route.parents, [ParentRef(namespace: "infra", name: "gw", sectionName: "tls", port: 443)])
        XCTAssertEqual(route.backends.map(\.destination), [Destination(host: "127.0.0.1", port: 5432), Destination(host: "replica", port: 5433)])
        XCTAssertEqual(route.backends.map(\.weight), [3, 1])
        XCTAssertEqual(route.file, "tls.yaml")

        let head = "apiVersion: gateway.networking.k8s.io/v1alpha2\nkind: TLSRoute\nmetadata: {name: t}\n"
        let bad: [(String, HTTPRouteError.Code, String, String)] = [
            (head + "spec: {hostnames: [a.example]}\n", .invalid, "spec.rules", "required field missing"),
            (head + "spec: {rules: [{backendRefs: [{name: a, port: 1}], matches: []}]}\n", .unsupported, "spec.rules[0].matches", "not implemented"),
            (head + "spec: {rules: [{backendRefs: [{name: a}]}]}\n", .invalid, "spec.rules[0].backendRefs[0].port", "needs a port"),
            (head + "spec: {rules: [{backendRefs: [{name: a, port: 1, weight: -1}]}]}\n", .invalid, "spec.rules[0].backendRefs[0].weight", "out of range"),
            (head + "spec: {hostnames: [\"a b\"], rules: [{backendRefs: [{name: a, port: 1}]}]}\n", .invalid, "spec.hostnames[0]", "not a DNS name"),
            (head + "spec: {rules: [{backendRefs: [{name: a, port: 1}]}], tls: {}}\n", .unsupported, "spec.tls", "not implemented"),
            (head.replacingOccurrences(of: "v1alpha2", with: "v1") + "spec: {rules: []}\n", .unsupported, "apiVersion", "v1alpha2"),
            (head + "spec: {parentRefs: [{name: gw, kind: Service}], rules: [{backendRefs: [{name: a, port: 1}]}]}\n", .unsupported,
             "spec.parentRefs[0].kind", "Gateway is"),
        ]
        for (yaml, code, field, text) in bad {
            assertRefused(yaml, code: code, object: "TLSRoute default/t", field: field, text)
        }
        // Two TLSRoutes of one name in a folder are refused.
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("tlsroute-dup-\(getpid())").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let one = tlsRouteYAML("same", hostnames: ["a.example"], backends: "{name: a, port: 1}")
        try one.write(toFile: "\(dir)/a.yaml", atomically: true, encoding: .utf8)
        try one.write(toFile: "\(dir)/b.yaml", atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try loader.load(directory: dir)) { error in
            XCTAssertEqual((error as? HTTPRouteError)?.object, "TLSRoute default/same", "\(error)")
            XCTAssertEqual((error as? HTTPRouteError)?.field, "metadata.name", "\(error)")
        }
    }

    /// SNI → passthrough entry: exact over wildcard, the longest wildcard, the catch-all route,
    /// ugate.json over TLSRoutes, the oldest TLSRoute (then namespace/name) for one hostname.
    func testPassthroughPrecedenceTable() throws {
        func route(_ name: String, _ hosts: [String], created: Double? = nil, namespace: String = "default") -> TLSRouteObject {
            TLSRouteObject(
                namespace: namespace, name: name, created: created.map { Date(timeIntervalSince1970: $0) }, hostnames: hosts, parents: [],
                backends: [RouteBackend(name: name, destination: Destination(host: name, port: 443), weight: 1)], file: "t.yaml")
        }
        let routes = [
            route("exact", ["db.example.com"]),
            route("wild", ["*.example.com"]),
            route("deeper", ["*.db.example.com"]),
            route("catchall", []),
            route("young", ["same.example"], created: 200),
            route("old", ["same.example"], created: 100),
            route("b", ["tie.example"], namespace: "ns"),
            route("a", ["tie.example"], namespace: "ns"),
            route("shadowed", ["config.example"]),
        ]
        let cases: [(String, String)] = [
            ("db.example.com", "TLSRoute default/exact"),
            ("x.db.example.com", "TLSRoute default/deeper"),
            ("a.b.db.example.com", "TLSRoute default/deeper"),
            ("www.example.com", "TLSRoute default/wild"),
            ("a.b.example.com", "TLSRoute default/wild"),
            ("example.com", "TLSRoute default/catchall"),
            ("other.test", "TLSRoute default/catchall"),
            ("", "TLSRoute default/catchall"),
            ("same.example", "TLSRoute default/old"),
            ("tie.example", "TLSRoute ns/a"),
            ("config.example", "ugate.json"),
        ]
        for order in [routes, routes.reversed()] {
            let table = try PassthroughTable(passthrough: ["config.example": "10.0.0.1:443"], routes: order)
            for (name, source) in cases {
                XCTAssertEqual(table.lookup(name)?.source, source, name)
            }
        }
        XCTAssertThrowsError(try PassthroughTable(passthrough: ["x.example": "no-port"], routes: []))
    }

    /// One configured TLS listener (`gateway: infra/gw`) on a Gateway with an HTTPS listener and
    /// a TLS Passthrough listener on 443: exact and wildcard TLSRoutes reach TLS backends whose
    /// own certificates the clients verify; a weight-0 backend never gets a connection; the
    /// HTTPS name is still terminated; ugate.json passthrough works next to them; rewriting the
    /// TLSRoute moves the name to another backend without a restart; a TLSRoute of another
    /// namespace is not admitted (allowedRoutes Same).
    func testPassthroughThroughGatewayTLSListener() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("tlsroute-e2e-\(getpid())-\(UUID())").path
        for sub in ["routes", "certs", "backend"] {
            try FileManager.default.createDirectory(atPath: "\(dir)/\(sub)", withIntermediateDirectories: true)
        }
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let db = try makeCertificate("db.example.com", file: "db", in: "\(dir)/backend")
        let db2 = try makeCertificate("db.example.com", file: "db2", in: "\(dir)/backend")
        let wild = try makeCertificate("x.pass.example", file: "wild", in: "\(dir)/backend")
        let legacy = try makeCertificate("legacy.example", file: "legacy", in: "\(dir)/backend")
        let site = try makeCertificate("site.example", file: "site", in: "\(dir)/certs")
        var backends: [String: PythonBackend] = [:]
        defer { backends.values.forEach { $0.stop() } }
        backends["db"] = try PythonBackend("db", tls: db)
        backends["db2"] = try PythonBackend("db2", tls: db2)
        backends["wild"] = try PythonBackend("wild", tls: wild)
        backends["legacy"] = try PythonBackend("legacy", tls: legacy)
        backends["site"] = try PythonBackend("site")
        let gateway = """
            apiVersion: gateway.networking.k8s.io/v1
            kind: Gateway
            metadata: {name: gw, namespace: infra}
            spec:
              gatewayClassName: ugate
              listeners:
              - {name: https, port: 443, protocol: HTTPS, hostname: site.example, tls: {certificateRefs: [{name: site}]}, allowedRoutes: {namespaces: {from: All}}}
              - {name: tls, port: 443, protocol: TLS, tls: {mode: Passthrough}}
            ---
            apiVersion: gateway.networking.k8s.io/v1
            kind: HTTPRoute
            metadata: {name: site, namespace: web}
            spec:
              parentRefs: [{name: gw, namespace: infra, sectionName: https}]
              rules: [{backendRefs: [{name: site, port: 80}]}]

            """
        let parent = "{name: gw, namespace: infra, sectionName: tls}"
        func routes(dbBackend: String) -> String {
            tlsRouteYAML("db", namespace: "infra", hostnames: ["db.example.com"], backends: "{name: \(dbBackend), port: 443}", parents: parent)
                + "---\n"
                + tlsRouteYAML(
                    "wild", namespace: "infra", hostnames: ["*.pass.example"], backends: "{name: wild, port: 443, weight: 5}, {name: db, port: 443, weight: 0}",
                    parents: parent)
                + "---\n"
                + tlsRouteYAML("stranger", namespace: "other", hostnames: ["stranger.example"], backends: "{name: db, port: 443}", parents: parent)
        }
        try writeManifest(gateway, "gateway.yaml", in: "\(dir)/routes")
        try writeManifest(routes(dbBackend: "db"), "tls.yaml", in: "\(dir)/routes")
        let loops = try GateLoopGroup(count: 2)
        defer { loops.shutdown() }
        var config = HTTPRouteConfig(
            manifests: "\(dir)/routes",
            services: Dictionary(uniqueKeysWithValues: backends.map { ($0.key, $0.value.address) }),
            listeners: [
                HTTPRouteListenerConfig(
                    name: "https", port: 0, gateway: "infra/gw",
                    tls: HTTPRouteTLSConfig(certificateDir: "\(dir)/certs", passthrough: ["legacy.example": backends["legacy"]!.address]))
            ])
        config.reloadInterval = 0.05
        let service = try HTTPRouteService(config: config, bind: "127.0.0.1", loops: loops)
        defer { service.stop() }
        let port = service.bound[0].address.port

        func curl(_ name: String, cacert: String, path: String = "/x") throws -> (status: Int32, backend: String?, out: String) {
            let r = try runProcess(
                try tool("curl"), ["-sS", "--max-time", "20", "--resolve", "\(name):\(port):127.0.0.1", "--cacert", cacert, "https://\(name):\(port)\(path)"],
                timeout: 60)
            let object = try? JSONSerialization.jsonObject(with: Data(r.out.utf8)) as? [String: Any]
            return (r.status, object?["backend"] as? String, r.out + r.err)
        }
        // curl verifies the backend's own certificate: the gateway did not terminate TLS.
        let exact = try curl("db.example.com", cacert: db.cert)
        XCTAssertEqual(exact.status, 0, exact.out)
        XCTAssertEqual(exact.backend, "db", exact.out)
        let seen = try servedCertificate(port: port, serverName: "db.example.com")
        XCTAssertEqual(seen.fingerprint, try fileFingerprint(db.cert), seen.output)
        for i in 0..<6 {
            let wildcard = try curl("x.pass.example", cacert: wild.cert, path: "/w\(i)")
            XCTAssertEqual(wildcard.status, 0, wildcard.out)
            XCTAssertEqual(wildcard.backend, "wild", "weight-0 backend picked: \(wildcard.out)")
        }
        // The HTTPS listener's name is terminated with the Gateway's certificate, and HTTP routed.
        let terminated = try curl("site.example", cacert: site.cert)
        XCTAssertEqual(terminated.backend, "site", terminated.out)
        XCTAssertEqual(try servedCertificate(port: port, serverName: "site.example").fingerprint, try fileFingerprint(site.cert))
        // ugate.json passthrough next to the TLSRoutes.
        XCTAssertEqual(try curl("legacy.example", cacert: legacy.cert).backend, "legacy")
        // A route of namespace `other` is not admitted by the listener (Same): no passthrough, closed.
        XCTAssertNotEqual(try curl("stranger.example", cacert: db.cert).status, 0)
        XCTAssertEqual(try servedCertificate(port: port, serverName: "stranger.example").fingerprint, "")

        // Reload: db.example.com now goes to db2 (its own certificate, same name).
        try writeManifest(routes(dbBackend: "db2"), "tls.yaml", in: "\(dir)/routes")
        XCTAssertTrue(try eventually { try curl("db.example.com", cacert: db2.cert).backend == "db2" })
        XCTAssertEqual(try servedCertificate(port: port, serverName: "db.example.com").fingerprint, try fileFingerprint(db2.cert))
        // An invalid TLSRoute keeps the previous table.
        try writeManifest("apiVersion: gateway.networking.k8s.io/v1alpha2\nkind: TLSRoute\nmetadata: {name: broken}\nspec: {}\n", "broken.yaml", in: "\(dir)/routes")
        usleep(300_000)
        XCTAssertEqual(try curl("db.example.com", cacert: db2.cert).backend, "db2")
    }
}
