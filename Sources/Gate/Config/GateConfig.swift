import Foundation

/// The node's gate configuration: a JSON file compatible with the original ugate's `ugate.json`
/// where it makes sense (`basePort`, `name`, `listeners` keyed `":P"`, `"-:P"`, `"udp://:P"` with
/// `forwardTo`/`proto`, `hosts`). Every field has a default, so `{}` (or no file) is a working
/// node. Unknown fields are rejected with a message naming the field.
public struct GateConfig: Codable, Sendable, Equatable {
    /// Listeners use `basePort + offset`: +0 admin, +1 REDIRECT outbound, +2 HTTP proxy,
    /// +5 SOCKS5, +6 REDIRECT inbound and UDP TPROXY.
    public var basePort: Int = 15000
    /// The node's name (logs and the status page).
    public var name: String?
    /// Address the default and `":P"` listeners bind (loopback unless changed).
    public var bind: String = "127.0.0.1"
    /// Start the base-port listeners (admin, REDIRECT, HTTP proxy, SOCKS5).
    public var defaultListeners: Bool = true
    /// Default forwarding path for TCP streams; per listener override with `forwarder`.
    public var forwarder: ForwardMode = .copy
    /// Seconds without bytes in either direction before a stream is closed (0: never).
    public var idleTimeout: Double = 900
    /// Seconds allowed for a direct upstream connect.
    public var connectTimeout: Double = 10
    /// Seconds allowed for a client's SOCKS5/HTTP handshake.
    public var handshakeTimeout: Double = 10
    /// Bounded peek of sniffing listeners: at most this many bytes …
    public var sniffBytes: Int = 16384
    /// … and this many seconds (server-first protocols send nothing; they are forwarded unsniffed).
    public var sniffTimeout: Double = 0.3
    /// Seconds without datagrams before a UDP flow's NAT entry expires.
    public var udpIdleTimeout: Double = 60
    /// Event loop threads for the data path (0: one per core).
    public var loops: Int = 0
    /// Copy buffer per active direction, bytes (pooled, not held while idle). 4 MiB measured
    /// better than 1 MiB for one stream on loopback here (scripts/bench-gate).
    public var bufferSize: Int = 4 << 20
    /// Splice pipe size per active direction, bytes (pooled).
    public var pipeSize: Int = 1 << 20
    /// SOCKS5 username/password (RFC 1929) accounts; empty means no authentication.
    public var socksUsers: [String: String] = [:]
    /// Extra listeners, keyed `":P"` (bind address), `"-:P"` (all interfaces), `"host:P"`, `"udp://:P"`.
    public var listeners: [String: ListenerConfig] = [:]
    /// Named hosts: a route or `forwardTo` naming one goes to its `addr`.
    public var hosts: [String: HostConfig] = [:]
    /// Ordered route rules; the first that matches wins, else direct.
    public var routes: [RouteConfig] = []
    /// The HTTPRoute gateway (manifest folder, listeners, TLS); nil: none.
    public var httproute: HTTPRouteConfig?

    public init() {}

    /// Parses a config file's bytes; errors name the offending field.
    public static func decode(_ data: Data) throws -> GateConfig {
        do {
            let config = try JSONDecoder().decode(GateConfig.self, from: data)
            try config.validate()
            return config
        } catch let error as GateError {
            throw error
        } catch let DecodingError.typeMismatch(_, ctx), let DecodingError.valueNotFound(_, ctx),
            let DecodingError.dataCorrupted(ctx)
        {
            throw GateError(.config, "field \(ConfigKey.path(ctx.codingPath)): \(ctx.debugDescription)")
        } catch let DecodingError.keyNotFound(key, ctx) {
            throw GateError(.config, "missing field \(ConfigKey.path(ctx.codingPath + [key]))")
        }
    }

    /// Checks values that JSON types cannot: ports, modes, route targets.
    public func validate() throws {
        guard (0...65528).contains(basePort) else { throw GateError(.config, "field basePort: \(basePort) is not a port (0…65528; 0 = ephemeral ports)") }
        guard SocketAddress.isLiteral(bind) else { throw GateError(.config, "field bind: \(bind) is not an IP address") }
        for (key, listener) in listeners {
            if try ListenerAddress(key: key, bind: bind).udp, listener.proto != .udp, listener.proto != .tproxy {
                throw GateError(.config, "field listeners[\"\(key)\"].proto: \(listener.proto.rawValue) is not a UDP protocol (udp or tproxy)")
            }
            if let to = listener.forwardTo, hosts[to] == nil, (try? Destination(parsing: to)) == nil {
                throw GateError(.config, "field listeners[\"\(key)\"].forwardTo: \(to) is neither host:port nor a name in hosts")
            }
            if listener.proto == .tcp || listener.proto == .udp, listener.forwardTo == nil {
                throw GateError(.config, "field listeners[\"\(key)\"].forwardTo: required for proto \(listener.proto.rawValue)")
            }
        }
        for (name, host) in hosts where (try? Destination(parsing: host.addr)) == nil {
            throw GateError(.config, "field hosts[\"\(name)\"].addr: \(host.addr) is not host:port")
        }
        for (i, route) in routes.enumerated() where route.host == nil && route.listener == nil && route.dest == nil {
            throw GateError(.config, "field routes[\(i)]: needs at least one of host, listener, dest")
        }
    }

