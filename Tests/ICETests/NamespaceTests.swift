import Foundation
import XCTest
@testable import ICE

/// Tests in a network namespace the test creates (addresses on its loopback, nftables for NAT
/// and for cutting a path); the agents' loop thread enters the namespace.
final class NamespaceTests: XCTestCase {
    /// Behind a source NAT (nftables `snat` inside the namespace), STUN to a real coturn yields
    /// a server-reflexive candidate whose address is the NAT's and whose raddr is the host's.
    func testServerReflexiveCandidateBehindNAT() async throws {
        let ns = try NetNamespace(addresses: ["10.201.0.1", "10.201.0.3", "10.201.0.9"])
        defer { ns.delete() }
        try ns.nft("""
            table ip ugate_nat {
              chain post {
                type nat hook postrouting priority 100;
                ip saddr 10.201.0.1 ip daddr 10.201.0.3 snat to 10.201.0.9
              }
            }
            """)
        let coturn = try ns.spawn([
            "turnserver", "-n", "--listening-ip=10.201.0.3", "--relay-ip=10.201.0.3", "--listening-port=3478",
            "--lt-cred-mech", "--user=test:test", "--realm=mesh.test", "--no-tls", "--no-dtls", "--no-cli",
            "--fingerprint", "--pidfile=/tmp/\(ns.name).pid", "--log-file=stdout", "--simple-log",
        ])
        defer { try? FileManager.default.removeItem(atPath: "/tmp/\(ns.name).pid") }
        defer { stopProcess(coturn) }
        try ns.waitForListener(port: 3478)
        let loop = try ICEEventLoop(name: "ice-test-ns-srflx", networkNamespace: ns.path)
        var config = ICEConfiguration(localAddresses: ["10.201.0.1"])
        config.servers = [ICEServer(url: "stun:10.201.0.3:3478")]
        let a = try Peer(.controlling, config, loop: loop)
        a.agent.start()
        try await a.waitGathered()
        let candidates = await a.record.candidates
        let srflx = try XCTUnwrap(candidates.first { $0.kind == .srflx }, "\(candidates.map(\.sdpLine))")
        XCTAssertEqual(srflx.address, "10.201.0.9")
        XCTAssertEqual(srflx.relatedAddress, "10.201.0.1")
        XCTAssertTrue(candidates.contains { $0.kind == .host && $0.address == "10.201.0.1" })
        await a.close()
    }

    /// A path cut with nftables is reported disconnected, then failed (consent lost); once the
    /// path is restored, an ICE restart on both sides brings the same agents back: new ufrags,
    /// candidates gathered again (new sockets, so ports not seen before the restart), trickled
    /// to the peer, and datagrams flow again.
    func testPathCutThenRestoredICERestartRecovers() async throws {
        let ns = try NetNamespace(addresses: ["10.201.0.1", "10.201.0.2"])
        defer { ns.delete() }
        let loop = try ICEEventLoop(name: "ice-test-ns-cut", networkNamespace: ns.path)
        var configA = ICEConfiguration(localAddresses: ["10.201.0.1"])
        configA.disconnectedAfter = .seconds(2)
        var configB = configA
        configB.localAddresses = ["10.201.0.2"]
        let a = try Peer(.controlling, configA, loop: loop)
        let b = try Peer(.controlled, configB, loop: loop)
        try await connectPair(a, b)
        XCTAssertEqual(a.agent.selectedPair?.remote.address, "10.201.0.2")
        let before = (a: await a.record.candidates, b: await b.record.candidates)
        let oldCredentials = (a: a.agent.localCredentials, b: b.agent.localCredentials)
        let pings = [ping(a.agent), ping(b.agent)]

        try ns.nft("""
            table inet ugate_cut {
              chain out {
                type filter hook output priority 0;
                ip saddr 10.201.0.1 ip daddr 10.201.0.2 drop
                ip saddr 10.201.0.2 ip daddr 10.201.0.1 drop
              }
            }
            """)
        try await a.waitFor(.disconnected, timeout: .seconds(20))
        try await a.waitFor(.failed, timeout: .seconds(60))
        let failures = await a.record.failures
        XCTAssertEqual(failures.first?.code, .consentLost, "\(failures)")

        try ns.nft("delete table inet ugate_cut")
        for p in pings { p.cancel() }
        await a.record.clear()
        await b.record.clear()
        let credsA = a.agent.restart()
        let credsB = b.agent.restart()
        XCTAssertNotEqual(credsA.ufrag, oldCredentials.a.ufrag)
        XCTAssertNotEqual(credsB.ufrag, oldCredentials.b.ufrag)
        a.agent.setRemoteCredentials(credsB)
        b.agent.setRemoteCredentials(credsA)
        try await a.waitGathered()
        try await b.waitGathered()
        let announcedA = await a.record.newCredentials
        XCTAssertEqual(announcedA, [credsA])
        for (name, old, new) in [("a", before.a, await a.record.candidates), ("b", before.b, await b.record.candidates)] {
            XCTAssertFalse(new.isEmpty, "\(name) gathered no candidates after the restart")
            let oldPorts = Set(old.map(\.port))
            XCTAssertTrue(new.allSatisfy { !oldPorts.contains($0.port) },
                          "\(name): candidates after the restart reuse a port: before \(old.map(\.sdpLine)), after \(new.map(\.sdpLine))")
        }
        await a.sendGathered(to: b)
        await b.sendGathered(to: a)
        try await a.waitConnected()
        try await b.waitConnected()
        let pair = try XCTUnwrap(a.agent.selectedPair)
        let fresh = await a.record.candidates
        XCTAssertTrue(fresh.contains { $0.port == pair.local.port }, "selected pair \(pair) does not use a re-gathered candidate")
        XCTAssertEqual(a.agent.localCredentials, credsA)
        try await exchangeBothWaysAndClose(a, b, count: 20, tags: (0xC1, 0xC2))
    }

    /// Sends a datagram every 100 ms and drains what arrives, until cancelled.
    private func ping(_ agent: ICEAgent) -> Task<Void, Never> {
        Task {
            let drain = Task { for await _ in agent.datagrams {} }
            while !Task.isCancelled {
                agent.send([0x70])
                try? await Task.sleep(for: .milliseconds(100))
            }
            drain.cancel()
            _ = await drain.value
        }
    }
}

/// Stops a child by PID: SIGTERM, SIGKILL after a second.
func stopProcess(_ p: Process) {
    guard p.isRunning else { return }
    kill(p.processIdentifier, SIGTERM)
    let deadline = Date().addingTimeInterval(1)
    while p.isRunning && Date() < deadline { usleep(20_000) }
    if p.isRunning { kill(p.processIdentifier, SIGKILL) }
    p.waitUntilExit()
}
