import Foundation
import Gate
import NIOCore
import XCTest
@testable import PeerMesh

/// alice → gate → bob, where bob has no listener at all (as behind NAT) and keeps a reverse
/// tunnel to gate; gate routes `bobID:port` (or bob's mangled hostname) through it.
final class ReverseTunnelTests: MeshTestCase {
    func testEchoThroughReverseTunnelSurvivesGatewayRestart() async throws {
        let echo = try await echoServer()
        let aliceID = try NodeIdentity.generate()
        let gateID = try NodeIdentity.generate()
        let bobID = try NodeIdentity.generate()
        let bob = bobID.node.id
        let gatePeers = [
            PeerConfig(id: aliceID.node.id, destinations: ["\(bob):\(echo.port)", "\(bobID.mangledHostname):\(echo.port)"]),
            PeerConfig(id: bob),
        ]
        let gateLog = LogCapture()
        let (gate, gatePort) = try await node(gateID, peers: gatePeers, log: gateLog)
        let bobNode = try MeshNode(
            config: MeshConfig(identityDir: "-", peers: [
                PeerConfig(id: gateID.node.id, addresses: ["127.0.0.1:\(gatePort)"], destinations: ["127.0.0.1:\(echo.port)"]),
            ]),
            identity: bobID)
        cleanups.append { await bobNode.shutdown() }
        try bobNode.startReverseTunnel(to: gateID.node.id)
        let (alice, _) = try await node(aliceID, peers: [PeerConfig(id: gateID.node.id, addresses: ["127.0.0.1:\(gatePort)"])])
        try await waitUntil("bob's reverse tunnel is up") { gate.hasReverseTunnel(from: bob) }

        let port = UInt16(echo.port)
        try await echoAndHalfClose(try alice.upstream(to: gateID.node.id, kind: .hbone), to: Destination(host: bob, port: port))
        try await echoAndHalfClose(
            try alice.upstream(to: gateID.node.id, kind: .dm), to: Destination(host: bobID.mangledHostname, port: port))
        XCTAssertEqual(echo.accepted, 2)
        // gate accepted both alice's connection and bob's tunnel on its accept loop: the two
        // streams were joined directly, without a socketpair.
        XCTAssertTrue(gateLog.contains("tunnel joined to the next hop's stream on this loop"), "\(gateLog.messages)")

        // bob may not be asked for anything but its echo port.
        let other = Destination(host: bob, port: 1)
        do {
            close(try await alice.upstream(to: gateID.node.id).dial(other, for: info(other)))
            XCTFail("gate relayed to a destination alice may not reach")
        } catch let error as MeshError {
            XCTAssertEqual(error.status, 403)
        }

        // The gateway restarts on the same port: bob's tunnel comes back by itself.
        await gate.shutdown()
        let gate2 = try MeshNode(
            config: MeshConfig(identityDir: "-", peers: gatePeers, listenHost: "127.0.0.1"), identity: gateID)
        cleanups.append { await gate2.shutdown() }
        _ = try await gate2.listen(port: gatePort, name: "mesh")
        // Both ends see the new tunnel (bob counts it once its own side of the handshake returned).
        try await waitUntil("bob's reverse tunnel is back") {
            gate2.hasReverseTunnel(from: bob) && bobNode.reverseTunnelConnections >= 2
        }
        try await echoAndHalfClose(try alice.upstream(to: gateID.node.id, kind: .hbone), to: Destination(host: bob, port: port))
        XCTAssertEqual(echo.accepted, 3)
    }

