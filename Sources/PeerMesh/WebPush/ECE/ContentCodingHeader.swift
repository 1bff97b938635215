/// The header that starts every `aes128gcm` body,
/// [RFC 8188 §2.1](https://www.rfc-editor.org/rfc/rfc8188#section-2.1):
///
/// ```
///  0                   1                   2                   3
///  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                       salt (16 octets)                        |
/// |                                                               |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                      rs (32-bit, big-endian)                  |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |  idlen (8)    |  keyid (idlen octets) ...                     |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// ```
///
/// Web Push ([RFC 8291 §4](https://www.rfc-editor.org/rfc/rfc8291#section-4)) puts the
/// application server's 65-byte uncompressed P-256 public key in `keyid` (so `idlen` = 65 and
/// the header is 86 bytes).
public struct ContentCodingHeader: Equatable, Sendable {
    /// The smallest legal record size: a 16-byte tag plus one delimiter octet plus one more
    /// ([RFC 8188 §2.1](https://www.rfc-editor.org/rfc/rfc8188#section-2.1): "MUST be greater than 17").
    public static let minimumRecordSize = 18
    /// Octets before `keyid`.
    public static let fixedLength = 21

    public var salt: [UInt8]
    public var recordSize: Int
    public var keyID: [UInt8]

    /// - Throws: `.badParameter` when the salt is not 16 bytes, `rs` is out of range or `keyid` > 255 bytes.
    public init(salt: [UInt8], recordSize: Int, keyID: [UInt8]) throws {
        guard salt.count == 16 else { throw WebPushError(.badParameter, "salt must be 16 bytes, got \(salt.count)") }
        guard recordSize >= Self.minimumRecordSize, recordSize <= Int(UInt32.max) else {
            throw WebPushError(.badParameter, "record size \(recordSize) outside \(Self.minimumRecordSize)...\(UInt32.max)")
        }
        guard keyID.count <= 255 else { throw WebPushError(.badParameter, "keyid is \(keyID.count) bytes, at most 255") }
        self.salt = salt
        self.recordSize = recordSize
        self.keyID = keyID
    }

    /// The header's length on the wire.
    public var encodedLength: Int { Self.fixedLength + keyID.count }

    /// The header bytes.
    public func encode() -> [UInt8] {
        var out = salt
        out.reserveCapacity(encodedLength)
        let rs = UInt32(recordSize)
        out += [UInt8(rs >> 24), UInt8(rs >> 16 & 0xff), UInt8(rs >> 8 & 0xff), UInt8(rs & 0xff)]
        out.append(UInt8(keyID.count))
        out += keyID
        return out
    }

    /// Parses a header from the front of `bytes`.
    /// - Returns: the header and its length, or nil when `bytes` is too short to hold it yet.
    /// - Throws: `.badHeader` when `rs` is below 18.
    public static func parse(_ bytes: ArraySlice<UInt8>) throws -> (header: ContentCodingHeader, length: Int)? {
        guard bytes.count >= fixedLength else { return nil }
        let base = bytes.startIndex
        let salt = Array(bytes[base..<base + 16])
        let rs = Int(bytes[base + 16]) << 24 | Int(bytes[base + 17]) << 16 | Int(bytes[base + 18]) << 8 | Int(bytes[base + 19])
        let idlen = Int(bytes[base + 20])
        guard bytes.count >= fixedLength + idlen else { return nil }
        guard rs >= minimumRecordSize else {
            throw WebPushError(.badHeader, "record size \(rs) is below the minimum \(minimumRecordSize) (RFC 8188 §2.1)")
        }
        let keyID = Array(bytes[base + fixedLength..<base + fixedLength + idlen])
        return (try ContentCodingHeader(salt: salt, recordSize: rs, keyID: keyID), fixedLength + idlen)
    }
}
