import Gate
import Logging
import NIOCore
import NIOHTTP2
import NIOPosix
import Synchronization

/// A node's HTTP/2 mesh transport: the mTLS listeners for `/dm/` (base+7) and HBONE (base+8),
/// and outbound `H2MeshUpstream`s over one pooled connection per peer.
///
/// Threading: every connection lives on one event loop of `group`; a tunnel's HTTP/2 stream,
/// its destination socket (server) or socketpair end (client) are bound to that same loop.
public final class MeshNode: Sendable {
    public let identity: NodeIdentity
    public let config: MeshConfig
    let policy: PeerPolicy
    let tls: MeshTLS
    let group: any EventLoopGroup
    let pool: H2ConnectionPool
    let tuning: H2Tuning
    let dialer: TunnelDialer
    let logger: Logger
    private let listeners = NIOLockedChannels()
    private let established = Mutex(0)

    /// Inbound mesh connections whose mTLS handshake succeeded since start.
    public var acceptedConnections: Int { established.withLock { $0 } }

    /// - Parameters:
    ///   - identity: the node key and certificate (see `NodeIdentity.loadOrCreate`).
    ///   - dialer: how tunnel destinations are reached (default: connect directly).
    public init(
        config: MeshConfig, identity: NodeIdentity, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        dialer: TunnelDialer = .direct, logger: Logger = Logger(label: "ugate.mesh")
    ) throws {
        var logger = logger
        logger[metadataKey: "node.id"] = "\(identity.node.id)"
        self.identity = identity
        self.config = config
        self.policy = try PeerPolicy(peers: config.peers)
        self.tls = try MeshTLS(identity: identity, policy: policy, logger: logger)
        self.group = group
        self.tuning = H2Tuning(config: config)
        self.pool = H2ConnectionPool(group: group, tls: tls, naming: identity.naming, tuning: tuning, logger: logger)
        self.dialer = dialer
        self.logger = logger
    }

    /// Binds a mesh listener (both `/dm/` and HBONE requests are served on it) and returns the
    /// bound port (pass 0 for an ephemeral port).
    public func listen(host: String? = nil, port: Int, name: String) async throws -> Int {
        let tls = self.tls
        let tuning = self.tuning
        let policy = self.policy
        let dialer = self.dialer
        let logger = self.logger
        let counter = self
        let channel: any Channel
        do {
            channel = try await ServerBootstrap(group: group)
                .serverChannelOption(.backlog, value: 256)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelOption(.tcpNoDelay, value: true)
                .childChannelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        let remote = channel.remoteAddress.map { "\($0)" } ?? "?"
                        let sync = channel.pipeline.syncOperations
                        try sync.addHandler(tls.serverHandler(remote: remote))
                        try sync.addHandler(MeshHandshakeHandler(
                            remote: remote,
                            onEstablished: { channel, caller in
                                _ = try channel.pipeline.syncOperations.configureHTTP2Pipeline(
                                    mode: .server,
                                    connectionConfiguration: tuning.connectionConfiguration,
                                    streamConfiguration: tuning.streamConfiguration,
                                    inboundStreamInitializer: { stream in
                                        stream.eventLoop.makeCompletedFuture {
                                            try stream.pipeline.syncOperations.addHandler(TunnelServerHandler(
                                                caller: caller, policy: policy, dialer: dialer, listener: name, logger: logger))
                                        }
                                    })
                                counter.established.withLock { $0 += 1 }
                                logger.debug("mesh connection up", metadata: ["peer.id": "\(caller.id)", "peer.addr": "\(remote)"])
                            },
                            onFailure: { error in
                                logger.debug("mesh connection failed: \(error)", metadata: ["peer.addr": "\(remote)"])
                            }))
                    }
                }
                .bind(host: host ?? config.listenHost, port: port)
                .get()
        } catch {
            throw MeshError(.connect, "cannot listen on \(host ?? config.listenHost):\(port) for \(name): \(error)")
        }
        listeners.add(channel)
        return channel.localAddress?.port ?? port
    }

    /// Binds the `/dm/` listener on base+7 and the HBONE listener on base+8.
    public func listen(basePort: Int) async throws {
        _ = try await listen(port: basePort + 7, name: "mesh-dm")
        _ = try await listen(port: basePort + 8, name: "mesh-hbone")
    }

    /// An upstream that tunnels to `peerID` (a configured peer with addresses).
    public func upstream(to peerID: String, kind: TunnelRequest.Kind = .dm) throws -> H2MeshUpstream {
        guard let peer = policy.peer(peerID) else {
            throw MeshError(.unknownPeer, "node \(peerID) is not a known peer")
        }
        guard !peer.addresses.isEmpty else {
            throw MeshError(.config, "peer \(peerID) has no addresses to dial")
        }
        return H2MeshUpstream(name: "h2-\(kind.rawValue):\(peerID.prefix(8))", peer: peer, kind: kind, pool: pool, naming: identity.naming)
    }

    /// Closes the listeners and the pooled connections.
    public func shutdown() async {
        for channel in listeners.removeAll() { try? await channel.close() }
        await pool.closeAll()
    }
}

/// Listener channels, guarded for use from any task.
private final class NIOLockedChannels: Sendable {
    private let channels = Mutex<[any Channel]>([])
    func add(_ channel: any Channel) { channels.withLock { $0.append(channel) } }
    func removeAll() -> [any Channel] { channels.withLock { list in defer { list = [] }; return list } }
}
