import Foundation
import Glibc
import XCTest

@testable import Gate

/// Gateway listener status (Gateway API `status.listeners[]`: Accepted, ResolvedRefs,
/// Programmed, Conflicted, attachedRoutes): a table of listener cases computed from
/// manifests and configured listeners; `ugate httproute status --config` with a missing and an
/// invalid certificateRef PEM (InvalidCertificateRef, exit 2); a running `HTTPRouteService`
/// whose port is taken (PortUnavailable, bound once the port frees, then served) and whose
/// certificateRef files are missing at start (reported, then served once they appear).
final class HTTPRouteGatewayStatusTests: XCTestCase {
    static let manifests = """
        apiVersion: gateway.networking.k8s.io/v1
        kind: Gateway
        metadata: {name: gw, namespace: infra}
        spec:
          listeners:
          - {name: web, port: 80, protocol: HTTP, hostname: "*.shop.example", allowedRoutes: {namespaces: {from: All}}}
          - {name: dup, port: 80, protocol: HTTP, hostname: "*.shop.example"}
          - {name: secure, port: 443, protocol: HTTPS, hostname: secure.example, tls: {certificateRefs: [{name: good}]}}
          - {name: broken, port: 443, protocol: HTTPS, hostname: broken.example, tls: {certificateRefs: [{name: bad}]}}
          - {name: crossns, port: 443, protocol: HTTPS, hostname: cross.example, tls: {certificateRefs: [{name: x, namespace: vault}]}}
          - {name: tls, port: 443, protocol: TLS, tls: {mode: Passthrough}, allowedRoutes: {namespaces: {from: All}}}
          - {name: other, port: 8080, protocol: HTTP}
          - {name: mixed, port: 8080, protocol: HTTPS, hostname: mixed.example, tls: {certificateRefs: [{name: good}]}}
          - {name: blocked, port: 9090, protocol: HTTP}
        ---
        apiVersion: gateway.networking.k8s.io/v1
        kind: HTTPRoute
        metadata: {name: r1, namespace: shop}
        spec:
          parentRefs: [{name: gw, namespace: infra, sectionName: web}]
          hostnames: [www.shop.example]
          rules: [{backendRefs: [{name: web, port: 80}]}]
        ---
        apiVersion: gateway.networking.k8s.io/v1
        kind: HTTPRoute
        metadata: {name: r2}
        spec:
          rules: [{backendRefs: [{name: web, port: 80}]}]
        ---
        apiVersion: gateway.networking.k8s.io/v1alpha2
        kind: TLSRoute
        metadata: {name: t1, namespace: shop}
        spec:
          parentRefs: [{name: gw, namespace: infra, sectionName: tls}]
          hostnames: [db.shop.example]
          rules: [{backendRefs: [{name: db, port: 5432}]}]

        """

    /// A condition as "True"/"False"/"Unknown" plus the reason when it is not the good state.
    static func cell(_ listener: GatewayListenerStatus, _ type: String) -> String {
        guard let c = listener.conditions.first(where: { $0.type == type }) else { return "missing" }
        let good = type == "Conflicted" ? "False" : "True"
        return c.status == good ? c.status : "\(c.status) \(c.reason)"
    }

