import NIOCore
import NIOEmbedded
import NIOHPACK
import NIOHTTP2
import XCTest

@testable import Gate

/// The pieces of the HTTP/2 serving path that are not seen from the wire alone: the write
/// coalescer's reused buffer, the stream table, and response field names.
final class HTTPRouteH2PathTests: XCTestCase {
    // MARK: - TLSWriteCoalescer

    /// The gathering buffer is reused once the layer below released what it was given, and a
    /// buffer still held below is never written over (a new one is used instead).
    func testCoalescerReusesItsBufferOnlyWhenReleased() throws {
        let channel = EmbeddedChannel(handler: TLSWriteCoalescer())
        defer { _ = try? channel.finish() }
        func cycle(_ parts: [String]) throws -> ByteBuffer {
            for part in parts { channel.write(ByteBuffer(string: part), promise: nil) }
            channel.flush()
            let out = try XCTUnwrap(try channel.readOutbound(as: ByteBuffer.self))
            XCTAssertNil(try channel.readOutbound(as: ByteBuffer.self))
            return out
        }
        func address(_ buffer: ByteBuffer) -> UInt {
            buffer.withUnsafeReadableBytes { UInt(bitPattern: $0.baseAddress) }
        }
        // Held: the next cycle must not touch it.
        let held = try cycle(["HEADERS|", "DATA-HEADER|", "payload"])
        let next = try cycle(["second|", "response"])
        XCTAssertEqual(String(buffer: held), "HEADERS|DATA-HEADER|payload")
        XCTAssertEqual(String(buffer: next), "second|response")
        XCTAssertNotEqual(address(held), address(next))
        // Released: the same storage comes back.
        var released: ByteBuffer? = try cycle(["a", "b"])
        let first = address(released!)
        XCTAssertEqual(String(buffer: released!), "ab")
        released = nil
        let reused = try cycle(["c", "d", "e"])
        XCTAssertEqual(String(buffer: reused), "cde")
        XCTAssertEqual(address(reused), first)
    }

    /// An empty write with a promise (HTTP/1.1's close marker) still reaches the layer below
    /// and completes; promises of gathered writes complete when the gathered buffer is written.
    func testCoalescerCompletesPromisesOfEmptyAndGatheredWrites() throws {
        let channel = EmbeddedChannel(handler: TLSWriteCoalescer())
        defer { _ = try? channel.finish() }
        let empty = channel.eventLoop.makePromise(of: Void.self)
        channel.writeAndFlush(ByteBuffer(), promise: empty)
        XCTAssertNoThrow(try empty.futureResult.wait())
        XCTAssertEqual(try channel.readOutbound(as: ByteBuffer.self)?.readableBytes, 0)
        let promises = (0..<3).map { _ in channel.eventLoop.makePromise(of: Void.self) }
        for (index, promise) in promises.enumerated() { channel.write(ByteBuffer(string: "\(index)"), promise: promise) }
        channel.flush()
        for promise in promises { XCTAssertNoThrow(try promise.futureResult.wait()) }
        XCTAssertEqual(try channel.readOutbound(as: ByteBuffer.self).map { String(buffer: $0) }, "012")
    }

    /// A burst that grew the buffer beyond `keptCapacity` is not kept: later cycles still
    /// gather correctly.
    func testCoalescerAfterALargeBurst() throws {
        let channel = EmbeddedChannel(handler: TLSWriteCoalescer())
        defer { _ = try? channel.finish() }
        let chunk = String(repeating: "x", count: 5000)
        channel.write(ByteBuffer(string: chunk), promise: nil)
        channel.write(ByteBuffer(string: chunk), promise: nil)
        channel.flush()
        XCTAssertEqual(try channel.readOutbound(as: ByteBuffer.self)?.readableBytes, 10000)
        channel.write(ByteBuffer(string: "small"), promise: nil)
        channel.write(ByteBuffer(string: "!"), promise: nil)
        channel.flush()
        XCTAssertEqual(try channel.readOutbound(as: ByteBuffer.self).map { String(buffer: $0) }, "small!")
    }

    // MARK: - HTTP2StreamTable

