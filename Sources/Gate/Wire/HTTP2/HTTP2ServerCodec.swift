import NIOCore
import NIOHPACK

/// What `HTTP2ServerCodec` found in the bytes it was given.
enum H2Event {
    /// A request's HEADERS (`trailers` false: the stream was opened by it) or its trailer
    /// section (`trailers` true), field block reassembled from CONTINUATION frames and decoded.
    case headers(streamID: UInt32, fields: HPACKHeaders, endStream: Bool, trailers: Bool)
    /// Request body bytes. `padding`: flow-controlled bytes of the frame beyond `data` (the pad
    /// length octet and the padding), to be credited with `data`'s bytes.
    case data(streamID: UInt32, data: ByteBuffer, padding: Int, endStream: Bool)
    /// A stream the handler knew (it had `headers` for it) is closed: both sides ended it
    /// (`error` nil), the client reset it (its code), or the codec reset it for a stream error
    /// (the code it sent in RST_STREAM).
    case streamClosed(streamID: UInt32, error: H2ErrorCode?)
    /// The ACK of a PING the handler sent, with its opaque data.
    case pingAck(UInt64)
    /// The client sent GOAWAY: it opens no new stream (new HEADERS are refused from now on).
    case goAway(lastStreamID: UInt32, error: H2ErrorCode)
    /// A connection error (RFC 9113 §5.4.1): the GOAWAY with its code and message is in the
    /// output; flush it and close. No further events.
    case connectionError(H2ConnectionError)
}

/// What a stream's held response DATA waits for (`HTTP2ServerCodec.sendState`).
enum H2SendWait: Equatable {
    /// Nothing is held.
    case nothing
    /// The stream's own send window is used up (the client sends no WINDOW_UPDATE for it).
    case streamWindow
    /// The connection's send window is used up: no stream can send DATA.
    case connectionWindow
}

/// How far one stream's response got against the client's flow control: what the handler's
/// send timeout samples (no progress in `sent` while `held` > 0 for `sendTimeout`).
struct H2SendState: Equatable {
    /// DATA bytes held for want of window.
    var held: Int
    /// DATA bytes sent on the stream so far.
    var sent: Int
    var waitingFor: H2SendWait
}

/// The server side of one HTTP/2 connection (RFC 9113, <https://www.rfc-editor.org/rfc/rfc9113>)
/// as a value: bytes in (`receive`, then `nextEvent` until nil), frames out (the `write…`
/// calls and the codec's own answers — SETTINGS ACK, PING ACK, RST_STREAM, GOAWAY,
/// connection-level WINDOW_UPDATE — gathered in one buffer, `takeOutput`). No sockets,
/// clocks or logging; NIOHPACK's `HPACKDecoder` for received field blocks, `H2FieldEncoder` for sent ones.
///
/// Hand-written instead of `NIOHTTP2Handler` for the gateway's hot path: NIO's handler copies
/// its connection and stream state machines for every frame, boxes every frame in an enum
/// that travels through the pipeline as `NIOAny`, fires two to four user events per stream,
/// and encodes each frame into a buffer of its own — about 14 % of the gateway's CPU time per
/// HTTP/2 request in profiles. Here a frame is parsed in place from the received buffer (DATA
/// payloads are slices of it), state lives in two sorted arrays, and every frame written
/// between two flushes lands in one buffer: no allocation per frame beyond what HPACK needs.
///
/// What it does (RFC 9113 section in brackets):
/// * the client preface and the first SETTINGS (§3.4), the server's own SETTINGS at once;
/// * frame header checks against SETTINGS_MAX_FRAME_SIZE (§4.2), padding (§6.1, §6.2);
/// * SETTINGS with each value checked (§6.5.2), ACKed; a new SETTINGS_INITIAL_WINDOW_SIZE
///   applied to every open stream (§6.9.2); PING answered (§6.7); GOAWAY sent on connection
///   errors with the code and a debug message, and on receipt no new stream (§6.8);
///   RST_STREAM (§6.4); PRIORITY validated and ignored (§5.3.2); PUSH_PROMISE refused;
/// * HEADERS + CONTINUATION reassembly, nothing interleaved (§6.10), field blocks up to
///   `maxHeaderBlock` compressed and `maxDecodedHeaderList` decoded (beyond: connection error,
///   the HPACK state could not stay in step otherwise);
/// * stream states (§5.1): client stream IDs odd and increasing, at most
///   `maxConcurrentStreams` open (REFUSED_STREAM beyond), half-closed and closed streams,
///   HEADERS or DATA on closed streams (a stream error STREAM_CLOSED, §5.1, §6.1; ignored for
///   streams the server reset itself, as §5.4.2 asks), DATA or WINDOW_UPDATE on idle streams
///   (PROTOCOL_ERROR). Closed streams cost no memory: every ID up to the highest the client
///   opened that is not open now is closed, idle ones are above it; only the IDs a client
///   skipped (implicitly closed by §5.1.1, never opened) are kept as ranges, so that HEADERS
///   trying to open one of them is the connection error PROTOCOL_ERROR §5.1.1 asks for;
/// * SETTINGS_TIMEOUT (§6.5.3): `settingsTimedOut` ends the connection with GOAWAY
///   SETTINGS_TIMEOUT when the client has not acknowledged the server's SETTINGS (the handler
///   keeps the time);
/// * inbound flow control (§5.2, §6.9): windows checked (FLOW_CONTROL_ERROR); the connection
///   window credited on receipt once half a default window is used; stream windows credited
///   by the handler (`windowUpdate`, when the bytes reached the backend: upload backpressure);
/// * outbound flow control: DATA beyond the client's stream or connection window is held per
///   stream (with the trailers behind it) and sent as WINDOW_UPDATEs or a larger initial
///   window make room (`heldBytes` tells the handler how much waits, `sendState` also what it
///   waits for and how much left so far, for the handler's send timeout).
struct HTTP2ServerCodec {
    /// SETTINGS_MAX_CONCURRENT_STREAMS the server announces and enforces.
    static let maxConcurrentStreams = 100
    /// SETTINGS_MAX_HEADER_LIST_SIZE the server announces (advisory: larger lists up to
    /// `maxDecodedHeaderList` are decoded and answered 431 by the gateway).
    static let maxHeaderListSize = 16384
    /// The largest decoded field list accepted (connection error beyond).
    static let maxDecodedHeaderList = 65536
    /// The largest compressed field block (HEADERS + CONTINUATION payloads) accepted.
    static let maxHeaderBlock = 65536
    /// The server's SETTINGS_MAX_FRAME_SIZE (the default, not raised).
    static let maxFrameSize = 16384
    /// Connection-level credit is sent once this many DATA bytes were received.
    static let windowUpdateThreshold = 32768
    static let defaultWindow = 65535
    static let maxWindow = Int(Int32.max)
    /// Streams reset by the server whose late frames are ignored (RFC 9113 §5.4.2).
    static let resetMemory = 32
    /// Ranges of stream IDs a client skipped that are remembered (the oldest are forgotten
    /// beyond: their IDs then count as streams that closed).
    static let skippedMemory = 32

