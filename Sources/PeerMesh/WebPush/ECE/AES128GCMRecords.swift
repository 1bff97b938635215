import Crypto
import Foundation

/// The content-encryption key and base nonce for one `aes128gcm` body
/// ([RFC 8188 §2.2, §2.3](https://www.rfc-editor.org/rfc/rfc8188#section-2.2)).
public struct RecordKeys: Sendable {
    /// CEK, 16 bytes.
    public var contentKey: [UInt8]
    /// NONCE, 12 bytes; record `i` uses NONCE XOR i.
    public var baseNonce: [UInt8]

    public init(contentKey: [UInt8], baseNonce: [UInt8]) {
        self.contentKey = contentKey
        self.baseNonce = baseNonce
    }

    /// Derives CEK and NONCE from the input keying material and the header's salt:
    /// PRK = HMAC-SHA-256(salt, IKM); CEK = HKDF-Expand(PRK, "Content-Encoding: aes128gcm\0", 16);
    /// NONCE = HKDF-Expand(PRK, "Content-Encoding: nonce\0", 12).
    public static func derive(ikm: [UInt8], salt: [UInt8]) -> (prk: [UInt8], keys: RecordKeys) {
        let prk = HKDF<SHA256>.extract(inputKeyMaterial: SymmetricKey(data: ikm), salt: salt)
        let cek = HKDF<SHA256>.expand(pseudoRandomKey: prk, info: Array("Content-Encoding: aes128gcm\0".utf8), outputByteCount: 16)
        let nonce = HKDF<SHA256>.expand(pseudoRandomKey: prk, info: Array("Content-Encoding: nonce\0".utf8), outputByteCount: 12)
        return (Array(prk), RecordKeys(contentKey: cek.withUnsafeBytes { Array($0) }, baseNonce: nonce.withUnsafeBytes { Array($0) }))
    }

    /// The nonce of record `sequence`: the base nonce XOR the 96-bit big-endian sequence number.
    func nonce(for sequence: UInt64) -> [UInt8] {
        var n = baseNonce
        for i in 0..<8 { n[11 - i] ^= UInt8(truncatingIfNeeded: sequence >> (8 * UInt64(i))) }
        return n
    }
}

/// The record layer of `aes128gcm`, [RFC 8188 §2](https://www.rfc-editor.org/rfc/rfc8188#section-2):
/// the body after the header is a sequence of records, each `rs` octets of ciphertext (the last may be
/// shorter); each record's plaintext is data ‖ delimiter ‖ zero padding, where the delimiter is 0x01 in
/// every record but the last and 0x02 in the last:
///
/// ```
/// +-----------+-----------+------------+-----------+     +------------------------+
/// |  header   | record 0  |  record 1  |    ...    |     | record = AES-128-GCM(  |
/// | 21+idlen  | rs octets |  rs octets | last ≤ rs |     |  data ‖ 01|02 ‖ 00…00) |
/// +-----------+-----------+------------+-----------+     |  ‖ 16-octet tag        |
///                                                        +------------------------+
/// ```
public enum AES128GCMRecords {
    static let tagLength = 16

    /// Encrypts `plaintext` into records of at most `header.recordSize` octets, adding `padding` zero
    /// octets after the data (spilling into further records when a record is full). Records are filled
    /// with data first, as http_ece does, so the output is byte-identical to it for the same inputs.
    /// - Throws: `.badParameter` for negative padding.
    public static func encrypt(_ plaintext: [UInt8], header: ContentCodingHeader, keys: RecordKeys, padding: Int = 0) throws -> [UInt8] {
        guard padding >= 0 else { throw WebPushError(.badParameter, "padding must not be negative, got \(padding)") }
        let perRecord = header.recordSize - tagLength - 1
        var out = header.encode()
        out.reserveCapacity(out.count + plaintext.count + padding + (plaintext.count + padding) / perRecord * 17 + 17)
        let key = SymmetricKey(data: keys.contentKey)
        var dataLeft = plaintext[...]
        var padLeft = padding
        var sequence: UInt64 = 0
        repeat {
            let data = dataLeft.prefix(perRecord)
            dataLeft = dataLeft.dropFirst(data.count)
            let pad = min(padLeft, perRecord - data.count)
            padLeft -= pad
            let last = dataLeft.isEmpty && padLeft == 0
            var record = Array(data)
            record.append(last ? 2 : 1)
            record += repeatElement(0, count: pad)
            let box = try AES.GCM.seal(record, using: key, nonce: AES.GCM.Nonce(data: keys.nonce(for: sequence)))
            out += box.ciphertext
            out += box.tag
            sequence += 1
            if last { break }
        } while true
        return out
    }