    func testStreamTableFindsInsertsAndRemovesByID() {
        final class Stream {
            let id: Int
            init(_ id: Int) { self.id = id }
        }
        var table = HTTP2StreamTable<Stream>()
        func insert(_ stream: Stream) { table.insert(stream, id: HTTP2StreamID(stream.id)) }
        let streams = [1, 3, 5, 9, 11].map(Stream.init)
        streams.forEach(insert)
        // Out of order (not what a client does, but kept sorted) and a replacement.
        let seven = Stream(7)
        insert(seven)
        let replacement = Stream(3)
        insert(replacement)
        XCTAssertEqual(table.count, 6)
        XCTAssertEqual(table.all.map(\.id), [1, 3, 5, 7, 9, 11])
        XCTAssertTrue(table[HTTP2StreamID(3)] === replacement)
        XCTAssertTrue(table[HTTP2StreamID(7)] === seven)
        XCTAssertNil(table[HTTP2StreamID(13)])
        XCTAssertNil(table[HTTP2StreamID(0)])
        XCTAssertNil(table[HTTP2StreamID(4)])
        XCTAssertTrue(table.remove(HTTP2StreamID(1)) === streams[0])
        XCTAssertNil(table.remove(HTTP2StreamID(1)))
        XCTAssertTrue(table.remove(HTTP2StreamID(11)) === streams[4])
        XCTAssertTrue(table.remove(HTTP2StreamID(5)) === streams[2])
        XCTAssertEqual(table.all.map(\.id), [3, 7, 9])
        insert(Stream(13))
        XCTAssertEqual(table.all.map(\.id), [3, 7, 9, 13])
        // Many streams, removed oldest first (as a busy connection does).
        var many = HTTP2StreamTable<Stream>()
        for id in stride(from: 1, to: 400, by: 2) { many.insert(Stream(id), id: HTTP2StreamID(id)) }
        for id in stride(from: 1, to: 300, by: 2) { XCTAssertEqual(many.remove(HTTP2StreamID(id))?.id, id) }
        XCTAssertEqual(many.all.map(\.id), Array(stride(from: 301, to: 400, by: 2)))
    }

    // MARK: - Response fields

    func testResponseFieldNamesAndStatus() {
        // The gateway's own responses (`responseFields`, then the codec's encoder): names in
        // lower case on the wire whatever their case, hop-by-hop fields left out.
        let fields: [(name: String, value: String)] = [
            ("content-type", "text/plain"), ("CONTENT-LENGTH", "0"), ("Date", "d"), ("ETag", "e"), ("Connection", "close"),
            ("Last-Modified", "m"), ("X-Custom-Field", "x"), ("Dat3", "3"),
        ]
        let own = HTTP2RouteHandler.responseFields(fields, count: fields.count, status: 404)
        XCTAssertEqual(
            try encodedResponseHead { $0.writeHeaders(1, own, endStream: false) },
            [":status=404", "content-type=text/plain", "content-length=0", "date=d", "etag=e", "last-modified=m", "x-custom-field=x", "dat3=3"])
        for code in [100, 200, 204, 206, 299, 301, 302, 304, 400, 404, 418, 500, 502, 503, 504, 599] {
            XCTAssertEqual(H2Names.status(code), String(code))
        }
        let head = HTTP1ResponseHead(
            status: 200, reason: "OK",
            headers: [
                HTTPField("Server", "nginx"), HTTPField("Content-Type", "text/plain"), HTTPField("Connection", "keep-alive, X-Secret"),
                HTTPField("X-Secret", "s"), HTTPField("Keep-Alive", "timeout=5"), HTTPField("Transfer-Encoding", "chunked"), HTTPField("X-Kept", "k"),
            ])
        XCTAssertEqual(try encodedResponseHead { HTTP2RouteHandler.writeResponseHead(head, on: 1, to: &$0) }, [":status=200", "server=nginx", "content-type=text/plain", "x-kept=k"])
        let other = HTTP1ResponseHead(status: 418, reason: "Teapot", headers: [HTTPField("X-Upper-CASE", "V"), HTTPField("Cache-Control", "no-store")])
        XCTAssertEqual(try encodedResponseHead { HTTP2RouteHandler.writeResponseHead(other, on: 1, to: &$0) }, [":status=418", "x-upper-case=V", "cache-control=no-store"])
    }

    /// The fields a client decodes from the HEADERS `write` writes on stream 1 of a codec that
    /// received a request there.
    func encodedResponseHead(_ write: (inout HTTP2ServerCodec) -> Void) throws -> [String] {
        let allocator = ByteBufferAllocator()
        var codec = HTTP2ServerCodec(allocator: allocator)
        var request = allocator.buffer(capacity: 256)
        var encoder = HPACKEncoder(allocator: allocator)
        try encoder.encode(headers: HPACKHeaders(HTTP2ServerCodecTests.request), to: &request)
        let input = HTTP2ServerCodecTests.start + HTTP2ServerCodecTests.frame(0x1, flags: 0x5, stream: 1, Array(request.readableBytesView))
        codec.receive(allocator.buffer(bytes: input))
        while codec.nextEvent() != nil {}
        _ = codec.takeOutput()
        write(&codec)
        var block = try XCTUnwrap(codec.takeOutput())
        // One HEADERS frame (type 1), its field block after the 9-byte frame header.
        XCTAssertEqual(block.getInteger(at: block.readerIndex + 3, as: UInt8.self), 0x1)
        block.moveReaderIndex(forwardBy: 9)
        var decoder = HPACKDecoder(allocator: allocator)
        return try decoder.decodeHeaders(from: &block).map { "\($0.name)=\($0.value)" }
    }
}
