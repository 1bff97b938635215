import Gate
import Logging
import NIOCore
import NIOPosix
import Synchronization

/// Node side of relay-over-SNI: keeps `size` idle plain TCP connections registered with a
/// gateway (each opened with a signed `RelayRegistration`). When the gateway splices a TLS
/// connection for this node into one, the first bytes arrive, this node terminates TLS on it
/// like on its own listener, and the pool opens a replacement. Connections that fail, are
/// refused or close while idle (gateway restart) are replaced after an exponential backoff
/// (100 ms doubling to 5 s, reset by the next accepted registration).
final class RelayPool: Sendable {
    struct Counters: Sendable {
        var idle = 0
        var pending = 0
        /// Registrations the gateway accepted so far.
        var registered = 0
        /// Connections the gateway spliced a client into.
        var used = 0
        var failures = 0
        var lastError: MeshError?
        var stopped = false
        var retryScheduled = false
        var attempt = 0
        var channels: [ObjectIdentifier: any Channel] = [:]
    }

    let gateway: PeerConfig
    let size: Int
    /// Strong: the node keeps its pools until `shutdown`, which stops them.
    private let node: MeshNode
    private let state = Mutex(Counters())

    init(gateway: PeerConfig, size: Int, node: MeshNode) {
        self.gateway = gateway
        self.size = size
        self.node = node
    }

    var counters: Counters { state.withLock { $0 } }

    /// Opens connections until `size` are idle or pending.
    func fill() {
        let addresses = state.withLock { s -> [String] in
            guard !s.stopped else { return [] }
            let missing = max(0, size - s.idle - s.pending)
            s.pending += missing
            let list = (0..<missing).map { i in gateway.addresses[(s.attempt + i) % gateway.addresses.count] }
            s.attempt += missing
            return list
        }
        for address in addresses { open(address) }
    }

    private func open(_ address: String) {
        let header: [UInt8]
        let destination: Destination
        do {
            destination = try TunnelRequest.parseDestination(address)
            header = try RelayRegistration.make(
                key: node.identity.privateKey, gatewayID: gateway.id, timestamp: RelayAdmission.wallClockMillis(),
                nonce: (0..<16).map { _ in UInt8.random(in: 0...255) })
        } catch {
            finished(nil, MeshError(.config, "relay registration with \(gateway.id) at \(address): \(error)"))
            return
        }
        let node = self.node
        let gatewayID = gateway.id
        ClientBootstrap(group: node.group)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .connectTimeout(.seconds(10))
            .channelInitializer { [self] channel in
                channel.eventLoop.makeCompletedFuture {
                    try RelayRegistry.configureKeepalive(channel)
                    try channel.pipeline.syncOperations.addHandler(RelayClientHandler(
                        header: header, gatewayID: gatewayID, pool: self,
                        terminate: { channel in try node.terminateTLS(on: channel, remote: address, listener: "relay") }))
                }
            }
            .connect(host: destination.host, port: Int(destination.port))
            .whenFailure { [self] error in
                finished(nil, MeshError(.connect, "cannot connect to relay gateway \(gatewayID) at \(address): \(error)"))
            }
    }

    /// The gateway accepted the registration on `channel`.
    func accepted(_ channel: any Channel) {
        let stopped = state.withLock { s -> Bool in
            s.pending -= 1
            s.idle += 1
            s.registered += 1
            s.failures = 0
            s.channels[ObjectIdentifier(channel)] = channel
            return s.stopped
        }
        if stopped { channel.close(promise: nil) }
        node.logger.debug("relay connection registered", metadata: ["peer.id": "\(gateway.id)"])
    }

    /// The gateway spliced a client into `channel`: it is no longer idle.
    func used(_ channel: any Channel) {
        state.withLock { s in
            s.idle -= 1
            s.used += 1
            s.channels[ObjectIdentifier(channel)] = nil
        }
        node.track(channel)
        fill()
    }