    /// A destination that does not read: alice → gate → bob's reverse tunnel → the sink. The
    /// client can write only what the windows, water marks and socket buffers hold (nothing on the
    /// way buffers without bound, the gateway's stream-to-stream join included); once the sink
    /// reads, every byte arrives in order, then the half-close, and the stream ends cleanly.
    func testStalledDestinationBoundsWhatTheReversePathBuffers() async throws {
        let sink = try StalledSink()
        defer { sink.close() }
        let aliceID = try NodeIdentity.generate()
        let gateID = try NodeIdentity.generate()
        let bobID = try NodeIdentity.generate()
        let bob = bobID.node.id
        let window = 1 << 20
        func config(_ peers: [PeerConfig]) -> MeshConfig {
            MeshConfig(identityDir: "-", peers: peers, listenHost: "127.0.0.1", windowSize: window)
        }
        let gateLog = LogCapture()
        let gate = try MeshNode(
            config: config([PeerConfig(id: aliceID.node.id, destinations: ["\(bob):\(sink.port)"]), PeerConfig(id: bob)]),
            identity: gateID, logger: gateLog.logger("gate"))
        cleanups.append { await gate.shutdown() }
        let gatePort = try await gate.listen(port: 0, name: "mesh")
        let bobNode = try MeshNode(
            config: config([PeerConfig(id: gateID.node.id, addresses: ["127.0.0.1:\(gatePort)"], destinations: ["127.0.0.1:\(sink.port)"])]),
            identity: bobID)
        cleanups.append { await bobNode.shutdown() }
        try bobNode.startReverseTunnel(to: gateID.node.id)
        let alice = try MeshNode(
            config: config([PeerConfig(id: gateID.node.id, addresses: ["127.0.0.1:\(gatePort)"])]), identity: aliceID)
        cleanups.append { await alice.shutdown() }
        try await waitUntil("bob's reverse tunnel is up") { gate.hasReverseTunnel(from: bob) }

        let destination = Destination(host: bob, port: UInt16(sink.port))
        let fd = try await alice.upstream(to: gateID.node.id, kind: .hbone).dial(destination, for: info(destination))
        defer { Glibc.close(fd) }
        let accepted = try sink.accept()
        XCTAssertTrue(gateLog.contains("tunnel joined to the next hop's stream on this loop"), "\(gateLog.messages)")

        // Write until nothing more is taken for a second (at most 512 MiB).
        var writer = PatternWriter(fd: fd)
        let limit = 256 << 20
        let stalled = try writer.writeUntilStalled(limit: limit, stallMs: 1000)
        XCTAssertTrue(stalled, "the path took \(writer.written) bytes for a destination that does not read")
        // What the nodes hold: all that was written, less what sits in the TCP hops' kernel
        // queues (alice → gate, gate → bob, bob → sink) and at most the socketpair's buffers.
        let kernel = try StalledSink.kernelQueued(ports: [gatePort, sink.port])
        let socketpairBound = 2 * (4 << 20)
        let held = writer.written - kernel - socketpairBound
        let tuning = H2Tuning(config: config([]))
        XCTAssertGreaterThan(kernel, 0, "bytes queued at the stalled destination")
        XCTAssertLessThan(held, 3 * tuning.bufferedPerNodeBound, "written \(writer.written), in kernel queues \(kernel)")
        print("stalled destination: written \(writer.written), in kernel queues \(kernel), bound for the nodes \(3 * tuning.bufferedPerNodeBound)")

        // The destination reads: what was held arrives, then 4 MiB more and the half-close.
        let reader = Task.detached { try PatternReader.readToEOF(accepted) }
        let target = writer.written + (4 << 20)
        let stalledAgain = try writer.writeUntilStalled(limit: target, stallMs: FD.timeoutMs)
        XCTAssertFalse(stalledAgain, "writes resume once the destination reads")
        XCTAssertEqual(shutdown(fd, Int32(SHUT_WR)), 0)
        let received = try await reader.value
        XCTAssertEqual(received, writer.written, "bytes in order up to the half-close")
        // The sink closes after EOF: its FIN comes back as the end of the stream.
        Glibc.close(accepted)
        XCTAssertEqual(try PatternReader.readToEOF(fd, verify: false), 0)
    }
}

/// A listener on 127.0.0.1 whose accepted connection is not read until the test reads it.
final class StalledSink {
    let listener: Int32
    let port: Int

