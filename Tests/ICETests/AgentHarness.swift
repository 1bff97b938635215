import Foundation
import Logging
import XCTest
@testable import ICE

/// Set `UGATE_ICE_TEST_TRACE=1` to see every log line (libnice's too) on stderr.
let traceLogging: Bool = {
    guard ProcessInfo.processInfo.environment["UGATE_ICE_TEST_TRACE"] == "1" else { return false }
    LoggingSystem.bootstrap { label in
        var handler = StreamLogHandler.standardError(label: label)
        handler.logLevel = .trace
        return handler
    }
    LibniceLog.enableLibniceDebug()
    return true
}()

/// Everything one agent reported, recorded by a task that drains ``ICEAgent/events``.
actor EventRecord {
    private(set) var states: [ICEConnectionState] = []
    private(set) var failures: [ICEError] = []
    private(set) var candidates: [ICECandidate] = []
    private(set) var pairs: [ICECandidatePair] = []
    private(set) var gatheringDone = false
    private(set) var finished = false
    private(set) var newCredentials: [ICECredentials] = []

    func record(_ event: ICEEvent) {
        switch event {
        case .localCandidate(let c): candidates.append(c)
        case .localGatheringDone: gatheringDone = true
        case .stateChanged(let s): states.append(s)
        case .selectedPair(let p): pairs.append(p)
        case .failure(let e): failures.append(e)
        case .localCredentialsChanged(let c): newCredentials.append(c)
        }
    }

    func finish() { finished = true }

    var last: ICEConnectionState? { states.last }

    func reached(_ s: ICEConnectionState) -> Bool { states.contains(s) }

    func reachedAny(_ set: Set<ICEConnectionState>) -> Bool { states.contains { set.contains($0) } }

    /// Forgets everything recorded so far (before an ICE restart).
    func clear() {
        states.removeAll()
        pairs.removeAll()
        candidates.removeAll()
        gatheringDone = false
    }
}

/// Polls `condition` until it holds, failing the test after `timeout` (a bound, not a
/// performance threshold).
func waitUntil(
    _ what: String, timeout: Duration = .seconds(20), file: StaticString = #filePath, line: UInt = #line,
    _ condition: @Sendable () async -> Bool
) async throws {
    let clock = ContinuousClock()
    let deadline = clock.now + timeout
    while clock.now < deadline {
        if await condition() { return }
        try await Task.sleep(for: .milliseconds(10))
    }
    XCTFail("timed out after \(timeout) waiting for \(what)", file: file, line: line)
    throw CancellationError()
}

/// An agent plus the task that drains its events. Optionally forwards local candidates and
/// end-of-candidates to a peer agent as they appear (trickle).
final class Peer: Sendable {
    let agent: ICEAgent
    let record = EventRecord()
    private let forward = LockedBox<(@Sendable (ICEEvent) -> Void)?>(nil)
    private let pump: Task<Void, Never>

    init(_ role: ICERole, _ configuration: ICEConfiguration = .loopback, loop: ICEEventLoop = .shared) throws {
        _ = traceLogging
        let agent = try ICEAgent(role: role, configuration: configuration, loop: loop)
        let record = self.record
        let forward = self.forward
        self.agent = agent
        pump = Task {
            for await event in agent.events {
                await record.record(event)
                forward.value?(event)
            }
            await record.finish()
        }
    }

    /// From now on, forward new local candidates to `peer` as they are found.
    func trickle(to peer: Peer) {
        let other = peer.agent
        forward.value = { event in
            switch event {
            case .localCandidate(let c): other.addRemoteCandidate(c)
            case .localGatheringDone: other.addRemoteEndOfCandidates()
            default: break
            }
        }
    }

    /// From now on, hand every event to `sink` as well (after recording it).
    func forwardEvents(_ sink: @escaping @Sendable (ICEEvent) -> Void) { forward.value = sink }

