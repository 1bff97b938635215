import XCTest

@testable import Gate

// MARK: - Shared helpers for the Wire* tests

/// All the ways the tests deliver a message: whole, cut in two at every offset, byte-at-a-time.
enum Feed {
    static func chunkings(_ bytes: [UInt8]) -> [[[UInt8]]] {
        var result: [[[UInt8]]] = [[bytes]]
        if bytes.count > 1 {
            for cut in 1..<bytes.count {
                result.append([Array(bytes[..<cut]), Array(bytes[cut...])])
            }
            result.append(bytes.map { [$0] })
        }
        return result
    }
}

/// Delivers `bytes` to a non-consuming decoder in every chunking of `Feed.chunkings`, calling
/// it on the accumulated buffer after each chunk: every call before the last chunk must say
/// `.needMore`, the last must decode `expected` and consume exactly `bytes.count`. The decoder
/// is also run on `bytes + trailer` (it must stop at the message end), on an `ArraySlice` that
/// does not start at index 0, and on a collection without contiguous storage.
func assertDecodes<V: Equatable>(
    _ bytes: [UInt8], as expected: V, trailer: [UInt8] = [0x42, 0x00, 0xFF],
    file: StaticString = #filePath, line: UInt = #line,
    _ parse: (_ buffer: [UInt8]) -> ParseResult<V>
) {
    for chunks in Feed.chunkings(bytes) {
        var buffer: [UInt8] = []
        for (index, chunk) in chunks.enumerated() {
            buffer += chunk
            let result = parse(buffer)
            if index < chunks.count - 1 {
                guard case .needMore = result else {
                    XCTFail("prefix of \(buffer.count)/\(bytes.count) bytes gave \(result), expected needMore", file: file, line: line)
                    return
                }
            } else {
                XCTAssertEqual(result, .done(expected, consumed: bytes.count), "delivered in \(chunks.count) chunks", file: file, line: line)
            }
        }
    }
    XCTAssertEqual(parse(bytes + trailer), .done(expected, consumed: bytes.count), "with trailing bytes", file: file, line: line)
}

/// Same as `assertDecodes` for decoders that take `some Collection<UInt8>`: additionally
/// checks an offset `ArraySlice` and a lazily mapped (non-contiguous) collection.
func assertDecodesCollections<V: Equatable>(
    _ bytes: [UInt8], as expected: V, file: StaticString = #filePath, line: UInt = #line,
    _ parse: (_ buffer: any Collection<UInt8>) -> ParseResult<V>
) {
    assertDecodes(bytes, as: expected, file: file, line: line) { parse($0) }
    let padded = [0xEE, 0xEE] + bytes
    XCTAssertEqual(parse(padded[2...]), .done(expected, consumed: bytes.count), "ArraySlice input", file: file, line: line)
    XCTAssertEqual(parse(bytes.lazy.map { $0 }), .done(expected, consumed: bytes.count), "non-contiguous input", file: file, line: line)
}

/// The whole of `bytes` must be `.invalid` with `code` (and a message containing `message`);
/// fed byte-at-a-time every prefix must be `.needMore` or that same error, and once invalid,
/// longer prefixes stay invalid.
func assertInvalid<V>(
    _ bytes: [UInt8], code: WireError.Code, message: String? = nil,
    file: StaticString = #filePath, line: UInt = #line,
    _ parse: (_ buffer: [UInt8]) -> ParseResult<V>
) {
    guard case .invalid(let error) = parse(bytes) else {
        XCTFail("expected invalid(\(code)), got \(parse(bytes))", file: file, line: line)
        return
    }
    XCTAssertEqual(error.code, code, error.message, file: file, line: line)
    if let message {
        XCTAssertTrue(error.message.contains(message), "message \"\(error.message)\" lacks \"\(message)\"", file: file, line: line)
    }
    var sawInvalid = false
    for end in 1...max(bytes.count, 1) where end <= bytes.count {
        switch parse(Array(bytes[..<end])) {
        case .needMore:
            XCTAssertFalse(sawInvalid, "prefix \(end) went back to needMore after invalid", file: file, line: line)
        case .invalid(let prefixError):
            sawInvalid = true
            XCTAssertEqual(prefixError.code, code, "prefix \(end): \(prefixError.message)", file: file, line: line)
        case .done:
            XCTFail("prefix \(end) of an invalid message decoded", file: file, line: line)
        }
    }
}

