import XCTest
@testable import ICE

/// Two real agents in one process over 127.0.0.1 (real UDP sockets).
final class LoopbackAgentTests: XCTestCase {
    func testTwoAgentsConnectAndExchangeDatagramsBothWays() async throws {
        let a = try Peer(.controlling)
        let b = try Peer(.controlled)
        try await connectPair(a, b)
        let pair = try XCTUnwrap(a.agent.selectedPair)
        XCTAssertEqual(pair.local.address, "127.0.0.1")
        XCTAssertEqual(pair.remote.address, "127.0.0.1")
        XCTAssertEqual(pair.local.kind, .host)
        XCTAssertEqual(pair.local.transport, .udp)
        XCTAssertEqual(b.agent.selectedPair?.remote.port, pair.local.port)
        try await exchangeBothWaysAndClose(a, b, count: 50, tags: (0xA1, 0xB2))
        let aStates = await a.record.states
        XCTAssertEqual(aStates.first, .checking)
        XCTAssertEqual(aStates.last, .closed)
        XCTAssertFalse(a.agent.send([1, 2, 3]), "send after close is refused")
    }

    /// Host candidates come from the configured port range.
    func testPortRangeIsHonoured() async throws {
        let low = UInt16.random(in: 40000...50000)
        var config = ICEConfiguration.loopback
        config.portRange = low...(low + 20)
        let a = try Peer(.controlling, config)
        a.agent.start()
        try await a.waitGathered()
        let candidates = await a.record.candidates
        XCTAssertFalse(candidates.isEmpty)
        for c in candidates { XCTAssertTrue(config.portRange!.contains(c.port), c.sdpLine) }
        await a.close()
    }

    func testLoopInMissingNamespaceIsRefused() {
        XCTAssertThrowsError(try ICEEventLoop(name: "ice-test-nons", networkNamespace: "/var/run/netns/ugate-ice-does-not-exist")) {
            XCTAssertEqual(($0 as? ICEError)?.code, .invalidConfiguration)
            XCTAssertTrue("\($0)".contains("No such file"), "\($0)")
        }
    }

    /// IPv6 host candidates on ::1.
    func testIPv6LoopbackConnects() async throws {
        let config = ICEConfiguration(localAddresses: ["::1"])
        let a = try Peer(.controlling, config)
        let b = try Peer(.controlled, config)
        try await connectPair(a, b)
        XCTAssertEqual(a.agent.selectedPair?.local.address, "::1")
        XCTAssertEqual(a.agent.selectedPair?.remote.address, "::1")
        try await exchangeBothWaysAndClose(a, b, count: 10, tags: (0x61, 0x62))
    }

    /// ICE-TCP only (RFC 6544): libnice's active/passive TCP candidates go through our codec
    /// (tcptype) both ways and the pair connects over TCP.
    func testICETCPOnlyConnects() async throws {
        var config = ICEConfiguration.loopback
        config.tcpCandidates = true
        config.udpCandidates = false
        let a = try Peer(.controlling, config)
        let b = try Peer(.controlled, config)
        try await connectPair(a, b)
        let candidates = await a.record.candidates
        XCTAssertTrue(candidates.allSatisfy { $0.transport == .tcp && $0.tcpType != nil }, "\(candidates.map(\.sdpLine))")
        XCTAssertTrue(candidates.contains { $0.tcpType == .active } && candidates.contains { $0.tcpType == .passive }, "\(candidates.map(\.sdpLine))")
        let pair = try XCTUnwrap(a.agent.selectedPair)
        XCTAssertEqual(pair.local.transport, .tcp, "\(pair)")
        XCTAssertEqual(pair.remote.transport, .tcp)
        try await exchangeBothWaysAndClose(a, b, count: 20, tags: (0x71, 0x72))
    }

    /// A producer far faster than the loop: `sendWhenReady` waits for queue room instead of
    /// dropping, so every datagram is queued; after close it returns false.
    func testSendWhenReadyAppliesBackpressure() async throws {
        var config = ICEConfiguration.loopback
        config.sendQueueLimit = 8
        let a = try Peer(.controlling, config)
        let b = try Peer(.controlled, config)
        try await connectPair(a, b)
        let receiver = Task { () -> Int in
            var n = 0
            for await _ in b.agent.datagrams {
                n += 1
                if n == 2000 { break }
            }
            return n
        }
        var accepted = 0
        for i in 0..<2000 where await a.agent.sendWhenReady([UInt8(i & 0xff), 1, 2, 3]) { accepted += 1 }
        XCTAssertEqual(accepted, 2000)
        let watchdog = Task {
            try await Task.sleep(for: .seconds(10))
            receiver.cancel()
        }
        let received = await receiver.value
        watchdog.cancel()
        XCTAssertEqual(received, 2000, "one loop thread alternates sending and reading: nothing overflows")
        await a.close()
        let afterClose = await a.agent.sendWhenReady([1])
        XCTAssertFalse(afterClose)
        await b.close()
    }

