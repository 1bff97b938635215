import Glibc
import NIOCore
import NIOHTTP2

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

/// Joins two byte-stream channels on the same event loop (an HTTP/2 stream behind
/// `H2DataCodec`, a TCP socket, a socketpair end): bytes read on one are written to the other,
/// half-close is passed on (`inputClosed` on one → `close(mode: .output)` on the other, after the
/// bytes before it), and an abnormal end of one aborts the other (RST on TCP, RST_STREAM on
/// HTTP/2).
///
/// Backpressure: a side reads only while its partner is writable, so nothing is buffered beyond
/// the channels' write-buffer water marks and the HTTP/2 flow-control windows (an unread HTTP/2
/// stream returns no window to its sender).
final class GlueHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private var partner: GlueHandler?
    private var context: ChannelHandlerContext?
    private var pendingRead = false
    /// Our channel's input ended (we told the partner to half-close its output).
    private var inputEnded = false
    /// The partner's input ended and we half-closed our output.
    private var outputEnded = false
    private var lastWrite: EventLoopFuture<Void>?
    /// The channel reported an error (reset, TLS/HTTP/2 failure, RST_STREAM).
    private var failed = false
    /// What the partner passed on before this handler was in a pipeline (a stream's DATA and
    /// END_STREAM that arrived with its response HEADERS, before the captured socket was
    /// adopted): written, closed or aborted in `handlerAdded`. At most one read burst of the
    /// partner, which reads no more until this side is writable.
    private var early: [ByteBuffer] = []
    private var earlyEnd: EarlyEnd?
    private enum EarlyEnd { case closeOutput, abort }

    private init() {}

    /// Two handlers that forward to each other; add one to each channel.
    static func matchedPair() -> (GlueHandler, GlueHandler) {
        let first = GlueHandler()
        let second = GlueHandler()
        first.partner = second
        second.partner = first
        return (first, second)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        if !early.isEmpty {
            for bytes in early { partnerWrite(bytes) }
            early = []
            context.flush()
        }
        switch earlyEnd {
        case .closeOutput: partnerCloseOutput()
        case .abort: partnerAbort()
        case nil: break
        }
        earlyEnd = nil
        // The partner may have held a read while we were not in a pipeline yet.
        if context.channel.isWritable { partner?.partnerBecameWritable() }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        self.partner = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        partner?.partnerWrite(unwrapInboundIn(data))
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        partner?.partnerFlush()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, event == .inputClosed {
            inputEnded = true
            partner?.partnerCloseOutput()
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        let partner = self.partner
        self.partner = nil
        if !inputEnded, outputEnded, !failed {
            // A socket whose output we had closed reads EOF: NIO closes it fully without an
            // `inputClosed` event. That is the peer's clean half-close; pass it on.
            inputEnded = true
            partner?.partnerCloseOutput()
        } else if !(inputEnded && outputEnded) {
            // Anything but a clean end of both directions aborts the partner. After a clean
            // end the partner finishes its pending writes and closes by itself.
            partner?.partnerAbort()
        }
        partner?.partner = nil
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        failed = true
        context.close(promise: nil)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { partner?.partnerBecameWritable() }
        context.fireChannelWritabilityChanged()
    }

    func read(context: ChannelHandlerContext) {
        if let partner, partner.partnerWritable {
            context.read()
        } else {
            pendingRead = true
        }
    }

    private func partnerWrite(_ bytes: ByteBuffer) {
        guard let context else {
            early.append(bytes)
            return
        }
        let promise = context.eventLoop.makePromise(of: Void.self)
        context.write(wrapOutboundOut(bytes), promise: promise)
        lastWrite = promise.futureResult
    }

    private func partnerFlush() {
        context?.flush()
    }

    private func partnerCloseOutput() {
        guard let context else {
            if earlyEnd == nil { earlyEnd = .closeOutput }
            return
        }
        guard !outputEnded else { return }
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
        guard let context else {
            earlyEnd = .abort
            return
        }
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
