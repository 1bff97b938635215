#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The REP field of a SOCKS5 reply (RFC 1928 §6). A struct rather than an enum so that a
/// decoder keeps codes from X'09' to X'FF' ("unassigned") instead of failing on them.
public struct SOCKS5ReplyCode: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    /// X'00' succeeded.
    public static let succeeded = SOCKS5ReplyCode(rawValue: 0x00)
    /// X'01' general SOCKS server failure.
    public static let generalFailure = SOCKS5ReplyCode(rawValue: 0x01)
    /// X'02' connection not allowed by ruleset.
    public static let notAllowed = SOCKS5ReplyCode(rawValue: 0x02)
    /// X'03' network unreachable.
    public static let networkUnreachable = SOCKS5ReplyCode(rawValue: 0x03)
    /// X'04' host unreachable (also used for name resolution failures).
    public static let hostUnreachable = SOCKS5ReplyCode(rawValue: 0x04)
    /// X'05' connection refused.
    public static let connectionRefused = SOCKS5ReplyCode(rawValue: 0x05)
    /// X'06' TTL expired.
    public static let ttlExpired = SOCKS5ReplyCode(rawValue: 0x06)
    /// X'07' command not supported.
    public static let commandNotSupported = SOCKS5ReplyCode(rawValue: 0x07)
    /// X'08' address type not supported.
    public static let addressTypeNotSupported = SOCKS5ReplyCode(rawValue: 0x08)

    /// The reply code for a failed `connect(2)` (or other socket call) with this `errno`:
    ///
    /// | errno | reply |
    /// |---|---|
    /// | ECONNREFUSED | X'05' connection refused |
    /// | ENETUNREACH, ENETDOWN | X'03' network unreachable |
    /// | EHOSTUNREACH, EHOSTDOWN, ETIMEDOUT | X'04' host unreachable |
    /// | EACCES, EPERM | X'02' not allowed by ruleset |
    /// | EAFNOSUPPORT | X'08' address type not supported |
    /// | anything else | X'01' general failure |
    ///
    /// ETIMEDOUT maps to host unreachable: a connect that times out met a silent host or a
    /// dropping firewall; X'06' (TTL expired) is for ICMP time-exceeded, which Linux reports
    /// as EHOSTUNREACH anyway.
    public init(errno code: Int32) {
        switch code {
        case ECONNREFUSED: self = .connectionRefused
        case ENETUNREACH, ENETDOWN: self = .networkUnreachable
        case EHOSTUNREACH, EHOSTDOWN, ETIMEDOUT: self = .hostUnreachable
        case EACCES, EPERM: self = .notAllowed
        case EAFNOSUPPORT: self = .addressTypeNotSupported
        default: self = .generalFailure
        }
    }

    /// The reply code for a request the parser or machine rejected with `error`.
    public init(error: WireError) {
        switch error.code {
        case .unsupportedCommand: self = .commandNotSupported
        case .unsupportedAddressType: self = .addressTypeNotSupported
        default: self = .generalFailure
        }
    }

    public var description: String {
        let names = [
            "succeeded", "general SOCKS server failure", "connection not allowed by ruleset",
            "network unreachable", "host unreachable", "connection refused", "TTL expired",
            "command not supported", "address type not supported",
        ]
        return rawValue < names.count ? "\(hex(rawValue)) \(names[Int(rawValue)])" : "\(hex(rawValue)) unassigned"
    }
}

/// The server's reply, RFC 1928 §6:
/// <https://www.rfc-editor.org/rfc/rfc1928#section-6>
///
/// ```
/// +----+-----+-------+------+----------+----------+
/// |VER | REP |  RSV  | ATYP | BND.ADDR | BND.PORT |
/// +----+-----+-------+------+----------+----------+
/// | 1  |  1  | X'00' |  1   | Variable |    2     |
/// +----+-----+-------+------+----------+----------+
/// ```
/// On failure BND is meaningless; it is sent as 0.0.0.0:0.
public struct SOCKS5Reply: Hashable, Sendable {
    public var code: SOCKS5ReplyCode
    /// BND.ADDR and BND.PORT: the server's local address of the outbound connection (CONNECT)
    /// or the UDP relay address the client must send to (UDP ASSOCIATE).
    public var bound: Destination

    public init(code: SOCKS5ReplyCode, bound: Destination = Destination(host: "0.0.0.0", port: 0)) {
        self.code = code
        self.bound = bound
    }

    /// Decodes a reply from the front of `bytes`.
    public static func parse(_ bytes: some Collection<UInt8>) -> ParseResult<SOCKS5Reply> {
        withContiguousBytes(bytes) { buffer in
            var reader = ByteReader(buffer)
            guard let version = reader.readU8() else { return .needMore }
            if let error = SOCKS5Address.versionError(version) { return .invalid(error) }
            guard let code = reader.readU8(), let reserved = reader.readU8() else { return .needMore }
            guard reserved == 0 else {
                return .invalid(WireError(.malformed, "SOCKS5 reply reserved byte is \(hex(reserved)), expected 0x00"))
            }
            do throws(WireError) {
                guard let (_, bound) = try SOCKS5Address.read(&reader, what: "reply") else { return .needMore }
                return .done(SOCKS5Reply(code: SOCKS5ReplyCode(rawValue: code), bound: bound), consumed: reader.offset)
            } catch {
                return .invalid(error)
            }
        }
    }

    public func encoded() -> [UInt8] {
        var bytes: [UInt8] = [5, code.rawValue, 0]
        SOCKS5Address.write(bound, into: &bytes)
        return bytes
    }
}
