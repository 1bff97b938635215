import Foundation
import NIOCore
import NIOHPACK

@testable import Gate

/// The contracts of the HTTPRoute gateway's own parsers, checked on arbitrary input: shared by
/// the fixed-seed fuzz tests (`HTTPRouteFuzzTests`) and the coverage-guided libFuzzer harness
/// (`fuzz/`, `scripts/fuzz-httproute`), which links this file. Every check returns nil when
/// the contract holds, else what broke; a crash or hang is a failure by itself.
///
/// An input is two control bytes, then the bytes for the parser: the first picks a variant
/// (limits, modes, a prefix), the second seeds where the bytes are split for the incremental
/// run (`pieces`). So one input reproduces one run exactly.
///
/// The contracts:
/// * `h2` (`HTTP2ServerCodec` and NIOHPACK's decoder behind it): the same events and the
///   same output bytes whether the input arrives whole or in pieces (the output taken after
///   every event, as the handler does, or once at the end); nothing after a connection error;
///   events only for streams the handler knows; the output a whole sequence of frames no
///   larger than the client allows; held bytes never negative.
/// * `h1` (`HTTP1RequestDecoder`: `HTTPHeadScanner`, `ChunkedFraming`, trailer sections,
///   `RequestTrailers`): the same parts (bodies joined) and the same error, whole or in
///   pieces — pieces may defer a head's error until its end arrives, never lose or change
///   it; parts in order (head, body…, end); a body as long as its `Content-Length`; no more
///   bytes decoded than fed; nothing after an error.
/// * `response` (`BackendResponseReader`: `HTTP1ResponseHead`, `ChunkedFraming`): the same
///   events whole or in pieces; the same heads, framings and body lengths whether chunked
///   bodies are relayed or decoded and whether heads keep their fields (the fast path reads
///   the framing from the raw bytes); a relayed chunked body is exactly one chunked body
///   for `HTTPChunkedScanner`; trailers the same whole or in pieces.
/// * `chunked` (`HTTPChunkedScanner`): the end (or the error) at the same byte whole or in
///   pieces, and where `HTTP1RequestDecoder` ends the same body.
/// * `manifest` (`HTTPRouteLoader`): a result or an `HTTPRouteError` with a message, the
///   same result twice.
enum FuzzContract {
    static let targets = ["h2", "h1", "response", "chunked", "manifest"]

    /// Checks `input` (control bytes included) against `target`'s contract.
    static func check(_ target: String, _ input: [UInt8]) -> String? {
        let variant = input.first ?? 0
        let splitSeed = input.count > 1 ? input[1] : 0
        let bytes = Array(input.dropFirst(2))
        let cuts = pieces(bytes.count, seed: splitSeed)
        switch target {
        case "h2": return h2(bytes, cuts: cuts, variant: variant)
        case "h1": return h1(bytes, cuts: cuts, variant: variant)
        case "response": return response(bytes, cuts: cuts, variant: variant)
        case "chunked": return chunked(bytes, cuts: cuts)
        case "manifest": return manifest(bytes)
        default: return "unknown fuzz target \(target)"
        }
    }

    /// Where to split `count` bytes: seed 255 byte by byte (short inputs), else up to eight
    /// cuts from a generator seeded with `seed`.
    static func pieces(_ count: Int, seed: UInt8) -> [Range<Int>] {
        var cuts: [Int]
        if seed == 255 && count <= 4096 {
            cuts = Array(0...count)
        } else {
            var rng = SplitMix64(seed: UInt64(seed))
            cuts = [0, count] + (0..<Int(seed % 8)).map { _ in Int.random(in: 0...count, using: &rng) }
            cuts = Array(Set(cuts)).sorted()
        }
        return zip(cuts, cuts.dropFirst()).map { $0..<$1 }
    }

    /// An input for `target`: `bytes` behind the control bytes.
    static func input(variant: UInt8, split: UInt8, _ bytes: [UInt8]) -> [UInt8] { [variant, split] + bytes }

    /// FNV-1a over `bytes`: a short stand-in for body bytes in descriptions.
    static func digest(_ bytes: some Sequence<UInt8>) -> String {
        var hash: UInt64 = 0xCBF2_9CE4_8422_2325
        var count = 0
        for byte in bytes {
            hash = (hash ^ UInt64(byte)) &* 0x100_0000_01B3
            count += 1
        }
        return "\(count)b#\(String(hash, radix: 16))"
    }