    func testListenerStatusTable() throws {
        let loaded = try HTTPRouteLoader().load(yaml: Self.manifests, file: "gw.yaml")
        func state(_ name: String, port: Int, tls: Bool, _ binding: ConfiguredListenerState.Binding) -> ConfiguredListenerState {
            ConfiguredListenerState(
                config: HTTPRouteListenerConfig(
                    name: name, port: port, gateway: "infra/gw", tls: tls ? HTTPRouteTLSConfig(certificateDir: "/certs") : nil),
                binding: binding
            ) { files in
                files.cert == "/certs/bad.crt" ? (false, "/certs/bad.crt: no such file") : (true, nil)
            }
        }
        let configured = [
            state("web", port: 15080, tls: false, .bound("127.0.0.1:15080")),
            state("secure", port: 15443, tls: true, .bound("127.0.0.1:15443")),
            state("broken", port: 15444, tls: true, .bound("127.0.0.1:15444")),
            state("crossns", port: 15445, tls: true, .bound("127.0.0.1:15445")),
            state("blocked", port: 9090, tls: false, .failed("Address already in use")),
            state("mixed", port: 18080, tls: false, .bound("127.0.0.1:18080")),
        ]
        let report = HTTPRouteStatusReport.compute(loaded, listeners: configured)
        XCTAssertEqual(report.gateways.count, 1)
        let gateway = report.gateways[0]
        // name: (Accepted, ResolvedRefs, Programmed, Conflicted, attachedRoutes)
        let expected: [String: (String, String, String, String, Int)] = [
            "web": ("True", "True", "True", "True HostnameConflict", 2),
            "dup": ("True", "True", "True", "True HostnameConflict", 1),
            "secure": ("True", "True", "True", "False", 1),
            "broken": ("True", "False InvalidCertificateRef", "False Invalid", "False", 1),
            "crossns": ("True", "False RefNotPermitted", "False Invalid", "False", 1),
            "tls": ("True", "True", "True", "False", 1),
            "other": ("True", "True", "True", "True ProtocolConflict", 1),
            "mixed": ("True", "False InvalidCertificateRef", "False Invalid", "True ProtocolConflict", 1),
            "blocked": ("False PortUnavailable", "True", "False Invalid", "False", 1),
        ]
        XCTAssertEqual(Set(gateway.listeners.map(\.name)), Set(expected.keys))
        for listener in gateway.listeners {
            guard let want = expected[listener.name] else { continue }
            let got = (
                Self.cell(listener, "Accepted"), Self.cell(listener, "ResolvedRefs"), Self.cell(listener, "Programmed"),
                Self.cell(listener, "Conflicted"), listener.attachedRoutes
            )
            XCTAssertEqual("\(got)", "\(want)", listener.name)
            XCTAssertEqual(listener.supportedKinds, [RouteGroupKind(group: "gateway.networking.k8s.io", kind: listener.name == "tls" ? "TLSRoute" : "HTTPRoute")])
        }
        func message(_ name: String, _ type: String) -> String {
            gateway.listeners.first { $0.name == name }?.conditions.first { $0.type == type }?.message ?? ""
        }
        XCTAssertTrue(message("broken", "ResolvedRefs").contains("/certs/bad.crt: no such file"), message("broken", "ResolvedRefs"))
        XCTAssertTrue(message("crossns", "ResolvedRefs").contains("no ReferenceGrant in namespace vault allows Gateways from infra"))
        XCTAssertTrue(message("blocked", "Accepted").contains("cannot bind *:9090: Address already in use"), message("blocked", "Accepted"))
        XCTAssertTrue(message("web", "Programmed").contains("served by configured listener web on 127.0.0.1:15080"))
        XCTAssertTrue(message("mixed", "Programmed").contains("is plain HTTP, the listener is HTTPS"), message("mixed", "Programmed"))
        // Served as other HTTP listeners of the port of a configured listener's named one.
        XCTAssertTrue(message("dup", "Programmed").contains("served by configured listener web on 127.0.0.1:15080"), message("dup", "Programmed"))
        XCTAssertTrue(message("other", "Programmed").contains("served by configured listener mixed"), message("other", "Programmed"))
        // The Gateway's own conditions summarise its listeners'.
        XCTAssertEqual(gateway.conditions.map { "\($0.type) \($0.status) \($0.reason)" }, [
            "Accepted True ListenersNotValid", "Programmed False Invalid", "ResolvedRefs False ListenersNotResolved",
        ])
        XCTAssertFalse(report.healthy)
        XCTAssertTrue(report.table.contains("infra/gw  blocked"), report.table)
        XCTAssertTrue(report.table.contains("False (PortUnavailable)"), report.table)

        // Without configured listeners (no --config): Programmed is Unknown, which is not a failure.
        let offline = HTTPRouteStatusReport.compute(loaded, listeners: nil).gateways[0]
        XCTAssertTrue(offline.listeners.allSatisfy { Self.cell($0, "Programmed") == "Unknown Pending" })
        XCTAssertEqual(Self.cell(offline.listeners.first { $0.name == "secure" }!, "ResolvedRefs"), "Unknown Pending")
        let clean = try HTTPRouteLoader().load(
            yaml: "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: gw}\nspec:\n  listeners: [{name: web, port: 80, protocol: HTTP}]\n",
            file: "clean.yaml")
        XCTAssertTrue(HTTPRouteStatusReport.compute(clean, listeners: nil).healthy)
        XCTAssertFalse(HTTPRouteStatusReport.compute(clean, listeners: []).healthy, "configured, but no listener serves it")
        // The JSON uses the Gateway API field names.
        let json = HTTPRouteStatusReport.compute(clean, listeners: nil).json
        for field in ["\"attachedRoutes\"", "\"supportedKinds\"", "\"protocol\" : \"HTTP\"", "\"listeners\"", "\"gateways\"", "\"routes\""] {
            XCTAssertTrue(json.contains(field), json)
        }
    }

