import Glibc
@_spi(CustomByteBufferAllocator) import NIOCore
import Synchronization

/// A `ByteBufferAllocator` for mesh connections and the sockets joined to their streams that
/// keeps freed large blocks (more than 32 KiB, up to 16 MiB, by power-of-two size class) for
/// reuse instead of handing them back to malloc.
///
/// Why hand-written (hot path): on a relaying hop nearly every read burst lands in fresh
/// memory — swift-nio-http2's parser buffer is still shared with DATA slices waiting further
/// down the path, so its next append copies into new storage, and socket read buffers are
/// likewise still referenced — and glibc serves and frees blocks of that size with
/// mmap/munmap, so each one is faulted in and zeroed page by page and unmapped again (page
/// faults were 19 % of the gateway thread on the reverse path). A block from this pool is
/// already mapped.
///
/// Block layout: a 16-byte header holding the size class (log2 of the capacity, 0 for an
/// allocation passed to malloc as is), then the bytes `ByteBuffer` uses. Freed blocks are
/// cached up to `cacheLimit` bytes in total per process; beyond that they go back to malloc.
/// Thread-safe (one lock; it is taken once per large allocation or free, i.e. per read burst).
///
/// `UGATE_MESH_BUFFER_POOL=0` in the environment turns it off (A/B measurements), another number
/// sets the cache bound in MiB.
enum MeshBufferPool {
    /// Bytes before each block's user memory (keeps malloc's 16-byte alignment).
    static let headerSize = 16
    /// Smallest pooled class: 64 KiB blocks, for requests above 32 KiB.
    static let smallestShift = 16
    /// Largest pooled class: 16 MiB.
    static let largestShift = 24
    /// Most bytes kept in free blocks at any time: `UGATE_MESH_BUFFER_POOL` in MiB (0 turns the
    /// pool off: mesh channels use NIO's default allocator), 64 MiB when unset or not a number (a relaying node
    /// holds tens of MiB in flight per stream with 32 MiB windows; 16 MiB left most blocks to malloc).
    static let cacheLimit: Int = {
        guard let value = getenv("UGATE_MESH_BUFFER_POOL"), let mib = Int(String(cString: value)), mib >= 0 else {
            return 64 << 20
        }
        return mib << 20
    }()

    /// Whether mesh channels use this allocator.
    static var isEnabled: Bool { cacheLimit > 0 }

    /// The allocator to set as `ChannelOptions.allocator`.
    static let allocator = ByteBufferAllocator(
        allocate: { MeshBufferPool.allocate($0) },
        reallocate: { MeshBufferPool.reallocate($0, oldSize: $1, newSize: $2) },
        deallocate: { MeshBufferPool.deallocate($0) },
        copy: { _ = memcpy($0, $1, $2) })

    /// Free blocks (base addresses, header included) per size class.
    private struct Cache {
        var free: [[UInt]] = Array(repeating: [], count: MeshBufferPool.largestShift + 1)
        var cachedBytes = 0
    }

    private static let cache = Mutex(Cache())

    /// The size class of a request: the smallest shift whose block holds `size` bytes, or 0
    /// when `size` is left to malloc (32 KiB or less, or above the largest class).
    static func sizeClass(_ size: Int) -> Int {
        guard size > 1 << (smallestShift - 1), size <= 1 << largestShift else { return 0 }
        return max(Int.bitWidth - (size - 1).leadingZeroBitCount, smallestShift)
    }

    static func allocate(_ size: Int) -> UnsafeMutableRawPointer? {
        let shift = sizeClass(size)
        if shift != 0 {
            let reused = cache.withLock { (state: inout Cache) -> UInt? in
                guard let base = state.free[shift].popLast() else { return nil }
                state.cachedBytes -= 1 << shift
                return base
            }
            if let reused, let base = UnsafeMutableRawPointer(bitPattern: reused) {
                return base + headerSize
            }
        }
        guard let base = malloc((shift == 0 ? size : 1 << shift) + headerSize) else { return nil }
        base.storeBytes(of: shift, as: Int.self)
        return base + headerSize
    }

    static func deallocate(_ pointer: UnsafeMutableRawPointer) {
        let base = pointer - headerSize
        let shift = base.load(as: Int.self)
        if shift != 0 {
            let kept = cache.withLock { (state: inout Cache) -> Bool in
                guard state.cachedBytes + (1 << shift) <= cacheLimit else { return false }
                state.free[shift].append(UInt(bitPattern: base))
                state.cachedBytes += 1 << shift
                return true
            }
            if kept { return }
        }
        free(base)
    }

    static func reallocate(_ pointer: UnsafeMutableRawPointer?, oldSize: Int, newSize: Int) -> UnsafeMutableRawPointer? {
        guard let pointer else { return allocate(newSize) }
        let base = pointer - headerSize
        let shift = base.load(as: Int.self)
        if shift != 0, newSize <= 1 << shift {
            return pointer
        }
        if shift == 0, sizeClass(newSize) == 0 {
            // realloc keeps the header (class 0).
            return realloc(base, newSize + headerSize).map { $0 + headerSize }
        }
        guard let moved = allocate(newSize) else { return nil }
        memcpy(moved, pointer, min(oldSize, newSize))
        deallocate(pointer)
        return moved
    }

    /// Hands every cached block back to malloc.
    static func trim() {
        let blocks = cache.withLock { (state: inout Cache) -> [UInt] in
            defer {
                state.free = Array(repeating: [], count: largestShift + 1)
                state.cachedBytes = 0
            }
            return state.free.flatMap { $0 }
        }
        for block in blocks { free(UnsafeMutableRawPointer(bitPattern: block)) }
    }

    /// Bytes held in free blocks now (tests).
    static var cachedBytes: Int {
        cache.withLock { $0.cachedBytes }
    }
}