    private enum Phase {
        case preface, firstSettings, open, failed
    }

    /// Content not yet sent because the client's window was exhausted.
    private enum Held {
        case data(ByteBuffer, endStream: Bool)
        case trailers(HPACKHeaders)
    }

    private struct Stream {
        var remoteClosed: Bool
        var localClosed = false
        /// END_STREAM was handed in (it may still be held behind DATA).
        var localEndQueued = false
        var sendWindow: Int
        var recvWindow: Int
        var held: [Held] = []
        var heldBytes = 0
        /// DATA payload bytes sent so far (`sendState`).
        var sentBytes = 0
    }

    /// Field block being reassembled from HEADERS and CONTINUATION frames.
    private struct PendingBlock {
        var streamID: UInt32
        var endStream: Bool
        var selfDependent: Bool
        var block: ByteBuffer
    }

    /// At most `maximum` events per `window` milliseconds (a fixed window restarting at the
    /// first event after it ended), as NIO's DOS heuristics count them.
    private struct RateLimit {
        var count = 0
        var start: UInt64 = 0

        mutating func exceeded(at now: UInt64, maximum: Int = HTTP2ServerCodec.maxResetsPerWindow, window: UInt64 = HTTP2ServerCodec.resetWindow) -> Bool {
            if count == 0 || now &- start >= window {
                start = now
                count = 0
            }
            count += 1
            return count > maximum
        }
    }

    /// RST_STREAM frames from the client, and stream errors the codec answers, tolerated per
    /// `resetWindow` before ENHANCE_YOUR_CALM (the "rapid reset" attack, CVE-2023-44487;
    /// NIO's limits).
    static let maxResetsPerWindow = 200
    static let resetWindow: UInt64 = 30_000
    /// Empty DATA frames without END_STREAM tolerated in a row (NIO's limit).
    static let maxEmptyDataFrames = 1

    /// The time in milliseconds (monotonic), set by the I/O layer before it feeds bytes: the
    /// codec reads no clock.
    var now: UInt64 = 0
    private var clientResets = RateLimit()
    private var streamErrors = RateLimit()
    private var emptyDataFrames = 0

    private var phase = Phase.preface
    private var decoder: HPACKDecoder
    private var encoder = H2FieldEncoder()
    private let allocator: ByteBufferAllocator

    private var inbound: ByteBuffer?
    private var output: ByteBuffer
    /// `output` was handed out: cleared before the next write (unique again by then, once the
    /// layer below has written it, so no allocation).
    private var outputTaken = false

    /// Open and half-closed streams, sorted by ID.
    private var ids: [UInt32] = []
    private var streams: [Stream] = []
    /// The highest stream ID the client opened (0: none); lower IDs not in `ids` are closed.
    private(set) var lastStreamID: UInt32 = 0
    /// The highest stream ID accepted (not refused): the last stream ID of a GOAWAY on error.
    private var lastAcceptedStreamID: UInt32 = 0
    private var recentlyReset: [UInt32] = []
    /// Client stream IDs below `lastStreamID` that were never opened (see `skippedMemory`).
    private var skipped: [ClosedRange<UInt32>] = []
    /// The client has not acknowledged the server's SETTINGS yet.
    private(set) var awaitingSettingsAck = true
    private var resetCursor = 0
    private var closedQueue: [UInt32] = []
    private var continuing: PendingBlock?

    private var peerInitialWindow = defaultWindow
    private(set) var peerMaxFrameSize = maxFrameSize
    private var connectionSendWindow = defaultWindow
    private var connectionRecvWindow = defaultWindow
    private var connectionDebt = 0
    /// The client sent GOAWAY: no new streams.
    private(set) var goAwayReceived = false
    /// Frames the codec wrote on its own in answer to the client (SETTINGS and PING ACKs,
    /// RST_STREAM), counted so the handler can bound how many wait while the client does not
    /// read (`HTTP2RouteHandler.maxQueuedControlFrames`).
    private(set) var controlAnswers = 0
    /// The last stream ID of the last GOAWAY sent (streams above it are refused).
    private var goAwaySent: UInt32?

