import CLinux
import Foundation
import Glibc
import NIOCore
import Synchronization

/// Receives readiness events for descriptors registered on a `GateLoop`. Called on the loop thread.
protocol LoopHandler: AnyObject {
    func ready(fd: Int32, events: UInt32)
}

/// A loop handler that owns its descriptor and must close it when the loop exits (connections
/// that live only on the loop, with no relay or task that would close them otherwise).
protocol LoopExitHandler: LoopHandler {
    /// The loop is exiting (on its thread): close the descriptor.
    func loopExited()
}

/// Readiness bits, as epoll reports them.
enum Interest {
    // Computed, not `static let`: a stored global initialised from a C constant is set up
    // lazily, so every read went through `swift_once` (several times per request on the
    // HTTP/1.1 path); reading the C constant is a plain load.
    static var read: UInt32 { UGATE_EPOLLIN }
    static var write: UInt32 { UGATE_EPOLLOUT }
    static var error: UInt32 { UGATE_EPOLLERR | UGATE_EPOLLHUP }
}

/// A one-shot timer on a loop; `cancel()` on the loop thread.
final class LoopTimer {
    let deadline: UInt64
    var work: (() -> Void)?
    init(deadline: UInt64, work: @escaping () -> Void) {
        self.deadline = deadline
        self.work = work
    }
    func cancel() { work = nil }
}

/// A binary min-heap of timers by deadline. Cancelled timers stay until they are due (a connect
/// timeout is cancelled thousands of times a second under load; removing each would cost more).
struct TimerHeap {
    private var items: [LoopTimer] = []

    var top: LoopTimer? { items.first }

    mutating func push(_ timer: LoopTimer) {
        items.append(timer)
        var i = items.count - 1
        while i > 0 {
            let parent = (i - 1) / 2
            guard items[i].deadline < items[parent].deadline else { break }
            items.swapAt(i, parent)
            i = parent
        }
    }

    @discardableResult
    mutating func pop() -> LoopTimer? {
        guard !items.isEmpty else { return nil }
        items.swapAt(0, items.count - 1)
        let first = items.removeLast()
        var i = 0
        while true {
            let l = 2 * i + 1
            let r = l + 1
            var smallest = i
            if l < items.count, items[l].deadline < items[smallest].deadline { smallest = l }
            if r < items.count, items[r].deadline < items[smallest].deadline { smallest = r }
            if smallest == i { break }
            items.swapAt(i, smallest)
            i = smallest
        }
        return first
    }
}

/// One epoll event loop on its own thread: the data path of the gate (raw, non-blocking fds,
/// so `splice(2)` and large-buffer copies need no extra hop). Everything a loop owns (handlers,
/// relays, timers, buffer and pipe pools) is touched only on its thread; other threads hand it
/// work with `execute`.
public final class GateLoop: @unchecked Sendable {  // mutable state is loop-thread only; `pending` is behind a Mutex
    let index: Int
    private let epfd: Int32
    private let wakeFd: Int32
    /// Registered handlers by descriptor number (descriptors are small integers). The epoll
    /// token of a registration is its descriptor plus a generation in the upper half, so an
    /// event still queued for a descriptor that was closed and reused in the same batch finds
    /// no handler. An array instead of a dictionary by token: one lookup per event, no hashing.
    private var slots: [Registration] = []
    private var generation: UInt32 = 0
    private struct Registration {
        var token: UInt64 = 0
        var handler: (any LoopHandler)?
    }
    private var timers = TimerHeap()
    /// Work queued for the loop thread; `closed` once the loop has exited (nothing is queued then).
    private struct Pending {
        var work: [@Sendable () -> Void] = []
        var closed = false
    }
    private let pending = Mutex(Pending())
    private let stopped = Atomic<Bool>(false)
    private var thread: Thread?
    /// Monotonic milliseconds, refreshed once per loop iteration.
    private(set) var now: UInt64 = GateLoop.monotonicMillis()
    /// Live relays of this loop by stream id (for idle sweeps and /debug/streams).
    var relays: [UInt64: Relay] = [:]
    let buffers: BufferPool
    let pipes: PipePool
    /// This loop as a SwiftNIO `EventLoop` (see `GateEventLoop`).
    public private(set) lazy var eventLoop = GateEventLoop(self)
    /// The loop thread's id (`pthread_self`), 0 until it runs: `isLoopThread`.
    private let threadID = Atomic<UInt>(0)
    /// Work the loop thread queued for itself, run after the current batch of events (no
    /// lock, no wake-up: see `later`).
    private var deferred: [() -> Void] = []
    /// The other halves of `pending.work` and `deferred`, swapped in while a batch runs.
    private var spareWork: [@Sendable () -> Void] = []
    private var spareDeferred: [() -> Void] = []
    /// The share of its last window (at least `busyWindowNanos`, closed when the loop next
    /// waits) the loop spent outside `epoll_wait`, in permille; written by the loop thread,
    /// read by any (`GateLoopGroup.packed`). A loop that has waited since keeps its last
    /// value until it wakes (at most a second later: the longest wait).
    private let busyPermille = Atomic<Int>(0)
    static let busyWindowNanos: UInt64 = 100_000_000

