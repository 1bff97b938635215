import ArgumentParser
import DataChannel
import Foundation
import ICE
import Logging
import PeerMesh
import Synchronization

/// `ugate webrtc offer|answer`: a command-line data-channel peer for interop and STUN/TURN tests.
struct WebRTC: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "webrtc",
        abstract: "A WebRTC data-channel peer: exchange descriptions as JSON lines, then echo or send.",
        subcommands: [WebRTCOffer.self, WebRTCAnswer.self, WebRTCPair.self])
}

struct WebRTCOffer: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "offer", abstract: "Create the offer, read the answer, connect.")
    @OptionGroup var options: WebRTCOptions
    func run() async throws { try await options.run(offerer: true) }
}

struct WebRTCAnswer: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "answer", abstract: "Read the offer, write the answer, connect.")
    @OptionGroup var options: WebRTCOptions
    func run() async throws { try await options.run(offerer: false) }
}

/// Both peers in one process, descriptions handed over in memory (non-trickle): the stack's own
/// offer → open time without another process or a signalling relay.
struct WebRTCPair: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pair",
        abstract: "Offerer and answerer in this process: connect, send --send bytes (default 1 MiB) and get them echoed; one result line per run.")
    @OptionGroup var options: WebRTCOptions
    @Option(help: "Connections to open one after another (one result line each).")
    var runs = 1

    func validate() throws {
        if runs < 1 || runs > 1000 { throw ValidationError("--runs must be between 1 and 1000") }
    }

    func run() async throws {
        options.bootstrapLogging()
        var configuration = options.peerConfiguration
        if configuration.ice.localAddresses.isEmpty { configuration.ice.localAddresses = ["127.0.0.1"] }
        for _ in 0..<runs {
            let offerer = try PeerConnection(configuration: configuration, logger: Logger(label: "ugate.webrtc.offerer"))
            let answerer = try PeerConnection(configuration: configuration, logger: Logger(label: "ugate.webrtc.answerer"))
            let signallingStarted = ContinuousClock.now
            let offer = try await offerer.createOffer()
            let answer = try await answerer.acceptOffer(sdp: offer.sdp)
            try offerer.acceptAnswer(sdp: answer.sdp)
            let echo = Task { await ChannelTransfer.echo(answerer) }
            let result = try await ChannelTransfer.sendAndVerify(
                over: offerer, bytes: options.send ?? (1 << 20), messageSize: options.messageSize,
                channels: options.channels, signallingStarted: signallingStarted)
            await offerer.close()
            await echo.value
            await answerer.close()
            let line = String(decoding: try JSONEncoder().encode(result), as: UTF8.self)
            emitLine(line)
            if !result.intact { throw WebRTCError(.integrity, "the echo differs: \(line)") }
        }
    }
}

struct WebRTCOptions: ParsableArguments {
    @Option(help: "Signalling: 'stdio' (JSON lines on stdout/stdin) or 'file:DIR' (DIR/offer.jsonl, DIR/answer.jsonl).")
    var signal: String = "stdio"
    @Option(help: "STUN server URL (stun:host[:port]).")
    var stun: String?
    @Option(help: "TURN server URL (turn:host[:port][?transport=udp|tcp]); repeatable.")
    var turn: [String] = []
    @Option(help: "TURN user name.")
    var turnUser: String?
    @Option(help: "TURN password.")
    var turnPassword: String?
    @Flag(help: "Use relayed candidates only.")
    var relayOnly = false
    @Option(help: "Local address to gather host candidates on (repeatable; 127.0.0.1 allowed).")
    var localAddress: [String] = []
    @Option(help: "Message size for --send, in bytes (capped by the peer's max-message-size).")
    var messageSize = 65_536
    @Flag(help: "Trickle ICE: send candidates as separate JSON lines.")
    var trickle = false
    @Flag(help: "Echo every message on every channel the peer opens, until it closes.")
    var echo = false
    @Option(help: "Open a channel, send N bytes, wait for the echo, print Mbit/s and SHA-256 digests.")
    var send: Int?
    @Option(help: "With --send: open K channels and spread the N bytes over them, sent in parallel.")
    var channels = 1
    @Option(help: ArgumentHelp(
        "Largest datagram to accept and use once DTLS is up, advertised as a=ugate-max-datagram-size (only ugate peers use it; capped by the selected path's MTU).",
        discussion: "1200 keeps the WebRTC default (still advertised as 1200, which tells a ugate peer it talks to ugate)."))
    var mtu = DataChannelSessionConfiguration.largestRecordDatagram
    @Option(help: ArgumentHelp(
        "When our SCTP receiver acknowledges: PACKETS[/DELAY_MS][+merge], a SACK per PACKETS DATA packets or after DELAY_MS (default 20); +merge sends one of consecutive SACK-only packets per loop pass.",
        discussion: "Default: 4/20 towards a ugate peer (a=ugate-max-datagram-size in its description), 2/20+merge towards other stacks."))
    var sack: String?
    @Option(help: "Give up after this many seconds (whole run).")
    var timeout: Double = 120
    @Option(help: "Log level (trace, debug, info, notice, warning, error, critical).")
    var logLevel: Logger.Level = .info

