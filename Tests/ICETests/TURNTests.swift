import XCTest
@testable import ICE

/// Against a real coturn started by the test on loopback.
final class TURNTests: XCTestCase {
    func testRelayOnlyOverTURNUDP() async throws {
        try await relayOnly(transport: "udp")
    }

    func testRelayOnlyOverTURNTCP() async throws {
        try await relayOnly(transport: "tcp")
    }

    private func relayOnly(transport: String) async throws {
        let turn = try Coturn()
        defer { turn.stop() }
        var config = ICEConfiguration.loopback
        config.servers = [turn.turnServer(transport)]
        config.transportPolicy = .relay
        let a = try Peer(.controlling, config)
        let b = try Peer(.controlled, config)
        try await connectPair(a, b)
        let candidates = await a.record.candidates
        XCTAssertFalse(candidates.isEmpty)
        XCTAssertTrue(candidates.allSatisfy { $0.kind == .relay }, "relay policy gathers only relay candidates: \(candidates.map(\.sdpLine))")
        let pair = try XCTUnwrap(a.agent.selectedPair)
        XCTAssertEqual(pair.local.kind, .relay, "\(pair)")
        XCTAssertEqual(pair.remote.kind, .relay, "\(pair)")
        try await exchangeBothWaysAndClose(a, b, count: 20, tags: (0x51, 0x52))
        // close() released every allocation: coturn saw a REFRESH with lifetime 0 for each.
        try await waitUntil("every TURN allocation released") {
            let (allocated, released) = turn.allocations()
            return allocated.count >= 2 && allocated.isSubset(of: released)
        }
    }
}