    // MARK: - HTTP/2

    /// What one run of the codec produced.
    struct H2Run: Equatable {
        var events: [String] = []
        var output: [UInt8] = []
        var openStreams = 0
        var lastStreamID: UInt32 = 0
    }

    /// Variant bit 0: the client preface and an empty SETTINGS go first (so mutations reach
    /// frames); bit 1: an h2c upgrade (stream 1 open); bits 2–3: how much the simulated
    /// handler answers per stream (nothing, HEADERS, HEADERS + DATA beyond the window +
    /// trailers).
    static func h2(_ bytes: [UInt8], cuts: [Range<Int>], variant: UInt8) -> String? {
        let prefix: [UInt8] = variant & 1 == 0 ? [] : Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8) + [0, 0, 0, 4, 0, 0, 0, 0, 0]
        let input = prefix + bytes
        let shifted = [0..<prefix.count] + cuts.map { ($0.lowerBound + prefix.count)..<($0.upperBound + prefix.count) }
        let whole = runH2([0..<input.count], input, variant: variant, takeEachEvent: false)
        if let problem = whole.problem { return "h2 whole: \(problem)" }
        let split = runH2(shifted, input, variant: variant, takeEachEvent: true)
        if let problem = split.problem { return "h2 in pieces \(shifted): \(problem)" }
        if whole.run != split.run {
            return "h2: whole and in pieces \(shifted) differ:\n\(whole.run.events)\n\(split.run.events)\noutput \(digest(whole.run.output)) / \(digest(split.run.output))"
        }
        return nil
    }

    static func runH2(_ pieces: [Range<Int>], _ input: [UInt8], variant: UInt8, takeEachEvent: Bool) -> (run: H2Run, problem: String?) {
        let allocator = ByteBufferAllocator()
        var codec = HTTP2ServerCodec(allocator: allocator, upgradeSettings: variant & 2 == 0 ? nil : [0, 4, 0, 0, 0x10, 0])
        var run = H2Run()
        var known: Set<UInt32> = variant & 2 == 0 ? [] : [1]
        var failed = false
        let answer = Int(variant >> 2 & 3)
        func take() {
            codec.takeOutput()?.withUnsafeReadableBytes { run.output.append(contentsOf: $0) }
        }
        for piece in pieces {
            codec.receive(allocator.buffer(bytes: input[piece]))
            while let event = codec.nextEvent() {
                if failed { return (run, "event \(event) after a connection error") }
                switch event {
                case .headers(let id, let fields, let end, let trailers):
                    run.events.append("\(trailers ? "trailers" : "headers") \(id) \(end) \(fields.map { "\($0.name)=\($0.value)" })")
                    if trailers {
                        guard known.contains(id) else { return (run, "trailers on stream \(id) the handler does not know") }
                    } else {
                        guard !known.contains(id), id & 1 == 1, id >= codec.lastStreamID || id == 1 else {
                            return (run, "stream \(id) opened twice or out of order (last \(codec.lastStreamID))")
                        }
                        known.insert(id)
                        // A write that closes the stream (the client had ended it) says so.
                        var closed = answer >= 1 && codec.writeHeaders(id, [":status": "200"], endStream: answer == 1)
                        if answer >= 2 {
                            closed = codec.writeData(id, allocator.buffer(repeating: 0x61, count: 40_000 + Int(id % 5) * 10_000), endStream: false)
                            closed = codec.writeHeaders(id, ["x-sum": "\(id)"], endStream: true) || closed
                        }
                        if closed { known.remove(id) }
                    }
                case .data(let id, let data, let padding, let end):
                    run.events.append("data \(id) \(digest(data.readableBytesView)) pad=\(padding) \(end)")
                    guard known.contains(id) else { return (run, "DATA on stream \(id) the handler does not know") }
                    guard padding >= 0 else { return (run, "negative padding \(padding)") }
                    codec.windowUpdate(id, data.readableBytes + padding)
                case .streamClosed(let id, let error):
                    run.events.append("closed \(id) \(error.map { "\($0)" } ?? "ok")")
                    guard known.remove(id) != nil else { return (run, "stream \(id) closed, the handler did not know it") }
                case .pingAck(let opaque):
                    run.events.append("pingAck \(opaque)")
                case .goAway(let last, let error):
                    run.events.append("goAway \(last) \(error)")
                case .connectionError(let error):
                    run.events.append("error \(error.code)")
                    guard !error.message.isEmpty else { return (run, "connection error without a message") }
                    failed = true
                }
                for id in known {
                    let held = codec.heldBytes(id)
                    guard held >= 0, codec.sendState(id).map({ $0.held == held && $0.sent >= 0 }) ?? true else {
                        return (run, "stream \(id): held \(held), send state \(String(describing: codec.sendState(id)))")
                    }
                }
                if takeEachEvent { take() }
            }
            if takeEachEvent { take() }
        }
        take()
        guard codec.openStreams <= HTTP2ServerCodec.maxConcurrentStreams else { return (run, "\(codec.openStreams) streams open") }
        run.openStreams = codec.openStreams
        run.lastStreamID = codec.lastStreamID
        if let problem = checkFrames(run.output, maxFrameSize: codec.peerMaxFrameSize) { return (run, problem) }
        return (run, nil)
    }

    /// The codec's output: whole frames, none larger than `maxFrameSize`, a GOAWAY last if any.
    static func checkFrames(_ bytes: [UInt8], maxFrameSize: Int) -> String? {
        var index = 0
        var goAway = false
        while index < bytes.count {
            guard index + 9 <= bytes.count else { return "output ends inside a frame header at \(index)" }
            let length = Int(bytes[index]) << 16 | Int(bytes[index + 1]) << 8 | Int(bytes[index + 2])
            let type = bytes[index + 3]
            if goAway && type != 0x7 { return "frame of type \(type) after GOAWAY" }
            if type == 0x7 { goAway = true }
            guard length <= max(maxFrameSize, HTTP2ServerCodec.maxFrameSize) || type == 0x7 else { return "frame of \(length) bytes above \(maxFrameSize)" }
            index += 9 + length
        }
        return index == bytes.count ? nil : "output ends inside a frame payload"
    }

    // MARK: - HTTP/1.1 requests

    /// What one run of the request decoder produced.
    /// What one run of the request decoder produced; runs are equal when their errors have
    /// the same status (a message may name fewer bytes when fewer had arrived).
    struct H1Run: Equatable {
        var parts: [String] = []
        var error: HTTP1RequestDecoder.Malformed?
        var buffered = 0

        static func == (a: H1Run, b: H1Run) -> Bool { a.parts == b.parts && a.error?.status == b.error?.status && a.buffered == b.buffered }
    }

    /// The head limits of variant bits 0–1 (the default, small ones, a tiny one).
    static func h1Limits(_ variant: UInt8) -> HTTPHeadLimits {
        switch variant & 3 {
        case 0: HTTPHeadLimits()
        case 1: HTTPHeadLimits(maxHeadBytes: 256, maxHeaderCount: 8)
        case 2: HTTPHeadLimits(maxHeadBytes: 64, maxHeaderCount: 2)
        default: HTTPHeadLimits(maxHeadBytes: 1024, maxHeaderCount: 100)
        }
    }

    /// What variant bits 2–3 put before the bytes: nothing, a chunked request's head, or that
    /// head and a last chunk (so the bytes are a trailer section).
    static let h1Prefixes: [[UInt8]] = [
        [], Array("POST /u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".utf8),
        Array("POST /u HTTP/1.1\r\nHost: a\r\nTrailer: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n".utf8),
        Array("PUT /u HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n".utf8),
    ]

    static func h1(_ bytes: [UInt8], cuts: [Range<Int>], variant: UInt8) -> String? {
        let prefix = h1Prefixes[Int(variant >> 2 & 3)]
        let input = prefix + bytes
        let shifted = [0..<prefix.count] + cuts.map { ($0.lowerBound + prefix.count)..<($0.upperBound + prefix.count) }
        let limits = h1Limits(variant)
        let whole = runH1([0..<input.count], input, limits: limits)
        if let problem = whole.problem { return "h1 whole: \(problem)" }
        var split = runH1(shifted, input, limits: limits)
        if let problem = split.problem { return "h1 in pieces \(shifted): \(problem)" }
        if whole.run.error != nil && split.run.error == nil {
            // A head arriving in pieces is scanned again once its end is there: its error may wait for it.
            split = runH1(shifted + [input.count..<(input.count + 4)], input + Array("\r\n\r\n".utf8), limits: limits)
            if split.run.error == nil { return "h1: whole fails with \(whole.run.error!), in pieces \(shifted) not even after an empty line" }
            split.run.buffered = whole.run.buffered
        }
        if whole.run != split.run {
            return "h1: whole and in pieces \(shifted) differ:\n\(whole.run)\n\(split.run)"
        }
        return nil
    }

    static func runH1(_ pieces: [Range<Int>], _ input: [UInt8], limits: HTTPHeadLimits) -> (run: H1Run, problem: String?) {
        let allocator = ByteBufferAllocator()
        var decoder = HTTP1RequestDecoder(limits: limits)
        var run = H1Run()
        var body: [UInt8] = []
        var expected: (length: Int?, chunked: Bool)?
        var decoded = 0
        var fed = 0
        func endBody() {
            if !body.isEmpty { run.parts.append("body \(digest(body))") }
            body = []
        }
        for piece in pieces {
            decoder.feed(allocator.buffer(bytes: input[piece]))
            fed += piece.count
            do {
                while let part = try decoder.next() {
                    switch part {
                    case .head(let head, let view, let hasBody):
                        guard expected == nil else { return (run, "a head inside the previous request") }
                        let chunked = head.hasTransferEncoding
                        let length = head.contentLength.flatMap { Int($0.split(separator: ",").first?.trimmingOWS() ?? "") } ?? 0
                        guard hasBody == (chunked || length > 0) else { return (run, "hasBody \(hasBody) with chunked \(chunked), length \(length)") }
                        expected = (chunked ? nil : length, chunked)
                        decoded += head.headSize
                        run.parts.append("head \(head.method) \(head.uri) \(head.version) \(head.fields) \(hasBody) \(head.isKeepAlive) \(view.host)")
                        if RequestTrailers.withoutLength(head.fields).contains(where: { $0.name.lowercased() == "content-length" }) {
                            return (run, "withoutLength kept a Content-Length")
                        }
                        if RequestTrailers.announced(head.fields) != head.fields.contains(where: { $0.name.lowercased() == "trailer" }) {
                            return (run, "Trailer announced wrongly")
                        }
                    case .body(let bytes):
                        guard let framing = expected, framing.chunked || framing.length! > 0 else { return (run, "body without a head that has one") }
                        bytes.withUnsafeReadableBytes { body.append(contentsOf: $0) }
                        decoded += bytes.readableBytes
                    case .end(let trailers):
                        guard let framing = expected else { return (run, "end without a head") }
                        if let length = framing.length, body.count != length {
                            return (run, "body of \(body.count) bytes for Content-Length \(length)")
                        }
                        if trailers != nil && !framing.chunked { return (run, "trailers after a body that was not chunked") }
                        endBody()
                        run.parts.append("end \(trailers.map { $0.map { "\($0.name)=\($0.value)" } } ?? [])")
                        expected = nil
                    }
                    guard decoded + decoder.bufferedBytes <= fed else { return (run, "decoded \(decoded) + buffered \(decoder.bufferedBytes) of \(fed) bytes") }
                }
            } catch {
                guard !error.message.isEmpty, error.status == 400 || error.status == 431 else { return (run, "error \(error)") }
                run.error = error
                do {
                    if let part = try decoder.next() { return (run, "part \(part) after an error") }
                } catch { return (run, "a second error \(error)") }
                break
            }
        }
        endBody()
        run.buffered = decoder.bufferedBytes
        return (run, nil)
    }

    // MARK: - Backend responses

    /// What one run of the response reader produced; runs are equal when their errors have
    /// the same code.
    struct ResponseRun: Equatable {
        var events: [String] = []
        var error: WireError?
        /// Per response: the framing, keep-alive and body length (for the cross-mode comparison).
        var summary: [String] = []
        var relayedChunked: [[UInt8]] = []

        static func == (a: ResponseRun, b: ResponseRun) -> Bool {
            a.events == b.events && a.error?.code == b.error?.code && a.summary == b.summary && a.relayedChunked == b.relayedChunked
        }
    }

    /// Variant bits 0–1: the request method (GET, HEAD, CONNECT, POST); bit 2: chunked bodies
    /// decoded in the whole/pieces comparison.
    static func response(_ bytes: [UInt8], cuts: [Range<Int>], variant: UInt8) -> String? {
        let method = ["GET", "HEAD", "CONNECT", "POST"][Int(variant & 3)]
        let decode = variant & 4 != 0
        var runs: [ResponseRun] = []
        for (decodeChunks, keepsFields) in [(decode, true), (decode, false), (!decode, true)] {
            let whole = runResponse([0..<bytes.count], bytes, method: method, decodeChunks: decodeChunks, keepsFields: keepsFields)
            if let problem = whole.problem { return "response whole: \(problem)" }
            let split = runResponse(cuts, bytes, method: method, decodeChunks: decodeChunks, keepsFields: keepsFields)
            if let problem = split.problem { return "response in pieces \(cuts): \(problem)" }
            if whole.run != split.run {
                return "response (decode \(decodeChunks), fields \(keepsFields)): whole and in pieces \(cuts) differ:\n\(whole.run.events) \(String(describing: whole.run.error))\n\(split.run.events) \(String(describing: split.run.error))"
            }
            runs.append(whole.run)
        }
        if runs[0].summary != runs[1].summary || runs[0].error?.code != runs[1].error?.code {
            return "response: fields kept and not give different framings:\n\(runs[0].summary) \(String(describing: runs[0].error))\n\(runs[1].summary) \(String(describing: runs[1].error))"
        }
        if runs[0].summary != runs[2].summary || (runs[0].error == nil) != (runs[2].error == nil) {
            return "response: chunked bodies relayed and decoded differ:\n\(runs[0].summary) \(String(describing: runs[0].error))\n\(runs[2].summary) \(String(describing: runs[2].error))"
        }
        for body in runs[0].relayedChunked + runs[2].relayedChunked {
            var scanner = HTTPChunkedScanner()
            let result = scanner.scan(body)
            guard case .end(let consumed) = result, consumed == body.count else {
                return "response: a relayed chunked body of \(body.count) bytes is not one chunked body for HTTPChunkedScanner: \(result)"
            }
        }
        return nil
    }

    static func runResponse(
        _ pieces: [Range<Int>], _ input: [UInt8], method: String, decodeChunks: Bool, keepsFields: Bool
    ) -> (run: ResponseRun, problem: String?) {
        let allocator = ByteBufferAllocator()
        var reader = BackendResponseReader()
        reader.requestMethod = method
        reader.decodeChunks = decodeChunks
        reader.keepsFields = keepsFields
        var buffer = allocator.buffer(capacity: 0)
        var run = ResponseRun()
        var body: [UInt8] = []
        var framing: HTTPBodyFraming?
        var head = ""
        func record(_ event: BackendResponseReader.Event) -> String? {
            switch event {
            case .head(let response, let found, let keepAlive, let raw):
                guard framing == nil else { return "a head inside the previous response" }
                framing = found
                head = "\(response.status) \(found) keepAlive=\(keepAlive) raw=\(raw.readableBytes)"
                run.events.append("head \(response.status) \(response.version) \(keepsFields ? "\(response.headers)" : "") \(found) \(keepAlive) \(digest(raw.readableBytesView))")
            case .body(let bytes):
                guard framing != nil, framing != HTTPBodyFraming.none else { return "body without a head that has one" }
                bytes.withUnsafeReadableBytes { body.append(contentsOf: $0) }
            case .end(let bodyBytes):
                guard let found = framing else { return "end without a head" }
                if case .contentLength(let length) = found, bodyBytes != length || body.count != length {
                    return "end after \(bodyBytes) (\(body.count)) bytes of a Content-Length \(length) body"
                }
                if found == .chunked && decodeChunks && bodyBytes != body.count { return "decoded \(body.count) bytes, end says \(bodyBytes)" }
                if found == .chunked && !decodeChunks { run.relayedChunked.append(body) }
                let trailers = reader.takeTrailers()
                if trailers != nil && !(found == .chunked && decodeChunks) { return "trailers without a decoded chunked body" }
                run.events.append("body \(digest(body)) end \(bodyBytes) trailers \(trailers.map { $0.map { "\($0.name)=\($0.value)" } } ?? [])")
                run.summary.append("\(head) body=\(bodyBytes)")
                body = []
                framing = nil
            case .needMore:
                return "needMore handed on"
            }
            return nil
        }
        for piece in pieces {
            buffer.writeBytes(input[piece])
            do {
                while let event = try reader.nextEvent(&buffer) {
                    if let problem = record(event) { return (run, problem) }
                }
            } catch {
                guard !error.message.isEmpty else { return (run, "error without a message") }
                run.error = error
                return (run, nil)
            }
        }
        if let event = reader.closed() {
            if let problem = record(event) { return (run, problem) }
        }
        if framing != nil { run.events.append("cut short after \(digest(body))") }
        return (run, nil)
    }

    // MARK: - Chunked bodies

    static let chunkedHead = Array("POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".utf8)

    static func chunked(_ bytes: [UInt8], cuts: [Range<Int>]) -> String? {
        func scan(_ pieces: [Range<Int>]) -> String {
            var scanner = HTTPChunkedScanner()
            for piece in pieces {
                switch scanner.scan(bytes[piece]) {
                case .needMore: continue
                case .end(let consumed): return scanner.isComplete ? "end \(piece.lowerBound + consumed)" : "end \(consumed) but not complete"
                case .invalid(let error): return "invalid \(error.message)"
                }
            }
            return "needMore \(scanner.offset)"
        }
        let whole = scan([0..<bytes.count])
        let split = scan(cuts)
        if whole != split { return "chunked: whole \(whole), in pieces \(cuts) \(split)" }
        // The request decoder ends the same body at the same byte (it also checks the trailer
        // fields' syntax, the scanner only their bytes), or refuses it too.
        func decode(_ count: Int) -> (run: H1Run, problem: String?) {
            runH1([0..<(chunkedHead.count + count)], chunkedHead + bytes[..<count], limits: HTTPHeadLimits())
        }
        let ends = { (run: H1Run) in run.parts.contains { $0.hasPrefix("end") } }
        if whole.hasPrefix("end ") {
            let consumed = Int(whole.dropFirst(4))!
            let exact = decode(consumed), short = decode(consumed - 1)
            if let problem = exact.problem ?? short.problem { return "chunked through the request decoder: \(problem)" }
            if exact.run.error?.message.contains("trailer") == true { return nil }
            guard ends(exact.run), exact.run.error == nil, exact.run.buffered == 0, !ends(short.run) else {
                return "chunked: scanner ends at \(consumed), request decoder \(exact.run) / one byte less \(short.run)"
            }
        } else {
            let all = decode(bytes.count)
            if let problem = all.problem { return "chunked through the request decoder: \(problem)" }
            guard !ends(all.run), (all.run.error != nil) == whole.hasPrefix("invalid") else { return "chunked: scanner \(whole), request decoder \(all.run)" }
        }
        return nil
    }

    // MARK: - Manifests

    static func manifest(_ bytes: [UInt8]) -> String? {
        let text = String(decoding: bytes, as: UTF8.self)
        let loader = HTTPRouteLoader(services: ["web": "127.0.0.1:8080", "ns/api": "[::1]:9000"])
        func load() -> Result<RouteManifests, HTTPRouteError> {
            do { return .success(try loader.load(yaml: text, file: "fuzz.yaml")) } catch { return .failure(error) }
        }
        let first = load()
        switch first {
        case .failure(let error):
            guard !error.message.isEmpty, !error.description.isEmpty else { return "manifest: an error without a message" }
        case .success(let manifests):
            for route in manifests.routes {
                for rule in route.rules {
                    for backend in rule.backends where backend.destination.port == 0 || !(0...1_000_000).contains(backend.weight) {
                        return "manifest: backend \(backend) of route \(route.key)"
                    }
                }
            }
        }
        let second = load()
        return first == second ? nil : "manifest: loaded twice, different results"
    }
    // MARK: - Seeds

    /// Valid inputs for `target` (control bytes included), from the messages the unit tests
    /// use: the libFuzzer corpus starts from them, the fixed-seed tests mutate them.
    static func seeds(_ target: String) -> [[UInt8]] {
        switch target {
        case "h2": return h2Seeds()
        case "h1":
            let requests = [
                "GET /a HTTP/1.1\r\nHost: a\r\nAccept: */*\r\n\r\n"
                    + "POST /b HTTP/1.1\r\nHost: b\r\nContent-Length: 5, 5\r\n\r\nhello"
                    + "PUT /c HTTP/1.1\r\nhost: c\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n5;ext=1\r\nchunk\r\nA\r\n0123456789\r\n0\r\nX-Sum: abc\r\nX-Other:  d e \r\n\r\n"
                    + "GET /d HTTP/1.0\nConnection: keep-alive\n\n"
                    + "GET /e HTTP/1.1\r\nHost: e\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
                "\r\nGET /u HTTP/1.1\r\nHost: [::1]:80\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n",
                "POST /e HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nTrailer: x-sum\r\nContent-Length: 3\r\n\r\nabc",
            ]
            return requests.map { input(variant: 0, split: 3, Array($0.utf8)) } + [
                input(variant: 4, split: 5, Array("4;e=1\r\nwiki\r\n0\r\nT: v\r\n\r\n".utf8)),
                input(variant: 8, split: 1, Array("X-Sum: 1\r\nX-B: two words\r\n\r\n".utf8)),
                input(variant: 13, split: 255, Array("helloGET / HTTP/1.1\r\nHost: h\r\n\r\n".utf8)),
            ]
        case "response":
            let responses = [
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nServer: x\r\n\r\nhello",
                "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nabHTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;name=value\r\nhello\r\n7\r\n, world\r\n0\r\nX-Trailer: t\r\n\r\n",
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nA\r\n0123456789\r\n0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nz",
                "HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nyes",
                "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: X-Secret, keep-alive\r\nX-Secret: s\r\n\r\nok",
                "HTTP/1.0 200 OK\r\nServer: old\r\n\r\nuntil close",
                "HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
            ]
            return responses.enumerated().map { input(variant: UInt8($0.offset % 8), split: UInt8($0.offset), Array($0.element.utf8)) }
        case "chunked":
            return ["4;e=1\r\nwiki\r\n0\r\nT: v\r\n\r\n", "5;name=value\r\nhello\r\n7\r\n, world\r\n0\r\nX-Trailer: t\r\n\r\nnext", "0\r\n\r\n"]
                .map { input(variant: 0, split: 2, Array($0.utf8)) }
        case "manifest":
            let yaml = """
                kind: Gateway
                apiVersion: gateway.networking.k8s.io/v1
                metadata: {name: edge}
                spec:
                  gatewayClassName: ugate
                  addresses: [{type: IPAddress, value: 127.0.0.1}]
                  listeners:
                  - {name: http, port: 8080, protocol: HTTP, allowedRoutes: {namespaces: {from: Selector, selector: {matchLabels: {a: b}}}}}
                  - {name: tls, port: 8443, protocol: TLS, hostname: "*.example.com", tls: {mode: Passthrough}}
                ---
                apiVersion: gateway.networking.k8s.io/v1
                kind: HTTPRoute
                metadata: {name: store, namespace: prod, creationTimestamp: "2024-01-02T03:04:05Z", generation: 2}
                spec:
                  parentRefs: [{name: edge, namespace: default, sectionName: http}]
                  hostnames: [store.example.com, "*.store.example.com"]
                  rules:
                  - name: api
                    matches:
                    - {path: {type: PathPrefix, value: /api}, method: POST, headers: [{name: X-Env, value: canary}, {type: RegularExpression, name: x-id, value: "[0-9]+"}], queryParams: [{name: debug, value: "1"}]}
                    filters:
                    - {type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: X-A, value: "1"}], add: [{name: X-B, value: "2"}], remove: [X-C]}}
                    - {type: URLRewrite, urlRewrite: {hostname: internal, path: {type: ReplacePrefixMatch, replacePrefixMatch: /v2}}}
                    backendRefs: &refs
                    - {name: web, port: 80, weight: 90}
                    - {name: api, namespace: ns, port: 8080, weight: 10}
                    timeouts: {request: 1m30s, backendRequest: 500ms}
                    retry: {attempts: 2, codes: [502, 503], backoff: 100ms}
                  - matches: [{path: {type: Exact, value: /x}}]
                    filters: [{type: RequestRedirect, requestRedirect: {scheme: https, port: 443, statusCode: 301}}]
                    backendRefs: *refs
                ---
                apiVersion: gateway.networking.k8s.io/v1beta1
                kind: ReferenceGrant
                metadata: {name: g, namespace: ns}
                spec:
                  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: prod}]
                  to: [{group: "", kind: Service}]
                ---
                apiVersion: gateway.networking.x-k8s.io/v1alpha1
                kind: XBackendTrafficPolicy
                metadata: {name: p, namespace: prod}
                spec:
                  targetRefs: [{group: "", kind: Service, name: web}]
                  retryConstraint: {budget: {percent: 20, interval: 10s}, minRetryRate: {count: 10, interval: 1s}}
                """
            return [input(variant: 0, split: 0, Array(yaml.utf8))]
        default:
            return []
        }
    }

    /// HTTP/2 seeds: frames of every type after the preface (variant bit 0 adds it), as in
    /// `HTTP2ServerCodecTests`.
    static func h2Seeds() -> [[UInt8]] {
        func frame(_ type: UInt8, flags: UInt8 = 0, stream: UInt32 = 0, _ payload: [UInt8] = []) -> [UInt8] {
            let length = payload.count
            return [UInt8(length >> 16 & 0xFF), UInt8(length >> 8 & 0xFF), UInt8(length & 0xFF), type, flags]
                + [UInt8(stream >> 24 & 0x7F), UInt8(stream >> 16 & 0xFF), UInt8(stream >> 8 & 0xFF), UInt8(stream & 0xFF)] + payload
        }
        func be32(_ value: UInt32) -> [UInt8] { [UInt8(value >> 24), UInt8(value >> 16 & 0xFF), UInt8(value >> 8 & 0xFF), UInt8(value & 0xFF)] }
        var encoder = HPACKEncoder(allocator: ByteBufferAllocator())
        func block(_ fields: [(String, String)]) -> [UInt8] {
            var buffer = ByteBufferAllocator().buffer(capacity: 256)
            try! encoder.encode(headers: HPACKHeaders(fields), to: &buffer)
            return Array(buffer.readableBytesView)
        }
        let request = [(":method", "GET"), (":scheme", "http"), (":path", "/a"), (":authority", "example.com"), ("accept", "*/*")]
        let block1 = block(request)
        let half = block1.count / 2
        var frames = frame(0x1, flags: 0x8 | 0x20, stream: 1, [2] + be32(0) + [15] + block1[..<half] + [0, 0])
        frames += frame(0x9, flags: 0x4, stream: 1, Array(block1[half...]))
        frames += frame(0x0, stream: 1, Array("abc".utf8))
        frames += frame(0x0, flags: 0x8, stream: 1, [3] + Array("de".utf8) + [0, 0, 0])
        frames += frame(0x1, flags: 0x5, stream: 1, block([("x-sum", "1")]))
        frames += frame(0x2, stream: 3, be32(1) + [16])
        frames += frame(0x6, be32(0) + be32(42))
        frames += frame(0x8, be32(1000))
        frames += frame(0x4, [0, 4] + be32(100_000) + [0, 1] + be32(0) + [0, 5] + be32(20_000))
        frames += frame(0x4, flags: 1)
        frames += frame(0x1, flags: 0x4, stream: 5, block(request))
        frames += frame(0x8, stream: 5, be32(10))
        frames += frame(0x3, stream: 5, be32(8))
        frames += frame(0x1, flags: 0x5, stream: 7, block(request + [("cookie", "a=b"), ("user-agent", String(repeating: "u", count: 300))]))
        frames += frame(0x7, be32(5) + be32(0) + Array("bye".utf8))
        let upgraded = frame(0x4, []) + frame(0x8, stream: 1, be32(100_000)) + frame(0x1, flags: 0x5, stream: 3, block(request))
        return [input(variant: 1 | 8, split: 4, frames), input(variant: 1 | 4, split: 255, Array(frames.prefix(200))), input(variant: 2 | 8, split: 1, Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8) + upgraded)]
    }
}
