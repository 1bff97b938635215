import Foundation
import Gate

/// base64url (RFC 4648 §5) as Web Push uses it: unpadded on output, padding optional on input.
/// The codec is the Gate's `Base64URLCoding`; this adds Web Push's leniency and its error.
public enum Base64URL {
    /// Encodes without padding.
    public static func encode<Bytes: Sequence>(_ bytes: Bytes) -> String where Bytes.Element == UInt8 {
        Base64URLCoding.encode(bytes)
    }

    /// Decodes base64url (also accepts standard base64, padding and surrounding spaces, as
    /// browsers and pywebpush emit them).
    /// - Throws: `WebPushError.badBase64` naming `what` when the text is not base64.
    public static func decode(_ text: some StringProtocol, what: String = "value") throws -> [UInt8] {
        do {
            return try Base64URLCoding.decode(text.trimmingCharacters(in: .whitespaces), standardAlphabet: true)
        } catch .length {
            throw WebPushError(.badBase64, "\(what) is not base64url (length \(text.count))")
        } catch {
            throw WebPushError(.badBase64, "\(what) is not base64url")
        }
    }
}
