/// The HTTP/2 client connection preface, RFC 9113 §3.4:
/// <https://www.rfc-editor.org/rfc/rfc9113#section-3.4>
///
/// ```
/// 0x505249202a20485454502f322e300d0a0d0a534d0d0a0d0a
/// "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"   (24 octets, then a SETTINGS frame)
/// ```
/// A client with prior knowledge of HTTP/2 over cleartext (h2c) starts with it.
public enum HTTP2Preface {
    /// The 24 preface octets.
    public static let bytes: [UInt8] = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)

    /// `.done(consumed: 24)` when `bytes` starts with the preface, `.needMore` while it is a
    /// proper prefix of it, `.invalid` at the first differing octet.
    public static func parse(_ bytes: some Collection<UInt8>) -> ParseResult<Void> {
        var index = 0
        for byte in bytes.prefix(Self.bytes.count) {
            guard byte == Self.bytes[index] else {
                return .invalid(WireError(.malformed, "octet \(index) is \(hex(byte)), not the HTTP/2 preface's \(hex(Self.bytes[index]))"))
            }
            index += 1
        }
        return index == Self.bytes.count ? .done((), consumed: index) : .needMore
    }
}
