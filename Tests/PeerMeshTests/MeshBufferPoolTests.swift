import NIOCore
import XCTest

@testable import PeerMesh

/// `MeshBufferPool`: size classes, reuse of freed blocks, the cache bound, and `ByteBuffer`s on
/// it keeping their bytes through growth, copy-on-write and slicing.
final class MeshBufferPoolTests: XCTestCase {
    func testSizeClasses() {
        XCTAssertEqual(MeshBufferPool.sizeClass(0), 0)
        XCTAssertEqual(MeshBufferPool.sizeClass(32 << 10), 0)
        XCTAssertEqual(MeshBufferPool.sizeClass((32 << 10) + 1), 16)
        XCTAssertEqual(MeshBufferPool.sizeClass(64 << 10), 16)
        XCTAssertEqual(MeshBufferPool.sizeClass((64 << 10) + 1), 17)
        XCTAssertEqual(MeshBufferPool.sizeClass(512 << 10), 19)
        XCTAssertEqual(MeshBufferPool.sizeClass(16 << 20), 24)
        XCTAssertEqual(MeshBufferPool.sizeClass((16 << 20) + 1), 0)
    }

    func testFreedBlockIsReusedAndSmallOnesAreNot() throws {
        MeshBufferPool.trim()
        let size = (3 << 20) + 5
        let first = try XCTUnwrap(MeshBufferPool.allocate(size))
        first.storeBytes(of: 0xA5, as: UInt8.self)
        (first + size - 1).storeBytes(of: 0x5A, as: UInt8.self)
        MeshBufferPool.deallocate(first)
        // Other tests may free blocks of this class meanwhile; ours is the most recent one.
        let second = try XCTUnwrap(MeshBufferPool.allocate(size - 7))
        XCTAssertEqual(second, first, "a freed 4 MiB block is handed out again")
        MeshBufferPool.deallocate(second)

        let small = try XCTUnwrap(MeshBufferPool.allocate(100))
        small.storeBytes(of: 1, as: UInt8.self)
        let grown = try XCTUnwrap(MeshBufferPool.reallocate(small, oldSize: 100, newSize: 1000))
        XCTAssertEqual(grown.load(as: UInt8.self), 1, "realloc of a malloc'd block keeps its bytes")
        MeshBufferPool.deallocate(grown)
    }

    func testReallocWithinAndAcrossClasses() throws {
        let block = try XCTUnwrap(MeshBufferPool.allocate(40 << 10))
        for i in 0..<(40 << 10) { (block + i).storeBytes(of: UInt8(truncatingIfNeeded: i), as: UInt8.self) }
        let same = try XCTUnwrap(MeshBufferPool.reallocate(block, oldSize: 40 << 10, newSize: 64 << 10))
        XCTAssertEqual(same, block, "growth inside the 64 KiB class keeps the block")
        let moved = try XCTUnwrap(MeshBufferPool.reallocate(same, oldSize: 64 << 10, newSize: 1 << 20))
        for i in stride(from: 0, to: 40 << 10, by: 997) {
            XCTAssertEqual((moved + i).load(as: UInt8.self), UInt8(truncatingIfNeeded: i))
        }
        let fromMalloc = try XCTUnwrap(MeshBufferPool.reallocate(moved, oldSize: 1 << 20, newSize: 20 << 20))
        XCTAssertEqual((fromMalloc + 997).load(as: UInt8.self), UInt8(truncatingIfNeeded: 997))
        MeshBufferPool.deallocate(fromMalloc)
    }

    func testCacheStaysBounded() throws {
        MeshBufferPool.trim()
        XCTAssertEqual(MeshBufferPool.cachedBytes, 0)
        // More freed blocks than the cache may hold (untouched, so they cost no pages).
        let count = MeshBufferPool.cacheLimit / (2 << 20) + 4
        let blocks = try (0..<count).map { _ in try XCTUnwrap(MeshBufferPool.allocate(2 << 20)) }
        for block in blocks { MeshBufferPool.deallocate(block) }
        XCTAssertEqual(MeshBufferPool.cachedBytes, MeshBufferPool.cacheLimit, "the cache fills up to its bound and no further")
        MeshBufferPool.trim()
        XCTAssertEqual(MeshBufferPool.cachedBytes, 0)
    }

    func testByteBuffersKeepTheirBytes() {
        let allocator = MeshBufferPool.allocator
        let pattern = (0..<(300 << 10)).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        for round in 0..<20 {
            var buffer = allocator.buffer(capacity: 1024)
            buffer.writeBytes(pattern)  // grows through several classes
            let slice = buffer.getSlice(at: 1000, length: 200 << 10)!
            buffer.writeBytes(pattern)  // copy-on-write: the slice shares the storage
            XCTAssertEqual(buffer.readableBytes, 2 * pattern.count)
            XCTAssertEqual(buffer.getBytes(at: pattern.count, length: pattern.count), pattern, "round \(round)")
            XCTAssertEqual(Array(slice.readableBytesView), Array(pattern[1000..<(1000 + (200 << 10))]))
        }
    }
}