    /// Sends every candidate gathered so far (and end-of-candidates if gathering is done).
    func sendGathered(to peer: Peer) async {
        for c in await record.candidates { peer.agent.addRemoteCandidate(c) }
        if await record.gatheringDone { peer.agent.addRemoteEndOfCandidates() }
    }

    func waitFor(_ state: ICEConnectionState, timeout: Duration = .seconds(20), file: StaticString = #filePath, line: UInt = #line) async throws {
        let record = self.record
        try await waitUntil("state \(state)", timeout: timeout, file: file, line: line) { await record.reached(state) }
    }

    func waitConnected(file: StaticString = #filePath, line: UInt = #line) async throws {
        let record = self.record
        try await waitUntil("connected", file: file, line: line) { await record.reachedAny([.connected, .completed]) }
    }

    func waitGathered(file: StaticString = #filePath, line: UInt = #line) async throws {
        let record = self.record
        try await waitUntil("local gathering done", file: file, line: line) { await record.gatheringDone }
    }

    func close() async {
        await agent.close()
        _ = await pump.value
    }
}

/// A tiny lock-protected value for test plumbing.
final class LockedBox<T: Sendable>: @unchecked Sendable {  // unchecked: every access goes through the NSLock.
    private let lock = NSLock()
    private var stored: T
    init(_ value: T) { stored = value }
    var value: T {
        get { lock.withLock { stored } }
        set { lock.withLock { stored = newValue } }
    }
}

extension ICEConfiguration {
    /// Host candidates on 127.0.0.1 only, with a short connect timeout.
    static var loopback: ICEConfiguration {
        loopback(connectTimeout: .seconds(10))
    }

    /// Host candidates on 127.0.0.1 only, failing after `connectTimeout` without a pair.
    static func loopback(connectTimeout: Duration) -> ICEConfiguration {
        ICEConfiguration(localAddresses: ["127.0.0.1"], connectTimeout: connectTimeout)
    }
}

/// Connects two peers by full trickle in both directions, credentials first.
func connectPair(_ a: Peer, _ b: Peer) async throws {
    a.trickle(to: b)
    b.trickle(to: a)
    a.agent.setRemoteCredentials(b.agent.localCredentials)
    b.agent.setRemoteCredentials(a.agent.localCredentials)
    a.agent.start()
    b.agent.start()
    try await a.waitConnected()
    try await b.waitConnected()
}

/// Sends `count` datagrams from `from` and checks that `to` receives them intact (loopback
/// does not lose datagrams at this rate; a lost one fails the test after the bound).
func exchange(_ count: Int, from: ICEAgent, to: ICEAgent, tag: UInt8, file: StaticString = #filePath, line: UInt = #line) async throws {
    let receiver = Task { () -> [[UInt8]] in
        var got: [[UInt8]] = []
        for await d in to.datagrams {
            got.append(d)
            if got.count == count { break }
        }
        return got
    }
    for i in 0..<count {
        let payload = [tag, UInt8(i & 0xff)] + [UInt8](repeating: tag, count: 100 + i)
        XCTAssertTrue(from.send(payload), "send \(i) refused", file: file, line: line)
    }
    let timeout = Task {
        try await Task.sleep(for: .seconds(10))
        receiver.cancel()
    }
    let got = await receiver.value
    timeout.cancel()
    XCTAssertEqual(got.count, count, "datagrams received", file: file, line: line)
    for (i, d) in got.enumerated() {
        XCTAssertEqual(d, [tag, UInt8(i & 0xff)] + [UInt8](repeating: tag, count: 100 + i), "datagram \(i)", file: file, line: line)
    }
}

/// Datagrams both ways (`count` each, tags `tags`), then closes both peers.
func exchangeBothWaysAndClose(_ a: Peer, _ b: Peer, count: Int, tags: (UInt8, UInt8), file: StaticString = #filePath, line: UInt = #line) async throws {
    try await exchange(count, from: a.agent, to: b.agent, tag: tags.0, file: file, line: line)
    try await exchange(count, from: b.agent, to: a.agent, tag: tags.1, file: file, line: line)
    await a.close()
    await b.close()
}