    /// A server connection; its SETTINGS frame is in the output at once. `upgrade` (h2c
    /// `Upgrade`, RFC 7540 §3.2): the `HTTP2-Settings` payload, applied as if received
    /// (implicitly acknowledged), and stream 1 opened half-closed (remote) for the request
    /// that asked for the upgrade.
    init(allocator: ByteBufferAllocator, upgradeSettings: [UInt8]? = nil) {
        self.allocator = allocator
        decoder = HPACKDecoder(allocator: allocator, maxDynamicTableSize: HPACKDecoder.maxDynamicTableSize, maxHeaderListSize: Self.maxDecodedHeaderList)
        output = allocator.buffer(capacity: 1024)
        ids.reserveCapacity(16)
        streams.reserveCapacity(16)
        closedQueue.reserveCapacity(8)
        // SETTINGS (RFC 9113 §3.4: the server preface): MAX_CONCURRENT_STREAMS, MAX_HEADER_LIST_SIZE.
        H2FrameHeader.write(length: 12, type: .settings, flags: 0, streamID: 0, to: &output)
        output.writeInteger(H2Setting.maxConcurrentStreams)
        output.writeInteger(UInt32(Self.maxConcurrentStreams))
        output.writeInteger(H2Setting.maxHeaderListSize)
        output.writeInteger(UInt32(Self.maxHeaderListSize))
        if let upgradeSettings {
            var payload = allocator.buffer(bytes: upgradeSettings)
            _ = applySettings(&payload)
            lastStreamID = 1
            insert(1, Stream(remoteClosed: true, sendWindow: peerInitialWindow, recvWindow: Self.defaultWindow))
        }
    }

    // MARK: - Input

    /// Bytes received from the client; the events they carry follow from `nextEvent`.
    mutating func receive(_ buffer: ByteBuffer) {
        guard phase != .failed, buffer.readableBytes > 0 else { return }
        if inbound == nil {
            inbound = buffer
        } else {
            var more = buffer
            inbound!.writeBuffer(&more)
        }
    }

    /// The next event from the bytes received so far, nil when more bytes are needed.
    mutating func nextEvent() -> H2Event? {
        while true {
            if !closedQueue.isEmpty { return .streamClosed(streamID: closedQueue.removeFirst(), error: nil) }
            guard phase != .failed, inbound != nil else { return nil }
            if phase == .preface {
                switch HTTP2Preface.parse(inbound!.readableBytesView) {
                case .needMore: return nil
                case .invalid(let error): return fail(.protocolError, "not the HTTP/2 connection preface: \(error.message)")
                case .done(_, let consumed):
                    inbound!.moveReaderIndex(forwardBy: consumed)
                    phase = .firstSettings
                }
            }
            guard let header = H2FrameHeader.peek(inbound!) else {
                if inbound!.readableBytes == 0 { inbound = nil }
                return nil
            }
            guard header.length <= Self.maxFrameSize else {
                return fail(.frameSizeError, "frame of type \(header.type) with \(header.length) bytes, above SETTINGS_MAX_FRAME_SIZE \(Self.maxFrameSize)")
            }
            guard inbound!.readableBytes >= H2FrameHeader.size + header.length else { return nil }
            inbound!.moveReaderIndex(forwardBy: H2FrameHeader.size)
            let payload = inbound!.readSlice(length: header.length)!
            if inbound!.readableBytes == 0 { inbound = nil }
            if let event = frame(header, payload) { return event }
        }
    }

    private mutating func frame(_ header: H2FrameHeader, _ payload: ByteBuffer) -> H2Event? {
        if phase == .firstSettings {
            guard header.type == H2FrameType.settings.rawValue, header.flags & H2Flags.ack == 0 else {
                return fail(.protocolError, "the client preface must be followed by a SETTINGS frame, not type \(header.type)")
            }
            phase = .open
        }
        if let continuing, header.type != H2FrameType.continuation.rawValue || header.streamID != continuing.streamID {
            return fail(.protocolError, "frame of type \(header.type) on stream \(header.streamID) inside the field block of stream \(continuing.streamID)")
        }
        guard let type = H2FrameType(rawValue: header.type) else { return nil }  // unknown types are ignored (§4.1)
        switch type {
        case .data: return data(header, payload)
        case .headers: return headers(header, payload)
        case .continuation: return continuation(header, payload)
        case .priority: return priority(header, payload)
        case .rstStream: return rstStream(header, payload)
        case .settings: return settings(header, payload)
        case .ping: return ping(header, payload)
        case .goAway: return goAway(header, payload)
        case .windowUpdate: return windowUpdate(header, payload)
        case .pushPromise: return fail(.protocolError, "PUSH_PROMISE from a client")
        }
    }

    /// The padding of a PADDED frame (RFC 9113 §6.1): the pad length octet is read from
    /// `payload` and the padding cut off; nil when it is longer than what is left.
    private static func unpad(_ payload: inout ByteBuffer, flags: UInt8) -> Bool {
        guard flags & H2Flags.padded != 0 else { return true }
        guard let pad = payload.readInteger(as: UInt8.self), Int(pad) <= payload.readableBytes else { return false }
        payload.moveWriterIndex(to: payload.writerIndex - Int(pad))
        return true
    }

