import CNice
import Glibc

/// STUN/TURN servers with their hosts resolved to IP literals (libnice wants literals).
struct ResolvedServers: Sendable {
    struct Relay: Sendable {
        var ip: String
        var port: UInt16
        var username: String
        var password: String
        var transport: ICEServerURL.Transport
    }

    var stun: (ip: String, port: UInt16)?
    var relays: [Relay] = []

    /// Parses every URL and resolves host names (blocking `getaddrinfo`).
    init(_ servers: [ICEServer]) throws {
        for server in servers {
            let url = try ICEServerURL(parsing: server.url)
            let ip = try Self.resolve(url.host)
            switch url.scheme {
            case .stun:
                if stun == nil { stun = (ip, url.port) }
            case .turn:
                guard let user = server.username, let pass = server.credential else {
                    throw ICEError(.invalidServerURL, "TURN server \(server.url) needs a username and credential")
                }
                relays.append(Relay(ip: ip, port: url.port, username: user, password: pass, transport: url.transport))
            }
        }
    }

    static func resolve(_ host: String) throws -> String {
        if IPLiteral.isIPv4(host) || IPLiteral.isIPv6(host) { return host }
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_DGRAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        let rc = getaddrinfo(host, nil, &hints, &list)
        guard rc == 0, let first = list else {
            throw ICEError(.resolutionFailed, "getaddrinfo(\(host)) failed: \(String(cString: gai_strerror(rc)))")
        }
        defer { freeaddrinfo(list) }
        var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN) + 1)
        switch first.pointee.ai_family {
        case AF_INET:
            var sin = first.pointee.ai_addr.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { $0.pointee }
            inet_ntop(AF_INET, &sin.sin_addr, &buffer, socklen_t(buffer.count))
        default:
            var sin6 = first.pointee.ai_addr.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { $0.pointee }
            inet_ntop(AF_INET6, &sin6.sin6_addr, &buffer, socklen_t(buffer.count))
        }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
