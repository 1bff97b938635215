import Glibc
import NIOCore
import NIOHTTP2
import Synchronization

/// Turns an HTTP/2 stream channel into a byte stream with half-close:
/// inbound DATA → `ByteBuffer` reads, END_STREAM (on DATA or trailers) → `ChannelEvent.inputClosed`;
/// outbound `ByteBuffer` → DATA, `close(mode: .output)` → an empty DATA frame with END_STREAM.
/// A full close of the stream channel sends RST_STREAM (abort).
///
/// Sits after the tunnel handler that consumed the request/response HEADERS.
final class H2DataCodec: ChannelDuplexHandler {
    typealias InboundIn = HTTP2Frame.FramePayload
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = HTTP2Frame.FramePayload

    private var inputClosed = false
    private var outputClosed = false

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .data(let frame):
            if case .byteBuffer(let bytes) = frame.data, bytes.readableBytes > 0 {
                context.fireChannelRead(wrapInboundOut(bytes))
            }
            if frame.endStream { closeInput(context) }
        case .headers(let headers):
            // Trailers: their END_STREAM is the half-close; fields carry nothing we use.
            if headers.endStream { closeInput(context) }
        default:
            break
        }
    }

    private func closeInput(_ context: ChannelHandlerContext) {
        guard !inputClosed else { return }
        inputClosed = true
        context.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let bytes = unwrapOutboundIn(data)
        context.write(wrapOutboundOut(.data(.init(data: .byteBuffer(bytes)))), promise: promise)
    }

    func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        switch mode {
        case .output:
            guard !outputClosed else {
                promise?.succeed(())
                return
            }
            outputClosed = true
            let end = HTTP2Frame.FramePayload.data(.init(data: .byteBuffer(context.channel.allocator.buffer(capacity: 0)), endStream: true))
            context.writeAndFlush(wrapOutboundOut(end), promise: promise)
        case .input:
            promise?.fail(ChannelError.operationUnsupported)
        case .all:
            context.close(mode: .all, promise: promise)
        }
    }
}

