import XCTest
@testable import DataChannel

/// Records and SCTP packets above the 1200-byte handshake MTU once the transport reports a
/// larger ``DatagramTransport/maximumDatagramSize``.
final class DatagramSizeTests: XCTestCase {
    /// The pipe allows 9000-byte datagrams: the handshake stays at 1200, then both sessions use
    /// 9000; 8 MiB each way arrive intact and the datagrams on the wire grow to (at most) 9000.
    func testLargerDatagramsAfterHandshakeCarryBulkIntact() async throws {
        await run(timeout: 120) {
            let pair = try SessionPair.make(maximumDatagramSize: 9000)
            XCTAssertEqual(pair.client.datagramSize, 1200)
            try await pair.connect()
            XCTAssertEqual(pair.client.datagramSize, 9000)
            XCTAssertEqual(pair.server.datagramSize, 9000)
            let channel = try await pair.client.openChannel(label: "big")
            let remote = try await nextChannel(pair.server)
            async let forward = Self.transfer(from: channel, to: remote, bytes: 8 << 20, seed: 1)
            async let backward = Self.transfer(from: remote, to: channel, bytes: 8 << 20, seed: 2)
            let (sentForward, receivedForward) = try await forward
            let (sentBackward, receivedBackward) = try await backward
            XCTAssertEqual(sentForward, receivedForward)
            XCTAssertEqual(sentBackward, receivedBackward)
            for end in [pair.clientEnd, pair.serverEnd] {
                XCTAssertLessThanOrEqual(end.statistics.largest, 9000)
                XCTAssertGreaterThan(end.statistics.largest, 8900)
            }
            pair.close()
        }
    }

    /// A transport limit above one DTLS record is capped at one record (16 KiB of plaintext plus
    /// overhead); the SCTP packets then fill whole 16 KiB records.
    func testLimitAboveOneRecordIsCappedAtOneRecord() async throws {
        await run(timeout: 60) {
            let pair = try SessionPair.make(maximumDatagramSize: 65_507)
            try await pair.connect()
            XCTAssertEqual(pair.client.datagramSize, DataChannelSessionConfiguration.largestRecordDatagram)
            let channel = try await pair.client.openChannel(label: "big")
            let remote = try await nextChannel(pair.server)
            let (sent, received) = try await Self.transfer(from: channel, to: remote, bytes: 4 << 20, seed: 3)
            XCTAssertEqual(sent, received)
            let largest = pair.clientEnd.statistics.largest
            XCTAssertGreaterThan(largest, 16_300)
            XCTAssertLessThanOrEqual(largest, DataChannelSessionConfiguration.largestRecordDatagram)
            pair.close()
        }
    }

    /// Without a transport limit (every foreign stack) nothing changes: 1200 before and after,
    /// and no datagram exceeds it.
    func testNoTransportLimitKeepsConfiguredMTU() async throws {
        await run(timeout: 60) {
            let pair = try SessionPair.make()
            try await pair.connect()
            XCTAssertEqual(pair.client.datagramSize, 1200)
            XCTAssertEqual(pair.server.datagramSize, 1200)
            let channel = try await pair.client.openChannel(label: "small")
            let remote = try await nextChannel(pair.server)
            let (sent, received) = try await Self.transfer(from: channel, to: remote, bytes: 1 << 20, seed: 4)
            XCTAssertEqual(sent, received)
            XCTAssertLessThanOrEqual(pair.clientEnd.statistics.largest, 1200)
            XCTAssertGreaterThan(pair.clientEnd.statistics.largest, 1100)
            pair.close()
        }
    }

    /// The path shrinks mid-transfer (as when ICE selects another pair with a smaller MTU): both
    /// ends lower the limit from 9000 to 1200 while 8 MiB are in flight. Every message arrives
    /// intact and in order; the sessions report 1200; a transfer after that emits no datagram
    /// above 1200 (DATA chunks cut at 9000 before the change may still leave once above it:
    /// counted, not forbidden — IP fragmentation carries those). A larger limit later does not
    /// raise the size again.
    func testLimitLoweredMidTransferShrinksDatagramsAndDataStaysIntact() async throws {
        await run(timeout: 120) {
            let pair = try SessionPair.make(maximumDatagramSize: 9000)
            try await pair.connect()
            XCTAssertEqual(pair.client.datagramSize, 9000)
            let channel = try await pair.client.openChannel(label: "shrink")
            let remote = try await nextChannel(pair.server)
            let count = 128  // 8 MiB in 64 KiB messages
            let writer = Task {
                for n in 0..<count { try await channel.send(payload(100 + n, size: 65_536)) }
            }
            for n in 0..<count {
                if n == 16 {  // 1 MiB received: the path changes under the running transfer
                    XCTAssertGreaterThan(pair.clientEnd.statistics.largest, 8900)
                    pair.clientEnd.setMaximumDatagramSize(1200)
                    pair.serverEnd.setMaximumDatagramSize(1200)
                }
                let message = await remote.receive()
                XCTAssertEqual(message, .binary(payload(100 + n, size: 65_536)), "message \(n)")
                guard message != nil else { break }
            }
            try await writer.value
            XCTAssertEqual(pair.client.datagramSize, 1200)
            XCTAssertEqual(pair.server.datagramSize, 1200)
            let straggling = pair.clientEnd.datagramsAboveLimit
            pair.clientEnd.resetLargest()
            pair.serverEnd.resetLargest()
            let (sent, received) = try await Self.transfer(from: channel, to: remote, bytes: 2 << 20, seed: 500)
            XCTAssertEqual(sent, received)
            let (sentBack, receivedBack) = try await Self.transfer(from: remote, to: channel, bytes: 1 << 20, seed: 600)
            XCTAssertEqual(sentBack, receivedBack)
            XCTAssertLessThanOrEqual(pair.clientEnd.statistics.largest, 1200)
            XCTAssertGreaterThan(pair.clientEnd.statistics.largest, 1100)
            XCTAssertLessThanOrEqual(pair.serverEnd.statistics.largest, 1200)
            XCTAssertEqual(pair.clientEnd.datagramsAboveLimit, straggling, "no new datagram above 1200 after the change settled")
            print("datagrams above the lowered limit (cut before the change): \(straggling)")
            pair.clientEnd.setMaximumDatagramSize(9000)
            let (sentAgain, receivedAgain) = try await Self.transfer(from: channel, to: remote, bytes: 1 << 20, seed: 700)
            XCTAssertEqual(sentAgain, receivedAgain)
            XCTAssertEqual(pair.client.datagramSize, 1200, "the size never grows back")
            XCTAssertLessThanOrEqual(pair.clientEnd.statistics.largest, 1200)
            pair.close()
        }
    }

    /// Sends `bytes` in 64 KiB messages (`payload(seed + n)`) and reads as many on `receiver`,
    /// each compared with what was sent: (bytes sent, bytes received intact and in order).
    private static func transfer(from sender: DataChannel, to receiver: DataChannel, bytes: Int, seed: Int)
        async throws -> (Int, Int) {
        let sizes = stride(from: 0, to: bytes, by: 65_536).map { min(65_536, bytes - $0) }
        let writer = Task {
            for (n, size) in sizes.enumerated() { try await sender.send(payload(seed + n, size: size)) }
        }
        var received = 0
        for (n, size) in sizes.enumerated() {
            guard let message = await receiver.receive(), message == .binary(payload(seed + n, size: size)) else {
                writer.cancel()
                throw DataChannelError(.closed, "message \(n) missing or different")
            }
            received += size
        }
        try await writer.value
        return (bytes, received)
    }
}
