import CLinux
import Glibc
import NIOCore

/// Bytes waiting for a non-blocking socket, written in order: one buffer with `send`, several
/// with one `sendmsg` (a gather write), partial writes kept for the next try (the owner waits
/// for `EPOLLOUT`). `written` callbacks run once every byte queued before them has been
/// written (or the queue is dropped). Hand-written instead of NIO's pending-writes manager:
/// no promise per write, no channel machinery; written buffers are released at once, so their
/// owners can reuse the storage (`ByteBuffer.clear` without allocating).
struct SocketWriteQueue {
    private var buffers: [ByteBuffer] = []
    /// The first buffer not yet written whole.
    private var first = 0
    /// Bytes queued and not written.
    private(set) var bytes = 0
    /// Bytes queued and written since the start (callbacks wait for a count of these).
    private var queuedTotal = 0
    private var writtenTotal = 0
    private var callbacks: [(after: Int, call: () -> Void)] = []
    /// Storage for coalesced TLS writes (`write(tls:)`), kept for the next.
    private var spare: ByteBuffer?
    /// A placeholder for the buffers `coalesce` merged (drops their storage).
    private static let empty = ByteBuffer()

    enum Outcome {
        /// Everything is written.
        case done
        /// The socket takes no more now; the rest waits.
        case blocked
        case failed(Int32)
    }

    var isEmpty: Bool { bytes == 0 }

    mutating func append(_ buffer: ByteBuffer, written: (() -> Void)? = nil) {
        let count = buffer.readableBytes
        if count > 0 {
            buffers.append(buffer)
            bytes += count
            queuedTotal += count
        }
        if let written {
            if queuedTotal == writtenTotal { written() } else { callbacks.append((queuedTotal, written)) }
        }
    }

    /// Writes as much as the socket takes.
    mutating func write(to fd: Int32) -> Outcome {
        writeFront { queue in
            queue.buffers.count - queue.first == 1
                ? queue.buffers[queue.first].withUnsafeReadableBytes { Sys.write(fd, $0.baseAddress!, $0.count) } : queue.gather(fd)
        }
    }

    /// Writes from the front of the queue with `write` (one call, some bytes) until everything
    /// is written, the writer blocks or fails.
    @inline(__always)
    private mutating func writeFront(_ write: (inout SocketWriteQueue) -> Sys.IO) -> Outcome {
        while first < buffers.count {
            switch write(&self) {
            case .bytes(let n):
                consume(n)
            case .wouldBlock, .eof:
                // The buffers written whole are let go now (their owners reuse the storage).
                if first > 0 {
                    buffers.removeFirst(first)
                    first = 0
                }
                runCallbacks()
                return .blocked
            case .error(let e):
                return .failed(e)
            }
        }
        // One buffer (the usual case) is dropped without `removeAll`'s generic range
        // replacement (`swift_arrayDestroy` per write).
        if buffers.count == 1 { buffers.removeLast() } else { buffers.removeAll(keepingCapacity: true) }
        first = 0
        runCallbacks()
        return .done
    }

    /// Writes as much as the TLS session takes (`HTTP1LoopConnection` over TLS): buffers one
    /// `SSL_write` each (a TLS record per 16 KiB), small ones queued together first copied into
    /// one so they leave as one record (as `TLSWriteCoalescer` does on NIO, and nginx's
    /// `ssl_buffer_size`). A write that blocks is retried with the same first bytes, as OpenSSL
    /// requires (the record it made is kept; the buffer may move and grow).
    mutating func write(tls: LoopTLSSession) -> Outcome {
        writeFront { queue in
            queue.coalesce()
            return queue.buffers[queue.first].withUnsafeReadableBytes { tls.write($0) }
        }
    }

    /// The plaintext of one TLS record (RFC 8446 §5.1).
    static let recordSize = 16384

    /// Copies the buffers after the first into one while they fit in a record (into `spare`,
    /// whose storage is reused once the socket has taken it).
    private mutating func coalesce() {
        var last = first
        var total = buffers[first].readableBytes
        while last + 1 < buffers.count, total + buffers[last + 1].readableBytes <= Self.recordSize {
            last += 1
            total += buffers[last].readableBytes
        }
        guard last > first else { return }
        var merged = spare ?? ByteBufferAllocator().buffer(capacity: Self.recordSize)
        spare = nil
        merged.clear(minimumCapacity: total)
        for i in first...last {
            merged.writeImmutableBuffer(buffers[i])
            buffers[i] = Self.empty
        }
        buffers[last] = merged
        spare = merged
        first = last
    }