    func validate() throws {
        if echo, send != nil { throw ValidationError("--echo and --send exclude each other") }
        if let send, send < 0 { throw ValidationError("--send needs a byte count ≥ 0") }
        if messageSize < 1 { throw ValidationError("--message-size must be ≥ 1") }
        if channels < 1 || channels > 512 { throw ValidationError("--channels must be between 1 and 512") }
        let range = SessionDescription.maxDatagramSizeRange
        if !range.contains(mtu) { throw ValidationError("--mtu must be between \(range.lowerBound) and \(range.upperBound)") }
        if !turn.isEmpty, turnUser == nil || turnPassword == nil {
            throw ValidationError("--turn needs --turn-user and --turn-password")
        }
        if relayOnly, turn.isEmpty { throw ValidationError("--relay-only needs --turn") }
        if let sack, SCTPAcknowledgement(parsing: sack) == nil {
            throw ValidationError("--sack must be PACKETS[/DELAY_MS][+merge] (PACKETS ≥ 1, DELAY_MS 1–500), got \(sack)")
        }
        _ = try SignalChannel.Kind(parsing: signal)
    }

    var peerConfiguration: PeerConnectionConfiguration {
        var ice = ICEConfiguration()
        if let stun { ice.servers.append(ICEServer(url: stun)) }
        for url in turn { ice.servers.append(ICEServer(url: url, username: turnUser, credential: turnPassword)) }
        ice.localAddresses = localAddress
        ice.transportPolicy = relayOnly ? .relay : .all
        ice.connectTimeout = .seconds(min(timeout, 60))
        var configuration = PeerConnectionConfiguration(ice: ice, trickle: trickle, maxDatagramSize: mtu)
        configuration.acknowledgement = sack.flatMap(SCTPAcknowledgement.init(parsing:))
        return configuration
    }

    /// Logs to stderr at `--log-level`, and the `--timeout` watchdog (exit status 3).
    func bootstrapLogging() {
        let level = logLevel
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let deadline = timeout
        let logger = Logger(label: "ugate.webrtc.cli")
        Thread.detachNewThread {
            Thread.sleep(forTimeInterval: deadline)
            logger.error("timed out", metadata: ["seconds": "\(deadline)"])
            Foundation.exit(3)
        }
    }

