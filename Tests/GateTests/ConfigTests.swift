import Foundation
import XCTest

@testable import Gate

final class ConfigTests: XCTestCase {
    private func decode(_ json: String) throws -> GateConfig {
        try GateConfig.decode(Data(json.utf8))
    }

    private func assertRejected(_ json: String, mentions field: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try decode(json), file: file, line: line) { error in
            XCTAssertTrue("\(error)".contains(field), "\(error) should name \(field)", file: file, line: line)
        }
    }

    func testEmptyConfigIsTheDefaultNode() throws {
        let config = try decode("{}")
        XCTAssertEqual(config, GateConfig())
        XCTAssertEqual(config.basePort, 15000)
        XCTAssertEqual(config.bind, "127.0.0.1")
        let specs = try GateNode.listenerSpecs(config)
        XCTAssertEqual(specs.map(\.name), ["redirect-out", "http", "socks5", "redirect-in"])
        XCTAssertEqual(specs.map(\.address.port), [15001, 15002, 15005, 15006])
    }

    func testUgateJSONListenersAndHosts() throws {
        let config = try decode("""
            {"basePort": 16000, "name": "n1",
             "listeners": {":8080": {"forwardTo": "web"}, "-:9090": {"forwardTo": "10.0.0.1:90", "forwarder": "splice"},
                           "udp://:5353": {"forwardTo": "127.0.0.1:53"}, ":1080": {"proto": "socks5"}},
             "hosts": {"web": {"addr": "127.0.0.1:80"}},
             "routes": [{"host": "*.example.com", "to": "web"}]}
            """)
        XCTAssertEqual(config.listeners[":8080"]?.proto, .tcp)
        XCTAssertEqual(config.listeners["udp://:5353"]?.proto, .udp)
        XCTAssertEqual(config.listeners["-:9090"]?.forwarder, .splice)
        XCTAssertEqual(try ListenerAddress(key: "-:9090", bind: "127.0.0.1").address.host, "::")
        XCTAssertEqual(try ListenerAddress(key: ":8080", bind: "127.0.0.1").address, try SocketAddress(host: "127.0.0.1", port: 8080))
        XCTAssertTrue(try ListenerAddress(key: "udp://:5353", bind: "127.0.0.1").udp)
        XCTAssertEqual(try ListenerAddress(key: "[::1]:7", bind: "127.0.0.1").address.host, "::1")
        let specs = try GateNode.listenerSpecs(config)
        XCTAssertEqual(specs.first { $0.name == ":1080" }?.proto, .socks5)
    }

    func testUnknownAndInvalidFieldsAreNamed() {
        assertRejected(#"{"basePrt": 1}"#, mentions: "basePrt")
        assertRejected(#"{"listeners": {":80": {"forwardTo": "a:1", "sniffing": true}}}"#, mentions: #"listeners[":80"].sniffing"#)
        assertRejected(#"{"hosts": {"a": {"address": "x:1"}}}"#, mentions: #"hosts.a.address"#)
        assertRejected(#"{"routes": [{"to": "direct", "hots": "x"}]}"#, mentions: "routes[0].hots")
        assertRejected(#"{"basePort": "x"}"#, mentions: "basePort")
        assertRejected(#"{"basePort": 70000}"#, mentions: "basePort")
        assertRejected(#"{"forwarder": "zerocopy"}"#, mentions: "forwarder")
        assertRejected(#"{"listeners": {":80": {"proto": "quic"}}}"#, mentions: #"listeners[":80"].proto"#)
        assertRejected(#"{"listeners": {":80": {}}}"#, mentions: #"listeners[":80"].forwardTo"#)
        assertRejected(#"{"listeners": {"eighty": {"forwardTo": "a:1"}}}"#, mentions: #"listeners["eighty"]"#)
        assertRejected(#"{"listeners": {":80": {"forwardTo": "nohost"}}}"#, mentions: #"listeners[":80"].forwardTo"#)
        assertRejected(#"{"bind": "localhost"}"#, mentions: "bind")
        assertRejected(#"{"routes": [{"to": "direct"}]}"#, mentions: "routes[0]")
        assertRejected(#"{"listeners": {"udp://:53": {"proto": "socks5"}}}"#, mentions: #"listeners["udp://:53"].proto"#)
    }

    func testRouteToUnknownTargetIsRejected() throws {
        var config = try decode(#"{"routes": [{"host": "a", "to": "nowhere"}]}"#)
        config.basePort = 0
        XCTAssertThrowsError(try GateNode(config: config)) { error in
            XCTAssertTrue("\(error)".contains("routes[0].to"), "\(error)")
        }
    }

    func testRouterMatchesListenerHostWildcardAndDestination() throws {
        let loops = try GateLoopGroup(count: 1)
        defer { loops.shutdown() }
        let direct = DirectUpstream(loops: loops)
        let router = try Router(
            rules: [
                RouteConfig(host: "*.example.com", to: "web"),
                RouteConfig(host: "exact.org", to: "web"),
                RouteConfig(listener: "socks5", dest: "10.1.1.1:443", to: "web"),
            ],
            hosts: ["web": HostConfig(addr: "127.0.0.1:8080")], direct: direct)
        func dest(_ listener: String, _ host: String, _ port: UInt16 = 443, sni: String? = nil) throws -> String {
            try router.route(StreamInfo(listener: listener, source: "s", destination: Destination(host: host, port: port), serverName: sni)).destination.description
        }
        XCTAssertEqual(try dest("x", "a.example.com"), "127.0.0.1:8080")
        XCTAssertEqual(try dest("x", "a.b.example.com"), "127.0.0.1:8080")
        XCTAssertEqual(try dest("x", "example.com"), "example.com:443", "wildcard does not match the apex")
        XCTAssertEqual(try dest("x", "EXACT.org"), "127.0.0.1:8080")
        XCTAssertEqual(try dest("x", "1.2.3.4", sni: "www.example.com"), "127.0.0.1:8080", "SNI wins over the IP")
        XCTAssertEqual(try dest("socks5", "10.1.1.1"), "127.0.0.1:8080")
        XCTAssertEqual(try dest("http", "10.1.1.1"), "10.1.1.1:443")
    }
}

final class TimerHeapTests: XCTestCase {
    func testPopsInDeadlineOrder() {
        var heap = TimerHeap()
        let deadlines: [UInt64] = [50, 10, 40, 10, 30, 20, 60, 0, 35]
        for d in deadlines { heap.push(LoopTimer(deadline: d) {}) }
        var out: [UInt64] = []
        while let t = heap.pop() { out.append(t.deadline) }
        XCTAssertEqual(out, deadlines.sorted())
        XCTAssertNil(heap.top)
    }
}