    /// DATA (RFC 9113 §6.1).
    ///
    /// ```
    /// +---------------+-----------------------------------------------+
    /// |Pad Length? (8)|                  Data (*)                   ...
    /// +---------------+-----------------------------------------------+
    /// |                           Padding (*)                       ...
    /// ```
    private mutating func data(_ header: H2FrameHeader, _ frame: ByteBuffer) -> H2Event? {
        let id = header.streamID
        guard id != 0 else { return fail(.protocolError, "DATA on stream 0") }
        var payload = frame
        guard Self.unpad(&payload, flags: header.flags) else { return fail(.protocolError, "DATA padding longer than the frame on stream \(id)") }
        guard header.length <= connectionRecvWindow else {
            return fail(.flowControlError, "DATA of \(header.length) bytes beyond the connection window of \(connectionRecvWindow)")
        }
        connectionRecvWindow -= header.length
        connectionDebt += header.length
        if connectionDebt >= Self.windowUpdateThreshold {
            writeWindowUpdate(0, connectionDebt)
            connectionRecvWindow += connectionDebt
            connectionDebt = 0
        }
        guard let index = index(id) else {
            if id > lastStreamID { return fail(.protocolError, "DATA on idle stream \(id)") }
            return wasReset(id) ? nil : streamError(id, .streamClosed)
        }
        guard !streams[index].remoteClosed else { return streamError(id, .streamClosed) }
        guard header.length <= streams[index].recvWindow else { return streamError(id, .flowControlError) }
        streams[index].recvWindow -= header.length
        let end = header.flags & H2Flags.endStream != 0
        if end {
            emptyDataFrames = 0
        } else if payload.readableBytes == 0 {
            emptyDataFrames += 1
            guard emptyDataFrames <= Self.maxEmptyDataFrames else { return fail(.enhanceYourCalm, "\(emptyDataFrames) empty DATA frames in a row") }
        }
        if end { remoteEnded(index) }
        return .data(streamID: id, data: payload, padding: header.length - payload.readableBytes, endStream: end)
    }

    /// HEADERS (RFC 9113 §6.2).
    ///
    /// ```
    /// +---------------+-----------------------------------------------+
    /// |Pad Length? (8)|E|        Stream Dependency? (31)              |
    /// +-+-------------+-----------------------------------------------+
    /// |  Weight? (8)  |        Field Block Fragment (*)             ...
    /// +---------------+-----------------------------------------------+
    /// |                           Padding (*)                       ...
    /// ```
    private mutating func headers(_ header: H2FrameHeader, _ frame: ByteBuffer) -> H2Event? {
        let id = header.streamID
        guard id != 0 else { return fail(.protocolError, "HEADERS on stream 0") }
        guard id & 1 == 1 else { return fail(.protocolError, "HEADERS on even stream \(id): client streams are odd") }
        var payload = frame
        guard Self.unpad(&payload, flags: header.flags) else { return fail(.protocolError, "HEADERS padding longer than the frame on stream \(id)") }
        var selfDependent = false
        if header.flags & H2Flags.priority != 0 {
            guard let dependency = payload.readInteger(as: UInt32.self), payload.readInteger(as: UInt8.self) != nil else {
                return fail(.frameSizeError, "HEADERS with PRIORITY flag shorter than 5 bytes on stream \(id)")
            }
            selfDependent = dependency & 0x7FFF_FFFF == id
        }
        let end = header.flags & H2Flags.endStream != 0
        guard header.flags & H2Flags.endHeaders != 0 else {
            guard payload.readableBytes <= Self.maxHeaderBlock else { return fail(.enhanceYourCalm, "field block above \(Self.maxHeaderBlock) bytes") }
            var block = allocator.buffer(capacity: payload.readableBytes * 2)
            block.writeBuffer(&payload)
            continuing = PendingBlock(streamID: id, endStream: end, selfDependent: selfDependent, block: block)
            return nil
        }
        return fieldBlock(id, payload, endStream: end, selfDependent: selfDependent)
    }

    /// CONTINUATION (RFC 9113 §6.10): the rest of a field block, nothing else in between.
    private mutating func continuation(_ header: H2FrameHeader, _ frame: ByteBuffer) -> H2Event? {
        guard var pending = continuing else { return fail(.protocolError, "CONTINUATION on stream \(header.streamID) without HEADERS before it") }
        continuing = nil
        var payload = frame
        guard pending.block.readableBytes + payload.readableBytes <= Self.maxHeaderBlock else {
            return fail(.enhanceYourCalm, "field block above \(Self.maxHeaderBlock) bytes")
        }
        pending.block.writeBuffer(&payload)
        guard header.flags & H2Flags.endHeaders != 0 else {
            continuing = pending
            return nil
        }
        return fieldBlock(pending.streamID, pending.block, endStream: pending.endStream, selfDependent: pending.selfDependent)
    }