    /// `ugate httproute status --config`: certificateRefs whose PEM is missing or invalid.
    func testStatusCommandChecksCertificateRefs() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("gwstatus-\(getpid())-\(UUID())").path
        for sub in ["routes", "certs"] { try FileManager.default.createDirectory(atPath: "\(dir)/\(sub)", withIntermediateDirectories: true) }
        defer { try? FileManager.default.removeItem(atPath: dir) }
        _ = try makeCertificate("good.example", file: "good", in: "\(dir)/certs")
        let invalid = try makeCertificate("invalid.example", file: "invalid", in: "\(dir)/certs")
        try "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n".write(toFile: invalid.cert, atomically: true, encoding: .utf8)
        try writeManifest(
            """
            apiVersion: gateway.networking.k8s.io/v1
            kind: Gateway
            metadata: {name: gw}
            spec:
              listeners:
              - {name: https, port: 443, protocol: HTTPS, hostname: good.example, tls: {certificateRefs: [{name: good}]}}
              - {name: gone, port: 443, protocol: HTTPS, hostname: gone.example, tls: {certificateRefs: [{name: missing}]}}
              - {name: invalid, port: 443, protocol: HTTPS, hostname: invalid.example, tls: {certificateRefs: [{name: invalid}]}}

            """, "gw.yaml", in: "\(dir)/routes")
        let config = "\(dir)/ugate.json"
        try """
            {"httproute": {"manifests": "\(dir)/routes",
              "listeners": [{"name": "https", "port": 443, "gateway": "gw", "tls": {"certificateDir": "\(dir)/certs"}},
                            {"name": "gone", "port": 8443, "gateway": "gw", "tls": {"certificateDir": "\(dir)/certs"}},
                            {"name": "invalid", "port": 9443, "gateway": "gw", "tls": {"certificateDir": "\(dir)/certs"}}]}}
            """.write(toFile: config, atomically: true, encoding: .utf8)
        let r = try runProcess(ugateExecutable(), ["httproute", "status", "--config", config, "--json"])
        XCTAssertEqual(r.status, 2, r.out + r.err)
        let report = try JSONDecoder().decode(HTTPRouteStatusReport.self, from: Data(r.out.utf8))
        let listeners = Dictionary(uniqueKeysWithValues: report.gateways[0].listeners.map { ($0.name, $0) })
        XCTAssertEqual(Self.cell(listeners["https"]!, "ResolvedRefs"), "True")
        XCTAssertEqual(Self.cell(listeners["https"]!, "Programmed"), "True")
        XCTAssertEqual(Self.cell(listeners["gone"]!, "ResolvedRefs"), "False InvalidCertificateRef")
        XCTAssertEqual(Self.cell(listeners["invalid"]!, "ResolvedRefs"), "False InvalidCertificateRef")
        let gone = listeners["gone"]!.conditions.first { $0.type == "ResolvedRefs" }!.message
        XCTAssertTrue(gone.contains("\(dir)/certs/missing.crt: no such file"), gone)
        let bad = listeners["invalid"]!.conditions.first { $0.type == "ResolvedRefs" }!.message
        XCTAssertTrue(bad.contains(invalid.cert), bad)
        // The table: routes (none) then one line per listener.
        let table = try runProcess(ugateExecutable(), ["httproute", "status", "--config", config])
        XCTAssertEqual(table.status, 2)
        XCTAssertTrue(table.out.contains("default/gw  gone"), table.out)
        XCTAssertTrue(table.out.contains("False (InvalidCertificateRef)"), table.out)
        // Fixed files: exit 0.
        _ = try makeCertificate("gone.example", file: "missing", in: "\(dir)/certs")
        _ = try makeCertificate("invalid.example", file: "invalid", in: "\(dir)/certs")
        let fixed = try runProcess(ugateExecutable(), ["httproute", "status", "--config", config])
        XCTAssertEqual(fixed.status, 0, fixed.out)
    }

    /// A running service: a listener whose port is taken is reported PortUnavailable and bound
    /// once the port frees; a certificateRef whose files are missing at start is reported
    /// InvalidCertificateRef (the service starts anyway) and served once they appear.
    func testLiveListenerStatus() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("gwlive-\(getpid())-\(UUID())").path
        for sub in ["routes", "certs"] { try FileManager.default.createDirectory(atPath: "\(dir)/\(sub)", withIntermediateDirectories: true) }
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let backend = try PythonBackend("web")
        defer { backend.stop() }
        try writeManifest(
            """
            apiVersion: gateway.networking.k8s.io/v1
            kind: Gateway
            metadata: {name: gw}
            spec:
              listeners:
              - {name: web, port: 80, protocol: HTTP}
              - {name: secure, port: 443, protocol: HTTPS, hostname: secure.example, tls: {certificateRefs: [{name: later}]}}
            ---
            apiVersion: gateway.networking.k8s.io/v1
            kind: HTTPRoute
            metadata: {name: web}
            spec:
              rules: [{backendRefs: [{name: web, port: 80}]}]

            """, "gw.yaml", in: "\(dir)/routes")
        // A port held by a socket without SO_REUSEPORT: binding it fails.
        var blocker: Int32? = try Sys.listen(try SocketAddress(host: "127.0.0.1", port: 0), reusePort: false, backlog: 1)
        defer { if let blocker { Glibc.close(blocker) } }
        let taken = SocketAddress.local(of: blocker!)!.port
        let capture = LogCapture()
        let loops = try GateLoopGroup(count: 1)
        defer { loops.shutdown() }
        var config = HTTPRouteConfig(
            manifests: "\(dir)/routes", services: ["web": backend.address],
            listeners: [
                HTTPRouteListenerConfig(name: "web", port: Int(taken), gateway: "gw"),
                HTTPRouteListenerConfig(name: "secure", port: 0, gateway: "gw", tls: HTTPRouteTLSConfig(certificateDir: "\(dir)/certs")),
            ])
        config.reloadInterval = 0.05
        let service = try HTTPRouteService(config: config, bind: "127.0.0.1", loops: loops, log: capture.logger("ugate.httproute"))
        defer { service.stop() }
        func listener(_ name: String) -> GatewayListenerStatus { service.status().gateways[0].listeners.first { $0.name == name }! }

        // The taken port: not bound, reported, logged; the other listener serves.
        XCTAssertEqual(service.bound.map(\.name), ["secure"])
        XCTAssertEqual(Self.cell(listener("web"), "Accepted"), "False PortUnavailable")
        XCTAssertEqual(Self.cell(listener("web"), "Programmed"), "False Invalid")
        XCTAssertNotNil(capture.waitForLine(containing: ["httproute listener not bound", "web"]))
        // The certificateRef without files: the service started, the listener reports it and
        // its name has no certificate (the handshake is refused).
        XCTAssertEqual(Self.cell(listener("secure"), "ResolvedRefs"), "False InvalidCertificateRef")
        XCTAssertEqual(Self.cell(listener("secure"), "Programmed"), "False Invalid")
        let securePort = service.bound[0].address.port
        XCTAssertEqual(try servedCertificate(port: securePort, serverName: "secure.example").fingerprint, "")

        // Free the port: bound on a reload tick, then Programmed and serving.
        Glibc.close(blocker!)
        blocker = nil
        XCTAssertTrue(eventually { Self.cell(listener("web"), "Programmed") == "True" }, "\(listener("web"))")
        XCTAssertEqual(Self.cell(listener("web"), "Accepted"), "True")
        XCTAssertEqual(service.bound.map(\.name), ["web", "secure"])
        let r = try runProcess(try tool("curl"), ["-sS", "--max-time", "20", "http://127.0.0.1:\(taken)/x"])
        XCTAssertTrue(r.out.contains("\"backend\": \"web\""), r.out + r.err)

        // The Secret's files appear: loaded on the tick, served by SNI, status resolved.
        let later = try makeCertificate("secure.example", file: "later", in: "\(dir)/certs")
        XCTAssertTrue(eventually { Self.cell(listener("secure"), "ResolvedRefs") == "True" }, "\(listener("secure"))")
        XCTAssertEqual(Self.cell(listener("secure"), "Programmed"), "True")
        XCTAssertEqual(try servedCertificate(port: securePort, serverName: "secure.example").fingerprint, try fileFingerprint(later.cert))
    }
}
