import Foundation
import XCTest
@testable import DataChannel

/// How many datagrams are standalone SACKs, counted by ``SCTPPacketCounters`` on the loss-free
/// in-memory pipe (counts, not timings).
final class SACKCountTests: XCTestCase {
    /// One direction busy: the receiver acknowledges every fourth DATA packet (sack_freq 4), so
    /// standalone SACKs are about a quarter of the DATA packets (the 20 ms timer adds a few).
    func testOneWayTransferSendsAboutOneSACKPerFourDataPackets() async throws {
        await run(timeout: 120) {
            let (pair, channel, remote) = try await SessionPair.withChannel()
            let count = 128, size = 65_536
            let before = SCTPPacketCounters.snapshot
            let reader = Task {
                var bytes = 0
                for _ in 0..<count { if case .binary(let m) = await remote.receive() { bytes += m.count } }
                return bytes
            }
            for n in 0..<count { try await channel.send(.binary([UInt8](repeating: UInt8(n & 0xff), count: size))) }
            let received = await reader.value
            let after = SCTPPacketCounters.snapshot
            XCTAssertEqual(received, count * size)
            let data = after.withData - before.withData, sacks = after.sackOnly - before.sackOnly
            XCTAssertGreaterThanOrEqual(data, count * size / 1200, "at least one DATA packet per 1200 bytes")
            XCTAssertGreaterThan(sacks, 0)
            XCTAssertLessThanOrEqual(sacks * 10, data * 3, "\(sacks) standalone SACKs for \(data) DATA packets")
            print("one way: \(data) DATA packets, \(sacks) standalone SACKs")
            pair.close()
        }
    }
}
