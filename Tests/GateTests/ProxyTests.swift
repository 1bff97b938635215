import Foundation
import Glibc
import XCTest

@testable import Gate

/// SOCKS5 and HTTP proxy listeners against real curl, PySocks and hand-made bad requests.
final class ProxyTests: XCTestCase {
    private func proxyNode(configure: (inout GateConfig) -> Void = { _ in }) throws -> (GateNode, LogCapture) {
        try makeNode([:], defaults: true, configure: configure)
    }

    func testCurlThroughSOCKS5HostnameAndIPv6() throws {
        let origin4 = try TinyHTTPServer()
        defer { origin4.stop() }
        let origin6 = try TinyHTTPServer(host: "::1")
        defer { origin6.stop() }
        let (node, log) = try proxyNode()
        defer { node.stop() }
        let socks = node.address(of: "socks5")!
        let curl = try tool("curl")
        let r1 = try runProcess(curl, ["-sS", "--max-time", "20", "--socks5-hostname", "\(socks)", "http://localhost:\(origin4.port)/hello"])
        XCTAssertEqual(r1.status, 0, r1.err)
        XCTAssertTrue(r1.out.contains("request=GET /hello HTTP/1.1 host=localhost:\(origin4.port)"), r1.out)
        let r2 = try runProcess(curl, ["-sS", "--max-time", "20", "--socks5-hostname", "\(socks)", "http://[::1]:\(origin6.port)/six"])
        XCTAssertEqual(r2.status, 0, r2.err)
        XCTAssertTrue(r2.out.contains("request=GET /six HTTP/1.1"), r2.out)
        XCTAssertNotNil(log.waitForLine(containing: ["stream", "listener=socks5", "dst=[::1]:\(origin6.port)"]), "\(log.lines)")
        XCTAssertNotNil(log.waitForLine(containing: ["stream", "listener=socks5", "dst=localhost:\(origin4.port)", "sni=localhost"]), "\(log.lines)")
    }

    func testSOCKS5UsernamePasswordWithCurl() throws {
        let origin = try TinyHTTPServer()
        defer { origin.stop() }
        let (node, _) = try proxyNode { $0.socksUsers = ["alice": "s3cret"] }
        defer { node.stop() }
        let socks = node.address(of: "socks5")!
        let curl = try tool("curl")
        let good = try runProcess(curl, ["-sS", "--max-time", "20", "-x", "socks5h://alice:s3cret@\(socks)", "http://127.0.0.1:\(origin.port)/auth"])
        XCTAssertEqual(good.status, 0, good.err)
        XCTAssertTrue(good.out.contains("request=GET /auth"), good.out)
        let bad = try runProcess(curl, ["-sS", "--max-time", "20", "-x", "socks5h://alice:wrong@\(socks)", "http://127.0.0.1:\(origin.port)/auth"])
        XCTAssertNotEqual(bad.status, 0)
        XCTAssertFalse(bad.out.contains("request="))
        let none = try runProcess(curl, ["-sS", "--max-time", "20", "--socks5-hostname", "\(socks)", "http://127.0.0.1:\(origin.port)/auth"])
        XCTAssertNotEqual(none.status, 0, "no credentials offered: no acceptable method")
    }

