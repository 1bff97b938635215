internal import COpenSSL
internal import COpenSSLShim

/// The DTLS role, decided by SDP `a=setup` (RFC 8842 §5.2): `active` is the client.
public enum DTLSRole: String, Sendable, Equatable {
    /// Sends the ClientHello (`a=setup:active`).
    case client
    /// Waits for the ClientHello (`a=setup:passive`).
    case server
}

/// One DTLS 1.2 connection over datagrams: owns its `SSL_CTX` and `SSL` (freed in `deinit`,
/// `close()` idempotent). Bytes in, bytes out — it owns no socket: incoming datagrams are written
/// to a memory BIO one at a time, and every record OpenSSL writes goes through the loop's
/// datagram BIO to the session, one datagram per write.
///
/// Used only on ``DataChannelLoop``'s queue.
final class DTLSConnection {
    /// Result of driving the handshake.
    enum HandshakeStep {
        case inProgress
        case done
        case failed(DataChannelError)
    }

    /// Result of reading application data.
    enum ReadResult {
        /// Everything buffered was read.
        case drained
        /// The peer sent close_notify.
        case closedByPeer
        case failed(DataChannelError)
    }

    private var context: OpaquePointer? = nil  // SSL_CTX*
    private var ssl: OpaquePointer? = nil  // SSL*
    private var inbound: OpaquePointer? = nil  // BIO* (memory), owned by ssl
    private var readBuffer = [UInt8](repeating: 0, count: 1 << 16)
    let role: DTLSRole

    /// Cipher suites Chromium, Firefox, pion and aiortc all offer (ECDSA first).
    private static let cipherList =
        "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES256-GCM-SHA384:"
        + "ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-CHACHA20-POLY1305:ECDHE-RSA-AES256-GCM-SHA384:"
        + "ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA"

    /// SRTP protection profiles offered in `use_srtp` (RFC 5764 §4.1.2), most preferred first.
    private static let srtpProfiles = "SRTP_AEAD_AES_128_GCM:SRTP_AES128_CM_SHA1_80"

    /// - Parameters:
    ///   - contextID: registry id of the owning session (BIO and verify callbacks find it by this).
    ///   - mtu: largest datagram OpenSSL may emit during the handshake.
    init(identity: DTLSIdentity, role: DTLSRole, contextID: Int, mtu: Int, loop: DataChannelLoop) throws {
        self.role = role
        ERR_clear_error()
        guard let context = SSL_CTX_new(DTLS_method()) else { throw OpenSSLErrorStack.error("SSL_CTX_new") }
        self.context = context
        guard ugate_ssl_ctx_set_dtls12(context) == 1 else { throw OpenSSLErrorStack.error("SSL_CTX_set_min/max_proto_version") }
        guard SSL_CTX_use_certificate(context, identity.certificate) == 1 else { throw OpenSSLErrorStack.error("SSL_CTX_use_certificate") }
        guard SSL_CTX_use_PrivateKey(context, identity.privateKey) == 1 else { throw OpenSSLErrorStack.error("SSL_CTX_use_PrivateKey") }
        guard SSL_CTX_check_private_key(context) == 1 else { throw OpenSSLErrorStack.error("SSL_CTX_check_private_key") }
        guard SSL_CTX_set_cipher_list(context, Self.cipherList) == 1 else { throw OpenSSLErrorStack.error("SSL_CTX_set_cipher_list") }
        guard ugate_ssl_ctx_set_groups(context, "X25519:P-256:P-384") == 1 else { throw OpenSSLErrorStack.error("SSL_CTX_set1_groups_list") }
        // SSL_CTX_set_tlsext_use_srtp returns 0 on success.
        guard SSL_CTX_set_tlsext_use_srtp(context, Self.srtpProfiles) == 0 else { throw OpenSSLErrorStack.error("SSL_CTX_set_tlsext_use_srtp") }
        SSL_CTX_set_verify(context, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, dtlsVerifyPeer)
        _ = ugate_ssl_ctx_set_read_ahead(context)

        guard let ssl = SSL_new(context) else { throw OpenSSLErrorStack.error("SSL_new") }
        self.ssl = ssl
        guard let inbound = BIO_new(BIO_s_mem()) else { throw OpenSSLErrorStack.error("BIO_new(BIO_s_mem)") }
        ugate_bio_set_mem_eof_return(inbound, -1)
        guard let outbound = BIO_new(loop.datagramBIOMethod) else {
            BIO_free(inbound)
            throw OpenSSLErrorStack.error("BIO_new(datagram)")
        }
        self.inbound = inbound
        BIO_set_data(outbound, contextPointer(for: contextID))
        SSL_set_bio(ssl, inbound, outbound)
        guard SSL_set_ex_data(ssl, 0, contextPointer(for: contextID)) == 1 else { throw OpenSSLErrorStack.error("SSL_set_ex_data") }
        ugate_ssl_disable_mtu_query(ssl)
        _ = ugate_ssl_set_mtu(ssl, mtu)
        DTLS_set_timer_cb(ssl, dtlsTimerCallback)
        switch role {
        case .client: SSL_set_connect_state(ssl)
        case .server: SSL_set_accept_state(ssl)
        }
    }

