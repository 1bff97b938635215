/// base64url (RFC 4648 §5): the one strict codec of the project. The Gate decodes `Upgrade: h2c`
/// `HTTP2-Settings` with it; PeerMesh's Web Push `Base64URL` wraps it (keys, VAPID tokens).
///
/// Alphabet `A–Z a–z 0–9 - _` (each character 6 bits, most significant first); the last group
/// of 2 or 3 characters carries 1 or 2 bytes, its unused low bits ignored. Trailing `=` padding
/// is tolerated on input and never written.
public enum Base64URLCoding {
    /// Why a text is not base64url.
    public enum Failure: Error, Equatable, CustomStringConvertible {
        /// The text (padding left out) has a length of 4n+1 characters: a lone 6-bit group.
        case length(Int)
        /// A character outside the alphabet, at this offset (bytes of the text's UTF-8).
        case byte(UInt8, at: Int)

        public var description: String {
            switch self {
            case .length(let count): "\(count) characters (without padding) cannot be base64url"
            case .byte(let byte, let offset): "byte 0x\(String(byte, radix: 16)) at offset \(offset) is not base64url"
            }
        }
    }

    /// Encodes without padding.
    public static func encode<Bytes: Sequence>(_ bytes: Bytes) -> String where Bytes.Element == UInt8 {
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".utf8)
        let input = Array(bytes)
        var out: [UInt8] = []
        out.reserveCapacity((input.count * 4 + 2) / 3)
        var index = 0
        while index < input.count {
            let count = min(3, input.count - index)
            var group = UInt32(input[index]) << 16
            if count > 1 { group |= UInt32(input[index + 1]) << 8 }
            if count > 2 { group |= UInt32(input[index + 2]) }
            for k in 0...count { out.append(alphabet[Int((group >> UInt32(18 - 6 * k)) & 0x3F)]) }
            index += 3
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Decodes base64url; trailing `=` are left out first. `standardAlphabet`: also accept `+`
    /// and `/` (RFC 4648 §4 base64, which some Web Push clients send).
    public static func decode(_ text: some StringProtocol, standardAlphabet: Bool = false) throws(Failure) -> [UInt8] {
        var bytes = Array(text.utf8)
        while bytes.last == UInt8(ascii: "=") { bytes.removeLast() }
        guard bytes.count % 4 != 1 else { throw .length(bytes.count) }
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count * 3 / 4)
        var group: UInt32 = 0
        var bits = 0
        for (offset, byte) in bytes.enumerated() {
            let value: UInt8
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"): value = byte - UInt8(ascii: "A")
            case UInt8(ascii: "a")...UInt8(ascii: "z"): value = byte - UInt8(ascii: "a") + 26
            case UInt8(ascii: "0")...UInt8(ascii: "9"): value = byte - UInt8(ascii: "0") + 52
            case UInt8(ascii: "-"): value = 62
            case UInt8(ascii: "_"): value = 63
            case UInt8(ascii: "+") where standardAlphabet: value = 62
            case UInt8(ascii: "/") where standardAlphabet: value = 63
            default: throw .byte(byte, at: offset)
            }
            group = group << 6 | UInt32(value)
            bits += 6
            if bits >= 8 {
                bits -= 8
                out.append(UInt8(truncatingIfNeeded: group >> UInt32(bits)))
                group &= (1 << UInt32(bits)) - 1
            }
        }
        return out
    }
}
