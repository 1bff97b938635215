internal import COpenSSL

/// Drains OpenSSL's thread-local error stack into readable strings.
enum OpenSSLErrorStack {
    /// Returns every queued error (oldest first) and clears the stack.
    static func drain() -> [String] {
        var messages: [String] = []
        while true {
            let code = ERR_get_error()
            if code == 0 { break }
            var buffer = [CChar](repeating: 0, count: 256)
            ERR_error_string_n(code, &buffer, buffer.count)
            messages.append(String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
        }
        return messages
    }

    /// A ``DataChannelError`` naming the failed call and the drained error stack.
    static func error(_ call: String) -> DataChannelError {
        let stack = drain()
        return DataChannelError(.openssl, stack.isEmpty ? "\(call) failed" : "\(call) failed: \(stack.joined(separator: "; "))")
    }
}