    /// Queues one received datagram for OpenSSL.
    func feed(_ datagram: [UInt8]) {
        guard ssl != nil, let inbound else { return }
        _ = datagram.withUnsafeBytes { BIO_write(inbound, $0.baseAddress, Int32($0.count)) }
    }

    /// Drives the handshake as far as the buffered input allows.
    func handshake() -> HandshakeStep {
        guard let ssl else { return .failed(DataChannelError(.closed, "DTLS connection closed")) }
        ERR_clear_error()
        let result = SSL_do_handshake(ssl)
        if result == 1 { return .done }
        let code = SSL_get_error(ssl, result)
        if code == SSL_ERROR_WANT_READ || code == SSL_ERROR_WANT_WRITE { return .inProgress }
        return .failed(OpenSSLErrorStack.error("SSL_do_handshake (\(role))"))
    }

    /// Reads every decrypted record buffered so far, handing each to `deliver` (which may modify
    /// the bytes in place while it runs).
    func readApplicationData(_ deliver: (UnsafeMutableRawBufferPointer) -> Void) -> ReadResult {
        guard let ssl else { return .failed(DataChannelError(.closed, "DTLS connection closed")) }
        while true {
            // No ERR_clear_error here (it showed in profiles): every failure path drains the queue.
            let count = readBuffer.withUnsafeMutableBytes { SSL_read(ssl, $0.baseAddress, Int32($0.count)) }
            if count > 0 {
                readBuffer.withUnsafeMutableBytes { deliver(UnsafeMutableRawBufferPointer(rebasing: $0[0..<Int(count)])) }
                continue
            }
            switch SSL_get_error(ssl, count) {
            case SSL_ERROR_WANT_READ, SSL_ERROR_WANT_WRITE: return .drained
            case SSL_ERROR_ZERO_RETURN: return .closedByPeer
            default: return .failed(OpenSSLErrorStack.error("SSL_read"))
            }
        }
    }

    /// Encrypts one record of application data (an SCTP packet).
    @discardableResult
    func write(_ bytes: UnsafeRawBufferPointer) -> Bool {
        guard let ssl, bytes.count > 0 else { return false }
        let written = SSL_write(ssl, bytes.baseAddress, Int32(bytes.count)) == Int32(bytes.count)
        if !written { _ = OpenSSLErrorStack.drain() }  // keep the queue empty for SSL_get_error
        return written
    }

    /// Sets the largest datagram OpenSSL may emit (after the handshake: larger records).
    func setMTU(_ mtu: Int) {
        guard let ssl else { return }
        _ = ugate_ssl_set_mtu(ssl, mtu)
    }

    /// Nanoseconds until the handshake retransmission timer fires, or nil when none runs.
    func timeoutRemainingNanoseconds() -> UInt64? {
        guard let ssl else { return nil }
        var seconds = 0, microseconds = 0
        guard ugate_dtls_get_timeout(ssl, &seconds, &microseconds) == 1 else { return nil }
        return UInt64(seconds) * 1_000_000_000 + UInt64(microseconds) * 1_000
    }

    /// Retransmits the last flight when its timer expired. Returns false when OpenSSL gave up.
    func handleTimeout() -> Bool {
        guard let ssl else { return true }
        ERR_clear_error()
        return ugate_dtls_handle_timeout(ssl) >= 0
    }

    /// Whether the negotiated cipher suite is AEAD (AES-GCM, ChaCha20-Poly1305): smaller
    /// record overhead than AES-CBC with HMAC.
    var negotiatedAEAD: Bool {
        guard let ssl, let cipher = SSL_get_current_cipher(ssl) else { return false }
        return SSL_CIPHER_is_aead(cipher) == 1
    }

    /// The negotiated SRTP protection profile name (RFC 5764), if `use_srtp` was agreed.
    var srtpProfile: String? {
        guard let ssl, let profile = SSL_get_selected_srtp_profile(ssl), let name = profile.pointee.name else { return nil }
        return String(cString: name)
    }

    /// Exports `length` bytes of keying material with the RFC 5764 §4.2 label "EXTRACTOR-dtls_srtp".
    func exportSRTPKeyingMaterial(length: Int) -> [UInt8]? {
        guard let ssl else { return nil }
        var out = [UInt8](repeating: 0, count: length)
        let label = Array("EXTRACTOR-dtls_srtp".utf8CString.dropLast())
        let ok = SSL_export_keying_material(ssl, &out, length, label, label.count, nil, 0, 0)
        return ok == 1 ? out : nil
    }

    /// The peer's certificate (DER) once the handshake is done.
    func peerCertificateDER() -> [UInt8]? {
        guard let ssl, let certificate = SSL_get1_peer_certificate(ssl) else { return nil }
        defer { X509_free(certificate) }
        return derOf(certificate)
    }

    /// Sends close_notify (best effort; no wait for the peer's).
    func shutdown() {
        guard let ssl else { return }
        ERR_clear_error()
        _ = SSL_shutdown(ssl)
        ERR_clear_error()
    }

    /// Frees the SSL objects; further calls are no-ops.
    func close() {
        if let ssl { SSL_free(ssl) }  // frees both BIOs
        if let context { SSL_CTX_free(context) }
        ssl = nil
        inbound = nil
        context = nil
    }

    deinit { close() }
}
