#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Small HTTP/1.1 responses a proxy writes itself (RFC 9112 §4): errors and the CONNECT
/// tunnel confirmation.
public enum HTTPResponseWriter {
    /// `HTTP/1.1 200 Connection established` with an empty header section: after it the
    /// connection is a tunnel (RFC 9110 §9.3.6).
    public static func connectEstablished() -> [UInt8] {
        Array("HTTP/1.1 200 Connection established\r\n\r\n".utf8)
    }

    /// An error response that closes the connection:
    ///
    /// ```
    /// HTTP/1.1 502 Bad Gateway
    /// Content-Type: text/plain; charset=utf-8
    /// Content-Length: 38
    /// Connection: close
    ///
    /// connect to 192.0.2.1:80: connection refused
    /// ```
    /// `message` is the body (a line saying why); `headers` go before Content-Type
    /// (for example `Proxy-Authenticate` with 407).
    public static func error(status: Int, message: String, headers: [HTTPField] = []) -> [UInt8] {
        let body = message.hasSuffix("\n") ? message : message + "\n"
        var out = "HTTP/1.1 \(status) \(reasonPhrase(status))\r\n"
        for field in headers { out += "\(field.name): \(field.value)\r\n" }
        out += "Content-Type: text/plain; charset=utf-8\r\n"
        out += "Content-Length: \(body.utf8.count)\r\n"
        out += "Connection: close\r\n\r\n"
        out += body
        return Array(out.utf8)
    }

    /// The error response for a request the parser or `proxyTarget()` rejected.
    public static func error(_ error: WireError) -> [UInt8] {
        self.error(status: error.httpStatus, message: error.message)
    }

    /// The status for a failed dial with this `errno`: ETIMEDOUT → 504 Gateway Timeout,
    /// EACCES/EPERM → 403 Forbidden, anything else (refused, unreachable, reset) → 502 Bad Gateway.
    public static func status(errno code: Int32) -> Int {
        switch code {
        case ETIMEDOUT: return 504
        case EACCES, EPERM: return 403
        default: return 502
        }
    }

    /// The RFC 9110 §15 reason phrase, "Unknown" for codes not listed.
    public static func reasonPhrase(_ status: Int) -> String {
        switch status {
        case 200: return "OK"
        case 400: return "Bad Request"
        case 403: return "Forbidden"
        case 404: return "Not Found"
        case 405: return "Method Not Allowed"
        case 407: return "Proxy Authentication Required"
        case 408: return "Request Timeout"
        case 411: return "Length Required"
        case 413: return "Content Too Large"
        case 414: return "URI Too Long"
        case 421: return "Misdirected Request"
        case 431: return "Request Header Fields Too Large"
        case 500: return "Internal Server Error"
        case 501: return "Not Implemented"
        case 502: return "Bad Gateway"
        case 503: return "Service Unavailable"
        case 504: return "Gateway Timeout"
        case 505: return "HTTP Version Not Supported"
        default: return "Unknown"
        }
    }
}
