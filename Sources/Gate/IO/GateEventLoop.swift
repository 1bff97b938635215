import Dispatch
import Glibc
import NIOCore

/// A `GateLoop` seen as SwiftNIO's `EventLoop`, so code written against NIO's loop API
/// (`Exchange`, `DeadlineTimer`, promises and futures, `NIOLoopBound`) runs unchanged on the
/// gate's own epoll loops — the HTTP/1.1 data path of the HTTPRoute gateway
/// (`HTTP1LoopConnection`) serves its client and backend sockets there without a NIO channel.
///
/// One per `GateLoop` (`GateLoop.eventLoop`), created with it. `execute` queues work for the
/// loop thread; scheduled tasks are `LoopTimer`s (millisecond resolution, as the loop's
/// `epoll_wait` timeout). It cannot be given to a NIO bootstrap (no NIO channel can live on it).
/// `shutdownGracefully` is refused: the loop belongs to its `GateLoopGroup`.
public final class GateEventLoop: EventLoop, @unchecked Sendable {  // loop-thread state (`readBuffer`) is touched on the loop thread only
    unowned let loop: GateLoop
    /// The read buffer of the HTTP/1.1 sockets of this loop: cleared before each read and
    /// handed on as slices; its storage is reused whenever nobody kept a slice of the previous
    /// read (copy-on-write allocates a new one otherwise), as NIO's pooled receive buffer.
    var readBuffer: ByteBuffer

    /// Bytes a read may fill at most (the read buffer's capacity).
    static let readSize = 32 * 1024

    init(_ loop: GateLoop) {
        self.loop = loop
        readBuffer = ByteBufferAllocator().buffer(capacity: Self.readSize)
    }

    public var inEventLoop: Bool { loop.isLoopThread }

    public func execute(_ task: @escaping @Sendable () -> Void) {
        loop.execute(task)
    }

    public func scheduleTask<T>(deadline: NIODeadline, _ task: @escaping @Sendable () throws -> T) -> Scheduled<T> {
        let nanos = deadline.uptimeNanoseconds
        let now = NIODeadline.now().uptimeNanoseconds
        let millis = nanos > now ? (nanos - now + 999_999) / 1_000_000 : 0
        return schedule(afterMillis: millis, task)
    }

    public func scheduleTask<T>(in delay: TimeAmount, _ task: @escaping @Sendable () throws -> T) -> Scheduled<T> {
        let nanos = max(delay.nanoseconds, 0)
        return schedule(afterMillis: UInt64((nanos + 999_999) / 1_000_000), task)
    }

    private func schedule<T>(afterMillis millis: UInt64, _ task: @escaping @Sendable () throws -> T) -> Scheduled<T> {
        let promise = makePromise(of: T.self)
        let timer = TimerHandle()
        let start: @Sendable () -> Void = { [self] in
            let id = nextTimerID
            nextTimerID += 1
            // Failed when the loop exits before the timer fires (a promise must not leak).
            unfired[id] = { promise.fail(EventLoopError.shutdown) }
            timer.timer = loop.schedule(afterMillis: millis) { [self] in
                unfired[id] = nil
                do { promise.assumeIsolatedUnsafeUnchecked().succeed(try task()) } catch { promise.fail(error) }
            }
            timer.id = id
        }
        if inEventLoop {
            start()
        } else if !loop.execute(start) {
            promise.fail(EventLoopError.shutdown)
        }
        return Scheduled(promise: promise) { [self] in
            let cancel: @Sendable () -> Void = { [self] in
                guard let pending = timer.timer, pending.work != nil else { return }
                pending.cancel()
                unfired[timer.id] = nil
                promise.fail(EventLoopError.cancelled)
            }
            if inEventLoop { cancel() } else { execute(cancel) }
        }
    }

    /// Scheduled tasks not fired or cancelled yet, by id: their promises fail when the loop exits.
    private var unfired: [Int: () -> Void] = [:]
    private var nextTimerID = 0

    /// The loop is exiting (on its thread): the scheduled tasks that will never run fail.
    func exited() {
        let pending = unfired
        unfired = [:]
        for fail in pending.values { fail() }
    }

    public func preconditionInEventLoop(file: StaticString, line: UInt) {
        precondition(inEventLoop, "not on gate loop \(loop.index)", file: file, line: line)
    }

    public func preconditionNotInEventLoop(file: StaticString, line: UInt) {
        precondition(!inEventLoop, "on gate loop \(loop.index)", file: file, line: line)
    }

    public func shutdownGracefully(queue: DispatchQueue, _ callback: @escaping @Sendable ((any Error)?) -> Void) {
        queue.async { callback(EventLoopError.unsupportedOperation) }
    }

    /// The loop timer behind a scheduled task (set and read on the loop thread only).
    private final class TimerHandle: @unchecked Sendable {  // touched on the loop thread only
        var timer: LoopTimer?
        var id = 0
    }
}
