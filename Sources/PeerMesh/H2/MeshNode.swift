import Gate
import Glibc
import Logging
import NIOCore
import NIOHTTP2
import NIOPosix
import Synchronization

/// A node's HTTP/2 mesh transport: the mTLS listeners for `/dm/` (base+7) and HBONE (base+8),
/// outbound `H2MeshUpstream`s over one pooled connection per peer, reverse tunnels (a node
/// behind NAT keeps a connection to a gateway, which opens streams to it over that connection)
/// and relay-over-SNI (a node behind NAT keeps idle plain connections registered with a
/// gateway, which splices TLS naming that node into them).
///
/// Threading: every connection lives on one event loop of `group`; a tunnel's HTTP/2 stream and
/// its destination socket (server) or socketpair end (client) are bound to that same loop.
public final class MeshNode: Sendable {
    public let identity: NodeIdentity
    public let config: MeshConfig
    let policy: PeerPolicy
    let tls: MeshTLS
    let group: any EventLoopGroup
    let pool: H2ConnectionPool
    let tuning: H2Tuning
    let router: TunnelRouter
    let sniRouter: SNIRouter
    /// Idle connections nodes behind NAT registered here for relay-over-SNI.
    let relays: RelayRegistry
    /// The loop of every mesh connection SwiftNIO adopts from the Gate's accept (terminated here
    /// or relay registrations), so an inbound stream and a reverse tunnel can be joined directly.
    let acceptLoop: any EventLoop
    let logger: Logger
    private let listeners = Mutex<[PeekListener]>([])
    /// Relay registrations taken for an accepted connection (by its descriptor) between the
    /// accept peek's verdict and the hand-off.
    private let takenRelays = Mutex<[Int32: (node: String, idle: RelayRegistry.Idle)]>([:])
    /// The Gate loops that accept mesh connections and run SNI forwarding.
    let gateLoops: GateLoopGroup
    /// Whether this node made `gateLoops` (and shuts them down).
    private let ownsGateLoops: Bool
    /// The event loop group this node made for itself (`ownThreads`), shut down by `shutdown`.
    private let ownGroup: MultiThreadedEventLoopGroup?
    private let relayPools = Mutex<[RelayPool]>([])
    /// Accepted connections by channel identity, so `shutdown` can close them.
    private let accepted = Mutex<[ObjectIdentifier: any Channel]>([:])
    private let reverseTunnels = Mutex<[ReverseTunnel]>([])
    private let established = Mutex(0)

    /// Inbound mesh connections whose mTLS handshake succeeded since start (reverse tunnels included).
    public var acceptedConnections: Int { established.withLock { $0 } }

    /// - Parameters:
    ///   - identity: the node key and certificate (see `NodeIdentity.loadOrCreate`).
    ///   - dialer: how destinations outside the mesh are reached (default: connect directly).
    ///   - gateLoops: the Gate loops that accept mesh connections and forward by SNI (default: one
    ///     loop of the node's own, stopped by `shutdown`).
    ///   - ownThreads: when set, the node runs on an event loop group of its own with that many
    ///     threads instead of `group` (stopped by `shutdown`): several nodes in one process then
    ///     share no threads, as separate processes would not (`ugate bench-mesh`).
    public init(
        config: MeshConfig, identity: NodeIdentity, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        dialer: TunnelDialer = .direct, gateLoops: GateLoopGroup? = nil, ownThreads: Int? = nil,
        logger: Logger = Logger(label: "ugate.mesh")
    ) throws {
        var logger = logger
        logger[metadataKey: "node.id"] = "\(identity.node.id)"
        self.identity = identity
        self.config = config
        self.policy = try PeerPolicy(peers: config.peers)
        self.tls = try MeshTLS(identity: identity, policy: policy, tlsHosts: config.tlsHosts, logger: logger)
        self.gateLoops = try gateLoops ?? GateLoopGroup(count: 1)
        self.ownsGateLoops = gateLoops == nil
        // Made after everything that can throw, so a failed init leaks no threads.
        let ownGroup = ownThreads.map { MultiThreadedEventLoopGroup(numberOfThreads: max(1, $0)) }
        self.ownGroup = ownGroup
        let group: any EventLoopGroup = ownGroup ?? group
        self.group = group
        self.tuning = H2Tuning(config: config)
        self.pool = H2ConnectionPool(group: group, tls: tls, naming: identity.naming, tuning: tuning, logger: logger)
        self.router = TunnelRouter(
            selfID: identity.node.id, selfVIP6: identity.node.vip6, naming: identity.naming, policy: policy, dialer: dialer, pool: pool, tuning: tuning,
            openTimeout: .nanoseconds(Int64(config.streamOpenTimeout * 1e9)), logger: logger)
        self.relays = RelayRegistry(gatewayID: identity.node.id, policy: policy, maxPerNode: config.maxRelayConnectionsPerPeer)
        self.sniRouter = SNIRouter(selfID: identity.node.id, naming: identity.naming, policy: policy, relays: relays, logger: logger)
        self.acceptLoop = group.next()
        self.logger = logger
    }

