/// A SOCKS5 command (RFC 1928 §4).
public enum SOCKS5Command: UInt8, Hashable, Sendable {
    /// X'01' CONNECT: open a TCP connection to the destination.
    case connect = 0x01
    /// X'02' BIND: accept one inbound connection (parsed, refused by `SOCKS5ServerMachine`).
    case bind = 0x02
    /// X'03' UDP ASSOCIATE: relay UDP datagrams (§7).
    case udpAssociate = 0x03
}

/// The client's request, RFC 1928 §4:
/// <https://www.rfc-editor.org/rfc/rfc1928#section-4>
///
/// ```
/// +----+-----+-------+------+----------+----------+
/// |VER | CMD |  RSV  | ATYP | DST.ADDR | DST.PORT |
/// +----+-----+-------+------+----------+----------+
/// | 1  |  1  | X'00' |  1   | Variable |    2     |
/// +----+-----+-------+------+----------+----------+
/// ```
/// An unknown CMD gives `.invalid` with code `.unsupportedCommand` (reply X'07'), an unknown
/// ATYP `.unsupportedAddressType` (reply X'08'); both are detected before the address, so the
/// reply can be sent without waiting for bytes whose length is unknown.
public struct SOCKS5Request: Hashable, Sendable {
    public var command: SOCKS5Command
    public var addressType: SOCKS5AddressType
    /// DST.ADDR and DST.PORT. For UDP ASSOCIATE this is where the client will send from
    /// (often 0.0.0.0:0, meaning "not known yet").
    public var destination: Destination

    public init(command: SOCKS5Command, destination: Destination) {
        self.command = command
        self.destination = destination
        if parseIPv4(destination.host) != nil {
            self.addressType = .ipv4
        } else if parseIPv6(destination.host) != nil {
            self.addressType = .ipv6
        } else {
            self.addressType = .domainName
        }
    }

    /// Decodes a request from the front of `bytes`.
    public static func parse(_ bytes: some Collection<UInt8>) -> ParseResult<SOCKS5Request> {
        withContiguousBytes(bytes) { buffer in
            var reader = ByteReader(buffer)
            guard let version = reader.readU8() else { return .needMore }
            if let error = SOCKS5Address.versionError(version) { return .invalid(error) }
            guard let commandByte = reader.readU8() else { return .needMore }
            guard let command = SOCKS5Command(rawValue: commandByte) else {
                return .invalid(WireError(.unsupportedCommand, "SOCKS5 command \(hex(commandByte)) not supported (1 CONNECT, 2 BIND, 3 UDP ASSOCIATE)"))
            }
            guard let reserved = reader.readU8() else { return .needMore }
            guard reserved == 0 else {
                return .invalid(WireError(.malformed, "SOCKS5 request reserved byte is \(hex(reserved)), expected 0x00"))
            }
            do throws(WireError) {
                guard let (atyp, destination) = try SOCKS5Address.read(&reader, what: "request") else { return .needMore }
                var request = SOCKS5Request(command: command, destination: destination)
                request.addressType = atyp
                return .done(request, consumed: reader.offset)
            } catch {
                return .invalid(error)
            }
        }
    }

    /// The wire bytes. The address type follows `destination.host` (IP literal or domain).
    public func encoded() -> [UInt8] {
        var bytes: [UInt8] = [5, command.rawValue, 0]
        SOCKS5Address.write(destination, into: &bytes)
        return bytes
    }
}