    /// A connection ended before it was used: `wasIdle` tells whether it had been registered;
    /// `error` is why (nil for a plain close of an idle connection).
    func finished(_ channel: (any Channel)?, wasIdle: Bool = false, _ error: MeshError?) {
        let delay = state.withLock { s -> Duration? in
            if wasIdle { s.idle -= 1 } else { s.pending -= 1 }
            if let channel { s.channels[ObjectIdentifier(channel)] = nil }
            s.failures += 1
            if let error { s.lastError = error }
            guard !s.stopped, !s.retryScheduled else { return nil }
            s.retryScheduled = true
            return .milliseconds(100) * (1 << min(s.failures - 1, 6))
        }
        if let error {
            // A gateway that is down fails every connection of the pool on each retry: info;
            // a refusal says something is misconfigured: warning.
            node.logger.log(
                level: error.code == .connect ? .info : .warning, "relay registration failed: \(error.message)",
                metadata: ["peer.id": "\(gateway.id)", "error.code": "\(error.code.rawValue)"])
        }
        guard let delay else { return }
        Task {
            try? await Task.sleep(for: min(delay, .seconds(5)))
            state.withLock { $0.retryScheduled = false }
            fill()
        }
    }

    /// Stops refilling and closes the idle connections (used ones belong to the node).
    func stop() async {
        let channels = state.withLock { s in
            s.stopped = true
            return Array(s.channels.values)
        }
        for channel in channels { try? await channel.close() }
    }
}

/// One registered relay connection on the node behind NAT: sends the header, reads the
/// gateway's answer line, idles, and on the first spliced bytes installs local TLS termination
/// (`terminate`) and removes itself.
final class RelayClientHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private enum State {
        case waitingForAnswer
        case idle
        case done
    }

    private var state = State.waitingForAnswer
    private var answer: ByteBuffer?
    private let header: [UInt8]
    private let gatewayID: String
    private let pool: RelayPool
    private let terminate: (any Channel) throws -> Void
    private var timeout: Scheduled<Void>?
    static let answerTimeout = TimeAmount.seconds(10)

    init(header: [UInt8], gatewayID: String, pool: RelayPool, terminate: @escaping (any Channel) throws -> Void) {
        self.header = header
        self.gatewayID = gatewayID
        self.pool = pool
        self.terminate = terminate
    }

    func channelActive(context: ChannelHandlerContext) {
        context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(bytes: header)), promise: nil)
        timeout = context.eventLoop.assumeIsolated().scheduleTask(in: Self.answerTimeout) { [self] in
            fail(context, MeshError(.timeout, "gateway \(gatewayID) did not answer the relay registration"))
        }
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        switch state {
        case .done:
            context.fireChannelRead(data)
        case .idle:
            start(context, bytes)
        case .waitingForAnswer:
            if answer == nil { answer = bytes } else { answer!.writeBuffer(&bytes) }
            guard let newline = answer!.readableBytesView.firstIndex(of: UInt8(ascii: "\n")) else {
                if answer!.readableBytes > 512 { fail(context, MeshError(.badRequest, "gateway \(gatewayID) sent no answer line")) }
                return
            }
            let line = answer!.readString(length: newline - answer!.readerIndex) ?? ""
            answer!.moveReaderIndex(forwardBy: 1)
            timeout?.cancel()
            guard line == "OK" else {
                fail(context, MeshError(.remoteRefused, "gateway \(gatewayID) refused the relay registration: \(line)"))
                return
            }
            state = .idle
            pool.accepted(context.channel)
            let rest = answer!
            answer = nil
            if rest.readableBytes > 0 { start(context, rest) }
        }
    }

    /// The gateway spliced a client in: serve it with local TLS.
    private func start(_ context: ChannelHandlerContext, _ first: ByteBuffer) {
        state = .done
        pool.used(context.channel)
        do {
            try terminate(context.channel)
        } catch {
            context.close(promise: nil)
            return
        }
        context.fireChannelRead(wrapInboundOut(first))
        context.fireChannelReadComplete()
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        timeout?.cancel()
        switch state {
        case .waitingForAnswer:
            state = .done
            pool.finished(context.channel, MeshError(.connect, "gateway \(gatewayID) closed the relay connection before answering"))
        case .idle:
            state = .done
            pool.finished(context.channel, wasIdle: true, nil)
        case .done:
            break
        }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if state == .done { context.fireErrorCaught(error) } else { context.close(promise: nil) }
    }

    private func fail(_ context: ChannelHandlerContext, _ error: MeshError) {
        guard state == .waitingForAnswer else { return }
        state = .done
        pool.finished(context.channel, error)
        context.close(promise: nil)
    }
}