    /// Drops what is queued (the socket is closed); the callbacks run.
    mutating func drop() {
        buffers.removeAll()
        first = 0
        bytes = 0
        writtenTotal = queuedTotal
        runCallbacks()
    }

    /// One `sendmsg` over up to 64 queued buffers. The pointers are taken out of
    /// `withUnsafeReadableBytes`: the queue holds every buffer (so its storage) and nothing
    /// mutates them until the call returns, as NIO's own gather writes do.
    private func gather(_ fd: Int32) -> Sys.IO {
        let count = min(buffers.count - first, 64)
        return withUnsafeTemporaryAllocation(of: iovec.self, capacity: count) { iov in
            for i in 0..<count {
                buffers[first + i].withUnsafeReadableBytes { raw in
                    iov[i] = iovec(iov_base: UnsafeMutableRawPointer(mutating: raw.baseAddress), iov_len: raw.count)
                }
            }
            var message = msghdr()
            message.msg_iov = iov.baseAddress
            message.msg_iovlen = count
            while true {
                let n = Glibc.sendmsg(fd, &message, Int32(MSG_NOSIGNAL))
                if n >= 0 { return .bytes(n) }
                let e = errno
                if e == EINTR { continue }
                return (e == EAGAIN || e == EWOULDBLOCK) ? .wouldBlock : .error(e)
            }
        }
    }

    private mutating func consume(_ written: Int) {
        var n = written
        bytes -= n
        writtenTotal += n
        while n > 0 {
            let size = buffers[first].readableBytes
            if n >= size {
                // Kept until the write ends (`write(to:)` lets go of every written buffer
                // then): a placeholder stored here cost a retain and a `swift_once` per buffer.
                n -= size
                first += 1
            } else {
                buffers[first].moveReaderIndex(forwardBy: n)
                n = 0
            }
        }
    }

    private mutating func runCallbacks() {
        guard !callbacks.isEmpty else { return }
        var due = 0
        while due < callbacks.count, callbacks[due].after <= writtenTotal { due += 1 }
        guard due > 0 else { return }
        let calls = callbacks[0..<due].map(\.call)
        callbacks.removeFirst(due)
        calls.forEach { $0() }
    }
}

extension GateEventLoop {
    /// Reads once from `fd` into the loop's read buffer; the bytes read are returned as a
    /// buffer sharing its storage (see `readBuffer`).
    func read(_ fd: Int32) -> (Sys.IO, ByteBuffer) {
        readBuffer.clear()
        let result = readBuffer.withUnsafeMutableWritableBytes { Sys.read(fd, $0.baseAddress!, $0.count) }
        if case .bytes(let n) = result { readBuffer.moveWriterIndex(forwardBy: n) }
        return (result, readBuffer)
    }
}

/// A backend connection that is a raw non-blocking socket on a gate loop, for the HTTP/1.1
/// clients served there (`HTTP1LoopConnection`): the request bytes go out through a
/// `SocketWriteQueue`, the response is read into the loop's read buffer and parsed by the
/// connection's `BackendResponseReader`. Everything runs on the loop thread; the socket is
/// registered with the loop for reading as long as it is open (level-triggered), so a pooled
/// connection the backend closes is noticed and dropped at once.
final class LoopBackendConnection: BackendConnection, LoopExitHandler {
    let gate: GateEventLoop
    /// -1 once closed.
    private(set) var fd: Int32
    private var out = SocketWriteQueue()
    /// A head or chunk line split between reads.
    private var leftover: ByteBuffer?
    private var interest = Interest.read
    /// Reading stopped while the client cannot take more of the response (`pauseReading`).
    private var paused = false
    /// Called once when the connection closes (the pool drops it from its idle list).
    var onClose: (() -> Void)?

    /// Takes `fd` (connected, non-blocking) and watches it on `gate`'s loop (on its thread).
    init(fd: Int32, destination: Destination, gate: GateEventLoop) throws {
        self.fd = fd
        self.gate = gate
        super.init(destination: destination)
        guard gate.loop.register(fd, Interest.read, self) else {
            let e = errno
            Glibc.close(fd)
            self.fd = -1
            throw GateError(.syscall, "epoll_ctl(backend \(destination))", errno: e)
        }
    }

