import Foundation
import Glibc
import NIOCore
import NIOHTTP2

/// Closes an HTTP/2 connection that has had no open stream for `timeout`: sends GOAWAY
/// (NO_ERROR, the highest stream ID the client opened) and closes, as nginx's
/// `http2_idle_timeout` does. Counts streams through the `NIOHTTP2StreamDelegate` the
/// `NIOHTTP2Handler` calls (on the connection's loop); the timer runs from the connection's
/// start and from each moment the last open stream closes. Add it after the `NIOHTTP2Handler`
/// and pass its `http2StreamDelegate` to that handler.
final class HTTP2IdleHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTP2Frame
    typealias InboundOut = HTTP2Frame
    typealias OutboundOut = HTTP2Frame

    let timeout: TimeAmount
    let loop: any EventLoop
    private var open = 0
    private var lastStreamID = HTTP2StreamID.rootStream
    private var timer: Scheduled<Void>?
    private var context: ChannelHandlerContext?

    init(seconds: Double, loop: any EventLoop) {
        timeout = .milliseconds(Int64(max(seconds, 0.001) * 1000))
        self.loop = loop
    }

    /// The stream delegate for the connection's `NIOHTTP2Handler`.
    var http2StreamDelegate: Delegate { Delegate(handler: NIOLoopBound(self, eventLoop: loop)) }

    struct Delegate: NIOHTTP2StreamDelegate {
        let handler: NIOLoopBound<HTTP2IdleHandler>

        func streamCreated(_ id: HTTP2StreamID, channel: any Channel) {
            let handler = handler.value
            handler.open += 1
            handler.lastStreamID = max(handler.lastStreamID, id)
            handler.timer?.cancel()
            handler.timer = nil
        }

        func streamClosed(_ id: HTTP2StreamID, channel: any Channel) {
            let handler = handler.value
            handler.open -= 1
            if handler.open == 0 { handler.arm() }
        }
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        if context.channel.isActive { arm() }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
        self.context = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        arm()
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        timer?.cancel()
        context.fireChannelInactive()
    }

    private func arm() {
        guard let context else { return }
        timer?.cancel()
        timer = context.eventLoop.assumeIsolated().scheduleTask(in: timeout) { [self] in
            guard let context = self.context, open == 0 else { return }
            let goAway = HTTP2Frame(streamID: .rootStream, payload: .goAway(lastStreamID: lastStreamID, errorCode: .noError, opaqueData: nil))
            context.writeAndFlush(wrapOutboundOut(goAway)).assumeIsolated().whenComplete { _ in context.close(promise: nil) }
        }
    }
}

extension BackendPool {
    /// Dials `destination` through `upstream` (a mesh peer) with a connect timeout: after
    /// `timeout` seconds the returned future fails with a `.timeout` `GateError` (the exchange
    /// then tries the rule's next backend, 503 when none is left) and a socket the upstream
    /// still delivers later is closed. Completes on `loop`.
    static func dial(
        _ upstream: any Upstream, _ destination: Destination, for info: StreamInfo, on loop: any EventLoop, timeout: Double
    ) -> EventLoopFuture<Int32> {
        let result = loop.makePromise(of: Int32.self)
        let settled = NIOLoopBoundBox(false, eventLoop: loop)
        let dialled = loop.makePromise(of: Int32.self)
        dialled.completeWithTask { try await upstream.dial(destination, for: info) }
        let timer = loop.scheduleTask(in: .milliseconds(Int64(max(timeout, 0.001) * 1000))) {
            guard !settled.value else { return }
            settled.value = true
            result.fail(GateError(.timeout, "connect to \(destination) through upstream \(upstream.name) timed out after \(timeout) s"))
        }
        dialled.futureResult.whenComplete { outcome in
            guard !settled.value else {
                if case .success(let fd) = outcome { Glibc.close(fd) }
                return
            }
            settled.value = true
            timer.cancel()
            result.completeWith(outcome)
        }
        return result.futureResult
    }
}
