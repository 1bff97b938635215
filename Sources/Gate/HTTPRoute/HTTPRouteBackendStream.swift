import NIOCore

/// HTTPRoute backends behind an upstream that carries streams itself (a mesh peer,
/// `Upstream.openChannel`): the upstream's stream channel — an HTTP/2 stream of the pooled mesh
/// connection, `H2DataCodec` in front — *is* the backend connection's channel, with
/// `BackendHandler` in its pipeline. No socketpair, no glue, no second relay.
///
/// Threading: a mesh stream lives on its HTTP/2 connection's event loop, the exchange on its
/// client connection's loop. When they are the same loop, `BackendHandler` sits in the stream's
/// pipeline and everything runs inline. When not, `BackendLoopHop` sits there instead and
/// hands every read, read burst end and close to `BackendHandler` on the exchange's loop
/// (`EventLoop.execute`, in order); the exchange's writes, flushes and closes go to the stream
/// through SwiftNIO's thread-safe `Channel` methods and write promises of the exchange's loop.
/// Either way the request's bytes go straight into HTTP/2 DATA frames.
///
/// Pooling: a stream is a byte tunnel to one TCP connection the peer made to the backend, so it
/// carries an HTTP/1.1 keep-alive connection like a socket does: released to the pool after a
/// response that allows keep-alive, reused for the next request to that destination from the
/// same loop, closed when the backend closes (the peer's END_STREAM arrives as `inputClosed`,
/// `BackendHandler` closes the stream) or when the exchange drops it (RST_STREAM).
extension BackendPool {
    /// Opens a stream to `target` through `upstream` as a new backend connection for
    /// `destination` on `loop`, calling `completion` on `loop` (a failure after the pool's
    /// `connectTimeout`; a stream that arrives later is closed). False when the upstream has no
    /// channel streams (the caller dials).
    func openStream(
        _ upstream: any Upstream, _ target: Destination, for info: StreamInfo, on loop: any EventLoop, destination: Destination,
        _ completion: @escaping (Result<BackendConnection, any Error>) -> Void
    ) -> Bool {
        let handler = BackendHandler()
        let bound = NIOLoopBound(handler, eventLoop: loop)
        let opened = upstream.openChannel(target, for: info) { stream in
            let sync = stream.pipeline.syncOperations
            if stream.eventLoop === bound.eventLoop {
                try sync.addHandler(bound.value)
            } else {
                try sync.addHandler(BackendLoopHop(bound))
            }
        }
        guard let opened else { return false }
        let timeout = connectTimeout
        var settled = false
        let timer = loop.assumeIsolated().scheduleTask(in: .milliseconds(Int64(max(timeout, 0.001) * 1000))) {
            guard !settled else { return }
            settled = true
            completion(.failure(GateError(.timeout, "connect to \(target) through upstream \(upstream.name) timed out after \(timeout) s (stream not open)")))
        }
        opened.hop(to: loop).assumeIsolated().whenComplete { result in
            guard !settled else {
                if case .success(let stream) = result { stream.close(promise: nil) }
                return
            }
            settled = true
            timer.cancel()
            switch result {
            case .failure(let error):
                completion(.failure(error))
            case .success(let stream):
                // A close before this point hops here after this callback (same queue): seen below
                // or delivered to the handler once it knows its connection.
                guard stream.isActive else {
                    completion(.failure(GateError(.closed, "stream to \(target) through upstream \(upstream.name) closed before use")))
                    return
                }
                let connection = NIOBackendConnection(channel: stream, destination: destination, loop: loop)
                handler.connection = connection
                self.track(connection)
                completion(.success(connection))
            }
        }
        return true
    }
}

/// In a mesh stream's pipeline when the stream runs on another event loop than the exchanges
/// using it: passes every read, read burst end and close to the connection's `BackendHandler`
/// on that loop, in order (see `BackendPool.openStream`). Touches nothing of the handler on the
/// stream's own loop.
final class BackendLoopHop: BackendChannelEnd {
    typealias InboundIn = ByteBuffer

    private let handler: NIOLoopBound<BackendHandler>

    init(_ handler: NIOLoopBound<BackendHandler>) { self.handler = handler }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        let channel = context.channel
        let handler = self.handler
        handler.eventLoop.execute { handler.value.received(buffer, channel: channel) }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        let handler = self.handler
        handler.eventLoop.execute { handler.value.readComplete() }
    }

    func channelInactive(context: ChannelHandlerContext) {
        let handler = self.handler
        handler.eventLoop.execute { handler.value.closed() }
        context.fireChannelInactive()
    }
}

/// The last handler of a backend channel (`BackendHandler`, `BackendLoopHop`): an error closes
/// the channel, and so does the far end's half-close of a mesh stream (`inputClosed`: the backend
/// closed its connection behind the peer), as a TCP socket's FIN does.
protocol BackendChannelEnd: ChannelInboundHandler {}

extension BackendChannelEnd {
    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, case .inputClosed = event {
            context.close(promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}
