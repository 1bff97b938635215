import Crypto
import DataChannel
import Dispatch

/// The two things the command-line peer does once connected: echo, or send a payload and
/// check it comes back intact. Used by `ugate webrtc` and by the tests.
public enum ChannelTransfer {
    /// The outcome of ``sendAndVerify(over:bytes:messageSize:label:)``.
    public struct Result: Codable, Sendable, Equatable {
        /// Always `"result"` (the JSON line's type).
        public var type = "result"
        /// Bytes sent (and expected back).
        public var bytes: Int
        /// Bytes that came back.
        public var receivedBytes: Int
        /// From the first send to the last echoed byte.
        public var seconds: Double
        /// `bytes × 8 / seconds` in Mbit/s (one direction's payload; the echo doubles the traffic).
        public var mbps: Double
        /// SHA-256 of what was sent (lowercase hex). With several channels: SHA-256 over the
        /// channels' SHA-256 digests (32 bytes each) in channel order.
        public var sentSHA256: String
        /// SHA-256 of what came back (lowercase hex), combined like ``sentSHA256``.
        public var receivedSHA256: String
        /// Channels the bytes were spread over (set by the connection-level call).
        public var channels: Int?
        /// Milliseconds from the given start of signalling to the first channel open (set by the
        /// connection-level call when a start was given).
        public var openMs: Double?
        /// Type of the selected pair's local candidate (`host`, `srflx`, `prflx`, `relay`; set by
        /// the connection-level call).
        public var localCandidate: String?
        /// Type of the selected pair's remote candidate (set by the connection-level call).
        public var remoteCandidate: String?
        /// The largest datagram DTLS/SCTP used (``PeerConnection/datagramSize``; set by the
        /// connection-level call): 1200 unless both peers agreed on more.
        public var datagramSize: Int?
        /// Where ``openMs`` went (set by the connection-level call when a start was given).
        public var phasesMs: OpenPhases?
        /// Whether the hashes and sizes match.
        public var intact: Bool { bytes == receivedBytes && sentSHA256 == receivedSHA256 }
    }

    /// The steps from the start of signalling to the first open channel, in milliseconds each
    /// (nil where a step's time is unknown). Their sum is ``Result/openMs``.
    public struct OpenPhases: Codable, Sendable, Equatable {
        /// Start of signalling → our description created (gathering every candidate).
        public var gathering: Double?
        /// → both descriptions applied (the offerer: waiting for the answer, which includes the
        /// peer's gathering; the answerer: nothing, its answer follows the offer).
        public var signalling: Double?
        /// → ICE connected (connectivity checks, nomination).
        public var ice: Double?
        /// → DTLS handshake started (a loop job after ICE connected, on the same thread).
        public var dtlsStart: Double?
        /// → DTLS handshake done.
        public var dtls: Double?
        /// → SCTP association up (INIT, INIT-ACK, COOKIE-ECHO, COOKIE-ACK).
        public var sctp: Double?
        /// → first channel open (DATA_CHANNEL_OPEN / ACK).
        public var dcep: Double?

        /// The steps between consecutive instants (nil instants leave their step nil).
        init(_ instants: [ContinuousClock.Instant?]) {
            func ms(_ a: ContinuousClock.Instant?, _ b: ContinuousClock.Instant?) -> Double? {
                guard let a, let b else { return nil }
                let d = (b - a).components
                return Double(d.seconds) * 1000 + Double(d.attoseconds) / 1e15
            }
            let steps = zip(instants, instants.dropFirst()).map { ms($0, $1) }
            (gathering, signalling, ice) = (steps[0], steps[1], steps[2])
            (dtlsStart, dtls, sctp, dcep) = (steps[3], steps[4], steps[5], steps[6])
        }
    }

    /// Echoes every message on every channel the peer opens, until the connection ends.
    public static func echo(_ connection: PeerConnection) async {
        await withTaskGroup(of: Void.self) { group in
            for await channel in connection.incomingChannels {
                group.addTask { await echo(channel) }
            }
        }
    }

    /// Echoes every message on one channel until it closes.
    public static func echo(_ channel: DataChannel) async {
        while let message = await channel.receive() {
            do {
                try await channel.send(message)
            } catch {
                return
            }
        }
    }

