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
            let (data, sacks, inUse) = try await Self.oneWayTransfer(receiverAcknowledgement: nil)
            XCTAssertEqual(inUse, .ugatePeer, "the process default is a SACK per 4 packets or 20 ms")
            XCTAssertLessThanOrEqual(sacks * 10, data * 3, "\(sacks) standalone SACKs for \(data) DATA packets")
        }
    }

    /// The per-association setting (``DataChannelSessionConfiguration/acknowledgement``) reaches
    /// usrsctp: a receiver set to RFC 4960's every second packet sends about one standalone SACK
    /// per two DATA packets, twice as many as the default, and reports 2/20 while the sender
    /// (configured with nothing) keeps the process default.
    func testEverySecondPacketSettingDoublesTheSACKs() async throws {
        await run(timeout: 120) {
            let (data, sacks, inUse) = try await Self.oneWayTransfer(receiverAcknowledgement: .everySecondPacket)
            XCTAssertEqual(inUse, .everySecondPacket)
            XCTAssertGreaterThanOrEqual(sacks * 10, data * 4, "\(sacks) standalone SACKs for \(data) DATA packets")
            XCTAssertLessThanOrEqual(sacks * 10, data * 6, "\(sacks) standalone SACKs for \(data) DATA packets")
        }
    }

    func testAcknowledgementParsing() {
        XCTAssertEqual(SCTPAcknowledgement(parsing: "2"), SCTPAcknowledgement(packets: 2, delayMilliseconds: 20))
        XCTAssertEqual(SCTPAcknowledgement(parsing: "4/20"), .ugatePeer)
        XCTAssertEqual(SCTPAcknowledgement(parsing: "1/200")?.description, "1/200")
        for bad in ["", "0", "x", "2/", "/20", "2/0", "2/501", "2/20/3", "-1"] {
            XCTAssertNil(SCTPAcknowledgement(parsing: bad), bad)
        }
    }

    /// Sends 8 MiB client → server with the server's acknowledgement set as given; returns the
    /// DATA packets and standalone SACKs sent meanwhile, and the setting the server's usrsctp
    /// reports (the client, never configured, must report the process default).
    private static func oneWayTransfer(receiverAcknowledgement: SCTPAcknowledgement?)
        async throws -> (data: Int, sacks: Int, inUse: SCTPAcknowledgement?) {
        let (pair, channel, remote) = try await SessionPair.withChannel { configuration in
            if configuration.role == .server { configuration.acknowledgement = receiverAcknowledgement }
        }
        let clientSetting = await pair.client.acknowledgementInUse()
        XCTAssertEqual(clientSetting, .ugatePeer)
        let inUse = await pair.server.acknowledgementInUse()
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
        print("one way, receiver \(inUse.map(\.description) ?? "?"): \(data) DATA packets, \(sacks) standalone SACKs")
        pair.close()
        return (data, sacks, inUse)
    }
}
