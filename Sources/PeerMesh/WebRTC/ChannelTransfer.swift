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
        /// SHA-256 of what was sent (lowercase hex).
        public var sentSHA256: String
        /// SHA-256 of what came back (lowercase hex).
        public var receivedSHA256: String
        /// Whether the hashes and sizes match.
        public var intact: Bool { bytes == receivedBytes && sentSHA256 == receivedSHA256 }
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

    /// Opens a channel, sends `bytes` bytes in messages of `messageSize` (capped by the peer's
    /// `a=max-message-size`) while reading the echo, and compares SHA-256 digests.
    /// The payload is pseudo-random, each message different. Closes the channel at the end.
    public static func sendAndVerify(over connection: PeerConnection, bytes: Int, messageSize: Int,
                                     label: String = "ugate-bulk") async throws -> Result {
        let channel = try await connection.openChannel(label: label)
        return try await sendAndVerify(over: channel, bytes: bytes,
                                       messageSize: cappedMessageSize(messageSize, connection.remoteMaxMessageSize))
    }

    /// ``sendAndVerify(over:bytes:messageSize:label:)`` on an open channel whose peer echoes.
    public static func sendAndVerify(over channel: DataChannel, bytes: Int, messageSize: Int) async throws -> Result {
        let size = max(1, messageSize)
        let start = DispatchTime.now().uptimeNanoseconds
        let receiver = Task { () -> (Int, String) in
            var hash = SHA256()
            var received = 0
            while received < bytes, let message = await channel.receive() {
                guard case .binary(let payload) = message else { continue }
                hash.update(data: payload)
                received += payload.count
            }
            return (received, hex(hash.finalize()))
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
            throw WebRTCError(.transport, "sending failed after \(sent) of \(bytes) bytes: \(error)")
        }
        let (received, receivedDigest) = await receiver.value
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        channel.close()
        return Result(bytes: bytes, receivedBytes: received, seconds: seconds,
                      mbps: Double(bytes) * 8 / max(seconds, 1e-9) / 1e6,
                      sentSHA256: hex(hash.finalize()), receivedSHA256: receivedDigest)
    }

    /// `wanted`, capped by the peer's limit (nil = unknown, 0 = no limit).
    static func cappedMessageSize(_ wanted: Int, _ remoteLimit: Int?) -> Int {
        guard let remoteLimit, remoteLimit > 0 else { return wanted }
        return min(wanted, remoteLimit)
    }

    static func hex(_ digest: SHA256.Digest) -> String {
        digest.map { byte in
            let s = String(byte, radix: 16)
            return byte < 16 ? "0" + s : s
        }.joined()
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
