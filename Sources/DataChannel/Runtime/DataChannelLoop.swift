import Dispatch
import Synchronization
internal import CUsrsctp
internal import COpenSSL
#if canImport(Glibc)
import Glibc
#endif

/// A serial executor the data-channel loop can run on: its own dispatch queue by default, or
/// the thread that owns the datagram transport (PeerMesh hands in the ICE loop's GLib thread, so
/// a datagram goes libnice → DTLS → SCTP without changing threads).
///
/// Jobs must run one at a time, in the order they were handed in, never inline inside
/// `execute` and never inside a C callback of the transport.
public protocol DataChannelExecutor: AnyObject, Sendable {
    /// Runs `job` later on the executor's thread, after every job handed in before it.
    func execute(_ job: @escaping @Sendable () -> Void)
    /// True when called from a job of this executor.
    var isCurrent: Bool { get }
}

/// The default executor: a serial dispatch queue of its own.
final class DispatchQueueExecutor: DataChannelExecutor {
    let queue: DispatchQueue
    private let key = DispatchSpecificKey<Bool>()

    init(label: String) {
        queue = DispatchQueue(label: label, qos: .userInitiated)
        queue.setSpecific(key: key, value: true)
    }

    func execute(_ job: @escaping @Sendable () -> Void) { queue.async(execute: job) }

    var isCurrent: Bool { DispatchQueue.getSpecific(key: key) == true }
}

/// The one serial executor that owns usrsctp and every OpenSSL DTLS object of the process.
///
/// usrsctp is process-global, so there is one loop: it runs `usrsctp_init_nothreads` (no usrsctp
/// threads at all), drives `usrsctp_handle_timers` and DTLS retransmission timers from a 10 ms
/// tick that runs only while a session is alive, and routes every C callback (usrsctp output,
/// the socket upcall, the DTLS output BIO, the certificate verifier) through an
/// integer-id registry of live sessions. A callback whose id is no longer registered — usrsctp
/// may call back after `usrsctp_close` (usrsctp#405) — is dropped.
///
/// The loop runs on one ``DataChannelExecutor`` at a time. While no session is alive it may move
/// to another one (``adopt(_:)``): the first session over an ICE transport moves it onto the
/// ICE loop's thread. Jobs handed to the old executor after the move forward themselves to the
/// new one, so jobs never run on two threads at once.
final class DataChannelLoop: @unchecked Sendable {  // all mutable state below `executor` is touched only by jobs of the current executor
    /// The process-wide loop.
    static let shared = DataChannelLoop()

    /// The executor jobs run on now (changes only while no session is registered).
    private let current: Mutex<any DataChannelExecutor>
    /// The loop's own queue, used until a transport offers its thread.
    private let ownExecutor = DispatchQueueExecutor(label: "ugate.datachannel.loop")
    /// Drives the 10 ms tick (the handler hands the tick to the current executor).
    private let timerQueue = DispatchQueue(label: "ugate.datachannel.timer", qos: .userInitiated)
    /// The custom BIO method that emits one datagram per write (lives as long as the process).
    let datagramBIOMethod: OpaquePointer
    /// One receive buffer for every session's `usrsctp_recvv` (the loop is single-threaded).
    var receiveBuffer = [UInt8](repeating: 0, count: 256 * 1024)
    /// usrsctp leaves the SCTP checksum to us (hardware CRC32c on send, none on receive: DTLS
    /// authenticates every record). Software CRC32c was ~20 % of the CPU profile.
    let checksumOffloaded: Bool

    /// Non-zero while a session hands datagrams to its transport. A transport that delivers
    /// synchronously (the in-memory pipe) then reaches the peer session inside that call; the
    /// peer must queue instead of processing at once, or packets would overtake each other.
    var handingToTransport = 0

    private var live: [Int: DataChannelSession] = [:]
    private var nextID = 1
    private var timer: (any DispatchSourceTimer)?
    private let tickPending = Atomic<Bool>(false)
    private var lastTimerNanoseconds: UInt64 = 0

    private init() {
        current = Mutex(ownExecutor)
        checksumOffloaded = ugate_sctp_init(sctpConnOutput) == 1
        datagramBIOMethod = makeDatagramBIOMethod()
    }

    /// Runs `job` on the loop, after every job handed in before it.
    func execute(_ job: @escaping @Sendable () -> Void) {
        let target = current.withLock { $0 }
        target.execute { [self] in
            let now = current.withLock { $0 }
            if now === target { job() } else { now.execute(job) }  // the loop moved meanwhile
        }
    }

    /// True when called from a job of the loop's current executor.
    var isCurrent: Bool { current.withLock { $0 }.isCurrent }

    /// Moves the loop onto `executor` if no session is alive (or it runs there already), so a
    /// session's DTLS and SCTP share the thread of its transport. Calls `done` on the loop with
    /// whether the loop now runs on `executor`.
    func adopt(_ executor: any DataChannelExecutor, then done: @escaping @Sendable (Bool) -> Void) {
        execute { [self] in
            let moved = current.withLock { current -> Bool in
                if current === executor { return true }
                guard live.isEmpty else { return false }
                current = executor
                return true
            }
            // Continue on the (possibly new) executor: later jobs run there.
            execute { done(moved) }
        }
    }

    /// Registers a session, returning its id (never 0, so it is a non-null C pointer).
    func register(_ session: DataChannelSession) -> Int {
        let id = nextID
        nextID += 1
        live[id] = session
        if timer == nil { startTimer() }
        return id
    }

    /// Removes a session; callbacks for its id are dropped from now on.
    func unregister(_ id: Int) {
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

    /// Number of live (registered) sessions, read by a job on the loop (so after every job
    /// handed in before this call). Blocks the caller; on the loop itself it reads at once.
    func liveCount() -> Int {
        if isCurrent { return live.count }
        let box = CountBox()
        let done = DispatchSemaphore(value: 0)
        execute { [self] in
            box.value = live.count
            done.signal()
        }
        done.wait()
        return box.value
    }

    private func startTimer() {
        let timer = DispatchSource.makeTimerSource(queue: timerQueue)
        lastTimerNanoseconds = DispatchTime.now().uptimeNanoseconds
        timer.schedule(deadline: .now() + .milliseconds(10), repeating: .milliseconds(10), leeway: .milliseconds(2))
        timer.setEventHandler { [unowned self] in
            // One tick in flight at a time: a busy loop skips ticks instead of queueing them.
            guard !tickPending.exchange(true, ordering: .acquiringAndReleasing) else { return }
            execute { [unowned self] in
                tickPending.store(false, ordering: .releasing)
                tick()
            }
        }
        timer.resume()
        self.timer = timer
    }

    private func tick() {
        guard timer != nil else { return }
        let now = DispatchTime.now().uptimeNanoseconds
        let elapsedMilliseconds = (now - lastTimerNanoseconds) / 1_000_000
        if elapsedMilliseconds > 0 {
            lastTimerNanoseconds += elapsedMilliseconds * 1_000_000
            usrsctp_handle_timers(UInt32(clamping: elapsedMilliseconds))
        }
        for session in Array(live.values) { session.loopTick(nowNanoseconds: now) }
    }
}

/// Carries a count from a loop job to a thread blocked on a semaphore.
private final class CountBox: @unchecked Sendable {  // written once before the semaphore signal, read after the wait
    var value = 0
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
