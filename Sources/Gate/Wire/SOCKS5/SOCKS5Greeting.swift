/// A SOCKS5 authentication method number (RFC 1928 §3).
public struct SOCKS5Method: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    /// X'00' NO AUTHENTICATION REQUIRED.
    public static let noAuthentication = SOCKS5Method(rawValue: 0x00)
    /// X'01' GSSAPI.
    public static let gssapi = SOCKS5Method(rawValue: 0x01)
    /// X'02' USERNAME/PASSWORD (RFC 1929).
    public static let usernamePassword = SOCKS5Method(rawValue: 0x02)
    /// X'FF' NO ACCEPTABLE METHODS.
    public static let noAcceptable = SOCKS5Method(rawValue: 0xFF)

    public var description: String { hex(rawValue) }
}

/// The client's version identifier / method selection message, RFC 1928 §3:
/// <https://www.rfc-editor.org/rfc/rfc1928#section-3>
///
/// ```
/// +----+----------+----------+
/// |VER | NMETHODS | METHODS  |
/// +----+----------+----------+
/// | 1  |    1     | 1 to 255 |
/// +----+----------+----------+
/// ```
public struct SOCKS5Greeting: Hashable, Sendable {
    /// The methods the client offers, in its order.
    public var methods: [SOCKS5Method]

    public init(methods: [SOCKS5Method]) { self.methods = methods }

    /// Decodes a greeting from the front of `bytes`.
    public static func parse(_ bytes: some Collection<UInt8>) -> ParseResult<SOCKS5Greeting> {
        withContiguousBytes(bytes) { buffer in
            var reader = ByteReader(buffer)
            guard let version = reader.readU8() else { return .needMore }
            if let error = SOCKS5Address.versionError(version) { return .invalid(error) }
            guard let count = reader.readU8() else { return .needMore }
            guard count > 0 else {
                return .invalid(WireError(.badLength, "SOCKS5 greeting offers 0 methods (NMETHODS must be 1 to 255)"))
            }
            guard let methods = reader.readBytes(Int(count)) else { return .needMore }
            return .done(SOCKS5Greeting(methods: methods.map(SOCKS5Method.init)), consumed: reader.offset)
        }
    }

    /// The wire bytes (1 to 255 methods; extra methods are dropped).
    public func encoded() -> [UInt8] {
        let offered = methods.prefix(255)
        return [5, UInt8(offered.count)] + offered.map(\.rawValue)
    }
}
