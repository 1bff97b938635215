#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// SOCKS5 address type (ATYP), RFC 1928 §4–§5:
/// <https://www.rfc-editor.org/rfc/rfc1928#section-5>
public enum SOCKS5AddressType: UInt8, Hashable, Sendable {
    /// X'01': a 4-byte IPv4 address.
    case ipv4 = 0x01
    /// X'03': one length byte, then that many bytes of domain name (no terminating NUL).
    case domainName = 0x03
    /// X'04': a 16-byte IPv6 address.
    case ipv6 = 0x04
}

/// The address-and-port tail shared by SOCKS5 requests, replies and UDP headers
/// (RFC 1928 §5):
///
/// ```
/// +------+----------+----------+
/// | ATYP | DST.ADDR | DST.PORT |
/// +------+----------+----------+
/// |  1   | Variable |    2     |
/// +------+----------+----------+
/// ```
///
/// Decoded into a `Destination`: IP addresses become their text form (`192.0.2.1`, `2001:db8::1`),
/// domain names stay as sent.
enum SOCKS5Address {
    /// The error for a VER byte other than 5 (RFC 1928 messages all start with VER = 5).
    static func versionError(_ version: UInt8) -> WireError? {
        version == 5 ? nil : WireError(.unsupportedVersion, "SOCKS version \(version) not supported")
    }

    /// Reads ATYP, address and port. Returns `nil` when the bytes run out (need more),
    /// throws for an unknown ATYP or a malformed domain name.
    static func read(_ reader: inout ByteReader, what: String) throws(WireError) -> (SOCKS5AddressType, Destination)? {
        guard let atypByte = reader.readU8() else { return nil }
        guard let atyp = SOCKS5AddressType(rawValue: atypByte) else {
            throw WireError(.unsupportedAddressType, "SOCKS5 \(what) address type \(hex(atypByte)) not supported (1 IPv4, 3 domain, 4 IPv6)")
        }
        let host: String
        switch atyp {
        case .ipv4:
            guard let address = reader.readU32() else { return nil }
            host = formatIPv4(address)
        case .ipv6:
            guard let raw = reader.readBytes(16) else { return nil }
            host = formatIPv6(raw)
        case .domainName:
            guard let length = reader.readU8() else { return nil }
            guard length > 0 else {
                throw WireError(.badLength, "SOCKS5 \(what) domain name length is 0")
            }
            guard let raw = reader.readBytes(Int(length)) else { return nil }
            if let index = raw.firstIndex(where: { $0 <= 0x20 || $0 >= 0x7F }) {
                throw WireError(.malformed, "SOCKS5 \(what) domain name contains byte \(hex(raw[index])) at position \(index)")
            }
            host = String(decoding: raw, as: UTF8.self)
        }
        guard let port = reader.readU16() else { return nil }
        return (atyp, Destination(host: host, port: port))
    }

    /// Appends ATYP, address and port for `destination`: an IPv4 or IPv6 literal host is
    /// written as such, anything else as a domain name. A name longer than the 255 bytes the
    /// length byte can express is cut there (the peer then fails to resolve it; it cannot
    /// misparse the message).
    static func write(_ destination: Destination, into bytes: inout [UInt8]) {
        if let v4 = parseIPv4(destination.host) {
            bytes.append(SOCKS5AddressType.ipv4.rawValue)
            bytes += v4
        } else if let v6 = parseIPv6(destination.host) {
            bytes.append(SOCKS5AddressType.ipv6.rawValue)
            bytes += v6
        } else {
            let name = Array(destination.host.utf8.prefix(255))
            bytes.append(SOCKS5AddressType.domainName.rawValue)
            bytes.append(UInt8(name.count))
            bytes += name
        }
        bytes.appendU16(destination.port)
    }
}

/// The 4 bytes of a dotted-quad IPv4 literal, or nil.
func parseIPv4(_ text: String) -> [UInt8]? {
    var address = in_addr()
    guard inet_pton(AF_INET, text, &address) == 1 else { return nil }
    return withUnsafeBytes(of: &address) { Array($0) }
}

/// The 16 bytes of an IPv6 literal (no brackets, no zone), or nil.
func parseIPv6(_ text: String) -> [UInt8]? {
    var address = in6_addr()
    guard inet_pton(AF_INET6, text, &address) == 1 else { return nil }
    return withUnsafeBytes(of: &address) { Array($0) }
}

/// Dotted-quad text of a big-endian IPv4 address, built without intermediate strings
/// (this runs once per relayed UDP datagram).
func formatIPv4(_ address: UInt32) -> String {
    String(unsafeUninitializedCapacity: 15) { text in
        var length = 0
        for shift in stride(from: 24, through: 0, by: -8) {
            let octet = Int(address >> UInt32(shift) & 0xFF)
            if octet >= 100 { text[length] = UInt8(ascii: "0") + UInt8(octet / 100); length += 1 }
            if octet >= 10 { text[length] = UInt8(ascii: "0") + UInt8(octet / 10 % 10); length += 1 }
            text[length] = UInt8(ascii: "0") + UInt8(octet % 10)
            length += 1
            if shift > 0 { text[length] = UInt8(ascii: "."); length += 1 }
        }
        return length
    }
}

/// RFC 5952 text form of a 16-byte IPv6 address.
func formatIPv6(_ raw: [UInt8]) -> String {
    var address = in6_addr()
    withUnsafeMutableBytes(of: &address) { $0.copyBytes(from: raw.prefix(16)) }
    var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
    guard inet_ntop(AF_INET6, &address, &text, socklen_t(text.count)) != nil else { return "::" }
    return String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}