    /// Binds a mesh listener and returns the bound port (pass 0 for an ephemeral port). The Gate's
    /// loops accept (`PeekListener`) and peek the TLS ClientHello: TLS whose SNI names another
    /// known node with an address and no relay registration here is forwarded undecrypted by the
    /// Gate's relay (`config.forwarder`: splice or copy; upstream `mesh-sni:<id>` in the access
    /// log and `sniStreams()`). Every other connection is adopted by SwiftNIO on `acceptLoop`,
    /// which accepts relay-over-SNI registrations (`MeshPortDemux`), splices TLS for a node with
    /// registrations into one (`SNIRouter`), terminates the rest, serves both `/dm/` and HBONE
    /// requests, and accepts reverse tunnels.
    public func listen(host: String? = nil, port: Int, name: String) async throws -> Int {
        let listener: PeekListener
        do {
            let address = try SocketAddress(host: host ?? config.listenHost, port: UInt16(port))
            var accessLog = logger
            accessLog[metadataKey: "listener"] = "\(name)"
            listener = try PeekListener(
                name: name, address: address, loops: gateLoops, forwarder: config.forwarder, accessLog: accessLog, log: logger,
                decide: { [self] peeked in
                    // A registration is taken here, so a connection that finds none left is forwarded instead.
                    if let nodeID = sniRouter.relayTarget(serverName: peeked.serverName), let idle = relays.take(nodeID) {
                        takenRelays.withLock { $0[peeked.fd] = (nodeID, idle) }
                        return .handOff
                    }
                    return sniRouter.verdict(serverName: peeked.serverName)
                },
                handOff: { [self] listener, peeked in
                    guard let (nodeID, idle) = takenRelays.withLock({ $0.removeValue(forKey: peeked.fd) }) else {
                        return adopt(peeked, listener: name)
                    }
                    // SwiftNIO lets go of the registered connection first, so it reads none of its bytes.
                    idle.channel.close().whenComplete { _ in
                        listener.relay(peeked, upstream: idle.socket, upstreamName: "mesh-relay:\(nodeID)")
                    }
                    logger.debug("SNI relay", metadata: ["peer.id": "\(nodeID)"])
                })
        } catch {
            throw MeshError(.connect, "cannot listen on \(host ?? config.listenHost):\(port) for \(name): \(error)")
        }
        listener.start()
        listeners.withLock { $0.append(listener) }
        return Int(listener.address.port)
    }

    /// Gives an accepted mesh connection (and the bytes the peek read) to SwiftNIO on `acceptLoop`.
    /// A connection that may be a relay registration gets a duplicate of its descriptor along
    /// (for `RelayRegistry`).
    private func adopt(_ peeked: PeekListener.Peeked, listener name: String) {
        let relays = self.relays
        let logger = self.logger
        let tuning = self.tuning
        let remote = peeked.source
        let socket: Int32? = peeked.bytes.first == RelayRegistration.magic[0] ? dup(peeked.fd) : nil
        ClientBootstrap(group: acceptLoop)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { [self] channel in
                track(channel)
                return channel.eventLoop.makeCompletedFuture {
                    try tuning.configureConnectionSocket(channel)
                    try channel.pipeline.syncOperations.addHandlers([
                        ReplayHandler(prefix: peeked.bytes),
                        MeshPortDemux(registry: relays, socket: socket.flatMap { $0 >= 0 ? $0 : nil }, remote: remote, logger: logger) {
                            try self.terminateTLS(on: $0, remote: remote, listener: name)
                        },
                    ])
                }
            }
            .withConnectedSocket(peeked.fd)
            .whenFailure { error in
                logger.warning("cannot adopt mesh connection: \(error)", metadata: ["peer.addr": "\(remote)"])
                Glibc.close(peeked.fd)
                if let socket, socket >= 0 { Glibc.close(socket) }
            }
    }

    /// The mesh connections the Gate's relay forwards right now (SNI forwarding).
    public func sniStreams() async -> [StreamSnapshot] {
        var all: [StreamSnapshot] = []
        for listener in listeners.withLock({ $0 }) { all += await listener.streams() }
        return all
    }

