import Crypto
import DataChannel
import ICE
import XCTest

@testable import PeerMesh

/// PeerConnection ugate↔ugate over real loopback ICE (libnice sockets on 127.0.0.1), DTLS and
/// SCTP: descriptions, both signalling modes, channels from both sides, payloads checked by
/// SHA-256, close from either side, fingerprint verification.
final class WebRTCPeerConnectionTests: XCTestCase {
    private func configuration(trickle: Bool) -> PeerConnectionConfiguration {
        var ice = ICEConfiguration()
        ice.localAddresses = ["127.0.0.1"]
        ice.connectTimeout = .seconds(15)
        return PeerConnectionConfiguration(ice: ice, trickle: trickle)
    }

    /// Offer/answer between two connections; in trickle mode candidates are forwarded as the
    /// events arrive. Returns the forwarding tasks (they end when the connections end).
    private func negotiate(_ offerer: PeerConnection, _ answerer: PeerConnection, trickle: Bool,
                           offer existing: SessionDescription? = nil) async throws -> [Task<Void, Never>] {
        let offer: SessionDescription
        if let existing { offer = existing } else { offer = try await offerer.createOffer() }
        let answer = try await answerer.acceptOffer(sdp: offer.sdp)
        try offerer.acceptAnswer(sdp: answer.sdp)
        guard trickle else { return [] }
        func forward(from: PeerConnection, to: PeerConnection) -> Task<Void, Never> {
            Task {
                for await event in from.events {
                    switch event {
                    case .localCandidate(let line): try? to.addRemoteCandidate(line)
                    case .localGatheringDone: try? to.addRemoteCandidate("")
                    default: break
                    }
                }
            }
        }
        return [forward(from: offerer, to: answerer), forward(from: answerer, to: offerer)]
    }

    /// Polls (bounded: 20 s) until the connection reaches a final state.
    private func waitUntilEnded(_ connection: PeerConnection) async -> PeerConnection.State {
        for _ in 0..<2000 {
            switch connection.state {
            case .closed, .failed: return connection.state
            default: try? await Task.sleep(for: .milliseconds(10))
            }
        }
        return connection.state
    }

    func testNonTrickleDescriptionsCarryLoopbackCandidatesAndSetupRoles() async throws {
        let offerer = try PeerConnection(configuration: configuration(trickle: false))
        let answerer = try PeerConnection(configuration: configuration(trickle: false))
        let offer = try await offerer.createOffer()
        XCTAssertEqual(offer.setup, .actpass)
        XCTAssertTrue(offer.endOfCandidates)
        XCTAssertTrue(offer.candidates.contains { $0.contains(" 127.0.0.1 ") && $0.contains("typ host") }, "\(offer.candidates)")
        XCTAssertEqual(offer.fingerprints, [offerer.identity.fingerprint])
        XCTAssertFalse(offer.iceOptions.contains("trickle"))
        let parsed = try SessionDescription(parsing: offer.sdp)
        XCTAssertEqual(parsed.candidates, offer.candidates)
        let answer = try await answerer.acceptOffer(sdp: offer.sdp)
        XCTAssertEqual(answer.setup, .active)
        XCTAssertTrue(answer.candidates.contains { $0.contains(" 127.0.0.1 ") })
        XCTAssertThrowsError(try offerer.acceptAnswer(sdp: "v=0\r\nbogus")) { error in
            XCTAssertEqual((error as? WebRTCError)?.code, .description, "\(error)")
        }
        try offerer.acceptAnswer(sdp: answer.sdp)
        XCTAssertThrowsError(try offerer.acceptAnswer(answer)) { error in
            XCTAssertEqual((error as? WebRTCError)?.code, .state, "\(error)")
        }
        try await offerer.connect()
        try await answerer.connect()
        XCTAssertEqual(offerer.state, .connected)
        XCTAssertNotNil(offerer.selectedPair)
        await offerer.close()
        await answerer.close()
    }

