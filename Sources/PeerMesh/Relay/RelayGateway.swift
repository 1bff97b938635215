import Gate
import Glibc
import Logging
import NIOCore
import Synchronization

/// Gateway side of relay-over-SNI: the idle plain connections nodes behind NAT registered, per
/// node ID, and the admission state (`RelayAdmission`) that checked them.
///
/// A registered connection is served by SwiftNIO (the registration exchange, keepalive, noticing
/// that it closed) and kept with a duplicate of its socket: when TLS for its node arrives, the
/// channel is closed (closing SwiftNIO's descriptor only) and the Gate's relay joins the
/// duplicate with the incoming connection (`MeshNode.listen`).
final class RelayRegistry: Sendable {
    /// An idle registered connection: the channel and a duplicate descriptor of its socket.
    struct Idle: @unchecked Sendable {  // Channel is Sendable; the descriptor is owned by whoever holds the entry
        let channel: any Channel
        let socket: Int32
    }

    private let admission: Mutex<RelayAdmission>
    private let idle = Mutex<[String: [Idle]]>([:])
    let policy: PeerPolicy
    /// Idle registered connections kept per node; more are refused.
    let maxPerNode: Int

    init(gatewayID: String, policy: PeerPolicy, maxPerNode: Int, startedAt: UInt64 = RelayAdmission.wallClockMillis()) {
        self.admission = Mutex(RelayAdmission(gatewayID: gatewayID, startedAt: startedAt))
        self.policy = policy
        self.maxPerNode = maxPerNode
    }

    /// Checks a registration and, when admitted, keeps `channel` and `socket` (a duplicate of its
    /// descriptor, owned by the registry from then on) idle for its node until it is taken or
    /// closes; on refusal the caller keeps `socket`.
    func register(_ registration: RelayRegistration, channel: any Channel, socket: Int32, now: UInt64) -> Result<Void, MeshError> {
        let id = registration.node.id
        let verdict = admission.withLock { $0.admit(registration, policy: policy, now: now) }
        guard case .success = verdict else { return verdict }
        let added = idle.withLock { table -> Bool in
            guard table[id, default: []].count < maxPerNode else { return false }
            table[id, default: []].append(Idle(channel: channel, socket: socket))
            return true
        }
        guard added else {
            return .failure(MeshError(.forbidden, "node \(id) already has \(maxPerNode) idle relay connections here"))
        }
        channel.closeFuture.whenComplete { [self] _ in remove(channel, of: id) }
        return .success(())
    }

    /// Takes the oldest idle connection of `nodeID` that is still open; the caller owns its
    /// socket and closes its channel.
    func take(_ nodeID: String) -> Idle? {
        idle.withLock { table in
            while var list = table[nodeID], !list.isEmpty {
                let entry = list.removeFirst()
                table[nodeID] = list.isEmpty ? nil : list
                if entry.channel.isActive { return entry }
                Glibc.close(entry.socket)
            }
            return nil
        }
    }

    /// TCP keepalive on an idle relay connection, on both ends: probes after 30 s idle, every
    /// 10 s, 3 unanswered close it. Keeps NAT mappings of the node behind NAT alive, and a
    /// connection whose far end vanished (NAT dropped it, host gone) is closed and replaced
    /// instead of swallowing the next client.
    static func configureKeepalive(_ channel: any Channel) throws {
        let options = try channel.syncOptions.unwrap(orError: ChannelError.operationUnsupported)
        try options.setOption(.socketOption(.so_keepalive), value: 1)
        for (name, value) in [(TCP_KEEPIDLE, 30), (TCP_KEEPINTVL, 10), (TCP_KEEPCNT, 3)] {
            try options.setOption(ChannelOptions.Types.SocketOption(level: SocketOptionLevel(IPPROTO_TCP), name: SocketOptionName(name)), value: SocketOptionValue(value))
        }
    }

    /// Idle registered connections of `nodeID`.
    func count(_ nodeID: String) -> Int { idle.withLock { $0[nodeID]?.count ?? 0 } }

    /// The idle registered connections of `nodeID` (not taken).
    func channels(_ nodeID: String) -> [any Channel] { idle.withLock { $0[nodeID]?.map(\.channel) ?? [] } }

    /// Drops a closed idle connection (not one that was taken) and closes its duplicate.
    private func remove(_ channel: any Channel, of id: String) {
        idle.withLock { table in
            guard let index = table[id]?.firstIndex(where: { $0.channel === channel }) else { return }
            Glibc.close(table[id]!.remove(at: index).socket)
            if table[id]?.isEmpty == true { table[id] = nil }
        }
    }
}

