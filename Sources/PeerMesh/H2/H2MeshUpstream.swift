import Gate
import Glibc
import NIOCore
import NIOPosix

/// An `Upstream` that carries each stream to a mesh peer as one HTTP/2 stream (ugate `/dm/` or
/// HBONE `CONNECT`) over the pooled mTLS connection to that peer.
///
/// `dial` returns one end of a `socketpair(2)`; the other end is adopted by NIO on the HTTP/2
/// connection's event loop and joined to the stream with a `GlueHandler` pair, so a stream's
/// bytes never change threads after the socketpair. Half-close travels as END_STREAM, an abort
/// as RST_STREAM (and RST on the far TCP socket); `dial` returns only after the peer answered
/// `200`, and throws `MeshError` with the peer's status and `error` header otherwise.
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
        // A stream relayed for another node keeps its origin; one captured here starts here.
        let request = TunnelRequest(kind: kind, destination: destination, from: info.callerIdentity ?? selfID)
        let openTimeout = self.openTimeout
        let authority = naming.hostname(for: peer.id)
        let peerID = peer.id
        let theirEnd = fds[1]
        let loop = connection.channel.eventLoop
        let opened = loop.flatSubmit { () -> EventLoopFuture<Void> in
            let (streamGlue, socketGlue) = GlueHandler.matchedPair()
            let boundStreamGlue = NIOLoopBound(streamGlue, eventLoop: loop)
            let boundSocketGlue = NIOLoopBound(socketGlue, eventLoop: loop)
            return ClientBootstrap(group: loop)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try H2Tuning.configureByteSocket(channel)
                        try channel.syncOptions?.setOption(.autoRead, value: false)
                        try channel.pipeline.syncOperations.addHandler(boundSocketGlue.value)
                    }
                }
                .withConnectedSocket(theirEnd)
                .flatMap { socket in
                    let established = loop.makePromise(of: Void.self)
                    connection.multiplexer.createStreamChannel { stream in
                        stream.eventLoop.makeCompletedFuture {
                            try stream.pipeline.syncOperations.addHandlers([
                                TunnelClientHandler(
                                    request: request, authority: authority, peerID: peerID, openTimeout: openTimeout,
                                    established: established),
                                H2DataCodec(),
                                boundStreamGlue.value,
                            ])
                        }
                    }
                    .whenFailure { established.fail($0) }
                    return established.futureResult
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
            throw error as? MeshError ?? MeshError(.connect, "tunnel to \(destination) via \(peerID) failed: \(error)")
        }
        return fds[0]
    }
}
