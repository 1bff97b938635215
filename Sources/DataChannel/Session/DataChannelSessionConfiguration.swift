/// Everything a ``DataChannelSession`` needs from the local setup and the remote SDP.
public struct DataChannelSessionConfiguration: Sendable {
    /// Our certificate and key.
    public var identity: DTLSIdentity
    /// Our DTLS role: `.client` when our `a=setup` is `active`, `.server` when `passive`.
    public var role: DTLSRole
    /// The peer's `a=fingerprint` values; its certificate must match one of them.
    public var remoteFingerprints: [CertificateFingerprint]
    /// Our `a=sctp-port` (default 5000).
    public var localSCTPPort: UInt16
    /// The peer's `a=sctp-port` (default 5000).
    public var remoteSCTPPort: UInt16
    /// The peer's `a=max-message-size`: 65536 when absent (RFC 8841 §6.1), 0 for no limit.
    /// Sends above it are refused.
    public var remoteMaxMessageSize: Int
    /// Our `a=max-message-size`: larger incoming messages are discarded.
    public var localMaxMessageSize: Int
    /// Largest datagram DTLS emits during the handshake, and afterwards unless the transport
    /// reports a larger ``DatagramTransport/maximumDatagramSize``; SCTP packets are sized to fit
    /// in one record of the datagram size in use.
    public var mtu: Int
    /// SCTP streams requested in each direction (channel ids must be below it).
    public var maxStreams: UInt16
    /// usrsctp socket send and receive buffer sizes in bytes.
    public var sctpBufferSize: Int
    /// ``DataChannel/send(_:)-swift.method`` waits while a channel's buffered amount is at or above this.
    public var sendHighWaterMark: Int
    /// Received bytes not yet taken with ``DataChannel/receive()`` (all channels together) above
    /// which the session stops reading from SCTP, so the peer's window closes and its sends wait.
    public var receiveHighWaterMark: Int
    /// How long ``DataChannelSession/close()`` waits for queued data to be acknowledged and the
    /// SCTP SHUTDOWN exchange to finish before it aborts the association.
    public var shutdownTimeout: Duration
    /// When our SCTP receiver sends SACKs (``SCTPAcknowledgement``); nil keeps the process-wide
    /// default (a SACK per four packets or 20 ms, tuned for a usrsctp sender).
    public var acknowledgement: SCTPAcknowledgement?

    /// Creates a configuration with the defaults named on each property.
    public init(identity: DTLSIdentity, role: DTLSRole, remoteFingerprints: [CertificateFingerprint],
                localSCTPPort: UInt16 = 5000, remoteSCTPPort: UInt16 = 5000,
                remoteMaxMessageSize: Int = 65_536, localMaxMessageSize: Int = 262_144,
                mtu: Int = 1200, maxStreams: UInt16 = 1024, sctpBufferSize: Int = 4 << 20,
                sendHighWaterMark: Int = 1 << 20, receiveHighWaterMark: Int = 4 << 20,
                shutdownTimeout: Duration = .seconds(10), acknowledgement: SCTPAcknowledgement? = nil) {
        self.identity = identity
        self.role = role
        self.remoteFingerprints = remoteFingerprints
        self.localSCTPPort = localSCTPPort
        self.remoteSCTPPort = remoteSCTPPort
        self.remoteMaxMessageSize = remoteMaxMessageSize
        self.localMaxMessageSize = localMaxMessageSize
        self.mtu = mtu
        self.maxStreams = maxStreams
        self.sctpBufferSize = sctpBufferSize
        self.sendHighWaterMark = sendHighWaterMark
        self.receiveHighWaterMark = receiveHighWaterMark
        self.shutdownTimeout = shutdownTimeout
        self.acknowledgement = acknowledgement
    }

    var shutdownTimeoutNanoseconds: UInt64 {
        let (seconds, attoseconds) = shutdownTimeout.components
        return UInt64(max(0, seconds)) * 1_000_000_000 + UInt64(max(0, attoseconds) / 1_000_000_000)
    }

    /// DTLS record overhead budget: 13-byte header plus the worst suite we offer
    /// (AES-CBC-SHA1: 16-byte IV, 20-byte MAC, up to 16 bytes of padding).
    static let dtlsOverhead = 65
    /// Overhead with an AEAD suite: 13-byte header, 8-byte explicit nonce (AES-GCM; none for
    /// ChaCha20-Poly1305), 16-byte tag.
    static let dtlsAEADOverhead = 37

    /// Largest DTLS record plaintext (RFC 6347 §4.1, RFC 5246 §6.2.1: 2^14 bytes).
    static let largestRecordPlaintext = 16_384
    /// The largest datagram one DTLS record can fill: 16 KiB of plaintext plus the worst
    /// overhead of the suites we offer. Larger datagrams would only carry several records, and
    /// SCTP packets must fit one record; this is also what ugate peers advertise by default in
    /// `a=ugate-max-datagram-size` (OpenSSL's DTLS read buffer takes a record this size).
    public static let largestRecordDatagram = largestRecordPlaintext + dtlsOverhead

    /// The datagram size once DTLS is up: the transport's limit (both ends and the path),
    /// never below the handshake ``mtu`` nor above one full record.
    func dataMTU(transportLimit: Int?) -> Int {
        guard let transportLimit else { return mtu }
        return max(mtu, min(transportLimit, Self.largestRecordDatagram))
    }

    /// What usrsctp adds to `spp_pathmtu` on an AF_CONN socket (the 12-byte SCTP common header):
    /// with path MTU P it emitted packets of up to P + 9 bytes (measured: 1172 for P = 1163), so
    /// 1200-byte budgets became 1209-byte datagrams and 16 KiB packets overflowed a record.
    static let usrsctpPathMTUSlack = 12

    /// The SCTP path MTU to set for `datagram`-byte datagrams: one SCTP packet per DTLS record
    /// per datagram. With the negotiated suite known to be AEAD (AES-GCM, ChaCha20-Poly1305) the
    /// packets are 28 bytes larger. Packets never exceed one record's plaintext.
    func sctpPathMTU(datagram: Int, aead: Bool) -> Int {
        min(datagram - (aead ? Self.dtlsAEADOverhead : Self.dtlsOverhead), Self.largestRecordPlaintext)
            - Self.usrsctpPathMTUSlack
    }
}
