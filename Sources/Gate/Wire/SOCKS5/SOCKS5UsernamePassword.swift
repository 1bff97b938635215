/// The client's username/password request, RFC 1929 §2:
/// <https://www.rfc-editor.org/rfc/rfc1929#section-2>
///
/// ```
/// +----+------+----------+------+----------+
/// |VER | ULEN |  UNAME   | PLEN |  PASSWD  |
/// +----+------+----------+------+----------+
/// | 1  |  1   | 1 to 255 |  1   | 1 to 255 |
/// +----+------+----------+------+----------+
/// ```
/// VER is X'01' (the subnegotiation version). ULEN 0 is refused; PLEN 0 (an empty password)
/// is accepted, since common clients send it and the verifier decides.
public struct SOCKS5UsernamePasswordRequest: Hashable, Sendable {
    public var username: String
    public var password: String

    public init(username: String, password: String) {
        self.username = username
        self.password = password
    }

    /// The error for a subnegotiation VER byte other than 1 (RFC 1929 §2).
    static func versionError(_ version: UInt8) -> WireError? {
        version == 1 ? nil : WireError(.unsupportedVersion, "SOCKS5 username/password subnegotiation version \(version) not supported (expected 1)")
    }

    /// Decodes a username/password request from the front of `bytes`.
    /// Username and password are decoded as UTF-8 (invalid sequences become U+FFFD).
    public static func parse(_ bytes: some Collection<UInt8>) -> ParseResult<SOCKS5UsernamePasswordRequest> {
        withContiguousBytes(bytes) { buffer in
            var reader = ByteReader(buffer)
            guard let version = reader.readU8() else { return .needMore }
            if let error = SOCKS5UsernamePasswordRequest.versionError(version) { return .invalid(error) }
            guard let userLength = reader.readU8() else { return .needMore }
            guard userLength > 0 else {
                return .invalid(WireError(.badLength, "SOCKS5 username length is 0"))
            }
            guard let user = reader.readBytes(Int(userLength)), let passLength = reader.readU8(),
                let pass = reader.readBytes(Int(passLength))
            else { return .needMore }
            return .done(
                SOCKS5UsernamePasswordRequest(
                    username: String(decoding: user, as: UTF8.self), password: String(decoding: pass, as: UTF8.self)),
                consumed: reader.offset)
        }
    }

    /// The wire bytes; username and password are cut at 255 bytes each.
    public func encoded() -> [UInt8] {
        let user = Array(username.utf8.prefix(255))
        let pass = Array(password.utf8.prefix(255))
        return [1, UInt8(user.count)] + user + [UInt8(pass.count)] + pass
    }
}

/// The server's username/password response, RFC 1929 §2:
///
/// ```
/// +----+--------+
/// |VER | STATUS |
/// +----+--------+
/// | 1  |   1    |
/// +----+--------+
/// ```
/// STATUS X'00' is success; anything else is failure, after which the server closes.
public struct SOCKS5UsernamePasswordResponse: Hashable, Sendable {
    public var status: UInt8

    public init(success: Bool) { self.status = success ? 0 : 1 }
    public init(status: UInt8) { self.status = status }

    public var isSuccess: Bool { status == 0 }

    /// Decodes a response from the front of `bytes`.
    public static func parse(_ bytes: some Collection<UInt8>) -> ParseResult<SOCKS5UsernamePasswordResponse> {
        withContiguousBytes(bytes) { buffer in
            var reader = ByteReader(buffer)
            guard let version = reader.readU8() else { return .needMore }
            if let error = SOCKS5UsernamePasswordRequest.versionError(version) { return .invalid(error) }
            guard let status = reader.readU8() else { return .needMore }
            return .done(SOCKS5UsernamePasswordResponse(status: status), consumed: 2)
        }
    }

    public func encoded() -> [UInt8] { [1, status] }
}
