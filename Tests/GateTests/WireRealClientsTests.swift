import Foundation
import Glibc
import XCTest

@testable import Gate

/// Errors of the loopback helpers below.
struct LoopbackError: Error, CustomStringConvertible {
    var description: String
}

/// A TCP listener on 127.0.0.1 with an ephemeral port, so real clients (curl, openssl,
/// Python) can connect to the test, which then drives the wire codecs with their bytes.
final class LoopbackListener {
    let fd: Int32
    let port: UInt16

    init() throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw LoopbackError(description: "socket: errno \(errno)") }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer -> Bool in
                bind(fd, pointer, length) == 0 && listen(fd, 8) == 0 && getsockname(fd, pointer, &length) == 0
            }
        }
        guard bound else {
            close(fd)
            throw LoopbackError(description: "bind/listen on 127.0.0.1:0: errno \(errno)")
        }
        self.fd = fd
        self.port = UInt16(bigEndian: address.sin_port)
    }

    deinit { close(fd) }

    /// Waits (bounded) for one connection.
    func accept(timeoutSeconds: Int32 = 30) throws -> Int32 {
        var pollfd = Glibc.pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        guard poll(&pollfd, 1, timeoutSeconds * 1000) == 1 else {
            throw LoopbackError(description: "no client connected to port \(port) within \(timeoutSeconds) s")
        }
        let client = Glibc.accept(fd, nil, nil)
        guard client >= 0 else { throw LoopbackError(description: "accept: errno \(errno)") }
        return client
    }
}

/// Reads what is available within a bounded wait; nil at EOF, error or timeout.
func readChunk(_ fd: Int32, timeoutSeconds: Int32 = 30) -> [UInt8]? {
    var pollfd = Glibc.pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
    guard poll(&pollfd, 1, timeoutSeconds * 1000) == 1 else { return nil }
    var buffer = [UInt8](repeating: 0, count: 65536)
    let count = read(fd, &buffer, buffer.count)
    return count > 0 ? Array(buffer[..<count]) : nil
}

func writeAll(_ fd: Int32, _ bytes: [UInt8]) {
    var offset = 0
    while offset < bytes.count {
        let written = bytes[offset...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        guard written > 0 else { return }
        offset += written
    }
}

/// A client program started for one test; stopped by its PID when the test ends.
final class Tool {
    let process = Process()
    private let stdout = Pipe()
    private let stderr = Pipe()

    /// Starts `arguments[0]` found in PATH; fails loudly when the tool is not installed.
    init(_ arguments: [String]) throws {
        let path = (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":")
            .map { "\($0)/\(arguments[0])" }
            .first { FileManager.default.isExecutableFile(atPath: $0) }
        guard let path else {
            throw LoopbackError(description: "\(arguments[0]) is not installed (needed by this test; see scripts/deps)")
        }
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = Array(arguments.dropFirst())
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = stdout
        process.standardError = stderr
        try process.run()
    }

    /// Waits for the tool to exit (it is bounded by its own --max-time or by our closing the
    /// socket) and returns its exit status, stdout and stderr.
    func finish() -> (status: Int32, out: String, err: String) {
        let out = stdout.fileHandleForReading.readDataToEndOfFile()
        let err = stderr.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: out, as: UTF8.self), String(decoding: err, as: UTF8.self))
    }

    /// Stops the tool by its PID (it has served its purpose) and reaps it.
    func stop() {
        if process.isRunning { kill(process.processIdentifier, SIGTERM) }
        _ = finish()
    }

    deinit {
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
    }
}

final class WireRealClientsTests: XCTestCase {
    // MARK: Real ClientHellos

    /// Accepts one connection from the tool started by `arguments(port)` and sniffs its first
    /// bytes as they arrive, segment by segment, until the sniffer decides.
    func sniffRealClient(_ arguments: (UInt16) -> [String]) throws -> (SniffResult, [UInt8]) {
        let listener = try LoopbackListener()
        let tool = try Tool(arguments(listener.port))
        let fd = try listener.accept()
        defer {
            close(fd)
            tool.stop()
        }
        var bytes: [UInt8] = []
        while let chunk = readChunk(fd) {
            bytes += chunk
            let result = Sniffer.sniff(bytes, maxBytes: 64 * 1024)
            if case .needMore = result { continue }
            return (result, bytes)
        }
        throw LoopbackError(description: "client closed after \(bytes.count) bytes without a complete ClientHello")
    }

