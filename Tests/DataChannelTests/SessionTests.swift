import Foundation
import XCTest
@testable import DataChannel

/// DTLS + SCTP + DCEP between two sessions over the in-memory datagram pipe.
final class SessionTests: XCTestCase {
    func testHandshakeAndChannelOpenedByClient() async throws {
        await run {
            let pair = try SessionPair.make()
            let updates = Task { await pair.client.stateUpdates.reduce(into: [DataChannelSession.State]()) { $0.append($1) } }
            try await pair.connect()
            XCTAssertEqual(pair.client.state, .connected)
            XCTAssertEqual(pair.server.state, .connected)
            let channel = try await pair.client.openChannel(label: "chat", options: DataChannelOptions(protocol: "proto"))
            XCTAssertEqual(channel.readyState, .open)
            XCTAssertEqual(channel.id % 2, 0, "the DTLS client uses even stream ids")
            let remote = try await nextChannel(pair.server)
            XCTAssertEqual(remote.label, "chat")
            XCTAssertEqual(remote.protocol, "proto")
            XCTAssertEqual(remote.id, channel.id)
            try await channel.send("hello")
            await expectMessage(remote, .text("hello"))
            try await remote.send([1, 2, 3])
            await expectMessage(channel, .binary([1, 2, 3]))
            pair.close()
            let states = await updates.value
            XCTAssertEqual(states, [.handshaking, .connecting, .connected, .closed])
        }
    }

    func testChannelOpenedByServerUsesOddIDs() async throws {
        await run {
            let pair = try SessionPair.make()
            try await pair.connect()
            let first = try await pair.server.openChannel(label: "a")
            let second = try await pair.server.openChannel(label: "b")
            XCTAssertEqual(first.id % 2, 1)
            XCTAssertEqual(second.id % 2, 1)
            XCTAssertNotEqual(first.id, second.id)
            let a = try await nextChannel(pair.client), b = try await nextChannel(pair.client)
            XCTAssertEqual([a.label, b.label], ["a", "b"])
            try await b.send("to b")
            await expectMessage(second, .text("to b"))
            pair.close()
        }
    }

    func testEmptyAndMaximumSizeMessages() async throws {
        await run {
            let pair = try SessionPair.make()
            try await pair.connect()
            let channel = try await pair.client.openChannel(label: "sizes")
            let remote = try await nextChannel(pair.server)
            let messages: [DataChannelMessage] = [
                .binary([]), .text(""), .binary(payload(1, size: 262_144)), .text(String(repeating: "é", count: 131_072)),
                .binary(payload(2, size: 65_537)), .binary([42]),
            ]
            for message in messages { try await channel.send(message) }
            for message in messages {
                let received = await remote.receive()
                XCTAssertEqual(received, message, "message of \(message.byteCount) bytes")
            }
            let total = messages.reduce(0) { $0 + $1.byteCount }
            XCTAssertEqual(remote.statistics, DataChannel.Statistics(messagesSent: 0, bytesSent: 0, messagesReceived: messages.count, bytesReceived: total))
            XCTAssertEqual(channel.statistics, DataChannel.Statistics(messagesSent: messages.count, bytesSent: total, messagesReceived: 0, bytesReceived: 0))
            do {
                try await channel.send(.binary(payload(3, size: 262_145)))
                XCTFail("a message above max-message-size was accepted")
            } catch let error as DataChannelError {
                XCTAssertEqual(error.code, .messageTooLarge)
            }
            pair.close()
        }
    }

    /// 8 MiB each way at once on one channel (64 KiB messages), compared byte for byte. Prints
    /// the throughput for information; it is not asserted (see docs/datachannel.md for numbers).
    func testBulkTransferBothDirections() async throws {
        await run(timeout: 120) {
            let (pair, channel, remote) = try await SessionPair.withChannel()
            let count = 128, size = 65_536
            let start = Date()
            async let forward: Void = Self.pump(from: channel, to: remote, count: count, size: size, seed: 1)
            async let backward: Void = Self.pump(from: remote, to: channel, count: count, size: size, seed: 2)
            _ = try await (forward, backward)
            let seconds = Date().timeIntervalSince(start)
            print("bulk both directions: \((2 * count * size) >> 20) MiB in \(String(format: "%.2f", seconds)) s (debug build, both ends on one loop)")
            pair.close()
        }
    }

