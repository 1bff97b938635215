import Crypto
import Foundation
import Glibc
import SwiftASN1
import X509

/// How node IDs are turned into host names and SPIFFE IDs.
///
/// The mangled hostname is `ID.namespace.trustdomain` (as the original ugate and Istio's
/// `NAME.NAMESPACE.svc.DOMAIN` style names), the SPIFFE ID `spiffe://trustdomain/ns/namespace/sa/ID`.
public struct MeshNaming: Codable, Hashable, Sendable {
    /// Defaults to `default`.
    public var namespace: String
    /// Defaults to `cluster.local`.
    public var trustDomain: String

    public init(namespace: String = "default", trustDomain: String = "cluster.local") {
        self.namespace = namespace
        self.trustDomain = trustDomain
    }

    /// `ID.namespace.trustdomain`.
    public func hostname(for id: String) -> String { "\(id).\(namespace).\(trustDomain)" }

    /// `spiffe://trustdomain/ns/namespace/sa/ID`.
    public func spiffeID(for id: String) -> String { "spiffe://\(trustDomain)/ns/\(namespace)/sa/\(id)" }

    /// The node ID a destination host names: a bare 52-character ID or `ID.namespace.trustdomain`
    /// (any case), else nil.
    public func nodeID(inHost host: String) -> String? {
        let upper = host.uppercased()
        let suffix = ".\(namespace).\(trustDomain)".uppercased()
        let candidate = upper.hasSuffix(suffix) ? String(upper.dropLast(suffix.count)) : upper
        guard candidate.count == 52, candidate.utf8.allSatisfy(PeerPolicy.isBase32) else { return nil }
        return candidate
    }
}

/// A node's private key and the certificate chain it presents in mTLS.
///
/// On disk (directory chosen by the caller, created with mode 0700):
/// - `key.pem`: the P-256 private key, PKCS#8 PEM, created with mode 0600 on first run and
///   reused afterwards;
/// - `cert.pem`: the self-signed certificate for that key, created on first run (and again when
///   it is missing or does not match the key), so its fingerprint stays stable across restarts;
/// - `cert-chain.pem` (optional, Istio file name): a leaf + intermediates issued by a mesh CA for
///   the same key. When present it is presented instead of `cert.pem`. Peers still pin the key.
public struct NodeIdentity: Sendable {
    public let privateKey: P256.Signing.PrivateKey
    public let node: NodeID
    public let naming: MeshNaming
    /// Leaf first.
    public let certificateChain: [Certificate]

    /// File names inside the identity directory.
    public static let keyFile = "key.pem"
    public static let certFile = "cert.pem"
    public static let chainFile = "cert-chain.pem"

    public init(privateKey: P256.Signing.PrivateKey, naming: MeshNaming, certificateChain: [Certificate]) throws {
        let node = NodeID(privateKey.publicKey)
        guard let leaf = certificateChain.first else {
            throw MeshError(.certificate, "empty certificate chain for node \(node.id)")
        }
        guard P256.Signing.PublicKey(leaf.publicKey)?.x963Representation == privateKey.publicKey.x963Representation else {
            throw MeshError(.certificate, "the leaf certificate's public key is not the node key \(node.id)")
        }
        self.privateKey = privateKey
        self.node = node
        self.naming = naming
        self.certificateChain = certificateChain
    }

    /// A fresh in-memory identity with a self-signed certificate (nothing is written).
    public static func generate(naming: MeshNaming = MeshNaming()) throws -> NodeIdentity {
        let key = P256.Signing.PrivateKey()
        return try NodeIdentity(
            privateKey: key, naming: naming,
            certificateChain: [selfSignedCertificate(key: key, claimedID: NodeID(key.publicKey).id, naming: naming)])
    }

    /// Loads the identity from `directory`, creating the key and certificate on first run.
    public static func loadOrCreate(directory: String, naming: MeshNaming = MeshNaming()) throws -> NodeIdentity {
        let fm = FileManager.default
        do {
            try fm.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        } catch {
            throw MeshError(.identityFile, "cannot create identity directory \(directory): \(error)")
        }
        let keyPath = directory + "/" + keyFile
        let key: P256.Signing.PrivateKey
        if fm.fileExists(atPath: keyPath) {
            let pem = try readText(keyPath)
            do {
                key = try P256.Signing.PrivateKey(pemRepresentation: pem)
            } catch {
                throw MeshError(.identityFile, "\(keyPath) is not a P-256 private key in PEM: \(error)")
            }
        } else {
            key = P256.Signing.PrivateKey()
            try writePrivate(keyPath, key.pemRepresentation)
        }

        let chainPath = directory + "/" + chainFile
        if fm.fileExists(atPath: chainPath) {
            let pems: [PEMDocument]
            do {
                pems = try PEMDocument.parseMultiple(pemString: try readText(chainPath))
            } catch {
                throw MeshError(.identityFile, "\(chainPath) is not a PEM certificate chain: \(error)")
            }
            let chain = try pems.map { doc in
                do { return try Certificate(pemDocument: doc) } catch {
                    throw MeshError(.certificate, "\(chainPath): cannot parse certificate: \(error)")
                }
            }
            return try NodeIdentity(privateKey: key, naming: naming, certificateChain: chain)
        }

        let certPath = directory + "/" + certFile
        if fm.fileExists(atPath: certPath),
           let cert = try? Certificate(pemEncoded: readText(certPath)),
           let identity = try? NodeIdentity(privateKey: key, naming: naming, certificateChain: [cert]),
           identity.matchesNaming {
            return identity
        }
        let cert = try selfSignedCertificate(key: key, claimedID: NodeID(key.publicKey).id, naming: naming)
        do {
            try cert.serializeAsPEM().pemString.write(toFile: certPath, atomically: true, encoding: .utf8)
        } catch {
            throw MeshError(.identityFile, "cannot write \(certPath): \(error)")
        }
        return try NodeIdentity(privateKey: key, naming: naming, certificateChain: [cert])
    }

