import NIOCore
import NIOHPACK
import NIOHTTP2

/// Opens one outbound tunnel stream: sends the request HEADERS when the stream becomes active
/// and completes `established` on a `200` response. Any other status fails it with the status
/// and the server's `error` header; so does the stream ending before a response.
final class TunnelClientHandler: ChannelInboundHandler {
    typealias InboundIn = HTTP2Frame.FramePayload
    typealias InboundOut = HTTP2Frame.FramePayload
    typealias OutboundOut = HTTP2Frame.FramePayload

    private let request: TunnelRequest
    private let authority: String
    private let peerID: String
    private var established: EventLoopPromise<Void>?
    private var sent = false
    private let openTimeout: TimeAmount
    private var timer: Scheduled<Void>?

    /// - Parameter openTimeout: the peer must answer within this, else the stream is reset
    ///   (RST_STREAM) and `established` fails with `.timeout`; other streams are unaffected.
    init(request: TunnelRequest, authority: String, peerID: String, openTimeout: TimeAmount, established: EventLoopPromise<Void>) {
        self.request = request
        self.authority = authority
        self.peerID = peerID
        self.openTimeout = openTimeout
        self.established = established
    }

    func handlerAdded(context: ChannelHandlerContext) {
        timer = context.eventLoop.assumeIsolated().scheduleTask(in: openTimeout) { [self] in
            guard established != nil else { return }
            failIfWaiting(MeshError(
                .timeout,
                "node \(peerID) did not answer the \(request.kind.rawValue) tunnel request to \(request.destination) within \(Double(openTimeout.nanoseconds) / 1e9) s",
                status: 504))
            context.close(promise: nil)
        }
        if context.channel.isActive { sendRequest(context) }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
    }

    func channelActive(context: ChannelHandlerContext) {
        sendRequest(context)
        context.fireChannelActive()
    }

    private func sendRequest(_ context: ChannelHandlerContext) {
        guard !sent else { return }
        sent = true
        let headers = HPACKHeaders(request.headerFields(authority: authority))
        context.writeAndFlush(wrapOutboundOut(.headers(.init(headers: headers))), promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard let established else {
            context.fireChannelRead(data)
            return
        }
        guard case .headers(let headers) = unwrapInboundIn(data) else { return }
        let status = headers.headers.first(name: ":status") ?? ""
        self.established = nil
        timer?.cancel()
        if status == "200" {
            established.succeed(())
            if headers.endStream { context.fireChannelRead(data) }
        } else {
            let reason = headers.headers.first(name: "error") ?? "no error header"
            established.fail(MeshError(
                .remoteRefused, "node \(peerID) refused \(request.kind.rawValue) tunnel to \(request.destination): \(reason)",
                status: Int(status)))
            context.close(promise: nil)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        failIfWaiting(MeshError(.connect, "tunnel stream to \(request.destination) via \(peerID) failed: \(error)"))
        context.fireErrorCaught(error)
    }

    func channelInactive(context: ChannelHandlerContext) {
        failIfWaiting(MeshError(.connect, "tunnel stream to \(request.destination) via \(peerID) closed before a response"))
        context.fireChannelInactive()
    }

    private func failIfWaiting(_ error: MeshError) {
        timer?.cancel()
        guard let established else { return }
        self.established = nil
        established.fail(error)
    }
}