    /// Decrypts one record and strips its padding.
    /// - Throws: `.authenticationFailed` when the tag does not verify, `.badPadding` when the delimiter
    ///   is wrong for the record's position or the plaintext is all zero.
    static func openRecord(_ record: ArraySlice<UInt8>, sequence: UInt64, last: Bool, keys: RecordKeys) throws -> ArraySlice<UInt8> {
        guard record.count > tagLength else {
            throw WebPushError(.truncated, "record \(sequence) is \(record.count) octets, shorter than the 17-octet minimum")
        }
        let plain: [UInt8]
        do {
            let box = try AES.GCM.SealedBox(
                nonce: AES.GCM.Nonce(data: keys.nonce(for: sequence)),
                ciphertext: record.dropLast(tagLength), tag: record.suffix(tagLength))
            plain = Array(try AES.GCM.open(box, using: SymmetricKey(data: keys.contentKey)))
        } catch {
            throw WebPushError(.authenticationFailed,
                               "record \(sequence) failed AES-GCM authentication (tampered, truncated or wrong key)")
        }
        guard let end = plain.lastIndex(where: { $0 != 0 }) else {
            throw WebPushError(.badPadding, "record \(sequence) plaintext is all zero: no padding delimiter")
        }
        let expected: UInt8 = last ? 2 : 1
        guard plain[end] == expected else {
            throw WebPushError(.badPadding, last
                ? "last record \(sequence) has delimiter \(plain[end]), expected 2 (body truncated at a record boundary?)"
                : "record \(sequence) has delimiter \(plain[end]) but is not the last, expected 1")
        }
        return plain[..<end]
    }
}

/// An incremental `aes128gcm` decoder: feed it the body in pieces of any size; it emits plaintext as
/// soon as a record is known not to be the last (more bytes follow it) and the rest on `finish()`.
/// Memory is bounded by one record plus the input not yet consumed.
public struct AES128GCMDecoder {
    /// Turns the parsed header into the record keys (for Web Push: ECDH with the key in `keyid`).
    public typealias KeyDerivation = (ContentCodingHeader) throws -> RecordKeys

    private enum State {
        case header
        case records(ContentCodingHeader, RecordKeys, sequence: UInt64)
        case done
    }

    private let derive: KeyDerivation
    private let acceptHeaderOnly: Bool
    private var state = State.header
    private var buffer: [UInt8] = []

    /// - Parameter acceptHeaderOnly: treat a body with a header and no record as the empty
    ///   plaintext (http_ece's non-RFC output for an empty message); RFC 8188 requires one record.
    public init(acceptHeaderOnly: Bool = true, keys: @escaping KeyDerivation) {
        self.derive = keys
        self.acceptHeaderOnly = acceptHeaderOnly
    }

    /// The parsed header, once enough bytes have arrived.
    public var header: ContentCodingHeader? {
        if case .records(let h, _, _) = state { return h }
        return nil
    }

    /// Consumes `bytes`; returns the plaintext of every record now known not to be the last.
    public mutating func feed(_ bytes: some Collection<UInt8>) throws -> [UInt8] {
        buffer += bytes
        var out: [UInt8] = []
        while true {
            switch state {
            case .done:
                if !buffer.isEmpty { throw WebPushError(.truncated, "\(buffer.count) octets after the last record") }
                return out
            case .header:
                guard let (header, length) = try ContentCodingHeader.parse(buffer[...]) else { return out }
                buffer.removeFirst(length)
                state = .records(header, try derive(header), sequence: 0)
            case .records(let header, let keys, let sequence):
                // A full record is only known not to be the last when at least one more octet follows it.
                guard buffer.count > header.recordSize else { return out }
                out += try AES128GCMRecords.openRecord(buffer[..<header.recordSize], sequence: sequence, last: false, keys: keys)
                buffer.removeFirst(header.recordSize)
                state = .records(header, keys, sequence: sequence + 1)
            }
        }
    }

    /// Ends the body: decrypts the last record. Throws when the body stopped inside the header or
    /// a record, or when the last record's delimiter says more should have followed.
    public mutating func finish() throws -> [UInt8] {
        switch state {
        case .done:
            return []
        case .header:
            throw WebPushError(.truncated, "body ended after \(buffer.count) octets, inside the content-coding header")
        case .records(_, let keys, let sequence):
            defer { state = .done; buffer = [] }
            // `feed` only consumes a record when more bytes follow it, so an empty buffer means no record at all.
            if buffer.isEmpty {
                if acceptHeaderOnly { return [] }
                throw WebPushError(.truncated, "body has a header but no record (RFC 8188 requires one)")
            }
            return Array(try AES128GCMRecords.openRecord(buffer[...], sequence: sequence, last: true, keys: keys))
        }
    }
}
