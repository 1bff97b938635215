/// The server's METHOD selection message, RFC 1928 §3:
/// <https://www.rfc-editor.org/rfc/rfc1928#section-3>
///
/// ```
/// +----+--------+
/// |VER | METHOD |
/// +----+--------+
/// | 1  |   1    |
/// +----+--------+
/// ```
/// METHOD X'FF' means none of the offered methods is acceptable; the client must then close.
public struct SOCKS5MethodSelection: Hashable, Sendable {
    public var method: SOCKS5Method

    public init(method: SOCKS5Method) { self.method = method }

    /// Decodes a method selection from the front of `bytes`.
    public static func parse(_ bytes: some Collection<UInt8>) -> ParseResult<SOCKS5MethodSelection> {
        withContiguousBytes(bytes) { buffer in
            var reader = ByteReader(buffer)
            guard let version = reader.readU8() else { return .needMore }
            if let error = SOCKS5Address.versionError(version) { return .invalid(error) }
            guard let method = reader.readU8() else { return .needMore }
            return .done(SOCKS5MethodSelection(method: SOCKS5Method(rawValue: method)), consumed: 2)
        }
    }

    public func encoded() -> [UInt8] { [5, method.rawValue] }
}
