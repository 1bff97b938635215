import Logging
import NIOCore
import NIOSSL

/// The node's mTLS contexts (TLS 1.2+) and per-connection handlers that pin peers by key through
/// `PeerVerifier` instead of trusting a CA.
///
/// ALPN: `h2` for forward connections; `h2r` for reverse tunnels, where the TLS client (a node
/// behind NAT) becomes the HTTP/2 server. The server offers both.
public final class MeshTLS: Sendable {
    /// ALPN of a reverse-tunnel connection.
    static let reverseALPN = "h2r"

    let serverContext: NIOSSLContext
    let clientContext: NIOSSLContext
    let reverseClientContext: NIOSSLContext
    /// Server context for plain TLS clients (`MeshConfig.tlsPorts`): the node's certificate, no
    /// client certificate asked, no ALPN.
    let plainServerContext: NIOSSLContext
    /// The host names served to plain TLS clients with their own certificates (`MeshConfig.tlsHosts`).
    let tlsHosts: TLSHosts
    let policy: PeerPolicy
    let logger: Logger

    /// - Parameter tlsHosts: plain-TLS host names and their PEM files; a file that cannot be
    ///   read, a certificate not valid for its name or a key that is not its key is an error.
    public init(identity: NodeIdentity, policy: PeerPolicy, tlsHosts: [String: TLSHostConfig] = [:], logger: Logger) throws {
        self.policy = policy
        self.logger = logger
        self.tlsHosts = try TLSHosts(tlsHosts)
        do {
            let chain = try NIOSSLCertificate.fromPEMBytes(Array(identity.chainPEM.utf8)).map { NIOSSLCertificateSource.certificate($0) }
            let key = NIOSSLPrivateKeySource.privateKey(try NIOSSLPrivateKey(bytes: Array(identity.keyPEM.utf8), format: .pem))
            var server = TLSConfiguration.makeServerConfiguration(certificateChain: chain, privateKey: key)
            server.certificateVerification = .noHostnameVerification
            server.applicationProtocols = ["h2", Self.reverseALPN]
            server.minimumTLSVersion = .tlsv12
            var client = TLSConfiguration.makeClientConfiguration()
            client.certificateChain = chain
            client.privateKey = key
            client.certificateVerification = .noHostnameVerification
            client.applicationProtocols = ["h2"]
            client.minimumTLSVersion = .tlsv12
            serverContext = try NIOSSLContext(configuration: server)
            server.certificateVerification = .none
            server.applicationProtocols = []
            plainServerContext = try NIOSSLContext(configuration: server)
            clientContext = try NIOSSLContext(configuration: client)
            client.applicationProtocols = [Self.reverseALPN]
            reverseClientContext = try NIOSSLContext(configuration: client)
        } catch {
            throw MeshError(.tls, "cannot build TLS contexts for node \(identity.node.id): \(error)")
        }
    }

    /// A server handler that accepts only known peers; refusals are logged with the reason.
    func serverHandler(remote: String) -> NIOSSLServerHandler {
        NIOSSLServerHandler(
            context: serverContext,
            customVerificationCallback: { [policy, logger] certs, promise in
                promise.succeed(Self.check(certs, policy: policy, expected: nil, remote: remote, logger: logger))
            })
    }

    /// A client handler for dialling `expected`: the server's key must hash to that ID.
    func clientHandler(expected: String, serverName: String, remote: String, reverse: Bool) throws -> NIOSSLClientHandler {
        try NIOSSLClientHandler(
            context: reverse ? reverseClientContext : clientContext, serverHostname: serverName,
            customVerificationCallback: { [policy, logger] certs, promise in
                promise.succeed(Self.check(certs, policy: policy, expected: expected, remote: remote, logger: logger))
            })
    }

    private static func check(
        _ certs: [NIOSSLCertificate], policy: PeerPolicy, expected: String?, remote: String, logger: Logger
    ) -> NIOSSLVerificationResult {
        guard let leaf = certs.first, let der = try? leaf.toDERBytes() else {
            logger.warning("mTLS handshake refused: peer sent no certificate", metadata: ["peer.addr": "\(remote)"])
            return .failed
        }
        switch PeerVerifier.verify(leafDER: der, policy: policy, expected: expected) {
        case .success:
            return .certificateVerified
        case .failure(let error):
            logger.warning(
                "mTLS handshake refused: \(error.message)",
                metadata: ["peer.addr": "\(remote)", "error.code": "\(error.code.rawValue)"])
            return .failed
        }
    }
}
