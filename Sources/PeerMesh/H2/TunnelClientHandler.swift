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

    init(request: TunnelRequest, authority: String, peerID: String, established: EventLoopPromise<Void>) {
        self.request = request
        self.authority = authority
        self.peerID = peerID
        self.established = established
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { sendRequest(context) }
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
        guard let established else { return }
        self.established = nil
        established.fail(error)
    }
}
