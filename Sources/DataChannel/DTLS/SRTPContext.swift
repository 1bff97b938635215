internal import CSRTP
import Synchronization

/// SRTP keys derived from a DTLS-SRTP handshake (RFC 5764 §4.2): the exported keying material
/// split into our write key/salt and the peer's.
public struct SRTPKeys: Sendable, Equatable {
    /// The negotiated protection profile name, e.g. `SRTP_AEAD_AES_128_GCM`.
    public let profile: String
    /// Master key followed by master salt for packets we send.
    public let localKeyAndSalt: [UInt8]
    /// Master key followed by master salt for packets we receive.
    public let remoteKeyAndSalt: [UInt8]

    /// Master key and salt lengths of the profiles we offer (RFC 5764 §4.1.2, RFC 7714 §12).
    static func lengths(profile: String) -> (key: Int, salt: Int)? {
        switch profile {
        case "SRTP_AES128_CM_SHA1_80": return (16, 14)
        case "SRTP_AEAD_AES_128_GCM": return (16, 12)
        default: return nil
        }
    }

    /// Splits `client_key | server_key | client_salt | server_salt` by DTLS role.
    init?(profile: String, keyingMaterial: [UInt8], role: DTLSRole) {
        guard let (keyLength, saltLength) = Self.lengths(profile: profile),
              keyingMaterial.count == 2 * (keyLength + saltLength) else { return nil }
        let clientKey = keyingMaterial[0..<keyLength], serverKey = keyingMaterial[keyLength..<2 * keyLength]
        let clientSalt = keyingMaterial[(2 * keyLength)..<(2 * keyLength + saltLength)]
        let serverSalt = keyingMaterial[(2 * keyLength + saltLength)...]
        let client = Array(clientKey + clientSalt), server = Array(serverKey + serverSalt)
        self.profile = profile
        (localKeyAndSalt, remoteKeyAndSalt) = role == .client ? (client, server) : (server, client)
    }
}

/// One direction of SRTP/SRTCP protection on libsrtp2 (for a media relay path): owns its
/// `srtp_t`, freed in `deinit`; `close()` is idempotent. Not thread-safe: one owner at a time.
public final class SRTPContext {
    /// Whether this context protects (outbound) or unprotects (inbound).
    public enum Direction: Sendable { case outbound, inbound }

    private var session: srtp_t?
    public let direction: Direction

    private static let initialized: Bool = srtp_init() == srtp_err_status_ok

    /// Creates a context from DTLS-exported keys.
    public init(keys: SRTPKeys, direction: Direction) throws {
        self.direction = direction
        guard Self.initialized else { throw DataChannelError(.invalidConfiguration, "srtp_init failed") }
        let profileID: Int32 = keys.profile == "SRTP_AEAD_AES_128_GCM" ? 7 : 1
        let key = direction == .outbound ? keys.localKeyAndSalt : keys.remoteKeyAndSalt
        var created: srtp_t?
        let status = ugate_srtp_create(&created, profileID, key, direction == .outbound ? 1 : 0)
        guard status == 0, let created else {
            throw DataChannelError(.invalidConfiguration, "srtp_create(\(keys.profile)) failed with status \(status)")
        }
        session = created
    }

    /// Encrypts and authenticates one RTP packet.
    public func protect(rtp packet: [UInt8]) throws -> [UInt8] {
        try transform(packet, grow: true, name: "srtp_protect") { srtp_protect($0, $1, $2) }
    }

    /// Verifies and decrypts one SRTP packet; throws on authentication failure or replay.
    public func unprotect(srtp packet: [UInt8]) throws -> [UInt8] {
        try transform(packet, grow: false, name: "srtp_unprotect") { srtp_unprotect($0, $1, $2) }
    }

    /// Encrypts and authenticates one RTCP packet.
    public func protect(rtcp packet: [UInt8]) throws -> [UInt8] {
        try transform(packet, grow: true, name: "srtp_protect_rtcp") { srtp_protect_rtcp($0, $1, $2) }
    }

    /// Verifies and decrypts one SRTCP packet.
    public func unprotect(srtcp packet: [UInt8]) throws -> [UInt8] {
        try transform(packet, grow: false, name: "srtp_unprotect_rtcp") { srtp_unprotect_rtcp($0, $1, $2) }
    }

    private func transform(_ packet: [UInt8], grow: Bool, name: String,
                           _ call: (srtp_t, UnsafeMutableRawPointer, UnsafeMutablePointer<Int32>) -> srtp_err_status_t) throws -> [UInt8] {
        guard let session else { throw DataChannelError(.closed, "\(name) on a closed SRTP context") }
        var buffer = packet + (grow ? [UInt8](repeating: 0, count: Int(UGATE_SRTP_MAX_TRAILER_LEN)) : [])
        var length = Int32(packet.count)
        let status = buffer.withUnsafeMutableBytes { call(session, $0.baseAddress!, &length) }
        guard status == srtp_err_status_ok else { throw DataChannelError(.invalidConfiguration, "\(name) failed with status \(status.rawValue)") }
        return Array(buffer.prefix(Int(length)))
    }

    /// Frees the libsrtp context; further calls throw.
    public func close() {
        if let session { srtp_dealloc(session) }
        session = nil
    }

    deinit { close() }
}
