import Gate
import Logging
import NIOCore
import NIOHPACK
import NIOHTTP2
import NIOPosix

/// How the server reaches a tunnel's destination.
public enum TunnelDialer: Sendable {
    /// Connect with NIO from this node.
    case direct
    /// Ask an `Upstream` (for example the Gate's route table, or another mesh hop); the caller's
    /// node ID travels in `StreamInfo.callerIdentity`.
    case upstream(any Upstream)
}

/// Serves one inbound tunnel stream: parses the request HEADERS, checks that the (mTLS
/// authenticated) caller may reach the destination, dials it on this stream's event loop and
/// answers `200` before joining the stream and the destination socket with a `GlueHandler` pair.
/// Until then it withholds `read()`, so request DATA stays unread and un-acknowledged.
final class TunnelServerHandler: ChannelDuplexHandler {
    typealias InboundIn = HTTP2Frame.FramePayload
    typealias InboundOut = HTTP2Frame.FramePayload
    typealias OutboundIn = HTTP2Frame.FramePayload
    typealias OutboundOut = HTTP2Frame.FramePayload

    private enum State {
        case waitingForHeaders
        case dialling
        case open
        case refused
    }

    private var state = State.waitingForHeaders
    private var readPending = false
    private let caller: NodeID
    private let policy: PeerPolicy
    private let dialer: TunnelDialer
    private let listener: String
    private var logger: Logger

    init(caller: NodeID, policy: PeerPolicy, dialer: TunnelDialer, listener: String, logger: Logger) {
        self.caller = caller
        self.policy = policy
        self.dialer = dialer
        self.listener = listener
        self.logger = logger
        self.logger[metadataKey: "peer.id"] = "\(caller.id)"
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        switch state {
        case .open:
            context.fireChannelRead(data)
        case .refused, .dialling:
            break
        case .waitingForHeaders:
            guard case .headers(let headers) = frame else { return }
            let fields = headers.headers.map { (name: $0.name, value: $0.value) }
            do {
                let request = try TunnelRequest.parse(fields)
                logger[metadataKey: "route"] = "\(request.kind.rawValue) \(request.destination)"
                if let refusal = policy.refusal(peerID: caller.id, destination: request.destination) {
                    throw refusal
                }
                state = .dialling
                dial(context: context, request: request)
            } catch {
                let meshError = error as? MeshError ?? MeshError(.badRequest, "\(error)", status: 400)
                refuse(context: context, meshError)
            }
        }
    }

    func read(context: ChannelHandlerContext) {
        if case .open = state {
            context.read()
        } else if case .waitingForHeaders = state {
            context.read()
        } else {
            readPending = true
        }
    }

    private func dial(context: ChannelHandlerContext, request: TunnelRequest) {
        let (streamGlue, socketGlue) = GlueHandler.matchedPair()
        let boundGlue = NIOLoopBound(socketGlue, eventLoop: context.eventLoop)
        let loop = context.eventLoop
        let initialize: @Sendable (any Channel) -> EventLoopFuture<Void> = { channel in
            channel.eventLoop.makeCompletedFuture {
                try H2Tuning.configureByteSocket(channel)
                try channel.syncOptions?.setOption(.autoRead, value: false)
                try channel.pipeline.syncOperations.addHandler(boundGlue.value)
            }
        }
        let connected: EventLoopFuture<any Channel>
        switch dialer {
        case .direct:
            connected = ClientBootstrap(group: loop)
                .channelOption(.tcpNoDelay, value: true)
                .channelInitializer(initialize)
                .connect(host: request.destination.host, port: Int(request.destination.port))
        case .upstream(let upstream):
            let info = StreamInfo(
                listener: listener, source: caller.id, destination: request.destination, callerIdentity: caller.id)
            let promise = loop.makePromise(of: (any Channel).self)
            promise.completeWithTask {
                let fd = try await upstream.dial(request.destination, for: info)
                return try await ClientBootstrap(group: loop).channelInitializer(initialize).withConnectedSocket(fd).get()
            }
            connected = promise.futureResult
        }
        connected.assumeIsolated().whenComplete { [self] result in
            switch result {
            case .success(let socket):
                guard context.channel.isActive else {
                    socket.close(promise: nil)
                    return
                }
                do {
                    try context.pipeline.syncOperations.addHandlers([H2DataCodec(), streamGlue])
                } catch {
                    socket.close(promise: nil)
                    refuse(context: context, MeshError(.connect, "cannot join stream to \(request.destination): \(error)", status: 500))
                    return
                }
                state = .open
                let headers = HPACKHeaders([(":status", "200")])
                context.writeAndFlush(wrapOutboundOut(.headers(.init(headers: headers))), promise: nil)
                logger.debug("tunnel open")
                try? socket.syncOptions?.setOption(.autoRead, value: true)
                if readPending {
                    readPending = false
                    context.read()
                }
            case .failure(let error):
                refuse(context: context, MeshError(
                    .connect, "cannot reach \(request.destination): \(error)", status: request.unreachableStatus))
            }
        }
    }

    /// Answers with the error status and an `error` header, ends the stream, then drops it.
    private func refuse(context: ChannelHandlerContext, _ error: MeshError) {
        state = .refused
        logger.warning("tunnel refused: \(error.message)", metadata: ["error.code": "\(error.code.rawValue)"])
        let headers = HPACKHeaders([(":status", String(error.status ?? 500)), ("error", error.headerValue)])
        let written = context.eventLoop.makePromise(of: Void.self)
        context.writeAndFlush(wrapOutboundOut(.headers(.init(headers: headers, endStream: true))), promise: written)
        written.futureResult.assumeIsolated().whenComplete { _ in context.close(promise: nil) }
    }
}