    /// See `busyPermille`.
    var busyShare: Int { busyPermille.load(ordering: .relaxed) }

    init(index: Int, bufferSize: Int, pipeSize: Int) throws {
        self.index = index
        epfd = ugate_epoll_create()
        try Sys.check(epfd, "epoll_create1")
        wakeFd = ugate_eventfd()
        try Sys.check(wakeFd, "eventfd")
        buffers = BufferPool(size: bufferSize, keep: 4)
        pipes = PipePool(size: pipeSize, keep: 8)
        _ = eventLoop
        try Sys.check(ugate_epoll_ctl(epfd, UGATE_EPOLL_CTL_ADD, wakeFd, Interest.read, 0), "epoll_ctl(eventfd)")
    }

    static func monotonicMillis() -> UInt64 {
        monotonicNanos() / 1_000_000
    }

    static func monotonicNanos() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }

    func start() {
        let t = Thread { [self] in self.run() }
        thread = t
        t.start()
    }

    /// Runs `work` on the loop thread (from any thread). Returns false, dropping `work`, once the
    /// loop has exited. The wake-up is written under the queue's lock (only for the first queued
    /// item: the loop takes the whole queue per wake-up), so it never reaches the eventfd after
    /// the exiting loop closed it — that descriptor number may already belong to another socket.
    @discardableResult
    public func execute(_ work: @escaping @Sendable () -> Void) -> Bool {
        pending.withLock { pending in
            guard !pending.closed else { return false }
            pending.work.append(work)
            if pending.work.count == 1 {
                var one: UInt64 = 1
                _ = Glibc.write(wakeFd, &one, 8)
            }
            return true
        }
    }

    /// Stops the loop after the current iteration.
    func stop() {
        stopped.store(true, ordering: .relaxed)
        execute {}
    }

    /// Whether the caller runs on this loop's thread.
    var isLoopThread: Bool {
        let id = threadID.load(ordering: .relaxed)
        return id != 0 && id == UInt(pthread_self())
    }

    // MARK: loop-thread API

    /// Runs `work` on the loop thread after the events of the current iteration (called on
    /// the loop thread): `execute` from the loop itself would take the queue's lock and write
    /// the wake-up eventfd.
    func later(_ work: @escaping () -> Void) {
        deferred.append(work)
    }

    /// Registers `fd`; returns false (errno set) when epoll refuses it.
    @discardableResult
    func register(_ fd: Int32, _ events: UInt32, _ handler: any LoopHandler) -> Bool {
        guard fd >= 0 else { return false }
        generation = generation == UInt32.max ? 1 : generation + 1
        // Never 0 (the wake-up eventfd's token): the generation is at least 1.
        let token = UInt64(generation) << 32 | UInt64(UInt32(fd))
        guard ugate_epoll_ctl(epfd, UGATE_EPOLL_CTL_ADD, fd, events, token) == 0 else { return false }
        let index = Int(fd)
        if index >= slots.count { slots.append(contentsOf: repeatElement(Registration(), count: index + 1 - slots.count)) }
        slots[index] = Registration(token: token, handler: handler)
        return true
    }

    /// The registration of `fd`, if it is registered.
    private func registered(_ fd: Int32) -> Registration? {
        let index = Int(fd)
        guard index >= 0, index < slots.count, slots[index].handler != nil else { return nil }
        return slots[index]
    }

    func modify(_ fd: Int32, _ events: UInt32) {
        guard let registration = registered(fd) else { return }
        _ = ugate_epoll_ctl(epfd, UGATE_EPOLL_CTL_MOD, fd, events, registration.token)
    }

    /// Hands an existing registration of `fd` to another handler (no syscall).
    func adopt(_ fd: Int32, _ handler: any LoopHandler) {
        guard registered(fd) != nil else { return }
        slots[Int(fd)].handler = handler
    }

    /// Removes `fd` from the loop; call before closing it.
    func deregister(_ fd: Int32) {
        guard registered(fd) != nil else { return }
        slots[Int(fd)] = Registration()
        _ = ugate_epoll_ctl(epfd, UGATE_EPOLL_CTL_DEL, fd, 0, 0)
    }

    @discardableResult
    func schedule(afterMillis ms: UInt64, _ work: @escaping () -> Void) -> LoopTimer {
        let timer = LoopTimer(deadline: now + ms, work: work)
        timers.push(timer)
        return timer
    }

    private func run() {
        threadID.store(UInt(pthread_self()), ordering: .relaxed)
        // The kernel's thread name (`/proc/…/task/*/comm`, perf, top): Foundation's `Thread.name`
        // does not set it on Linux. At most 15 bytes.
        _ = ugate_set_thread_name("ugate-gate-\(index)")
        var datas = [UInt64](repeating: 0, count: 256)
        var events = [UInt32](repeating: 0, count: 256)
        var nextSweep = now + 1000
        var awake = GateLoop.monotonicNanos()
        var windowStart = awake
        var busy: UInt64 = 0
        while !stopped.load(ordering: .relaxed) {
            let wait: Int32
            if !deferred.isEmpty {
                wait = 0
            } else if let first = timers.top {
                wait = Int32(clamping: first.deadline > now ? min(first.deadline - now, 1000) : 0)
            } else {
                wait = 1000
            }
            let asleep = GateLoop.monotonicNanos()
            busy += asleep - awake
            if asleep - windowStart >= Self.busyWindowNanos {
                busyPermille.store(Int(busy * 1000 / (asleep - windowStart)), ordering: .relaxed)
                windowStart = asleep
                busy = 0
            }
            let n = ugate_epoll_wait(epfd, &datas, &events, 256, wait)
            awake = GateLoop.monotonicNanos()
            now = awake / 1_000_000
            if n > 0 {
                for i in 0..<Int(n) {
                    let token = datas[i]
                    if token == 0 {
                        var value: UInt64 = 0
                        _ = Glibc.read(wakeFd, &value, 8)
                        continue
                    }
                    // A handler closed earlier in this batch has no entry any more (or the
                    // descriptor now belongs to another registration: another generation).
                    let fd = Int32(truncatingIfNeeded: token & 0xFFFF_FFFF)
                    let index = Int(fd)
                    guard index < slots.count, slots[index].token == token, let handler = slots[index].handler else { continue }
                    handler.ready(fd: fd, events: events[i])
                }
            }
            // The queues are swapped with spare arrays, not copied and emptied: `removeAll(
            // keepingCapacity:)` on an array a copy still shares allocates new storage, which
            // cost an allocation per loop iteration (about 0.4 per HTTP/1.1 request).
            pending.withLock { pending in
                if !pending.work.isEmpty { swap(&pending.work, &spareWork) }
            }
            if !spareWork.isEmpty {
                for w in spareWork { w() }
                spareWork.removeAll(keepingCapacity: true)
            }
            while !deferred.isEmpty {
                swap(&deferred, &spareDeferred)
                for w in spareDeferred { w() }
                spareDeferred.removeAll(keepingCapacity: true)
            }
            while let first = timers.top, first.deadline <= now {
                timers.pop()
                first.work?()
            }
            if now >= nextSweep {
                nextSweep = now + 1000
                for relay in Array(relays.values) { relay.sweep(now: now) }
            }
        }
        for relay in Array(relays.values) { relay.abort(reason: "shutdown") }
        for registration in slots { (registration.handler as? any LoopExitHandler)?.loopExited() }
        let work = pending.withLock { pending -> [@Sendable () -> Void] in
            pending.closed = true
            let w = pending.work
            pending.work.removeAll()
            return w
        }
        for w in work { w() }
        eventLoop.exited()
        // Timers that never fired (the carried-stream sweep, connect timeouts) may hold what
        // holds this loop: drop them so the loop and its pools are freed.
        timers = TimerHeap()
        Glibc.close(epfd)
        Glibc.close(wakeFd)
    }
}