    func testSendBeforeConnectedIsRefused() async throws {
        let a = try Peer(.controlling)
        XCTAssertFalse(a.agent.send([1]))
        await a.close()
    }

    /// Trickle order 1: all remote candidates (and end-of-candidates) arrive before the
    /// remote credentials, on both sides.
    func testTrickleCandidatesBeforeCredentials() async throws {
        let a = try Peer(.controlling)
        let b = try Peer(.controlled)
        a.trickle(to: b)
        b.trickle(to: a)
        a.agent.start()
        b.agent.start()
        try await a.waitGathered()
        try await b.waitGathered()
        try await Task.sleep(for: .milliseconds(100))  // let the trickled candidates land first
        XCTAssertEqual(a.agent.state, .new, "no checks without remote credentials")
        a.agent.setRemoteCredentials(b.agent.localCredentials)
        b.agent.setRemoteCredentials(a.agent.localCredentials)
        try await a.waitConnected()
        try await b.waitConnected()
        try await exchangeBothWaysAndClose(a, b, count: 10, tags: (1, 2))
    }

    /// Trickle order 2: credentials first, candidates after gathering finished; also remote
    /// candidates handed over before the receiving agent was even started.
    func testTrickleCredentialsBeforeCandidatesAndBeforeStart() async throws {
        let a = try Peer(.controlling)
        let b = try Peer(.controlled)
        a.agent.setRemoteCredentials(b.agent.localCredentials)
        b.agent.setRemoteCredentials(a.agent.localCredentials)
        a.agent.start()
        try await a.waitGathered()
        await a.sendGathered(to: b)  // b has not started yet
        b.agent.start()
        try await b.waitGathered()
        await b.sendGathered(to: a)
        try await a.waitConnected()
        try await b.waitConnected()
        try await exchange(10, from: b.agent, to: a.agent, tag: 3)
        await a.close()
        await b.close()
    }

    /// Trickle order 3: interleaved — one side trickles live before the peer's credentials are
    /// known, the other sends its credentials as signalling lines, then candidates in a batch.
    func testTrickleInterleavedWithSignallingLines() async throws {
        let a = try Peer(.controlling)
        let b = try Peer(.controlled)
        a.trickle(to: b)
        a.agent.start()
        for line in a.agent.localCredentials.sdpLines { try b.agent.applyRemote(line: line) }
        b.agent.start()
        try await b.waitGathered()
        let bLines = await b.record.candidates.map(\.sdpLine)
        try a.agent.applyRemote(line: "a=ice-ufrag:\(b.agent.localCredentials.ufrag)")
        for line in bLines { try a.agent.applyRemote(line: line) }
        try a.agent.applyRemote(line: "a=ice-pwd:\(b.agent.localCredentials.pwd)")
        try a.agent.applyRemote(line: "a=end-of-candidates")
        try await a.waitConnected()
        try await b.waitConnected()
        try await exchange(10, from: a.agent, to: b.agent, tag: 4)
        XCTAssertThrowsError(try a.agent.applyRemote(line: "a=candidate:1 1 UDP notanumber 127.0.0.1 9 typ host")) { error in
            XCTAssertEqual((error as? ICEError)?.code, .malformedCandidate)
        }
        await a.close()
        await b.close()
    }

    /// Wrong remote credentials: every check is rejected, the agent fails with a reason
    /// (checks failed, or the configured timeout) well before the test's own bound.
    func testWrongCredentialsFailWithReason() async throws {
        let a = try Peer(.controlling, .loopback(connectTimeout: .seconds(4)))
        let b = try Peer(.controlled, .loopback(connectTimeout: .seconds(4)))
        a.trickle(to: b)
        b.trickle(to: a)
        let wrong = ICECredentials.random()
        a.agent.setRemoteCredentials(wrong)
        b.agent.setRemoteCredentials(ICECredentials.random())
        a.agent.start()
        b.agent.start()
        try await a.waitFor(.failed, timeout: .seconds(15))
        let failures = await a.record.failures
        let failure = try XCTUnwrap(failures.first)
        XCTAssertTrue([.checksFailed, .timeout].contains(failure.code), "\(failure)")
        XCTAssertTrue(failure.message.contains("remote candidates"), failure.message)
        let states = await a.record.states
        XCTAssertFalse(states.contains(.connected), "never connected: \(states)")
        await a.close()
        await b.close()
    }