    override var eventLoop: any EventLoop { gate }
    override var isActive: Bool { fd >= 0 }

    override func write(_ buffer: ByteBuffer, written: (() -> Void)? = nil) {
        guard fd >= 0 else {
            written?()
            return
        }
        out.append(buffer, written: written)
    }

    override func flush() {
        guard fd >= 0 else { return }
        switch out.write(to: fd) {
        case .done:
            update(write: false)
        case .blocked:
            update(write: true)
        case .failed:
            shut(notify: true)
        }
    }

    override func close() {
        shut(notify: true)
    }

    /// The loop stops: closed without telling the exchange (its client connection, on the same
    /// loop, is closed too and ends it; a retry must not dial on a loop that is gone).
    func loopExited() { shut(notify: false) }

    /// The client connection cannot take more now: the response is not read further.
    override func pauseReading() {
        guard !paused else { return }
        paused = true
        update(write: interest & Interest.write != 0)
    }

    override func resumeReading() {
        guard paused else { return }
        paused = false
        update(write: interest & Interest.write != 0)
    }

    private func update(write: Bool) {
        guard fd >= 0 else { return }
        let wanted = (paused ? 0 : Interest.read) | (write ? Interest.write : 0)
        if wanted != interest {
            interest = wanted
            gate.loop.modify(fd, wanted)
        }
    }

    func ready(fd: Int32, events: UInt32) {
        if events & Interest.write != 0 {
            flush()
        }
        guard self.fd >= 0, events & Interest.read != 0 || events & Interest.error != 0 else { return }
        guard !paused || events & Interest.error != 0 else { return }
        guard let delegate else {
            // Bytes (or the close) of an idle connection: nobody waits for them.
            shut(notify: false)
            return
        }
        let (result, bytes) = gate.read(fd)
        switch result {
        case .bytes:
            received(bytes, delegate)
        case .wouldBlock:
            return
        case .eof, .error:
            shut(notify: true)
        }
    }

    /// Hands the response's events to `delegate` (as `BackendHandler` does on NIO channels).
    private func received(_ bytes: ByteBuffer, _ delegate: any BackendDelegate) {
        var buffer = bytes
        if var earlier = leftover {
            leftover = nil
            earlier.writeBuffer(&buffer)
            buffer = earlier
        }
        do {
            while true {
                let event = try reader.next(&buffer)
                if case .needMore = event { break }
                delegate.backendRead(event)
                if case .end = event {
                    // The exchange ended: what follows belongs to no request.
                    if buffer.readableBytes > 0 {
                        shut(notify: false)
                        return
                    }
                } else if self.delegate !== delegate || fd < 0 {
                    // The exchange dropped this response to send its request again.
                    return
                }
            }
        } catch {
            delegate.backendFailed("backend sent an invalid response: \(error)")
            shut(notify: false)
            return
        }
        if buffer.readableBytes > 0 { leftover = buffer }
        self.delegate?.backendReadComplete()
    }

    /// Closes the socket; `notify`: a delegate still set gets the end of a body delimited by
    /// the close and `backendClosed` (as a NIO channel's `channelInactive`).
    private func shut(notify: Bool) {
        guard fd >= 0 else { return }
        gate.loop.deregister(fd)
        Glibc.close(fd)
        fd = -1
        leftover = nil
        out.drop()
        let closed = onClose
        onClose = nil
        closed?()
        guard notify, let delegate else { return }
        if let end = reader.closed() { delegate.backendRead(end) }
        self.delegate?.backendClosed(self)
    }
}

/// A non-blocking connect to a backend on a gate loop: the addresses in order, all within one
/// timeout (NIO's `connectTimeout` for NIO-served clients).
final class LoopBackendConnect: LoopExitHandler {
    let gate: GateEventLoop
    let destination: Destination
    private var addresses: ArraySlice<SocketAddress>
    private var fd: Int32 = -1
    private var address: SocketAddress?
    private var timer: LoopTimer?
    private var completion: ((Result<Int32, any Error>) -> Void)?
    private var lastError: any Error

