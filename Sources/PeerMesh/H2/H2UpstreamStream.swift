import Gate
import Glibc
import NIOCore
import NIOPosix

/// A tunnel stream `H2MeshUpstream.open` opened for a Gate capture front (SOCKS5, HTTP CONNECT,
/// port forward, REDIRECT, TPROXY): the peer answered `200`, the stream's `GlueHandler` is in its
/// pipeline and holds the stream's reads until its partner joins. `attach` adopts the captured
/// client socket on the stream's event loop (`ClientBootstrap.withConnectedSocket`), writes the
/// client's early bytes as the first DATA and adds the partner glue, so the client's bytes
/// reach the HTTP/2 connection without a socketpair and without changing threads.
///
/// `cancel` closes the stream channel (RST_STREAM); once the client socket is joined, the
/// stream's glue aborts it (RST), and a socket joining after the cancel is reset at once
/// (`attach`, `CapturedSocketHandler.channelActive`). The byte counters are written on the
/// stream's loop and read by the Gate from any thread (`transferred`).
struct H2UpstreamStream: UpstreamStream {
    let stream: any Channel
    /// The partner of the stream's glue, added to the client socket's pipeline by `attach`.
    let socketGlue: NIOLoopBound<GlueHandler>
    let tuning: H2Tuning
    let counters = StreamByteCounters()

    var transferred: StreamBytes { counters.snapshot }

    func attach(_ client: CapturedClient) {
        let loop = stream.eventLoop
        let stream = self.stream
        let socketGlue = self.socketGlue
        let tuning = self.tuning
        let counters = self.counters
        loop.execute {
            let counter = NIOLoopBound(CapturedSocketHandler(stream: stream, client: client, counters: counters), eventLoop: loop)
            guard stream.isActive else {
                // The peer reset the stream while the front was answering its client.
                Self.reset(client.fd)
                counter.value.report(clean: false, detail: "stream reset before the client was joined")
                return
            }
            if !client.prefix.isEmpty {
                stream.writeAndFlush(stream.allocator.buffer(bytes: client.prefix), promise: nil)
            }
            ClientBootstrap(group: loop)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try tuning.configureByteSocket(channel)
                        try channel.pipeline.syncOperations.addHandlers([counter.value, socketGlue.value])
                    }
                }
                .withConnectedSocket(client.fd)
                .whenFailure { error in
                    // The failed channel closed the descriptor; the stream has no partner now.
                    stream.close(promise: nil)
                    counter.value.report(clean: false, detail: "cannot adopt the client socket: \(error)")
                }
        }
    }

    func cancel() {
        // A full close of an HTTP/2 stream channel is RST_STREAM; NIO runs it on the stream's
        // loop, after an `attach` queued before it. Closing a closed channel fails quietly.
        stream.close(promise: nil)
    }

    /// Closes a descriptor with RST (SO_LINGER 0).
    static func reset(_ fd: Int32) {
        var l = linger(l_onoff: 1, l_linger: 0)
        _ = setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, socklen_t(MemoryLayout<linger>.size))
        Glibc.close(fd)
    }
}

/// First handler on a captured client socket joined to a tunnel stream (before its
/// `GlueHandler`): counts the bytes each way and reports once, when the socket closes, whether
/// the stream ended cleanly (our half-close sent and no abort or error) to the capture front's
/// `CapturedClient.finished` (access log, metrics). It also closes a socket whose stream died
/// before the socket's glue joined it (the glue could no longer pass the abort on).
final class CapturedSocketHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let stream: any Channel
    private let finished: @Sendable (StreamTotals) -> Void
    /// Shared with `H2UpstreamStream.transferred`; only this handler writes them.
    private let counters: StreamByteCounters
    private var outputClosed = false
    private var aborted = false
    private var error: (any Error)?
    private var reported = false

    init(stream: any Channel, client: CapturedClient, counters: StreamByteCounters) {
        self.stream = stream
        finished = client.finished
        self.counters = counters
        counters.addUp(client.prefix.count)
    }

    func channelActive(context: ChannelHandlerContext) {
        if !stream.isActive {
            aborted = true
            context.close(promise: nil)
        }
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        counters.addUp(unwrapInboundIn(data).readableBytes)
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        counters.addDown(unwrapOutboundIn(data).readableBytes)
        context.write(data, promise: promise)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, case .inputClosed = event { counters.finishUp() }
        context.fireUserInboundEventTriggered(event)
    }

    func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        if mode == .output {
            outputClosed = true
            counters.finishDown()
        } else if mode == .all {
            aborted = true
        }
        context.close(mode: mode, promise: promise)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if self.error == nil { self.error = error }
        context.fireErrorCaught(error)
    }

    func channelInactive(context: ChannelHandlerContext) {
        let detail = error.map { "\($0)" } ?? (aborted ? "aborted" : outputClosed ? nil : "closed before the stream ended")
        report(clean: outputClosed && !aborted && error == nil, detail: detail)
        context.fireChannelInactive()
    }

    /// Reports the totals once.
    func report(clean: Bool, detail: String?) {
        guard !reported else { return }
        reported = true
        let bytes = counters.snapshot
        finished(StreamTotals(bytesUp: bytes.up, bytesDown: bytes.down, clean: clean, detail: clean ? nil : detail))
    }
}
