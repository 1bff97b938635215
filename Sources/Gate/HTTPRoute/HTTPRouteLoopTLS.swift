internal import COpenSSL
internal import COpenSSLShim
import CLinux
import Glibc
import Logging
import NIOCore

// HTTP/1.1 over TLS on the gate loops: TLS terminated with OpenSSL directly on the client
// socket (no NIO channel, no memory BIOs), the connection then served by `HTTP1LoopConnection`
// as plain HTTP/1.1 is, through the small transport seam below (`LoopTLSSession`: read, write,
// shutdown over the SSL object instead of the socket).
//
// Threads: `LoopTLSContext` (one per certificate) is made on the reload queue and shared
// read-only by every loop. A `LoopTLSSession` (the SSL object) is made, driven and freed on the
// gate loop that accepted its connection — first by `LoopTLSHandshake`, then by the
// `HTTP1LoopConnection` it hands the session to — and is never touched from another thread,
// as the connection's socket and exchanges are not.

/// An OpenSSL server context for one certificate (PEM chain and key): TLS 1.2 minimum,
/// read-ahead, partial writes, no renegotiation, ALPN answering `http/1.1` when the client
/// offers it (no ALPN otherwise) — what `HTTPRouteTLS.context` configures for NIO, for the
/// clients that do not offer h2.
final class LoopTLSContext: @unchecked Sendable {  // the SSL_CTX is configured in init and only read afterwards (SSL_new on a shared SSL_CTX is thread-safe)
    fileprivate let ctx: OpaquePointer

    init(_ files: CertificateFiles) throws {
        ERR_clear_error()
        guard let ctx = SSL_CTX_new(TLS_server_method()) else { throw TLSErrorQueue.error("SSL_CTX_new") }
        self.ctx = ctx
        guard ugate_ssl_ctx_configure_http1_server(ctx) == 1 else { throw TLSErrorQueue.error("TLS context setup") }
        guard SSL_CTX_use_certificate_chain_file(ctx, files.cert) == 1 else { throw TLSErrorQueue.error("\(files.cert): certificate chain") }
        guard SSL_CTX_use_PrivateKey_file(ctx, files.key, SSL_FILETYPE_PEM) == 1 else { throw TLSErrorQueue.error("\(files.key): private key") }
        guard SSL_CTX_check_private_key(ctx) == 1 else { throw TLSErrorQueue.error("\(files.key) does not match \(files.cert)") }
    }

    deinit { SSL_CTX_free(ctx) }
}

/// OpenSSL's thread-local error queue, read into messages.
enum TLSErrorQueue {
    /// Every queued error (oldest first) as OpenSSL's text, `; `-separated; the queue is emptied.
    static func take() -> String {
        var messages: [String] = []
        while true {
            let code = ERR_get_error()
            guard code != 0 else { break }
            messages.append(withUnsafeTemporaryAllocation(of: CChar.self, capacity: 256) { text in
                ERR_error_string_n(code, text.baseAddress, text.count)
                return String(cString: text.baseAddress!)
            })
        }
        return messages.joined(separator: "; ")
    }

    static func error(_ what: String) -> GateError {
        let queued = take()
        return GateError(.config, queued.isEmpty ? "\(what) failed" : "\(what): \(queued)")
    }
}

/// One TLS connection's SSL object on a client socket (the only owner: freed by `close()` or
/// deinit). The socket stays the caller's (`HTTP1LoopConnection` closes it, after `close()`,
/// so no TLS record can reach a reused descriptor). Non-blocking: every call returns what the
/// socket allows, `SSL_ERROR_WANT_READ` / `WANT_WRITE` mapped to `Sys.IO.wouldBlock` with
/// `readWantsWrite` / `writeWantsRead` saying which readiness the loop must wait for.
/// Loop thread only.
final class LoopTLSSession {
    private var ssl: OpaquePointer?
    /// Keeps the certificate's context alive as long as the session (OpenSSL counts it too).
    let context: LoopTLSContext
    /// The SNI the client sent (for the log).
    let serverName: String?
    /// Why the session failed (a TLS error: a bad record, an alert, a broken handshake
    /// message), for the access log; nil while it is fine.
    private(set) var failure: String?
    /// The socket failed under the session (the client reset the connection …), for the log.
    private(set) var socketError: String?
    /// The client closed the TCP connection without a close_notify.
    private(set) var closedWithoutNotify = false
    /// The last read returned WANT_WRITE (it must be retried once the socket is writable).
    private(set) var readWantsWrite = false
    /// The last write returned WANT_READ (it must be retried once the socket is readable).
    private(set) var writeWantsRead = false
    /// After a fatal error OpenSSL must not send a close_notify (`SSL_shutdown` is refused).
    private var fatal = false
    private var notified = false
    /// The readiness the last call that returned `.wouldBlock` waits for.
    private var wanted = Interest.read

