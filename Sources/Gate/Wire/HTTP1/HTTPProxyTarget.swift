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
        // Byte-level from here: this runs once per proxied request.
        let bytes = Array(target.utf8)
        guard let colon = bytes.firstIndex(of: UInt8(ascii: ":")), bytes.count >= colon + 3,
            bytes[colon + 1] == UInt8(ascii: "/"), bytes[colon + 2] == UInt8(ascii: "/")
        else {
            throw WireError(.badTarget, "request-target \"\(target)\" is neither a path, an absolute URI nor * (authority-form is for CONNECT only)")
        }
        let scheme = String(decoding: bytes[..<colon], as: UTF8.self)
        guard scheme.equalsIgnoringASCIICase("http") else {
            throw WireError(.badTarget, "URI scheme \(scheme.lowercased()) not supported by the HTTP proxy (only http; use CONNECT for https)")
        }
        if bytes.contains(UInt8(ascii: "#")) {
            throw WireError(.badTarget, "request-target \"\(target)\" contains a fragment")
        }
        let authorityStart = colon + 3
        let authorityEnd = bytes[authorityStart...].firstIndex { $0 == UInt8(ascii: "/") || $0 == UInt8(ascii: "?") } ?? bytes.count
        let authority = String(decoding: bytes[authorityStart..<authorityEnd], as: UTF8.self)
        if bytes[authorityStart..<authorityEnd].contains(UInt8(ascii: "@")) {
            throw WireError(.badTarget, "URI authority \"\(authority)\" contains userinfo")
        }
        let destination = try parseAuthority(authority, defaultPort: 80, what: "URI authority")
        let tail = String(decoding: bytes[authorityEnd...], as: UTF8.self)
        let originForm = tail.hasPrefix("/") ? tail : "/" + tail
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
    let bytes = Array(text.utf8)
    let host: ArraySlice<UInt8>
    let portBytes: ArraySlice<UInt8>?
    if bytes.first == UInt8(ascii: "[") {
        guard let close = bytes.firstIndex(of: UInt8(ascii: "]")) else {
            throw WireError(.badTarget, "\(what) \"\(text)\" has an unterminated IPv6 literal")
        }
        host = bytes[1..<close]
        let after = bytes[(close + 1)...]
        if after.isEmpty {
            portBytes = nil
        } else if after.first == UInt8(ascii: ":") {
            portBytes = after.dropFirst()
        } else {
            throw WireError(.badTarget, "\(what) \"\(text)\" has \"\(String(decoding: after, as: UTF8.self))\" after the IPv6 literal")
        }
        guard parseIPv6(String(decoding: host, as: UTF8.self)) != nil else {
            throw WireError(.badTarget, "\(what) \"\(text)\" holds an invalid IPv6 address")
        }
    } else {
        if let colon = bytes.lastIndex(of: UInt8(ascii: ":")) {
            host = bytes[..<colon]
            portBytes = bytes[(colon + 1)...]
        } else {
            host = bytes[...]
            portBytes = nil
        }
        guard !host.isEmpty else { throw WireError(.badTarget, "\(what) \"\(text)\" has an empty host") }
        if let bad = host.first(where: { !isRegNameByte($0) }) {
            throw WireError(.badTarget, "\(what) \"\(text)\" has character \"\(Unicode.Scalar(bad))\" in its host")
        }
    }
    let port: UInt16
    if let portBytes, !portBytes.isEmpty {
        var value = 0
        for byte in portBytes.prefix(6) {
            guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") else { value = -1; break }
            value = value * 10 + Int(byte - UInt8(ascii: "0"))
        }
        guard portBytes.count <= 5, value > 0, value <= 65535 else {
            throw WireError(.badTarget, "\(what) \"\(text)\" has port \"\(String(decoding: portBytes, as: UTF8.self))\", expected 1 to 65535")
        }
        port = UInt16(value)
    } else if let defaultPort {
        port = defaultPort
    } else {
        throw WireError(.badTarget, "\(what) \"\(text)\" has no port (expected host:port)")
    }
    return Destination(host: String(decoding: host, as: UTF8.self), port: port)
}

/// RFC 3986 reg-name characters (unreserved, pct-encoded, sub-delims); also covers IPv4.
private func isRegNameByte(_ byte: UInt8) -> Bool {
    switch byte {
    case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"):
        return true
    case UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"), UInt8(ascii: "%"), UInt8(ascii: "!"),
        UInt8(ascii: "$"), UInt8(ascii: "&"), UInt8(ascii: "'"), UInt8(ascii: "("), UInt8(ascii: ")"), UInt8(ascii: "*"),
        UInt8(ascii: "+"), UInt8(ascii: ","), UInt8(ascii: ";"), UInt8(ascii: "="):
        return true
    default:
        return false
    }
}