    private static func pump(from sender: DataChannel, to receiver: DataChannel, count: Int, size: Int, seed: Int) async throws {
        let writer = Task {
            for n in 0..<count { try await sender.send(payload(n * seed, size: size)) }
        }
        for n in 0..<count {
            let message = await receiver.receive()
            guard message == .binary(payload(n * seed, size: size)) else {
                writer.cancel()
                throw DataChannelError(.closed, "message \(n) differs")
            }
        }
        try await writer.value
    }

    /// Reliable ordered channel over a link that loses 5 %, duplicates 5 % and reorders 10 % of
    /// datagrams (seeded): every message arrives intact and in order.
    func testReliableOrderedDeliveryOverImpairedLink() async throws {
        await run(timeout: 120) {
            let impairment = MemoryDatagramPipe.Impairment(loss: 0.05, duplication: 0.05, reordering: 0.1, seed: 42)
            let (pair, channel, remote) = try await SessionPair.withChannel(impairment: impairment)
            let sizes = (0..<300).map { [1, 100, 1_200, 5_000, 70_000][$0 % 5] }
            let sender = Task {
                for (n, size) in sizes.enumerated() { try await channel.send(payload(n, size: size)) }
            }
            for (n, size) in sizes.enumerated() {
                let received = await remote.receive()
                guard case .binary(let bytes)? = received, bytes == payload(n, size: size) else {
                    return XCTFail("message \(n) corrupted or out of order (\(received.map { "\($0.byteCount) bytes" } ?? "nil"))")
                }
            }
            try await sender.value
            let stats = pair.clientEnd.statistics
            XCTAssertGreaterThan(stats.dropped, 0, "the impairment dropped nothing")
            pair.close()
        }
    }

    func testUnorderedAndPartialReliabilityChannels() async throws {
        await run {
            let pair = try SessionPair.make()
            try await pair.connect()
            let variants = [
                DataChannelOptions(ordered: false),
                DataChannelOptions(ordered: false, maxRetransmits: 0),
                DataChannelOptions(ordered: true, maxPacketLifeTime: 500),
            ]
            for options in variants {
                let channel = try await pair.client.openChannel(label: "v", options: options)
                let remote = try await nextChannel(pair.server)
                XCTAssertEqual(remote.options.ordered, options.ordered)
                XCTAssertEqual(remote.options.maxRetransmits, options.maxRetransmits)
                XCTAssertEqual(remote.options.maxPacketLifeTime, options.maxPacketLifeTime)
                for n in 0..<50 { try await channel.send(payload(n, size: 2_000)) }
                var received = Set<[UInt8]>()
                for _ in 0..<50 {
                    guard case .binary(let bytes)? = await remote.receive() else { return XCTFail("channel closed") }
                    received.insert(bytes)
                }
                XCTAssertEqual(received, Set((0..<50).map { payload($0, size: 2_000) }))
            }
            pair.close()
        }
    }

    /// Lossy channel (no retransmissions) over a lossy link: what arrives is intact, and the
    /// session stays usable; a reliable channel on the same association still delivers everything.
    func testPartialReliabilityOverLossyLink() async throws {
        await run(timeout: 120) {
            let pair = try SessionPair.make(impairment: .init(loss: 0.1, seed: 7))
            try await pair.connect()
            let lossy = try await pair.client.openChannel(label: "lossy", options: DataChannelOptions(ordered: false, maxRetransmits: 0))
            let remoteLossy = try await nextChannel(pair.server)
            let reliable = try await pair.client.openChannel(label: "reliable")
            let remoteReliable = try await nextChannel(pair.server)
            let expected = Set((0..<200).map { payload($0, size: 500) })
            for n in 0..<200 { try await lossy.send(payload(n, size: 500)) }
            try await reliable.send("done")
            await expectMessage(remoteReliable, .text("done"))
            let received = LockedBox(0)
            let reader = Task {
                for await message in remoteLossy.messages {
                    guard case .binary(let bytes) = message, expected.contains(bytes) else { return XCTFail("corrupted message") }
                    received.set(received.get() + 1)
                }
            }
            _ = await eventually(2) { received.get() == 200 }
            XCTAssertGreaterThan(received.get(), 0)
            XCTAssertLessThanOrEqual(received.get(), 200)
            pair.close()
            await reader.value
        }
    }

