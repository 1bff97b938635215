import Foundation

/// base64url (RFC 4648 §5) as Web Push uses it: unpadded on output, padding optional on input.
public enum Base64URL {
    /// Encodes without padding.
    public static func encode<Bytes: Sequence>(_ bytes: Bytes) -> String where Bytes.Element == UInt8 {
        var text = Data(bytes).base64EncodedString()
        text = text.replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
        while text.last == "=" { text.removeLast() }
        return text
    }

    /// Decodes base64url (also accepts standard base64 and padding, as browsers and pywebpush emit both).
    /// - Throws: `WebPushError.badBase64` naming `what` when the text is not base64.
    public static func decode(_ text: some StringProtocol, what: String = "value") throws -> [UInt8] {
        var s = text.trimmingCharacters(in: .whitespaces)
            .replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while s.last == "=" { s.removeLast() }
        if s.count % 4 == 1 { throw WebPushError(.badBase64, "\(what) is not base64url (length \(text.count))") }
        s += String(repeating: "=", count: (4 - s.count % 4) % 4)
        guard let data = Data(base64Encoded: s) else {
            throw WebPushError(.badBase64, "\(what) is not base64url")
        }
        return Array(data)
    }
}
