import Crypto
import Glibc

/// A node's identity derived from its P-256 public key, as the original ugate defines it:
/// ID = base32 (RFC 4648 §6, upper case, no padding) of SHA-256 over the 65-byte uncompressed
/// public key (52 characters); VIP6 = `fd00::/64` + the last 8 bytes of that key.
public struct NodeID: Hashable, Sendable, CustomStringConvertible {
    /// The 52-character base32 ID.
    public let id: String
    /// The 65-byte uncompressed public key (0x04 ‖ X ‖ Y).
    public let publicKey: [UInt8]

    /// - Throws: `NodeIDError.badPublicKey` unless `publicKey` is a valid 65-byte uncompressed P-256 point.
    public init(publicKey: [UInt8]) throws {
        guard publicKey.count == 65, publicKey[0] == 0x04,
              (try? P256.Signing.PublicKey(x963Representation: publicKey)) != nil
        else { throw NodeIDError.badPublicKey(length: publicKey.count) }
        self.publicKey = publicKey
        self.id = Base32.encode(Array(SHA256.hash(data: publicKey)))
    }

    public init(_ key: P256.Signing.PublicKey) {
        self.publicKey = Array(key.x963Representation)
        self.id = Base32.encode(Array(SHA256.hash(data: publicKey)))
    }

    /// The node's IPv6 address in `fd00::/64`, as text (RFC 5952, see `vip6(publicKey:)`).
    public var vip6: String { Self.vip6(publicKey: publicKey) }

    /// `fd00::/64` + the last 8 bytes of `publicKey`, in the RFC 5952 text form `inet_ntop`
    /// writes (lower case, longest zero run compressed), which is how capture listeners write
    /// an IPv6 destination, so route rules and destinations compare as strings.
    static func vip6(publicKey: [UInt8]) -> String {
        var raw = [UInt8](repeating: 0, count: 16)
        raw[0] = 0xfd
        raw.replaceSubrange(8..<16, with: publicKey.suffix(8))
        return formatIPv6(raw)
    }

    /// The RFC 5952 form of an IPv6 literal (`FD00:0::1` → `fd00::1`), nil when `text` is not one.
    static func canonicalIPv6(_ text: String) -> String? {
        guard text.contains(":") else { return nil }
        var address = in6_addr()
        guard inet_pton(AF_INET6, text, &address) == 1 else { return nil }
        return formatIPv6(withUnsafeBytes(of: &address) { Array($0) })
    }

    private static func formatIPv6(_ raw: [UInt8]) -> String {
        var address = in6_addr()
        withUnsafeMutableBytes(of: &address) { $0.copyBytes(from: raw.prefix(16)) }
        var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        _ = inet_ntop(AF_INET6, &address, &text, socklen_t(text.count))
        return String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    public var description: String { id }
}

public enum NodeIDError: Error, Equatable, CustomStringConvertible {
    case badPublicKey(length: Int)

    public var description: String {
        switch self {
        case .badPublicKey(let length):
            return "node public key must be a 65-byte uncompressed P-256 point, got \(length) bytes that are not one"
        }
    }
}

/// RFC 4648 §6 base32, upper case, no padding.
public enum Base32 {
    private static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567".utf8)

    public static func encode(_ bytes: [UInt8]) -> String {
        var out: [UInt8] = []
        out.reserveCapacity((bytes.count * 8 + 4) / 5)
        var buffer: UInt32 = 0
        var bits = 0
        for byte in bytes {
            buffer = buffer << 8 | UInt32(byte)
            bits += 8
            while bits >= 5 {
                bits -= 5
                out.append(alphabet[Int(buffer >> UInt32(bits) & 0x1f)])
            }
        }
        if bits > 0 {
            out.append(alphabet[Int(buffer << UInt32(5 - bits) & 0x1f)])
        }
        return String(decoding: out, as: UTF8.self)
    }
}
