import NIOCore
import NIOHTTP1

/// The `HTTP2-Settings` field of an `Upgrade: h2c` request (RFC 7540 §3.2.1): the payload of a
/// SETTINGS frame, base64url-encoded (RFC 4648 §5; trailing `=` should be left out). The
/// server applies those settings as if the client had sent them in a SETTINGS frame before its
/// connection preface's own, and does not acknowledge them ("implicitly acknowledged").
///
/// SETTINGS payload (RFC 9113 §6.5.1), zero or more of:
///
/// ```
/// +-------------------------------+
/// |       Identifier (16)         |
/// +-------------------------------+-------------------------------+
/// |                        Value (32)                             |
/// +---------------------------------------------------------------+
/// ```
extension H2CUpgrader {
    /// The largest `HTTP2-Settings` value accepted (characters): 170 settings.
    static let maxSettingsField = 1360

    /// The SETTINGS payload of an `HTTP2-Settings` value. Refused: not base64url, a length
    /// that is not whole 6-byte settings, or a value RFC 9113 §6.5.2 forbids
    /// (`SETTINGS_ENABLE_PUSH` other than 0/1, `SETTINGS_INITIAL_WINDOW_SIZE` above 2^31−1,
    /// `SETTINGS_MAX_FRAME_SIZE` outside 2^14…2^24−1, `SETTINGS_ENABLE_CONNECT_PROTOCOL`
    /// other than 0/1). Unknown identifiers are kept (an HTTP/2 endpoint ignores them).
    static func decodeSettings(_ value: String) throws(Refused) -> [UInt8] {
        var text = Substring(value)
        while text.hasSuffix("=") { text = text.dropLast() }
        guard text.utf8.count <= maxSettingsField else { throw Refused(reason: "HTTP2-Settings longer than \(maxSettingsField) characters") }
        let payload: [UInt8]
        do {
            payload = try Base64URLCoding.decode(text)
        } catch {
            switch error {
            case .length: throw Refused(reason: "HTTP2-Settings is not base64url (length \(value.utf8.count))")
            case .byte(let byte, _): throw Refused(reason: "HTTP2-Settings has byte 0x\(String(byte, radix: 16)), not base64url")
            }
        }
        guard payload.count % 6 == 0 else {
            throw Refused(reason: "HTTP2-Settings payload of \(payload.count) bytes is not whole 6-byte settings")
        }
        for offset in stride(from: 0, to: payload.count, by: 6) {
            let identifier = UInt16(payload[offset]) << 8 | UInt16(payload[offset + 1])
            let value = payload[(offset + 2)..<(offset + 6)].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
            switch identifier {
            case 0x2 where value > 1: throw Refused(reason: "HTTP2-Settings: SETTINGS_ENABLE_PUSH \(value) is not 0 or 1")
            case 0x4 where value > 0x7FFF_FFFF: throw Refused(reason: "HTTP2-Settings: SETTINGS_INITIAL_WINDOW_SIZE \(value) above 2^31-1")
            case 0x5 where value < 1 << 14 || value > 1 << 24 - 1:
                throw Refused(reason: "HTTP2-Settings: SETTINGS_MAX_FRAME_SIZE \(value) outside 16384...16777215")
            case 0x8 where value > 1: throw Refused(reason: "HTTP2-Settings: SETTINGS_ENABLE_CONNECT_PROTOCOL \(value) is not 0 or 1")
            default: break
            }
        }
        return payload
    }

    /// Why an HTTP/1.1 request asking for `Upgrade: h2c` has an unusable `HTTP2-Settings`
    /// (repeated, or refused by `decodeSettings`): answered 400. Nil when the request does
    /// not ask for h2c, has no such field (served over HTTP/1.1: RFC 7540 §3.2.1 only forbids
    /// the upgrade), or the field is valid.
    static func settingsProblem(_ headers: HTTPHeaders) -> String? {
        guard headers.contains(name: "http2-settings"),
            headers[canonicalForm: "upgrade"].contains(where: { $0.lowercased() == "h2c" })
        else { return nil }
        let values = headers["http2-settings"]
        guard values.count == 1 else { return "HTTP2-Settings repeated (\(values.count) fields)" }
        guard case .failure(let refused) = Result(catching: { () throws(Refused) -> [UInt8] in try decodeSettings(values[0]) }) else { return nil }
        return refused.reason
    }

    /// A SETTINGS frame (RFC 9113 §6.5: type 0x4, no flags, stream 0) carrying `payload`.
    static func settingsFrame(_ payload: [UInt8], allocator: ByteBufferAllocator) -> ByteBuffer {
        var frame = allocator.buffer(capacity: 9 + payload.count)
        frame.writeInteger(UInt32(payload.count) << 8 | 0x4)
        frame.writeInteger(UInt8(0))
        frame.writeInteger(UInt32(0))
        frame.writeBytes(payload)
        return frame
    }
}

/// Drops the first SETTINGS acknowledgement `NIOHTTP2Handler` writes on an upgraded h2c
/// connection — the one for the SETTINGS frame `H2CRequestInjector` made from the
/// `HTTP2-Settings` field, which RFC 7540 §3.2.1 says is acknowledged implicitly (the client
/// expects an ACK only for the SETTINGS frame it sent itself) — then leaves the pipeline.
/// Sits in front of (below) `NIOHTTP2Handler` and follows its frames (9-byte header, RFC
/// 9113 §4.1) through the writes; NIO writes every frame header whole.
final class H2CSettingsAckFilter: ChannelOutboundHandler, RemovableChannelHandler {
    typealias OutboundIn = IOData
    typealias OutboundOut = IOData

    /// Payload bytes of the current frame still to pass.
    private var inFrame = 0
    private var done = false

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        guard !done, case .byteBuffer(let buffer) = unwrapOutboundIn(data) else { return context.write(data, promise: promise) }
        var index = buffer.readerIndex
        let end = buffer.writerIndex
        while index < end {
            if inFrame > 0 {
                let count = min(inFrame, end - index)
                inFrame -= count
                index += count
                continue
            }
            guard end - index >= 9, let word = buffer.getInteger(at: index, as: UInt32.self), let flags = buffer.getInteger(at: index + 4, as: UInt8.self) else {
                // A header split across writes (not NIO's way): stop looking.
                done = true
                break
            }
            let length = Int(word >> 8)
            if word & 0xFF == 0x4, flags & 0x1 != 0, length == 0 {
                var kept = buffer.getSlice(at: buffer.readerIndex, length: index - buffer.readerIndex)!
                var rest = buffer.getSlice(at: index + 9, length: end - index - 9)!
                kept.writeBuffer(&rest)
                done = true
                context.write(wrapOutboundOut(.byteBuffer(kept)), promise: promise)
                context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
                return
            }
            index += 9
            inFrame = length
        }
        context.write(data, promise: promise)
    }
}