    /// A server session for `fd` whose first bytes (`prefix`, the ClientHello read to look at
    /// its SNI and ALPN) were already taken from the socket.
    init(context: LoopTLSContext, fd: Int32, prefix: [UInt8], serverName: String?) throws {
        self.context = context
        self.serverName = serverName
        ERR_clear_error()
        guard let ssl = SSL_new(context.ctx) else { throw TLSErrorQueue.error("SSL_new") }
        self.ssl = ssl
        guard let bio = prefix.withUnsafeBufferPointer({ ugate_socket_bio_new(fd, $0.baseAddress, $0.count) }) else {
            throw GateError(.config, "TLS socket BIO: out of memory")
        }
        SSL_set_bio(ssl, bio, bio)
        SSL_set_accept_state(ssl)
    }

    deinit { close(notify: false) }

    /// What a handshake step asks for.
    enum Step: Equatable {
        case done
        case wantRead
        case wantWrite
        case failed(String)
    }

    /// One non-blocking handshake step.
    func handshake() -> Step {
        guard let ssl else { return .failed("TLS session closed") }
        ERR_clear_error()
        let result = SSL_do_handshake(ssl)
        if result == 1 { return .done }
        switch ended(result, "TLS handshake") {
        case .wouldBlock: return wanted == Interest.write ? .wantWrite : .wantRead
        default: return .failed(failure ?? socketError ?? "the client closed the connection during the TLS handshake")
        }
    }

    /// The negotiated ALPN protocol (nil: none).
    var alpn: String? {
        guard let ssl else { return nil }
        var name: UnsafePointer<UInt8>?
        var length: UInt32 = 0
        SSL_get0_alpn_selected(ssl, &name, &length)
        guard let name, length > 0 else { return nil }
        return String(decoding: UnsafeBufferPointer(start: name, count: Int(length)), as: UTF8.self)
    }

    /// The TLS version negotiated (`TLSv1.3`), for tests and the log.
    var version: String { ssl.map { String(cString: SSL_get_version($0)) } ?? "-" }

    /// Decrypted or undecrypted bytes held by OpenSSL (read ahead from the socket): epoll does
    /// not report them, so the caller reads again while this holds.
    var hasPending: Bool { ssl.map { SSL_has_pending($0) == 1 } ?? false }

    /// Decrypts into `buffer`: `.bytes`, `.wouldBlock` (see `readWantsWrite`), `.eof` (the
    /// client's close_notify, or its close without one: `closedWithoutNotify`), `.error` (a TLS
    /// error or a socket error: `failure`, `socketError`).
    func read(into buffer: UnsafeMutableRawBufferPointer) -> Sys.IO {
        let result = call("TLS read") { SSL_read($0, buffer.baseAddress, Int32(clamping: buffer.count)) }
        readWantsWrite = result == .wouldBlock && wanted == Interest.write
        return result
    }

    /// Encrypts `bytes` (one TLS record per 16 KiB) and writes them: `.bytes(n)` (partial
    /// writes are on: the rest is a new write), `.wouldBlock` (retry with the same bytes first:
    /// OpenSSL keeps the record it made; see `writeWantsRead`), `.error`.
    func write(_ bytes: UnsafeRawBufferPointer) -> Sys.IO {
        let result = call("TLS write") { SSL_write($0, bytes.baseAddress, Int32(clamping: bytes.count)) }
        writeWantsRead = result == .wouldBlock && wanted == Interest.read
        return result
    }

    /// Runs one SSL read or write (`operation` returns its count, ≤ 0 when it did nothing).
    private func call(_ what: String, _ operation: (OpaquePointer) -> Int32) -> Sys.IO {
        guard let ssl else { return .error(EBADF) }
        // SSL_get_error reads the thread's error queue, which must hold nothing stale. It is
        // empty here without an `ERR_clear_error` per call (nginx's way; 1.6 % of the samples
        // of an HTTP/1.1-over-TLS request): every failure drains it (`ended`), the handshake
        // clears it, and nothing else on the gate loops uses OpenSSL.
        let n = operation(ssl)
        return n > 0 ? .bytes(Int(n)) : ended(n, what)
    }