    func testCurlConnectAndAbsoluteURIToSeveralOrigins() throws {
        let origin = try TinyHTTPServer()
        defer { origin.stop() }
        let (node, logs) = try proxyNode()
        defer { node.stop() }
        let proxy = "http://\(node.address(of: "http")!)"
        let curl = try tool("curl")
        let tunnel = try runProcess(curl, ["-sS", "--max-time", "20", "-p", "-x", proxy, "http://127.0.0.1:\(origin.port)/tunnel"])
        XCTAssertEqual(tunnel.status, 0, tunnel.err)
        XCTAssertTrue(tunnel.out.contains("request=GET /tunnel HTTP/1.1"), tunnel.out)
        // Two origins in one curl run over one kept-alive proxy connection (curl reports 0 new
        // connects after the first): each request reaches its own origin, in origin-form, with
        // no Connection field; the upstream connection is kept while the origin stays the same.
        let other = try TinyHTTPServer()
        defer { other.stop() }
        let urls = ["http://127.0.0.1:\(origin.port)/one", "http://127.0.0.1:\(other.port)/two",
                    "http://127.0.0.1:\(other.port)/three", "http://127.0.0.1:\(origin.port)/four"]
        let absolute = try runProcess(curl, ["-sS", "--max-time", "20", "-x", proxy, "-w", "connects=%{num_connects}\n"] + urls)
        XCTAssertEqual(absolute.status, 0, absolute.err)
        XCTAssertEqual(absolute.out, """
            request=GET /one HTTP/1.1 host=127.0.0.1:\(origin.port) headers=3
            connects=1
            request=GET /two HTTP/1.1 host=127.0.0.1:\(other.port) headers=3
            connects=0
            request=GET /three HTTP/1.1 host=127.0.0.1:\(other.port) headers=3
            connects=0
            request=GET /four HTTP/1.1 host=127.0.0.1:\(origin.port) headers=3
            connects=0

            """)
        // One access-log line per request, all from the same client port; /three reused the
        // upstream connection /two opened, the others dialled their origin.
        var clients: Set<String> = []
        for (path, port, upstream) in [("/one", origin.port, "direct"), ("/two", other.port, "direct"),
                                        ("/three", other.port, "kept"), ("/four", origin.port, "direct")] {
            let line = logs.waitForLine(containing: ["stream", "mode=http", "request=GET http://127.0.0.1:\(port)\(path)", "upstream=\(upstream)", "end=done"])
            XCTAssertNotNil(line, "\(path) via \(upstream): \(logs.lines)")
            if let src = line?.split(separator: " ").first(where: { $0.hasPrefix("src=") }) { clients.insert(String(src)) }
        }
        XCTAssertEqual(clients.count, 1, "one client connection: \(clients)")
    }

    /// Keep-alive with bodies: a POST with Content-Length and a chunked upload on one proxy
    /// connection, each answered, then a request with `Connection: close` ends it.
    func testAbsoluteURIRequestBodiesOnKeptConnection() throws {
        try withProxyConnection { origin, fd in
            let base = "http://127.0.0.1:\(origin.port)"
            let requests = [
                "POST \(base)/a HTTP/1.1\r\nHost: 127.0.0.1:\(origin.port)\r\nContent-Length: 5\r\n\r\nhello",
                "POST \(base)/b HTTP/1.1\r\nHost: 127.0.0.1:\(origin.port)\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
                "GET \(base)/c HTTP/1.1\r\nHost: 127.0.0.1:\(origin.port)\r\nConnection: close\r\n\r\n",
            ]
            // Byte at a time for the first, whole for the others.
            for byte in Array(requests[0].utf8) { try TestSocket.writeAll(fd, [byte]) }
            try TestSocket.writeAll(fd, Array((requests[1] + requests[2]).utf8))
            let all = String(decoding: try TestSocket.readToEOF(fd), as: UTF8.self)
            XCTAssertEqual(all.components(separatedBy: "HTTP/1.1 200 OK").count - 1, 3, all)
            XCTAssertTrue(all.contains("request=POST /a HTTP/1.1 host=127.0.0.1:\(origin.port) headers=2 body=hello\n"), all)
            XCTAssertTrue(all.contains("request=POST /b HTTP/1.1 host=127.0.0.1:\(origin.port) headers=2 body=5|hello|0||\n"), all)
            XCTAssertTrue(all.contains("request=GET /c HTTP/1.1 host=127.0.0.1:\(origin.port) headers=2\n"), all)
            XCTAssertTrue(all.hasSuffix("Connection: close\r\n\r\nrequest=GET /c HTTP/1.1 host=127.0.0.1:\(origin.port) headers=2\n"), all)
        }
    }

