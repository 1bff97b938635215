import Crypto

/// A certificate fingerprint as carried by SDP `a=fingerprint` (RFC 8122 §5),
/// e.g. `sha-256 AB:CD:…`.
public struct CertificateFingerprint: Hashable, Sendable, CustomStringConvertible {
    /// Lower-case hash function name from the IANA "Hash Function Textual Names" registry.
    public let algorithm: String
    /// The digest bytes.
    public let bytes: [UInt8]

    /// Hash functions this implementation can verify, most preferred first.
    public static let supportedAlgorithms = ["sha-256", "sha-384", "sha-512", "sha-1"]

    /// Creates a fingerprint from its parts.
    public init(algorithm: String, bytes: [UInt8]) {
        self.algorithm = algorithm.lowercased()
        self.bytes = bytes
    }

    /// Parses the SDP attribute value `sha-256 AB:CD:…` (upper or lower case hex).
    /// Returns nil when it is not a hash name followed by colon-separated hex bytes.
    public init?(sdpValue: some StringProtocol) {
        let parts = sdpValue.split(separator: " ", omittingEmptySubsequences: true)
        guard parts.count == 2, !parts[0].isEmpty else { return nil }
        var bytes: [UInt8] = []
        for pair in parts[1].split(separator: ":", omittingEmptySubsequences: false) {
            guard pair.count == 2, let byte = UInt8(pair, radix: 16) else { return nil }
            bytes.append(byte)
        }
        self.init(algorithm: String(parts[0]), bytes: bytes)
    }

    /// Computes the fingerprint of a DER-encoded certificate with `algorithm`;
    /// nil for an unsupported algorithm.
    public init?(algorithm: String, certificateDER der: [UInt8]) {
        let name = algorithm.lowercased()
        let digest: [UInt8]
        switch name {
        case "sha-256": digest = Array(SHA256.hash(data: der))
        case "sha-384": digest = Array(SHA384.hash(data: der))
        case "sha-512": digest = Array(SHA512.hash(data: der))
        case "sha-1": digest = Array(Insecure.SHA1.hash(data: der))
        default: return nil
        }
        self.init(algorithm: name, bytes: digest)
    }

    /// The SDP attribute value: `sha-256 AB:CD:…` with upper-case hex.
    public var sdpValue: String { "\(algorithm) \(hexBytes)" }

    /// Upper-case colon-separated hex digest.
    public var hexBytes: String {
        bytes.map { byte in
            let hex = String(byte, radix: 16, uppercase: true)
            return hex.count == 1 ? "0" + hex : hex
        }.joined(separator: ":")
    }

    public var description: String { sdpValue }

    /// Checks a peer certificate against the fingerprints from its SDP (RFC 8122 §5): the set
    /// with our most preferred supported hash function is selected and the certificate must
    /// match one of them. Returns nil when it matches, else an error naming both sides.
    static func verify(certificateDER der: [UInt8], against expected: [CertificateFingerprint]) -> DataChannelError? {
        guard let algorithm = supportedAlgorithms.first(where: { name in expected.contains { $0.algorithm == name } }),
              let actual = CertificateFingerprint(algorithm: algorithm, certificateDER: der)
        else {
            let offered = expected.map(\.algorithm).joined(separator: ", ")
            return DataChannelError(.fingerprintMismatch, "no supported fingerprint algorithm in the remote description (offered: \(offered.isEmpty ? "none" : offered))")
        }
        let candidates = expected.filter { $0.algorithm == algorithm }
        if candidates.contains(actual) { return nil }
        return DataChannelError(
            .fingerprintMismatch,
            "peer certificate fingerprint \(actual.sdpValue) does not match the expected \(candidates.map(\.sdpValue).joined(separator: " or "))")
    }
}
