import XCTest
@testable import ICE

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
        try await exchange(50, from: a.agent, to: b.agent, tag: 0xA1)
        try await exchange(50, from: b.agent, to: a.agent, tag: 0xB2)
        await a.close()
        await b.close()
        let aStates = await a.record.states
        XCTAssertEqual(aStates.last, .closed)
        XCTAssertFalse(a.agent.send([1, 2, 3]), "send after close is refused")
    }
}
