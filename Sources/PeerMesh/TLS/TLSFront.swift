import Gate
import Logging
import NIOCore
import NIOPosix
import NIOSSL

/// The first handler on a connection this node terminates TLS on (accepted on its mesh port,
/// or spliced into one of its relay registrations by a gateway): holds the bytes until the
/// ClientHello parses (the Gate's `TLSClientHello`, bounded by its 64 KiB limit), asks `decide`
/// with the SNI, installs that termination after itself, passes the held bytes on and removes
/// itself. A ClientHello that cannot parse goes to mesh termination, which refuses it.
final class TLSFrontHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    /// How to terminate: mesh mTLS + HTTP/2, or plain TLS carried to a local port.
    enum Termination: Equatable {
        case mesh
        /// `outbound_.PORT_._.<this node>`: the node's certificate.
        case plain(port: Int)
        /// A name in `MeshConfig.tlsHosts` (lower case): that name's certificate.
        case host(String, port: Int)
    }

    private var held: ByteBuffer?
    private let decide: (String?) -> Termination
    private let install: (any Channel, Termination) throws -> Void

    init(decide: @escaping (String?) -> Termination, install: @escaping (any Channel, Termination) throws -> Void) {
        self.decide = decide
        self.install = install
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        if held == nil { held = bytes } else { held!.writeBuffer(&bytes) }
        let termination: Termination
        switch TLSClientHello.parse(held!.readableBytesView) {
        case .needMore: return
        case .done(let hello, _): termination = decide(hello.serverName)
        case .invalid: termination = .mesh
        }
        let bytesSoFar = held!
        held = nil
        do {
            try install(context.channel, termination)
        } catch {
            context.close(promise: nil)
            return
        }
        context.fireChannelRead(wrapInboundOut(bytesSoFar))
        context.fireChannelReadComplete()
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        // Held bytes get their read-complete when they are passed on.
        if held == nil { context.fireChannelReadComplete() }
    }
}

extension MeshNode {
    /// Which termination an SNI asks for on this node: a name in `config.tlsHosts` is plain TLS
    /// with that name's certificate to its port; `outbound_.PORT_._.<this node>` with PORT in
    /// `config.tlsPorts` is plain TLS to `127.0.0.1:PORT`; everything else is mesh mTLS.
    func termination(serverName: String?) -> TLSFrontHandler.Termination {
        if let name = serverName, let host = tls.tlsHosts.host(name) { return .host(name.lowercased(), port: host.port) }
        guard let name = serverName, let outbound = SNIRouter.istioOutbound(name),
              identity.naming.nodeID(inHost: outbound.host) == identity.node.id, config.tlsPorts.contains(outbound.port)
        else { return .mesh }
        return .plain(port: outbound.port)
    }

    /// Terminates plain TLS (no client certificate, no ALPN) on `channel` with the node's
    /// certificate (or `host`'s from `config.tlsHosts`) and joins its plaintext with a new TCP connection to `127.0.0.1:port` on the
    /// same event loop (`GlueHandler`: backpressure both ways; close_notify or EOF on one side
    /// becomes a half-close of the other, an abort aborts). The TLS side is not read beyond
    /// the ClientHello until the local connection is up; if it fails, the client is dropped.
    func terminatePlainTLS(on channel: any Channel, port: Int, remote: String, host: String? = nil) throws {
        let sync = channel.pipeline.syncOperations
        let (tlsGlue, socketGlue) = GlueHandler.matchedPair()
        try channel.syncOptions?.setOption(.allowRemoteHalfClosure, value: true)
        let context = host.flatMap { tls.tlsHosts.host($0)?.context } ?? tls.plainServerContext
        try sync.addHandler(NIOSSLServerHandler(context: context))
        try sync.addHandler(tlsGlue)
        let tuning = self.tuning
        let logger = self.logger
        let boundGlue = NIOLoopBound(socketGlue, eventLoop: channel.eventLoop)
        ClientBootstrap(group: channel.eventLoop)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .connectTimeout(.seconds(10))
            .channelInitializer { local in
                local.eventLoop.makeCompletedFuture {
                    try tuning.configureByteSocket(local)
                    try local.pipeline.syncOperations.addHandler(boundGlue.value)
                }
            }
            .connect(host: "127.0.0.1", port: port)
            .whenComplete { result in
                switch result {
                case .success:
                    logger.debug("plain TLS terminated", metadata: ["peer.addr": "\(remote)", "port": "\(port)", "sni": "\(host ?? "-")"])
                case .failure(let error):
                    logger.warning(
                        "plain TLS client dropped: cannot connect 127.0.0.1:\(port): \(error)", metadata: ["peer.addr": "\(remote)"])
                    channel.close(promise: nil)
                }
            }
    }
}
