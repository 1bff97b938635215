import ArgumentParser
import Foundation
import Gate
import Glibc
import Logging
import PeerMesh

/// `ugate bench-mesh`: iperf3 throughput in one run, direct and through the mesh on loopback with
/// three in-process nodes: alice → HTTP/2 (mTLS) → gate → destination (`/dm/` and HBONE);
/// alice → gate → reverse tunnel → bob → destination; alice → gate's SNI router → bob's address
/// (SNI fwd); relay-over-SNI: a plain TLS client (`TLSPortForward`, SNI asking carol for her
/// iperf3 port) → gate's mesh port → spliced undecrypted into one of carol's pre-registered
/// relay connections → carol terminates TLS → iperf3 (SNI relay), against the same TLS client
/// talking to carol directly (TLS direct); and the mesh's own mTLS + HTTP/2 stream through the
/// same relay (SNI relay h2) against alice → carol without the gateway (h2 peer); a Gate
/// port-forward listener routed to alice's `/dm/` upstream, the captured socket joined to its
/// HTTP/2 stream (gate h2) against the same through a socketpair (gate h2 pair). Prints Gbit/s
/// and ratios to direct and to the same stream without the gateway. Each node runs on its own
/// one-thread event loop group, as separate processes would.
struct BenchMesh: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-mesh",
        abstract: "Benchmark the HTTP/2 mesh tunnels against direct TCP with iperf3 (loopback, two in-process nodes).")

    @Option(help: "Seconds per iperf3 run.")
    var seconds = 5

    @Option(help: "Runs per path; paths alternate so drift hits all of them.")
    var rounds = 2

    @Option(help: "iperf3 binary.")
    var iperf3 = "iperf3"

    @Option(help: "Mesh read size and largest HTTP/2 DATA frame, KiB (MeshConfig.ioChunkSize).")
    var chunkKib = MeshConfig.defaultIOChunkSize >> 10

    @Option(help: "HTTP/2 stream flow-control window, KiB (MeshConfig.windowSize; the connection window is max(16 MiB, 2 ×)).")
    var windowKib = MeshConfig(identityDir: "-").windowSize >> 10

    @Option(help: "Comma-separated paths to run (default all; direct always runs).")
    var paths: String?

    @Option(help: "How the gateways' relay moves forwarded TLS: copy (faster on loopback here) or splice.")
    var relayForwarder = ForwardMode.copy

    func run() async throws {
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = .error
            return handler
        }
        let iperfPort = try Self.freePort()
        let server = Process()
        server.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        server.arguments = [iperf3, "-s", "-p", "\(iperfPort)"]
        server.standardOutput = FileHandle.nullDevice
        try server.run()
        // iperf3 -s does not always exit on SIGTERM while a test is winding down.
        defer {
            kill(server.processIdentifier, SIGKILL)
            server.waitUntilExit()
        }
        try await Self.waitForListener(port: iperfPort)

        let aliceID = try NodeIdentity.generate()
        let gateID = try NodeIdentity.generate()
        let bobID = try NodeIdentity.generate()
        let (alice, gate, bob) = (aliceID.node.id, gateID.node.id, bobID.node.id)
        // Every node runs on its own event loop thread (as separate processes would), so one
        // node's TLS encryption and the next node's decryption never share a thread.
        let bobNode = try MeshNode(
            config: mesh(peers: [PeerConfig(id: alice, egress: true), PeerConfig(id: gate, egress: true)],
                               listenHost: "127.0.0.1"),
            identity: bobID, ownThreads: 1)
        let bobPort = try await bobNode.listen(port: 0, name: "mesh")
        let gateNode = try MeshNode(
            config: mesh(peers: [
                PeerConfig(id: alice, egress: true), PeerConfig(id: bob, addresses: ["127.0.0.1:\(bobPort)"]),
            ], listenHost: "127.0.0.1", forwarder: relayForwarder),
            identity: gateID, ownThreads: 1)
        let gatePort = try await gateNode.listen(port: 0, name: "mesh")
        // bob's config is rebuilt with the gateway's address for its reverse tunnel.
        let bobTunnel = try MeshNode(
            config: mesh(peers: [
                PeerConfig(id: gate, addresses: ["127.0.0.1:\(gatePort)"], egress: true),
            ]),
            identity: bobID, ownThreads: 1)
        try bobTunnel.startReverseTunnel(to: gate)
        let aliceNode = try MeshNode(
            config: mesh(peers: [
                PeerConfig(id: gate, addresses: ["127.0.0.1:\(gatePort)"]),
                // bob reached at gate's address: gate's SNI router forwards the TLS to bob.
                PeerConfig(id: bob, addresses: ["127.0.0.1:\(gatePort)"]),
            ]),
            identity: aliceID, ownThreads: 1)
        for _ in 0..<100 where !gateNode.hasReverseTunnel(from: bob) { try await Task.sleep(for: .milliseconds(50)) }
        guard gateNode.hasReverseTunnel(from: bob) else { throw ValidationError("bob's reverse tunnel did not come up") }
        // carol: registers relay-over-SNI connections with gate; alice reaches her "at" gate's
        // address (gate splices), alice2 at carol's own listener (the same HTTP/2 path without
        // the gateway hop, to isolate that hop's cost).
        let carolID = try NodeIdentity.generate()
        let carol = carolID.node.id
        let gateRelay = try MeshNode(
            config: mesh(peers: [
                PeerConfig(id: alice, egress: true), PeerConfig(id: carol),
            ], listenHost: "127.0.0.1", forwarder: relayForwarder),
            identity: gateID, ownThreads: 1)
        let relayPort = try await gateRelay.listen(port: 0, name: "mesh")
        let carolNode = try MeshNode(
            config: mesh(peers: [
                PeerConfig(id: gate, addresses: ["127.0.0.1:\(relayPort)"]), PeerConfig(id: alice, egress: true),
            ], listenHost: "127.0.0.1", tlsPorts: [iperfPort]),
            identity: carolID, ownThreads: 1)
        let carolPort = try await carolNode.listen(port: 0, name: "mesh")
        // Each iperf3 run through the TLS client takes two registrations (control and data
        // connection); carol refills as they are used.
        try carolNode.startRelay(to: gate, poolSize: Self.relayPool)
        let aliceRelay = try MeshNode(
            config: mesh(peers: [PeerConfig(id: carol, addresses: ["127.0.0.1:\(relayPort)"])]),
            identity: aliceID, ownThreads: 1)
        let aliceDirect = try MeshNode(
            config: mesh(peers: [PeerConfig(id: carol, addresses: ["127.0.0.1:\(carolPort)"])]),
            identity: aliceID, ownThreads: 1)
        for _ in 0..<100 where gateRelay.relayConnections(from: carol) < Self.relayPool { try await Task.sleep(for: .milliseconds(50)) }
        guard gateRelay.relayConnections(from: carol) >= Self.relayPool else { throw ValidationError("carol's relay registrations did not come up") }

        let destination = Destination(host: "127.0.0.1", port: UInt16(iperfPort))
        let forwards = [
            ("h2 /dm/", try await PortForward.listen(port: 0, upstream: aliceNode.upstream(to: gate, kind: .dm), destination: destination)),
            ("h2 HBONE", try await PortForward.listen(port: 0, upstream: aliceNode.upstream(to: gate, kind: .hbone), destination: destination)),
            ("reverse", try await PortForward.listen(
                port: 0, upstream: aliceNode.upstream(to: gate, kind: .hbone), destination: Destination(host: bob, port: UInt16(iperfPort)))),
            ("SNI fwd", try await PortForward.listen(port: 0, upstream: aliceNode.upstream(to: bob, kind: .hbone), destination: destination)),
            ("h2 peer", try await PortForward.listen(port: 0, upstream: aliceDirect.upstream(to: carol, kind: .hbone), destination: destination)),
            ("SNI relay h2", try await PortForward.listen(port: 0, upstream: aliceRelay.upstream(to: carol, kind: .hbone), destination: destination)),
        ]
        // The Gate's capture path into the mesh: a port-forward listener of a GateNode whose
        // route sends its streams to alice's `/dm/` upstream. "gate h2" hands the captured socket
        // to the HTTP/2 stream (`Upstream.open`); "gate h2 pair" hides `open`, so the stream is
        // dialled as a socketpair end and the Gate's relay copies between it and the client.
        var gateCaptures: [(String, GateNode)] = []
        for (name, upstream) in [
            ("gate h2", try aliceNode.upstream(to: gate, kind: .dm) as any Upstream),
            ("gate h2 pair", SocketOnlyUpstream(base: try aliceNode.upstream(to: gate, kind: .dm))),
        ] {
            var config = GateConfig()
            config.basePort = 0
            config.defaultListeners = false
            config.loops = 1
            config.listeners = [":0": ListenerConfig(forwardTo: "\(destination)")]
            config.routes = [RouteConfig(listener: ":0", to: "mesh")]
            let node = try GateNode(config: config, upstreams: ["mesh": upstream], accessLog: Logger(label: "ugate.bench"))
            node.start()
            gateCaptures.append((name, node))
        }
        // A plain TLS client (as a user's would be): TLS to carol's mesh port directly, and to
        // gate's, which splices it into a carol registration; carol terminates it into iperf3.
        let serverName = TLSPortForward.serverName(node: carol, port: iperfPort)
        let tlsClients = [
            ("TLS direct", try await TLSPortForward.listen(
                to: "127.0.0.1:\(carolPort)", serverName: serverName, node: carol, chunkSize: chunkKib << 10)),
            ("SNI relay", try await TLSPortForward.listen(
                to: "127.0.0.1:\(relayPort)", serverName: serverName, node: carol, chunkSize: chunkKib << 10)),
        ]
        // The relay hop alone on plain TCP: iperf3 → the Gate's relay (what splices SNI relay
        // and SNI fwd connections) → iperf3, no TLS, no HTTP/2.
        let relayLoops = try GateLoopGroup(count: 1)
        var tcpRelays: [(String, PeekListener)] = []
        for mode in [ForwardMode.copy, .splice] {
            let listener = try PeekListener(
                name: "bench-\(mode.rawValue)", address: try SocketAddress(host: "127.0.0.1", port: 0), loops: relayLoops,
                forwarder: mode, accessLog: Logger(label: "ugate.bench"), log: Logger(label: "ugate.bench"),
                decide: { _ in .forward(destination, upstream: "iperf3") }, handOff: { _, peeked in close(peeked.fd) })
            listener.start()
            tcpRelays.append(("TCP \(mode.rawValue)", listener))
        }
        let selected = paths.map { Set($0.split(separator: ",").map { String($0) }) }
        let all = forwards.map { ($0.0, $0.1.port) } + gateCaptures.map { ($0.0, Int($0.1.address(of: ":0")?.port ?? 0)) }
            + tlsClients.map { ($0.0, $0.1.port) } + tcpRelays.map { ($0.0, Int($0.1.address.port)) }
        let paths = [("direct", iperfPort)] + all.filter { selected?.contains($0.0) ?? true }
        var results: [String: [Double]] = [:]
        var nanosPerByte: [String: [(mesh: Double, total: Double)]] = [:]
        for _ in 0..<rounds {
            for (name, port) in paths {
                let before = CPUSample.take(iperfServer: server.processIdentifier)
                let rate = try runClient(port: port)
                let cpu = CPUSample.take(iperfServer: server.processIdentifier).usage(since: before)
                FileHandle.standardError.write(Data(String(format: "%@: %.2f Gbit/s  (cores: %@)\n", name, rate / 1e9, cpu.text).utf8))
                results[name, default: []].append(rate)
                // CPU time per byte: unlike Gbit/s it hardly moves when other processes take cores.
                nanosPerByte[name, default: []].append((cpu.bench * 1e9 / (rate / 8), cpu.total * 1e9 / (rate / 8)))
            }
        }
        let direct = median(results["direct"]!)
        var table = "path          Gbit/s   × direct   ns/B mesh  ns/B all   (median of \(rounds) × \(seconds) s, loopback, relay \(relayForwarder.rawValue), chunk \(chunkKib) KiB, window \(windowKib) KiB)\n"
        for (name, _) in paths {
            let rate = median(results[name]!)
            let cost = nanosPerByte[name]!
            table += name.padding(toLength: 12, withPad: " ", startingAt: 0)
                + String(format: "  %6.2f   %5.2f     %5.2f     %5.2f\n", rate / 1e9, rate / direct, median(cost.map(\.mesh)), median(cost.map(\.total)))
        }
        table += "ns/B: CPU nanoseconds per byte moved, of this process's threads (mesh: nodes, relays, TLS client) and of all (+ iperf3)\n"
        for (relayed, anchor, what) in [
            ("SNI relay", "TLS direct", "plain TLS stream through the relay / the same TLS stream without it"),
            ("SNI relay h2", "h2 peer", "mesh mTLS + HTTP/2 stream through the relay / without it"),
            ("gate h2", "gate h2 pair", "Gate-captured stream joined to its HTTP/2 stream / through a socketpair"),
        ] {
            guard let r = results[relayed], let a = results[anchor] else { continue }
            table += String(format: "%@ / %@: %.2f (%@)\n", relayed, anchor, median(r) / median(a), what)
        }
        table += "TCP copy/splice: iperf3 through the Gate's relay alone (the hop SNI fwd/relay add), no TLS\n"
        if let aes = Self.opensslSpeed() {
            table += String(format: "AES-128-GCM on one core (openssl speed -evp aes-128-gcm, 16 KiB blocks): %.1f Gbit/s\n", aes / 1e9)
        }
        FileHandle.standardOutput.write(Data(table.utf8))
        for (_, client) in tlsClients { await client.close() }
        for (_, forward) in forwards { await forward.close() }
        for (_, listener) in tcpRelays { listener.stop() }
        for (_, node) in gateCaptures { node.stop() }
        relayLoops.shutdown()
        for node in [aliceNode, aliceRelay, aliceDirect, gateNode, gateRelay, bobNode, bobTunnel, carolNode] {
            await node.shutdown()
        }
    }

    /// Carol's relay pool size (registrations kept idle at the gateway).
    private static let relayPool = 4

    /// A bench node's config: loopback, this run's chunk size.
    private func mesh(
        peers: [PeerConfig], listenHost: String = "0.0.0.0", forwarder: ForwardMode = .copy, tlsPorts: [Int] = []
    ) -> MeshConfig {
        MeshConfig(
            identityDir: "-", peers: peers, listenHost: listenHost, windowSize: windowKib << 10, forwarder: forwarder,
            ioChunkSize: chunkKib << 10,
            tlsPorts: tlsPorts)
    }

    /// AES-128-GCM throughput of one core, bits per second (`openssl speed`, 16 KiB blocks, 1 s);
    /// nil when python3 or openssl is missing or openssl prints something else.
    private static func opensslSpeed() -> Double? {
        let speed = Process()
        speed.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        // openssl times its runs with SIGALRM, which this process's threads block (and a child
        // inherits the mask): unblock it for the child.
        speed.arguments = [
            "python3", "-c", "import os, signal, sys; signal.pthread_sigmask(signal.SIG_SETMASK, []); os.execvp('openssl', sys.argv[1:])",
            "openssl", "speed", "-evp", "aes-128-gcm", "-seconds", "1", "-bytes", "16384",
        ]
        let out = Pipe()
        speed.standardOutput = out
        speed.standardError = FileHandle.nullDevice
        guard (try? speed.run()) != nil else { return nil }
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        speed.waitUntilExit()
        // Last line: "AES-128-GCM  123456.78k" (thousands of bytes per second).
        guard let last = text.split(separator: "\n").last(where: { $0.uppercased().hasPrefix("AES-128-GCM") }),
              let field = last.split(separator: " ").last, field.hasSuffix("k"), let kbytes = Double(field.dropLast())
        else { return nil }
        return kbytes * 1000 * 8
    }

    private func median(_ values: [Double]) -> Double {
        let sorted = values.sorted()
        return sorted[sorted.count / 2]
    }

    /// One iperf3 client run (retried while the server is still busy with the last one);
    /// returns received bits per second.
    private func runClient(port: Int) throws -> Double {
        // iperf3's server answers "busy" while it is still winding down the previous test.
        for _ in 0..<3 {
            do { return try runClientOnce(port: port) } catch let error as ValidationError where "\(error)".contains("server is busy") {
                Thread.sleep(forTimeInterval: 1)
            }
        }
        return try runClientOnce(port: port)
    }

    private func runClientOnce(port: Int) throws -> Double {
        let client = Process()
        client.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        client.arguments = [iperf3, "-c", "127.0.0.1", "-p", "\(port)", "-t", "\(seconds)", "-J"]
        let out = Pipe()
        client.standardOutput = out
        try client.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        client.waitUntilExit()
        guard client.terminationStatus == 0,
              let json = try JSONSerialization.jsonObject(with: data) as? [String: Any],
              let end = json["end"] as? [String: Any],
              let sum = end["sum_received"] as? [String: Any],
              let bps = sum["bits_per_second"] as? Double
        else {
            throw ValidationError("iperf3 client to port \(port) failed: \(String(decoding: data.prefix(500), as: UTF8.self))")
        }
        return bps
    }

    /// An ephemeral TCP port the kernel just handed out on 127.0.0.1.
    private static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &addr) { ptr in
            ptr.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, len) == 0 && getsockname(fd, $0, &len) == 0
            }
        }
        guard ok else { throw ValidationError("cannot get a free port: \(String(cString: strerror(errno)))") }
        return Int(UInt16(bigEndian: addr.sin_port))
    }

    /// Waits (at most 5 s) until something accepts on 127.0.0.1:`port`.
    private static func waitForListener(port: Int) async throws {
        for _ in 0..<50 {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var addr = sockaddr_in()
            addr.sin_family = sa_family_t(AF_INET)
            addr.sin_port = UInt16(port).bigEndian
            addr.sin_addr.s_addr = inet_addr("127.0.0.1")
            let connected = withUnsafePointer(to: &addr) { ptr in
                ptr.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
            }
            close(fd)
            if connected { return }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw ValidationError("iperf3 server did not listen on port \(port)")
    }
}