    /// A complete field block: decoded (always, to keep HPACK in step), then the stream
    /// opened, its trailers delivered, or the block refused.
    private mutating func fieldBlock(_ id: UInt32, _ block: ByteBuffer, endStream: Bool, selfDependent: Bool) -> H2Event? {
        var block = block
        let fields: HPACKHeaders
        do {
            fields = try decoder.decodeHeaders(from: &block)
        } catch {
            return fail(.compressionError, "field block of stream \(id) not decodable: \(error)")
        }
        emptyDataFrames = 0
        if let index = index(id) {
            guard !streams[index].remoteClosed else { return streamError(id, .streamClosed) }
            // Trailers (RFC 9113 §8.1) must end the stream.
            guard endStream else { return streamError(id, .protocolError) }
            remoteEnded(index)
            return .headers(streamID: id, fields: fields, endStream: true, trailers: true)
        }
        guard id > lastStreamID else {
            if wasReset(id) { return nil }
            if skipped.contains(where: { $0.contains(id) }) {
                return fail(.protocolError, "HEADERS opening stream \(id) below the last opened stream \(lastStreamID) (stream IDs must increase)")
            }
            // A stream that was opened and has closed (RFC 9113 §5.1).
            return streamError(id, .streamClosed)
        }
        let next: UInt32 = lastStreamID == 0 ? 1 : lastStreamID + 2
        if id > next {
            if skipped.count == Self.skippedMemory { skipped.removeFirst() }
            skipped.append(next...(id - 2))
        }
        lastStreamID = id
        if selfDependent { return streamError(id, .protocolError) }
        if goAwayReceived || goAwaySent.map({ id > $0 }) == true || streams.count >= Self.maxConcurrentStreams {
            return reset(id, .refusedStream)
        }
        insert(id, Stream(remoteClosed: endStream, sendWindow: peerInitialWindow, recvWindow: Self.defaultWindow))
        return .headers(streamID: id, fields: fields, endStream: endStream, trailers: false)
    }

    /// PRIORITY (RFC 9113 §6.3): deprecated, checked and ignored.
    private mutating func priority(_ header: H2FrameHeader, _ payload: ByteBuffer) -> H2Event? {
        guard header.streamID != 0 else { return fail(.protocolError, "PRIORITY on stream 0") }
        guard header.length == 5 else { return streamError(header.streamID, .frameSizeError) }
        if payload.getInteger(at: payload.readerIndex, as: UInt32.self).map({ $0 & 0x7FFF_FFFF }) == header.streamID {
            return streamError(header.streamID, .protocolError)
        }
        return nil
    }

    /// RST_STREAM (RFC 9113 §6.4): error code (32).
    private mutating func rstStream(_ header: H2FrameHeader, _ payload: ByteBuffer) -> H2Event? {
        let id = header.streamID
        guard id != 0 else { return fail(.protocolError, "RST_STREAM on stream 0") }
        guard header.length == 4, let code = payload.getInteger(at: payload.readerIndex, as: UInt32.self) else {
            return fail(.frameSizeError, "RST_STREAM of \(header.length) bytes, not 4")
        }
        if clientResets.exceeded(at: now) {
            return fail(.enhanceYourCalm, "more than \(Self.maxResetsPerWindow) RST_STREAM frames in \(Self.resetWindow / 1000) s")
        }
        guard let index = index(id) else {
            return id > lastStreamID ? fail(.protocolError, "RST_STREAM on idle stream \(id)") : nil
        }
        remove(at: index)
        return .streamClosed(streamID: id, error: H2ErrorCode(rawValue: code))
    }

    /// SETTINGS (RFC 9113 §6.5): applied and acknowledged, or a connection error.
    private mutating func settings(_ header: H2FrameHeader, _ frame: ByteBuffer) -> H2Event? {
        guard header.streamID == 0 else { return fail(.protocolError, "SETTINGS on stream \(header.streamID)") }
        if header.flags & H2Flags.ack != 0 {
            guard header.length == 0 else { return fail(.frameSizeError, "SETTINGS ACK with \(header.length) payload bytes") }
            awaitingSettingsAck = false
            return nil
        }
        guard header.length % 6 == 0 else { return fail(.frameSizeError, "SETTINGS of \(header.length) bytes, not whole 6-byte settings") }
        var payload = frame
        if let (code, message) = applySettings(&payload) { return fail(code, message) }
        prepareOutput()
        H2FrameHeader.write(length: 0, type: .settings, flags: H2Flags.ack, streamID: 0, to: &output)
        controlAnswers += 1
        releaseHeld()
        return nil
    }

    /// Applies a SETTINGS payload; the error to fail the connection with, if any.
    private mutating func applySettings(_ payload: inout ByteBuffer) -> (H2ErrorCode, String)? {
        while let identifier = payload.readInteger(as: UInt16.self), let value = payload.readInteger(as: UInt32.self) {
            if let problem = H2Setting.problem(identifier, value) { return problem }
            switch identifier {
            case H2Setting.headerTableSize:
                // The client's decoder table: the encoder's may not be larger (4096 at most).
                encoder.setTableSize(Int(value))
            case H2Setting.initialWindowSize:
                // §6.9.2: the difference applies to every open stream's window.
                let delta = Int(value) - peerInitialWindow
                peerInitialWindow = Int(value)
                for index in streams.indices {
                    streams[index].sendWindow += delta
                    if streams[index].sendWindow > Self.maxWindow {
                        return (.flowControlError, "SETTINGS_INITIAL_WINDOW_SIZE \(value) takes stream \(ids[index])'s window above 2^31-1")
                    }
                }
            case H2Setting.maxFrameSize:
                peerMaxFrameSize = Int(value)
            default:
                break
            }
        }
        return nil
    }

    /// PING (RFC 9113 §6.7): opaque data (64), answered with the same data and ACK.
    private mutating func ping(_ header: H2FrameHeader, _ payload: ByteBuffer) -> H2Event? {
        guard header.streamID == 0 else { return fail(.protocolError, "PING on stream \(header.streamID)") }
        guard header.length == 8, let opaque = payload.getInteger(at: payload.readerIndex, as: UInt64.self) else {
            return fail(.frameSizeError, "PING of \(header.length) bytes, not 8")
        }
        if header.flags & H2Flags.ack != 0 { return .pingAck(opaque) }
        prepareOutput()
        H2FrameHeader.write(length: 8, type: .ping, flags: H2Flags.ack, streamID: 0, to: &output)
        output.writeInteger(opaque)
        controlAnswers += 1
        return nil
    }