    func testPreNegotiatedChannel() async throws {
        await run {
            let pair = try SessionPair.make()
            try await pair.connect()
            let options = DataChannelOptions(negotiatedID: 7)
            let a = try await pair.client.openChannel(label: "agreed", options: options)
            let b = try await pair.server.openChannel(label: "agreed", options: options)
            XCTAssertEqual(a.id, 7)
            try await a.send("odd id from the client, no DCEP")
            await expectMessage(b, .text("odd id from the client, no DCEP"))
            try await b.send([9])
            await expectMessage(a, .binary([9]))
            do {
                _ = try await pair.client.openChannel(label: "again", options: options)
                XCTFail("stream id reused while open")
            } catch let error as DataChannelError {
                XCTAssertEqual(error.code, .streamIDInUse)
            }
            pair.close()
        }
    }

    func testFingerprintMismatchIsRefused() async throws {
        await run {
            let wrong = try DTLSIdentity().fingerprint
            let pair = try SessionPair.make(clientFingerprints: [wrong])
            async let client: Void = pair.client.connect()
            async let server: Void = pair.server.connect()
            do {
                try await server
                XCTFail("server accepted a certificate that does not match")
            } catch let error as DataChannelError {
                XCTAssertEqual(error.code, .fingerprintMismatch)
                XCTAssertTrue(error.context.contains(wrong.sdpValue), error.context)
                XCTAssertTrue(error.context.contains(pair.client.configuration.identity.fingerprint.sdpValue), error.context)
            }
            do {
                try await client
                XCTFail("client connected although the server refused its certificate")
            } catch let error as DataChannelError {
                XCTAssertEqual(error.code, .handshakeFailed)
            }
            if case .failed(let error) = pair.server.state { XCTAssertEqual(error.code, .fingerprintMismatch) } else { XCTFail("\(pair.server.state)") }
            pair.close()
        }
    }

    func testCloseChannelFromEitherSide() async throws {
        await run {
            let pair = try SessionPair.make()
            try await pair.connect()
            for closer in ["client", "server"] {
                let local = try await pair.client.openChannel(label: closer)
                let remote = try await nextChannel(pair.server)
                try await local.send("last")
                if closer == "client" { local.close() } else { remote.close() }
                await expectMessage(remote, .text("last"))
                await expectMessage(remote, nil)
                await expectMessage(local, nil)
                XCTAssertEqual(local.readyState, .closed)
                XCTAssertEqual(remote.readyState, .closed)
                do {
                    try await local.send("after close")
                    XCTFail("send on a closed channel")
                } catch let error as DataChannelError {
                    XCTAssertEqual(error.code, .notOpen)
                }
            }
            // Freed stream ids are reused.
            let reused = try await pair.client.openChannel(label: "reuse")
            XCTAssertEqual(reused.id, 0)
            pair.close()
        }
    }

    func testCloseSessionFromEitherSide() async throws {
        for closer in 0..<2 {
            await run {
                let pair = try SessionPair.make()
                try await pair.connect()
                let channel = try await pair.client.openChannel(label: "x")
                let remote = try await nextChannel(pair.server)
                (closer == 0 ? pair.client : pair.server).close()
                await expectMessage(remote, nil)
                await expectMessage(channel, nil)
                let closed = await eventually { pair.client.state == .closed && pair.server.state == .closed }
                XCTAssertTrue(closed, "client \(pair.client.state), server \(pair.server.state)")
                do {
                    _ = try await pair.client.openChannel(label: "late")
                    XCTFail("opened a channel on a closed session")
                } catch {}
            }
        }
    }

