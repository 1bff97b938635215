import Gate
import Logging
import NIOCore
import NIOHTTP2
import NIOPosix
import Synchronization

/// An established mTLS HTTP/2 connection to a peer, on which this node opens streams.
struct H2PeerConnection: Sendable {
    let channel: any Channel
    let multiplexer: NIOHTTP2Handler.StreamMultiplexer
}

/// One pooled HTTP/2 connection per peer, opened on first use and reopened after it closes;
/// concurrent callers share the connection attempt in flight. Streams multiplex over it.
///
/// A peer behind NAT that keeps a reverse tunnel to this node registers that connection here;
/// it is preferred over dialling the peer's addresses.
final class H2ConnectionPool: Sendable {
    private let group: any EventLoopGroup
    private let tls: MeshTLS
    private let naming: MeshNaming
    let tuning: H2Tuning
    private let logger: Logger
    private let connections = Mutex<[String: EventLoopFuture<H2PeerConnection>]>([:])
    private let reverse = Mutex<[String: H2PeerConnection]>([:])
    /// The established forward connections of `connections`.
    private let ready = Mutex<[String: H2PeerConnection]>([:])
    /// Connect plus mTLS handshake must finish within this.
    let handshakeTimeout = TimeAmount.seconds(10)

    init(group: any EventLoopGroup, tls: MeshTLS, naming: MeshNaming, tuning: H2Tuning, logger: Logger) {
        self.group = group
        self.tls = tls
        self.naming = naming
        self.tuning = tuning
        self.logger = logger
    }

    /// The connection to `peer`: its reverse tunnel if it has one up, else the pooled forward
    /// connection, dialling its addresses in order if there is none.
    func connection(to peer: PeerConfig) -> EventLoopFuture<H2PeerConnection> {
        if let tunnel = reverse.withLock({ $0[peer.id] }) {
            return tunnel.channel.eventLoop.makeSucceededFuture(tunnel)
        }
        guard !peer.addresses.isEmpty else {
            return group.next().makeFailedFuture(
                MeshError(.connect, "peer \(peer.id) has no addresses and no reverse tunnel to this node"))
        }
        let (future, isNew) = connections.withLock { table in
            if let existing = table[peer.id] { return (existing, false) }
            let future = connect(peer: peer, addresses: peer.addresses[...])
            table[peer.id] = future
            return (future, true)
        }
        // Registered outside the lock: a future that already failed runs this at once.
        if isNew {
            future.whenComplete { [self] result in
                switch result {
                case .success(let connection):
                    ready.withLock { $0[peer.id] = connection }
                    connection.channel.closeFuture.whenComplete { _ in
                        self.forget(peer.id, future)
                        self.ready.withLock { table in
                            if table[peer.id]?.channel === connection.channel { table[peer.id] = nil }
                        }
                    }
                case .failure:
                    forget(peer.id, future)
                }
            }
        }
        return future
    }

    /// The connection `connection(to:)` would use right now if it is already established
    /// (reverse tunnel first), without dialling.
    func existingConnection(to peer: PeerConfig) -> H2PeerConnection? {
        reverse.withLock { $0[peer.id] } ?? ready.withLock { $0[peer.id] }
    }

    /// Records a reverse tunnel from `peerID` until its channel closes (a newer one replaces it).
    func registerReverse(peerID: String, _ connection: H2PeerConnection) {
        reverse.withLock { $0[peerID] = connection }
        connection.channel.closeFuture.whenComplete { [self] _ in
            reverse.withLock { table in
                if table[peerID]?.channel === connection.channel { table[peerID] = nil }
            }
        }
    }

    func hasReverse(_ peerID: String) -> Bool {
        reverse.withLock { $0[peerID] != nil }
    }

    private func forget(_ id: String, _ future: EventLoopFuture<H2PeerConnection>) {
        connections.withLock { table in
            if table[id] === future { table[id] = nil }
        }
    }

    /// Closes every pooled connection.
    func closeAll() async {
        let all = connections.withLock { table in
            defer { table = [:] }
            return Array(table.values)
        }
        for future in all {
            if let connection = try? await future.get() { try? await connection.channel.close() }
        }
    }

    private func connect(peer: PeerConfig, addresses: ArraySlice<String>) -> EventLoopFuture<H2PeerConnection> {
        let loop = group.next()
        guard let address = addresses.first else {
            return loop.makeFailedFuture(MeshError(.connect, "peer \(peer.id) has no reachable address"))
        }
        let tuning = self.tuning
        return dialTLS(peer: peer.id, address: address, loop: loop, reverse: false) { channel, _ in
            let multiplexer = try channel.pipeline.syncOperations.configureHTTP2Pipeline(
                mode: .client,
                connectionConfiguration: tuning.connectionConfiguration,
                streamConfiguration: tuning.streamConfiguration,
                inboundStreamInitializer: { stream in stream.close() })
            return H2PeerConnection(channel: channel, multiplexer: multiplexer)
        }
        .flatMapError { [self] error in
            guard addresses.count > 1 else { return loop.makeFailedFuture(error) }
            logger.debug("peer address failed, trying next", metadata: ["peer.id": "\(peer.id)", "peer.addr": "\(address)"])
            return connect(peer: peer, addresses: addresses.dropFirst())
        }
    }

    /// Connects to `peer` at `address` with mTLS (ALPN `h2`, or `h2r` for a reverse tunnel) and
    /// runs `configure` on the event loop once the handshake verified the peer.
    func dialTLS<Result: Sendable>(
        peer: String, address: String, loop: any EventLoop, reverse: Bool,
        configure: @escaping @Sendable (any Channel, NodeID) throws -> Result
    ) -> EventLoopFuture<Result> {
        let destination: Destination
        do { destination = try TunnelRequest.parseDestination(address) } catch {
            return loop.makeFailedFuture(MeshError(.config, "peer \(peer) address \"\(address)\" is not host:port"))
        }
        let ready = loop.makePromise(of: Result.self)
        let tls = self.tls
        let tuning = self.tuning
        let serverName = naming.hostname(for: peer)
        let connected = ClientBootstrap(group: loop)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .connectTimeout(.seconds(10))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try tuning.configureConnectionSocket(channel)
                    let sync = channel.pipeline.syncOperations
                    try sync.addHandler(tls.clientHandler(expected: peer, serverName: serverName, remote: address, reverse: reverse))
                    try sync.addHandler(MeshHandshakeHandler(
                        remote: address,
                        onEstablished: { channel, node, _ in ready.succeed(try configure(channel, node)) },
                        onFailure: { ready.fail($0) }))
                }
            }
            .connect(host: destination.host, port: Int(destination.port))
        connected.whenFailure { error in
            ready.fail(MeshError(.connect, "cannot connect to peer \(peer) at \(address): \(error)"))
        }
        // A peer that accepts TCP but never completes TLS must not hold the dial forever.
        let timeout = loop.scheduleTask(in: handshakeTimeout) {
            ready.fail(MeshError(.tls, "TLS handshake with peer \(peer) at \(address) timed out"))
            connected.whenSuccess { $0.close(promise: nil) }
        }
        ready.futureResult.whenComplete { _ in timeout.cancel() }
        return ready.futureResult
    }
}