/// Joins two byte-stream channels (an HTTP/2 stream behind `H2DataCodec`, a TCP socket, a
/// socketpair end): bytes read on one are written to the other, half-close is passed on
/// (`inputClosed` on one → `close(mode: .output)` on the other, after the bytes before it), and
/// an abnormal end of one aborts the other (RST on TCP, RST_STREAM on HTTP/2).
///
/// Both channels on one event loop (`matchedPair`): each handler calls its partner directly.
/// On two loops (`crossLoopPair`): every call to the partner is sent to the partner's loop with
/// `execute` (FIFO, so bytes, half-close and abort keep their order), and the reads of one
/// `channelReadComplete` travel as one batch per hop.
///
/// Backpressure: a side reads only while its partner is writable, so nothing is buffered beyond
/// the channels' write-buffer water marks and the HTTP/2 flow-control windows (an unread HTTP/2
/// stream returns no window to its sender). Across loops the partner's writability is read from
/// an atomic flag it keeps, and a change to writable is sent over like any other call; at most
/// one read batch is in flight beyond the partner's high water mark.
// @unchecked Sendable: the mutable state is touched only on the handler's own channel's loop;
// the partner reaches it only through `toPartner`, which hops to that loop when it differs.
final class GlueHandler: ChannelDuplexHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private var partner: GlueHandler?
    /// The partner's loop when it differs from ours (cross-loop pair), nil on one loop.
    private let partnerLoop: (any EventLoop)?
    private var context: ChannelHandlerContext?
    private var pendingRead = false
    /// Our channel's input ended (we told the partner to half-close its output).
    private var inputEnded = false
    /// The partner's input ended and we half-closed our output.
    private var outputEnded = false
    private var lastWrite: EventLoopFuture<Void>?
    /// The channel reported an error (reset, TLS/HTTP/2 failure, RST_STREAM).
    private var failed = false
    /// Reads not yet sent to a partner on another loop (sent on `channelReadComplete`).
    private var batch: [ByteBuffer] = []
    /// Calls from the partner that arrived before this handler was added (a cross-loop partner
    /// can start forwarding first); run in `handlerAdded`, nil from then on.
    private var beforeAdded: [(GlueHandler) -> Void]? = []
    /// Our channel is in a pipeline and writable; read by a partner on another loop.
    private let writable = Atomic<Bool>(false)

    private init(partnerLoop: (any EventLoop)?) {
        self.partnerLoop = partnerLoop
    }

    /// Two handlers that forward to each other; add one to each channel (both on one loop).
    static func matchedPair() -> (GlueHandler, GlueHandler) {
        let first = GlueHandler(partnerLoop: nil)
        let second = GlueHandler(partnerLoop: nil)
        first.partner = second
        second.partner = first
        return (first, second)
    }

    /// Two handlers for channels on different loops: add `first` to a channel on `firstLoop`,
    /// `second` to one on `secondLoop`. Falls back to `matchedPair` when the loops are the same.
    static func crossLoopPair(_ firstLoop: any EventLoop, _ secondLoop: any EventLoop) -> (GlueHandler, GlueHandler) {
        if firstLoop === secondLoop { return matchedPair() }
        let first = GlueHandler(partnerLoop: secondLoop)
        let second = GlueHandler(partnerLoop: firstLoop)
        first.partner = second
        second.partner = first
        return (first, second)
    }

    /// Whether the partner's channel lives on another event loop.
    var crossesLoops: Bool { partnerLoop != nil }

    /// Runs `body` with the partner on the partner's loop: inline on one loop, else by `execute`.
    private func toPartner(_ partner: GlueHandler?? = nil, _ body: @escaping @Sendable (GlueHandler) -> Void) {
        guard let partner = partner ?? self.partner else { return }
        if let partnerLoop {
            partnerLoop.execute { partner.run(body) }
        } else {
            partner.run(body)
        }
    }

    /// Runs a call from the partner now, or once this handler is in a pipeline.
    private func run(_ body: @escaping (GlueHandler) -> Void) {
        if beforeAdded != nil {
            beforeAdded?.append(body)
        } else {
            body(self)
        }
    }

    /// Sends the reads held for a partner on another loop, with a flush.
    private func sendBatch() {
        guard !batch.isEmpty else { return }
        let bytes = batch
        batch = []
        toPartner { partner in
            for buffer in bytes { partner.partnerWrite(buffer) }
            partner.partnerFlush()
        }
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        writable.store(context.channel.isWritable, ordering: .sequentiallyConsistent)
        let early = beforeAdded ?? []
        beforeAdded = nil
        for call in early { call(self) }
        // The partner may have held a read while we were not in a pipeline yet.
        if context.channel.isWritable { toPartner { $0.partnerBecameWritable() } }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        writable.store(false, ordering: .sequentiallyConsistent)
        beforeAdded = nil
        self.context = nil
        self.partner = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if partnerLoop == nil {
            partner?.partnerWrite(unwrapInboundIn(data))
        } else if partner != nil {
            batch.append(unwrapInboundIn(data))
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if partnerLoop == nil {
            partner?.partnerFlush()
        } else {
            sendBatch()
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, event == .inputClosed {
            inputEnded = true
            sendBatch()
            toPartner { $0.partnerCloseOutput() }
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        writable.store(false, ordering: .sequentiallyConsistent)
        sendBatch()
        let partner = self.partner
        self.partner = nil
        if !inputEnded, outputEnded, !failed {
            // A socket whose output we had closed reads EOF: NIO closes it fully without an
            // `inputClosed` event. That is the peer's clean half-close; pass it on.
            inputEnded = true
            toPartner(partner) { $0.partnerCloseOutput() }
        } else if !(inputEnded && outputEnded) {
            // Anything but a clean end of both directions aborts the partner. After a clean
            // end the partner finishes its pending writes and closes by itself.
            toPartner(partner) { $0.partnerAbort() }
        }
        toPartner(partner) { $0.partner = nil }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        failed = true
        context.close(promise: nil)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        let isWritable = context.channel.isWritable
        writable.store(isWritable, ordering: .sequentiallyConsistent)
        if isWritable { toPartner { $0.partnerBecameWritable() } }
        context.fireChannelWritabilityChanged()
    }

    func read(context: ChannelHandlerContext) {
        if let partner, partnerLoop == nil ? partner.partnerWritable : partner.writable.load(ordering: .sequentiallyConsistent) {
            context.read()
        } else {
            pendingRead = true
        }
    }

    private func partnerWrite(_ bytes: ByteBuffer) {
        guard let context else { return }
        let promise = context.eventLoop.makePromise(of: Void.self)
        context.write(wrapOutboundOut(bytes), promise: promise)
        lastWrite = promise.futureResult
    }

    private func partnerFlush() {
        context?.flush()
    }

    private func partnerCloseOutput() {
        guard let context, !outputEnded else { return }
        outputEnded = true
        context.flush()
        // A socket whose input already ended escalates an output close to a full close, which
        // would drop queued writes: close only once the last write is done.
        let close = { context.close(mode: .output, promise: nil) }
        if let lastWrite {
            lastWrite.assumeIsolated().whenComplete { _ in close() }
        } else {
            close()
        }
    }

    private func partnerAbort() {
        guard let context else { return }
        // RST instead of FIN on a socket (SO_LINGER 0); an HTTP/2 stream channel's close is RST_STREAM.
        let channel = context.channel
        if let socket = channel as? any SocketOptionProvider {
            socket.setSoLinger(linger(l_onoff: 1, l_linger: 0)).whenComplete { _ in channel.close(promise: nil) }
        } else {
            context.close(promise: nil)
        }
    }

    private var partnerWritable: Bool {
        context?.channel.isWritable ?? false
    }

    private func partnerBecameWritable() {
        guard pendingRead, let context else { return }
        pendingRead = false
        context.read()
    }
}