    /// GOAWAY (RFC 9113 §6.8): last stream ID (31), error code (32), debug data.
    private mutating func goAway(_ header: H2FrameHeader, _ payload: ByteBuffer) -> H2Event? {
        guard header.streamID == 0 else { return fail(.protocolError, "GOAWAY on stream \(header.streamID)") }
        guard header.length >= 8, let last = payload.getInteger(at: payload.readerIndex, as: UInt32.self),
            let code = payload.getInteger(at: payload.readerIndex + 4, as: UInt32.self)
        else { return fail(.frameSizeError, "GOAWAY of \(header.length) bytes, below 8") }
        goAwayReceived = true
        return .goAway(lastStreamID: last & 0x7FFF_FFFF, error: H2ErrorCode(rawValue: code))
    }

    /// WINDOW_UPDATE (RFC 9113 §6.9): R (1), window size increment (31).
    private mutating func windowUpdate(_ header: H2FrameHeader, _ payload: ByteBuffer) -> H2Event? {
        let id = header.streamID
        guard header.length == 4, let word = payload.getInteger(at: payload.readerIndex, as: UInt32.self) else {
            return fail(.frameSizeError, "WINDOW_UPDATE of \(header.length) bytes, not 4")
        }
        let increment = Int(word & 0x7FFF_FFFF)
        if id == 0 {
            guard increment > 0 else { return fail(.protocolError, "WINDOW_UPDATE with increment 0 on the connection") }
            connectionSendWindow += increment
            guard connectionSendWindow <= Self.maxWindow else { return fail(.flowControlError, "connection window above 2^31-1") }
            releaseHeld()
            return nil
        }
        guard let index = index(id) else {
            return id > lastStreamID ? fail(.protocolError, "WINDOW_UPDATE on idle stream \(id)") : nil
        }
        guard increment > 0 else { return streamError(id, .protocolError) }
        streams[index].sendWindow += increment
        guard streams[index].sendWindow <= Self.maxWindow else { return streamError(id, .flowControlError) }
        releaseHeld()
        return nil
    }

    // MARK: - Output

    /// The frames written since the last call, to be written to the connection; nil when none.
    mutating func takeOutput() -> ByteBuffer? {
        guard !outputTaken, output.readableBytes > 0 else { return nil }
        outputTaken = true
        let taken = output
        // A buffer grown by a burst is not kept for the connection's lifetime.
        if output.capacity > 65536 { output = allocator.buffer(capacity: 1024); outputTaken = false }
        return taken
    }

    /// Whether frames wait in the output.
    var hasOutput: Bool { !outputTaken && output.readableBytes > 0 }

    private mutating func prepareOutput() {
        if outputTaken {
            output.clear()
            outputTaken = false
        }
    }

    /// Response HEADERS (or trailers with `endStream`) on `streamID`; dropped when the stream
    /// is closed. Trailers wait behind held DATA. Returns true when the stream closed by it.
    @discardableResult
    mutating func writeHeaders(_ streamID: UInt32, _ fields: HPACKHeaders, endStream: Bool) -> Bool {
        guard phase != .failed, let index = index(streamID), !streams[index].localEndQueued else { return false }
        if endStream { streams[index].localEndQueued = true }
        if !streams[index].held.isEmpty {
            streams[index].held.append(.trailers(fields))
            return false
        }
        emitHeaders(streamID, endStream: endStream) { encoder, output in encoder.encode(fields, to: &output) }
        return endStream ? localEnded(index) : false
    }

    /// A response head's HEADERS on `streamID` (not ending the stream): `:status` and the
    /// fields `keep` accepts, encoded from the head's own fields (`H2FieldEncoder`). Dropped
    /// when the stream is closed; nothing of the stream is held before its head.
    mutating func writeResponseHead(_ streamID: UInt32, status: Int, fields: [HTTPField], keep: (HTTPField) -> Bool) {
        guard phase != .failed, let index = index(streamID), !streams[index].localEndQueued, streams[index].held.isEmpty else { return }
        emitHeaders(streamID, endStream: false) { encoder, output in encoder.encode(status: status, fields: fields, keep: keep, to: &output) }
    }

    /// Response body bytes on `streamID`: sent as far as the client's windows allow, the rest
    /// held until WINDOW_UPDATE. Dropped when the stream is closed. Returns true when the
    /// stream closed by it.
    @discardableResult
    mutating func writeData(_ streamID: UInt32, _ data: ByteBuffer, endStream: Bool) -> Bool {
        guard phase != .failed, let index = index(streamID), !streams[index].localEndQueued else { return false }
        if endStream { streams[index].localEndQueued = true }
        var data = data
        if streams[index].held.isEmpty, send(&data, endStream: endStream, at: index) { return endStream ? localEnded(index) : false }
        streams[index].held.append(.data(data, endStream: endStream))
        streams[index].heldBytes += data.readableBytes
        return false
    }

    /// END_STREAM on `streamID` (an empty DATA frame, held behind held DATA); true when the
    /// stream closed by it.
    @discardableResult
    mutating func endStream(_ streamID: UInt32) -> Bool {
        writeData(streamID, Self.empty, endStream: true)
    }

    private static let empty = ByteBufferAllocator().buffer(capacity: 0)

    /// Bytes held on `streamID` for want of window (0 for unknown streams).
    func heldBytes(_ streamID: UInt32) -> Int {
        index(streamID).map { streams[$0].heldBytes } ?? 0
    }

