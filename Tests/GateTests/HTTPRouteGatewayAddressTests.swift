import Foundation
import Glibc
import XCTest

@testable import Gate

/// Gateway `spec.addresses` (type IPAddress): the configured listener serving the Gateway binds
/// each address (127.0.0.2 and ::1 here) instead of its default host, they appear in the
/// Gateway's `status.addresses`, a reload that removes them moves the listener back to its
/// default host, and other address types or values are refused naming file, object and field.
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

    func testListenerBindsTheGatewayAddresses() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("gwaddr-\(getpid())-\(UUID())").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let backend = try PythonBackend("web")
        defer { backend.stop() }
        try writeManifest(Self.gateway(addresses: "  addresses: [{type: IPAddress, value: 127.0.0.2}, {value: \"::1\"}]"), "gw.yaml", in: dir)
        let loops = try GateLoopGroup(count: 1)
        defer { loops.shutdown() }
        var config = HTTPRouteConfig(
            manifests: dir, services: ["shop/web": backend.address], listeners: [HTTPRouteListenerConfig(name: "web", port: 0, gateway: "infra/gw")])
        config.reloadInterval = 0.05
        let capture = LogCapture()
        let service = try HTTPRouteService(config: config, bind: "127.0.0.1", loops: loops, log: capture.logger("ugate.httproute"))
        defer { service.stop() }

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
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("gwaddr-bad-\(getpid())-\(UUID())").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        for (addresses, message) in [
            ("  addresses: [{type: Hostname, value: gw.example}]", "gw.yaml: Gateway infra/gw: spec.addresses[0].type: unsupported: address type Hostname"),
            ("  addresses: [{type: example.com/Custom, value: x}]", "spec.addresses[0].type: unsupported: address type example.com/Custom"),
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
    }
}