/// The first handler on every mesh connection SwiftNIO adopts: tells relay registrations (first
/// byte `U`, see `RelayRegistration`) from TLS (anything else) and either hands the connection
/// to TLS termination (`onTLS`) or reads, checks and answers a registration, after which the
/// connection idles here until the mesh listener takes it (`RelayRegistry.take`) and closes this
/// channel (the Gate's relay carries on with the registry's duplicate of the socket). A
/// registered connection that sends anything is closed.
final class MeshPortDemux: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private enum State {
        case sniffing
        case registering
        case idle
        case done
    }

    private var state = State.sniffing
    private var buffer: ByteBuffer?
    private let registry: RelayRegistry
    private let onTLS: (any Channel) throws -> Void
    /// A duplicate of the connection's descriptor, for the registry once a registration is admitted.
    private var socket: Int32?
    private let remote: String
    private let logger: Logger
    private var timeout: Scheduled<Void>?
    /// A registration header must arrive within this.
    static let headerTimeout = TimeAmount.seconds(10)

    /// - Parameter socket: a duplicate of the connection's descriptor (owned by the handler until
    ///   the registry takes it), needed to accept a registration.
    init(registry: RelayRegistry, socket: Int32?, remote: String, logger: Logger, onTLS: @escaping (any Channel) throws -> Void) {
        self.registry = registry
        self.socket = socket
        self.remote = remote
        self.logger = logger
        self.onTLS = onTLS
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        switch state {
        case .done:
            context.fireChannelRead(data)
        case .idle:
            logger.info("relay connection sent data while idle, closing", metadata: ["peer.addr": "\(remote)"])
            state = .done
            context.close(promise: nil)
        case .sniffing where bytes.readableBytesView.first != RelayRegistration.magic[0]:
            state = .done
            do {
                try onTLS(context.channel)
            } catch {
                context.close(promise: nil)
                return
            }
            closeSocket()
            context.fireChannelRead(data)
            context.fireChannelReadComplete()
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
        case .sniffing, .registering:
            if state == .sniffing {
                state = .registering
                timeout = context.eventLoop.assumeIsolated().scheduleTask(in: Self.headerTimeout) { [self] in
                    refuse(context, MeshError(.timeout, "no complete relay registration within \(Self.headerTimeout.nanoseconds / 1_000_000_000) s"))
                }
            }
            if buffer == nil { buffer = bytes } else { buffer!.writeBuffer(&bytes) }
            do {
                guard let registration = try RelayRegistration.parse(buffer!.readableBytesView) else { return }
                guard buffer!.readableBytes == RelayRegistration.length else {
                    throw MeshError(.badRequest, "data after the relay registration header")
                }
                timeout?.cancel()
                buffer = nil
                guard let socket else { throw MeshError(.badRequest, "relay registrations are not accepted on this connection") }
                switch registry.register(registration, channel: context.channel, socket: socket, now: RelayAdmission.wallClockMillis()) {
                case .success:
                    self.socket = nil
                    state = .idle
                    try? RelayRegistry.configureKeepalive(context.channel)
                    logger.debug("relay connection registered", metadata: ["peer.id": "\(registration.node.id)", "peer.addr": "\(remote)"])
                    context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(string: "OK\n")), promise: nil)
                case .failure(let error):
                    refuse(context, error)
                }
            } catch {
                refuse(context, error as? MeshError ?? MeshError(.badRequest, "\(error)"))
            }
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        timeout?.cancel()
        closeSocket()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if state == .done { context.fireErrorCaught(error) } else { context.close(promise: nil) }
    }

    private func closeSocket() {
        if let socket { Glibc.close(socket) }
        socket = nil
    }

    /// Answers `ERROR <code>: <reason>` and closes.
    private func refuse(_ context: ChannelHandlerContext, _ error: MeshError) {
        guard state != .done else { return }
        state = .done
        timeout?.cancel()
        logger.warning(
            "relay registration refused: \(error.message)", metadata: ["peer.addr": "\(remote)", "error.code": "\(error.code.rawValue)"])
        let line = context.channel.allocator.buffer(string: "ERROR \(error.code.rawValue): \(error.headerValue)\n")
        context.writeAndFlush(wrapOutboundOut(line)).assumeIsolated().whenComplete { _ in context.close(promise: nil) }
    }
}
