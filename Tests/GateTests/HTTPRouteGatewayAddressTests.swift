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
/// refused. Hostnames are looked up off the reload queue: a blocking lookup delays no reload
/// tick, a failing name is looked up again with backoff, a resolved one every
/// `hostnameRefreshInterval` (an address that moves is followed). The service's resolver and
/// clock are the tests' own: nothing here depends on the machine's DNS or `/etc/hosts`, except
/// the check of the node's own resolver against Python's `getaddrinfo`.
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
    /// service whose listener `web` serves it (port 0, reloads every 50 ms), then the `more`
    /// listeners; `resolve` and `clock`: the service's resolver of Hostnames and the clock of
    /// their lookups.
    func start(
        _ addresses: String, more: [HTTPRouteListenerConfig] = [], refresh: Double = 30,
        clock: @escaping @Sendable () -> Double = GatewayHostnameLookups.uptime, resolve: @escaping GatewayBindAddresses.Resolver
    ) throws -> HTTPRouteService {
        let backend = try PythonBackend("web")
        self.backend = backend
        try writeManifest(Self.gateway(addresses: addresses), "gw.yaml", in: dir)
        let loops = try GateLoopGroup(count: 1)
        self.loops = loops
        var config = HTTPRouteConfig(
            manifests: dir, services: ["shop/web": backend.address], listeners: [HTTPRouteListenerConfig(name: "web", port: 0, gateway: "infra/gw")] + more)
        config.reloadInterval = 0.05
        config.hostnameRefreshInterval = refresh
        let service = try HTTPRouteService(
            config: config, bind: "127.0.0.1", loops: loops, log: capture.logger("ugate.httproute"), accessLog: capture.logger("access"), router: nil,
            stateDirectory: nil, resolve: resolve, clock: clock)
        self.service = service
        return service
    }

    func testListenerBindsTheGatewayAddresses() throws {
        let service = try start("  addresses: [{type: IPAddress, value: 127.0.0.2}, {value: \"::1\"}]", resolve: Self.names([:]))

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

    /// The test's resolver: the addresses of each name in `names`; any other name does not
    /// resolve ("Name or service not known").
    static func names(_ names: [String: [String]]) -> GatewayBindAddresses.Resolver {
        { name in names[name].map { .success($0) } ?? .failure(GatewayBindAddresses.ResolveError(message: "Name or service not known")) }
    }

    /// `GatewayBindAddresses.resolve` as a value: IP literals first, then each Hostname's
    /// addresses that are this node's (once each, in the resolver's order; all of 127.0.0.0/8
    /// is); a Hostname that does not resolve is `AddressNotAssigned`, one resolving to no local
    /// address `AddressNotUsable` (its addresses named), one not looked up yet `Pending`. The
    /// node's own resolver answers as Python's `getaddrinfo` does on this machine (whatever
    /// `/etc/hosts` lists for localhost, and in its order).
    func testHostnameAddressesResolveToLocalOnes() throws {
        let resolve = Self.names(["gw.lan": ["10.0.0.5", "127.0.0.1", "fd00::5"], "both.lan": ["127.0.0.1"], "away.lan": ["192.0.2.1"], "lo.lan": ["127.0.0.9"]])
        let local: () -> Set<String> = { ["127.0.0.1", "10.0.0.5", "::1"] }
        let result = GatewayBindAddresses.resolve(
            ips: ["127.0.0.2"], hostnames: ["gw.lan", "both.lan", "away.lan", "gone.lan", "lo.lan"], resolve: resolve, local: local)
        XCTAssertEqual(result.hosts, ["127.0.0.2", "10.0.0.5", "127.0.0.1", "127.0.0.9"])
        XCTAssertEqual(
            result.problems,
            [
                .init(reason: "AddressNotUsable", message: "Hostname away.lan resolves to 192.0.2.1: no address of this node"),
                .init(reason: "AddressNotAssigned", message: "Hostname gone.lan does not resolve: Name or service not known"),
            ])
        XCTAssertEqual(GatewayBindAddresses.resolve(ips: ["::1"], hostnames: [], resolve: resolve, local: { [] }), GatewayBindAddresses(hosts: ["::1"]))
        XCTAssertEqual(
            GatewayBindAddresses.resolve(ips: ["127.0.0.2"], hostnames: ["gw.lan"], resolve: { _ in nil }, local: local),
            GatewayBindAddresses(hosts: ["127.0.0.2"], problems: [.init(reason: "Pending", message: "Hostname gw.lan is being resolved")]))

        // The node's own resolver and interfaces.
        let python = try runProcess(
            try tool("python3"),
            ["-c", "import socket\nseen = []\nfor a in socket.getaddrinfo('localhost', None, 0, socket.SOCK_STREAM):\n    h = a[4][0].split('%')[0]\n    seen += [] if h in seen else [h]\nprint(' '.join(seen))"])
        let expected = python.out.split(separator: " ").map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }
        XCTAssertFalse(expected.isEmpty, python.out + python.err)
        XCTAssertEqual(try GatewayBindAddresses.getaddrinfo("localhost").get(), expected)
        XCTAssertEqual(try GatewayBindAddresses.getaddrinfo("127.0.0.3").get(), ["127.0.0.3"])
        let own = GatewayBindAddresses.interfaceAddresses()
        XCTAssertTrue(own.contains("127.0.0.1"), "\(own)")
        XCTAssertEqual(GatewayBindAddresses.resolve(ips: [], hostnames: ["localhost"]).hosts, expected.filter { own.contains($0) || $0.hasPrefix("127.") })
    }

    /// A Hostname that does not resolve when the service starts (a small device whose network
    /// or name service comes up later; the service's resolver is the test's): nothing is bound,
    /// `Programmed: False / Pending` until the first lookup answers, then `AddressNotAssigned`;
    /// once it resolves to 127.0.0.1 a later lookup (backoff from 1 s) binds it (no manifest
    /// change) and serves, `Programmed: True`. `ugate httproute status --config` resolves
    /// offline as the service would: `nothing.invalid` (RFC 6761: never resolves) makes it
    /// exit 2 naming the Hostname.
    func testHostnameThatResolvesLaterIsBoundOnAReloadTick() throws {
        let answer = Mutex<[String]?>(nil)
        let started = DispatchSemaphore(value: 0)
        let service = try start("  addresses: [{type: Hostname, value: gw.lan}]") { name in
            _ = started.wait(timeout: .now() + 20)
            return answer.withLock { $0 }.map { .success($0) } ?? .failure(GatewayBindAddresses.ResolveError(message: "\(name): Name or service not known"))
        }
        XCTAssertEqual(service.bound.count, 0)
        var programmed = service.status().gateways[0].conditions.first { $0.type == "Programmed" }
        XCTAssertEqual(programmed?.reason, "Pending")
        XCTAssertEqual(programmed?.message, "Hostname gw.lan is being resolved; listeners web: Invalid")
        started.signal()
        XCTAssertTrue(eventually { service.status().gateways[0].conditions.first { $0.type == "Programmed" }?.reason == "AddressNotAssigned" })
        programmed = service.status().gateways[0].conditions.first { $0.type == "Programmed" }
        XCTAssertEqual(programmed?.message, "Hostname gw.lan does not resolve: gw.lan: Name or service not known; listeners web: Invalid")
        answer.withLock { $0 = ["127.0.0.1"] }
        started.signal()
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

    /// A Gateway whose addresses are a Hostname (`gw.lan`: 127.0.0.1 and 192.0.2.5 by the
    /// test's resolver) and an IPAddress: the listener binds 127.0.0.2 at once and gw.lan's
    /// 127.0.0.1 once looked up (not the foreign 192.0.2.5), both serve, both are in
    /// `status.addresses`, its infrastructure labels and annotations are shown. A reload to
    /// Hostnames that do not resolve (`nothing.invalid`) or name no address of this node
    /// (`192.0.2.1`) next to gw.lan: 127.0.0.2 stops listening, 127.0.0.1 stays, the Gateway is
    /// `Programmed: False / AddressNotAssigned` naming both (a Gateway line in the table),
    /// logged. Only the foreign one: nothing is bound, `AddressNotUsable`, the listener not
    /// accepted, saying why.
    func testListenerBindsTheLocalAddressesOfAHostname() throws {
        let infrastructure = "  infrastructure: {labels: {app: web}, annotations: {owner: ops}}\n"
        let service = try start(
            infrastructure + "  addresses: [{type: Hostname, value: gw.lan}, {type: IPAddress, value: 127.0.0.2}]",
            resolve: Self.names(["gw.lan": ["127.0.0.1", "192.0.2.5"], "192.0.2.1": ["192.0.2.1"]]))

        XCTAssertTrue(eventually { service.bound.map(\.address.host) == ["127.0.0.2", "127.0.0.1"] }, "\(service.bound)")
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
            Self.gateway(addresses: "  addresses: [{type: Hostname, value: gw.lan}, {type: Hostname, value: nothing.invalid}, {type: Hostname, value: 192.0.2.1}]"),
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

    /// A lookup that blocks (the test's resolver holds `slow.lan` until released, at most 30 s)
    /// delays nothing on the reload queue. While it blocks: the service has started with the
    /// Gateway's IPAddress bound and served (`Programmed: False / Pending` naming slow.lan), a
    /// new certificate in another listener's `certificateDir` is served, a listener whose port
    /// frees is bound, and a manifest reload that needs no lookup moves the IPAddress — all
    /// before the lookup returns, which is the only one started (the ticks and the reload
    /// start no second one). Released: slow.lan's 127.0.0.1 is bound and served.
    func testBlockingLookupDelaysNoReloadTick() throws {
        let certs = dir + "-certs"
        try FileManager.default.createDirectory(atPath: certs, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: certs) }
        _ = try makeCertificate("first.example", file: "first.example", in: certs)
        // A port held by a socket without SO_REUSEPORT: binding it fails until it closes.
        var blocker: Int32? = try Sys.listen(try SocketAddress(host: "127.0.0.1", port: 0), reusePort: false, backlog: 1)
        defer { if let blocker { Glibc.close(blocker) } }
        let taken = SocketAddress.local(of: blocker!)!.port
        let release = DispatchSemaphore(value: 0)
        defer { release.signal() }
        let lookups = Mutex((started: 0, returned: 0))
        let service = try start(
            "  addresses: [{type: Hostname, value: slow.lan}, {type: IPAddress, value: 127.0.0.2}]",
            more: [
                HTTPRouteListenerConfig(name: "secure", port: 0, tls: HTTPRouteTLSConfig(certificateDir: certs)),
                HTTPRouteListenerConfig(name: "late", port: Int(taken)),
            ]
        ) { name in
            lookups.withLock { $0.started += 1 }
            defer { lookups.withLock { $0.returned += 1 } }
            guard release.wait(timeout: .now() + 30) == .success else { return .failure(GatewayBindAddresses.ResolveError(message: "\(name): held too long")) }
            return .success(["127.0.0.1"])
        }
        func hosts(_ name: String) -> [String] { service.bound.filter { $0.name == name }.map(\.address.host) }
        func port(_ name: String) -> UInt16 { service.bound.first { $0.name == name }!.address.port }
        let curl = try tool("curl")
        func served(_ host: String, _ port: UInt16) throws -> Bool {
            try runProcess(curl, ["-sS", "--max-time", "20", "http://\(host):\(port)/x"]).out.contains("\"backend\": \"web\"")
        }

        XCTAssertTrue(eventually { lookups.withLock { $0.started } == 1 })
        XCTAssertEqual(hosts("web"), ["127.0.0.2"])
        XCTAssertTrue(try served("127.0.0.2", port("web")))
        let programmed = service.status().gateways[0].conditions.first { $0.type == "Programmed" }
        XCTAssertEqual(programmed?.reason, "Pending", "\(programmed as Any)")
        XCTAssertEqual(programmed?.message, "Hostname slow.lan is being resolved")

        // A certificate that appears: loaded on a tick.
        let fresh = try makeCertificate("new.example", file: "new.example", in: certs)
        let fingerprint = try fileFingerprint(fresh.cert)
        XCTAssertTrue(try eventually { try servedCertificate(port: port("secure"), serverName: "new.example").fingerprint == fingerprint })
        // A port that frees: bound on a tick.
        Glibc.close(blocker!)
        blocker = nil
        XCTAssertTrue(eventually { hosts("late") == ["127.0.0.1"] }, "\(service.bound)")
        XCTAssertTrue(try served("127.0.0.1", taken))
        // A manifest reload that needs no lookup: applied at once.
        let old = port("web")
        try writeManifest(Self.gateway(addresses: "  addresses: [{type: Hostname, value: slow.lan}, {type: IPAddress, value: 127.0.0.3}]"), "gw.yaml", in: dir)
        XCTAssertTrue(eventually { hosts("web") == ["127.0.0.3"] }, "\(service.bound)")
        XCTAssertTrue(try served("127.0.0.3", port("web")))
        XCTAssertTrue(eventually { (try? TestSocket.connect("127.0.0.2", old)).map { Glibc.close($0) } == nil }, "127.0.0.2 still listening")
        // All that while the one lookup was still blocked.
        XCTAssertEqual(lookups.withLock { $0.started }, 1)
        XCTAssertEqual(lookups.withLock { $0.returned }, 0)

        release.signal()
        XCTAssertTrue(eventually { hosts("web") == ["127.0.0.3", "127.0.0.1"] }, "\(service.bound)")
        XCTAssertTrue(try served("127.0.0.1", service.bound.first { $0.name == "web" && $0.address.host == "127.0.0.1" }!.address.port))
        XCTAssertEqual(service.status().gateways[0].conditions.first { $0.type == "Programmed" }?.status, "True")
    }

    /// The test's clock (seconds, set by the test) counting how often it is read: every reload
    /// tick reads it once.
    final class TestClock: Sendable {
        private let state = Mutex((now: 0.0, reads: 0))
        var read: @Sendable () -> Double { { [self] in state.withLock { $0.reads += 1; return $0.now } } }
        var reads: Int { state.withLock { $0.reads } }
        func set(_ now: Double) { state.withLock { $0.now = now } }
    }

    /// A Hostname that does not resolve is looked up again 1 s after a failure, then 2, 4, 8,
    /// 16 s, then every 30 s (`hostnameRefreshInterval`), not on every reload tick (every 50 ms
    /// here): on the test's clock, the resolver is called exactly at those times, each failure
    /// logged (its message changes with each attempt). Once it resolves, it is bound, and looked
    /// up again 30 s later.
    func testFailingHostnameIsLookedUpWithBackoff() throws {
        let clock = TestClock()
        let answer = Mutex<[String]?>(nil)
        let calls = Mutex(0)
        let service = try start("  addresses: [{type: Hostname, value: gw.lan}]", clock: clock.read) { name in
            let call = calls.withLock { $0 += 1; return $0 }
            return answer.withLock { $0 }.map { .success($0) } ?? .failure(GatewayBindAddresses.ResolveError(message: "\(name): attempt \(call)"))
        }
        /// At `time`: no lookup is started over three reload ticks.
        func noLookup(at time: Double) {
            let before = calls.withLock { $0 }
            clock.set(time)
            let reads = clock.reads
            XCTAssertTrue(eventually { clock.reads >= reads + 3 })
            XCTAssertEqual(calls.withLock { $0 }, before, "at \(time)")
        }
        /// At `time`: lookup `call` is started, and its failure recorded (logged).
        func failedLookup(_ call: Int, at time: Double) {
            clock.set(time)
            XCTAssertNotNil(capture.waitForLine(containing: ["Gateway address not bound", "gw.lan: attempt \(call)"], timeout: 20), "at \(time)")
            XCTAssertEqual(calls.withLock { $0 }, call, "at \(time)")
        }
        failedLookup(1, at: 0)
        for (call, time) in [(2, 1.0), (3, 3), (4, 7), (5, 15), (6, 31), (7, 61)] {
            noLookup(at: time - 0.1)
            failedLookup(call, at: time)
        }
        XCTAssertEqual(service.bound.count, 0)

        answer.withLock { $0 = ["127.0.0.1"] }
        noLookup(at: 90.9)
        clock.set(91)
        XCTAssertTrue(eventually { service.bound.map(\.address.host) == ["127.0.0.1"] }, "\(service.bound)")
        XCTAssertEqual(calls.withLock { $0 }, 8)
        noLookup(at: 120.9)
        clock.set(121)
        XCTAssertTrue(eventually { calls.withLock { $0 } == 9 })
        XCTAssertEqual(service.bound.map(\.address.host), ["127.0.0.1"])
    }

    /// A resolved Hostname whose answer changes (a DHCP lease: 127.0.0.1, then 127.0.0.2) is
    /// followed without a manifest change, `hostnameRefreshInterval` (10 s on the test's clock)
    /// after its last lookup: the listener is bound on 127.0.0.2 and served there, 127.0.0.1
    /// stops listening, both logged, `status.addresses` follows.
    func testResolvedHostnameThatMovesIsFollowed() throws {
        let clock = TestClock()
        let answer = Mutex(["127.0.0.1"])
        let service = try start("  addresses: [{type: Hostname, value: gw.lan}]", refresh: 10, clock: clock.read) { _ in
            .success(answer.withLock { $0 })
        }
        XCTAssertTrue(eventually { service.bound.map(\.address.host) == ["127.0.0.1"] }, "\(service.bound)")
        let curl = try tool("curl")
        let first = service.bound[0].address
        XCTAssertTrue(try runProcess(curl, ["-sS", "--max-time", "20", "http://\(first)/x"]).out.contains("\"backend\": \"web\""))

        answer.withLock { $0 = ["127.0.0.2"] }
        clock.set(9.9)
        let reads = clock.reads
        XCTAssertTrue(eventually { clock.reads >= reads + 3 })
        XCTAssertEqual(service.bound.map(\.address.host), ["127.0.0.1"])
        clock.set(10)
        XCTAssertTrue(eventually { service.bound.map(\.address.host) == ["127.0.0.2"] }, "\(service.bound)")
        let moved = service.bound[0].address
        let r = try runProcess(curl, ["-sS", "--max-time", "20", "http://\(moved)/x"])
        XCTAssertTrue(r.out.contains("\"backend\": \"web\""), r.out + r.err)
        XCTAssertTrue(eventually { (try? TestSocket.connect("127.0.0.1", first.port)).map { Glibc.close($0) } == nil }, "127.0.0.1 still listening")
        XCTAssertNotNil(capture.waitForLine(containing: ["Gateway address removed", "address=\(first)"]), "\(capture.lines)")
        XCTAssertNotNil(capture.waitForLine(containing: ["httproute listener bound", "address=\(moved)"]), "\(capture.lines)")
        let status = service.status().gateways[0]
        XCTAssertEqual(status.addresses, [GatewayStatusAddress(value: "127.0.0.2")])
        XCTAssertEqual(status.conditions.first { $0.type == "Programmed" }?.status, "True", "\(status)")
    }

    /// `HostnameLookupSchedule` as a value: a new name is due at once, one lookup in flight per
    /// name, 1-2-4 s backoff capped at the interval, the interval after a success, a changed
    /// answer reported once, names no longer listed forgotten (at once when idle, when their
    /// lookup answers when in flight; listed again meanwhile, not looked up twice).
    func testLookupSchedule() {
        var schedule = HostnameLookupSchedule(interval: 3)
        let fail = HostnameLookupSchedule.Answer.failure(GatewayBindAddresses.ResolveError(message: "no"))
        XCTAssertEqual(schedule.due(["a", "b", "a"], now: 0), ["a", "b"])
        XCTAssertEqual(schedule.due(["a", "b"], now: 5), [])
        XCTAssertTrue(schedule.answered("a", fail, now: 0.5))
        XCTAssertEqual(schedule.due(["a", "b"], now: 1.4), [])
        XCTAssertEqual(schedule.due(["a", "b"], now: 1.5), ["a"])
        XCTAssertFalse(schedule.answered("a", fail, now: 1.5))
        XCTAssertEqual(schedule.due(["a", "b"], now: 3.4), [])
        XCTAssertEqual(schedule.due(["a", "b"], now: 3.5), ["a"])
        XCTAssertFalse(schedule.answered("a", fail, now: 4))
        XCTAssertEqual(schedule.due(["a", "b"], now: 6.9), [])
        XCTAssertEqual(schedule.due(["a", "b"], now: 7), ["a"])
        XCTAssertTrue(schedule.answered("a", .success(["127.0.0.1"]), now: 7))
        XCTAssertEqual(schedule.entries["a"]?.answer, .success(["127.0.0.1"]))
        XCTAssertEqual(schedule.due(["a", "b"], now: 9.9), [])
        XCTAssertEqual(schedule.due(["a", "b"], now: 10), ["a"])
        XCTAssertFalse(schedule.answered("a", .success(["127.0.0.1"]), now: 10))

        // b, in flight since 0, unlisted, listed again: still that one lookup; unlisted again,
        // forgotten when it answers.
        XCTAssertEqual(schedule.due(["a"], now: 10), [])
        XCTAssertEqual(schedule.due(["a", "b"], now: 11), [])
        XCTAssertEqual(schedule.due(["a"], now: 11), [])
        XCTAssertFalse(schedule.answered("b", .success(["127.0.0.2"]), now: 11))
        XCTAssertNil(schedule.entries["b"])
        // a, idle, unlisted: forgotten at once; listed again, due at once.
        XCTAssertEqual(schedule.due([], now: 11), [])
        XCTAssertNil(schedule.entries["a"])
        XCTAssertEqual(schedule.due(["a"], now: 11), ["a"])
    }

    /// `hostnameRefreshInterval` in ugate.json: 30 s unless given, a positive number.
    func testHostnameRefreshIntervalConfig() throws {
        let decode = { (json: String) in try JSONDecoder().decode(HTTPRouteConfig.self, from: Data(json.utf8)) }
        XCTAssertEqual(try decode(#"{"manifests": "/m"}"#).hostnameRefreshInterval, 30)
        XCTAssertEqual(try decode(#"{"manifests": "/m", "hostnameRefreshInterval": 5}"#).hostnameRefreshInterval, 5)
        XCTAssertThrowsError(try decode(#"{"manifests": "/m", "hostnameRefreshInterval": 0}"#)) { error in
            XCTAssertTrue("\(error)".contains("hostnameRefreshInterval 0.0 is not a positive number of seconds"), "\(error)")
        }
    }
}
