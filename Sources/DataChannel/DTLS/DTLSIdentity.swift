internal import COpenSSL
import Crypto

/// A DTLS certificate and its private key: an ECDSA P-256 self-signed certificate, as WebRTC
/// uses (RFC 8827 §6.5). Peers authenticate it by the fingerprint carried in SDP.
///
/// Immutable after creation and shareable between sessions.
public final class DTLSIdentity: @unchecked Sendable {  // immutable after init; OpenSSL X509/EVP_PKEY are safe for concurrent read-only use
    let certificate: OpaquePointer  // X509*
    let privateKey: OpaquePointer  // EVP_PKEY*
    /// The DER encoding of the certificate.
    public let certificateDER: [UInt8]
    /// The SHA-256 fingerprint to put in SDP `a=fingerprint`.
    public let fingerprint: CertificateFingerprint

    /// Generates a fresh P-256 key and a self-signed certificate.
    public convenience init(commonName: String = "ugate", validityDays: Int = 30) throws {
        try self.init(privateKey: P256.Signing.PrivateKey(), commonName: commonName, validityDays: validityDays)
    }

    /// Creates a self-signed certificate for an existing P-256 key (for example the node's identity key).
    public init(privateKey key: P256.Signing.PrivateKey, commonName: String = "ugate", validityDays: Int = 30) throws {
        ERR_clear_error()
        let der = Array(key.derRepresentation)
        var cursor: UnsafePointer<UInt8>? = nil
        let pkey: OpaquePointer? = der.withUnsafeBufferPointer { buffer in
            cursor = buffer.baseAddress
            return d2i_AutoPrivateKey(nil, &cursor, buffer.count)
        }
        guard let pkey else { throw OpenSSLErrorStack.error("d2i_AutoPrivateKey") }
        guard let x509 = X509_new() else {
            EVP_PKEY_free(pkey)
            throw OpenSSLErrorStack.error("X509_new")
        }
        do {
            try Self.fill(x509, key: pkey, commonName: commonName, validityDays: validityDays)
        } catch {
            X509_free(x509)
            EVP_PKEY_free(pkey)
            throw error
        }
        let encoded = derOf(x509)
        guard !encoded.isEmpty else {
            X509_free(x509)
            EVP_PKEY_free(pkey)
            throw OpenSSLErrorStack.error("i2d_X509")
        }
        self.certificate = x509
        self.privateKey = pkey
        self.certificateDER = encoded
        self.fingerprint = CertificateFingerprint(algorithm: "sha-256", certificateDER: encoded)!
    }

    private static func fill(_ x509: OpaquePointer, key: OpaquePointer, commonName: String, validityDays: Int) throws {
        guard X509_set_version(x509, 2) == 1 else { throw OpenSSLErrorStack.error("X509_set_version") }
        var serial = [UInt8](repeating: 0, count: 8)
        guard RAND_bytes(&serial, Int32(serial.count)) == 1 else { throw OpenSSLErrorStack.error("RAND_bytes") }
        serial[0] &= 0x7f
        let serialNumber = serial.reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        guard ASN1_INTEGER_set_uint64(X509_get_serialNumber(x509), serialNumber) == 1 else {
            throw OpenSSLErrorStack.error("ASN1_INTEGER_set_uint64")
        }
        // Back-date a day so peers with skewed clocks accept it.
        guard X509_gmtime_adj(X509_getm_notBefore(x509), -86_400) != nil,
              X509_gmtime_adj(X509_getm_notAfter(x509), 86_400 * validityDays) != nil
        else { throw OpenSSLErrorStack.error("X509_gmtime_adj") }
        guard let name = X509_get_subject_name(x509),
              X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, Array(commonName.utf8), Int32(commonName.utf8.count), -1, 0) == 1,
              X509_set_issuer_name(x509, name) == 1
        else { throw OpenSSLErrorStack.error("X509_NAME_add_entry_by_txt") }
        guard X509_set_pubkey(x509, key) == 1 else { throw OpenSSLErrorStack.error("X509_set_pubkey") }
        guard X509_sign(x509, key, EVP_sha256()) > 0 else { throw OpenSSLErrorStack.error("X509_sign") }
    }

    deinit {
        X509_free(certificate)
        EVP_PKEY_free(privateKey)
    }
}
