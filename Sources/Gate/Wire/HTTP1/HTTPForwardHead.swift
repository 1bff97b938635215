/// How `HTTPRequestHead.forwardHead(_:)` rewrites a head for the upstream.
public struct HTTPForwardOptions: Hashable, Sendable {
    /// Keep `Upgrade` (and send `Connection: Upgrade`) so a 101 response can switch the
    /// connection to a tunnel (WebSocket). When false, `Upgrade` is removed like any other
    /// hop-by-hop field and the upstream answers the plain request.
    public var keepUpgrade: Bool
    /// Add `Connection: close`: the proxy will not reuse the upstream connection.
    public var close: Bool
    /// Fields appended after the client's (`Via`, `Forwarded`, …).
    public var extraHeaders: [HTTPField]
    /// Remove `Expect`: the proxy answers `100-continue` itself (see
    /// `HTTPRequestHead.expectsContinue`), so the upstream must not wait for it either.
    public var answersExpect: Bool

    public init(keepUpgrade: Bool = false, close: Bool = false, extraHeaders: [HTTPField] = [], answersExpect: Bool = false) {
        self.keepUpgrade = keepUpgrade
        self.close = close
        self.extraHeaders = extraHeaders
        self.answersExpect = answersExpect
    }
}

extension HTTPRequestHead {
    /// Fields that describe one connection, never forwarded (RFC 9110 §7.6.1), plus the
    /// de-facto `Proxy-Connection` and the proxy's own credentials. `Trailer` is forwarded: it
    /// announces end to end the trailer fields that a chunked body relayed as is carries
    /// (RFC 9110 §6.6.2).
    static let hopByHopFields: Set<String> = [
        "connection", "keep-alive", "proxy-connection", "proxy-authorization", "proxy-authenticate",
        "te", "upgrade",
    ]

    /// Fields that stay even when `Connection` names them: removing them would change the body
    /// framing or the routing the proxy already decided on (a request-smuggling lever).
    static let protectedFields: Set<String> = ["host", "content-length", "transfer-encoding"]

    /// The head to send upstream (RFC 9110 §7.6, RFC 9112 §3.2.2):
    /// - request-target in origin-form (`/path?query`) for an absolute-form request, and Host
    ///   set to the URI's authority (replacing any Host the client sent);
    /// - hop-by-hop fields removed: Connection, Keep-Alive, Proxy-Connection,
    ///   Proxy-Authorization, Proxy-Authenticate, TE, Upgrade (unless
    ///   `options.keepUpgrade`), and every field named in Connection — except Host,
    ///   Content-Length and Transfer-Encoding, which stay because the body is forwarded with
    ///   its framing unchanged;
    /// - the client's HTTP version, so the response framing suits the client it is relayed to;
    /// - `Connection: Upgrade` / `Connection: close` as the options ask, then `extraHeaders`.
    public func forwardHead(_ options: HTTPForwardOptions = HTTPForwardOptions()) throws(WireError) -> [UInt8] {
        var requestTarget = target
        var hostOverride: String?
        if case .absolute(let destination, let originForm) = try proxyTarget() {
            requestTarget = originForm
            hostOverride = destination.port == 80 ? bracketed(destination.host) : destination.description
        }
        var drop = Self.hopByHopFields.union(Set(tokens("connection")).subtracting(Self.protectedFields))
        let upgrading = options.keepUpgrade && !values("upgrade").isEmpty
        if upgrading { drop.remove("upgrade") }
        if options.answersExpect { drop.insert("expect") }

        var out: [UInt8] = []
        out.reserveCapacity(256 + headers.reduce(0) { $0 + $1.name.utf8.count + $1.value.utf8.count + 4 })
        func line(_ parts: String...) {
            for part in parts { out += part.utf8 }
            out += [UInt8(ascii: "\r"), UInt8(ascii: "\n")]
        }
        line(method, " ", requestTarget, " ", version.description)
        var wroteHost = false
        if let hostOverride, values("host").isEmpty {
            line("Host: ", hostOverride)
            wroteHost = true
        }
        for field in headers {
            let name = field.name.lowercased()
            if drop.contains(name) { continue }
            if name == "host", let hostOverride {
                guard !wroteHost else { continue }
                line("Host: ", hostOverride)
                wroteHost = true
                continue
            }
            line(field.name, ": ", field.value)
        }
        if upgrading {
            line("Connection: Upgrade")
        } else if options.close {
            line("Connection: close")
        }
        for field in options.extraHeaders {
            line(field.name, ": ", field.value)
        }
        line()
        return out
    }
}

private func bracketed(_ host: String) -> String {
    host.contains(":") ? "[\(host)]" : host
}