    /// A self-signed leaf certificate for `key` whose SANs claim `claimedID` (normally the key's
    /// own ID; tests pass another to impersonate a node).
    static func selfSignedCertificate(key: P256.Signing.PrivateKey, claimedID: String, naming: MeshNaming) throws -> Certificate {
        do {
            let certKey = Certificate.PrivateKey(key)
            // CN is the bare ID: the mangled hostname exceeds the 64-character CN limit (RFC 5280 ub-common-name).
            let name = try DistinguishedName { CommonName(claimedID) }
            let now = Date()
            return try Certificate(
                version: .v3,
                serialNumber: Certificate.SerialNumber(),
                publicKey: certKey.publicKey,
                notValidBefore: now - 3600,
                notValidAfter: now + 10 * 365 * 86_400,
                issuer: name,
                subject: name,
                signatureAlgorithm: .ecdsaWithSHA256,
                extensions: try Certificate.Extensions {
                    Critical(BasicConstraints.notCertificateAuthority)
                    Critical(KeyUsage(digitalSignature: true))
                    try ExtendedKeyUsage([.serverAuth, .clientAuth])
                    SubjectAlternativeNames([
                        .dnsName(naming.hostname(for: claimedID)),
                        .uniformResourceIdentifier(naming.spiffeID(for: claimedID)),
                    ])
                },
                issuerPrivateKey: certKey)
        } catch {
            throw MeshError(.certificate, "cannot build self-signed certificate for \(claimedID): \(error)")
        }
    }

    /// The leaf certificate.
    public var leaf: Certificate { certificateChain[0] }

    /// `ID.namespace.trustdomain`.
    public var mangledHostname: String { naming.hostname(for: node.id) }

    /// `spiffe://trustdomain/ns/namespace/sa/ID`.
    public var spiffeID: String { naming.spiffeID(for: node.id) }

    /// The 65-byte uncompressed public key, base64url without padding.
    public var publicKeyBase64URL: String { Self.base64URL(node.publicKey) }

    /// DER bytes of the leaf certificate.
    public var leafDER: [UInt8] {
        var serializer = DER.Serializer()
        // A certificate we built or parsed always serializes.
        try! serializer.serialize(leaf)
        return serializer.serializedBytes
    }

    /// SHA-256 of the leaf certificate's DER, upper-case hex pairs joined by `:` (the SDP
    /// `a=fingerprint:sha-256` format).
    public var fingerprint: String {
        SHA256.hash(data: leafDER).map { String(format: "%02X", $0) }.joined(separator: ":")
    }

    /// The private key as PKCS#8 PEM.
    public var keyPEM: String { privateKey.pemRepresentation }

    /// The certificate chain as concatenated PEM, leaf first.
    public var chainPEM: String {
        // Certificates we hold always serialize.
        certificateChain.map { try! $0.serializeAsPEM().pemString }.joined(separator: "\n")
    }

    /// Whether the self-signed leaf names this node under the current naming.
    private var matchesNaming: Bool {
        guard let sans = try? leaf.extensions.subjectAlternativeNames else { return false }
        return sans.contains(.dnsName(mangledHostname))
    }

    static func base64URL(_ bytes: [UInt8]) -> String {
        Data(bytes).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-")
            .replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    private static func readText(_ path: String) throws -> String {
        do { return try String(contentsOfFile: path, encoding: .utf8) } catch {
            throw MeshError(.identityFile, "cannot read \(path): \(error)")
        }
    }

    /// Creates `path` with mode 0600 (never wider, even briefly) and writes `text`.
    private static func writePrivate(_ path: String, _ text: String) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            throw MeshError(.identityFile, "cannot create \(path): \(String(cString: strerror(errno)))")
        }
        defer { close(fd) }
        let bytes = Array(text.utf8)
        var written = 0
        while written < bytes.count {
            let n = bytes[written...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw MeshError(.identityFile, "cannot write \(path): \(String(cString: strerror(errno)))")
            }
            written += n
        }
        guard fchmod(fd, 0o600) == 0 else {
            throw MeshError(.identityFile, "cannot chmod 0600 \(path): \(String(cString: strerror(errno)))")
        }
    }
}
