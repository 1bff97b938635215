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
    func accept(timeoutSeconds: Int32 = 30) throws -> Connection {
        var pollfd = Glibc.pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        guard poll(&pollfd, 1, timeoutSeconds * 1000) == 1 else {
            throw LoopbackError(description: "no client connected to port \(port) within \(timeoutSeconds) s")
        }
        let client = Glibc.accept(fd, nil, nil)
        guard client >= 0 else { throw LoopbackError(description: "accept: errno \(errno)") }
        return Connection(client)
    }
}

extension LoopbackListener {
    /// Waits for `tool` to connect; when it does not, the error carries the tool's stderr.
    func accept(from tool: Tool) throws -> Connection {
        do {
            return try accept()
        } catch {
            tool.stop()
            throw LoopbackError(description: "\(error); \(tool.process.executableURL?.lastPathComponent ?? "tool") said: \(tool.finish().err)")
        }
    }
}

/// A connected socket, closed exactly once: by `close()` (the EOF a client waits for) or at deinit.
final class Connection {
    let fd: Int32
    private var isClosed = false

    init(_ fd: Int32) { self.fd = fd }

    func close() {
        guard !isClosed else { return }
        isClosed = true
        Glibc.close(fd)
    }

    deinit { close() }
}

/// Reads from `connection` until an HTTP request head parses; returns it and the bytes after it.
func readRequestHead(_ connection: Connection, buffered: [UInt8] = []) -> (head: HTTPRequestHead, rest: [UInt8])? {
    var bytes = buffered
    while true {
        if case .done(let head, let consumed) = HTTPRequestHead.parse(bytes) { return (head, Array(bytes[consumed...])) }
        guard let chunk = readChunk(connection) else { return nil }
        bytes += chunk
    }
}

/// Reads what is available within a bounded wait; nil at EOF, error or timeout.
func readChunk(_ connection: Connection, timeoutSeconds: Int32 = 30) -> [UInt8]? {
    var pollfd = Glibc.pollfd(fd: connection.fd, events: Int16(POLLIN), revents: 0)
    guard poll(&pollfd, 1, timeoutSeconds * 1000) == 1 else { return nil }
    var buffer = [UInt8](repeating: 0, count: 65536)
    let count = read(connection.fd, &buffer, buffer.count)
    return count > 0 ? Array(buffer[..<count]) : nil
}