    /// Sends the close_notify alert once (best effort, non-blocking; not after a fatal error,
    /// nor before the handshake finished).
    func shutdown() {
        guard let ssl, !fatal, !notified else { return }
        notified = true
        if SSL_is_init_finished(ssl) == 1 {
            _ = SSL_shutdown(ssl)
        }
        ERR_clear_error()
    }

    /// Frees the SSL object (idempotent); `notify`: the close_notify first. Call before closing
    /// the socket.
    func close(notify: Bool = true) {
        guard let ssl else { return }
        if notify { shutdown() }
        SSL_free(ssl)  // frees the BIO, which leaves the socket open
        self.ssl = nil
    }

    /// What an SSL call that returned `result` (≤ 0) means (`wanted`: the readiness a
    /// `.wouldBlock` waits for); errors are kept in `failure` and the error queue is left empty
    /// for the loop thread's next call.
    private func ended(_ result: Int32, _ what: String) -> Sys.IO {
        guard let ssl else { return .eof }
        let code = SSL_get_error(ssl, result)
        switch code {
        case SSL_ERROR_WANT_READ:
            wanted = Interest.read
            return .wouldBlock
        case SSL_ERROR_WANT_WRITE:
            wanted = Interest.write
            return .wouldBlock
        case SSL_ERROR_ZERO_RETURN:
            return .eof
        case SSL_ERROR_SYSCALL:
            fatal = true
            let queued = TLSErrorQueue.take()
            let e = ugate_socket_bio_errno(SSL_get_rbio(ssl))
            if queued.isEmpty, e == 0 || result == 0 {
                closedWithoutNotify = true
                return .eof
            }
            if queued.isEmpty {
                socketError = "\(what): \(String(cString: strerror(e))) (errno \(e))"
                return .error(e)
            }
            failure = "\(what): \(queued)"
            return .error(EPROTO)
        default:
            fatal = true
            if ugate_err_is_unexpected_eof(ERR_peek_error()) == 1 {
                ERR_clear_error()
                closedWithoutNotify = true
                return .eof
            }
            let queued = TLSErrorQueue.take()
            failure = "\(what): " + (queued.isEmpty ? "SSL error \(code)" : queued)
            return .error(EPROTO)
        }
    }

    /// Logs how the session ended when it was not a clean close: a TLS error in the access log
    /// (info), a socket error or a close without close_notify in the log (debug).
    func logEnd(_ connection: RouteConnection) {
        let settings = connection.settings
        if let failure {
            settings.accessLog.info(
                "TLS error, connection closed",
                metadata: [
                    "listener": .string(settings.listenerName), "src": .string(connection.peer), "sni": .string(serverName ?? "-"),
                    "error": .string(failure),
                ])
        } else if let socketError {
            settings.log.debug("TLS client connection error", metadata: ["src": .string(connection.peer), "error": .string(socketError)])
        } else if closedWithoutNotify {
            settings.log.debug("TLS client closed without close_notify", metadata: ["src": .string(connection.peer), "sni": .string(serverName ?? "-")])
        }
    }
}

extension GateEventLoop {
    /// Reads once from a TLS session into the loop's read buffer (see `read(_:)` for a socket).
    func read(_ tls: LoopTLSSession) -> (Sys.IO, ByteBuffer) {
        readBuffer.clear()
        let result = readBuffer.withUnsafeMutableWritableBytes { tls.read(into: $0) }
        if case .bytes(let n) = result { readBuffer.moveWriterIndex(forwardBy: n) }
        return (result, readBuffer)
    }
}

/// The TLS handshake of one client connection on the gate loop that accepted it: driven by the
/// socket's readiness until done, then the socket and session go to `HTTP1LoopConnection`;
/// a failure (a broken ClientHello, no common cipher or version, the client gone) or the
/// handshake timeout closes the socket and logs why in the access log.
///
/// Draining: the handshake is in the listener's `ConnectionRegistry` from its start (its
/// handle goes on to the connection it becomes), so a drain waits for it. A drain that begins
/// during the handshake lets it finish; the connection then answers its first request with
/// `Connection: close` and closes after it. The drain's time running out closes it.
final class LoopTLSHandshake: LoopExitHandler, LoopDrainable {
    private let gate: GateEventLoop
    private let nio: HTTPRouteNIO
    private let peer: String
    /// -1 once handed on or closed.
    private var fd: Int32
    private let session: LoopTLSSession
    private var interest = Interest.read
    private var timer: LoopTimer?
    /// How the listener's registry holds the connection, from the handshake on.
    private let handle: LoopConnectionHandle
    /// A drain began during the handshake.
    private var quiescing = false