    func run(offerer: Bool) async throws {
        bootstrapLogging()
        let logger = Logger(label: "ugate.webrtc.cli")
        let signaling = try SignalChannel(kind: SignalChannel.Kind(parsing: signal), offerer: offerer)
        let connection = try PeerConnection(configuration: peerConfiguration, logger: Logger(label: "ugate.webrtc"))
        var incoming = signaling.incoming.makeAsyncIterator()
        let started = Date()
        var signallingStarted = ContinuousClock.now
        if offerer {
            let offer = try await connection.createOffer()
            signaling.send(SignalMessage(type: "offer", sdp: offer.sdp))
            forwardEvents(of: connection, to: signaling, logger: logger)
            guard let answer = try await nextDescription(&incoming, type: "answer", connection: connection) else {
                throw WebRTCError(.signaling, "signalling ended before the answer")
            }
            try connection.acceptAnswer(sdp: answer)
        } else {
            guard let offer = try await nextDescription(&incoming, type: "offer", connection: connection) else {
                throw WebRTCError(.signaling, "signalling ended before the offer")
            }
            signallingStarted = ContinuousClock.now
            let answer = try await connection.acceptOffer(sdp: offer)
            signaling.send(SignalMessage(type: "answer", sdp: answer.sdp))
            forwardEvents(of: connection, to: signaling, logger: logger)
        }
        let remaining = incoming
        let candidateReader = Task {
            var iterator = remaining
            while let message = try? await iterator.next() {
                if let candidate = message.candidate { try? connection.addRemoteCandidate(candidate) }
            }
        }
        defer { candidateReader.cancel() }
        try await connection.connect()
        let pair = connection.selectedPair
        let acknowledgement = await connection.acknowledgementInUse()
        logger.info("connected", metadata: [
            "sack": "\(acknowledgement.map(\.description) ?? "?")",
            "ms": "\(Int(Date().timeIntervalSince(started) * 1000))",
            "local": "\(pair?.local.attributeValue ?? "?")", "remote": "\(pair?.remote.attributeValue ?? "?")",
            "mtu": "\(connection.datagramSize ?? 0)",
        ])
        if let send {
            let result = try await ChannelTransfer.sendAndVerify(
                over: connection, bytes: send, messageSize: messageSize, channels: channels,
                signallingStarted: signallingStarted)
            let line = String(decoding: try JSONEncoder().encode(result), as: UTF8.self)
            logger.info("transfer done", metadata: ["mbps": "\(result.mbps)", "intact": "\(result.intact)"].merging(sctpPacketMetadata()) { a, _ in a })
            await connection.close()
            emitLine(line)
            if !result.intact { throw WebRTCError(.integrity, "the echo differs: \(line)") }
        } else if echo {
            await ChannelTransfer.echo(connection)
            await connection.close()
        } else {
            for await event in connection.events where event == .stateChanged(.closed) { break }
        }
        logger.info("closed", metadata: ["state": "\(connection.state)"].merging(sctpPacketMetadata()) { a, _ in a })
    }

    /// SCTP packets this process sent so far, and how many were standalone SACKs.
    private func sctpPacketMetadata() -> Logger.Metadata {
        let counts = SCTPPacketCounters.snapshot
        return ["sctpPackets": "\(counts.packets)", "sctpDataPackets": "\(counts.withData)", "sctpSACKOnly": "\(counts.sackOnly)", "sctpSACKsMerged": "\(counts.mergedSACKs)",
                "sctpWindowUpdates": "\(counts.windowUpdateSACKs)", "sctpDuplicates": "\(counts.duplicateData)",
                "sctpRetransmitted": "\(counts.retransmittedData)", "sctpWindowDrops": "\(counts.windowDrops)"]
    }

    /// Reads signalling until a description of `type`, applying candidates that come first.
    private func nextDescription(_ iterator: inout AsyncThrowingStream<SignalMessage, any Error>.Iterator,
                                 type: String, connection: PeerConnection) async throws -> String? {
        while let message = try await iterator.next() {
            if message.type == type, let sdp = message.sdp { return sdp }
            if let candidate = message.candidate { try connection.addRemoteCandidate(candidate) }
        }
        return nil
    }

    /// Logs state changes; in trickle mode also sends each local candidate and the end marker.
    private func forwardEvents(of connection: PeerConnection, to signaling: SignalChannel, logger: Logger) {
        let trickle = self.trickle
        Task {
            for await event in connection.events {
                switch event {
                case .localCandidate(let candidate) where trickle:
                    signaling.send(SignalMessage(candidate: candidate, sdpMid: "0"))
                case .localGatheringDone where trickle:
                    signaling.send(SignalMessage(candidate: "", sdpMid: "0"))
                case .stateChanged(let state):
                    logger.info("state", metadata: ["state": "\(state)"])
                case .iceStateChanged(let state):
                    logger.debug("ice state", metadata: ["state": "\(state)"])
                default:
                    break
                }
            }
        }
    }
}