    /// The lengths of the TLS records at the start of `bytes`.
    func recordLengths(_ bytes: [UInt8]) -> [Int] {
        var lengths: [Int] = []
        var offset = 0
        while offset + 5 <= bytes.count {
            let length = Int(bytes[offset + 3]) << 8 | Int(bytes[offset + 4])
            lengths.append(length)
            offset += 5 + length
        }
        return lengths
    }

    func testPythonSSLClientHello() throws {
        let script = """
            import socket, ssl, sys
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            ctx.set_alpn_protocols(["h2", "spdy/3", "http/1.1"])
            s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=30)
            try:
                ctx.wrap_socket(s, server_hostname="python.example")
            except Exception:
                pass
            """
        let (result, bytes) = try sniffRealClient { ["python3", "-c", script, "\($0)"] }
        guard case .tls(let info) = result else { return XCTFail("\(result)") }
        XCTAssertEqual(info.serverName, "python.example")
        XCTAssertEqual(info.alpn, ["h2", "spdy/3", "http/1.1"])
        XCTAssertTrue(info.offersTLS13, "\(info.supportedVersions)")
        XCTAssertEqual(info.legacyVersion, 0x0303)
        // The same bytes decode identically when delivered in every other way.
        guard case .done(let whole, let consumed) = TLSClientHello.parse(bytes) else { return XCTFail() }
        assertDecodes(Array(bytes[..<consumed]), as: whole) { TLSClientHello.parse($0) }
    }

    func testOpenSSLClientHelloSplitAcrossRecords() throws {
        // A long ALPN list and -max_send_frag 512 make openssl send the hello in several records.
        let protocols = ["h2", "http/1.1"] + (0..<100).map { "proto-\($0)" }
        let (result, bytes) = try sniffRealClient { port in
            ["openssl", "s_client", "-connect", "127.0.0.1:\(port)", "-servername", "openssl.example",
             "-alpn", protocols.joined(separator: ","), "-max_send_frag", "512"]
        }
        guard case .tls(let info) = result else { return XCTFail("\(result)") }
        XCTAssertGreaterThan(recordLengths(bytes).count, 1, "openssl sent one record; the test wants several")
        XCTAssertEqual(info.serverName, "openssl.example")
        XCTAssertEqual(info.alpn, protocols)
        XCTAssertTrue(info.offersTLS13)
        guard case .done(let whole, let consumed) = TLSClientHello.parse(bytes) else { return XCTFail() }
        assertDecodes(Array(bytes[..<consumed]), as: whole) { TLSClientHello.parse($0) }
        // Re-cut the real handshake into 1-byte records: still the same hello.
        let handshake = reassemble(bytes, upTo: consumed)
        XCTAssertEqual(TLSClientHello.parse(ClientHelloBuilder.records(handshake, fragment: 1)).value, whole)
    }

    /// Concatenates the fragments of the records in `bytes[..<end]`.
    func reassemble(_ bytes: [UInt8], upTo end: Int) -> [UInt8] {
        var out: [UInt8] = []
        var offset = 0
        while offset + 5 <= end {
            let length = Int(bytes[offset + 3]) << 8 | Int(bytes[offset + 4])
            out += bytes[(offset + 5)..<(offset + 5 + length)]
            offset += 5 + length
        }
        return out
    }

    func testCurlClientHello() throws {
        let (result, _) = try sniffRealClient { port in
            ["curl", "-sk", "--max-time", "30", "--resolve", "curl.example:\(port):127.0.0.1", "https://curl.example:\(port)/"]
        }
        guard case .tls(let info) = result else { return XCTFail("\(result)") }
        XCTAssertEqual(info.serverName, "curl.example")
        XCTAssertEqual(info.alpn, ["h2", "http/1.1"])
    }

    // MARK: curl through the SOCKS5 machine

    struct SOCKS5Run {
        var machine: SOCKS5ServerMachine
        var actions: [SOCKS5ServerMachine.Action]
        var forwardedHead: HTTPRequestHead?
        var status: Int32
        var out: String
        var err: String
    }

