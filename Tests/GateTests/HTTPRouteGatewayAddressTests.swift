import Foundation
import Glibc
import Synchronization
import XCTest

@testable import Gate

/// Gateway `spec.addresses` (types IPAddress and Hostname): the configured listener serving the
/// Gateway binds each address (127.0.0.2 and ::1 here; a Hostname's local addresses) instead of
/// its default host, they appear in the Gateway's `status.addresses`, a reload that removes them
/// moves the listener back to its default host, a Hostname that does not resolve or not to this
/// node is a Gateway condition, and other address types or values are refused naming file,
/// object and field. `spec.infrastructure`: labels and annotations shown, `parametersRef`
/// refused.
final class HTTPRouteGatewayAddressTests: XCTestCase {
    static func gateway(addresses: String) -> String {
        """
        apiVersion: gateway.networking.k8s.io/v1
        kind: Gateway
        metadata: {name: gw, namespace: infra}
        spec:
          gatewayClassName: ugate
        \(addresses)
          listeners:
          - {name: web, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}
        ---
        apiVersion: gateway.networking.k8s.io/v1
        kind: HTTPRoute
        metadata: {name: web, namespace: shop}
        spec:
          parentRefs: [{name: gw, namespace: infra}]
          rules: [{backendRefs: [{name: web, port: 80}]}]

        """
    }

    let capture = LogCapture()
    var dir = ""
    var backend: PythonBackend?
    var loops: GateLoopGroup?
    var service: HTTPRouteService?