/// One signalling line: a description (`{"type":"offer","sdp":"…"}`, the shape of
/// `RTCSessionDescription.toJSON()`) or a trickled candidate (`{"candidate":"candidate:…",
/// "sdpMid":"0"}`, the shape of `RTCIceCandidate.toJSON()`; an empty candidate ends them).
struct SignalMessage: Codable, Sendable {
    var type: String?
    var sdp: String?
    var candidate: String?
    var sdpMid: String?
}

/// Writes one line to stdout and flushes it.
func emitLine(_ line: String) {
    FileHandle.standardOutput.write(Data((line + "\n").utf8))
}

/// JSON-line signalling over stdout/stdin, or over two append-only files in a directory.
final class SignalChannel: Sendable {
    enum Kind {
        case stdio
        case directory(String)

        init(parsing text: String) throws {
            if text == "stdio" {
                self = .stdio
            } else if text.hasPrefix("file:"), text.count > 5 {
                self = .directory(String(text.dropFirst(5)))
            } else {
                throw ValidationError("--signal must be 'stdio' or 'file:DIR', not '\(text)'")
            }
        }
    }

    /// Messages from the peer, in order; ends when the input ends.
    let incoming: AsyncThrowingStream<SignalMessage, any Error>
    private let output: FileHandle
    private let lock = Mutex(())

    init(kind: Kind, offerer: Bool) throws {
        let (stream, continuation) = AsyncThrowingStream.makeStream(of: SignalMessage.self, throwing: (any Error).self)
        incoming = stream
        switch kind {
        case .stdio:
            output = FileHandle.standardOutput
            Thread.detachNewThread {
                while let line = readLine() {
                    Self.decode(line, into: continuation)
                }
                continuation.finish()
            }
        case .directory(let dir):
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            let mine = dir + (offerer ? "/offer.jsonl" : "/answer.jsonl")
            let theirs = dir + (offerer ? "/answer.jsonl" : "/offer.jsonl")
            _ = FileManager.default.createFile(atPath: mine, contents: nil)
            guard let handle = FileHandle(forWritingAtPath: mine) else {
                throw WebRTCError(.signaling, "cannot write \(mine)")
            }
            output = handle
            Thread.detachNewThread { Self.follow(path: theirs, into: continuation) }
        }
    }

    func send(_ message: SignalMessage) {
        guard let data = try? JSONEncoder().encode(message) else { return }
        lock.withLock { _ in output.write(data + Data("\n".utf8)) }
    }

    private static func decode(_ line: String, into continuation: AsyncThrowingStream<SignalMessage, any Error>.Continuation) {
        let trimmed = line.trimmingCharacters(in: .whitespaces)
        guard !trimmed.isEmpty else { return }
        do {
            continuation.yield(try JSONDecoder().decode(SignalMessage.self, from: Data(trimmed.utf8)))
        } catch {
            continuation.finish(throwing: WebRTCError(.signaling, "not a signalling JSON line: \(trimmed.prefix(200))"))
        }
    }

    /// Polls the peer's file (every 20 ms) and yields each complete new line.
    private static func follow(path: String, into continuation: AsyncThrowingStream<SignalMessage, any Error>.Continuation) {
        var offset = 0
        var pending = Data()
        while true {
            if let data = FileManager.default.contents(atPath: path), data.count > offset {
                pending.append(data[offset...])
                offset = data.count
                while let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
                    decode(String(decoding: pending[pending.startIndex..<newline], as: UTF8.self), into: continuation)
                    pending = Data(pending[(newline + 1)...])
                }
            }
            Thread.sleep(forTimeInterval: 0.02)
        }
    }
}
