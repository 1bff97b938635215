import Foundation
import Glibc
import NIOCore
import XCTest

@testable import Gate

/// The admin port: /debug/streams, /metrics, status page, 404 — through real curl.
final class AdminTests: XCTestCase {
    /// `/debug/streams` after `stop()`: once the loops have exited they refuse work (instead of
    /// queueing it for nobody and writing their closed eventfd), and the snapshot returns empty
    /// instead of waiting forever.
    func testStreamsAfterStopReturn() async throws {
        let (node, _) = try makeNode(["127.0.0.1:0": ListenerConfig(forwardTo: "127.0.0.1:9")])
        node.stop()
        for loop in node.loops.loops {
            var exited = false
            for _ in 0..<200 where !exited {
                exited = !loop.execute {}
                if !exited { try await Task.sleep(for: .milliseconds(50)) }
            }
            XCTAssertTrue(exited, "gate loop \(loop.index) did not exit within 10 s of stop()")
        }
        let returned = expectation(description: "streams() returned after stop()")
        Task {
            let streams = await node.streams()
            XCTAssertTrue(streams.isEmpty)
            returned.fulfill()
        }
        await fulfillment(of: [returned], timeout: 10)
    }

    func testDebugStreamsMetricsAndStatusPage() async throws {
        let echo = try EchoServer()
        defer { echo.stop() }
        let metrics = PrometheusMetrics()
        metrics.makeCounter(label: "ugate_test_total", dimensions: [("kind", "a\"b")]).increment(by: 3)
        var config = GateConfig()
        config.basePort = 0
        config.defaultListeners = false
        config.listeners = ["127.0.0.1:0": ListenerConfig(forwardTo: "127.0.0.1:\(echo.port)")]
        let node = try GateNode(config: config, metrics: metrics)
        node.start()
        defer { node.stop() }
        let admin = try await AdminServer(routes: node.adminRoutes()).start(host: "127.0.0.1", port: 0)
        let port = admin.localAddress!.port!
        let curl = try tool("curl")

        let fd = try TestSocket.connect(node.address(of: "127.0.0.1:0")!)
        defer { close(fd) }
        try TestSocket.writeAll(fd, [9])
        XCTAssertEqual(try TestSocket.readExactly(fd, 1), [9])

        let streams = try runProcess(curl, ["-sf", "http://127.0.0.1:\(port)/debug/streams"])
        XCTAssertEqual(streams.status, 0, streams.err)
        let decoded = try JSONDecoder().decode([StreamSnapshot].self, from: Data(streams.out.utf8))
        XCTAssertEqual(decoded.count, 1)
        XCTAssertEqual(decoded.first?.destination, "127.0.0.1:\(echo.port)")
        XCTAssertEqual(decoded.first?.bytesUp, 1)
        XCTAssertEqual(decoded.first?.bytesDown, 1)

        let text = try runProcess(curl, ["-sf", "http://127.0.0.1:\(port)/metrics"])
        XCTAssertEqual(text.status, 0)
        XCTAssertTrue(text.out.contains("# TYPE ugate_test_total counter\nugate_test_total{kind=\"a\\\"b\"} 3\n"), text.out)

        let status = try runProcess(curl, ["-sf", "http://127.0.0.1:\(port)/"])
        XCTAssertTrue(status.out.contains("127.0.0.1:0 (tcp)"), status.out)
        XCTAssertTrue(status.out.contains("streams: 1 active"), status.out)

        let missing = try runProcess(curl, ["-s", "-o", "/dev/null", "-w", "%{http_code}", "http://127.0.0.1:\(port)/nope"])
        XCTAssertEqual(missing.out, "404")
        try await admin.close()
    }
}