    /// What `streamID`'s response waits for (nil for unknown streams): the held bytes, the
    /// bytes sent so far, and which window holds them back — the connection's when it is
    /// used up (no stream can send then), else the stream's own.
    func sendState(_ streamID: UInt32) -> H2SendState? {
        guard let index = index(streamID) else { return nil }
        let stream = streams[index]
        let wait: H2SendWait =
            stream.heldBytes == 0 ? .nothing : connectionSendWindow <= 0 ? .connectionWindow : .streamWindow
        return H2SendState(held: stream.heldBytes, sent: stream.sentBytes, waitingFor: wait)
    }

    /// Resets `streamID` (RST_STREAM with `code`), e.g. for a malformed request; the stream is
    /// closed without an event.
    mutating func resetStream(_ streamID: UInt32, _ code: H2ErrorCode) {
        guard phase != .failed else { return }
        _ = reset(streamID, code)
    }

    /// Credits `increment` bytes of the stream's receive window (WINDOW_UPDATE), unless the
    /// client has ended or the stream closed.
    mutating func windowUpdate(_ streamID: UInt32, _ increment: Int) {
        guard phase != .failed, increment > 0, let index = index(streamID), !streams[index].remoteClosed else { return }
        streams[index].recvWindow += increment
        writeWindowUpdate(streamID, increment)
    }

    /// PING (not ACK) with `opaque`.
    mutating func ping(_ opaque: UInt64) {
        guard phase != .failed else { return }
        prepareOutput()
        H2FrameHeader.write(length: 8, type: .ping, flags: 0, streamID: 0, to: &output)
        output.writeInteger(opaque)
    }

    /// GOAWAY with `lastStreamID` and NO_ERROR: streams above it are refused from now on.
    mutating func goAway(lastStreamID: UInt32) {
        guard phase != .failed else { return }
        writeGoAway(lastStreamID, .noError, debug: "")
        goAwaySent = lastStreamID
    }

    /// The streams open now (open or half-closed).
    var openStreams: Int { streams.count }

    // MARK: - Internals

    private func index(_ id: UInt32) -> Int? {
        var low = 0
        var high = ids.count
        while low < high {
            let middle = (low + high) / 2
            if ids[middle] < id { low = middle + 1 } else { high = middle }
        }
        return low < ids.count && ids[low] == id ? low : nil
    }

    private mutating func insert(_ id: UInt32, _ stream: Stream) {
        // New client streams have the highest ID so far: appended.
        lastAcceptedStreamID = id
        ids.append(id)
        streams.append(stream)
    }

    private mutating func remove(at index: Int) {
        ids.remove(at: index)
        streams.remove(at: index)
    }

    /// The client ended the stream; closed when the server had ended it too.
    private mutating func remoteEnded(_ index: Int) {
        streams[index].remoteClosed = true
        if streams[index].localClosed {
            closedQueue.append(ids[index])
            remove(at: index)
        }
    }

    /// The server's END_STREAM left; true (and the stream gone) when the client had ended it too.
    private mutating func localEnded(_ index: Int) -> Bool {
        streams[index].localClosed = true
        guard streams[index].remoteClosed else { return false }
        remove(at: index)
        return true
    }

    /// A stream error (RFC 9113 §5.4.2): RST_STREAM, the stream closed; the event for the
    /// handler when it knew the stream.
    private mutating func reset(_ id: UInt32, _ code: H2ErrorCode) -> H2Event? {
        prepareOutput()
        H2FrameHeader.write(length: 4, type: .rstStream, flags: 0, streamID: id, to: &output)
        output.writeInteger(code.rawValue)
        controlAnswers += 1
        if recentlyReset.count < Self.resetMemory {
            recentlyReset.append(id)
        } else {
            recentlyReset[resetCursor] = id
            resetCursor = (resetCursor + 1) % Self.resetMemory
        }
        guard let index = index(id) else { return nil }
        remove(at: index)
        return .streamClosed(streamID: id, error: code)
    }

    /// A stream error found by the codec: RST_STREAM, unless there have been too many.
    private mutating func streamError(_ id: UInt32, _ code: H2ErrorCode) -> H2Event? {
        if streamErrors.exceeded(at: now) {
            return fail(.enhanceYourCalm, "more than \(Self.maxResetsPerWindow) stream errors in \(Self.resetWindow / 1000) s")
        }
        return reset(id, code)
    }

    private func wasReset(_ id: UInt32) -> Bool { recentlyReset.contains(id) }

    /// Ends the connection with a connection error of the handler's finding (GOAWAY with `code`
    /// and `message`, nothing more read); nil when it has already failed.
    mutating func abort(_ code: H2ErrorCode, _ message: String) -> H2ConnectionError? {
        guard phase != .failed, case .connectionError(let error) = fail(code, message) else { return nil }
        return error
    }

    /// The handler's SETTINGS timer ran out (RFC 9113 §6.5.3): when the client has still not
    /// acknowledged the server's SETTINGS, the connection ends with GOAWAY SETTINGS_TIMEOUT
    /// (the error to close with); nil when it has, or the connection already failed.
    mutating func settingsTimedOut(after seconds: Double) -> H2ConnectionError? {
        guard awaitingSettingsAck else { return nil }
        return abort(.settingsTimeout, "SETTINGS not acknowledged within \(seconds) s")
    }