    /// No usable pair: the remote candidate points at a port nobody listens on. The configured
    /// connect timeout bounds the wait, and the error says so.
    func testNoUsablePairTimesOut() async throws {
        let a = try Peer(.controlling, .loopback(connectTimeout: .seconds(2)))
        a.agent.setRemoteCredentials(ICECredentials.random())
        a.agent.start()
        let dead = try ICECandidate(parsing: "candidate:1 1 UDP 2130706431 127.0.0.1 9 typ host")
        a.agent.addRemoteCandidate(dead)
        try await a.waitFor(.failed, timeout: .seconds(15))
        let failure = try await XCTUnwrapAsync(await a.record.failures.first)
        XCTAssertTrue([.checksFailed, .timeout].contains(failure.code), "\(failure)")
        await a.close()
    }

    /// mDNS candidates are skipped without failing the session (they are not resolved: no mDNS
    /// resolver is assumed). The line is a real one from Chromium 156 (headless, no media
    /// permission, so its host address hidden behind a `.local` name).
    func testMDNSCandidateSkippedSessionStillConnects() async throws {
        let a = try Peer(.controlling)
        let b = try Peer(.controlled)
        let chromium = "a=candidate:118180572 1 udp 2113937151 0ab6a55d-2661-4443-8d11-b0bd405cb042.local 56730 typ host generation 0 network-cost 999"
        let parsed = try ICECandidate(parsing: chromium)
        XCTAssertEqual(parsed.address, "0ab6a55d-2661-4443-8d11-b0bd405cb042.local")
        XCTAssertFalse(parsed.hasIPLiteral)
        try a.agent.applyRemote(line: chromium)
        try await connectPair(a, b)
        XCTAssertEqual(a.agent.selectedPair?.remote.address, "127.0.0.1")
        await a.close()
        await b.close()
    }

    /// ICE restart with new credentials on both sides: the session comes back to connected
    /// and datagrams flow on the same agents.
    func testRestartReconnectsWithNewCredentials() async throws {
        let a = try Peer(.controlling)
        let b = try Peer(.controlled)
        try await connectPair(a, b)
        let oldA = a.agent.localCredentials
        await a.record.clear()
        await b.record.clear()
        let newA = a.agent.restart()
        let newB = b.agent.restart()
        XCTAssertNotEqual(newA, oldA)
        try await waitUntil("credentials published") { a.agent.localCredentials == newA }
        a.agent.setRemoteCredentials(newB)
        b.agent.setRemoteCredentials(newA)
        try await a.waitGathered()
        try await b.waitGathered()
        try await a.waitConnected()
        try await b.waitConnected()
        let states = await a.record.states
        XCTAssertEqual(states.first, .checking, "restart announced as checking: \(states)")
        try await exchangeBothWaysAndClose(a, b, count: 20, tags: (7, 8))
    }

    /// Only one side calls restart(); the other sees the new ufrag and restarts by itself,
    /// announcing its new credentials — trickled candidates keep flowing meanwhile.
    func testPeerInitiatedRestartIsFollowed() async throws {
        let a = try Peer(.controlling)
        let b = try Peer(.controlled)
        try await connectPair(a, b)
        await a.record.clear()
        await b.record.clear()
        let newA = a.agent.restart()
        b.agent.setRemoteCredentials(newA)
        try await waitUntil("b announced new credentials") { await !b.record.newCredentials.isEmpty }
        let newB = try await XCTUnwrapAsync(await b.record.newCredentials.first)
        XCTAssertEqual(b.agent.localCredentials, newB)
        let announcedA = await a.record.newCredentials
        XCTAssertEqual(announcedA, [newA])
        a.agent.setRemoteCredentials(newB)
        try await a.waitConnected()
        try await b.waitConnected()
        try await exchangeBothWaysAndClose(a, b, count: 10, tags: (0x91, 0x92))
    }

    /// A peer that vanishes (its agent is closed without telling us) is reported disconnected
    /// and then failed, with a consent-lost reason (libnice 0.1.21 gives up after ≈ 10 s
    /// of unanswered consent checks).
    func testVanishedPeerReportedDisconnectedThenFailed() async throws {
        let a = try Peer(.controlling)
        let b = try Peer(.controlled)
        try await connectPair(a, b)
        await b.close()
        try await a.waitFor(.failed, timeout: .seconds(60))
        let states = await a.record.states
        let failures = await a.record.failures
        XCTAssertEqual(failures.first?.code, .consentLost, "\(failures)")
        let disconnected = try XCTUnwrap(states.firstIndex(of: .disconnected), "states: \(states)")
        let failed = try XCTUnwrap(states.firstIndex(of: .failed))
        XCTAssertLessThan(disconnected, failed, "\(states)")
        await a.close()
    }
}

func XCTUnwrapAsync<T>(_ value: T?, file: StaticString = #filePath, line: UInt = #line) async throws -> T {
    try XCTUnwrap(value, file: file, line: line)
}