    /// Serves one curl run with `SOCKS5ServerMachine` over a real socket. On `.connect` it
    /// plays the destination itself: it answers `connected` (or `failed(dialFailure)`), reads
    /// the HTTP request curl sends through the tunnel (pipelined payload first) and answers it.
    func socks5Run(
        _ mode: SOCKS5ServerMachine.AuthMode, proxyURL: (UInt16) -> String, url: String,
        accept: @escaping (String, String) -> Bool = { _, _ in true }, dialFailure: SOCKS5ReplyCode? = nil
    ) throws -> SOCKS5Run {
        let listener = try LoopbackListener()
        let tool = try Tool(["curl", "-sS", "--max-time", "30", "-x", proxyURL(listener.port), url])
        let fd = try listener.accept()
        var machine = SOCKS5ServerMachine(authMode: mode)
        var all: [SOCKS5ServerMachine.Action] = []
        var head: HTTPRequestHead?
        dialog: while let chunk = readChunk(fd) {
            var pending = machine.receive(chunk)
            while !pending.isEmpty {
                let action = pending.removeFirst()
                all.append(action)
                switch action {
                case .send(let bytes): writeAll(fd, bytes)
                case .verifyCredentials(let user, let password): pending += machine.credentialsVerified(accept(user, password))
                case .refuse(_, _, let reply):
                    writeAll(fd, reply)
                    break dialog
                case .close: break dialog
                case .udpAssociate: break dialog
                case .connect(let destination):
                    if let dialFailure {
                        writeAll(fd, machine.failed(dialFailure))
                        break dialog
                    }
                    writeAll(fd, machine.connected(bound: Destination(host: "127.0.0.1", port: 40000)))
                    var payload = machine.takeBufferedPayload()
                    while true {
                        if case .done(let parsed, _) = HTTPRequestHead.parse(payload) {
                            head = parsed
                            break
                        }
                        guard let more = readChunk(fd) else { break }
                        payload += more
                    }
                    let body = "hello from \(destination)"
                    writeAll(fd, Array("HTTP/1.1 200 OK\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n\(body)".utf8))
                    break dialog
                }
            }
        }
        close(fd)
        let (status, out, err) = tool.finish()
        return SOCKS5Run(machine: machine, actions: all, forwardedHead: head, status: status, out: out, err: err)
    }

    func testCurlSOCKS5NoAuthDomain() throws {
        let run = try socks5Run(.none, proxyURL: { "socks5h://127.0.0.1:\($0)" }, url: "http://target.example:8080/hello")
        XCTAssertEqual(run.status, 0, run.err)
        XCTAssertEqual(run.out, "hello from target.example:8080")
        XCTAssertEqual(run.machine.request?.addressType, .domainName)
        XCTAssertEqual(run.forwardedHead?.target, "/hello")
        XCTAssertEqual(run.forwardedHead?.values("host"), ["target.example:8080"])
    }

    func testCurlSOCKS5UsernamePassword() throws {
        var seen: [String] = []
        let run = try socks5Run(
            .usernamePassword, proxyURL: { "socks5h://alice:s3cret@127.0.0.1:\($0)" }, url: "http://auth.example/",
            accept: { user, password in
                seen.append("\(user):\(password)")
                return user == "alice" && password == "s3cret"
            })
        XCTAssertEqual(run.status, 0, run.err)
        XCTAssertEqual(seen, ["alice:s3cret"])
        XCTAssertEqual(run.out, "hello from auth.example:80")
        XCTAssertEqual(run.machine.username, "alice")
    }

    func testCurlSOCKS5BadPassword() throws {
        let run = try socks5Run(.usernamePassword, proxyURL: { "socks5h://alice:wrong@127.0.0.1:\($0)" }, url: "http://auth.example/") { _, _ in false }
        XCTAssertNotEqual(run.status, 0)
        XCTAssertTrue(run.machine.isClosed)
        guard case .close(let error) = run.actions.last else { return XCTFail("\(run.actions)") }
        XCTAssertEqual(error.code, .authenticationFailed)
    }

    func testCurlSOCKS5IPv6AndIPv4Literals() throws {
        let v6 = try socks5Run(.none, proxyURL: { "socks5://127.0.0.1:\($0)" }, url: "http://[2001:db8::1]:8080/six")
        XCTAssertEqual(v6.status, 0, v6.err)
        XCTAssertEqual(v6.machine.request?.addressType, .ipv6)
        XCTAssertEqual(v6.out, "hello from [2001:db8::1]:8080")
        let v4 = try socks5Run(.none, proxyURL: { "socks5://127.0.0.1:\($0)" }, url: "http://192.0.2.44/four")
        XCTAssertEqual(v4.status, 0, v4.err)
        XCTAssertEqual(v4.machine.request?.addressType, .ipv4)
        XCTAssertEqual(v4.out, "hello from 192.0.2.44:80")
    }