    /// Terminates TLS on an accepted connection (or a relay connection a gateway spliced a
    /// client into): once the ClientHello is in, mesh mTLS (`terminateMeshTLS`) or, for an SNI
    /// naming one of `config.tlsPorts`, plain TLS to that local port (`terminatePlainTLS`).
    func terminateTLS(on channel: any Channel, remote: String, listener: String) throws {
        try tuning.configureConnectionSocket(channel)
        try channel.pipeline.syncOperations.addHandler(TLSFrontHandler(
            decide: { [self] in termination(serverName: $0) },
            install: { [self] channel, termination in
                switch termination {
                case .mesh: try terminateMeshTLS(on: channel, remote: remote, listener: listener)
                case .plain(let port): try terminatePlainTLS(on: channel, port: port, remote: remote)
                case .host(let name, let port): try terminatePlainTLS(on: channel, port: port, remote: remote, host: name)
                }
            }))
    }

    /// Terminates mTLS and serves the connection: HTTP/2 tunnel streams, or, for ALPN `h2r`, a
    /// reverse tunnel on which this node opens streams to the caller.
    func terminateMeshTLS(on channel: any Channel, remote: String, listener: String) throws {
        let router = self.router
        let tuning = self.tuning
        let pool = self.pool
        let logger = self.logger
        let sync = channel.pipeline.syncOperations
        try sync.addHandler(tls.serverHandler(remote: remote))
        try sync.addHandler(MeshHandshakeHandler(
            remote: remote,
            onEstablished: { [self] channel, caller, alpn in
                if alpn == MeshTLS.reverseALPN {
                    // The caller is behind NAT: we open streams on its connection.
                    let multiplexer = try channel.pipeline.syncOperations.configureHTTP2Pipeline(
                        mode: .client,
                        connectionConfiguration: tuning.connectionConfiguration,
                        streamConfiguration: tuning.streamConfiguration,
                        inboundStreamInitializer: { stream in stream.close() })
                    pool.registerReverse(peerID: caller.id, H2PeerConnection(channel: channel, multiplexer: multiplexer))
                } else {
                    try router.serveStreams(on: channel, caller: caller, listener: listener)
                }
                established.withLock { $0 += 1 }
                logger.debug(
                    "mesh connection up", metadata: ["peer.id": "\(caller.id)", "peer.addr": "\(remote)", "alpn": "\(alpn)"])
            },
            onFailure: { error in
                logger.debug("mesh connection failed: \(error)", metadata: ["peer.addr": "\(remote)"])
            }))
    }

    func track(_ channel: any Channel) {
        let key = ObjectIdentifier(channel)
        accepted.withLock { $0[key] = channel }
        channel.closeFuture.whenComplete { [self] _ in _ = accepted.withLock { $0.removeValue(forKey: key) } }
    }

    /// Whether `peerID` currently has a reverse tunnel to this node.
    public func hasReverseTunnel(from peerID: String) -> Bool {
        pool.hasReverse(peerID)
    }

    /// Binds the `/dm/` listener on base+7 and the HBONE listener on base+8.
    public func listen(basePort: Int) async throws {
        _ = try await listen(port: basePort + 7, name: "mesh-dm")
        _ = try await listen(port: basePort + 8, name: "mesh-hbone")
    }

    /// An upstream that tunnels to `peerID`, over its reverse tunnel or by dialling its addresses.
    public func upstream(to peerID: String, kind: TunnelRequest.Kind = .dm) throws -> H2MeshUpstream {
        guard let peer = policy.peer(peerID) else {
            throw MeshError(.unknownPeer, "node \(peerID) is not a known peer")
        }
        return router.upstream(to: peer, kind: kind)
    }

    /// Keeps a reverse tunnel to `gatewayID` (a known peer with addresses): an outbound mTLS
    /// connection on which this node serves tunnel requests, so the gateway can reach it behind
    /// NAT. Reconnects with exponential backoff (100 ms doubling to 5 s) until `shutdown`.
    public func startReverseTunnel(to gatewayID: String) throws {
        guard let gateway = policy.peer(gatewayID), !gateway.addresses.isEmpty else {
            throw MeshError(.config, "reverse tunnel gateway \(gatewayID) must be a known peer with addresses")
        }
        let tunnel = ReverseTunnel(gateway: gateway, node: self)
        reverseTunnels.withLock { $0.append(tunnel) }
        tunnel.start()
    }

