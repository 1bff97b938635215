/// DATA_CHANNEL_ACK ([RFC 8832 §5.2](https://www.rfc-editor.org/rfc/rfc8832#section-5.2)).
///
/// ```
///  0 1 2 3 4 5 6 7
/// +-+-+-+-+-+-+-+-+
/// |  Message Type |
/// +-+-+-+-+-+-+-+-+
/// ```
/// Message Type is 0x02; the message has no other field. pion (v3) pads its ACK to 4 bytes
/// (`02 00 00 00`), so bytes after the type are ignored.
enum DCEPAck {
    static let messageType: UInt8 = 0x02

    static func encode() -> [UInt8] { [messageType] }

    static func decode(_ bytes: [UInt8]) throws(DCEPDecodingError) {
        guard let first = bytes.first else { throw .truncated(needed: 1, available: 0) }
        guard first == messageType else { throw .unknownMessageType(first) }
    }
}