func writeAll(_ connection: Connection, _ bytes: [UInt8]) {
    var offset = 0
    while offset < bytes.count {
        let written = bytes[offset...].withUnsafeBytes { write(connection.fd, $0.baseAddress, $0.count) }
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
        if let result { return result }
        let out = stdout.fileHandleForReading.readDataToEndOfFile()
        let err = stderr.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        let finished = (process.terminationStatus, String(decoding: out, as: UTF8.self), String(decoding: err, as: UTF8.self))
        result = finished
        return finished
    }

    private var result: (status: Int32, out: String, err: String)?

    /// Reads the tool's stdout up to the first newline (bounded: the tool prints it at start).
    func readLine() -> String {
        var line: [UInt8] = []
        while !line.contains(UInt8(ascii: "\n")) {
            let data = stdout.fileHandleForReading.availableData
            if data.isEmpty { break }
            line += data
        }
        return String(decoding: line, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
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
        let connection = try listener.accept(from: tool)
        defer {
            connection.close()
            tool.stop()
        }
        var bytes: [UInt8] = []
        while let chunk = readChunk(connection) {
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
        let connection = try listener.accept(from: tool)
        var machine = SOCKS5ServerMachine(authMode: mode)
        var all: [SOCKS5ServerMachine.Action] = []
        var head: HTTPRequestHead?
        dialog: while let chunk = readChunk(connection) {
            var pending = machine.receive(chunk)
            while !pending.isEmpty {
                let action = pending.removeFirst()
                all.append(action)
                switch action {
                case .send(let bytes): writeAll(connection, bytes)
                case .verifyCredentials(let user, let password): pending += machine.credentialsVerified(accept(user, password))
                case .refuse(_, _, let reply):
                    writeAll(connection, reply)
                    break dialog
                case .close: break dialog
                case .udpAssociate: break dialog
                case .connect(let destination):
                    if let dialFailure {
                        writeAll(connection, machine.failed(dialFailure))
                        break dialog
                    }
                    writeAll(connection, machine.connected(bound: Destination(host: "127.0.0.1", port: 40000)))
                    head = readRequestHead(connection, buffered: machine.takeBufferedPayload())?.head
                    let body = "hello from \(destination)"
                    writeAll(connection, Array("HTTP/1.1 200 OK\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n\(body)".utf8))
                    break dialog
                }
            }
        }
        connection.close()
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

    /// Starts curl with `-x http://127.0.0.1:<fresh listener>` and `arguments`; returns it and
    /// the connection it opened to the "proxy".
    func curlViaHTTPProxy(_ arguments: [String]) throws -> (Tool, Connection) {
        let listener = try LoopbackListener()
        let tool = try Tool(["curl", "-sS", "--max-time", "30", "-x", "http://127.0.0.1:\(listener.port)"] + arguments)
        return (tool, try listener.accept(from: tool))
    }

    /// Sends `response`, closes the connection and waits for curl to exit.
    func answer(_ connection: Connection, _ response: [UInt8], _ tool: Tool) -> (status: Int32, out: String, err: String) {
        writeAll(connection, response)
        connection.close()
        return tool.finish()
    }

    func testCurlAbsoluteURIProxyRequest() throws {
        let (tool, connection) = try curlViaHTTPProxy(["-H", "Connection: X-Hop", "-H", "X-Hop: 1", "http://origin.example:8080/path?q=1"])
        guard let (head, _) = readRequestHead(connection) else { return XCTFail("no request head from curl") }
        XCTAssertEqual(try head.proxyTarget(), .absolute(Destination(host: "origin.example", port: 8080), originForm: "/path?q=1"))
        let forward = String(decoding: try head.forwardHead(), as: UTF8.self)
        XCTAssertTrue(forward.hasPrefix("GET /path?q=1 HTTP/1.1\r\nHost: origin.example:8080\r\n"), forward)
        XCTAssertFalse(forward.lowercased().contains("proxy-connection"), forward)
        XCTAssertFalse(forward.lowercased().contains("x-hop"), forward)
        XCTAssertTrue(forward.contains("User-Agent: curl/"), forward)
        let (status, out, err) = answer(connection, Array("HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\norigin".utf8), tool)
        XCTAssertEqual(status, 0, err)
        XCTAssertEqual(out, "origin")
    }

    func testCurlCONNECTTunnel() throws {
        let (tool, connection) = try curlViaHTTPProxy(["-p", "http://tunnel.example:9090/t"])
        guard let (head, rest) = readRequestHead(connection) else { return XCTFail("no CONNECT from curl") }
        XCTAssertEqual(head.method, "CONNECT")
        XCTAssertEqual(try head.proxyTarget(), .connect(Destination(host: "tunnel.example", port: 9090)))
        writeAll(connection, HTTPResponseWriter.connectEstablished())
        let request = readRequestHead(connection, buffered: rest)?.head
        XCTAssertEqual(try request?.proxyTarget(), .origin(Destination(host: "tunnel.example", port: 9090), path: "/t"))
        let (status, out, err) = answer(connection, Array("HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\ntunnel".utf8), tool)
        XCTAssertEqual(status, 0, err)
        XCTAssertEqual(out, "tunnel")
    }

    func testCurlReadsTheErrorResponse() throws {
        let (tool, connection) = try curlViaHTTPProxy(["-p", "http://refused.example:1/"])
        XCTAssertNotNil(readRequestHead(connection))
        let refused = HTTPResponseWriter.error(status: HTTPResponseWriter.status(errno: ECONNREFUSED), message: "connect to refused.example:1: connection refused")
        let (status, _, err) = answer(connection, refused, tool)
        XCTAssertEqual(status, 56, "CURLE_RECV_ERROR for a failed CONNECT: \(err)")
        XCTAssertTrue(err.contains("502"), err)
    }

    // MARK: Chunked bodies and response heads from real peers

    /// Decodes a complete chunked body (test-side, to check the scanner's boundary).
    func dechunk(_ body: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        var index = 0
        while let lineEnd = body[index...].firstIndex(of: UInt8(ascii: "\r")) {
            let sizeText = String(decoding: body[index..<lineEnd], as: UTF8.self).split(separator: ";")[0]
            let size = Int(sizeText, radix: 16) ?? 0
            index = lineEnd + 2
            if size == 0 { break }
            out += body[index..<(index + size)]
            index += size + 2
        }
        return out
    }

    func testCurlChunkedUploadEndsWhereTheScannerSays() throws {
        let payload = (0..<300_000).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("wire-chunked-\(getpid()).bin")
        try Data(payload).write(to: file)
        defer { try? FileManager.default.removeItem(at: file) }
        let (tool, connection) = try curlViaHTTPProxy(["-H", "Transfer-Encoding: chunked", "-H", "Expect:", "--data-binary", "@\(file.path)", "http://upload.example/u"])
        guard let (head, rest) = readRequestHead(connection) else { return XCTFail("no head from curl") }
        XCTAssertEqual(head.bodyFraming, .chunked)
        var scanner = HTTPChunkedScanner()
        var body: [UInt8] = []
        var pending = rest
        scanning: while true {
            switch scanner.scan(pending) {
            case .needMore:
                body += pending
            case .end(let used):
                body += pending[..<used]
                XCTAssertEqual(used, pending.count, "curl sent nothing after its body")
                break scanning
            case .invalid(let error):
                return XCTFail("\(error)")
            }
            guard let chunk = readChunk(connection) else { return XCTFail("curl closed inside the chunked body") }
            pending = chunk
        }
        XCTAssertEqual(dechunk(body), payload)
        let (status, out, err) = answer(connection, Array("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".utf8), tool)
        XCTAssertEqual(status, 0, err)
        XCTAssertEqual(out, "ok")
    }

    func testPythonHTTPServerResponsesOnOneKeptAliveConnection() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("wire-www-\(getpid())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        try Data("first file\n".utf8).write(to: directory.appendingPathComponent("a.txt"))
        try Data(String(repeating: "second ", count: 5000).utf8).write(to: directory.appendingPathComponent("b.txt"))
        let script = """
            import functools, http.server, sys
            class Handler(http.server.SimpleHTTPRequestHandler):
                protocol_version = "HTTP/1.1"
                def log_message(self, *args):
                    pass
            server = http.server.HTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=sys.argv[1]))
            print(server.server_address[1], flush=True)
            server.handle_request()
            """
        let tool = try Tool(["python3", "-c", script, directory.path])
        defer { tool.stop() }
        guard let port = UInt16(tool.readLine()) else { return XCTFail("python server printed no port") }
        let connection = Connection(socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(connection.fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        XCTAssertEqual(connected, 0)
        // Two absolute-form proxy requests, rewritten for the upstream and pipelined.
        for path in ["a.txt", "b.txt"] {
            let request = Array("GET http://127.0.0.1:\(port)/\(path) HTTP/1.1\r\nHost: x\r\nProxy-Connection: keep-alive\r\n\r\n".utf8)
            guard let head = HTTPRequestHead.parse(request).value else { return XCTFail() }
            writeAll(connection, try head.forwardHead())
        }
        var buffer: [UInt8] = []
        var bodies: [String] = []
        while bodies.count < 2 {
            if case .done(let head, let consumed) = HTTP1ResponseHead.parse(buffer) {
                XCTAssertEqual(head.status, 200)
                guard case .contentLength(let length) = try head.bodyFraming(requestMethod: "GET") else { return XCTFail("\(head)") }
                if buffer.count >= consumed + length {
                    bodies.append(String(decoding: buffer[consumed..<(consumed + length)], as: UTF8.self))
                    buffer.removeFirst(consumed + length)
                    continue
                }
            }
            guard let chunk = readChunk(connection) else { return XCTFail("server closed after \(bodies.count) responses") }
            buffer += chunk
        }
        XCTAssertEqual(bodies, ["first file\n", String(repeating: "second ", count: 5000)])
    }

    // MARK: PySocks UDP ASSOCIATE through the machine and the UDP header codec

    func testPySocksUDPAssociateAndDatagramHeaders() throws {
        // The relay: a UDP socket on loopback whose address goes into the success reply.
        let relay = Connection(socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0))
        var relayAddress = sockaddr_in()
        relayAddress.sin_family = sa_family_t(AF_INET)
        relayAddress.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &relayAddress) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(relay.fd, $0, length) == 0 && getsockname(relay.fd, $0, &length) == 0 }
        }
        XCTAssertTrue(bound)
        let relayPort = UInt16(bigEndian: relayAddress.sin_port)

        let script = """
            import socket, socks, sys
            s = socks.socksocket(socket.AF_INET, socket.SOCK_DGRAM)
            s.set_proxy(socks.SOCKS5, "127.0.0.1", int(sys.argv[1]), rdns=True, username="udpuser", password="udppass")
            s.settimeout(30)
            for target in [("udp.example", 5353), ("2001:db8::53", 53)]:
                s.sendto(b"ping " + target[0].encode(), target)
                data, source = s.recvfrom(1024)
                print(data.decode(), source[0], source[1])
            """
        let listener = try LoopbackListener()
        let tool = try Tool(["python3", "-c", script, "\(listener.port)"])
        let control = try listener.accept(from: tool)
        var machine = SOCKS5ServerMachine(authMode: .usernamePassword)
        var associated: Destination?
        while associated == nil, let chunk = readChunk(control) {
            var pending = machine.receive(chunk)
            while !pending.isEmpty {
                switch pending.removeFirst() {
                case .send(let bytes): writeAll(control, bytes)
                case .verifyCredentials(let user, let password): pending += machine.credentialsVerified(user == "udpuser" && password == "udppass")
                case .udpAssociate(let hint):
                    associated = hint
                    writeAll(control, machine.connected(bound: Destination(host: "127.0.0.1", port: relayPort)))
                case let other: return XCTFail("unexpected \(other)")
                }
            }
        }
        // PySocks announces its client address as the domain name "0" (inet_pton refuses "0").
        XCTAssertEqual(associated?.host, "0")
        XCTAssertEqual(machine.request?.addressType, .domainName)
        XCTAssertEqual(machine.request?.command, .udpAssociate)

        var received: [Destination] = []
        for answerFrom in [Destination(host: "198.51.100.53", port: 5353), Destination(host: "2001:db8::53", port: 53)] {
            var pollfd = Glibc.pollfd(fd: relay.fd, events: Int16(POLLIN), revents: 0)
            guard poll(&pollfd, 1, 30_000) == 1 else { return XCTFail("no datagram from PySocks") }
            var datagram = [UInt8](repeating: 0, count: 2048)
            var client = sockaddr_storage()
            var clientLength = socklen_t(MemoryLayout<sockaddr_storage>.size)
            let count = withUnsafeMutablePointer(to: &client) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { recvfrom(relay.fd, &datagram, datagram.count, 0, $0, &clientLength) }
            }
            guard count > 0, case .done(let header, let offset) = SOCKS5UDPHeader.parse(datagram[..<count]) else {
                return XCTFail("undecodable datagram")
            }
            received.append(header.destination)
            XCTAssertEqual(String(decoding: datagram[offset..<count], as: UTF8.self), "ping \(header.destination.host)")
            let reply = SOCKS5UDPHeader(destination: answerFrom).encoded() + Array("pong".utf8)
            let sent = withUnsafePointer(to: &client) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { sendto(relay.fd, reply, reply.count, 0, $0, clientLength) }
            }
            XCTAssertEqual(sent, reply.count)
        }
        XCTAssertEqual(received, [Destination(host: "udp.example", port: 5353), Destination(host: "2001:db8::53", port: 53)])
        let (status, out, err) = tool.finish()
        XCTAssertEqual(status, 0, err)
        XCTAssertEqual(out, "pong 198.51.100.53 5353\npong 2001:db8::53 53\n")
    }
}
