import Gate
import Glibc
import NIOCore
import NIOPosix

/// An `Upstream` that carries each stream to a mesh peer as one HTTP/2 stream (ugate `/dm/` or
/// HBONE `CONNECT`) over the pooled mTLS connection to that peer.
///
/// `open` (what the Gate's capture fronts use) returns the open stream as an `UpstreamStream`
/// that takes the captured client socket itself (`H2UpstreamStream`: adopted by NIO on the
/// HTTP/2 connection's event loop and joined to the stream with a `GlueHandler` pair; no
/// socketpair). `openChannel` (HTTPRoute backends) returns the stream channel itself, with the
/// caller's handlers joined behind `H2DataCodec`. `dial` (for callers that need a socket:
/// another mesh hop on a different loop) returns one end of a `socketpair(2)` whose other end
/// is joined the same way. Either way a stream's bytes never change threads inside
/// this node. Half-close travels as END_STREAM, an abort as RST_STREAM (and RST on the far TCP
/// socket); both return only after the peer answered `200`, and throw `MeshError` with the
/// peer's status and `error` header otherwise (an `UpstreamStatusError`, so a SOCKS5 or CONNECT
/// client gets the matching reply).
public struct H2MeshUpstream: Upstream {
    public let name: String
    let peer: PeerConfig
    let kind: TunnelRequest.Kind
    let pool: H2ConnectionPool
    let naming: MeshNaming
    /// This node's ID: the `from` of streams it originates.
    let selfID: String
    let openTimeout: TimeAmount