    func testBulkBothWaysChannelsFromBothSidesOffererCloses() async throws {
        let offerer = try PeerConnection(configuration: configuration(trickle: false))
        let answerer = try PeerConnection(configuration: configuration(trickle: false))
        _ = try await negotiate(offerer, answerer, trickle: false)
        let echoes = [Task { await ChannelTransfer.echo(offerer) }, Task { await ChannelTransfer.echo(answerer) }]
        let size = 6 << 20
        async let fromOfferer = ChannelTransfer.sendAndVerify(over: offerer, bytes: size, messageSize: 65_536, label: "from-offerer")
        async let fromAnswerer = ChannelTransfer.sendAndVerify(over: answerer, bytes: size, messageSize: 65_536, label: "from-answerer")
        let (a, b) = try await (fromOfferer, fromAnswerer)
        for result in [a, b] {
            XCTAssertEqual(result.receivedBytes, size)
            XCTAssertEqual(result.sentSHA256, result.receivedSHA256)
            XCTAssertTrue(result.intact)
        }
        await offerer.close()
        let answererEnd = await waitUntilEnded(answerer)
        XCTAssertEqual(answererEnd, .closed)
        XCTAssertEqual(offerer.state, .closed)
        for echo in echoes { await echo.value }
        await answerer.close()
    }

    /// Both sides advertise `a=ugate-max-datagram-size` (the default): over loopback ICE
    /// (kernel path MTU 65 536) they agree on one full DTLS record per datagram after the
    /// handshake, and 8 MiB each way arrive intact.
    func testUgatePeersAgreeOnLargerDatagramsOverLoopback() async throws {
        let offerer = try PeerConnection(configuration: configuration(trickle: false))
        let answerer = try PeerConnection(configuration: configuration(trickle: false))
        let offer = try await offerer.createOffer()
        XCTAssertEqual(offer.maxDatagramSize, DataChannelSessionConfiguration.largestRecordDatagram)
        _ = try await negotiate(offerer, answerer, trickle: false, offer: offer)
        XCTAssertEqual(answerer.localDescription?.maxDatagramSize, DataChannelSessionConfiguration.largestRecordDatagram)
        let echoes = [Task { await ChannelTransfer.echo(offerer) }, Task { await ChannelTransfer.echo(answerer) }]
        async let fromOfferer = ChannelTransfer.sendAndVerify(over: offerer, bytes: 8 << 20, messageSize: 65_536, label: "o")
        async let fromAnswerer = ChannelTransfer.sendAndVerify(over: answerer, bytes: 8 << 20, messageSize: 65_536, label: "a")
        let (a, b) = try await (fromOfferer, fromAnswerer)
        for result in [a, b] {
            XCTAssertTrue(result.intact, "\(result)")
            XCTAssertEqual(result.datagramSize, DataChannelSessionConfiguration.largestRecordDatagram)
        }
        XCTAssertEqual(offerer.selectedPair?.local.kind, .host)
        XCTAssertEqual(offerer.datagramSize, DataChannelSessionConfiguration.largestRecordDatagram)
        XCTAssertEqual(answerer.datagramSize, DataChannelSessionConfiguration.largestRecordDatagram)
        // Both descriptions carry the attribute: usrsctp on both ends, a SACK per four packets.
        let offererSACK = await offerer.acknowledgementInUse(), answererSACK = await answerer.acknowledgementInUse()
        XCTAssertEqual(offererSACK, .ugatePeer)
        XCTAssertEqual(answererSACK, .ugatePeer)
        await offerer.close()
        _ = await waitUntilEnded(answerer)
        for echo in echoes { await echo.value }
        await answerer.close()
    }

