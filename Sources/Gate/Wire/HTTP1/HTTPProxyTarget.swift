/// Where a proxied HTTP request goes, from its request-target (RFC 9112 §3.2):
/// <https://www.rfc-editor.org/rfc/rfc9112#section-3.2>
public enum HTTPProxyTarget: Hashable, Sendable {
    /// `CONNECT host:port` (authority-form, RFC 9110 §9.3.6): open a tunnel.
    case connect(Destination)
    /// `http://host[:port]/path?query` (absolute-form): forward to `Destination`
    /// with `originForm` (`/path?query`) as the request-target.
    case absolute(Destination, originForm: String)
    /// `/path?query` (origin-form) or `*` (asterisk-form, OPTIONS only); the destination comes
    /// from the Host header (port 80 by default) and is nil when there is none (HTTP/1.0).
    case origin(Destination?, path: String)
}

extension HTTPRequestHead {
    /// Classifies the request-target for a forward proxy.
    ///
    /// Errors (all status 400): CONNECT with anything but `host:port`, a non-CONNECT request
    /// in authority-form, a scheme other than `http` (an `https://` URI must use CONNECT),
    /// userinfo (`user@host`) or a fragment in the URI, a malformed host or a port outside
    /// 1…65535, `*` with a method other than OPTIONS.
    public func proxyTarget() throws(WireError) -> HTTPProxyTarget {
        if method == "CONNECT" {
            return .connect(try parseAuthority(target, defaultPort: nil, what: "CONNECT target"))
        }
        if target == "*" {
            guard method == "OPTIONS" else {
                throw WireError(.badTarget, "request-target * is only allowed with OPTIONS, not \(method)")
            }
            return .origin(try hostDestination(), path: "*")
        }
        if target.hasPrefix("/") {
            return .origin(try hostDestination(), path: target)
        }
        guard let colon = target.firstIndex(of: ":"), target[target.index(after: colon)...].hasPrefix("//") else {
            throw WireError(.badTarget, "request-target \"\(target)\" is neither a path, an absolute URI nor * (authority-form is for CONNECT only)")
        }
        let scheme = target[..<colon].lowercased()
        guard scheme == "http" else {
            throw WireError(.badTarget, "URI scheme \(scheme) not supported by the HTTP proxy (only http; use CONNECT for https)")
        }
        if target.contains("#") {
            throw WireError(.badTarget, "request-target \"\(target)\" contains a fragment")
        }
        let rest = target[target.index(colon, offsetBy: 3)...]
        let authorityEnd = rest.firstIndex { $0 == "/" || $0 == "?" } ?? rest.endIndex
        let authority = String(rest[..<authorityEnd])
        if authority.contains("@") {
            throw WireError(.badTarget, "URI authority \"\(authority)\" contains userinfo")
        }
        let destination = try parseAuthority(authority, defaultPort: 80, what: "URI authority")
        let tail = rest[authorityEnd...]
        let originForm = tail.hasPrefix("/") ? String(tail) : "/" + tail
        return .absolute(destination, originForm: originForm)
    }

    /// The destination named by the Host header, or nil without one (HTTP/1.0).
    private func hostDestination() throws(WireError) -> Destination? {
        guard let host = values("host").first, !host.isEmpty else { return nil }
        return try parseAuthority(host, defaultPort: 80, what: "Host header")
    }
}

/// Parses `host[:port]` (RFC 3986 authority without userinfo; IPv6 in brackets). Without
/// `defaultPort` the port is required.
func parseAuthority(_ text: String, defaultPort: UInt16?, what: String) throws(WireError) -> Destination {
    let host: Substring
    let portText: Substring?
    if text.hasPrefix("[") {
        guard let close = text.firstIndex(of: "]") else {
            throw WireError(.badTarget, "\(what) \"\(text)\" has an unterminated IPv6 literal")
        }
        host = text[text.index(after: text.startIndex)..<close]
        let after = text[text.index(after: close)...]
        if after.isEmpty {
            portText = nil
        } else if after.hasPrefix(":") {
            portText = after.dropFirst()
        } else {
            throw WireError(.badTarget, "\(what) \"\(text)\" has \"\(after)\" after the IPv6 literal")
        }
        guard parseIPv6(String(host)) != nil else {
            throw WireError(.badTarget, "\(what) \"\(text)\" holds an invalid IPv6 address")
        }
    } else {
        if let colon = text.lastIndex(of: ":") {
            host = text[..<colon]
            portText = text[text.index(after: colon)...]
        } else {
            host = text[...]
            portText = nil
        }
        guard !host.isEmpty else { throw WireError(.badTarget, "\(what) \"\(text)\" has an empty host") }
        if let bad = host.unicodeScalars.first(where: { !isRegNameChar($0) }) {
            throw WireError(.badTarget, "\(what) \"\(text)\" has character \"\(bad)\" in its host")
        }
    }
    let port: UInt16
    if let portText, !portText.isEmpty {
        guard portText.utf8.count <= 5, portText.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }),
            let value = Int(portText), value > 0, value <= 65535
        else {
            throw WireError(.badTarget, "\(what) \"\(text)\" has port \"\(portText)\", expected 1 to 65535")
        }
        port = UInt16(value)
    } else if let defaultPort {
        port = defaultPort
    } else {
        throw WireError(.badTarget, "\(what) \"\(text)\" has no port (expected host:port)")
    }
    return Destination(host: String(host), port: port)
}

/// RFC 3986 reg-name characters (unreserved, pct-encoded, sub-delims); also covers IPv4.
private func isRegNameChar(_ scalar: Unicode.Scalar) -> Bool {
    switch scalar {
    case "a"..."z", "A"..."Z", "0"..."9", "-", ".", "_", "~", "%", "!", "$", "&", "'", "(", ")", "*", "+", ",", ";", "=":
        return true
    default:
        return false
    }
}
