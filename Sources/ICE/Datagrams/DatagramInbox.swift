import Synchronization

/// Received datagrams waiting for their consumer.
///
/// The libnice receive callback (on the GLib thread) appends; the single consumer takes the
/// whole backlog in one lock round-trip and hands it out one by one, so a burst costs one
/// wakeup. When the consumer falls behind by `limit` datagrams, new ones are dropped and
/// counted, as a full UDP socket buffer would.
///
/// The consumer is either a task iterating ``ICEDatagrams`` or a loop consumer
/// (``setLoopConsumer(_:)``): a handler the flush job calls on the loop thread with the whole
/// batch, after the I/O of the iteration that read it (never inside the libnice callback).
final class DatagramInbox: Sendable {
    /// The loop consumer in a box: a closure read out of the Mutex's generic storage would be
    /// wrapped in reabstraction thunks on every read.
    final class LoopConsumer: Sendable {
        let handle: @Sendable ([[UInt8]]) -> Void
        init(_ handle: @escaping @Sendable ([[UInt8]]) -> Void) { self.handle = handle }
    }

    private struct State {
        var queue: [[UInt8]] = []
        var waiter: CheckedContinuation<[[UInt8]], Never>?
        var consumer: LoopConsumer?
        var finished = false
        var dropped = 0
        var flushScheduled = false
    }

    /// What ``push(_:)`` asks of its caller.
    enum PushResult {
        /// Queued (or dropped); nothing to do.
        case queued
        /// The consumer is waiting: call ``flush()`` once this I/O batch is done.
        case flushNeeded
    }

    private let state = Mutex(State())
    let limit: Int

    init(limit: Int) { self.limit = limit }

    /// Adds one datagram (dropped when the consumer is `limit` behind, or finished). Does not
    /// wake the consumer itself: the caller schedules one ``flush()`` per batch, so a burst
    /// read in one loop iteration costs one wakeup.
    func push(_ datagram: [UInt8]) -> PushResult {
        state.withLock { s -> PushResult in
            if s.finished { return .queued }
            if s.queue.count >= limit {
                s.dropped += 1
                return .queued
            }
            s.queue.append(datagram)
            if s.waiter != nil || s.consumer != nil, !s.flushScheduled {
                s.flushScheduled = true
                return .flushNeeded
            }
            return .queued
        }
    }

    /// Hands everything queued to a waiting consumer. With a loop consumer this must run on the
    /// loop thread (a job), since the consumer's handler runs here.
    func flush() {
        let (waiter, consumer, batch) = state.withLock { s -> (CheckedContinuation<[[UInt8]], Never>?, LoopConsumer?, [[UInt8]]) in
            s.flushScheduled = false
            guard s.waiter != nil || s.consumer != nil, !s.queue.isEmpty else { return (nil, nil, []) }
            let w = s.waiter
            s.waiter = nil
            defer { s.queue.removeAll(keepingCapacity: true) }
            return (w, s.consumer, s.queue)
        }
        if let consumer { consumer.handle(batch) } else { waiter?.resume(returning: batch) }
    }

    /// Makes `handler` the consumer (instead of a task iterating ``ICEDatagrams``). Returns true
    /// when datagrams are already queued: the caller then schedules a ``flush()`` on the loop.
    func setLoopConsumer(_ handler: @escaping @Sendable ([[UInt8]]) -> Void) -> Bool {
        state.withLock { s in
            precondition(s.waiter == nil, "ICEAgent.datagrams has a single consumer")
            s.consumer = LoopConsumer(handler)
            guard !s.queue.isEmpty, !s.flushScheduled else { return false }
            s.flushScheduled = true
            return true
        }
    }

    /// Ends the sequence: the consumer gets what is queued, then nil.
    func finish() {
        let waiter = state.withLock { s -> CheckedContinuation<[[UInt8]], Never>? in
            s.finished = true
            s.consumer = nil
            defer { s.waiter = nil }
            return s.waiter
        }
        waiter?.resume(returning: [])
    }

    /// Datagrams dropped because the consumer was `limit` behind.
    var droppedCount: Int { state.withLock { $0.dropped } }

    /// Everything queued, waiting if nothing is; empty once finished and drained, or when the
    /// waiting task is cancelled.
    func takeAll() async -> [[UInt8]] {
        if let ready = state.withLock({ s -> [[UInt8]]? in
            if !s.queue.isEmpty || s.finished {
                defer { s.queue.removeAll(keepingCapacity: true) }
                return s.queue
            }
            return nil
        }) {
            return ready
        }
        return await withTaskCancellationHandler {
            await withCheckedContinuation { cont in
                let immediate = state.withLock { s -> [[UInt8]]? in
                    if !s.queue.isEmpty || s.finished || Task.isCancelled {
                        defer { s.queue.removeAll(keepingCapacity: true) }
                        return s.queue
                    }
                    precondition(s.waiter == nil, "ICEAgent.datagrams has a single consumer")
                    s.waiter = cont
                    return nil
                }
                if let immediate { cont.resume(returning: immediate) }
            }
        } onCancel: {
            let waiter = state.withLock { s -> CheckedContinuation<[[UInt8]], Never>? in
                defer { s.waiter = nil }
                return s.waiter
            }
            waiter?.resume(returning: [])
        }
    }
}

/// The datagrams received on the selected pair, in arrival order. Single consumer: iterate it
/// from one task. Ends after ``ICEAgent/close()``.
public struct ICEDatagrams: AsyncSequence, Sendable {
    public typealias Element = [UInt8]
    let inbox: DatagramInbox

    /// Iterator handing out a locally held batch before taking the next one.
    public struct AsyncIterator: AsyncIteratorProtocol {
        let inbox: DatagramInbox
        var batch: [[UInt8]] = []
        var index = 0

        /// The next datagram, or nil once the agent is closed.
        public mutating func next() async -> [UInt8]? {
            if index == batch.count {
                batch = await inbox.takeAll()
                index = 0
                if batch.isEmpty { return nil }
            }
            defer { index += 1 }
            return batch[index]
        }
    }

    public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(inbox: inbox) }
}