    /// A peer that does not advertise the attribute (as every foreign stack) keeps both sides
    /// at the 1200-byte MTU; the smaller of two advertised values wins; a ugate peer configured
    /// at 1200 advertises 1200, so it gets the ugate SACK policy.
    func testPeerWithoutTheAttributeKeepsBothAt1200AndSmallerValueWins() async throws {
        // 1200: a ugate peer held at the WebRTC default still advertises (and is recognised).
        for (answererSize, expected) in [(Int?.none, 1200), (9000, 9000), (1200, 1200)] {
            var plain = configuration(trickle: false)
            plain.maxDatagramSize = answererSize
            let offerer = try PeerConnection(configuration: configuration(trickle: false))
            let answerer = try PeerConnection(configuration: plain)
            _ = try await negotiate(offerer, answerer, trickle: false)
            XCTAssertEqual(answerer.localDescription?.maxDatagramSize, answererSize)
            XCTAssertFalse(answererSize == nil && answerer.localDescription!.sdp.contains("ugate-max-datagram-size"))
            let echo = Task { await ChannelTransfer.echo(answerer) }
            let result = try await ChannelTransfer.sendAndVerify(over: offerer, bytes: 3 << 20, messageSize: 65_536)
            XCTAssertTrue(result.intact, "\(result)")
            XCTAssertEqual(result.datagramSize, expected)
            XCTAssertEqual(answerer.datagramSize, expected)
            // The SACK policy follows the remote description: an answer without the attribute
            // looks like a foreign stack to the offerer (every second packet); the answerer sees
            // the offerer's attribute (every fourth).
            let offererSACK = await offerer.acknowledgementInUse(), answererSACK = await answerer.acknowledgementInUse()
            XCTAssertEqual(offererSACK, answererSize == nil ? .foreignPeer : .ugatePeer)
            XCTAssertEqual(answererSACK, .ugatePeer)
            await offerer.close()
            _ = await waitUntilEnded(answerer)
            await echo.value
            await answerer.close()
        }
    }

    func testTrickleSmallAndEmptyMessagesAnswererCloses() async throws {
        let offerer = try PeerConnection(configuration: configuration(trickle: true))
        let answerer = try PeerConnection(configuration: configuration(trickle: true))
        let offer = try await offerer.createOffer()
        XCTAssertTrue(offer.candidates.isEmpty)
        XCTAssertTrue(offer.iceOptions.contains("trickle"))
        let forwarders = try await negotiate(offerer, answerer, trickle: true, offer: offer)
        let echo = Task { await ChannelTransfer.echo(offerer) }
        let channel = try await answerer.openChannel(label: "answerer-opened")
        for message: DataChannelMessage in [.text("hello"), .binary([]), .text(""), .binary([1, 2, 3])] {
            try await channel.send(message)
            let back = await channel.receive()
            XCTAssertEqual(back, message)
        }
        let bulk = try await ChannelTransfer.sendAndVerify(over: channel, bytes: 3 << 20, messageSize: 16_384)
        XCTAssertTrue(bulk.intact, "\(bulk)")
        await answerer.close()
        let offererEnd = await waitUntilEnded(offerer)
        XCTAssertEqual(offererEnd, .closed)
        await echo.value
        for task in forwarders { await task.value }
        await offerer.close()
    }

    func testFingerprintMismatchFailsTheConnection() async throws {
        let offerer = try PeerConnection(configuration: configuration(trickle: false))
        let answerer = try PeerConnection(configuration: configuration(trickle: false))
        let offer = try await offerer.createOffer()
        var answer = try await answerer.acceptOffer(offer)
        let impostor = try DTLSIdentity()
        answer.fingerprints = [impostor.fingerprint]
        try offerer.acceptAnswer(answer)
        do {
            try await offerer.connect()
            XCTFail("connected despite a wrong fingerprint")
        } catch let error as WebRTCError {
            XCTAssertEqual(error.code, .transport, "\(error)")
            XCTAssertTrue(error.message.contains(impostor.fingerprint.hexBytes), error.message)
        }
        if case .failed = offerer.state {} else { XCTFail("offerer state \(offerer.state)") }
        let answererEnd = await waitUntilEnded(answerer)
        if case .failed = answererEnd {} else { XCTFail("answerer state \(answererEnd)") }
        await offerer.close()
        await answerer.close()
    }

