import Crypto

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

    /// The node's IPv6 address in `fd00::/64`, as text.
    public var vip6: String {
        let tail = publicKey.suffix(8)
        var groups: [String] = []
        var i = tail.startIndex
        while i < tail.endIndex {
            groups.append(String(UInt16(tail[i]) << 8 | UInt16(tail[i + 1]), radix: 16))
            i += 2
        }
        return "fd00::" + groups.joined(separator: ":")
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
