import Dispatch
internal import CUsrsctp
internal import COpenSSL
#if canImport(Glibc)
import Glibc
#endif

/// The one serial executor that owns usrsctp and every OpenSSL DTLS object of the process.
///
/// usrsctp is process-global, so there is one loop: it runs `usrsctp_init_nothreads` (no usrsctp
/// threads at all), drives `usrsctp_handle_timers` and DTLS retransmission timers from a 10 ms
/// tick that runs only while a session is alive, and routes every C callback (usrsctp output,
/// the socket upcall, the DTLS output BIO, the certificate verifier) through an
/// integer-id registry of live sessions. A callback whose id is no longer registered — usrsctp
/// may call back after `usrsctp_close` (usrsctp#405) — is dropped.
final class DataChannelLoop: @unchecked Sendable {  // all mutable state is touched only on `queue`
    /// The process-wide loop.
    static let shared = DataChannelLoop()

    /// The serial queue every DTLS and SCTP call runs on.
    let queue = DispatchQueue(label: "ugate.datachannel.loop", qos: .userInitiated)
    /// The custom BIO method that emits one datagram per write (lives as long as the process).
    let datagramBIOMethod: OpaquePointer
    /// One receive buffer for every session's `usrsctp_recvv` (the loop is single-threaded).
    var receiveBuffer = [UInt8](repeating: 0, count: 256 * 1024)
    /// usrsctp leaves the SCTP checksum to us (hardware CRC32c on send, none on receive: DTLS
    /// authenticates every record). Software CRC32c was ~20 % of the CPU profile.
    let checksumOffloaded: Bool

    private var live: [Int: DataChannelSession] = [:]
    private var nextID = 1
    private var timer: (any DispatchSourceTimer)?
    private var lastTimerNanoseconds: UInt64 = 0

    private init() {
        checksumOffloaded = ugate_sctp_init(sctpConnOutput) == 1
        datagramBIOMethod = makeDatagramBIOMethod()
    }

    /// Registers a session, returning its id (never 0, so it is a non-null C pointer).
    func register(_ session: DataChannelSession) -> Int {
        dispatchPrecondition(condition: .onQueue(queue))
        let id = nextID
        nextID += 1
        live[id] = session
        if timer == nil { startTimer() }
        return id
    }

    /// Removes a session; callbacks for its id are dropped from now on.
    func unregister(_ id: Int) {
        dispatchPrecondition(condition: .onQueue(queue))
        live[id] = nil
        if live.isEmpty, let timer {
            timer.cancel()
            self.timer = nil
        }
    }

    /// The session behind a C callback's context pointer, if it is still alive.
    func session(forContext context: UnsafeRawPointer?) -> DataChannelSession? {
        guard let context else { return nil }
        return live[Int(bitPattern: context)]
    }

    /// Number of live (registered) sessions, read on the loop.
    func liveCount() -> Int {
        queue.sync { live.count }
    }

    private func startTimer() {
        let timer = DispatchSource.makeTimerSource(queue: queue)
        lastTimerNanoseconds = DispatchTime.now().uptimeNanoseconds
        timer.schedule(deadline: .now() + .milliseconds(10), repeating: .milliseconds(10), leeway: .milliseconds(2))
        timer.setEventHandler { [unowned self] in self.tick() }
        timer.resume()
        self.timer = timer
    }

    private func tick() {
        let now = DispatchTime.now().uptimeNanoseconds
        let elapsedMilliseconds = (now - lastTimerNanoseconds) / 1_000_000
        if elapsedMilliseconds > 0 {
            lastTimerNanoseconds += elapsedMilliseconds * 1_000_000
            usrsctp_handle_timers(UInt32(clamping: elapsedMilliseconds))
        }
        for session in Array(live.values) { session.loopTick(nowNanoseconds: now) }
    }
}

/// Context pointer for a registry id (ids start at 1, so it is never null).
func contextPointer(for id: Int) -> UnsafeMutableRawPointer {
    UnsafeMutableRawPointer(bitPattern: id)!
}

// MARK: usrsctp callbacks (all run on the loop queue: usrsctp has no threads of its own here)

/// usrsctp wants to send an SCTP packet: it becomes DTLS application data.
private let sctpConnOutput: @convention(c) (UnsafeMutableRawPointer?, UnsafeMutableRawPointer?, Int, UInt8, UInt8) -> Int32 = {
    context, buffer, length, _, _ in
    let loop = DataChannelLoop.shared
    guard let buffer, let session = loop.session(forContext: context) else { return 0 }
    if loop.checksumOffloaded { ugate_sctp_fill_checksum(buffer.assumingMemoryBound(to: UInt8.self), length) }
    session.sctpOutput(UnsafeRawBufferPointer(start: buffer, count: length))
    return 0
}

/// The socket became readable or writable: the session pulls and sends in its next loop pass
/// (the upcall itself runs inside usrsctp and must not re-enter it).
let sctpUpcall: @convention(c) (OpaquePointer?, UnsafeMutableRawPointer?, Int32) -> Void = { _, context, _ in
    DataChannelLoop.shared.session(forContext: context)?.sctpSocketReady()
}

// MARK: OpenSSL callbacks

/// Creates the BIO method whose every write is one outgoing datagram.
private func makeDatagramBIOMethod() -> OpaquePointer {
    let method = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "ugate-datagram")!
    BIO_meth_set_write(method) { bio, data, length in
        guard let bio, let data, length > 0 else { return 0 }
        DataChannelLoop.shared.session(forContext: BIO_get_data(bio))?
            .dtlsOutput(UnsafeRawBufferPointer(start: data, count: Int(length)))
        return length
    }
    BIO_meth_set_ctrl(method) { _, command, _, _ in
        switch command {
        case BIO_CTRL_FLUSH: return 1
        default: return 0  // no pending bytes, no MTU query (SSL_OP_NO_QUERY_MTU), no peer address
        }
    }
    BIO_meth_set_create(method) { bio in
        BIO_set_init(bio, 1)
        return 1
    }
    return method
}

/// Accepts the self-signed chain and decides on the leaf certificate's fingerprint alone.
let dtlsVerifyPeer: @convention(c) (Int32, OpaquePointer?) -> Int32 = { _, store in
    guard let store,
          let sslPointer = X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx()),
          let session = DataChannelLoop.shared.session(forContext: SSL_get_ex_data(OpaquePointer(sslPointer), 0))
    else { return 0 }
    guard X509_STORE_CTX_get_error_depth(store) == 0 else { return 1 }
    guard let certificate = X509_STORE_CTX_get_current_cert(store) else { return 0 }
    return session.verifyPeerCertificate(derOf(certificate)) ? 1 : 0
}

/// DTLS retransmission timer: 100 ms first, doubling up to 6.4 s. OpenSSL's default starts at
/// 1 s, which makes every first flight sent before the peer listens cost a second.
let dtlsTimerCallback: @convention(c) (OpaquePointer?, UInt32) -> UInt32 = { _, previous in
    previous == 0 ? 100_000 : min(previous * 2, 6_400_000)
}

/// DER encoding of an X509 certificate.
func derOf(_ certificate: OpaquePointer) -> [UInt8] {
    let length = i2d_X509(certificate, nil)
    guard length > 0 else { return [] }
    var der = [UInt8](repeating: 0, count: Int(length))
    der.withUnsafeMutableBufferPointer { buffer in
        var out = buffer.baseAddress
        _ = i2d_X509(certificate, &out)
    }
    return der
}
