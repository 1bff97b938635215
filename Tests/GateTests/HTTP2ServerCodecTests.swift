import NIOCore
import NIOHPACK
import XCTest

@testable import Gate

/// `HTTP2ServerCodec`, the gateway's own HTTP/2 server connection codec, fed as a value:
/// every frame type whole, split at every offset and byte by byte; malformed inputs each with
/// the error code RFC 9113 asks for; outbound flow control holding and releasing DATA.
final class HTTP2ServerCodecTests: XCTestCase {
    let allocator = ByteBufferAllocator()
    static let preface = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)

    // MARK: - Helpers

    /// One frame's bytes (RFC 9113 §4.1).
    static func frame(_ type: UInt8, flags: UInt8 = 0, stream: UInt32 = 0, _ payload: [UInt8] = []) -> [UInt8] {
        let length = payload.count
        return [UInt8(length >> 16 & 0xFF), UInt8(length >> 8 & 0xFF), UInt8(length & 0xFF), type, flags]
            + [UInt8(stream >> 24 & 0x7F), UInt8(stream >> 16 & 0xFF), UInt8(stream >> 8 & 0xFF), UInt8(stream & 0xFF)] + payload
    }

    static func be32(_ value: UInt32) -> [UInt8] { [UInt8(value >> 24), UInt8(value >> 16 & 0xFF), UInt8(value >> 8 & 0xFF), UInt8(value & 0xFF)] }
    static func be64(_ value: UInt64) -> [UInt8] { be32(UInt32(value >> 32)) + be32(UInt32(value & 0xFFFF_FFFF)) }
    static func setting(_ id: UInt16, _ value: UInt32) -> [UInt8] { [UInt8(id >> 8), UInt8(id & 0xFF)] + be32(value) }

    static let settings = frame(0x4, [])
    static let start = preface + settings

    /// A client-side HPACK encoder (kept across blocks, so the dynamic table is exercised).
    var encoder = HPACKEncoder(allocator: ByteBufferAllocator())

    func block(_ fields: [(String, String)]) -> [UInt8] {
        var buffer = allocator.buffer(capacity: 256)
        try! encoder.encode(headers: HPACKHeaders(fields), to: &buffer)
        return Array(buffer.readableBytesView)
    }

    static let request = [(":method", "GET"), (":scheme", "http"), (":path", "/a"), (":authority", "example.com"), ("accept", "*/*")]

    /// The events of `input` fed in the given pieces, described as text, and the frames the
    /// codec wrote (without its SETTINGS), described as text.
    func run(_ codec: inout HTTP2ServerCodec, _ pieces: [[UInt8]]) -> (events: [String], frames: [String]) {
        var events: [String] = []
        var out: [UInt8] = []
        for piece in pieces {
            codec.receive(allocator.buffer(bytes: piece))
            while let event = codec.nextEvent() { events.append(Self.describe(event)) }
            if let output = codec.takeOutput() { out += output.readableBytesView }
        }
        if let output = codec.takeOutput() { out += output.readableBytesView }
        return (events, Self.frames(out))
    }

    func run(_ pieces: [[UInt8]]) -> (events: [String], frames: [String]) {
        var codec = HTTP2ServerCodec(allocator: allocator)
        return run(&codec, pieces)
    }

    static func describe(_ event: H2Event) -> String {
        switch event {
        case .headers(let id, let fields, let end, let trailers):
            return "\(trailers ? "trailers" : "headers") \(id)\(end ? " end" : "") " + fields.map { "\($0.name)=\($0.value)" }.joined(separator: ",")
        case .data(let id, let data, let padding, let end):
            return "data \(id) \(String(decoding: data.readableBytesView, as: UTF8.self)) pad=\(padding)\(end ? " end" : "")"
        case .streamClosed(let id, let error): return "closed \(id) \(error.map { "\($0)" } ?? "ok")"
        case .pingAck(let opaque): return "pingAck \(opaque)"
        case .goAway(let last, let error): return "goAway \(last) \(error)"
        case .connectionError(let error): return "error \(error.code)"
        }
    }

    /// Frames of the codec's output as `type stream flags payload-summary`; the codec's own
    /// SETTINGS (the server preface) is left out.
    static func frames(_ bytes: [UInt8]) -> [String] {
        var frames: [String] = []
        var index = 0
        while index + 9 <= bytes.count {
            let length = Int(bytes[index]) << 16 | Int(bytes[index + 1]) << 8 | Int(bytes[index + 2])
            let type = bytes[index + 3]
            let flags = bytes[index + 4]
            let stream = UInt32(bytes[index + 5]) << 24 | UInt32(bytes[index + 6]) << 16 | UInt32(bytes[index + 7]) << 8 | UInt32(bytes[index + 8])
            let payload = Array(bytes[(index + 9)..<min(bytes.count, index + 9 + length)])
            index += 9 + length
            func word(_ at: Int) -> UInt32 { UInt32(payload[at]) << 24 | UInt32(payload[at + 1]) << 16 | UInt32(payload[at + 2]) << 8 | UInt32(payload[at + 3]) }
            switch type {
            case 0x4 where flags == 0: continue
            case 0x4: frames.append("SETTINGS_ACK")
            case 0x0: frames.append("DATA \(stream) \(length)\(flags & 1 != 0 ? " end" : "")")
            case 0x1: frames.append("HEADERS \(stream) \(flags)")
            case 0x3: frames.append("RST \(stream) \(H2ErrorCode(rawValue: word(0)))")
            case 0x6: frames.append("PING\(flags & 1 != 0 ? "_ACK" : "") \(payload)")
            case 0x7: frames.append("GOAWAY \(word(0)) \(H2ErrorCode(rawValue: word(4)))")
            case 0x8: frames.append("WINDOW_UPDATE \(stream) \(word(0))")
            case 0x9: frames.append("CONTINUATION \(stream) \(flags)")
            default: frames.append("type\(type)")
            }
        }
        return frames
    }

    // MARK: - Every frame type, whole, split and byte by byte

    func testEveryFrameTypeWholeSplitAndByteByByte() {
        let block1 = block(Self.request)
        let half = block1.count / 2
        let trailerBlock = block([("x-sum", "1")])
        let block5 = block(Self.request)
        var input = Self.start
        // HEADERS with PADDED and PRIORITY, the block continued in a CONTINUATION frame.
        input += Self.frame(0x1, flags: 0x8 | 0x20, stream: 1, [2] + Self.be32(0) + [15] + block1[..<half] + [0, 0])
        input += Self.frame(0x9, flags: 0x4, stream: 1, Array(block1[half...]))
        input += Self.frame(0x0, stream: 1, Array("abc".utf8))
        input += Self.frame(0x0, flags: 0x8, stream: 1, [3] + Array("de".utf8) + [0, 0, 0])
        input += Self.frame(0x1, flags: 0x5, stream: 1, trailerBlock)
        input += Self.frame(0x2, stream: 3, Self.be32(1) + [16])
        input += Self.frame(0x6, Self.be64(42))
        input += Self.frame(0x6, flags: 1, Self.be64(7))
        input += Self.frame(0x8, Self.be32(1000))
        input += Self.frame(0x4, Self.setting(0x4, 100_000) + Self.setting(0x1, 0) + Self.setting(0x99, 5))
        input += Self.frame(0x4, flags: 1)
        input += Self.frame(0xEE, stream: 1, [1, 2, 3])
        input += Self.frame(0x1, flags: 0x4, stream: 5, block5)
        input += Self.frame(0x8, stream: 5, Self.be32(10))
        input += Self.frame(0x3, stream: 5, Self.be32(8))
        input += Self.frame(0x7, Self.be32(5) + Self.be32(0) + Array("bye".utf8))
        let events = [
            "headers 1 :method=GET,:scheme=http,:path=/a,:authority=example.com,accept=*/*",
            "data 1 abc pad=0",
            "data 1 de pad=4",
            "trailers 1 end x-sum=1",
            "pingAck 7",
            "headers 5 :method=GET,:scheme=http,:path=/a,:authority=example.com,accept=*/*",
            "closed 5 CANCEL",
            "goAway 5 NO_ERROR",
        ]
        let frames = ["SETTINGS_ACK", "PING_ACK \(Self.be64(42))", "SETTINGS_ACK"]
        let whole = run([input])
        XCTAssertEqual(whole.events, events)
        XCTAssertEqual(whole.frames, frames)
        for split in 1..<input.count {
            let result = run([Array(input[..<split]), Array(input[split...])])
            XCTAssertEqual(result.events, events, "split at \(split)")
            XCTAssertEqual(result.frames, frames, "split at \(split)")
        }
        let drip = run(input.map { [$0] })
        XCTAssertEqual(drip.events, events)
        XCTAssertEqual(drip.frames, frames)
    }

    func testServerPrefaceAndConnectionWindowCredit() {
        var codec = HTTP2ServerCodec(allocator: allocator)
        let preface = codec.takeOutput().map { Array($0.readableBytesView) } ?? []
        XCTAssertEqual(preface, Self.frame(0x4, Self.setting(0x3, 100) + Self.setting(0x6, 16384)))
        let request = block(Self.request)
        var input = Self.start + Self.frame(0x1, flags: 0x4, stream: 1, request)
        // 40,000 bytes of DATA: the connection window is credited once 32,768 arrived.
        for _ in 0..<4 { input += Self.frame(0x0, stream: 1, [UInt8](repeating: 0x61, count: 10_000)) }
        let result = run(&codec, [input])
        XCTAssertEqual(result.events.count, 5)
        XCTAssertEqual(result.frames, ["SETTINGS_ACK", "WINDOW_UPDATE 0 40000"])
        // The stream window is the handler's: 65,535 − 40,000 left, more is a stream error.
        codec.windowUpdate(1, 40_000)
        XCTAssertEqual(run(&codec, []).frames, ["WINDOW_UPDATE 1 40000"])
    }

    // MARK: - Malformed input

    /// Each input after the preface and SETTINGS, and what the codec must answer.
    func testMalformedInputsGetTheRightErrorCode() {
        let request = block(Self.request)
        let open1 = Self.frame(0x1, flags: 0x4, stream: 1, request)
        let open1Ended = Self.frame(0x1, flags: 0x5, stream: 1, request)
        let cases: [(String, [UInt8], String)] = [
            ("bad preface", Array("GET / HTTP/1.1\r\n\r\n".utf8), "GOAWAY 0 PROTOCOL_ERROR"),
            ("frame above max frame size", Self.frame(0x0, stream: 1, [UInt8](repeating: 0, count: 16385)), "GOAWAY 0 FRAME_SIZE_ERROR"),
            ("CONTINUATION interleaved", Self.frame(0x1, stream: 1, Array(request[..<3])) + Self.frame(0x6, Self.be64(1)), "GOAWAY 0 PROTOCOL_ERROR"),
            ("CONTINUATION on another stream", Self.frame(0x1, stream: 1, Array(request[..<3])) + Self.frame(0x9, flags: 4, stream: 3, Array(request[3...])), "GOAWAY 0 PROTOCOL_ERROR"),
            ("CONTINUATION without HEADERS", Self.frame(0x9, flags: 4, stream: 1, request), "GOAWAY 0 PROTOCOL_ERROR"),
            ("connection window overflow", Self.frame(0x8, Self.be32(0x7FFF_FFFF)), "GOAWAY 0 FLOW_CONTROL_ERROR"),
            ("stream window overflow", open1 + Self.frame(0x8, stream: 1, Self.be32(0x7FFF_FFFF)), "RST 1 FLOW_CONTROL_ERROR"),
            ("window update of 0", Self.frame(0x8, Self.be32(0)), "GOAWAY 0 PROTOCOL_ERROR"),
            ("window update on idle stream", Self.frame(0x8, stream: 3, Self.be32(1)), "GOAWAY 0 PROTOCOL_ERROR"),
            ("window update of 3 bytes", Self.frame(0x8, [0, 0, 1]), "GOAWAY 0 FRAME_SIZE_ERROR"),
            ("stream ID regression", Self.frame(0x1, flags: 0x5, stream: 3, request) + Self.frame(0x1, flags: 0x5, stream: 1, request), "GOAWAY 3 PROTOCOL_ERROR"),
            ("even stream ID", Self.frame(0x1, flags: 0x5, stream: 2, request), "GOAWAY 0 PROTOCOL_ERROR"),
            ("HEADERS on stream 0", Self.frame(0x1, flags: 0x5, stream: 0, request), "GOAWAY 0 PROTOCOL_ERROR"),
            ("SETTINGS_ENABLE_PUSH 2", Self.frame(0x4, Self.setting(0x2, 2)), "GOAWAY 0 PROTOCOL_ERROR"),
            ("SETTINGS_INITIAL_WINDOW_SIZE 2^31", Self.frame(0x4, Self.setting(0x4, 0x8000_0000)), "GOAWAY 0 FLOW_CONTROL_ERROR"),
            ("SETTINGS_MAX_FRAME_SIZE 16383", Self.frame(0x4, Self.setting(0x5, 16383)), "GOAWAY 0 PROTOCOL_ERROR"),
            ("SETTINGS_MAX_FRAME_SIZE 2^24", Self.frame(0x4, Self.setting(0x5, 1 << 24)), "GOAWAY 0 PROTOCOL_ERROR"),
            ("SETTINGS_ENABLE_CONNECT_PROTOCOL 2", Self.frame(0x4, Self.setting(0x8, 2)), "GOAWAY 0 PROTOCOL_ERROR"),
            ("SETTINGS of 5 bytes", Self.frame(0x4, [0, 1, 0, 0, 0]), "GOAWAY 0 FRAME_SIZE_ERROR"),
            ("SETTINGS ACK with payload", Self.frame(0x4, flags: 1, Self.setting(0x1, 0)), "GOAWAY 0 FRAME_SIZE_ERROR"),
            ("SETTINGS on a stream", Self.frame(0x4, stream: 1, []), "GOAWAY 0 PROTOCOL_ERROR"),
            ("initial window change overflowing a stream", open1 + Self.frame(0x8, stream: 1, Self.be32(0x7FFF_0000)) + Self.frame(0x4, Self.setting(0x4, 0x10_0000)), "GOAWAY 1 FLOW_CONTROL_ERROR"),
            ("PING of 7 bytes", Self.frame(0x6, [1, 2, 3, 4, 5, 6, 7]), "GOAWAY 0 FRAME_SIZE_ERROR"),
            ("PING on a stream", Self.frame(0x6, stream: 1, Self.be64(1)), "GOAWAY 0 PROTOCOL_ERROR"),
            ("DATA on idle stream", Self.frame(0x0, stream: 1, [1]), "GOAWAY 0 PROTOCOL_ERROR"),
            ("DATA on stream 0", Self.frame(0x0, stream: 0, [1]), "GOAWAY 0 PROTOCOL_ERROR"),
            ("DATA on half-closed (remote) stream", open1Ended + Self.frame(0x0, stream: 1, [1]), "RST 1 STREAM_CLOSED"),
            ("HEADERS on half-closed (remote) stream", open1Ended + Self.frame(0x1, flags: 0x5, stream: 1, block([("x", "y")])), "RST 1 STREAM_CLOSED"),
            ("DATA on closed stream", open1 + Self.frame(0x3, stream: 1, Self.be32(8)) + Self.frame(0x0, stream: 1, [1]), "RST 1 STREAM_CLOSED"),
            ("HEADERS on a stream the client reset", open1 + Self.frame(0x3, stream: 1, Self.be32(8)) + Self.frame(0x1, flags: 0x5, stream: 1, block([("x", "y")])), "RST 1 STREAM_CLOSED"),
            ("HEADERS opening a skipped stream ID", Self.frame(0x1, flags: 0x5, stream: 7, request) + Self.frame(0x1, flags: 0x5, stream: 5, request), "GOAWAY 7 PROTOCOL_ERROR"),
            ("DATA beyond the stream window", open1 + (0..<5).flatMap { _ in Self.frame(0x0, stream: 1, [UInt8](repeating: 0, count: 16000)) }, "RST 1 FLOW_CONTROL_ERROR"),
            ("trailers without END_STREAM", open1 + Self.frame(0x1, flags: 0x4, stream: 1, block([("x", "y")])), "RST 1 PROTOCOL_ERROR"),
            ("DATA padding longer than payload", open1 + Self.frame(0x0, flags: 0x8, stream: 1, [5, 1, 2]), "GOAWAY 1 PROTOCOL_ERROR"),
            ("HEADERS padding longer than payload", Self.frame(0x1, flags: 0xC, stream: 1, [200] + request), "GOAWAY 0 PROTOCOL_ERROR"),
            ("HEADERS depending on itself", Self.frame(0x1, flags: 0x25, stream: 1, Self.be32(1) + [16] + request), "RST 1 PROTOCOL_ERROR"),
            ("PRIORITY of 4 bytes", Self.frame(0x2, stream: 1, Self.be32(0)), "RST 1 FRAME_SIZE_ERROR"),
            ("PRIORITY depending on itself", Self.frame(0x2, stream: 3, Self.be32(3) + [1]), "RST 3 PROTOCOL_ERROR"),
            ("RST_STREAM on idle stream", Self.frame(0x3, stream: 1, Self.be32(8)), "GOAWAY 0 PROTOCOL_ERROR"),
            ("RST_STREAM of 3 bytes", open1 + Self.frame(0x3, stream: 1, [0, 0, 8]), "GOAWAY 1 FRAME_SIZE_ERROR"),
            ("PUSH_PROMISE from the client", Self.frame(0x5, stream: 1, Self.be32(2)), "GOAWAY 0 PROTOCOL_ERROR"),
            ("GOAWAY of 4 bytes", Self.frame(0x7, Self.be32(0)), "GOAWAY 0 FRAME_SIZE_ERROR"),
            ("undecodable field block", Self.frame(0x1, flags: 0x5, stream: 1, [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]), "GOAWAY 0 COMPRESSION_ERROR"),
            ("header block too large",
             Self.frame(0x1, stream: 1, [UInt8](repeating: 0x82, count: 16384)) + (0..<4).flatMap { _ in Self.frame(0x9, stream: 1, [UInt8](repeating: 0x82, count: 16384)) },
             "GOAWAY 0 ENHANCE_YOUR_CALM"),
            // One 4,000-byte field in the dynamic table, then indexed 19 times: 80 KB decoded.
            ("header list too large", Self.frame(0x1, flags: 0x5, stream: 1, block(Array(repeating: ("x-big", String(repeating: "a", count: 4000)), count: 20))), "GOAWAY 0 COMPRESSION_ERROR"),
        ]
        for (name, bytes, expected) in cases {
            let input = name == "bad preface" ? bytes : Self.start + bytes
            for pieces in [[input], input.map { [$0] }] {
                let result = run(pieces)
                XCTAssertTrue(result.frames.contains { $0.hasPrefix(expected) }, "\(name): \(result.frames) \(result.events)")
                if expected.hasPrefix("GOAWAY") {
                    XCTAssertEqual(result.events.last?.hasPrefix("error"), true, "\(name): \(result.events)")
                } else {
                    XCTAssertFalse(result.events.contains { $0.hasPrefix("error") }, "\(name): \(result.events)")
                }
            }
        }
    }

    func testTooManyStreamsAreRefused() {
        let request = block(Self.request)
        var input = Self.start
        for i in 0..<101 { input += Self.frame(0x1, flags: 0x5, stream: UInt32(1 + 2 * i), request) }
        let result = run([input])
        XCTAssertEqual(result.events.count, 100)
        XCTAssertEqual(result.frames, ["SETTINGS_ACK", "RST 201 REFUSED_STREAM"])
    }

    /// The "rapid reset" attack (CVE-2023-44487): more than 200 RST_STREAM frames from the
    /// client in 30 s close the connection with ENHANCE_YOUR_CALM; spread over two windows
    /// they do not. Two empty DATA frames in a row are refused the same way.
    func testRapidResetAndEmptyDataFloodsAreRefused() {
        let request = block(Self.request)
        func resets(_ streams: Range<Int>) -> [UInt8] {
            streams.flatMap { i in Self.frame(0x1, flags: 0x4, stream: UInt32(1 + 2 * i), request) + Self.frame(0x3, stream: UInt32(1 + 2 * i), Self.be32(8)) }
        }
        var codec = HTTP2ServerCodec(allocator: allocator)
        codec.now = 1_000
        var result = run(&codec, [Self.start + resets(0..<200)])
        XCTAssertFalse(result.events.contains { $0.hasPrefix("error") })
        result = run(&codec, [resets(200..<201)])
        XCTAssertEqual(result.events.last, "error ENHANCE_YOUR_CALM")
        XCTAssertEqual(result.frames, ["GOAWAY 401 ENHANCE_YOUR_CALM"])
        var spread = HTTP2ServerCodec(allocator: allocator)
        spread.now = 1_000
        _ = run(&spread, [Self.start + resets(0..<150)])
        spread.now = 31_000
        result = run(&spread, [resets(150..<300)])
        XCTAssertFalse(result.events.contains { $0.hasPrefix("error") }, "\(result.events.suffix(2))")
        let open = Self.start + Self.frame(0x1, flags: 0x4, stream: 1, request)
        XCTAssertEqual(run([open + Self.frame(0x0, stream: 1, []) + Self.frame(0x0, flags: 1, stream: 1, [])]).events.last, "data 1  pad=0 end")
        XCTAssertEqual(run([open + Self.frame(0x0, stream: 1, []) + Self.frame(0x0, stream: 1, [])]).events.last, "error ENHANCE_YOUR_CALM")
    }

    /// The answers the codec writes on its own (SETTINGS and PING ACKs, RST_STREAM) are
    /// counted for the handler's bound on what waits for a client that does not read, and the
    /// handler's `abort` ends the connection with its code; nothing is read after it.
    func testControlAnswersAreCountedAndAbortEndsTheConnection() {
        var codec = HTTP2ServerCodec(allocator: allocator)
        let pings = (0..<5).flatMap { Self.frame(0x6, Self.be64(UInt64($0))) }
        let stray = Self.frame(0x1, flags: 0x4, stream: 1, [0xFF])
        var result = run(&codec, [Self.start + pings])
        XCTAssertEqual(codec.controlAnswers, 6)
        XCTAssertEqual(result.frames.filter { $0.hasPrefix("PING_ACK") }.count, 5)
        let error = codec.abort(.enhanceYourCalm, "too many answers queued")
        XCTAssertEqual(error?.code, .enhanceYourCalm)
        XCTAssertNil(codec.abort(.enhanceYourCalm, "again"))
        result = run(&codec, [stray + pings])
        XCTAssertEqual(result.events, [])
        XCTAssertEqual(result.frames, ["GOAWAY 0 ENHANCE_YOUR_CALM"])
        XCTAssertEqual(codec.controlAnswers, 6)
    }

    func testGoAwayReceivedRefusesNewStreamsAndLateFramesOfResetStreamsAreIgnored() {
        let request = block(Self.request)
        var codec = HTTP2ServerCodec(allocator: allocator)
        var input = Self.start + Self.frame(0x1, flags: 0x4, stream: 1, request)
        input += Self.frame(0x7, Self.be32(0) + Self.be32(0))
        input += Self.frame(0x1, flags: 0x5, stream: 3, block(Self.request))
        var result = run(&codec, [input])
        XCTAssertEqual(result.events.last, "goAway 0 NO_ERROR")
        XCTAssertEqual(result.frames, ["SETTINGS_ACK", "RST 3 REFUSED_STREAM"])
        // The handler resets stream 1; the client's DATA and trailers already sent are ignored.
        codec.resetStream(1, .protocolError)
        result = run(&codec, [Self.frame(0x0, stream: 1, [1, 2]) + Self.frame(0x1, flags: 0x5, stream: 1, block([("x", "y")]))])
        XCTAssertEqual(result.events, [])
        XCTAssertEqual(result.frames, ["RST 1 PROTOCOL_ERROR"])
    }

    func testSentGoAwayRefusesStreamsAboveItsLastStreamID() {
        var codec = HTTP2ServerCodec(allocator: allocator)
        _ = run(&codec, [Self.start + Self.frame(0x1, flags: 0x5, stream: 1, block(Self.request))])
        codec.goAway(lastStreamID: 0x7FFF_FFFF)
        var result = run(&codec, [Self.frame(0x1, flags: 0x5, stream: 3, block(Self.request))])
        XCTAssertEqual(result.events.count, 1)
        XCTAssertEqual(result.frames, ["GOAWAY 2147483647 NO_ERROR"])
        codec.goAway(lastStreamID: 3)
        result = run(&codec, [Self.frame(0x1, flags: 0x5, stream: 5, block(Self.request))])
        XCTAssertEqual(result.events, [])
        XCTAssertEqual(result.frames, ["GOAWAY 3 NO_ERROR", "RST 5 REFUSED_STREAM"])
    }

    // MARK: - Outbound

    func testResponseClosesTheStreamAndLargeHeadersContinue() {
        var codec = HTTP2ServerCodec(allocator: allocator)
        _ = run(&codec, [Self.start + Self.frame(0x1, flags: 0x5, stream: 1, block(Self.request)) + Self.frame(0x1, flags: 0x5, stream: 3, block(Self.request))])
        XCTAssertEqual(codec.openStreams, 2)
        XCTAssertFalse(codec.writeHeaders(1, HPACKHeaders([(":status", "200")]), endStream: false))
        XCTAssertTrue(codec.writeData(1, allocator.buffer(string: "hello"), endStream: true))
        // A field block above the client's SETTINGS_MAX_FRAME_SIZE continues in CONTINUATION frames.
        let big = HPACKHeaders([(":status", "200"), ("x-big", String(repeating: "~", count: 20_000))])
        XCTAssertTrue(codec.writeHeaders(3, big, endStream: true))
        XCTAssertEqual(codec.openStreams, 0)
        // Closed streams: writes are dropped.
        XCTAssertFalse(codec.writeData(1, allocator.buffer(string: "late"), endStream: true))
        let out = codec.takeOutput()!
        XCTAssertEqual(Self.frames(Array(out.readableBytesView)), ["HEADERS 1 4", "DATA 1 5 end", "HEADERS 3 1", "CONTINUATION 3 4"])
        var decoder = HPACKDecoder(allocator: allocator, maxDynamicTableSize: 4096, maxHeaderListSize: 1 << 20)
        var bytes = Array(out.readableBytesView)
        // Reassemble stream 3's block and decode it with the client's decoder.
        var blocks: [[UInt8]] = []
        while bytes.count >= 9 {
            let length = Int(bytes[0]) << 16 | Int(bytes[1]) << 8 | Int(bytes[2])
            blocks.append(Array(bytes[9..<(9 + length)]))
            bytes.removeFirst(9 + length)
        }
        var first = allocator.buffer(bytes: blocks[0])
        XCTAssertEqual(try decoder.decodeHeaders(from: &first).first(name: ":status"), "200")
        var continued = allocator.buffer(bytes: blocks[2] + blocks[3])
        XCTAssertEqual(try decoder.decodeHeaders(from: &continued).first(name: "x-big")?.count, 20_000)
    }

    /// Response field blocks (`H2FieldEncoder`) use the static table only: a whole match is its
    /// index, a known name its index with a literal value, `never indexed` kept; the same fields
    /// give the same bytes every time (nothing enters the dynamic table). The client's
    /// SETTINGS_HEADER_TABLE_SIZE changes are signalled at the start of the next block, the
    /// smallest first (RFC 7541 §4.2), and only once.
    func testResponseBlocksUseTheStaticTableAndSignalTableSizeChanges() throws {
        var codec = HTTP2ServerCodec(allocator: allocator)
        var input = Self.start
        for stream: UInt32 in [1, 3, 5, 7] { input += Self.frame(0x1, flags: 0x5, stream: stream, block(Self.request)) }
        _ = run(&codec, [input])
        var fields = HPACKHeaders([(":status", "200"), ("content-type", "text/plain"), ("x-custom", "v"), ("x-long", String(repeating: "a", count: 300))])
        fields.add(name: "set-cookie", value: "s=1", indexing: .neverIndexed)
        func headerBlock(_ id: UInt32) -> [UInt8] {
            XCTAssertTrue(codec.writeHeaders(id, fields, endStream: true))
            let out = Array(codec.takeOutput()!.readableBytesView)
            XCTAssertEqual(Self.frames(out), ["HEADERS \(id) 5"])
            return Array(out.dropFirst(9))
        }
        let first = headerBlock(1)
        XCTAssertEqual(first, headerBlock(3))
        // 0x88: `:status: 200` indexed (8); 0x0f 0x10: `content-type` by name (31 = 15 + 16),
        // literal without indexing; `x-custom` a literal name; a value of 300 bytes: its length
        // 127 + 173 (0xad 0x01: 45 + 1 × 128).
        XCTAssertEqual(Array(first.prefix(3)), [0x88, 0x0F, 0x10])
        XCTAssertEqual(Array(first[14...16]), [0x00, 0x08] + Array("x".utf8))
        XCTAssertEqual(Array(first[34...36]), [0x7F, 0xAD, 0x01])
        // `set-cookie` never indexed by name (55 = 15 + 40).
        XCTAssertEqual(Array(first.suffix(6)), [0x1F, 0x28, 0x03] + Array("s=1".utf8))
        var decoder = HPACKDecoder(allocator: allocator, maxDynamicTableSize: 4096, maxHeaderListSize: 1 << 20)
        var buffer = allocator.buffer(bytes: first)
        let decoded = try decoder.decodeHeaders(from: &buffer)
        XCTAssertEqual(decoded.map { "\($0.name)=\($0.value.count)" }, [":status=3", "content-type=10", "x-custom=1", "x-long=300", "set-cookie=3"])
        XCTAssertEqual(decoded.map(\.indexable).last, .neverIndexed)
        // The client lowers its table to 0, then raises it to 256: both sizes lead the next
        // block (0x20: 0; 0x3f 0xe1 0x01: 31 + 225 = 256), the block after has none.
        _ = run(&codec, [Self.frame(0x4, Self.setting(0x1, 0)) + Self.frame(0x4, Self.setting(0x1, 256))])
        let resized = headerBlock(5)
        XCTAssertEqual(resized, [0x20, 0x3F, 0xE1, 0x01] + first)
        XCTAssertEqual(headerBlock(7), first)
    }

    /// Every name of HPACK's static table (RFC 7541 Appendix A) is found at its first index,
    /// in any ASCII case; other names are not.
    func testStaticTableNamesAreFoundAtTheirFirstIndex() {
        let table = """
            :authority :method :method :path :path :scheme :scheme :status :status :status :status :status :status :status
            accept-charset accept-encoding accept-language accept-ranges accept access-control-allow-origin age allow
            authorization cache-control content-disposition content-encoding content-language content-length content-location
            content-range content-type cookie date etag expect expires from host if-match if-modified-since if-none-match
            if-range if-unmodified-since last-modified link location max-forwards proxy-authenticate proxy-authorization range
            referer refresh retry-after server set-cookie strict-transport-security transfer-encoding user-agent vary via
            www-authenticate
            """.split(whereSeparator: \.isWhitespace).map(String.init)
        XCTAssertEqual(table.count, 61)
        func index(_ name: String) -> Int { utf8Bytes(of: name) { H2FieldEncoder.staticIndex($0) } }
        for name in table {
            XCTAssertEqual(index(name), table.firstIndex(of: name)! + 1, name)
            XCTAssertEqual(index(name.uppercased()), table.firstIndex(of: name)! + 1, name)
        }
        for name in ["x-custom", "dates", "serve", "content-typ_", "set_cookie", ""] { XCTAssertEqual(index(name), 0, name) }
    }

    func testOutboundFlowControlHoldsAndReleasesData() {
        var codec = HTTP2ServerCodec(allocator: allocator)
        // The client's stream window is 10 bytes; the connection window the default 65,535.
        let input = Self.preface + Self.frame(0x4, Self.setting(0x4, 10)) + Self.frame(0x1, flags: 0x5, stream: 1, block(Self.request))
        _ = run(&codec, [input])
        codec.writeHeaders(1, HPACKHeaders([(":status", "200")]), endStream: false)
        XCTAssertFalse(codec.writeData(1, allocator.buffer(string: "0123456789abcdef"), endStream: false))
        XCTAssertFalse(codec.writeData(1, allocator.buffer(string: "ghij"), endStream: false))
        XCTAssertFalse(codec.writeHeaders(1, HPACKHeaders([("x-trailer", "t")]), endStream: true))
        XCTAssertEqual(codec.heldBytes(1), 10)
        XCTAssertEqual(run(&codec, []).frames, ["HEADERS 1 4", "DATA 1 10"])
        // 4 more bytes of window: 4 bytes leave.
        var result = run(&codec, [Self.frame(0x8, stream: 1, Self.be32(4))])
        XCTAssertEqual(result.frames, ["DATA 1 4"])
        XCTAssertEqual(codec.heldBytes(1), 6)
        // A larger initial window (SETTINGS) releases the rest and the trailers: the stream closes.
        result = run(&codec, [Self.frame(0x4, Self.setting(0x4, 100))])
        XCTAssertEqual(result.frames, ["SETTINGS_ACK", "DATA 1 2", "DATA 1 4", "HEADERS 1 5"])
        XCTAssertEqual(result.events, ["closed 1 ok"])
        XCTAssertEqual(codec.openStreams, 0)
    }

    func testConnectionWindowHoldsDataAcrossStreams() {
        var codec = HTTP2ServerCodec(allocator: allocator)
        var input = Self.start
        for id in [1, 3] as [UInt32] { input += Self.frame(0x1, flags: 0x5, stream: id, block(Self.request)) }
        _ = run(&codec, [input])
        let big = allocator.buffer(repeating: 0x61, count: 40_000)
        codec.writeData(1, big, endStream: true)
        codec.writeData(3, big, endStream: true)
        // 65,535 bytes of connection window: 40,000 on stream 1 (in frames of 16,384), 25,535 on 3.
        XCTAssertEqual(run(&codec, []).frames, ["DATA 1 16384", "DATA 1 16384", "DATA 1 7232 end", "DATA 3 16384", "DATA 3 9151"])
        XCTAssertEqual(codec.heldBytes(3), 14_465)
        let result = run(&codec, [Self.frame(0x8, Self.be32(100_000))])
        XCTAssertEqual(result.frames, ["DATA 3 14465 end"])
        XCTAssertEqual(result.events, ["closed 3 ok"])
    }

    /// `sendState` (what the handler's send timeout samples): per stream the bytes held, the
    /// bytes sent so far, and what the held DATA waits for — its own window, or the
    /// connection's once that is used up (then no stream can send); unknown streams: nil.
    func testSendStateTellsWhatHeldDataWaitsFor() {
        var codec = HTTP2ServerCodec(allocator: allocator)
        // Stream windows of 10 bytes; the connection window the default 65,535.
        var input = Self.preface + Self.frame(0x4, Self.setting(0x4, 10))
        for id in [1, 3] as [UInt32] { input += Self.frame(0x1, flags: 0x5, stream: id, block(Self.request)) }
        _ = run(&codec, [input])
        XCTAssertEqual(codec.sendState(1), H2SendState(held: 0, sent: 0, waitingFor: .nothing))
        XCTAssertNil(codec.sendState(5))
        codec.writeData(1, allocator.buffer(string: "0123456789abcdef"), endStream: false)
        XCTAssertEqual(codec.sendState(1), H2SendState(held: 6, sent: 10, waitingFor: .streamWindow))
        _ = run(&codec, [Self.frame(0x8, stream: 1, Self.be32(4))])
        XCTAssertEqual(codec.sendState(1), H2SendState(held: 2, sent: 14, waitingFor: .streamWindow))
        // A larger initial window releases stream 1; stream 3 then uses the connection window up.
        _ = run(&codec, [Self.frame(0x4, Self.setting(0x4, 100_000))])
        XCTAssertEqual(codec.sendState(1), H2SendState(held: 0, sent: 16, waitingFor: .nothing))
        codec.writeData(3, allocator.buffer(repeating: 0x61, count: 70_000), endStream: false)
        XCTAssertEqual(codec.sendState(3), H2SendState(held: 70_000 - 65_519, sent: 65_519, waitingFor: .connectionWindow))
        codec.writeData(1, allocator.buffer(string: "12345"), endStream: false)
        XCTAssertEqual(codec.sendState(1), H2SendState(held: 5, sent: 16, waitingFor: .connectionWindow))
        // Connection credit: held DATA leaves in stream order.
        _ = run(&codec, [])
        let result = run(&codec, [Self.frame(0x8, Self.be32(10_000))])
        XCTAssertEqual(result.frames, ["DATA 1 5", "DATA 3 4481"])
        XCTAssertEqual(codec.sendState(1), H2SendState(held: 0, sent: 21, waitingFor: .nothing))
        XCTAssertEqual(codec.sendState(3), H2SendState(held: 0, sent: 70_000, waitingFor: .nothing))
    }

    func testUpgradeOpensStreamOneHalfClosedWithItsSettings() {
        // HTTP2-Settings: SETTINGS_INITIAL_WINDOW_SIZE 5.
        var codec = HTTP2ServerCodec(allocator: allocator, upgradeSettings: Self.setting(0x4, 5))
        XCTAssertEqual(codec.openStreams, 1)
        XCTAssertEqual(codec.lastStreamID, 1)
        codec.writeHeaders(1, HPACKHeaders([(":status", "200")]), endStream: false)
        codec.writeData(1, allocator.buffer(string: "0123456789"), endStream: true)
        let result = run(&codec, [Self.start])
        // Only the client's own SETTINGS is acknowledged.
        XCTAssertEqual(result.frames, ["HEADERS 1 4", "DATA 1 5", "SETTINGS_ACK"])
        XCTAssertEqual(run(&codec, [Self.frame(0x8, stream: 1, Self.be32(5))]).frames, ["DATA 1 5 end"])
    }

    // MARK: - Closed streams and SETTINGS_TIMEOUT

    /// RFC 9113 §5.1, §6.1, §6.2: HEADERS or DATA on a stream that closed normally (both sides
    /// ended it) is a stream error STREAM_CLOSED — the connection and its other streams go on —,
    /// whole, split at every offset and byte by byte. Stream IDs the client skipped (implicitly
    /// closed, never opened) stay a connection error PROTOCOL_ERROR (§5.1.1).
    func testFramesOnAStreamThatClosedNormallyAreStreamErrors() {
        let cases: [(String, (inout HTTPRouteCodecRequests) -> [UInt8], [String], [String])] = [
            ("HEADERS", { $0.frame(0x1, flags: 0x5, stream: 1) + $0.frame(0x1, flags: 0x5, stream: 5) }, ["headers 5 end"], ["RST 1 STREAM_CLOSED"]),
            ("DATA", { $0.data(1) + $0.frame(0x1, flags: 0x5, stream: 5) }, ["headers 5 end"], ["RST 1 STREAM_CLOSED"]),
            ("HEADERS on the older stream", { $0.frame(0x1, flags: 0x4, stream: 1) + $0.data(5) }, ["data 5 late"], ["RST 1 STREAM_CLOSED"]),
            ("HEADERS on a skipped ID", { $0.frame(0x1, flags: 0x5, stream: 5) + $0.frame(0x1, flags: 0x5, stream: 9) + $0.frame(0x1, flags: 0x5, stream: 7) },
             ["headers 5 end", "headers 9 end", "error PROTOCOL_ERROR"], ["GOAWAY 9 PROTOCOL_ERROR"]),
        ]
        for (name, late, events, frames) in cases {
            for split in ["whole", "split", "drip"] {
                var codec = HTTP2ServerCodec(allocator: allocator)
                var requests = HTTPRouteCodecRequests()
                // Streams 1 and 3 open and close normally (request ended, response ended).
                _ = run(&codec, [Self.start + requests.frame(0x1, flags: 0x5, stream: 1) + requests.frame(0x1, flags: 0x5, stream: 3)])
                XCTAssertTrue(codec.writeHeaders(1, HPACKHeaders([(":status", "204")]), endStream: true))
                XCTAssertTrue(codec.writeHeaders(3, HPACKHeaders([(":status", "204")]), endStream: true))
                XCTAssertEqual(codec.openStreams, 0)
                _ = codec.takeOutput()
                if name == "HEADERS on the older stream" {
                    // Stream 5 is open when stream 1's late HEADERS arrive; its DATA still gets through.
                    _ = run(&codec, [requests.frame(0x1, flags: 0x4, stream: 5)])
                }
                let input = late(&requests)
                let pieces: [[UInt8]]
                switch split {
                case "whole": pieces = [input]
                case "split": pieces = [Array(input[..<(input.count / 2)]), Array(input[(input.count / 2)...])]
                default: pieces = input.map { [$0] }
                }
                let result = run(&codec, pieces)
                XCTAssertEqual(result.events.map { $0.split(separator: " ").prefix(3).joined(separator: " ") }, events, "\(name) \(split)")
                XCTAssertEqual(result.frames, frames, "\(name) \(split)")
            }
        }
    }

    /// RFC 9113 §6.5.3: the server's SETTINGS not acknowledged when the handler's timer runs
    /// out ends the connection with GOAWAY SETTINGS_TIMEOUT; acknowledged (whole, split, byte
    /// by byte), nothing happens. A SETTINGS ACK with a payload stays a FRAME_SIZE_ERROR.
    func testSettingsNotAcknowledgedInTimeEndTheConnection() {
        var late = HTTP2ServerCodec(allocator: allocator)
        _ = run(&late, [Self.start])
        XCTAssertTrue(late.awaitingSettingsAck)
        XCTAssertEqual(late.settingsTimedOut(after: 10)?.code, .settingsTimeout)
        XCTAssertEqual(run(&late, []).frames, ["GOAWAY 0 SETTINGS_TIMEOUT"])
        XCTAssertNil(late.settingsTimedOut(after: 10))
        let input = Self.start + Self.frame(0x4, flags: 1)
        for pieces in [[input], [Array(input[..<30]), Array(input[30...])], input.map { [$0] }] {
            var codec = HTTP2ServerCodec(allocator: allocator)
            let result = run(&codec, pieces)
            XCTAssertEqual(result.frames, ["SETTINGS_ACK"])
            XCTAssertFalse(codec.awaitingSettingsAck)
            XCTAssertNil(codec.settingsTimedOut(after: 10))
            XCTAssertEqual(run(&codec, []).frames, [])
        }
    }
}

/// Request frames for the closed-stream cases, encoded by one client HPACK encoder per
/// connection (its dynamic table in step with the codec's decoder: blocks are made in the
/// order they are fed).
struct HTTPRouteCodecRequests {
    var encoder = HPACKEncoder(allocator: ByteBufferAllocator())

    mutating func frame(_ type: UInt8, flags: UInt8, stream: UInt32) -> [UInt8] {
        var buffer = ByteBufferAllocator().buffer(capacity: 256)
        try! encoder.encode(headers: HPACKHeaders(HTTP2ServerCodecTests.request), to: &buffer)
        return HTTP2ServerCodecTests.frame(type, flags: flags, stream: stream, Array(buffer.readableBytesView))
    }

    func data(_ stream: UInt32) -> [UInt8] {
        HTTP2ServerCodecTests.frame(0x0, flags: 0x1, stream: stream, Array("late".utf8))
    }
}
