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
            if let (_, problem) = H2Setting.problem(identifier, value) { throw Refused(reason: "HTTP2-Settings: \(problem)") }
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
}
