import ArgumentParser
import Foundation
import Glibc
import ICE

/// `ugate bench-ice`: ICE connect time and datagram throughput on loopback, each against an
/// anchor measured in the same run (aioice↔aioice, plain UDP socket pair). Prints numbers and
/// ratios; asserts nothing.
struct BenchICE: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-ice",
        abstract: "Benchmark ICE connect time (ugate vs aioice) and datagram throughput (ICE vs plain UDP) on loopback.")

    @Option(help: "Connect runs per stack (median reported).")
    var runs = 20

    @Option(help: "Datagrams per throughput run.")
    var datagrams = 200_000

    @Option(help: "Datagram size in bytes.")
    var size = 1200

    @Option(help: "STUN pacing (Ta) in milliseconds for the ugate agents (RFC 8445 allows 5-).")
    var pacing = 5

    @Option(help: "Nomination of the controlling agent: aggressive (default) or regular.")
    var nomination: ICENomination = .aggressive

    @Option(help: "Path of interop/ice/aioice_bench.py (empty: skip the aioice anchor).")
    var aioiceScript = "interop/ice/aioice_bench.py"

    func run() async throws {
        let loopA = try ICEEventLoop(name: "bench-ice-a")
        let loopB = try ICEEventLoop(name: "bench-ice-b")
        var samples: [Double] = []
        for _ in 0..<runs {
            samples.append(try await connectOnce(loopA, loopB).milliseconds)
        }
        let ours = median(samples)
        print(String(format: "connect ugate<->ugate: median %.2f ms over %d runs (min %.2f, max %.2f)", ours, runs, samples.min() ?? 0, samples.max() ?? 0))
        if !aioiceScript.isEmpty {
            let theirs = try aioiceMedian()
            print(String(format: "connect aioice<->aioice: median %.2f ms over %d runs; ugate/aioice = %.2f", theirs, runs, ours / theirs))
        }
        let ice = try await iceThroughput(loopA, loopB)
        let udp = udpThroughput()
        print(String(format: "throughput %d-byte datagrams: ICE %.0f Mbit/s (%d/%d delivered), plain UDP %.0f Mbit/s (%d/%d delivered); ICE/UDP = %.2f",
                     size, ice.mbps, ice.received, datagrams, udp.mbps, udp.received, datagrams, ice.mbps / udp.mbps))
    }

    /// Two agents gather first; the clock runs from handing over credentials and candidates
    /// (checks can start) until both report connected.
    private func connectOnce(_ loopA: ICEEventLoop, _ loopB: ICEEventLoop) async throws -> Duration {
        let (a, b, watchA, watchB) = try startPair(loopA, loopB, receiveQueueLimit: 4096)
        let candidatesA = await watchA.gathered()
        let candidatesB = await watchB.gathered()
        let clock = ContinuousClock()
        let start = clock.now
        a.setRemoteCredentials(b.localCredentials)
        b.setRemoteCredentials(a.localCredentials)
        candidatesB.forEach(a.addRemoteCandidate)
        candidatesA.forEach(b.addRemoteCandidate)
        a.addRemoteEndOfCandidates()
        b.addRemoteEndOfCandidates()
        let connectedA = try await watchA.connected()
        let connectedB = try await watchB.connected()
        await a.close()
        await b.close()
        return max(connectedA, connectedB) - start
    }

    /// Two loopback agents, each on its own loop (as on two nodes), gathering.
    private func startPair(_ loopA: ICEEventLoop, _ loopB: ICEEventLoop, receiveQueueLimit: Int) throws -> (ICEAgent, ICEAgent, EventWatch, EventWatch) {
        var config = ICEConfiguration(localAddresses: ["127.0.0.1"])
        config.checkPacing = .milliseconds(pacing)
        config.nomination = nomination
        config.receiveQueueLimit = receiveQueueLimit
        config.sendQueueLimit = receiveQueueLimit
        let a = try ICEAgent(role: .controlling, configuration: config, loop: loopA)
        let b = try ICEAgent(role: .controlled, configuration: config, loop: loopB)
        let watches = (EventWatch(a), EventWatch(b))
        a.start()
        b.start()
        return (a, b, watches.0, watches.1)
    }

    private func aioiceMedian() throws -> Double {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", aioiceScript, "--runs", "\(runs)"]
        let out = Pipe()
        process.standardOutput = out
        try process.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0,
            let obj = try JSONSerialization.jsonObject(with: data) as? [String: Any],
            let median = obj["median_ms"] as? Double
        else { throw ValidationError("\(aioiceScript) failed (status \(process.terminationStatus)); pip install aioice") }
        return median
    }

    private struct Throughput {
        var received: Int
        var mbps: Double
    }

    /// One connected pair (each agent on its own loop thread, as on two nodes); `a` sends
    /// `datagrams` as fast as its queue accepts, `b` counts what arrives.
    private func iceThroughput(_ loopA: ICEEventLoop, _ loopB: ICEEventLoop) async throws -> Throughput {
        let (a, b, watchA, watchB) = try startPair(loopA, loopB, receiveQueueLimit: 65536)
        a.setRemoteCredentials(b.localCredentials)
        b.setRemoteCredentials(a.localCredentials)
        (await watchB.gathered()).forEach(a.addRemoteCandidate)
        (await watchA.gathered()).forEach(b.addRemoteCandidate)
        _ = try await watchA.connected()
        _ = try await watchB.connected()
        let total = datagrams
        let progress = Counter()
        let receiver = Task { () -> (Int, Duration) in
            let clock = ContinuousClock()
            var count = 0
            var first: ContinuousClock.Instant?
            var last = clock.now
            for await _ in b.datagrams {
                if first == nil { first = clock.now }
                count += 1
                progress.set(count)
                last = clock.now
                if count == total { break }
            }
            return (count, last - (first ?? last))
        }
        let payload = [UInt8](repeating: 0x5A, count: size)
        for _ in 0..<total {
            guard await a.sendWhenReady(payload) else { throw ICEError(.closed, "sender lost its pair") }
        }
        // Lost datagrams never arrive: stop counting once nothing came for 300 ms.
        var seen = -1
        while progress.get() < total, progress.get() != seen {
            seen = progress.get()
            try await Task.sleep(for: .milliseconds(300))
        }
        receiver.cancel()
        let (count, elapsed) = await receiver.value
        await a.close()
        await b.close()
        return Throughput(received: count, mbps: Double(count * size * 8) / max(elapsed.seconds, 1e-9) / 1e6)
    }

    /// Two connected UDP sockets on 127.0.0.1, a sender and a receiver thread.
    private func udpThroughput() -> Throughput {
        let rx = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        let tx = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        defer {
            close(rx)
            close(tx)
        }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                _ = bind(rx, $0, len)
                _ = getsockname(rx, $0, &len)
                _ = connect(tx, $0, len)
            }
        }
        // The same kernel buffers the ICE agents give their selected socket (4 MiB), so the
        // anchor is not handicapped by drops at the default ~208 KiB.
        var buffer: Int32 = 4 << 20
        for fd in [rx, tx] {
            setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buffer, socklen_t(MemoryLayout<Int32>.size))
            setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buffer, socklen_t(MemoryLayout<Int32>.size))
        }
        var timeout = timeval(tv_sec: 0, tv_usec: 300_000)
        setsockopt(rx, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let total = datagrams
        let size = self.size
        let result = LockedResult()
        let done = DispatchSemaphore(value: 0)
        Thread.detachNewThread {
            var buffer = [UInt8](repeating: 0, count: 65536)
            var count = 0
            var first: ContinuousClock.Instant?
            var last = ContinuousClock.now
            while count < total {
                let n = buffer.withUnsafeMutableBytes { recv(rx, $0.baseAddress, $0.count, 0) }
                if n <= 0 { break }
                if first == nil { first = ContinuousClock.now }
                count += 1
                last = ContinuousClock.now
            }
            result.set(count, last - (first ?? last))
            done.signal()
        }
        let payload = [UInt8](repeating: 0x5A, count: size)
        for _ in 0..<total { _ = payload.withUnsafeBytes { send(tx, $0.baseAddress, $0.count, 0) } }
        done.wait()
        let (count, elapsed) = result.get()
        return Throughput(received: count, mbps: Double(count * size * 8) / max(elapsed.seconds, 1e-9) / 1e6)
    }

    private func median(_ xs: [Double]) -> Double {
        let s = xs.sorted()
        guard !s.isEmpty else { return 0 }
        return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
    }
}