/// The gate's loops, one per core by default; new streams are spread round-robin.
public final class GateLoopGroup: Sendable {
    public let loops: [GateLoop]
    private let counter = Atomic<Int>(0)

    /// - Parameters:
    ///   - count: number of loop threads (default: one per core).
    ///   - bufferSize: copy buffer per active direction, taken from a pool on first data.
    ///   - pipeSize: splice pipe capacity per active direction (`F_SETPIPE_SZ`).
    public init(count: Int = System.coreCount, bufferSize: Int = 4 << 20, pipeSize: Int = 1 << 20) throws {
        loops = try (0..<max(1, count)).map { try GateLoop(index: $0, bufferSize: bufferSize, pipeSize: pipeSize) }
        for loop in loops { loop.start() }
    }

    public func next() -> GateLoop {
        loops[counter.wrappingAdd(1, ordering: .relaxed).oldValue % loops.count]
    }

    /// A loop for a new connection that may go to any of them: the first, in order, that was
    /// busy less than half of its last window, else the least busy. Connections gather on as
    /// few loops as their load needs — each loop then handles more events per wake-up, as
    /// nginx's workers do when one of them accepts from a shared socket — and spread once a
    /// loop is half busy.
    func packed() -> GateLoop {
        Self.packed(loops.map(\.busyShare)).map { loops[$0] } ?? loops[0]
    }

    /// The index `packed()` picks for these busy shares (permille), nil for none.
    static func packed(_ busy: [Int]) -> Int? {
        busy.firstIndex { $0 < 500 } ?? busy.indices.min { busy[$0] < busy[$1] }
    }

    public func shutdown() {
        for loop in loops { loop.stop() }
    }

    /// Snapshots of every live stream, collected on each loop's own thread, by ID.
    func snapshots() async -> [StreamSnapshot] {
        var all: [StreamSnapshot] = []
        for loop in loops {
            let part: [StreamSnapshot] = await withCheckedContinuation { c in
                // An exited loop (after `shutdown`) has no relays and runs nothing any more.
                if !loop.execute({ c.resume(returning: loop.relays.values.map { $0.snapshot() }) }) {
                    c.resume(returning: [])
                }
            }
            all += part
        }
        return all.sorted { $0.id < $1.id }
    }
}
