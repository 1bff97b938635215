/// What the first bytes of a captured stream are.
public enum SniffResult: Sendable {
    /// Not enough bytes to decide; read more (within the byte limit and the timeout).
    case needMore
    /// A TLS ClientHello (SNI, ALPN, versions).
    case tls(ClientHelloInfo)
    /// An HTTP/1 request head (method, target, Host, …).
    case http1(HTTPRequestHead)
    /// The HTTP/2 prior-knowledge preface (h2c).
    case http2Preface
    /// A SOCKS5 greeting.
    case socks5
    /// None of the above (including server-first protocols, where the client sends nothing:
    /// the caller's timeout ends the wait and it forwards without sniffed metadata).
    case unknown
    /// The bytes start like one of the protocols above but break its rules (a TLS record with
    /// a broken ClientHello, an HTTP request line followed by a bad header, a head or hello
    /// beyond `maxBytes`). A listener for that protocol answers with an error; a transparent
    /// capture may still forward the bytes unchanged, without metadata.
    case invalid(WireError)
}

extension SniffResult: Hashable {}

extension SniffResult {
    /// The protocol name for `StreamInfo.proto` and logs: "tls", "http/1.1" (or "http/1.0"),
    /// "h2", "socks5", "unknown"; nil while `.needMore`.
    public var protocolName: String? {
        switch self {
        case .needMore: return nil
        case .tls: return "tls"
        case .http1(let head): return head.version == .http1_0 ? "http/1.0" : "http/1.1"
        case .http2Preface: return "h2"
        case .socks5: return "socks5"
        case .unknown, .invalid: return "unknown"
        }
    }

    /// The name to route by: the TLS SNI, or the host of the HTTP/1 request (the URI's for an
    /// absolute-form or CONNECT request, else the Host header's), without port or brackets.
    public var serverName: String? {
        switch self {
        case .tls(let info): return info.serverName
        case .http1(let head):
            switch try? head.proxyTarget() {
            case .connect(let destination)?, .absolute(let destination, _)?: return destination.host
            case .origin(let destination, _)?: return destination?.host
            case nil: return nil
            }
        default: return nil
        }
    }

    /// The ALPN protocols a TLS client offered (empty otherwise).
    public var alpn: [String] {
        if case .tls(let info) = self { return info.alpn }
        return []
    }
}

/// Classifies the start of a stream, RFC 8446 §5.1 (TLS record), RFC 9112 §3 (HTTP/1
/// request line), RFC 9113 §3.4 (HTTP/2 preface), RFC 1928 §3 (SOCKS5 greeting).
///
/// The first byte decides which decoder looks further: 0x16 TLS handshake record, 0x05
/// SOCKS5, `P` the HTTP/2 preface (else HTTP/1, for POST, PUT, PATCH …), any other token
/// character (or CR/LF) an HTTP/1 method. Those sets are disjoint, so no protocol is
/// mistaken for another; a bad HTTP request line means "not HTTP" (`.unknown`), while a
/// good one followed by bad headers is `.invalid`.
///
/// The sniffer only looks: the caller keeps every byte it read and forwards them unchanged.
public enum Sniffer {
    /// Looks at the first `maxBytes` bytes of `prefix`.
    /// - Parameters:
    ///   - maxBytes: the peek bound. A ClientHello or HTTP head that is not complete within it
    ///     is `.invalid` (code `.tooLarge`, `.headTooLarge` or `.requestLineTooLong`).
    ///   - httpLimits: bounds for the HTTP/1 head (its byte limit is capped at `maxBytes`).
    public static func sniff(
        _ prefix: some Collection<UInt8>, maxBytes: Int = 16 * 1024,
        httpLimits: HTTPRequestHead.Limits = HTTPRequestHead.Limits()
    ) -> SniffResult {
        withContiguousBytes(prefix) { whole in
            let window = UnsafeBufferPointer(rebasing: whole[..<min(whole.count, max(maxBytes, 0))])
            guard let first = window.first else { return whole.isEmpty ? .needMore : .unknown }
            let full = window.count >= maxBytes

            switch first {
            case 0x16:
                if window.count >= 2 && window[1] != 3 { return .unknown }
                switch TLSClientHello.parse(window) {
                case .done(let info, _): return .tls(info)
                case .invalid(let error): return .invalid(error)
                case .needMore:
                    return full ? .invalid(WireError(.tooLarge, "TLS ClientHello not complete within the \(maxBytes)-byte sniff limit")) : .needMore
                }
            case 0x05:
                switch SOCKS5Greeting.parse(window) {
                case .done: return .socks5
                case .invalid(let error): return .invalid(error)
                case .needMore: return full ? .unknown : .needMore
                }
            default:
                break
            }

            if first == UInt8(ascii: "P") {
                switch HTTP2Preface.parse(window) {
                case .done: return .http2Preface
                case .needMore: return full ? .unknown : .needMore
                case .invalid: break
                }
            }

            guard isTokenChar(first) || first == UInt8(ascii: "\r") || first == UInt8(ascii: "\n") else { return .unknown }
            var limits = httpLimits
            limits.maxHeadBytes = min(limits.maxHeadBytes, max(maxBytes, 1))
            switch HTTPRequestHead.parse(window, limits: limits) {
            case .done(let head, _): return .http1(head)
            case .needMore: return full ? .unknown : .needMore
            case .invalid(let error):
                switch error.code {
                case .badRequestLine, .requestLineTooLong: return .unknown
                default: return .invalid(error)
                }
            }
        }
    }
}