/// Drains an agent's events on a task: hands out the gathered candidates and the instant the
/// agent first reported connected.
private final class EventWatch: Sendable {
    private let candidates: AsyncStream<[ICECandidate]>
    private let connectedAt: AsyncStream<Result<ContinuousClock.Instant, ICEError>>

    init(_ agent: ICEAgent) {
        let (candidates, candidateSink) = AsyncStream<[ICECandidate]>.makeStream()
        let (connectedAt, connectedSink) = AsyncStream<Result<ContinuousClock.Instant, ICEError>>.makeStream()
        self.candidates = candidates
        self.connectedAt = connectedAt
        Task {
            var gathered: [ICECandidate] = []
            for await event in agent.events {
                switch event {
                case .localCandidate(let c): gathered.append(c)
                case .localGatheringDone:
                    candidateSink.yield(gathered)
                    candidateSink.finish()
                case .stateChanged(.connected), .stateChanged(.completed):
                    connectedSink.yield(.success(ContinuousClock.now))
                    connectedSink.finish()
                case .failure(let e):
                    connectedSink.yield(.failure(e))
                    connectedSink.finish()
                default: break
                }
            }
            candidateSink.finish()
            connectedSink.finish()
        }
    }

    func gathered() async -> [ICECandidate] {
        for await c in candidates { return c }
        return []
    }

    func connected() async throws -> ContinuousClock.Instant {
        for await r in connectedAt { return try r.get() }
        throw ICEError(.closed, "agent closed before connecting")
    }
}

private final class Counter: @unchecked Sendable {  // unchecked: guarded by `lock`.
    private let lock = NSLock()
    private var value = 0
    func set(_ v: Int) { lock.withLock { value = v } }
    func get() -> Int { lock.withLock { value } }
}

private final class LockedResult: @unchecked Sendable {  // unchecked: guarded by `lock`.
    private let lock = NSLock()
    private var value: (Int, Duration) = (0, .zero)
    func set(_ count: Int, _ elapsed: Duration) { lock.withLock { value = (count, elapsed) } }
    func get() -> (Int, Duration) { lock.withLock { value } }
}

extension Duration {
    fileprivate var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
    fileprivate var milliseconds: Double { seconds * 1000 }
}

extension ICENomination: ExpressibleByArgument {}