    func testCurlSOCKS5ConnectionRefusedReply() throws {
        let run = try socks5Run(.none, proxyURL: { "socks5h://127.0.0.1:\($0)" }, url: "http://down.example/", dialFailure: SOCKS5ReplyCode(errno: ECONNREFUSED))
        XCTAssertEqual(run.status, 97, "curl's CURLE_PROXY: \(run.err)")
        XCTAssertTrue(run.err.lowercased().contains("refused") || run.err.contains("(5)"), run.err)
    }

    // MARK: curl through the HTTP proxy codecs

    func testCurlAbsoluteURIProxyRequest() throws {
        let listener = try LoopbackListener()
        let tool = try Tool(["curl", "-sS", "--max-time", "30", "-x", "http://127.0.0.1:\(listener.port)", "-H", "Connection: X-Hop", "-H", "X-Hop: 1",
                             "http://origin.example:8080/path?q=1"])
        let fd = try listener.accept()
        defer { close(fd) }
        var bytes: [UInt8] = []
        var head: HTTPRequestHead?
        while head == nil, let chunk = readChunk(fd) {
            bytes += chunk
            head = HTTPRequestHead.parse(bytes).value
        }
        guard let head else { return XCTFail("no request head from curl: \(bytes)") }
        XCTAssertEqual(try head.proxyTarget(), .absolute(Destination(host: "origin.example", port: 8080), originForm: "/path?q=1"))
        let forward = String(decoding: try head.forwardHead(), as: UTF8.self)
        XCTAssertTrue(forward.hasPrefix("GET /path?q=1 HTTP/1.1\r\nHost: origin.example:8080\r\n"), forward)
        XCTAssertFalse(forward.lowercased().contains("proxy-connection"), forward)
        XCTAssertFalse(forward.lowercased().contains("x-hop"), forward)
        XCTAssertTrue(forward.contains("User-Agent: curl/"), forward)
        writeAll(fd, Array("HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\norigin".utf8))
        close(fd)
        let (status, out, err) = tool.finish()
        XCTAssertEqual(status, 0, err)
        XCTAssertEqual(out, "origin")
    }

    func testCurlCONNECTTunnel() throws {
        let listener = try LoopbackListener()
        let tool = try Tool(["curl", "-sS", "--max-time", "30", "-p", "-x", "http://127.0.0.1:\(listener.port)", "http://tunnel.example:9090/t"])
        let fd = try listener.accept()
        defer { close(fd) }
        var bytes: [UInt8] = []
        var connect: (HTTPRequestHead, Int)?
        while connect == nil, let chunk = readChunk(fd) {
            bytes += chunk
            if case .done(let head, let consumed) = HTTPRequestHead.parse(bytes) { connect = (head, consumed) }
        }
        guard let (head, consumed) = connect else { return XCTFail("no CONNECT from curl") }
        XCTAssertEqual(head.method, "CONNECT")
        XCTAssertEqual(try head.proxyTarget(), .connect(Destination(host: "tunnel.example", port: 9090)))
        writeAll(fd, HTTPResponseWriter.connectEstablished())
        var inner = Array(bytes[consumed...])
        var request: HTTPRequestHead?
        while request == nil {
            if let parsed = HTTPRequestHead.parse(inner).value { request = parsed; break }
            guard let chunk = readChunk(fd) else { break }
            inner += chunk
        }
        XCTAssertEqual(try request?.proxyTarget(), .origin(Destination(host: "tunnel.example", port: 9090), path: "/t"))
        writeAll(fd, Array("HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\ntunnel".utf8))
        close(fd)
        let (status, out, err) = tool.finish()
        XCTAssertEqual(status, 0, err)
        XCTAssertEqual(out, "tunnel")
    }

    func testCurlReadsTheErrorResponse() throws {
        let listener = try LoopbackListener()
        let tool = try Tool(["curl", "-sS", "--max-time", "30", "-p", "-x", "http://127.0.0.1:\(listener.port)", "http://refused.example:1/"])
        let fd = try listener.accept()
        defer { close(fd) }
        var bytes: [UInt8] = []
        while HTTPRequestHead.parse(bytes).value == nil, let chunk = readChunk(fd) { bytes += chunk }
        writeAll(fd, HTTPResponseWriter.error(status: HTTPResponseWriter.status(errno: ECONNREFUSED), message: "connect to refused.example:1: connection refused"))
        close(fd)
        let (status, _, err) = tool.finish()
        XCTAssertEqual(status, 56, "CURLE_RECV_ERROR for a failed CONNECT: \(err)")
        XCTAssertTrue(err.contains("502"), err)
    }
}