    /// 1000 channels opened and closed in batches, then the sessions closed: no stream id, file
    /// descriptor or registry entry is left behind.
    func testThousandChannelsOpenAndCloseWithoutLeak() async throws {
        await run(timeout: 180) {
            // Warm up the loop (its timer) so lazily created runtime descriptors are not counted.
            let warmup = try SessionPair.make()
            try await warmup.connect()
            warmup.close()  // graceful: SHUTDOWN exchange first
            let warmedDown = await eventually { warmup.client.state == .closed && warmup.server.state == .closed }
            XCTAssertTrue(warmedDown, "client \(warmup.client.state), server \(warmup.server.state)")
            let liveBefore = DataChannelSession.liveSessionCount()  // runs on the loop after the teardowns
            let descriptorsBefore = openDescriptors()
            let pair = try SessionPair.make()
            try await pair.connect()
            XCTAssertEqual(DataChannelSession.liveSessionCount(), liveBefore + 2)
            for batch in 0..<10 {
                var pairs: [(DataChannel, DataChannel)] = []
                for n in 0..<100 {
                    let (side, other) = (batch + n) % 2 == 0 ? (pair.client, pair.server) : (pair.server, pair.client)
                    let local = try await side.openChannel(label: "c\(batch)-\(n)")
                    pairs.append((local, try await nextChannel(other)))
                }
                for (local, remote) in pairs {
                    try await local.send("ping")
                    await expectMessage(remote, .text("ping"))
                }
                for (local, _) in pairs { local.close() }
                for (local, remote) in pairs {
                    await expectMessage(local, nil)
                    await expectMessage(remote, nil)
                }
            }
            pair.close()
            let drained = await eventually { DataChannelSession.liveSessionCount() == liveBefore }
            XCTAssertTrue(drained, "live sessions: \(DataChannelSession.liveSessionCount())")
            // Descriptors opened since and still open, by what they point to (the runtime may
            // close descriptors of its own meanwhile, which neither fails nor hides a leak; "?"
            // is the listing's own directory descriptor, closed by the time it is read).
            let openedSince: @Sendable () -> [String: String] = {
                openDescriptors().filter { $0.value != "?" && descriptorsBefore[$0.key] != $0.value }
            }
            let released = await eventually(5) { openedSince().isEmpty }
            XCTAssertTrue(released, "descriptors left open: \(openedSince())")
        }
    }

    /// Receive flow control: while the application does not read, the receiving session stops
    /// reading from SCTP, the peer's window closes and the sender's `send` waits; once the
    /// receiver reads, everything arrives intact.
    func testSlowReceiverBlocksSender() async throws {
        await run(timeout: 120) {
            let pair = try SessionPair.make { configuration in
                configuration.sctpBufferSize = 256 * 1024
                configuration.sendHighWaterMark = 256 * 1024
                configuration.receiveHighWaterMark = 512 * 1024
            }
            try await pair.connect()
            let channel = try await pair.client.openChannel(label: "slow")
            let remote = try await nextChannel(pair.server)
            let count = 64, size = 256 * 1024
            let sent = LockedBox(0)
            let sender = Task {
                for n in 0..<count {
                    try await channel.send(payload(n, size: size))
                    sent.set(n + 1)
                }
            }
            let blocked = await eventually { channel.bufferedAmount >= 256 * 1024 }
            XCTAssertTrue(blocked, "the sender never filled its buffer (sent \(sent.get()))")
            XCTAssertLessThan(sent.get(), count, "the sender finished although nobody read")
            XCTAssertLessThanOrEqual(pair.server.unreadBytes, 512 * 1024 + size)
            for n in 0..<count {
                guard case .binary(let bytes)? = await remote.receive(), bytes == payload(n, size: size) else {
                    return XCTFail("message \(n) missing or corrupted")
                }
            }
            try await sender.value
            XCTAssertEqual(pair.server.unreadBytes, 0)
            pair.close()
        }
    }