    /// A real offer from headless Chromium 156 without media permission: its only candidate is
    /// an mDNS `.local` host name. The candidate is skipped (not resolved), the offer is still
    /// accepted and answered, and the connection keeps waiting for usable candidates instead
    /// of failing.
    func testChromiumOfferWithOnlyAnMDNSCandidateIsAnswered() async throws {
        let chromiumOffer = [
            "v=0", "o=- 8197800533189529888 2 IN IP4 127.0.0.1", "s=-", "t=0 0", "a=group:BUNDLE 0",
            "a=extmap-allow-mixed", "a=msid-semantic: WMS", "m=application 9 UDP/DTLS/SCTP webrtc-datachannel",
            "c=IN IP4 0.0.0.0",
            "a=candidate:118180572 1 udp 2113937151 0ab6a55d-2661-4443-8d11-b0bd405cb042.local 56730 typ host generation 0 network-cost 999",
            "a=ice-ufrag:3SM4", "a=ice-pwd:MLMt73gGLiopm7EVGLnBhRYS", "a=ice-options:trickle",
            "a=fingerprint:sha-256 71:F8:7B:DD:7C:44:12:37:63:28:DF:90:79:D3:B7:F8:3F:DA:FC:96:F9:A6:A9:93:B2:B3:8C:73:36:05:41:D2",
            "a=setup:actpass", "a=mid:0", "a=sctp-port:5000", "a=max-message-size:262144", "",
        ].joined(separator: "\r\n")
        let answerer = try PeerConnection(configuration: configuration(trickle: false))
        let answer = try await answerer.acceptOffer(sdp: chromiumOffer)
        XCTAssertEqual(answer.setup, .active)
        XCTAssertTrue(answer.candidates.contains { $0.contains(" 127.0.0.1 ") }, "\(answer.candidates)")
        XCTAssertEqual(answerer.state, .connecting)
        await answerer.close()
        XCTAssertEqual(answerer.state, .closed)
    }
}

/// Graceful close over real loopback ICE: the sender closes the connection right after a
/// large send; the peer gets every byte (SHA-256) and sees SCTP SHUTDOWN, not ABORT.
final class WebRTCGracefulCloseTests: XCTestCase {
    func testCloseRightAfterLargeSendDeliversEveryByte() async throws {
        var ice = ICEConfiguration()
        ice.localAddresses = ["127.0.0.1"]
        ice.connectTimeout = .seconds(15)
        let offerer = try PeerConnection(configuration: PeerConnectionConfiguration(ice: ice))
        let answerer = try PeerConnection(configuration: PeerConnectionConfiguration(ice: ice))
        let offer = try await offerer.createOffer()
        let answer = try await answerer.acceptOffer(sdp: offer.sdp)
        try offerer.acceptAnswer(sdp: answer.sdp)
        let incoming = Task { () -> DataChannel? in
            for await channel in answerer.incomingChannels { return channel }
            return nil
        }
        let channel = try await offerer.openChannel(label: "bulk")
        guard let remote = await incoming.value else { return XCTFail("no incoming channel") }
        let reader = Task { () -> (Int, String) in
            var hash = SHA256()
            var count = 0
            while let message = await remote.receive() {
                if case .binary(let bytes) = message {
                    hash.update(data: bytes)
                    count += bytes.count
                }
            }
            return (count, ChannelTransfer.hex(hash.finalize()))
        }
        let size = 8 << 20
        var generator = PayloadGenerator(seed: 42)
        var hash = SHA256()
        var sent = 0
        while sent < size {
            let chunk = generator.next(count: min(65_536, size - sent))
            hash.update(data: chunk)
            try await channel.send(chunk)
            sent += chunk.count
        }
        await offerer.close()  // right away: much of the payload is still queued or in flight
        let (count, digest) = await reader.value
        XCTAssertEqual(count, size)
        XCTAssertEqual(digest, ChannelTransfer.hex(hash.finalize()))
        XCTAssertEqual(offerer.closeReason, .localShutdown)
        for _ in 0..<2000 where answerer.state != .closed { try await Task.sleep(for: .milliseconds(10)) }
        XCTAssertEqual(answerer.state, .closed)
        XCTAssertEqual(answerer.closeReason, .peerShutdown)
        await answerer.close()
    }
}