    init() throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        listener = fd
        let loopback = try SocketAddress(ipAddress: "127.0.0.1", port: 0)
        var bound = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = loopback.withSockAddr { bind(fd, $0, socklen_t($1)) } == 0 && Glibc.listen(fd, 4) == 0
            && withUnsafeMutableBytes(of: &bound) { getsockname(fd, $0.baseAddress!.assumingMemoryBound(to: sockaddr.self), &length) } == 0
        guard ok else {
            Glibc.close(fd)
            throw FD.Failure(description: "sink listen: \(String(cString: strerror(errno)))")
        }
        port = Int(UInt16(bigEndian: bound.sin_port))
    }

    /// The first connection (waits at most `FD.timeoutMs`).
    func accept() throws -> Int32 {
        var pfd = pollfd(fd: listener, events: Int16(POLLIN), revents: 0)
        guard poll(&pfd, 1, FD.timeoutMs) == 1 else { throw FD.Failure(description: "nothing connected to the sink") }
        let fd = Glibc.accept(listener, nil, nil)
        guard fd >= 0 else { throw FD.Failure(description: "accept: \(String(cString: strerror(errno)))") }
        return fd
    }

    func close() { Glibc.close(listener) }

    /// Bytes the kernel holds right now in the queues (unsent/unacknowledged and received
    /// unread) of every IPv4 TCP socket with a local or remote port in `ports` (`/proc/net/tcp`).
    static func kernelQueued(ports: Set<Int>) throws -> Int {
        // /proc files report size 0: read to EOF rather than by the file's size.
        guard let file = FileHandle(forReadingAtPath: "/proc/net/tcp") else { throw FD.Failure(description: "cannot open /proc/net/tcp") }
        defer { try? file.close() }
        let table = String(decoding: file.readDataToEndOfFile(), as: UTF8.self)
        var total = 0
        for line in table.split(separator: "\n").dropFirst() {
            let fields = line.split(separator: " ")
            guard fields.count > 4 else { continue }
            let endpoints = [fields[1], fields[2]].compactMap { $0.split(separator: ":").last.flatMap { Int($0, radix: 16) } }
            guard endpoints.contains(where: ports.contains) else { continue }
            let queues = fields[4].split(separator: ":").compactMap { Int($0, radix: 16) }
            total += queues.reduce(0, +)
        }
        return total
    }
}

/// Writes a position-derived byte pattern to a non-blocking descriptor.
struct PatternWriter {
    let fd: Int32
    private(set) var written = 0

    init(fd: Int32) { self.fd = fd }

    static func byte(at position: Int) -> UInt8 { UInt8(truncatingIfNeeded: position ^ (position >> 11)) }

    /// Writes until `limit` bytes in all or until the descriptor takes nothing for `stallMs`;
    /// returns whether it stopped on such a stall.
    mutating func writeUntilStalled(limit: Int, stallMs: Int32) throws -> Bool {
        var chunk = [UInt8](repeating: 0, count: 256 << 10)
        while written < limit {
            var pfd = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
            let ready = poll(&pfd, 1, stallMs)
            if ready == 0 { return true }
            guard ready > 0 else { throw FD.Failure(description: "poll: \(String(cString: strerror(errno)))") }
            let count = min(chunk.count, limit - written)
            for i in 0..<count { chunk[i] = Self.byte(at: written + i) }
            let n = chunk.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, count) }
            if n < 0, errno != EAGAIN, errno != EINTR { throw FD.Failure(description: "write after \(written): \(String(cString: strerror(errno)))") }
            if n > 0 { written += n }
        }
        return false
    }
}

enum PatternReader {
    /// Reads until EOF (each wait bounded by `FD.timeoutMs`), checking `PatternWriter`'s pattern;
    /// returns the byte count.
    static func readToEOF(_ fd: Int32, verify: Bool = true) throws -> Int {
        var buffer = [UInt8](repeating: 0, count: 256 << 10)
        var count = 0
        while true {
            var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&pfd, 1, FD.timeoutMs) == 1 else { throw FD.Failure(description: "no data or EOF after \(count) bytes") }
            let n = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if n == 0 { return count }
            if n < 0 {
                if errno == EAGAIN || errno == EINTR { continue }
                throw FD.Failure(description: "read after \(count): \(String(cString: strerror(errno)))")
            }
            if verify {
                for i in 0..<n where buffer[i] != PatternWriter.byte(at: count + i) {
                    throw FD.Failure(description: "byte \(count + i) differs")
                }
            }
            count += n
        }
    }
}

extension H2Tuning {
    /// At most what one node holds for a stream whose far side does not read: the stream window
    /// it granted, its outbound stream's, connection's and byte socket's write water marks, and
    /// a read burst (`maxMessagesPerRead` 4 × one chunk) past them on each of its two channels.
    var bufferedPerNodeBound: Int {
        streamWindow + 4 * frameSize + max(4 << 20, 8 * frameSize) + max(1 << 20, 2 * frameSize) + 2 * 4 * frameSize
    }
}
