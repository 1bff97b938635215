import CNice
import CNiceShim
import Foundation
import Logging
import Synchronization

/// A GLib main context running on a thread this module owns.
///
/// Every libnice object (agents, their sockets and timers) is created, used and freed on this
/// thread only. Other threads hand it work with ``execute(_:)``: jobs go into a FIFO queue and
/// the context is woken once per batch (`g_main_context_invoke_full`), so a burst of sends from
/// another thread costs one wakeup, not one per job. libnice callbacks fire on this thread; they
/// never run user code, they only enqueue events into `AsyncStream`s and datagram inboxes that
/// consumers drain on their own tasks. See docs/ice.md.
public final class ICEEventLoop: @unchecked Sendable {  // unchecked: `context`/`mainLoop` are set once in init and GLib's invoke/wakeup are thread-safe; the job queue is a Mutex.
    /// The loop every ``ICEAgent`` uses unless told otherwise.
    public static let shared = try! ICEEventLoop(name: "ugate-ice-glib")  // cannot fail without a namespace

    /// A unit of work run on the loop thread.
    public typealias Job = @Sendable () -> Void

    let context: OpaquePointer
    private let mainLoop: OpaquePointer
    private let queue = Mutex(JobQueue())

    private struct JobQueue {
        var jobs: [Job] = []
        var wakeupPending = false
    }

    /// Starts a new GLib main context and its thread. Loops live for the whole process
    /// (jobs hold an unretained reference to the loop).
    ///
    /// - Parameter networkNamespace: a path such as `/var/run/netns/NAME`; the loop thread
    ///   enters that network namespace first, so every socket its agents open lives there
    ///   (multi-node tests, nodes serving several namespaces). Needs CAP_SYS_ADMIN.
    /// - Throws: ``ICEError`` when the namespace cannot be entered.
    public init(name: String, networkNamespace: String? = nil) throws {
        LibniceLog.install()
        guard let ctx = g_main_context_new(), let loop = g_main_loop_new(ctx, 0) else {
            fatalError("g_main_context_new failed: out of memory")
        }
        context = ctx
        mainLoop = loop
        let ready = DispatchSemaphore(value: 0)
        let c = LoopPointer(raw: ctx), l = LoopPointer(raw: loop)
        let setup = ResultBox<Int32>()
        let thread = Thread {
            if let networkNamespace {
                let rc = ugate_enter_net_namespace(networkNamespace)
                setup.result = .success(rc)
                guard rc == 0 else {
                    ready.signal()
                    return
                }
            }
            g_main_context_push_thread_default(c.raw)
            ready.signal()
            g_main_loop_run(l.raw)
            g_main_context_pop_thread_default(c.raw)
        }
        thread.name = name
        thread.start()
        ready.wait()
        if case .success(let rc) = setup.result, rc != 0 {
            g_main_loop_unref(loop)
            g_main_context_unref(ctx)
            throw ICEError(.invalidConfiguration, "cannot enter network namespace \(networkNamespace ?? ""): \(String(cString: strerror(-rc)))")
        }
    }

    /// True when called on this loop's thread.
    public var inLoop: Bool { g_main_context_is_owner(context) != 0 }

    /// Runs `job` on the loop thread, after every job handed in before it (FIFO).
    public func execute(_ job: @escaping Job) {
        let wake = queue.withLock { q -> Bool in
            q.jobs.append(job)
            if q.wakeupPending { return false }
            q.wakeupPending = true
            return true
        }
        if wake { scheduleDrain() }
    }

    /// An idle source, not g_main_context_invoke: invoke runs inline when called on the loop
    /// thread, which would run jobs inside a libnice callback. A source attached during an
    /// iteration runs in the next one, after the I/O of this one.
    private func scheduleDrain() {
        let source = g_idle_source_new()
        g_source_set_priority(source, G_PRIORITY_DEFAULT)
        g_source_set_callback(source, { data in
            Unmanaged<ICEEventLoop>.fromOpaque(data!).takeUnretainedValue().drain()
            return 0  // G_SOURCE_REMOVE
        }, Unmanaged.passUnretained(self).toOpaque(), nil)
        g_source_attach(source, context)
        g_source_unref(source)
    }

    /// Runs `job` on the loop thread and returns its result to the awaiting task.
    public func submit<T: Sendable>(_ job: @escaping @Sendable () -> T) async -> T {
        await withCheckedContinuation { (cont: CheckedContinuation<T, Never>) in
            execute { cont.resume(returning: job()) }
        }
    }

    /// Blocks the calling thread until every job handed in before this call has run.
    /// Called on the loop thread itself, it returns at once (earlier jobs cannot be waited for
    /// from inside a job without deadlocking).
    public func barrier() {
        guard !inLoop else { return }
        let done = DispatchSemaphore(value: 0)
        execute { done.signal() }
        done.wait()
    }

    /// Runs the jobs queued so far. Jobs queued meanwhile run in the next loop iteration, so
    /// a busy producer cannot starve socket I/O.
    private func drain() {
        let batch = queue.withLock { q -> [Job] in
            defer { q.jobs.removeAll(keepingCapacity: true) }
            return q.jobs
        }
        for job in batch { job() }
        let more = queue.withLock { q -> Bool in
            if q.jobs.isEmpty {
                q.wakeupPending = false
                return false
            }
            return true
        }
        if more { scheduleDrain() }
    }
}

extension ICEEventLoop {
    /// Runs `body` on the loop thread and blocks the caller until it returns (inline when
    /// already on the loop thread). For short setup work only.
    func sync<T>(_ body: @escaping @Sendable () throws -> T) throws -> T {
        if inLoop { return try body() }
        let box = ResultBox<T>()
        let done = DispatchSemaphore(value: 0)
        execute {
            box.result = Result { try body() }
            done.signal()
        }
        done.wait()
        return try box.result!.get()
    }
}

/// Carries a result from the loop thread to a thread blocked on a semaphore.
private final class ResultBox<T>: @unchecked Sendable {  // unchecked: written once before the semaphore signal, read after the wait.
    var result: Result<T, any Error>?
}

/// A C pointer carried into a job that runs on the loop thread.
struct LoopPointer: @unchecked Sendable {  // unchecked: only dereferenced on the ICEEventLoop thread.
    let raw: OpaquePointer
}
