/// The header in front of every datagram relayed through a SOCKS5 UDP association,
/// RFC 1928 §7: <https://www.rfc-editor.org/rfc/rfc1928#section-7>
///
/// ```
/// +----+------+------+----------+----------+----------+
/// |RSV | FRAG | ATYP | DST.ADDR | DST.PORT |   DATA   |
/// +----+------+------+----------+----------+----------+
/// | 2  |  1   |  1   | Variable |    2     | Variable |
/// +----+------+------+----------+----------+----------+
/// ```
/// Fragmentation is not implemented, so (as §7 requires of such servers) a datagram with
/// FRAG ≠ X'00' is refused with `.fragmentationNotSupported`; the relay drops it.
public struct SOCKS5UDPHeader: Hashable, Sendable {
    /// Where the datagram goes (client → relay) or where it came from (relay → client).
    public var destination: Destination

    public init(destination: Destination) { self.destination = destination }

    /// Decodes the header of one datagram; `consumed` is the offset of DATA.
    /// A datagram is complete by definition, so a short one is `.invalid`, never `.needMore`.
    public static func parse(_ datagram: some Collection<UInt8>) -> ParseResult<SOCKS5UDPHeader> {
        withContiguousBytes(datagram) { buffer in
            var reader = ByteReader(buffer)
            guard let reserved = reader.readU16(), let fragment = reader.readU8() else {
                return .invalid(WireError(.badLength, "SOCKS5 UDP datagram of \(buffer.count) bytes is shorter than its header"))
            }
            guard reserved == 0 else {
                return .invalid(WireError(.malformed, "SOCKS5 UDP header reserved field is \(hex16(reserved)), expected 0x0000"))
            }
            guard fragment == 0 else {
                return .invalid(WireError(.fragmentationNotSupported, "SOCKS5 UDP fragment \(fragment) dropped: fragmentation not supported"))
            }
            do throws(WireError) {
                guard let (_, destination) = try SOCKS5Address.read(&reader, what: "UDP") else {
                    return .invalid(WireError(.badLength, "SOCKS5 UDP datagram of \(buffer.count) bytes is shorter than its header"))
                }
                return .done(SOCKS5UDPHeader(destination: destination), consumed: reader.offset)
            } catch {
                return .invalid(error)
            }
        }
    }

    /// The header bytes (RSV 0, FRAG 0, address); append DATA after them.
    public func encoded() -> [UInt8] {
        var bytes: [UInt8] = [0, 0, 0]
        SOCKS5Address.write(destination, into: &bytes)
        return bytes
    }
}