    public func dial(_ destination: Destination, for info: StreamInfo) async throws -> Int32 {
        let connection = try await pool.connection(to: peer).get()
        var fds: [Int32] = [-1, -1]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0, &fds) == 0 else {
            throw MeshError(.connect, "socketpair failed: \(String(cString: strerror(errno)))")
        }
        let request = self.request(destination, info: info)
        let theirEnd = fds[1]
        let loop = connection.channel.eventLoop
        let tuning = pool.tuning
        let opened = loop.flatSubmit { () -> EventLoopFuture<Void> in
            let (streamGlue, socketGlue) = GlueHandler.matchedPair()
            let boundStreamGlue = NIOLoopBound(streamGlue, eventLoop: loop)
            let boundSocketGlue = NIOLoopBound(socketGlue, eventLoop: loop)
            return ClientBootstrap(group: loop)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try tuning.configureByteSocket(channel)
                        try channel.syncOptions?.setOption(.autoRead, value: false)
                        try channel.pipeline.syncOperations.addHandler(boundSocketGlue.value)
                    }
                }
                .withConnectedSocket(theirEnd)
                .flatMap { socket in
                    openStream(request, on: connection, glue: boundStreamGlue)
                        .flatMapThrowing { _ in try socket.syncOptions?.setOption(.autoRead, value: true) }
                        .flatMapErrorThrowing { error in
                            socket.close(promise: nil)
                            throw error
                        }
                }
        }
        do {
            try await opened.get()
        } catch {
            close(fds[0])
            throw error as? MeshError ?? MeshError(.connect, "tunnel to \(destination) via \(peer.id) failed: \(error)")
        }
        return fds[0]
    }

    public func open(_ destination: Destination, for info: StreamInfo) async throws -> (any UpstreamStream)? {
        let connection = try await pool.connection(to: peer).get()
        let request = self.request(destination, info: info)
        let loop = connection.channel.eventLoop
        let tuning = pool.tuning
        let opened = loop.flatSubmit { () -> EventLoopFuture<H2UpstreamStream> in
            let (streamGlue, socketGlue) = GlueHandler.matchedPair()
            let boundSocketGlue = NIOLoopBound(socketGlue, eventLoop: loop)
            return openStream(request, on: connection, glue: NIOLoopBound(streamGlue, eventLoop: loop)).map { stream in
                H2UpstreamStream(stream: stream, socketGlue: boundSocketGlue, tuning: tuning)
            }
        }
        do {
            return try await opened.get()
        } catch {
            throw error as? MeshError ?? MeshError(.connect, "tunnel to \(destination) via \(peer.id) failed: \(error)")
        }
    }

    /// The stream as a channel of `ByteBuffer`s (`H2DataCodec` in front of the caller's handlers,
    /// which `join` adds on the connection's loop once the peer answered `200`): no socketpair,
    /// no glue. The channel lives on the pooled connection's event loop.
    public func openChannel(
        _ destination: Destination, for info: StreamInfo, join: @escaping @Sendable (any Channel) throws -> Void
    ) -> EventLoopFuture<any Channel>? {
        let request = self.request(destination, info: info)
        let peerID = peer.id
        return pool.connection(to: peer)
            .flatMap { connection in openStream(request, on: connection, join: join) }
            .flatMapErrorThrowing { error in
                throw error as? MeshError ?? MeshError(.connect, "tunnel to \(destination) via \(peerID) failed: \(error)")
            }
    }

    /// The event loop of the pooled connection to the peer, connecting it first if needed; a
    /// listener that accepts on it can join its connections to streams directly (`streamOnLoop`).
    public func connectionLoop() async throws -> any EventLoop {
        try await pool.connection(to: peer).get().channel.eventLoop
    }

    /// The tunnel request for a stream; a stream relayed for another node keeps its origin
    /// (`from`), one captured here starts here.
    func request(_ destination: Destination, info: StreamInfo) -> TunnelRequest {
        TunnelRequest(kind: kind, destination: destination, from: info.callerIdentity ?? selfID)
    }

    /// Opens a tunnel stream on `connection` (on its loop); once the peer answered `200` it adds
    /// `glue` (before any DATA after the response is read: the callbacks run inline on the loop)
    /// and succeeds with the stream channel. The glue joins only then, so it cannot withhold the
    /// stream's reads while its partner is not in a pipeline yet.
    func openStream(
        _ request: TunnelRequest, on connection: H2PeerConnection, glue: NIOLoopBound<GlueHandler>
    ) -> EventLoopFuture<any Channel> {
        openStream(request, on: connection) { stream in try stream.pipeline.syncOperations.addHandler(glue.value) }
    }

    /// Opens a tunnel stream on `connection`; once the peer answered `200`, `join` adds the
    /// stream's handlers behind `H2DataCodec` (inline on the loop, before any DATA after the
    /// response is read) and the future succeeds with the stream channel.
    func openStream(
        _ request: TunnelRequest, on connection: H2PeerConnection, join: @escaping @Sendable (any Channel) throws -> Void
    ) -> EventLoopFuture<any Channel> {
        let loop = connection.channel.eventLoop
        let authority = naming.hostname(for: peer.id)
        let peerID = peer.id
        let openTimeout = self.openTimeout
        let established = loop.makePromise(of: Void.self)
        let stream = loop.makePromise(of: (any Channel).self)
        connection.multiplexer.createStreamChannel(promise: stream) { stream in
            stream.eventLoop.makeCompletedFuture {
                try stream.pipeline.syncOperations.addHandlers([
                    TunnelClientHandler(
                        request: request, authority: authority, peerID: peerID, openTimeout: openTimeout, established: established),
                    H2DataCodec(),
                ])
            }
        }
        stream.futureResult.whenFailure { established.fail($0) }
        return established.futureResult.flatMap { stream.futureResult }.flatMapThrowing { stream in
            do {
                try join(stream)
            } catch {
                stream.close(promise: nil)
                throw error
            }
            return stream
        }
    }

    /// For a relaying node: when the pooled connection to the peer already lives on `loop`,
    /// opens the stream there and joins it to `glue` directly (no socketpair); nil otherwise
    /// (the caller dials through `dial`). The `200` callbacks run inline on `loop`, so the
    /// caller's partner glue is in place before the stream's first DATA is passed on.
    func streamOnLoop(
        _ destination: Destination, info: StreamInfo, loop: any EventLoop, glue: NIOLoopBound<GlueHandler>
    ) -> EventLoopFuture<any Channel>? {
        guard let connection = pool.existingConnection(to: peer), connection.channel.eventLoop === loop else { return nil }
        return openStream(request(destination, info: info), on: connection, glue: glue)
    }
}

extension MeshError: UpstreamStatusError {
    /// The peer's tunnel response status (or the status this node maps the failure onto).
    public var upstreamStatus: Int? { status }
}