/// CPU time of this process's threads and of the iperf3 processes, to tell a CPU-bound path
/// (the cores add up to the machine) from one that waits (flow control, wake-ups).
struct CPUSample {
    var wall: Double
    /// Clock ticks per thread of this process, by thread ID.
    var threads: [Int32: Double]
    var server: Double
    var children: Double

    static func take(iperfServer: Int32) -> CPUSample {
        var threads: [Int32: Double] = [:]
        let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task")) ?? []
        for task in tasks {
            guard let tid = Int32(task) else { continue }
            threads[tid] = ticks(stat: "/proc/self/task/\(task)/stat")
        }
        var usage = rusage()
        getrusage(__rusage_who_t(RUSAGE_CHILDREN.rawValue), &usage)
        let children = Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec)
            + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return CPUSample(
            wall: Double(now.tv_sec) + Double(now.tv_nsec) / 1e9, threads: threads,
            server: ticks(stat: "/proc/\(iperfServer)/stat") ?? 0, children: children)
    }

    /// utime + stime in clock ticks from a `/proc/…/stat` line (fields 14 and 15, after the
    /// parenthesised command name, which may contain spaces).
    private static func ticks(stat path: String) -> Double? {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8), let close = text.lastIndex(of: ")") else { return nil }
        let fields = text[text.index(after: close)...].split(separator: " ")
        // fields[0] is the state (field 3), so utime (field 14) is fields[11].
        guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { return nil }
        return user + system
    }

    /// Cores used since `before`: this process's threads (`bench`), with iperf3 (`total`), and as
    /// text "bench 1.23 [0.81 0.30 0.12] iperf3 client 0.60 server 0.35, total 2.18" (the busiest
    /// threads of this process in brackets).
    func usage(since before: CPUSample) -> (text: String, bench: Double, total: Double) {
        let hz = Double(sysconf(Int32(_SC_CLK_TCK)))
        let wall = max(wall - before.wall, 1e-3)
        let perThread = threads.compactMap { tid, now -> Double? in
            let ticks = now - (before.threads[tid] ?? 0)
            return ticks > 0 ? ticks / hz / wall : nil
        }.sorted(by: >)
        let bench = perThread.reduce(0, +)
        let client = (children - before.children) / wall
        let server = (self.server - before.server) / hz / wall
        let top = perThread.prefix(4).map { String(format: "%.2f", $0) }.joined(separator: " ")
        let total = bench + client + server
        return (String(format: "bench %.2f [%@] iperf3 client %.2f server %.2f, total %.2f", bench, top, client, server, total), bench, total)
    }
}

/// An upstream that carries streams only as sockets: `open` is the protocol's default (nil), so
/// the Gate dials `base` (for a mesh upstream: a socketpair end) — the "before" row of
/// `bench-mesh`'s Gate capture path.
private struct SocketOnlyUpstream: Upstream {
    let base: any Upstream
    var name: String { base.name }

    func dial(_ destination: Destination, for info: StreamInfo) async throws -> Int32 {
        try await base.dial(destination, for: info)
    }
}