    /// `send` waits while bufferedAmount is at the high-water mark: it never grows beyond it plus
    /// one message, and bufferedamountlow fires as it drains.
    func testBackpressureBoundsBufferedAmount() async throws {
        await run(timeout: 120) {
            // A lossy link keeps SCTP's congestion window small, so its 64 KiB send buffer fills.
            let pair = try SessionPair.make(impairment: .init(loss: 0.03, seed: 3)) { configuration in
                configuration.sctpBufferSize = 64 * 1024
                configuration.sendHighWaterMark = 128 * 1024
            }
            try await pair.connect()
            let channel = try await pair.client.openChannel(label: "bp")
            channel.bufferedAmountLowThreshold = 32 * 1024
            let remote = try await nextChannel(pair.server)
            let lowEvents = LockedBox(0)
            let watcher = Task { for await _ in channel.bufferedAmountLowEvents { lowEvents.set(lowEvents.get() + 1) } }
            let peak = LockedBox(0)
            let count = 400, size = 16 * 1024
            let sender = Task {
                for n in 0..<count {
                    try await channel.send(payload(n, size: size))
                    peak.set(max(peak.get(), channel.bufferedAmount))
                }
            }
            var total = 0
            for _ in 0..<count {
                guard let message = await remote.receive() else { return XCTFail("closed early") }
                total += message.byteCount
            }
            try await sender.value
            XCTAssertEqual(total, count * size)
            XCTAssertLessThanOrEqual(peak.get(), 128 * 1024 + size)
            XCTAssertGreaterThan(peak.get(), 32 * 1024, "the sender never had to buffer")
            let fired = await eventually { lowEvents.get() > 0 }
            XCTAssertTrue(fired, "peak bufferedAmount \(peak.get())")
            XCTAssertEqual(channel.bufferedAmount, 0)
            pair.close()
            watcher.cancel()
        }
    }

    /// DTLS-SRTP: both sides export the same keying material, and libsrtp2 contexts built from
    /// it protect on one side and unprotect on the other; tampering and replay are refused.
    func testSRTPKeysAreExportedAndUsable() async throws {
        await run {
            let pair = try SessionPair.make()
            try await pair.connect()
            let clientKeys = try XCTUnwrapValue(await pair.client.srtpKeys())
            let serverKeys = try XCTUnwrapValue(await pair.server.srtpKeys())
            XCTAssertEqual(clientKeys.profile, "SRTP_AEAD_AES_128_GCM")
            XCTAssertEqual(clientKeys.localKeyAndSalt, serverKeys.remoteKeyAndSalt)
            XCTAssertEqual(clientKeys.remoteKeyAndSalt, serverKeys.localKeyAndSalt)
            XCTAssertNotEqual(clientKeys.localKeyAndSalt, clientKeys.remoteKeyAndSalt)
            XCTAssertEqual(clientKeys.localKeyAndSalt.count, 28)
            let sender = try SRTPContext(keys: clientKeys, direction: .outbound)
            let receiver = try SRTPContext(keys: serverKeys, direction: .inbound)
            // RTP header: V=2, PT 111, seq 1, timestamp 160, SSRC 0x01020304; then payload.
            let rtp: [UInt8] = [0x80, 111, 0, 1, 0, 0, 0, 160, 1, 2, 3, 4] + Array("opus frame".utf8)
            let protected = try sender.protect(rtp: rtp)
            XCTAssertEqual(protected.count, rtp.count + 16)
            XCTAssertNotEqual(Array(protected[12..<rtp.count]), Array(rtp[12...]))
            XCTAssertEqual(try receiver.unprotect(srtp: protected), rtp)
            XCTAssertThrowsError(try receiver.unprotect(srtp: protected), "replay accepted")
            var tampered = try sender.protect(rtp: [0x80, 111, 0, 2, 0, 0, 1, 64, 1, 2, 3, 4, 9, 9])
            tampered[13] ^= 1
            XCTAssertThrowsError(try receiver.unprotect(srtp: tampered), "tampered packet accepted")
            pair.close()
        }
    }
}

/// XCTUnwrap for a value produced by an `await` outside the autoclosure.
func XCTUnwrapValue<T>(_ value: T?, file: StaticString = #filePath, line: UInt = #line) throws -> T {
    try XCTUnwrap(value, file: file, line: line)
}

/// Graceful close (SCTP SHUTDOWN after queued data, then close_notify) against abort. Every
/// byte is compared (stronger than a hash; this target has no crypto dependency).
final class SessionShutdownTests: XCTestCase {
    /// Sends `count` bytes of pseudo-random 64 KiB messages; returns what was sent.
    private static func sendPayload(_ channel: DataChannel, count: Int, seed: UInt8) async throws -> [UInt8] {
        var all: [UInt8] = []
        all.reserveCapacity(count)
        var value = seed
        while all.count < count {
            var chunk = [UInt8](repeating: 0, count: min(65_536, count - all.count))
            for i in chunk.indices {
                value = value &* 31 &+ 7
                chunk[i] = value ^ UInt8(truncatingIfNeeded: all.count + i)
            }
            all += chunk
            try await channel.send(chunk)
        }
        return all
    }

