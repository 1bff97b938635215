import NIOCore
import NIOSSL
import NIOTLS

/// Waits for the mTLS handshake on a mesh connection, checks that ALPN chose `h2` or `h2r`,
/// identifies the peer from its (already verified) leaf certificate and hands the channel, the
/// peer and the ALPN over to `onEstablished` (which installs HTTP/2). Removes itself afterwards.
final class MeshHandshakeHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny

    private let remote: String
    private var onEstablished: ((any Channel, NodeID, String) throws -> Void)?
    private let onFailure: (MeshError) -> Void

    /// - Parameters:
    ///   - onEstablished: runs on the channel's event loop once TLS is up.
    ///   - onFailure: runs at most once if the connection ends or fails before that.
    init(remote: String, onEstablished: @escaping (any Channel, NodeID, String) throws -> Void, onFailure: @escaping (MeshError) -> Void) {
        self.remote = remote
        self.onEstablished = onEstablished
        self.onFailure = onFailure
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard let tlsEvent = event as? TLSUserEvent, case .handshakeCompleted(let proto) = tlsEvent,
              let established = onEstablished
        else {
            context.fireUserInboundEventTriggered(event)
            return
        }
        onEstablished = nil
        do {
            guard let proto, proto == "h2" || proto == MeshTLS.reverseALPN else {
                throw MeshError(.tls, "peer \(remote) negotiated ALPN \(proto ?? "none"), the mesh needs h2 or h2r")
            }
            guard let cert = try context.pipeline.syncOperations.nioSSL_peerCertificate() else {
                throw MeshError(.tls, "peer \(remote) presented no certificate")
            }
            let peer = try PeerVerifier.identify(leafDER: try cert.toDERBytes())
            try established(context.channel, peer, proto)
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
        } catch {
            fail(context, error)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if onEstablished != nil {
            fail(context, error)
        } else {
            context.fireErrorCaught(error)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        if onEstablished != nil {
            fail(context, MeshError(.tls, "connection with \(remote) closed during the TLS handshake"))
        }
        context.fireChannelInactive()
    }

    private func fail(_ context: ChannelHandlerContext, _ error: any Error) {
        onEstablished = nil
        let meshError = error as? MeshError ?? MeshError(.tls, "TLS handshake with \(remote) failed: \(error)")
        onFailure(meshError)
        context.close(promise: nil)
    }
}
