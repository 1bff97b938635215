import Crypto
import X509

/// Identifies a TLS peer by the key in its leaf certificate, not by a CA: the pinned node ID is
/// SHA-256 of the leaf's P-256 public key (see `NodeID`). Pure: certificate bytes in, a verdict out.
///
/// The TLS handshake itself proves the peer holds the private key of its leaf certificate
/// (CertificateVerify), so a known ID computed from that key authenticates the peer.
public enum PeerVerifier {
    /// The node ID that `leafDER`'s key hashes to, after checking that every ID the certificate
    /// claims in its SANs (first DNS label of `ID.ns.domain`, last path segment of a SPIFFE URI)
    /// is that same ID.
    public static func identify(leafDER: [UInt8]) throws -> NodeID {
        let cert: Certificate
        do { cert = try Certificate(derEncoded: leafDER) } catch {
            throw MeshError(.certificate, "peer certificate does not parse: \(error)")
        }
        guard let key = P256.Signing.PublicKey(cert.publicKey) else {
            throw MeshError(.certificate, "peer certificate key is not P-256 (\(cert.publicKey))")
        }
        let node = NodeID(key)
        for claimed in claimedIDs(cert) where claimed != node.id {
            throw MeshError(.wrongKey, "peer certificate claims ID \(claimed) but its key hashes to \(node.id)")
        }
        return node
    }

    /// Verifies an incoming or outgoing peer: its key must hash to a known peer ID, and, when we
    /// dialled a specific node, to that node's ID.
    public static func verify(leafDER: [UInt8], policy: PeerPolicy, expected: String?) -> Result<NodeID, MeshError> {
        do {
            let node = try identify(leafDER: leafDER)
            if let expected, node.id != expected {
                return .failure(MeshError(.unexpectedPeer, "dialled node \(expected) but the peer's key hashes to \(node.id)"))
            }
            guard policy.peer(node.id) != nil else {
                return .failure(MeshError(.unknownPeer, "node \(node.id) is not a known peer"))
            }
            return .success(node)
        } catch let error as MeshError {
            return .failure(error)
        } catch {
            return .failure(MeshError(.certificate, "\(error)"))
        }
    }

    /// Node IDs a certificate claims in its subject alternative names.
    static func claimedIDs(_ cert: Certificate) -> [String] {
        guard let sans = try? cert.extensions.subjectAlternativeNames else { return [] }
        var ids: [String] = []
        for san in sans {
            switch san {
            case .dnsName(let name):
                if let label = name.split(separator: ".").first { ids.append(String(label).uppercased()) }
            case .uniformResourceIdentifier(let uri) where uri.hasPrefix("spiffe://"):
                if let last = uri.split(separator: "/").last { ids.append(String(last).uppercased()) }
            default:
                continue
            }
        }
        return ids.filter { $0.count == 52 && $0.utf8.allSatisfy(PeerPolicy.isBase32) }
    }
}
