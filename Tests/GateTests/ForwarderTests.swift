import Foundation
import Glibc
import XCTest

@testable import Gate

/// The data path through a port-forward listener, copy and splice, with real sockets.
final class ForwarderTests: XCTestCase {
    func testPortForwardCopyEchoAndHalfClose() throws {
        try echoAndHalfClose(.copy)
    }

    func testPortForwardSpliceEchoAndHalfClose() throws {
        try echoAndHalfClose(.splice)
    }

    private func echoAndHalfClose(_ mode: ForwardMode) throws {
        let echo = try EchoServer()
        defer { echo.stop() }
        let (node, log) = try makeNode(["127.0.0.1:0": ListenerConfig(forwardTo: "127.0.0.1:\(echo.port)", forwarder: mode)])
        defer { node.stop() }
        let address = node.address(of: "127.0.0.1:0")!
        try checkEchoHalfClose { try TestSocket.connect(address) }
        let line = log.waitForLine(containing: ["stream", "mode=\(mode.rawValue)", "end=done", "dst=127.0.0.1:\(echo.port)"])
        XCTAssertNotNil(line, "access log line; got \(log.lines)")
        XCTAssertTrue(line?.contains("bytes.up=200022") ?? false, line ?? "")
        XCTAssertTrue(line?.contains("bytes.down=200025") ?? false, line ?? "")
    }

    /// 64 MiB each way through both modes: bounded buffers with backpressure lose nothing.
    func testBulkTransferBothModes() throws {
        let echo = try EchoServer()
        defer { echo.stop() }
        for mode in [ForwardMode.copy, .splice] {
            let (node, _) = try makeNode(["127.0.0.1:0": ListenerConfig(forwardTo: "127.0.0.1:\(echo.port)", forwarder: mode)])
            defer { node.stop() }
            let fd = try TestSocket.connect(node.address(of: "127.0.0.1:0")!)
            defer { close(fd) }
            let total = 64 << 20
            let chunk = [UInt8]((0..<(1 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 5) })
            let writer = Thread {
                for _ in 0..<(total >> 20) { try? TestSocket.writeAll(fd, chunk) }
                shutdown(fd, Int32(SHUT_WR))
            }
            writer.start()
            let received = try TestSocket.readToEOF(fd, limit: total + 16)
            XCTAssertEqual(received.count, total + 3, "mode \(mode)")
            var ok = true
            for i in stride(from: 0, to: total, by: 1 << 20) where received[i..<(i + 4096)].elementsEqual(chunk[0..<4096]) == false {
                ok = false
            }
            XCTAssertTrue(ok, "payload intact in mode \(mode)")
        }
    }

    /// A reset upstream becomes a reset client (no silent FIN), and the stream is logged as reset.
    func testUpstreamResetPropagates() throws {
        let listenFd = try Sys.listen(try SocketAddress(host: "127.0.0.1", port: 0))
        _ = fcntl(listenFd, F_SETFL, 0)
        defer { close(listenFd) }
        let port = SocketAddress.local(of: listenFd)!.port
        let (node, log) = try makeNode(["127.0.0.1:0": ListenerConfig(forwardTo: "127.0.0.1:\(port)")])
        defer { node.stop() }
        let fd = try TestSocket.connect(node.address(of: "127.0.0.1:0")!)
        defer { close(fd) }
        try TestSocket.writeAll(fd, Array("x".utf8))
        let server = accept(listenFd, nil, nil)
        XCTAssertGreaterThan(server, 0)
        _ = try TestSocket.readExactly(server, 1)
        Sys.abort(server)
        var byte: UInt8 = 0
        let n = recv(fd, &byte, 1, 0)
        XCTAssertEqual(n, -1, "client sees a reset, not EOF")
        XCTAssertEqual(errno, ECONNRESET)
        XCTAssertNotNil(log.waitForLine(containing: ["stream", "end=reset"]))
    }

    /// A connection refused upstream resets the client.
    func testRefusedUpstreamResetsClient() throws {
        let closedPort = try RefusedPort()
        defer { closedPort.close() }
        let (node, log) = try makeNode(["127.0.0.1:0": ListenerConfig(forwardTo: "127.0.0.1:\(closedPort.port)")])
        defer { node.stop() }
        let fd = try TestSocket.connect(node.address(of: "127.0.0.1:0")!)
        defer { close(fd) }
        var byte: UInt8 = 0
        XCTAssertLessThanOrEqual(recv(fd, &byte, 1, 0), 0)
        XCTAssertNotNil(log.waitForLine(containing: ["dial failed"]))
    }

    /// Idle streams are closed after the idle timeout.
    func testIdleTimeoutClosesStream() throws {
        let echo = try EchoServer()
        defer { echo.stop() }
        let (node, log) = try makeNode(["127.0.0.1:0": ListenerConfig(forwardTo: "127.0.0.1:\(echo.port)")]) { $0.idleTimeout = 1 }
        defer { node.stop() }
        let fd = try TestSocket.connect(node.address(of: "127.0.0.1:0")!)
        defer { close(fd) }
        try TestSocket.writeAll(fd, [1, 2, 3])
        XCTAssertEqual(try TestSocket.readExactly(fd, 3), [1, 2, 3])
        XCTAssertNotNil(log.waitForLine(containing: ["stream", "end=idle"], timeout: 15))
    }

    /// 1000 concurrent streams all complete; afterwards no socket they opened is left open.
    func testThousandConcurrentStreamsNoFDLeak() throws {
        let echo = try EchoServer()
        defer { echo.stop() }
        let (node, _) = try makeNode(["127.0.0.1:0": ListenerConfig(forwardTo: "127.0.0.1:\(echo.port)")])
        defer { node.stop() }
        let address = node.address(of: "127.0.0.1:0")!
        // Warm up pools and threads so they do not count as leaks.
        try checkEchoHalfClose { try TestSocket.connect(address) }
        usleep(200_000)
        let before = Sys.openDescriptors()
        var fds: [Int32] = []
        for i in 0..<1000 {
            let fd = try TestSocket.connect(address)
            fds.append(fd)
            try TestSocket.writeAll(fd, Array("stream \(i)".utf8))
        }
        for (i, fd) in fds.enumerated() {
            let expect = Array("stream \(i)".utf8)
            XCTAssertEqual(try TestSocket.readExactly(fd, expect.count), expect)
            shutdown(fd, Int32(SHUT_WR))
        }
        for fd in fds {
            XCTAssertEqual(try TestSocket.readToEOF(fd), Array("BYE".utf8))
            close(fd)
        }
        XCTAssertEqual(TestSocket.descriptorsLeftOpen(since: before, socketsOnly: true), [:], "sockets left open after 1000 streams")
    }
}
