import Foundation
import Glibc
import Synchronization
import XCTest

@testable import Gate

/// The HTTP/1.1 data path on the gate loops (`HTTP1LoopConnection`, `LoopBackendConnection`,
/// `SocketWriteQueue`) against real sockets: a client that does not read holds the backend
/// back (the gateway keeps a bounded amount, its writes to the client are partial and resume
/// on `EPOLLOUT`, the body arrives intact), and every descriptor the gateway opens for client
/// and backend connections is closed again, whatever way the connections end.
final class HTTPRouteLoopTests: XCTestCase {
    var dir = ""
    var loops: GateLoopGroup!
    var gateway: HTTPGateway!

    override func tearDown() {
        gateway?.stop()
        loops?.shutdown()
        try? FileManager.default.removeItem(atPath: dir)
    }

    func startGateway(backend: String, keepAliveTimeout: Double = 60) throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("httproute-loop-\(getpid())-\(UUID())").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try """
            apiVersion: gateway.networking.k8s.io/v1
            kind: HTTPRoute
            metadata: {name: loop}
            spec:
              rules:
              - backendRefs: [{name: backend, port: 80}]
            """.write(toFile: "\(dir)/routes.yaml", atomically: true, encoding: .utf8)
        let loader = HTTPRouteLoader(services: ["backend": backend])
        loops = try GateLoopGroup(count: 1)
        gateway = try HTTPGateway(
            table: RouteTable(routes: try loader.load(directory: dir).routes), loops: loops, defaultTimeout: 60,
            keepAliveTimeout: keepAliveTimeout, metrics: PrometheusMetrics())
    }

    /// The byte at `offset` of the big body (a pattern that shows reordering or loss).
    static func pattern(_ offset: Int) -> UInt8 { UInt8(truncatingIfNeeded: offset % 251) }

    /// A backend that answers every request with `size` pattern bytes, written with blocking
    /// sends in 64 KiB pieces; `progress` counts what the kernel accepted so far.
    final class BigBackend: Sendable {
        let fd: Int32
        let port: UInt16
        /// Body bytes the kernel accepted so far (of the latest response).
        final class Progress: Sendable {
            let sent = Atomic<Int>(0)
        }
        let progress = Progress()

        init(size: Int) throws {
            let progress = progress
            (fd, port) = try TestSocket.serveEachConnection { BigBackend.serve($0, size: size, progress: progress) }
        }

        private static func serve(_ c: Int32, size: Int, progress: Progress) {
            defer { close(c) }
            var head: [UInt8] = []
            var byte: UInt8 = 0
            while head.count < 16384, !head.suffix(4).elementsEqual(Array("\r\n\r\n".utf8)) {
                guard recv(c, &byte, 1, 0) == 1 else { return }
                head.append(byte)
            }
            guard (try? TestSocket.writeAll(c, Array("HTTP/1.1 200 OK\r\nContent-Length: \(size)\r\n\r\n".utf8))) != nil else { return }
            var piece = [UInt8](repeating: 0, count: 65536)
            var offset = 0
            while offset < size {
                let count = min(piece.count, size - offset)
                for i in 0..<count { piece[i] = HTTPRouteLoopTests.pattern(offset + i) }
                guard (try? TestSocket.writeAll(c, Array(piece[0..<count]))) != nil else { return }
                offset += count
                progress.sent.store(offset, ordering: .relaxed)
            }
        }

        func stop() {
            shutdown(fd, Int32(SHUT_RDWR))
            close(fd)
        }
    }

    func testClientThatDoesNotReadHoldsTheBackendBack() throws {
        let size = 64 << 20
        let backend = try BigBackend(size: size)
        defer { backend.stop() }
        try startGateway(backend: "127.0.0.1:\(backend.port)")
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        XCTAssertGreaterThanOrEqual(fd, 0)
        defer { close(fd) }
        // A small receive buffer (set before connecting: no window autotuning).
        var small: Int32 = 32768
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, socklen_t(MemoryLayout<Int32>.size))
        var timeout = timeval(tv_sec: 30, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let address = try SocketAddress(host: "127.0.0.1", port: gateway.address.port)
        XCTAssertEqual(address.withSockAddr { connect(fd, $0, $1) }, 0)
        try TestSocket.writeAll(fd, Array("GET /big HTTP/1.1\r\nHost: big.example\r\n\r\n".utf8))

        // Not reading: once every buffer on the way is full the backend is held back.
        var held = 0
        for _ in 0..<50 {
            usleep(200_000)
            let now = backend.progress.sent.load(ordering: .relaxed)
            if now == held, now > 0 { break }
            held = now
        }
        print("client not reading: the backend got \(held) of \(size) bytes out")
        XCTAssertGreaterThan(held, 0)
        XCTAssertLessThan(held, 24 << 20, "the gateway kept reading the backend for a client that does not read")

        // Then read it all: complete, in order (partial writes resumed on EPOLLOUT).
        var buffer = [UInt8](repeating: 0, count: 65536)
        var head: [UInt8] = []
        while !head.suffix(4).elementsEqual(Array("\r\n\r\n".utf8)) {
            var byte: UInt8 = 0
            XCTAssertEqual(recv(fd, &byte, 1, 0), 1)
            head.append(byte)
        }
        XCTAssertTrue(String(decoding: head, as: UTF8.self).hasPrefix("HTTP/1.1 200 OK\r\n"))
        var received = 0
        var intact = true
        while received < size {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress!, min($0.count, size - received), 0) }
            guard n > 0 else { break }
            for i in 0..<n where buffer[i] != Self.pattern(received + i) { intact = false }
            received += n
        }
        XCTAssertEqual(received, size)
        XCTAssertTrue(intact, "the body arrived changed or out of order")
    }

    func testDescriptorsReturnToTheStartCount() throws {
        // The backend closes every connection after its response without saying so: pooled
        // connections close under the gateway (noticed while idle, or the stale retry).
        let backend = try TinyHTTPServer(closeAfterResponse: true)
        defer { backend.stop() }
        try startGateway(backend: "127.0.0.1:\(backend.port)")
        let port = gateway.address.port
        func exchange(_ request: String) throws -> String {
            let fd = try TestSocket.connect("127.0.0.1", port)
            defer { close(fd) }
            try TestSocket.writeAll(fd, Array(request.utf8))
            return String(decoding: try TestSocket.readToEOF(fd), as: UTF8.self)
        }
        XCTAssertTrue(try exchange("GET /warm HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").hasPrefix("HTTP/1.1 200 OK"))
        usleep(300_000)
        let start = Sys.openDescriptors()

        for i in 0..<40 {
            switch i % 4 {
            case 0:
                // Two pipelined requests, the second closing.
                let reply = try exchange("GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
                XCTAssertEqual(reply.components(separatedBy: "HTTP/1.1 200 OK").count, 3, reply)
            case 1:
                // Refused: 400 and a lingering close.
                XCTAssertTrue(try exchange("GET /x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n").hasPrefix("HTTP/1.1 400 Bad Request"))
            case 2:
                // The client goes away before its response.
                let fd = try TestSocket.connect("127.0.0.1", port)
                try TestSocket.writeAll(fd, Array("GET /gone HTTP/1.1\r\nHost: a\r\n\r\n".utf8))
                close(fd)
            default:
                // h2c by prior knowledge: handed to NIO, which closes it in the end too.
                let fd = try TestSocket.connect("127.0.0.1", port)
                try TestSocket.writeAll(fd, Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8) + [0, 0, 0, 4, 0, 0, 0, 0, 0])
                usleep(20_000)
                close(fd)
            }
        }
        XCTAssertEqual(TestSocket.descriptorsLeftOpen(since: start, socketsOnly: true), [:], "sockets left open by the gateway")
        // A NIO channel leaves the registry in its close future's callback, on its loop, just
        // after its descriptor is closed.
        XCTAssertTrue(eventually(10) { gateway.openConnections == 0 }, "\(gateway.openConnections) connections left")
    }

    /// A closed connection is freed, whichever of its timers and callbacks were in use: its
    /// closures hold it strongly (no weak reference, see `HTTP1LoopConnection`), so each must
    /// be dropped when it closes — idle timer, linger timer, deadline timer, body credit, the
    /// drain of pipelined requests.
    func testClosedConnectionsAreFreed() throws {
        let backend = try TinyHTTPServer()
        defer { backend.stop() }
        try startGateway(backend: "127.0.0.1:\(backend.port)")
        let port = gateway.address.port
        final class Watch: @unchecked Sendable {  // written and read on the gateway's loop thread
            weak var connection: HTTP1LoopConnection?
        }
        /// The gateway's only client connection, watched without keeping it.
        func watchOnly() throws -> Watch {
            XCTAssertTrue(eventually(10) { gateway.openConnections == 1 })
            let handles = gateway.loopConnectionHandles
            XCTAssertEqual(handles.count, 1)
            let watch = Watch()
            let done = DispatchSemaphore(value: 0)
            handles[0].loop.execute {
                watch.connection = (handles[0].connection as? LoopDrainForwarder)?.connection
                done.signal()
            }
            done.wait()
            XCTAssertNotNil(watch.connection)
            return watch
        }
        let requests = [
            // Kept alive (idle timer, deadline timer), then closed by the client.
            "GET /kept HTTP/1.1\r\nHost: a\r\n\r\n",
            // Pipelined (the second served by the drain after the first response).
            "GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n",
            // A body (its credit callback).
            "POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
            // Refused: 400 and a lingering close (linger timer).
            "GET /x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        ]
        for request in requests {
            let fd = try TestSocket.connect("127.0.0.1", port)
            try TestSocket.writeAll(fd, Array(request.utf8))
            var reply: [UInt8] = []
            while !String(decoding: reply, as: UTF8.self).contains("HTTP/1.1 "), reply.count < 4096 {
                reply += try TestSocket.readExactly(fd, 1)
            }
            let watch = try watchOnly()
            close(fd)
            XCTAssertTrue(eventually(10) { gateway.openConnections == 0 }, request)
            // Freed on the loop thread once its last closure is gone.
            XCTAssertTrue(
                eventually(10) {
                    let done = DispatchSemaphore(value: 0)
                    nonisolated(unsafe) var gone = false
                    loops.loops[0].execute {
                        gone = watch.connection == nil
                        done.signal()
                    }
                    done.wait()
                    return gone
                }, "connection not freed after \(request)")
        }
    }

    func testLoopShutdownClosesItsConnections() throws {
        let backend = try TinyHTTPServer()
        defer { backend.stop() }
        let start = TestSocket.descriptorsWithRuntimeStarted()
        try startGateway(backend: "127.0.0.1:\(backend.port)")
        // A kept-alive client connection and its pooled backend connection stay open.
        let fd = try TestSocket.connect("127.0.0.1", gateway.address.port)
        defer { close(fd) }
        try TestSocket.writeAll(fd, Array("GET /kept HTTP/1.1\r\nHost: a\r\n\r\n".utf8))
        var reply: [UInt8] = []
        while !String(decoding: reply, as: UTF8.self).hasSuffix("\n"), reply.count < 4096 {
            reply += try TestSocket.readExactly(fd, 1)
        }
        XCTAssertTrue(String(decoding: reply, as: UTF8.self).hasPrefix("HTTP/1.1 200 OK"))
        XCTAssertEqual(gateway.openConnections, 1)
        gateway.stop()
        loops.shutdown()
        // The gateway's descriptors (listeners, loops, the client and backend connections)
        // close; only the test's own client socket is left.
        XCTAssertEqual(TestSocket.descriptorsLeftOpen(since: start, except: [fd]), [:], "descriptors left open after the loops stopped")
        XCTAssertEqual(try TestSocket.readToEOF(fd), [], "the client connection is closed")
    }
}