    /// Opens `channels` channels, spreads `bytes` bytes over them (sent in parallel, in messages
    /// of `messageSize` capped by the peer's `a=max-message-size`) while reading the echoes, and
    /// compares SHA-256 digests. The payload is pseudo-random, each message different. Closes the
    /// channels at the end. `signallingStarted` (when the offer was created or received) gives
    /// ``Result/openMs``.
    public static func sendAndVerify(over connection: PeerConnection, bytes: Int, messageSize: Int,
                                     channels: Int = 1, label: String = "ugate-bulk",
                                     signallingStarted: ContinuousClock.Instant? = nil) async throws -> Result {
        let count = max(1, channels)
        let opened = try await withThrowingTaskGroup(of: (Int, DataChannel, ContinuousClock.Instant).self) { group in
            for index in 0..<count {
                group.addTask {
                    let channel = try await connection.openChannel(label: count == 1 ? label : "\(label)-\(index)")
                    return (index, channel, ContinuousClock.now)
                }
            }
            var opened: [(Int, DataChannel, ContinuousClock.Instant)] = []
            for try await entry in group { opened.append(entry) }
            return opened.sorted { $0.0 < $1.0 }
        }
        let size = cappedMessageSize(messageSize, connection.remoteMaxMessageSize)
        let start = DispatchTime.now().uptimeNanoseconds
        let parts = try await withThrowingTaskGroup(of: (Int, Part).self) { group in
            for (index, channel, _) in opened {
                let share = bytes / count + (index < bytes % count ? 1 : 0)
                group.addTask { (index, try await transfer(over: channel, bytes: share, messageSize: size)) }
            }
            var parts: [(Int, Part)] = []
            for try await part in group { parts.append(part) }
            return parts.sorted { $0.0 < $1.0 }.map(\.1)
        }
        var result = Result(parts: parts, seconds: Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
        result.channels = count
        result.datagramSize = connection.datagramSize
        if let pair = connection.selectedPair {
            result.localCandidate = pair.local.kind.rawValue
            result.remoteCandidate = pair.remote.kind.rawValue
        }
        if let signallingStarted, let firstOpen = opened.map(\.2).min() {
            let timeline = connection.timeline
            result.phasesMs = OpenPhases([
                signallingStarted, timeline.localDescriptionCreated, timeline.descriptionsExchanged, timeline.session.transportReady,
                timeline.session.handshakeStarted,
                timeline.session.handshakeDone, timeline.session.associationUp, firstOpen,
            ])
            let elapsed = firstOpen - signallingStarted
            result.openMs = Double(elapsed.components.seconds) * 1000 + Double(elapsed.components.attoseconds) / 1e15
        }
        return result
    }

    /// ``sendAndVerify(over:bytes:messageSize:channels:label:signallingStarted:)`` on one open
    /// channel whose peer echoes.
    public static func sendAndVerify(over channel: DataChannel, bytes: Int, messageSize: Int) async throws -> Result {
        let start = DispatchTime.now().uptimeNanoseconds
        let part = try await transfer(over: channel, bytes: bytes, messageSize: messageSize)
        return Result(parts: [part], seconds: Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
    }

    /// What one channel sent and got back.
    struct Part: Sendable {
        var bytes: Int
        var received: Int
        var sentDigest: SHA256.Digest
        var receivedDigest: SHA256.Digest
    }

    /// Sends `bytes` on `channel` while hashing the echo; closes the channel at the end.
    static func transfer(over channel: DataChannel, bytes: Int, messageSize: Int) async throws -> Part {
        let size = max(1, messageSize)
        let receiver = Task { () -> (Int, SHA256.Digest) in
            var hash = SHA256()
            var received = 0
            while received < bytes, let message = await channel.receive() {
                guard case .binary(let payload) = message else { continue }
                hash.update(data: payload)
                received += payload.count
            }
            return (received, hash.finalize())
        }
        var hash = SHA256()
        var generator = PayloadGenerator(seed: UInt64.random(in: 1...UInt64.max))
        var sent = 0
        do {
            while sent < bytes {
                let chunk = generator.next(count: min(size, bytes - sent))
                hash.update(data: chunk)
                try await channel.send(chunk)
                sent += chunk.count
            }
        } catch {
            receiver.cancel()
            throw WebRTCError(.transport, "sending failed after \(sent) of \(bytes) bytes on channel \(channel.id): \(error)")
        }
        let (received, receivedDigest) = await receiver.value
        channel.close()
        return Part(bytes: bytes, received: received, sentDigest: hash.finalize(), receivedDigest: receivedDigest)
    }

    /// `wanted`, capped by the peer's limit (nil = unknown, 0 = no limit).
    static func cappedMessageSize(_ wanted: Int, _ remoteLimit: Int?) -> Int {
        guard let remoteLimit, remoteLimit > 0 else { return wanted }
        return min(wanted, remoteLimit)
    }

    static func hex<D: Sequence>(_ digest: D) -> String where D.Element == UInt8 {
        digest.map { byte in
            let s = String(byte, radix: 16)
            return byte < 16 ? "0" + s : s
        }.joined()
    }
}

extension ChannelTransfer.Result {
    /// Combines per-channel parts: one part keeps its plain digests, several are combined as
    /// SHA-256 over their digests in order.
    init(parts: [ChannelTransfer.Part], seconds: Double) {
        let bytes = parts.reduce(0) { $0 + $1.bytes }
        func combined(_ digests: [SHA256.Digest]) -> String {
            if digests.count == 1 { return ChannelTransfer.hex(digests[0]) }
            var hash = SHA256()
            for digest in digests { hash.update(data: Array(digest)) }
            return ChannelTransfer.hex(hash.finalize())
        }
        self.init(bytes: bytes, receivedBytes: parts.reduce(0) { $0 + $1.received }, seconds: seconds,
                  mbps: Double(bytes) * 8 / max(seconds, 1e-9) / 1e6,
                  sentSHA256: combined(parts.map(\.sentDigest)), receivedSHA256: combined(parts.map(\.receivedDigest)))
    }
}

/// xorshift64* bytes: cheap, different for every message, reproducible from the seed.
struct PayloadGenerator {
    private var state: UInt64

    init(seed: UInt64) { state = seed == 0 ? 0x9E37_79B9_7F4A_7C15 : seed }

    mutating func next(count: Int) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        bytes.withUnsafeMutableBytes { raw in
            var offset = 0
            while offset < count {
                state ^= state >> 12
                state ^= state << 25
                state ^= state >> 27
                var word = (state &* 0x2545_F491_4F6C_DD1D).littleEndian
                let n = min(8, count - offset)
                withUnsafeBytes(of: &word) { raw.baseAddress!.advanced(by: offset).copyMemory(from: $0.baseAddress!, byteCount: n) }
                offset += n
            }
        }
        return bytes
    }
}