    /// A connection error (RFC 9113 §5.4.1): GOAWAY with the last stream the client opened,
    /// the code and `message` as debug data; nothing more is read.
    private mutating func fail(_ code: H2ErrorCode, _ message: String) -> H2Event {
        writeGoAway(lastAcceptedStreamID, code, debug: message)
        phase = .failed
        inbound = nil
        continuing = nil
        return .connectionError(H2ConnectionError(code: code, message: message))
    }

    /// GOAWAY (RFC 9113 §6.8).
    ///
    /// ```
    /// +-+-------------------------------------------------------------+
    /// |R|                  Last-Stream-ID (31)                        |
    /// +-+-------------------------------------------------------------+
    /// |                      Error Code (32)                          |
    /// +---------------------------------------------------------------+
    /// |                  Additional Debug Data (*)                    |
    /// +---------------------------------------------------------------+
    /// ```
    private mutating func writeGoAway(_ last: UInt32, _ code: H2ErrorCode, debug: String) {
        prepareOutput()
        let debugBytes = min(debug.utf8.count, 1024)
        H2FrameHeader.write(length: 8 + debugBytes, type: .goAway, flags: 0, streamID: 0, to: &output)
        output.writeInteger(last & 0x7FFF_FFFF)
        output.writeInteger(code.rawValue)
        output.writeBytes(debug.utf8.prefix(debugBytes))
    }

    private mutating func writeWindowUpdate(_ id: UInt32, _ increment: Int) {
        prepareOutput()
        H2FrameHeader.write(length: 4, type: .windowUpdate, flags: 0, streamID: id, to: &output)
        output.writeInteger(UInt32(increment) & 0x7FFF_FFFF)
    }

    /// HEADERS, then CONTINUATION frames when the block exceeds the client's SETTINGS_MAX_FRAME_SIZE
    /// (field block encoded straight into the output).
    private mutating func emitHeaders(_ id: UInt32, endStream: Bool, _ encode: (inout H2FieldEncoder, inout ByteBuffer) -> Void) {
        prepareOutput()
        let start = output.writerIndex
        output.writeRepeatingByte(0, count: H2FrameHeader.size)
        encode(&encoder, &output)
        let length = output.writerIndex - start - H2FrameHeader.size
        let flags = endStream ? H2Flags.endStream : 0
        if length <= peerMaxFrameSize {
            H2FrameHeader.set(length: length, type: .headers, flags: flags | H2Flags.endHeaders, streamID: id, at: start, in: &output)
            return
        }
        var block = output.getSlice(at: start + H2FrameHeader.size, length: length)!
        output.moveWriterIndex(to: start)
        var first = true
        while block.readableBytes > 0 {
            let count = min(block.readableBytes, peerMaxFrameSize)
            let last = count == block.readableBytes
            H2FrameHeader.write(
                length: count, type: first ? .headers : .continuation, flags: (first ? flags : 0) | (last ? H2Flags.endHeaders : 0), streamID: id,
                to: &output)
            var fragment = block.readSlice(length: count)!
            output.writeBuffer(&fragment)
            first = false
        }
    }

    /// Sends as much of `data` as the windows allow (frames of at most the client's
    /// SETTINGS_MAX_FRAME_SIZE, END_STREAM on the last when `endStream`); true when all of it
    /// left, else `data` keeps the rest.
    private mutating func send(_ data: inout ByteBuffer, endStream: Bool, at index: Int) -> Bool {
        let id = ids[index]
        if data.readableBytes == 0 {
            guard endStream else { return true }
            prepareOutput()
            H2FrameHeader.write(length: 0, type: .data, flags: H2Flags.endStream, streamID: id, to: &output)
            return true
        }
        var allowed = min(data.readableBytes, connectionSendWindow, streams[index].sendWindow)
        guard allowed > 0 else { return false }
        connectionSendWindow -= allowed
        streams[index].sendWindow -= allowed
        streams[index].sentBytes += allowed
        prepareOutput()
        while allowed > 0 {
            let count = min(allowed, peerMaxFrameSize)
            allowed -= count
            let last = count == data.readableBytes
            H2FrameHeader.write(length: count, type: .data, flags: last && endStream ? H2Flags.endStream : 0, streamID: id, to: &output)
            var slice = data.readSlice(length: count)!
            output.writeBuffer(&slice)
        }
        return data.readableBytes == 0
    }

    /// Sends what the windows now allow of each stream's held content, in stream order;
    /// streams that end by it are closed (reported by `nextEvent`).
    private mutating func releaseHeld() {
        var index = 0
        while index < streams.count {
            var closed = false
            sending: while !streams[index].held.isEmpty {
                switch streams[index].held[0] {
                case .trailers(let fields):
                    streams[index].held.removeFirst()
                    emitHeaders(ids[index], endStream: true) { encoder, output in encoder.encode(fields, to: &output) }
                    closed = true
                case .data(var data, let endStream):
                    guard data.readableBytes == 0 || connectionSendWindow > 0 else { break sending }
                    let before = data.readableBytes
                    let done = send(&data, endStream: endStream, at: index)
                    streams[index].heldBytes -= before - data.readableBytes
                    if done {
                        streams[index].held.removeFirst()
                        closed = endStream
                    } else {
                        streams[index].held[0] = .data(data, endStream: endStream)
                    }
                }
                if case .data(let data, _)? = streams[index].held.first, data.readableBytes > 0,
                    connectionSendWindow == 0 || streams[index].sendWindow == 0
                {
                    break sending
                }
            }
            if closed {
                streams[index].localClosed = true
                if streams[index].remoteClosed {
                    closedQueue.append(ids[index])
                    remove(at: index)
                    continue
                }
            }
            index += 1
        }
    }
}