    /// Reads until the channel ends; returns every byte received.
    private static func receiveAll(_ channel: DataChannel) async -> [UInt8] {
        var all: [UInt8] = []
        while let message = await channel.receive() {
            if case .binary(let bytes) = message { all += bytes }
        }
        return all
    }

    /// Close right after a large send, from either side and over a lossy, reordering link:
    /// every byte arrives (same hash), both sessions end `closed`, the closer with
    /// `localShutdown` and the peer with `peerShutdown` (SHUTDOWN, not ABORT).
    func testCloseRightAfterLargeSendDeliversEverything() async throws {
        for (closer, impairment) in [(0, MemoryDatagramPipe.Impairment()), (1, MemoryDatagramPipe.Impairment(loss: 0.01, reordering: 0.02))] {
            await run(timeout: 120) {
                let pair = try SessionPair.make(impairment: impairment)
                try await pair.connect()
                let sender = closer == 0 ? pair.client : pair.server
                let receiver = closer == 0 ? pair.server : pair.client
                let channel = try await sender.openChannel(label: "bulk")
                let remote = try await nextChannel(receiver)
                let reading = Task { await Self.receiveAll(remote) }
                let size = 6 << 20
                let sent = try await Self.sendPayload(channel, count: size, seed: UInt8(closer + 1))
                sender.close()  // at once: most of the payload is still queued or in flight
                let received = await reading.value
                XCTAssertEqual(received.count, size)
                XCTAssertTrue(received == sent, "the received bytes differ from the sent ones")
                let ended = await eventually { sender.state == .closed && receiver.state == .closed }
                XCTAssertTrue(ended, "sender \(sender.state), receiver \(receiver.state)")
                XCTAssertEqual(sender.closeReason, .localShutdown)
                XCTAssertEqual(receiver.closeReason, .peerShutdown)
            }
        }
    }

    /// A receiver that reads slowly (its receive window closed by flow control) still gets
    /// everything before the association shuts down.
    func testCloseWaitsForASlowReader() async throws {
        await run(timeout: 120) {
            let pair = try SessionPair.make { $0.receiveHighWaterMark = 256 << 10 }
            try await pair.connect()
            let channel = try await pair.client.openChannel(label: "slow")
            let remote = try await nextChannel(pair.server)
            let size = 3 << 20
            let sent = try await Self.sendPayload(channel, count: size, seed: 9)
            pair.client.close()
            try await Task.sleep(for: .milliseconds(300))  // the reader starts late
            let received = await Self.receiveAll(remote)
            XCTAssertEqual(received.count, size)
            XCTAssertTrue(received == sent, "the received bytes differ from the sent ones")
            let ended = await eventually { pair.client.state == .closed && pair.server.state == .closed }
            XCTAssertTrue(ended, "client \(pair.client.state), server \(pair.server.state)")
            XCTAssertEqual(pair.client.closeReason, .localShutdown)
            XCTAssertEqual(pair.server.closeReason, .peerShutdown)
        }
    }

    /// abort() is the other behaviour: ABORT, and the peer reports it.
    func testAbortIsReportedAsAbort() async throws {
        await run {
            let pair = try SessionPair.make()
            try await pair.connect()
            let channel = try await pair.client.openChannel(label: "x")
            let remote = try await nextChannel(pair.server)
            try await channel.send([1, 2, 3])
            await expectMessage(remote, .binary([1, 2, 3]))
            pair.client.abort()
            let ended = await eventually { pair.client.state == .closed && pair.server.state == .closed }
            XCTAssertTrue(ended, "client \(pair.client.state), server \(pair.server.state)")
            XCTAssertEqual(pair.client.closeReason, .localAbort)
            XCTAssertEqual(pair.server.closeReason, .peerAbort)
        }
    }
}