    private enum CodingKeys: String, CodingKey, CaseIterable {
        case basePort, name, bind, defaultListeners, forwarder, idleTimeout, connectTimeout, handshakeTimeout
        case sniffBytes, sniffTimeout, udpIdleTimeout, loops, bufferSize, pipeSize, socksUsers, listeners, hosts, routes
        case httproute
    }

    public init(from decoder: any Decoder) throws {
        try ConfigKey.rejectUnknown(decoder, CodingKeys.allCases.map(\.rawValue))
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = GateConfig()
        basePort = try c.decodeIfPresent(Int.self, forKey: .basePort) ?? d.basePort
        name = try c.decodeIfPresent(String.self, forKey: .name)
        bind = try c.decodeIfPresent(String.self, forKey: .bind) ?? d.bind
        defaultListeners = try c.decodeIfPresent(Bool.self, forKey: .defaultListeners) ?? d.defaultListeners
        forwarder = try c.decodeIfPresent(ForwardMode.self, forKey: .forwarder) ?? d.forwarder
        idleTimeout = try c.decodeIfPresent(Double.self, forKey: .idleTimeout) ?? d.idleTimeout
        connectTimeout = try c.decodeIfPresent(Double.self, forKey: .connectTimeout) ?? d.connectTimeout
        handshakeTimeout = try c.decodeIfPresent(Double.self, forKey: .handshakeTimeout) ?? d.handshakeTimeout
        sniffBytes = try c.decodeIfPresent(Int.self, forKey: .sniffBytes) ?? d.sniffBytes
        sniffTimeout = try c.decodeIfPresent(Double.self, forKey: .sniffTimeout) ?? d.sniffTimeout
        udpIdleTimeout = try c.decodeIfPresent(Double.self, forKey: .udpIdleTimeout) ?? d.udpIdleTimeout
        loops = try c.decodeIfPresent(Int.self, forKey: .loops) ?? d.loops
        bufferSize = try c.decodeIfPresent(Int.self, forKey: .bufferSize) ?? d.bufferSize
        pipeSize = try c.decodeIfPresent(Int.self, forKey: .pipeSize) ?? d.pipeSize
        socksUsers = try c.decodeIfPresent([String: String].self, forKey: .socksUsers) ?? d.socksUsers
        listeners = try c.decodeIfPresent([String: ListenerConfig].self, forKey: .listeners) ?? d.listeners
        hosts = try c.decodeIfPresent([String: HostConfig].self, forKey: .hosts) ?? d.hosts
        routes = try c.decodeIfPresent([RouteConfig].self, forKey: .routes) ?? d.routes
        httproute = try c.decodeIfPresent(HTTPRouteConfig.self, forKey: .httproute)
    }
}

/// What a listener speaks.
public enum ListenerProto: String, Codable, Sendable, CaseIterable {
    /// Plain port-forward to `forwardTo`.
    case tcp
    /// SOCKS5 (RFC 1928) proxy.
    case socks5
    /// HTTP proxy: CONNECT and absolute-URI requests.
    case http
    /// iptables REDIRECT capture: the destination is `SO_ORIGINAL_DST`.
    case redirect
    /// TPROXY capture (`IP_TRANSPARENT`): the destination is the socket's local address.
    case tproxy
    /// UDP forward to `forwardTo` (`udp://:P` keys), with per-flow NAT.
    case udp
}

/// One entry of `listeners`.
public struct ListenerConfig: Codable, Sendable, Equatable {
    /// `host:port` or a name from `hosts`; required for `tcp` and `udp`.
    public var forwardTo: String?
    /// Defaults to `tcp` (`udp` for `udp://` keys).
    public var proto: ListenerProto
    /// Override of the node's `forwarder` for this listener.
    public var forwarder: ForwardMode?
    /// Peek at the first bytes for TLS SNI / HTTP Host before routing (default: on for REDIRECT/TPROXY).
    public var sniff: Bool?

    public init(forwardTo: String? = nil, proto: ListenerProto = .tcp, forwarder: ForwardMode? = nil, sniff: Bool? = nil) {
        self.forwardTo = forwardTo
        self.proto = proto
        self.forwarder = forwarder
        self.sniff = sniff
    }

    private enum CodingKeys: String, CodingKey, CaseIterable { case forwardTo, proto, forwarder, sniff }

    public init(from decoder: any Decoder) throws {
        try ConfigKey.rejectUnknown(decoder, CodingKeys.allCases.map(\.rawValue))
        let c = try decoder.container(keyedBy: CodingKeys.self)
        forwardTo = try c.decodeIfPresent(String.self, forKey: .forwardTo)
        let isUDPKey = decoder.codingPath.last?.stringValue.hasPrefix("udp://") ?? false
        proto = try c.decodeIfPresent(ListenerProto.self, forKey: .proto) ?? (isUDPKey ? .udp : .tcp)
        forwarder = try c.decodeIfPresent(ForwardMode.self, forKey: .forwarder)
        sniff = try c.decodeIfPresent(Bool.self, forKey: .sniff)
    }
}

