import CLinux
import Glibc

/// Large copy buffers handed to a stream direction on its first data and taken back when it
/// goes idle, so an idle connection holds no buffer. One pool per loop (no locking).
final class BufferPool {
    let size: Int
    private let keep: Int
    private var free: [UnsafeMutableRawPointer] = []
    /// Buffers currently lent out (for /metrics and tests).
    private(set) var lent = 0

    init(size: Int, keep: Int) {
        self.size = size
        self.keep = keep
    }

    func take() -> UnsafeMutableRawPointer {
        lent += 1
        if let b = free.popLast() { return b }
        return UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 4096)
    }

    func give(_ buffer: UnsafeMutableRawPointer) {
        lent -= 1
        if free.count < keep {
            free.append(buffer)
        } else {
            buffer.deallocate()
        }
    }

    deinit {
        for b in free { b.deallocate() }
    }
}

/// A pipe used by one splice direction: read end, write end.
struct SplicePipe {
    var read: Int32
    var write: Int32

    func close() {
        Glibc.close(read)
        Glibc.close(write)
    }
}

/// Pipes sized for throughput (`F_SETPIPE_SZ`), created on a direction's first data and
/// returned when they are empty, so idle connections hold no pipe descriptors.
final class PipePool {
    let size: Int
    private let keep: Int
    private var free: [SplicePipe] = []

    init(size: Int, keep: Int) {
        self.size = size
        self.keep = keep
    }

    /// A pipe, or nil when the process is out of descriptors (the caller then copies).
    func take() -> SplicePipe? {
        if let p = free.popLast() { return p }
        var fds: [Int32] = [0, 0]
        guard ugate_pipe2(&fds, O_NONBLOCK | O_CLOEXEC) == 0 else { return nil }
        // Larger than /proc/sys/fs/pipe-max-size fails with EPERM; the default size still works.
        _ = ugate_set_pipe_size(fds[1], Int32(size))
        return SplicePipe(read: fds[0], write: fds[1])
    }

    /// Returns an empty pipe; a pipe that still holds bytes must be closed instead.
    func give(_ pipe: SplicePipe) {
        if free.count < keep {
            free.append(pipe)
        } else {
            pipe.close()
        }
    }

    deinit {
        for p in free { p.close() }
    }
}
