/// What a TLS ClientHello tells a router, without decrypting anything.
public struct ClientHelloInfo: Hashable, Sendable {
    /// legacy_record_version of the first record (0x0301 from most clients).
    public var recordVersion: UInt16
    /// legacy_version of the ClientHello (0x0303 for TLS 1.2 and 1.3).
    public var legacyVersion: UInt16
    /// The `host_name` of the server_name extension (RFC 6066 §3), as sent.
    public var serverName: String?
    /// The ALPN protocol names offered, in preference order (RFC 7301 §3.1).
    public var alpn: [String]
    /// The supported_versions extension (RFC 8446 §4.2.1), in client order; empty without it.
    /// GREASE values (RFC 8701) are kept.
    public var supportedVersions: [UInt16]
    /// The cipher suites offered, in client order.
    public var cipherSuites: [UInt16]
    /// Extension types in the order they appear.
    public var extensionTypes: [UInt16]

    public init(
        recordVersion: UInt16 = 0x0301, legacyVersion: UInt16 = 0x0303, serverName: String? = nil, alpn: [String] = [],
        supportedVersions: [UInt16] = [], cipherSuites: [UInt16] = [], extensionTypes: [UInt16] = []
    ) {
        self.recordVersion = recordVersion
        self.legacyVersion = legacyVersion
        self.serverName = serverName
        self.alpn = alpn
        self.supportedVersions = supportedVersions
        self.cipherSuites = cipherSuites
        self.extensionTypes = extensionTypes
    }

    /// True when the client offers TLS 1.3 (0x0304 in supported_versions).
    public var offersTLS13: Bool { supportedVersions.contains(0x0304) }
}

/// The TLS ClientHello sniffer, RFC 8446 §4.1.2:
/// <https://www.rfc-editor.org/rfc/rfc8446#section-4.1.2>
///
/// ```
/// struct {
///     ProtocolVersion legacy_version = 0x0303;
///     Random random;                                   // 32 bytes
///     opaque legacy_session_id<0..32>;
///     CipherSuite cipher_suites<2..2^16-2>;
///     opaque legacy_compression_methods<1..2^8-1>;
///     Extension extensions<8..2^16-1>;                 // absent in some TLS 1.2 hellos
/// } ClientHello;
/// struct { ExtensionType extension_type; opaque extension_data<0..2^16-1>; } Extension;
/// ```
/// Extensions read: server_name (0, RFC 6066 §3), ALPN (16, RFC 7301 §3.1),
/// supported_versions (43, RFC 8446 §4.2.1). Every vector length is checked against its
/// container; duplicate extensions are refused (RFC 8446 §4.2).
///
/// Bounds: records longer than 16384+256 bytes and handshake messages over 64 KiB are
/// refused, so a sniffer never holds more than about 64 KiB per connection.
public enum TLSClientHello {
    /// Largest ClientHello accepted (handshake header included).
    public static let maxHandshakeBytes = TLSHandshakeReassembler.maxHandshakeBytes
    /// Largest record fragment accepted.
    public static let maxRecordLength = TLSHandshakeReassembler.maxRecordLength

    /// Parses the ClientHello at the front of a TLS byte stream. `consumed` is the length of
    /// the records that carry it (the bytes must still be forwarded; the sniffer only looks).
    public static func parse(_ bytes: some Collection<UInt8>) -> ParseResult<ClientHelloInfo> {
        withContiguousBytes(bytes) { buffer in
            switch TLSHandshakeReassembler.firstHandshakeMessage(buffer, expectType: 1) {
            case .needMore: return .needMore
            case .invalid(let error): return .invalid(error)
            case .done(let message, let consumed):
                let parsed = message.body.withUnsafeBufferPointer { body in Result { () throws(WireError) in try parseBody(body) } }
                switch parsed {
                case .success(var info):
                    info.recordVersion = message.recordVersion
                    return .done(info, consumed: consumed)
                case .failure(let error):
                    return .invalid(error)
                }
            }
        }
    }

    private static func truncated(_ what: String) -> WireError {
        WireError(.badLength, "TLS ClientHello ends inside its \(what)")
    }