/// One entry of `hosts`.
public struct HostConfig: Codable, Sendable, Equatable {
    /// `host:port` where streams routed to this name go.
    public var addr: String

    public init(addr: String) { self.addr = addr }

    private enum CodingKeys: String, CodingKey, CaseIterable { case addr }

    public init(from decoder: any Decoder) throws {
        try ConfigKey.rejectUnknown(decoder, CodingKeys.allCases.map(\.rawValue))
        addr = try decoder.container(keyedBy: CodingKeys.self).decode(String.self, forKey: .addr)
    }
}

/// One route rule: every field given must match; `to` is `direct`, `deny` (HTTP 403, SOCKS5 0x02),
/// a `hosts` name or an upstream name.
public struct RouteConfig: Codable, Sendable, Equatable {
    /// Listener name (its key, or `socks5`, `http`, `redirect-out`, `redirect-in`, `tproxy`).
    public var listener: String?
    /// SNI / Host (or the destination host when nothing was sniffed): exact, or `*.example.com`.
    public var host: String?
    /// Original destination, `host:port` or `host`.
    public var dest: String?
    public var to: String

    public init(listener: String? = nil, host: String? = nil, dest: String? = nil, to: String) {
        self.listener = listener
        self.host = host
        self.dest = dest
        self.to = to
    }

    private enum CodingKeys: String, CodingKey, CaseIterable { case listener, host, dest, to }

    public init(from decoder: any Decoder) throws {
        try ConfigKey.rejectUnknown(decoder, CodingKeys.allCases.map(\.rawValue))
        let c = try decoder.container(keyedBy: CodingKeys.self)
        listener = try c.decodeIfPresent(String.self, forKey: .listener)
        host = try c.decodeIfPresent(String.self, forKey: .host)
        dest = try c.decodeIfPresent(String.self, forKey: .dest)
        to = try c.decode(String.self, forKey: .to)
    }
}

/// Any JSON key, for rejecting unknown fields with their full path (also used by the config
/// sections of other modules, such as PeerMesh's `mesh`).
public struct ConfigKey: CodingKey {
    public var stringValue: String
    public var intValue: Int?
    public init(stringValue: String) { self.stringValue = stringValue }
    public init?(intValue: Int) {
        self.stringValue = String(intValue)
        self.intValue = intValue
    }

    /// Throws `unknown field <path> (known: …)` for any key of the decoder's object not in `known`.
    public static func rejectUnknown(_ decoder: any Decoder, _ known: [String]) throws {
        let c = try decoder.container(keyedBy: ConfigKey.self)
        for key in c.allKeys where !known.contains(key.stringValue) {
            throw GateError(
                .config, "unknown field \(path(decoder.codingPath + [key])) (known: \(known.joined(separator: ", ")))")
        }
    }

    /// A coding path as `a.b[0]["key:with:colons"]`.
    public static func path(_ keys: [any CodingKey]) -> String {
        var out = ""
        for key in keys {
            if let i = key.intValue {
                out += "[\(i)]"
            } else if key.stringValue.contains(":") || key.stringValue.contains("/") || key.stringValue.contains(".") {
                out += "[\"\(key.stringValue)\"]"
            } else {
                out += out.isEmpty ? key.stringValue : ".\(key.stringValue)"
            }
        }
        return out.isEmpty ? "(top level)" : out
    }
}

/// A parsed listener key: `":P"`, `"-:P"`, `"host:P"`, `"udp://…"`.
public struct ListenerAddress: Sendable, Equatable {
    public var address: SocketAddress
    public var udp: Bool

    public init(key: String, bind: String) throws {
        var rest = Substring(key)
        udp = rest.hasPrefix("udp://")
        if udp { rest = rest.dropFirst(6) }
        if rest.hasPrefix("tcp://") { rest = rest.dropFirst(6) }
        var host = bind
        if rest.hasPrefix("-:") {
            host = "::"
            rest = rest.dropFirst(1)
        }
        guard let colon = rest.lastIndex(of: ":"), let port = UInt16(rest[rest.index(after: colon)...]) else {
            throw GateError(.config, "field listeners[\"\(key)\"]: key must look like :PORT, -:PORT, HOST:PORT or udp://:PORT")
        }
        let explicit = rest[..<colon].trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
        if !explicit.isEmpty { host = explicit }
        do {
            address = try SocketAddress(host: host, port: port)
        } catch {
            throw GateError(.config, "field listeners[\"\(key)\"]: \(host) is not an IP address")
        }
    }
}

extension Destination {
    /// Parses `host:port` or `[v6]:port`.
    public init(parsing text: String) throws {
        guard let colon = text.lastIndex(of: ":"), let port = UInt16(text[text.index(after: colon)...]) else {
            throw GateError(.config, "\(text) is not host:port")
        }
        var host = String(text[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty else { throw GateError(.config, "\(text) has no host") }
        self.init(host: host, port: port)
    }
}