    override func setUpWithError() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("gwaddr-\(getpid())-\(UUID())").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    }

    override func tearDown() {
        service?.stop()
        loops?.shutdown()
        backend?.stop()
        try? FileManager.default.removeItem(atPath: dir)
    }

    /// Writes the Gateway with `addresses` (and its HTTPRoute to the backend `web`) and starts a
    /// service whose listener `web` serves it (port 0, reloads every 50 ms); `resolve`: the
    /// service's resolver of Hostnames.
    func start(_ addresses: String, resolve: @escaping GatewayBindAddresses.Resolver = GatewayBindAddresses.getaddrinfo) throws -> HTTPRouteService {
        let backend = try PythonBackend("web")
        self.backend = backend
        try writeManifest(Self.gateway(addresses: addresses), "gw.yaml", in: dir)
        let loops = try GateLoopGroup(count: 1)
        self.loops = loops
        var config = HTTPRouteConfig(
            manifests: dir, services: ["shop/web": backend.address], listeners: [HTTPRouteListenerConfig(name: "web", port: 0, gateway: "infra/gw")])
        config.reloadInterval = 0.05
        let service = try HTTPRouteService(
            config: config, bind: "127.0.0.1", loops: loops, log: capture.logger("ugate.httproute"), accessLog: capture.logger("access"), router: nil,
            stateDirectory: nil, resolve: resolve)
        self.service = service
        return service
    }

    func testListenerBindsTheGatewayAddresses() throws {
        let service = try start("  addresses: [{type: IPAddress, value: 127.0.0.2}, {value: \"::1\"}]")

        XCTAssertEqual(service.bound.map(\.address.host), ["127.0.0.2", "::1"])
        let curl = try tool("curl")
        var oldPorts: [UInt16] = []
        for bound in service.bound {
            let url = "http://\(bound.address)/x"
            let r = try runProcess(curl, ["-sS", "--max-time", "20", url])
            XCTAssertTrue(r.out.contains("\"backend\": \"web\""), url + ": " + r.out + r.err)
            oldPorts.append(bound.address.port)
        }
        let status = service.status().gateways[0]
        XCTAssertEqual(status.addresses, [GatewayStatusAddress(value: "127.0.0.2"), GatewayStatusAddress(value: "::1")])
        XCTAssertEqual(status.listeners[0].conditions.first { $0.type == "Programmed" }?.status, "True", "\(status)")
        XCTAssertTrue(service.status().json.contains("\"type\" : \"IPAddress\""), service.status().json)

        // The addresses removed: the listener binds its default host on the next reload and
        // the sockets on 127.0.0.2 and ::1 close.
        try writeManifest(Self.gateway(addresses: ""), "gw.yaml", in: dir)
        XCTAssertTrue(eventually { service.bound.map(\.address.host) == ["127.0.0.1"] }, "\(service.bound)")
        XCTAssertEqual(service.status().gateways[0].addresses, [GatewayStatusAddress(value: "127.0.0.1")])
        let r = try runProcess(curl, ["-sS", "--max-time", "20", "http://\(service.bound[0].address)/x"])
        XCTAssertTrue(r.out.contains("\"backend\": \"web\""), r.out + r.err)
        XCTAssertTrue(eventually { (try? TestSocket.connect("127.0.0.2", oldPorts[0])).map { Glibc.close($0) } == nil }, "127.0.0.2 still listening")
        XCTAssertNotNil(capture.waitForLine(containing: ["Gateway address removed", "127.0.0.2"]), "\(capture.lines)")
    }

    func testUnsupportedAddressesAreRefused() throws {
        for (addresses, message) in [
            ("  addresses: [{type: NamedAddress, value: gw}]", "gw.yaml: Gateway infra/gw: spec.addresses[0].type: unsupported: address type NamedAddress (IPAddress and Hostname are"),
            ("  addresses: [{type: example.com/Custom, value: x}]", "spec.addresses[0].type: unsupported: address type example.com/Custom"),
            ("  addresses: [{type: Hostname, value: \"*.gw.example\"}]", "gw.yaml: Gateway infra/gw: spec.addresses[0].value: unsupported: wildcard hostname *.gw.example: it names no address to bind"),
            ("  addresses: [{type: Hostname, value: gw_example}]", "spec.addresses[0].value: hostname \"gw_example\" is not a DNS name"),
            ("  addresses: [{type: Hostname, value: gw.lan}, {type: Hostname, value: GW.lan}]", "spec.addresses[1].value: hostname gw.lan is listed twice"),
            ("  infrastructure: {parametersRef: {group: example.com, kind: Params, name: p}}",
             "gw.yaml: Gateway infra/gw: spec.infrastructure.parametersRef: unsupported: parametersRef (ugate has no infrastructure parameters"),
            ("  infrastructure: {labels: {a: \"-x\"}}", "spec.infrastructure.labels.a: label value \"-x\" is not 0…63"),
            ("  infrastructure: {labels: {\"Example.com/a\": x}}", "spec.infrastructure.labels.Example.com/a: key \"Example.com/a\" is not a [prefix/]name key"),
            ("  infrastructure: {labels: {a: \"\(String(repeating: "x", count: 64))\"}}", "spec.infrastructure.labels.a: label value"),
            ("  infrastructure: {annotations: {a: \"\(String(repeating: "x", count: 4097))\"}}", "spec.infrastructure.annotations.a: annotation value of 4097 bytes (at most 4096)"),
            ("  infrastructure: {labels: {\((1...9).map { "k\($0): v" }.joined(separator: ", "))}}", "spec.infrastructure.labels: 9 labels (at most 8 are allowed)"),
            ("  infrastructure: {labels: {a: 1}}", "spec.infrastructure.labels.a: expected a string"),
            ("  infrastructure: {service: {type: LoadBalancer}}", "spec.infrastructure.service"),
            ("  addresses: [{value: 127.0.0.2}, {value: 300.1.1.1}]", "gw.yaml: Gateway infra/gw: spec.addresses[1].value: \"300.1.1.1\" is not an IPv4 or IPv6 address"),
            ("  addresses: [{value: 127.0.0.2}, {value: 127.0.0.2}]", "spec.addresses[1].value: address 127.0.0.2 is listed twice"),
            ("  addresses: [{type: IPAddress}]", "spec.addresses[0].value: required field missing"),
        ] {
            try writeManifest(Self.gateway(addresses: addresses), "gw.yaml", in: dir)
            XCTAssertThrowsError(try HTTPRouteLoader(services: [:]).load(directory: dir), addresses) { error in
                XCTAssertTrue("\(error)".contains(message), "\(error)")
            }
        }
        try writeManifest(Self.gateway(addresses: "  addresses: [{value: \"::1\"}]"), "gw.yaml", in: dir)
        XCTAssertEqual(try HTTPRouteLoader(services: [:]).load(directory: dir).gateways[0].addresses, ["::1"])
        try writeManifest(
            Self.gateway(
                addresses: "  addresses: [{type: Hostname, value: GW.lan}]\n  infrastructure: {labels: {app: web, \"ugate.example/tier\": \"\"}, annotations: {note: \"any text: here\"}}"),
            "gw.yaml", in: dir)
        let gateway = try HTTPRouteLoader(services: [:]).load(directory: dir).gateways[0]
        XCTAssertEqual(gateway.addressHostnames, ["gw.lan"])
        XCTAssertEqual(gateway.infrastructure, GatewayObject.Infrastructure(labels: ["app": "web", "ugate.example/tier": ""], annotations: ["note": "any text: here"]))
    }

    /// `GatewayBindAddresses.resolve` as a value: IP literals first, then each Hostname's
    /// addresses that are this node's (once each, in the resolver's order); a Hostname that
    /// does not resolve is `AddressNotAssigned`, one resolving to no local address
    /// `AddressNotUsable` (its addresses named).
    func testHostnameAddressesResolveToLocalOnes() {
        let names: [String: [String]] = ["gw.lan": ["10.0.0.5", "127.0.0.1", "fd00::5"], "both.lan": ["127.0.0.1"], "away.lan": ["192.0.2.1"]]
        let resolve: GatewayBindAddresses.Resolver = { name in
            names[name].map { .success($0) } ?? .failure(GatewayBindAddresses.ResolveError(message: "Name or service not known"))
        }
        let local: () -> Set<String> = { ["127.0.0.1", "10.0.0.5", "::1"] }
        let result = GatewayBindAddresses.resolve(
            ips: ["127.0.0.2"], hostnames: ["gw.lan", "both.lan", "away.lan", "gone.lan"], resolve: resolve, local: local)
        XCTAssertEqual(result.hosts, ["127.0.0.2", "10.0.0.5", "127.0.0.1"])
        XCTAssertEqual(
            result.problems,
            [
                .init(reason: "AddressNotUsable", message: "Hostname away.lan resolves to 192.0.2.1: no address of this node"),
                .init(reason: "AddressNotAssigned", message: "Hostname gone.lan does not resolve: Name or service not known"),
            ])
        XCTAssertEqual(GatewayBindAddresses.resolve(ips: ["::1"], hostnames: [], resolve: resolve, local: { [] }), GatewayBindAddresses(hosts: ["::1"]))
        // The node's own resolver and interfaces: localhost is loopback, here.
        XCTAssertEqual(GatewayBindAddresses.resolve(ips: [], hostnames: ["localhost"]).hosts.first, "127.0.0.1")
        XCTAssertTrue(GatewayBindAddresses.interfaceAddresses().contains("127.0.0.1"))
    }

    /// A Hostname that does not resolve when the service starts (a small device whose network
    /// or name service comes up later; the service's resolver is the test's): nothing is bound,
    /// `Programmed: False / AddressNotAssigned`; once it resolves to 127.0.0.1 the next reload
    /// tick binds it (no manifest change) and serves, `Programmed: True`. `ugate httproute
    /// status --config` resolves offline as the service would: `nothing.invalid` makes it exit 2
    /// naming the Hostname.
    func testHostnameThatResolvesLaterIsBoundOnAReloadTick() throws {
        let answer = Mutex<[String]?>(nil)
        let service = try start("  addresses: [{type: Hostname, value: gw.lan}]") { name in
            answer.withLock { $0 }.map { .success($0) } ?? .failure(GatewayBindAddresses.ResolveError(message: "\(name): Name or service not known"))
        }
        XCTAssertEqual(service.bound.count, 0)
        var programmed = service.status().gateways[0].conditions.first { $0.type == "Programmed" }
        XCTAssertEqual(programmed?.reason, "AddressNotAssigned")
        XCTAssertEqual(programmed?.message, "Hostname gw.lan does not resolve: gw.lan: Name or service not known; listeners web: Invalid")
        answer.withLock { $0 = ["127.0.0.1"] }
        XCTAssertTrue(eventually { service.bound.map(\.address.host) == ["127.0.0.1"] }, "\(service.bound)")
        let r = try runProcess(try tool("curl"), ["-sS", "--max-time", "20", "http://\(service.bound[0].address)/x"])
        XCTAssertTrue(r.out.contains("\"backend\": \"web\""), r.out + r.err)
        programmed = service.status().gateways[0].conditions.first { $0.type == "Programmed" }
        XCTAssertEqual(programmed?.status, "True", "\(programmed as Any)")

        try writeManifest(Self.gateway(addresses: "  addresses: [{type: Hostname, value: nothing.invalid}]"), "gw.yaml", in: dir)
        let file = "\(dir)/ugate.json"
        try """
            {"httproute": {"manifests": "\(dir)", "listeners": [{"name": "web", "port": 80, "gateway": "infra/gw"}]}}
            """.write(toFile: file, atomically: true, encoding: .utf8)
        let offline = try runProcess(ugateExecutable(), ["httproute", "status", "--config", file])
        XCTAssertEqual(offline.status, 2, offline.out + offline.err)
        XCTAssertTrue(offline.out.contains("Hostname nothing.invalid does not resolve"), offline.out)
        XCTAssertTrue(offline.out.contains("False (AddressNotAssigned)"), offline.out)
    }

    /// A Gateway whose addresses are a Hostname (`localhost`) and an IPAddress: the listener
    /// binds 127.0.0.2 and localhost's 127.0.0.1, both serve, both are in `status.addresses`,
    /// its infrastructure labels and annotations are shown. A reload to Hostnames that do not
    /// resolve (`nothing.invalid`) or name no address of this node (`192.0.2.1`) next to
    /// localhost: 127.0.0.2 stops listening, 127.0.0.1 stays, the Gateway is `Programmed:
    /// False / AddressNotAssigned` naming both (a Gateway line in the table), logged. Only the
    /// foreign one: nothing is bound, `AddressNotUsable`, the listener not accepted, saying why.
    func testListenerBindsTheLocalAddressesOfAHostname() throws {
        let infrastructure = "  infrastructure: {labels: {app: web}, annotations: {owner: ops}}\n"
        let service = try start(infrastructure + "  addresses: [{type: Hostname, value: localhost}, {type: IPAddress, value: 127.0.0.2}]")

        XCTAssertEqual(service.bound.map(\.address.host), ["127.0.0.2", "127.0.0.1"])
        let curl = try tool("curl")
        for bound in service.bound {
            let r = try runProcess(curl, ["-sS", "--max-time", "20", "http://\(bound.address)/x"])
            XCTAssertTrue(r.out.contains("\"backend\": \"web\""), "\(bound.address): " + r.out + r.err)
        }
        var status = service.status()
        XCTAssertEqual(status.gateways[0].addresses, [GatewayStatusAddress(value: "127.0.0.2"), GatewayStatusAddress(value: "127.0.0.1")])
        XCTAssertEqual(status.gateways[0].conditions.first { $0.type == "Programmed" }?.status, "True", "\(status.gateways[0])")
        XCTAssertEqual(status.gateways[0].infrastructure, GatewayObject.Infrastructure(labels: ["app": "web"], annotations: ["owner": "ops"]))
        XCTAssertTrue(status.table.contains("infrastructure labels app=web; infrastructure annotations owner=ops"), status.table)
        XCTAssertTrue(status.healthy)
        let ports = Dictionary(uniqueKeysWithValues: service.bound.map { ($0.address.host, $0.address.port) })

        try writeManifest(
            Self.gateway(addresses: "  addresses: [{type: Hostname, value: localhost}, {type: Hostname, value: nothing.invalid}, {type: Hostname, value: 192.0.2.1}]"),
            "gw.yaml", in: dir)
        XCTAssertTrue(eventually { service.bound.map(\.address.host) == ["127.0.0.1"] }, "\(service.bound)")
        XCTAssertNotNil(capture.waitForLine(containing: ["Gateway address removed", "127.0.0.2"]), "\(capture.lines)")
        XCTAssertTrue(eventually { (try? TestSocket.connect("127.0.0.2", ports["127.0.0.2"]!)).map { Glibc.close($0) } == nil }, "127.0.0.2 still listening")
        XCTAssertNotNil(capture.waitForLine(containing: ["Gateway address not bound", "reason=AddressNotAssigned", "Hostname nothing.invalid does not resolve"]))
        XCTAssertNotNil(capture.waitForLine(containing: ["Gateway address not bound", "reason=AddressNotUsable", "Hostname 192.0.2.1 resolves to 192.0.2.1: no address of this node"]))
        status = service.status()
        let programmed = status.gateways[0].conditions.first { $0.type == "Programmed" }
        XCTAssertEqual(programmed?.status, "False")
        XCTAssertEqual(programmed?.reason, "AddressNotAssigned")
        XCTAssertTrue(programmed?.message.hasPrefix("Hostname nothing.invalid does not resolve: ") ?? false, "\(programmed as Any)")
        XCTAssertTrue(programmed?.message.hasSuffix("; Hostname 192.0.2.1 resolves to 192.0.2.1: no address of this node") ?? false, "\(programmed as Any)")
        XCTAssertEqual(status.gateways[0].addresses, [GatewayStatusAddress(value: "127.0.0.1")])
        XCTAssertNil(status.gateways[0].infrastructure)
        XCTAssertFalse(status.healthy)
        XCTAssertTrue(status.table.contains("infra/gw  -         -     -         -       True      False (AddressNotAssigned)"), status.table)
        let r = try runProcess(curl, ["-sS", "--max-time", "20", "http://127.0.0.1:\(ports["127.0.0.1"]!)/x"])
        XCTAssertTrue(r.out.contains("\"backend\": \"web\""), r.out + r.err)

        try writeManifest(Self.gateway(addresses: "  addresses: [{type: Hostname, value: 192.0.2.1}]"), "gw.yaml", in: dir)
        XCTAssertTrue(eventually { service.bound.isEmpty }, "\(service.bound)")
        status = service.status()
        XCTAssertEqual(status.gateways[0].conditions.first { $0.type == "Programmed" }?.reason, "AddressNotUsable")
        let accepted = status.gateways[0].listeners[0].conditions.first { $0.type == "Accepted" }
        XCTAssertEqual(accepted?.reason, "PortUnavailable")
        XCTAssertTrue(
            accepted?.message.contains("no address to bind: Hostname 192.0.2.1 resolves to 192.0.2.1: no address of this node") ?? false, "\(accepted as Any)")
    }
}