    /// Keeps `poolSize` idle plain connections registered with `gatewayID` (a known peer with
    /// addresses) for relay-over-SNI: the gateway splices TLS connections whose SNI names this
    /// node into them, and this node terminates that TLS. Refills and reconnects with backoff
    /// until `shutdown`.
    public func startRelay(to gatewayID: String, poolSize: Int = 4) throws {
        guard let gateway = policy.peer(gatewayID), !gateway.addresses.isEmpty else {
            throw MeshError(.config, "relay gateway \(gatewayID) must be a known peer with addresses")
        }
        guard poolSize > 0 else { throw MeshError(.config, "relay pool size for \(gatewayID) must be at least 1") }
        let relayPool = RelayPool(gateway: gateway, size: poolSize, node: self)
        relayPools.withLock { $0.append(relayPool) }
        relayPool.fill()
    }

    /// Relay registrations with `gatewayID`: idle now, accepted so far, used so far, last refusal.
    public func relayStatus(gateway gatewayID: String) -> (idle: Int, registered: Int, used: Int, lastError: MeshError?) {
        let pools = relayPools.withLock { $0.filter { $0.gateway.id == gatewayID } }
        return pools.reduce((0, 0, 0, nil)) { sum, pool in
            let c = pool.counters
            return (sum.idle + c.idle, sum.registered + c.registered, sum.used + c.used, c.lastError ?? sum.lastError)
        }
    }

    /// Idle relay connections `nodeID` registered with this gateway.
    public func relayConnections(from nodeID: String) -> Int { relays.count(nodeID) }

    /// Reverse tunnel connections established so far (first one and every reconnect).
    public var reverseTunnelConnections: Int {
        reverseTunnels.withLock { $0.reduce(0) { $0 + $1.connections } }
    }

    /// One reverse-tunnel connection attempt to `gateway` at `address`; returns the channel once
    /// HTTP/2 serves on it.
    func connectReverse(gateway: PeerConfig, address: String) async throws -> any Channel {
        let router = self.router
        return try await pool.dialTLS(peer: gateway.id, address: address, loop: group.next(), reverse: true) { channel, caller in
            try router.serveStreams(on: channel, caller: caller, listener: "reverse")
            return channel
        }.get()
    }

    /// Stops reverse tunnels and closes the listeners, the accepted and the pooled connections.
    public func shutdown() async {
        for tunnel in reverseTunnels.withLock({ list in defer { list = [] }; return list }) { await tunnel.stop() }
        for relayPool in relayPools.withLock({ list in defer { list = [] }; return list }) { await relayPool.stop() }
        for listener in listeners.withLock({ list in defer { list = [] }; return list }) { listener.stop() }
        for channel in accepted.withLock({ table in defer { table = [:] }; return Array(table.values) }) {
            try? await channel.close()
        }
        await pool.closeAll()
        if ownsGateLoops { gateLoops.shutdown() }
        try? await ownGroup?.shutdownGracefully()
    }
}

/// The reconnect loop of one reverse tunnel.
final class ReverseTunnel: Sendable {
    private let gateway: PeerConfig
    /// Strong: the node keeps its tunnels until `shutdown`, which stops them.
    private let node: MeshNode
    private let state = Mutex<(task: Task<Void, Never>?, channel: (any Channel)?, connections: Int)>((nil, nil, 0))

    init(gateway: PeerConfig, node: MeshNode) {
        self.gateway = gateway
        self.node = node
    }

    var connections: Int { state.withLock { $0.connections } }

    func start() {
        let task = Task { await self.run() }
        state.withLock { $0.task = task }
    }

    private func run() async {
        var backoff = Duration.milliseconds(100)
        var attempt = 0
        while !Task.isCancelled {
            let address = gateway.addresses[attempt % gateway.addresses.count]
            attempt += 1
            do {
                let channel = try await node.connectReverse(gateway: gateway, address: address)
                let cancelled = state.withLock { state -> Bool in
                    state.channel = channel
                    state.connections += 1
                    return state.task?.isCancelled ?? true
                }
                if cancelled { try? await channel.close() }
                node.logger.info("reverse tunnel up", metadata: ["peer.id": "\(gateway.id)", "peer.addr": "\(address)"])
                backoff = .milliseconds(100)
                try? await channel.closeFuture.get()
                node.logger.info("reverse tunnel down, reconnecting", metadata: ["peer.id": "\(gateway.id)"])
            } catch {
                node.logger.debug("reverse tunnel connect failed: \(error)", metadata: ["peer.id": "\(gateway.id)"])
            }
            try? await Task.sleep(for: backoff)
            backoff = min(backoff * 2, .seconds(5))
        }
    }

    func stop() async {
        let (task, channel) = state.withLock { state in
            state.task?.cancel()
            return (state.task, state.channel)
        }
        try? await channel?.close()
        await task?.value
    }
}