    private init(fd: Int32, gate: GateEventLoop, nio: HTTPRouteNIO, peer: String, session: LoopTLSSession) {
        self.fd = fd
        self.gate = gate
        self.nio = nio
        self.peer = peer
        self.session = session
        handle = LoopConnectionHandle(loop: gate.loop)
    }

    /// Starts the handshake of `fd` on `loop` (on its thread); `prefix`: the bytes already read
    /// (the ClientHello); `timeoutMillis`: what is left of the handshake timeout; `read`: the
    /// registration of the ClientHello's read, which the handshake's replaces (quiesced if a
    /// drain began meanwhile). Returns the handshake's registration (nil when it could not
    /// start: the socket is closed, `read` still registered).
    @discardableResult
    static func start(
        fd: Int32, prefix: [UInt8], context: LoopTLSContext, serverName: String?, loop: GateLoop, nio: HTTPRouteNIO, peer: String,
        timeoutMillis: UInt64, replacing read: ClientHelloRead? = nil
    ) -> LoopConnectionHandle? {
        let session: LoopTLSSession
        do {
            session = try LoopTLSSession(context: context, fd: fd, prefix: prefix, serverName: serverName)
        } catch {
            nio.settings.log.error("TLS session not created", metadata: ["src": .string(peer), "error": .string("\(error)")])
            Glibc.close(fd)
            return nil
        }
        _ = try? Sys.setInt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, 1, "setsockopt(TCP_NODELAY)")
        let handshake = LoopTLSHandshake(fd: fd, gate: loop.eventLoop, nio: nio, peer: peer, session: session)
        guard loop.register(fd, Interest.read, handshake) else {
            session.close(notify: false)
            Glibc.close(fd)
            return nil
        }
        handshake.handle.connection = handshake
        nio.connections.add(handshake.handle, replacing: read)
        handshake.timer = loop.schedule(afterMillis: max(timeoutMillis, 1)) { [weak handshake] in
            handshake?.fail("TLS handshake timed out")
        }
        handshake.step()
        return handshake.handle
    }

    func ready(fd: Int32, events: UInt32) { step() }

    private func step() {
        guard fd >= 0 else { return }
        switch session.handshake() {
        case .done:
            timer?.cancel()
            gate.loop.deregister(fd)
            let socket = fd
            fd = -1
            nio.settings.log.debug(
                "TLS handshake finished on the gate loop",
                metadata: [
                    "src": .string(peer), "sni": .string(session.serverName ?? "-"), "alpn": .string(session.alpn ?? "-"),
                    "version": .string(session.version),
                ])
            HTTP1LoopConnection.start(fd: socket, loop: gate.loop, nio: nio, peer: peer, tls: session, handshake: (handle, quiescing))
        case .wantRead:
            watch(Interest.read)
        case .wantWrite:
            watch(Interest.write)
        case .failed(let reason):
            fail(reason)
        }
    }

    private func watch(_ events: UInt32) {
        guard events != interest else { return }
        interest = events
        gate.loop.modify(fd, events)
    }

    private func fail(_ reason: String) {
        guard fd >= 0 else { return }
        let settings = nio.settings
        settings.accessLog.info(
            "TLS handshake failed",
            metadata: [
                "listener": .string(settings.listenerName), "src": .string(peer), "sni": .string(session.serverName ?? "-"),
                "error": .string(reason),
            ])
        close()
    }

    func quiesce() { quiescing = true }

    /// The drain's time is up (shutdown): the handshake ends as a failed one.
    func closeNow() { fail("shutdown: drain timeout") }

    func loopExited() { close() }

    private func close() {
        guard fd >= 0 else { return }
        timer?.cancel()
        gate.loop.deregister(fd)
        session.close(notify: false)
        Glibc.close(fd)
        fd = -1
        nio.connections.remove(handle)
    }
}
