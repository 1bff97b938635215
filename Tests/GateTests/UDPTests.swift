import Foundation
import Glibc
import XCTest

@testable import Gate

/// A loopback UDP echo server on a thread.
final class UDPEcho: @unchecked Sendable {  // fd is immutable; the thread owns the loop
    let fd: Int32
    let port: UInt16

    init(host: String = "127.0.0.1") throws {
        let address = try SocketAddress(host: host, port: 0)
        fd = try Sys.listen(address, udp: true)
        _ = fcntl(fd, F_SETFL, 0)
        port = SocketAddress.local(of: fd)!.port
        let sock = fd
        Thread.detachNewThread {
            var buf = [UInt8](repeating: 0, count: 65536)
            while true {
                var ss = sockaddr_storage()
                var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
                let n = buf.withUnsafeMutableBytes { b in
                    withUnsafeMutablePointer(to: &ss) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { recvfrom(sock, b.baseAddress, b.count, 0, $0, &len) } }
                }
                if n < 0 { return }
                _ = buf.withUnsafeBytes { b in
                    withUnsafePointer(to: &ss) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { sendto(sock, b.baseAddress, n, 0, $0, len) } }
                }
            }
        }
    }

    func stop() {
        shutdown(fd, Int32(SHUT_RDWR))
        close(fd)
    }
}

final class UDPTests: XCTestCase {
    /// Sends `payload` to `address` from a fresh socket and returns the reply.
    static func roundTrip(_ payload: [UInt8], to address: SocketAddress) throws -> [UInt8] {
        let fd = socket(address.isIPv6 ? AF_INET6 : AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        defer { close(fd) }
        var tv = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        _ = payload.withUnsafeBytes { b in address.withSockAddr { sendto(fd, b.baseAddress, b.count, 0, $0, $1) } }
        var buf = [UInt8](repeating: 0, count: 65536)
        let n = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        guard n >= 0 else { throw GateError(.syscall, "recv reply", errno: errno) }
        return Array(buf[0..<n])
    }

    func testDirectUDPRoundTrip() throws {
        let echo = try UDPEcho()
        defer { echo.stop() }
        XCTAssertEqual(try UDPTests.roundTrip([1, 2, 3], to: SocketAddress(host: "127.0.0.1", port: echo.port)), [1, 2, 3])
    }

    func testUDPForwardListenerPerFlowNAT() throws {
        let echo = try UDPEcho()
        defer { echo.stop() }
        let (node, logs) = try makeNode(["udp://127.0.0.1:0": ListenerConfig(forwardTo: "127.0.0.1:\(echo.port)", proto: .udp)])
        var stopped = false
        defer { if !stopped { node.stop() } }
        let address = node.address(of: "udp://127.0.0.1:0")!
        // The listener resolves its target asynchronously: retry the first datagram briefly.
        var first: [UInt8] = []
        for _ in 0..<20 where first.isEmpty {
            first = (try? UDPTests.roundTrip(Array("one".utf8), to: address)) ?? []
        }
        XCTAssertEqual(first, Array("one".utf8))
        // Two clients at once, each gets its own reply (separate NAT flows).
        let big = [UInt8](repeating: 7, count: 1200)
        XCTAssertEqual(try UDPTests.roundTrip(big, to: address), big)
        XCTAssertEqual(try UDPTests.roundTrip(Array("two".utf8), to: address), Array("two".utf8))
        // Each flow ends with one access-log line naming its destination and byte counts.
        node.stop()
        stopped = true
        XCTAssertNotNil(logs.waitForLine(containing: ["udp flow", "dst=127.0.0.1:\(echo.port)", "bytes.up=1200", "bytes.down=1200", "end=stop"]), "\(logs.lines)")
        XCTAssertNotNil(logs.waitForLine(containing: ["udp flow", "bytes.up=3", "bytes.down=3", "datagrams.up=1", "datagrams.down=1"]), "\(logs.lines)")
    }
}