/// A tiny deterministic generator so fuzz loops are reproducible (Gate's SplitMix64).
typealias SeededGenerator = SplitMix64

extension ParseResult {
    /// The decoded value, or nil.
    var value: Value? {
        if case .done(let value, _) = self { return value }
        return nil
    }
}

// MARK: - Tests of the shared pieces

final class WireHarnessTests: XCTestCase {
    func testByteReaderReadsBigEndianAndStopsAtTheEnd() {
        let bytes: [UInt8] = [0x01, 0x02, 0x03, 0x04, 0x05, 0x06]
        bytes.withUnsafeBufferPointer { buffer in
            var reader = ByteReader(buffer)
            XCTAssertEqual(reader.readU8(), 0x01)
            XCTAssertEqual(reader.readU16(), 0x0203)
            XCTAssertEqual(reader.readU24(), 0x040506)
            XCTAssertNil(reader.readU32())
            XCTAssertTrue(reader.isAtEnd)
            XCTAssertNil(reader.readU8())
            XCTAssertNil(reader.readBytes(1))
            XCTAssertFalse(reader.skip(1))
        }
        bytes.withUnsafeBufferPointer { buffer in
            var reader = ByteReader(buffer)
            XCTAssertNil(reader.readBytes(7))
            XCTAssertNil(reader.readBytes(-1))
            XCTAssertEqual(reader.offset, 0, "a failed read does not advance")
            guard var sub = reader.subReader(2) else { return XCTFail("subReader(2) of 6 bytes") }
            XCTAssertEqual(sub.readU16(), 0x0102)
            XCTAssertNil(sub.readU8(), "a sub-reader ends at its own length")
            XCTAssertEqual(reader.readU8(), 0x03)
            XCTAssertNil(reader.subReader(4))
        }
    }

    func testByteReaderU32() {
        [UInt8]([0x01, 0x02, 0x03, 0x04, 0xFF]).withUnsafeBufferPointer { buffer in
            var reader = ByteReader(buffer)
            XCTAssertEqual(reader.readU32(), 0x0102_0304)
            XCTAssertNil(reader.readU32())
            XCTAssertEqual(reader.readU8(), 0xFF)
        }
    }

    func testChunkingsCoverWholeEverySplitAndBytes() {
        let chunkings = Feed.chunkings([1, 2, 3, 4])
        XCTAssertEqual(chunkings.count, 1 + 3 + 1)
        for chunks in chunkings { XCTAssertEqual(chunks.flatMap { $0 }, [1, 2, 3, 4]) }
        XCTAssertEqual(chunkings.last, [[1], [2], [3], [4]])
    }

    func testHexFormatting() {
        XCTAssertEqual(hex(0x0A), "0x0a")
        XCTAssertEqual(hex16(0x0303), "0x0303")
    }

    func testMapKeepsNeedMoreAndErrors() {
        let done: ParseResult<Int> = .done(2, consumed: 1)
        XCTAssertEqual(done.map { $0 * 3 }, .done(6, consumed: 1))
        let failing: ParseResult<Int> = done.map { (_: Int) throws(WireError) -> Int in throw WireError(.malformed, "x") }
        XCTAssertEqual(failing, .invalid(WireError(.malformed, "x")))
        XCTAssertEqual(ParseResult<Int>.needMore.map { $0 + 1 }, .needMore)
    }

    func testHTTPStatusHints() {
        XCTAssertEqual(WireError(.badHeader, "").httpStatus, 400)
        XCTAssertEqual(WireError(.headTooLarge, "").httpStatus, 431)
        XCTAssertEqual(WireError(.tooManyHeaders, "").httpStatus, 431)
        XCTAssertEqual(WireError(.requestLineTooLong, "").httpStatus, 414)
        XCTAssertEqual(WireError(.httpVersionNotSupported, "").httpStatus, 505)
    }
}