    private init(gate: GateEventLoop, destination: Destination, addresses: [SocketAddress], completion: @escaping (Result<Int32, any Error>) -> Void) {
        self.gate = gate
        self.destination = destination
        self.addresses = addresses[...]
        self.completion = completion
        lastError = GateError(.resolve, "no address for \(destination)")
    }

    /// Connects to the first address that accepts, within `timeout` seconds (on the loop thread).
    static func start(
        _ addresses: [SocketAddress], destination: Destination, on gate: GateEventLoop, timeout: Double,
        _ completion: @escaping (Result<Int32, any Error>) -> Void
    ) {
        let connect = LoopBackendConnect(gate: gate, destination: destination, addresses: addresses, completion: completion)
        connect.timer = gate.loop.schedule(afterMillis: UInt64(max(timeout, 0.001) * 1000)) { [weak connect] in
            connect?.finish(.failure(GateError(.timeout, "connect to \(destination) timed out after \(timeout) s")))
        }
        connect.next()
    }

    private func next() {
        while let address = addresses.popFirst() {
            do {
                let (s, connected) = try Sys.startConnect(address)
                if connected { return finish(.success(s)) }
                guard gate.loop.register(s, Interest.write, self) else {
                    let e = errno
                    Glibc.close(s)
                    throw GateError(.syscall, "epoll_ctl(connect \(address))", errno: e)
                }
                fd = s
                self.address = address
                return
            } catch {
                lastError = error
            }
        }
        finish(.failure(lastError))
    }

    /// The loop stops: the socket is closed and nobody is called back (see
    /// `LoopBackendConnection.loopExited`).
    func loopExited() {
        completion = nil
        timer?.cancel()
        gate.loop.deregister(fd)
        Glibc.close(fd)
        fd = -1
    }

    func ready(fd: Int32, events: UInt32) {
        gate.loop.deregister(fd)
        self.fd = -1
        do {
            try Sys.finishConnect(fd, address!)
            finish(.success(fd))
        } catch {
            Glibc.close(fd)
            lastError = error
            next()
        }
    }

    private func finish(_ result: Result<Int32, any Error>) {
        guard let completion else {
            if case .success(let s) = result { Glibc.close(s) }
            return
        }
        self.completion = nil
        timer?.cancel()
        if fd >= 0 {
            gate.loop.deregister(fd)
            Glibc.close(fd)
            fd = -1
        }
        completion(result)
    }
}

extension BackendPool {
    /// Connects to `target` (a `direct` route; `destination` is the backend as configured) on
    /// `gate`'s loop: IP literals at once, names resolved off the loop first.
    func connectOnGateLoop(
        _ target: Destination, _ destination: Destination, on gate: GateEventLoop,
        _ completion: @escaping (Result<BackendConnection, any Error>) -> Void
    ) {
        let timeout = connectTimeout
        let connected: (Result<Int32, any Error>) -> Void = { result in
            completion(result.flatMap { fd in Result { try self.adopted(fd, destination, on: gate, tcp: true) } })
        }
        if let literal = try? SocketAddress(host: target.host, port: target.port) {
            LoopBackendConnect.start([literal], destination: target, on: gate, timeout: timeout, connected)
            return
        }
        let resolved = gate.makePromise(of: [SocketAddress].self)
        resolved.completeWithTask { try await Resolver.resolve(target) }
        resolved.futureResult.assumeIsolated().whenComplete { result in
            switch result {
            case .failure(let error): connected(.failure(error))
            case .success(let addresses): LoopBackendConnect.start(addresses, destination: target, on: gate, timeout: timeout, connected)
            }
        }
    }

    /// A connected socket as a pooled backend connection on `gate`'s loop; it leaves its idle
    /// list when it closes. `tcp`: set TCP_NODELAY (an upstream's socket may be a socketpair).
    func adopted(_ fd: Int32, _ destination: Destination, on gate: GateEventLoop, tcp: Bool = false) throws -> BackendConnection {
        if tcp { _ = try? Sys.setInt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, 1, "setsockopt(TCP_NODELAY)") }
        let connection = try LoopBackendConnection(fd: fd, destination: destination, gate: gate)
        let list = box(for: gate).list(destination)
        connection.onClose = { [unowned connection] in
            list.connections.removeAll { $0 === connection }
        }
        return connection
    }
}