    /// `Expect: 100-continue`: the proxy answers `100 Continue` once the request is on its way
    /// (before it, the client waited for its expect timeout), and the origin never sees `Expect`.
    func testAbsoluteURIExpectContinueIsAnsweredByTheProxy() throws {
        try withProxyConnection { origin, fd in
            let head = "POST http://127.0.0.1:\(origin.port)/e HTTP/1.1\r\nHost: 127.0.0.1:\(origin.port)\r\n"
                + "Expect: 100-continue\r\nContent-Length: 5\r\nConnection: close\r\n\r\n"
            try TestSocket.writeAll(fd, Array(head.utf8))
            let interim = "HTTP/1.1 100 Continue\r\n\r\n"
            XCTAssertEqual(String(decoding: try TestSocket.readExactly(fd, interim.utf8.count), as: UTF8.self), interim)
            try TestSocket.writeAll(fd, Array("hello".utf8))
            let all = String(decoding: try TestSocket.readToEOF(fd), as: UTF8.self)
            XCTAssertTrue(all.hasPrefix("HTTP/1.1 200 OK"), all)
            XCTAssertTrue(all.contains("request=POST /e HTTP/1.1 host=127.0.0.1:\(origin.port) headers=3 body=hello\n"), all)
        }
    }

    /// Hop-by-hop fields of the origin's response (Keep-Alive, Proxy-Connection, and a field
    /// its Connection names) stop at the proxy; end-to-end fields and the body pass unchanged,
    /// and the proxy's own Connection field says what it does with the client connection.
    func testAbsoluteURIResponseHopByHopFieldsAreRemoved() throws {
        let listenFd = try Sys.listen(try SocketAddress(host: "127.0.0.1", port: 0))
        defer { close(listenFd) }
        _ = fcntl(listenFd, F_SETFL, 0)
        let port = SocketAddress.local(of: listenFd)!.port
        Thread.detachNewThread {
            let c = accept(listenFd, nil, nil)
            guard c >= 0 else { return }
            defer { close(c) }
            var head: [UInt8] = []
            var byte: UInt8 = 0
            while head.suffix(4) != Array("\r\n\r\n".utf8), recv(c, &byte, 1, 0) == 1 { head.append(byte) }
            let response = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: X-Hop\r\nX-Hop: secret\r\n"
                + "Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nX-Kept: yes\r\n\r\nok"
            try? TestSocket.writeAll(c, Array(response.utf8))
        }
        let (node, _) = try proxyNode()
        defer { node.stop() }
        let fd = try TestSocket.connect(node.address(of: "http")!)
        defer { close(fd) }
        try TestSocket.writeAll(fd, Array("GET http://127.0.0.1:\(port)/h HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nConnection: close\r\n\r\n".utf8))
        let got = String(decoding: try TestSocket.readToEOF(fd), as: UTF8.self)
        XCTAssertEqual(got, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Kept: yes\r\nConnection: close\r\n\r\nok")
    }

    /// An origin that closes its connection after each response without announcing it: the
    /// next request on the kept client connection finds the upstream closed and is sent again
    /// on a new one, so the client sees every answer.
    func testAbsoluteURIRetriesWhenOriginClosedKeptConnection() throws {
        let origin = try TinyHTTPServer(closeAfterResponse: true)
        defer { origin.stop() }
        let (node, logs) = try proxyNode()
        defer { node.stop() }
        let fd = try TestSocket.connect(node.address(of: "http")!)
        defer { close(fd) }
        for path in ["/x", "/y", "/z"] {
            try TestSocket.writeAll(fd, Array("GET http://127.0.0.1:\(origin.port)\(path) HTTP/1.1\r\nHost: 127.0.0.1:\(origin.port)\r\n\r\n".utf8))
            let body = "request=GET \(path) HTTP/1.1 host=127.0.0.1:\(origin.port) headers=1\n"
            let head = "HTTP/1.1 200 OK\r\nContent-Length: \(body.utf8.count)\r\nContent-Type: text/plain\r\n\r\n"
            let got = String(decoding: try TestSocket.readExactly(fd, head.utf8.count + body.utf8.count), as: UTF8.self)
            XCTAssertEqual(got, head + body)
        }
        XCTAssertNotNil(logs.waitForLine(containing: ["stream", "mode=http", "request=GET http://127.0.0.1:\(origin.port)/y", "end=stale"]), "\(logs.lines)")
        XCTAssertNotNil(logs.waitForLine(containing: ["stream", "mode=http", "request=GET http://127.0.0.1:\(origin.port)/z", "upstream=direct", "end=done"]), "\(logs.lines)")
    }

    func testEchoAndHalfCloseThroughSOCKS5AndConnect() throws {
        let echo = try EchoServer()
        defer { echo.stop() }
        let (node, _) = try proxyNode()
        defer { node.stop() }
        try checkEchoHalfClose {
            let (fd, code) = try socks5Connect(node.address(of: "socks5")!, host: "127.0.0.1", port: echo.port)
            XCTAssertEqual(code, 0)
            return fd
        }
        try checkEchoHalfClose {
            let fd = try TestSocket.connect(node.address(of: "http")!)
            try TestSocket.writeAll(fd, Array("CONNECT 127.0.0.1:\(echo.port) HTTP/1.1\r\nHost: 127.0.0.1:\(echo.port)\r\n\r\n".utf8))
            let expected = Array("HTTP/1.1 200 Connection established\r\n\r\n".utf8)
            XCTAssertEqual(try TestSocket.readExactly(fd, expected.count), expected)
            return fd
        }
    }

    func testMalformedSOCKSRequestsGetErrorRepliesWhileOtherStreamsWork() throws {
        let echo = try EchoServer()
        defer { echo.stop() }
        let (node, _) = try proxyNode()
        defer { node.stop() }
        let socks = node.address(of: "socks5")!
        let (keeper, ok) = try socks5Connect(socks, host: "127.0.0.1", port: echo.port)
        XCTAssertEqual(ok, 0)
        defer { close(keeper) }

        // SOCKS4 greeting: closed without a reply.
        let v4 = try TestSocket.connect(socks)
        try TestSocket.writeAll(v4, [4, 1, 0, 80, 127, 0, 0, 1, 0])
        XCTAssertEqual(try TestSocket.readToEOF(v4), [])
        close(v4)
        // No acceptable method: 0xFF then close.
        let noMethod = try TestSocket.connect(socks)
        try TestSocket.writeAll(noMethod, [5, 1, 2])
        XCTAssertEqual(try TestSocket.readToEOF(noMethod), [5, 0xFF])
        close(noMethod)
        // Unknown address type 9: reply 0x08.
        let badType = try TestSocket.connect(socks)
        try TestSocket.writeAll(badType, [5, 1, 0, 5, 1, 0, 9, 1, 2, 3, 4, 0, 80])
        let reply = try TestSocket.readToEOF(badType)
        XCTAssertEqual(Array(reply.prefix(2)), [5, 0])
        XCTAssertEqual(reply.count > 3 ? reply[3] : 0xEE, 0x08, "\(reply)")
        close(badType)
        // BIND: command not supported 0x07.
        let bind = try TestSocket.connect(socks)
        try TestSocket.writeAll(bind, [5, 1, 0, 5, 2, 0, 1, 127, 0, 0, 1, 0, 80])
        let bindReply = try TestSocket.readToEOF(bind)
        XCTAssertEqual(bindReply.count > 3 ? bindReply[3] : 0xEE, 0x07, "\(bindReply)")
        close(bind)
        // Refused destination: 0x05.
        let closedPort = try RefusedPort()
        defer { closedPort.close() }
        let (refused, code) = try socks5Connect(socks, host: "127.0.0.1", port: closedPort.port)
        XCTAssertEqual(code, 0x05)
        close(refused)
        // Unresolvable name: host unreachable 0x04.
        let (unknown, unknownCode) = try socks5Connect(socks, host: "no-such-host.invalid", port: 80)
        XCTAssertEqual(unknownCode, 0x04)
        close(unknown)

        try TestSocket.writeAll(keeper, Array("still here".utf8))
        XCTAssertEqual(try TestSocket.readExactly(keeper, 10), Array("still here".utf8))
    }

    func testBrokenHTTPRequestsGetStatusCodes() throws {
        let (node, _) = try proxyNode()
        defer { node.stop() }
        let http = node.address(of: "http")!
        func ask(_ request: String) throws -> String {
            let fd = try TestSocket.connect(http)
            defer { close(fd) }
            try TestSocket.writeAll(fd, Array(request.utf8))
            return String(decoding: try TestSocket.readToEOF(fd), as: UTF8.self)
        }
        XCTAssertTrue(try ask("GARBAGE\r\n\r\n").hasPrefix("HTTP/1.1 400 "))
        XCTAssertTrue(try ask("CONNECT x:1 HTTP/1.1\r\n\r\n").hasPrefix("HTTP/1.1 400 "), "HTTP/1.1 without Host")
        XCTAssertTrue(try ask("GET /origin-form HTTP/1.1\r\nHost: x\r\n\r\n").hasPrefix("HTTP/1.1 400 "))
        XCTAssertTrue(try ask("GET https://x/ HTTP/1.1\r\nHost: x\r\n\r\n").hasPrefix("HTTP/1.1 400 "))
        let closedPort = try RefusedPort()
        defer { closedPort.close() }
        let refused = "127.0.0.1:\(closedPort.port)"
        XCTAssertTrue(try ask("CONNECT \(refused) HTTP/1.1\r\nHost: \(refused)\r\n\r\n").hasPrefix("HTTP/1.1 502 "))
        XCTAssertTrue(try ask("CONNECT no-such-host.invalid:80 HTTP/1.1\r\nHost: no-such-host.invalid:80\r\n\r\n").hasPrefix("HTTP/1.1 502 "))
    }

    func testDeniedRouteGets403AndNotAllowed() throws {
        let (node, _) = try proxyNode { $0.routes = [RouteConfig(host: "*.blocked.test", to: "deny")] }
        defer { node.stop() }
        let fd = try TestSocket.connect(node.address(of: "http")!)
        defer { close(fd) }
        try TestSocket.writeAll(fd, Array("CONNECT www.blocked.test:443 HTTP/1.1\r\nHost: www.blocked.test:443\r\n\r\n".utf8))
        XCTAssertTrue(String(decoding: try TestSocket.readToEOF(fd), as: UTF8.self).hasPrefix("HTTP/1.1 403 "))
        let (s, code) = try socks5Connect(node.address(of: "socks5")!, host: "a.blocked.test", port: 443)
        close(s)
        XCTAssertEqual(code, 0x02)
    }

    func testGarbageAndTruncatedClientHellosOnSniffingListener() throws {
        let echo = try EchoServer()
        defer { echo.stop() }
        let (node, log) = try makeNode(["127.0.0.1:0": ListenerConfig(forwardTo: "127.0.0.1:\(echo.port)", sniff: true)])
        defer { node.stop() }
        let address = node.address(of: "127.0.0.1:0")!
        // A TLS handshake record whose body is not a ClientHello: closed, nothing forwarded.
        let garbage = try TestSocket.connect(address)
        try TestSocket.writeAll(garbage, [0x16, 0x03, 0x01, 0x00, 0x08, 0x07, 0, 0, 4, 1, 2, 3, 4])
        XCTAssertEqual(try TestSocket.readToEOF(garbage), [])
        close(garbage)
        XCTAssertNotNil(log.waitForLine(containing: ["stream rejected"]))
        // A truncated ClientHello followed by FIN: forwarded unchanged (the server decides).
        let truncated: [UInt8] = [0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03]
        let t = try TestSocket.connect(address)
        try TestSocket.writeAll(t, truncated)
        shutdown(t, Int32(SHUT_WR))
        XCTAssertEqual(try TestSocket.readToEOF(t), truncated + Array("BYE".utf8))
        close(t)
        // A real ClientHello (openssl s_client) is sniffed: SNI in the access log, bytes unchanged.
        let openssl = try tool("openssl")
        let r = try runProcess("/bin/sh", ["-c", "echo | \(openssl) s_client -connect \(address) -servername sni.example.test 2>&1 || true"], timeout: 30)
        _ = r
        XCTAssertNotNil(log.waitForLine(containing: ["stream", "sni=sni.example.test", "proto=tls"]), "\(log.lines)")
        try checkEchoHalfClose { try TestSocket.connect(address) }
    }

    func testUDPAssociateWithPySocks() throws {
        let echo = try UDPEcho()
        defer { echo.stop() }
        let (node, _) = try proxyNode()
        defer { node.stop() }
        let out = try pySocksUDP(
            through: node, timeout: 5,
            """
            for i in range(3):
                s.sendto(b"ping-%d" % i, ("127.0.0.1", \(echo.port)))
                data, addr = s.recvfrom(2048)
                print(data.decode(), addr[1])
            """)
        XCTAssertEqual(out, "ping-0 \(echo.port)\nping-1 \(echo.port)\nping-2 \(echo.port)\n")
    }
    /// SOCKS5 UDP destinations go through the route table: a `hosts` route rewrites one (the
    /// reply still names the address the client sent to), a `deny` route drops another with
    /// one log line, and the association keeps serving the rest.
    func testUDPAssociateFollowsRoutes() throws {
        let echo = try UDPEcho()
        defer { echo.stop() }
        let (aliasPort, deniedPort) = (UInt16(9), UInt16(7))
        let (node, log) = try proxyNode { config in
            config.hosts = ["echo": HostConfig(addr: "127.0.0.1:\(echo.port)")]
            config.routes = [
                RouteConfig(dest: "127.0.0.2:\(aliasPort)", to: "echo"),
                RouteConfig(dest: "127.0.0.2:\(deniedPort)", to: "deny"),
            ]
        }
        defer { node.stop() }
        let out = try pySocksUDP(
            through: node, timeout: 1,
            """
            s.sendto(b"aliased", ("127.0.0.2", \(aliasPort)))
            data, addr = s.recvfrom(2048)
            print(data.decode(), addr[0], addr[1])
            s.sendto(b"denied", ("127.0.0.2", \(deniedPort)))
            try:
                print("unexpected", s.recvfrom(2048))
            except socket.timeout:
                print("no reply")
            s.sendto(b"direct", ("127.0.0.1", \(echo.port)))
            data, addr = s.recvfrom(2048)
            print(data.decode(), addr[0], addr[1])
            """)
        XCTAssertEqual(out, "aliased 127.0.0.2 \(aliasPort)\nno reply\ndirect 127.0.0.1 \(echo.port)\n")
        XCTAssertNotNil(
            log.waitForLine(containing: ["udp flow refused", "listener=socks5", "dst=127.0.0.2:\(deniedPort)", "denied by the route table"]),
            "\(log.lines)")
    }

    /// Runs `body` in Python with `s`, a PySocks UDP socket through the node's SOCKS5 listener
    /// (recv timeout `timeout` seconds); returns its stdout, failing the test on a non-zero exit.
    private func pySocksUDP(through node: GateNode, timeout: Double, _ body: String) throws -> String {
        let socks = node.address(of: "socks5")!
        let script = """
            import socks, socket
            s = socks.socksocket(socket.AF_INET, socket.SOCK_DGRAM)
            s.set_proxy(socks.SOCKS5, "\(socks.host)", \(socks.port))
            s.settimeout(\(timeout))

            """ + body
        let r = try runProcess("/usr/bin/env", ["python3", "-c", script], timeout: 30)
        XCTAssertEqual(r.status, 0, r.err)
        return r.out
    }

    /// Runs `body` with a fresh origin server and a raw connection to a proxy node's HTTP
    /// listener; all three are stopped or closed afterwards.
    private func withProxyConnection(_ body: (_ origin: TinyHTTPServer, _ fd: Int32) throws -> Void) throws {
        let origin = try TinyHTTPServer()
        defer { origin.stop() }
        let (node, _) = try proxyNode()
        defer { node.stop() }
        let fd = try TestSocket.connect(node.address(of: "http")!)
        defer { close(fd) }
        try body(origin, fd)
    }
}
