/// Reassembles the first handshake message from TLS records, RFC 8446 §5.1:
/// <https://www.rfc-editor.org/rfc/rfc8446#section-5.1>
///
/// ```
/// struct {                                   struct {
///     ContentType type;        // 22            HandshakeType msg_type;  // 1 client_hello
///     ProtocolVersion legacy_record_version;    uint24 length;
///     uint16 length;           // 1..2^14+256   ...body...
///     opaque fragment[length];              } Handshake;
/// } TLSPlaintext;
/// ```
///
/// A handshake message may be split over any number of records (and records over any number
/// of TCP segments); records must be handshake records until the message is complete (§5.1:
/// handshake messages are not interleaved with other record types).
enum TLSHandshakeReassembler {
    /// Record fragment bound checked here: 2^14 + 256, the TLSCiphertext limit (§5.2), so
    /// that no legal record is refused.
    static let maxRecordLength = 16384 + 256
    /// Largest first handshake message accepted (header included).
    static let maxHandshakeBytes = 64 * 1024

    struct Message {
        /// legacy_record_version of the first record.
        var recordVersion: UInt16
        /// The handshake message body (after type and length).
        var body: [UInt8]
        /// Record bytes up to the end of the record that completed the message.
        var consumed: Int
    }

    static func firstHandshakeMessage(_ buffer: UnsafeBufferPointer<UInt8>, expectType: UInt8) -> ParseResult<Message> {
        var handshake: [UInt8] = []
        var position = 0
        var recordVersion: UInt16?
        var recordIndex = 0
        while true {
            var header = ByteReader(UnsafeBufferPointer(rebasing: buffer[position...]))
            guard let contentType = header.readU8() else { return .needMore }
            guard contentType == 22 else {
                return .invalid(WireError(.notClientHello, "TLS record \(recordIndex) has content type \(contentType), expected handshake (22)"))
            }
            guard let versionMajor = header.readU8() else { return .needMore }
            guard versionMajor == 3 else {
                return .invalid(WireError(.unsupportedVersion, "TLS record \(recordIndex) version major \(versionMajor), expected 3"))
            }
            guard let versionMinor = header.readU8(), let length = header.readU16().map(Int.init) else { return .needMore }
            if recordVersion == nil { recordVersion = 0x0300 | UInt16(versionMinor) }
            guard length > 0 else {
                return .invalid(WireError(.badLength, "TLS record \(recordIndex) length 0 (empty handshake fragments are not allowed)"))
            }
            guard length <= maxRecordLength else {
                return .invalid(WireError(.tooLarge, "TLS record length \(length) exceeds 16384+256"))
            }
            let fragment = min(length, header.remaining)
            let start = position + 5
            handshake.append(contentsOf: UnsafeBufferPointer(rebasing: buffer[start..<start + fragment]))

            if handshake.count >= 1 && handshake[0] != expectType {
                return .invalid(WireError(.notClientHello, "TLS handshake message type \(handshake[0]), expected \(expectType) (client_hello)"))
            }
            var messageLength: Int?
            if handshake.count >= 4 {
                let bodyLength = Int(handshake[1]) << 16 | Int(handshake[2]) << 8 | Int(handshake[3])
                guard bodyLength + 4 <= maxHandshakeBytes else {
                    return .invalid(WireError(.tooLarge, "TLS ClientHello of \(bodyLength + 4) bytes exceeds the \(maxHandshakeBytes)-byte limit"))
                }
                messageLength = bodyLength + 4
            }
            guard fragment == length else { return .needMore }
            position = start + length
            recordIndex += 1
            if let messageLength, handshake.count >= messageLength {
                return .done(
                    Message(recordVersion: recordVersion ?? 0, body: Array(handshake[4..<messageLength]), consumed: position),
                    consumed: position)
            }
        }
    }
}
