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
            let everySecond = SCTPAcknowledgement(packets: 2, delayMilliseconds: 20)
            let (data, sacks, inUse) = try await Self.oneWayTransfer(receiverAcknowledgement: everySecond)
            XCTAssertEqual(inUse, everySecond)
            XCTAssertGreaterThanOrEqual(sacks * 10, data * 4, "\(sacks) standalone SACKs for \(data) DATA packets")
            XCTAssertLessThanOrEqual(sacks * 10, data * 6, "\(sacks) standalone SACKs for \(data) DATA packets")
        }
    }

    func testAcknowledgementParsing() {
        XCTAssertEqual(SCTPAcknowledgement(parsing: "2"), SCTPAcknowledgement(packets: 2, delayMilliseconds: 20))
        XCTAssertEqual(SCTPAcknowledgement(parsing: "4/20"), .ugatePeer)
        XCTAssertEqual(SCTPAcknowledgement(parsing: "2/20+merge"), .foreignPeer)
        XCTAssertEqual(SCTPAcknowledgement(parsing: "1+merge"), SCTPAcknowledgement(packets: 1, delayMilliseconds: 20, merge: true))
        XCTAssertEqual(SCTPAcknowledgement(parsing: "1/200")?.description, "1/200")
        XCTAssertEqual(SCTPAcknowledgement.foreignPeer.description, "2/20+merge")
        for bad in ["", "0", "x", "2/", "/20", "2/0", "2/501", "2/20/3", "-1", "+merge", "2+merge/20", "2/20+mergex", "2/20 +merge"] {
            XCTAssertNil(SCTPAcknowledgement(parsing: bad), bad)
        }
    }

    /// Only a packet that is exactly one gap-free SACK without duplicate reports may be merged.
    func testPlainSACKClassification() {
        // Common header (ports, tag, checksum) + SACK: type 3, flags 0, length 16, cum TSN, a_rwnd, 0 gaps, 0 dups.
        let header: [UInt8] = [0x13, 0x88, 0x13, 0x88, 1, 2, 3, 4, 9, 9, 9, 9]
        let sack: [UInt8] = [3, 0, 0, 16, 0, 0, 0, 42, 0, 0x40, 0, 0, 0, 0, 0, 0]
        func plain(_ bytes: [UInt8]) -> Bool { bytes.withUnsafeBytes { SCTPAcknowledgement.isPlainSACK($0) } }
        XCTAssertTrue(plain(header + sack))
        var withGap = sack
        withGap[3] = 20
        withGap[13] = 1
        XCTAssertFalse(plain(header + withGap + [0, 2, 0, 3]), "gap block")
        var withDuplicate = sack
        withDuplicate[3] = 20
        withDuplicate[15] = 1
        XCTAssertFalse(plain(header + withDuplicate + [0, 0, 0, 41]), "duplicate TSN")
        XCTAssertFalse(plain(header + sack + [4, 0, 0, 4]), "bundled with another chunk")
        var data = sack
        data[0] = 0
        XCTAssertFalse(plain(header + data), "not a SACK")
        XCTAssertFalse(plain(Array((header + sack).dropLast())), "truncated")
        XCTAssertFalse(plain(header), "no chunk")
        XCTAssertFalse(plain([]), "empty")
    }

    /// Echo over the in-memory pipe with both sessions merging: consecutive gap-free SACK-only
    /// packets of one loop pass leave as one, so fewer standalone SACKs per DATA packet than
    /// without merging, and every byte comes back.
    func testMergingSendsFewerStandaloneSACKsInAnEcho() async throws {
        await run(timeout: 180) {
            let plain = try await Self.echoTransfer(SCTPAcknowledgement(packets: 2, delayMilliseconds: 20))
            let merged = try await Self.echoTransfer(.foreignPeer)
            print("echo: without merging \(plain.sacks) SACK-only / \(plain.data) DATA packets, merged \(merged.sacks) / \(merged.data)")
            XCTAssertLessThan(merged.sacks * plain.data, plain.sacks * merged.data,
                              "merged \(merged.sacks)/\(merged.data) vs \(plain.sacks)/\(plain.data) SACK-only per DATA packet")
        }
    }

    /// Merging over a link that loses 3 %, duplicates 3 % and reorders 5 % of datagrams
    /// (seeded): SACKs with gap blocks or duplicate reports are never merged, the lost ones are
    /// repaired, and every echoed message comes back intact and in order.
    func testMergedSACKsOverAnImpairedLinkKeepEveryMessageInOrder() async throws {
        await run(timeout: 180) {
            let impairment = MemoryDatagramPipe.Impairment(loss: 0.03, duplication: 0.03, reordering: 0.05, seed: 7)
            let result = try await Self.echoTransfer(.foreignPeer, impairment: impairment, count: 48)
            XCTAssertGreaterThan(result.merged, 0, "nothing was merged")
        }
    }

    /// `count` messages of 64 KiB client → server and back with both sessions set to
    /// `acknowledgement`, each compared in order; returns the DATA packets, standalone SACKs and
    /// merged SACKs counted meanwhile.
    private static func echoTransfer(_ acknowledgement: SCTPAcknowledgement,
                                     impairment: MemoryDatagramPipe.Impairment = .init(), count: Int = 128)
        async throws -> (data: Int, sacks: Int, merged: Int) {
        let (pair, channel, remote) = try await SessionPair.withChannel(impairment: impairment) { $0.acknowledgement = acknowledgement }
        let serverSetting = await pair.server.acknowledgementInUse()
        XCTAssertEqual(serverSetting, acknowledgement)
        let size = 65_536
        let before = SCTPPacketCounters.snapshot
        let echo = Task {
            for _ in 0..<count {
                guard let message = await remote.receive() else { return }
                try await remote.send(message)
            }
        }
        let collector = Task {
            var bytes = 0
            for n in 0..<count {
                guard case .binary(let m)? = await channel.receive(), m == payload(n, size: size) else {
                    XCTFail("echoed message \(n) missing, corrupted or out of order")
                    return bytes
                }
                bytes += m.count
            }
            return bytes
        }
        for n in 0..<count { try await channel.send(.binary(payload(n, size: size))) }
        let echoed = await collector.value
        try await echo.value
        let after = SCTPPacketCounters.snapshot
        XCTAssertEqual(echoed, count * size)
        pair.close()
        return (after.withData - before.withData, after.sackOnly - before.sackOnly, after.mergedSACKs - before.mergedSACKs)
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
