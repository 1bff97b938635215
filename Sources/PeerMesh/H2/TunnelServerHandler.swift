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
/// Until then it withholds `read()`, so request DATA stays unread and un-acknowledged; frames that
/// arrived in the same read as the HEADERS (at most one flow-control window) are held and passed
/// on in order once the tunnel is open.
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
    private var early: [HTTP2Frame.FramePayload] = []
    private let caller: NodeID
    private let router: TunnelRouter
    private let listener: String
    private var logger: Logger

    init(caller: NodeID, router: TunnelRouter, listener: String) {
        self.caller = caller
        self.router = router
        self.listener = listener
        self.logger = router.logger
        self.logger[metadataKey: "peer.id"] = "\(caller.id)"
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        switch state {
        case .open:
            context.fireChannelRead(data)
        case .dialling:
            early.append(frame)
        case .refused:
            break
        case .waitingForHeaders:
            guard case .headers(let headers) = frame else { return }
            if headers.endStream {
                // No request body at all: the client half-closed with the request.
                early.append(.data(.init(data: .byteBuffer(context.channel.allocator.buffer(capacity: 0)), endStream: true)))
            }
            let fields = headers.headers.map { (name: $0.name, value: $0.value) }
            do {
                let request = try TunnelRequest.parse(fields)
                logger[metadataKey: "route"] = "\(request.kind.rawValue) \(request.destination)"
                if let from = request.from, from != caller.id { logger[metadataKey: "from"] = "\(from)" }
                let next = router.next(for: request.destination)
                if let refusal = router.policy.refusal(peerID: caller.id, destination: request.destination) {
                    // A destination naming this node may also be allowed as 127.0.0.1:port.
                    guard case .local(let local) = next, router.policy.refusal(peerID: caller.id, destination: local) == nil else {
                        throw refusal
                    }
                }
                state = .dialling
                dial(context: context, request: request, next: next)
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

    private func dial(context: ChannelHandlerContext, request: TunnelRequest, next: TunnelRouter.Next) {
        let (streamGlue, socketGlue) = GlueHandler.matchedPair()
        let boundGlue = NIOLoopBound(socketGlue, eventLoop: context.eventLoop)
        let loop = context.eventLoop
        let tuning = router.tuning
        let initialize: @Sendable (any Channel) -> EventLoopFuture<Void> = { channel in
            channel.eventLoop.makeCompletedFuture {
                try tuning.configureByteSocket(channel)
                try channel.syncOptions?.setOption(.autoRead, value: false)
                try channel.pipeline.syncOperations.addHandler(boundGlue.value)
            }
        }
        func direct(_ destination: Destination) -> EventLoopFuture<any Channel> {
            ClientBootstrap(group: loop)
                .channelOption(.socketOption(.tcp_nodelay), value: 1)
                .channelInitializer(initialize)
                .connect(host: destination.host, port: Int(destination.port))
        }
        // The origin travels on as `from:` when the upstream is another mesh hop.
        let info = StreamInfo(
            listener: listener, source: "mesh:\(caller.id)", destination: request.destination,
            callerIdentity: request.from ?? caller.id)
        func through(_ upstream: any Upstream) -> EventLoopFuture<any Channel> {
            let promise = loop.makePromise(of: (any Channel).self)
            promise.completeWithTask {
                let fd = try await upstream.dial(request.destination, for: info)
                return try await ClientBootstrap(group: loop).channelInitializer(initialize).withConnectedSocket(fd).get()
            }
            return promise.futureResult
        }
        let connected: EventLoopFuture<any Channel>
        switch next {
        case .local(let destination):
            connected = direct(destination)
        case .peer(let peer):
            // One more mesh hop: joined stream to stream when the connection to the peer is on
            // this loop (a reverse tunnel accepted here usually is), else through a socketpair.
            let upstream = router.upstream(to: peer, kind: request.kind)
            if let joined = upstream.streamOnLoop(request.destination, info: info, loop: loop, glue: boundGlue) {
                logger.debug("tunnel joined to the next hop's stream on this loop", metadata: ["next.id": "\(peer.id)"])
                connected = joined
            } else {
                connected = through(upstream)
            }
        case .dialer:
            switch router.dialer {
            case .direct: connected = direct(request.destination)
            case .upstream(let upstream): connected = through(upstream)
            }
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
                let held = early
                early = []
                for frame in held { context.fireChannelRead(wrapInboundOut(frame)) }
                context.fireChannelReadComplete()
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