    static func parseBody(_ body: UnsafeBufferPointer<UInt8>) throws(WireError) -> ClientHelloInfo {
        var reader = ByteReader(body)
        var info = ClientHelloInfo()
        guard let version = reader.readU16() else { throw truncated("legacy_version") }
        info.legacyVersion = version
        guard reader.skip(32) else { throw truncated("random") }
        guard let sessionLength = reader.readU8() else { throw truncated("legacy_session_id length") }
        guard sessionLength <= 32 else {
            throw WireError(.badLength, "TLS ClientHello legacy_session_id length \(sessionLength) exceeds 32")
        }
        guard reader.skip(Int(sessionLength)) else { throw truncated("legacy_session_id") }
        guard let suitesLength = reader.readU16() else { throw truncated("cipher_suites length") }
        guard suitesLength >= 2, suitesLength % 2 == 0 else {
            throw WireError(.badLength, "TLS ClientHello cipher_suites length \(suitesLength) is not an even number ≥ 2")
        }
        guard var suites = reader.subReader(Int(suitesLength)) else { throw truncated("cipher_suites") }
        while let suite = suites.readU16() { info.cipherSuites.append(suite) }
        guard let compressionLength = reader.readU8() else { throw truncated("legacy_compression_methods length") }
        guard compressionLength >= 1 else {
            throw WireError(.badLength, "TLS ClientHello legacy_compression_methods length 0 (at least 1 required)")
        }
        guard reader.skip(Int(compressionLength)) else { throw truncated("legacy_compression_methods") }
        if reader.isAtEnd { return info }

        guard let extensionsLength = reader.readU16() else { throw truncated("extensions length") }
        guard Int(extensionsLength) == reader.remaining else {
            throw WireError(.badLength, "TLS ClientHello extensions length \(extensionsLength) but \(reader.remaining) bytes remain")
        }
        var seen = Set<UInt16>()
        while !reader.isAtEnd {
            guard let type = reader.readU16(), let length = reader.readU16() else { throw truncated("extension header") }
            guard var data = reader.subReader(Int(length)) else {
                throw WireError(.badLength, "TLS extension \(type) length \(length) exceeds the \(reader.remaining) bytes left")
            }
            guard seen.insert(type).inserted else {
                throw WireError(.malformed, "TLS ClientHello has extension \(type) twice")
            }
            info.extensionTypes.append(type)
            switch type {
            case 0: info.serverName = try parseServerName(&data)
            case 16: info.alpn = try parseALPN(&data)
            case 43: info.supportedVersions = try parseSupportedVersions(&data)
            default: break
            }
        }
        return info
    }

    /// RFC 6066 §3: `ServerName server_name_list<1..2^16-1>`, each
    /// `{ NameType name_type; opaque HostName<1..2^16-1>; }`; returns the host_name (type 0).
    private static func parseServerName(_ data: inout ByteReader) throws(WireError) -> String? {
        guard let listLength = data.readU16(), Int(listLength) == data.remaining, listLength > 0 else {
            throw WireError(.badLength, "TLS server_name list length does not match its extension")
        }
        var hostName: String?
        while !data.isAtEnd {
            guard let nameType = data.readU8(), let nameLength = data.readU16() else {
                throw WireError(.badLength, "TLS server_name entry is truncated")
            }
            guard nameLength > 0 else { throw WireError(.badLength, "TLS server_name host_name length 0") }
            guard let name = data.readBytes(Int(nameLength)) else {
                throw WireError(.badLength, "TLS server_name length \(nameLength) exceeds its list")
            }
            guard nameType == 0 else { continue }
            guard hostName == nil else { throw WireError(.malformed, "TLS server_name has two host_name entries") }
            if let index = name.firstIndex(where: { $0 <= 0x20 || $0 >= 0x7F }) {
                throw WireError(.malformed, "TLS server_name host_name contains byte \(hex(name[index])) at position \(index)")
            }
            hostName = String(decoding: name, as: UTF8.self)
        }
        return hostName
    }

    /// RFC 7301 §3.1: `ProtocolName protocol_name_list<2..2^16-1>`, each `opaque ProtocolName<1..2^8-1>`.
    private static func parseALPN(_ data: inout ByteReader) throws(WireError) -> [String] {
        guard let listLength = data.readU16(), Int(listLength) == data.remaining, listLength >= 2 else {
            throw WireError(.badLength, "TLS ALPN protocol_name_list length does not match its extension")
        }
        var names: [String] = []
        while !data.isAtEnd {
            guard let length = data.readU8() else { throw WireError(.badLength, "TLS ALPN list is truncated") }
            guard length > 0 else { throw WireError(.badLength, "TLS ALPN protocol name of length 0") }
            guard let name = data.readBytes(Int(length)) else {
                throw WireError(.badLength, "TLS ALPN protocol name length \(length) exceeds its list")
            }
            names.append(String(decoding: name, as: UTF8.self))
        }
        return names
    }

    /// RFC 8446 §4.2.1: `ProtocolVersion versions<2..254>` in a ClientHello.
    private static func parseSupportedVersions(_ data: inout ByteReader) throws(WireError) -> [UInt16] {
        guard let length = data.readU8(), Int(length) == data.remaining, length >= 2, length % 2 == 0 else {
            throw WireError(.badLength, "TLS supported_versions length does not match its extension or is odd")
        }
        var versions: [UInt16] = []
        while let version = data.readU16() { versions.append(version) }
        return versions
    }
}
