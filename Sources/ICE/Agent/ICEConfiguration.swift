/// A STUN or TURN server, as in WebRTC's `RTCIceServer`.
public struct ICEServer: Hashable, Sendable, Codable {
    /// `stun:host[:port]` or `turn:host[:port][?transport=udp|tcp]`. IPv6 hosts in brackets.
    public var url: String
    /// TURN username (long-term credential, RFC 8489 §9.2).
    public var username: String?
    /// TURN password.
    public var credential: String?

    /// Creates a server entry.
    public init(url: String, username: String? = nil, credential: String? = nil) {
        self.url = url
        self.username = username
        self.credential = credential
    }
}

/// Which candidates may be used (WebRTC `iceTransportPolicy`).
public enum ICETransportPolicy: String, Hashable, Sendable, Codable {
    /// Every candidate type.
    case all
    /// Only relayed candidates (libnice `force-relay`): the peer never learns our addresses.
    case relay
}

/// How the controlling agent nominates a pair (RFC 8445 §8.1.1; aggressive: RFC 5245 §8.1.1.2).
public enum ICENomination: String, Hashable, Sendable, Codable {
    /// Every check carries USE-CANDIDATE: the first pair that works is selected after one
    /// round trip (the peer may later prefer a higher-priority pair that also succeeds).
    /// Connects in ≈ 1 pacing tick on loopback (6 ms against 16 ms).
    case aggressive
    /// Checks first, then a second check with USE-CANDIDATE on the best valid pair
    /// (libnice `REGULAR_NOMINATION`): one more round and a few ticks later.
    case regular
}

/// Configuration of an ``ICEAgent``. Every field has a documented default.
public struct ICEConfiguration: Hashable, Sendable, Codable {
    /// STUN/TURN servers. Default: none (host candidates only). libnice uses one STUN server;
    /// the first `stun:` entry wins. Every `turn:` entry adds a relay.
    public var servers: [ICEServer] = []
    /// IP literals to gather host candidates on. Default empty: libnice discovers the
    /// machine's addresses, which never includes loopback — list `127.0.0.1` to use it.
    public var localAddresses: [String] = []
    /// Local port range for host candidates; nil (default) = any ephemeral port.
    public var portRange: ClosedRange<UInt16>?
    /// All candidates (default) or relay only.
    public var transportPolicy: ICETransportPolicy = .all
    /// Also gather ICE-TCP (RFC 6544) host candidates. Default false: UDP only.
    public var tcpCandidates: Bool = false
    /// Gather UDP candidates (libnice `ice-udp`). Default true; false with `tcpCandidates`
    /// gives an ICE-TCP-only agent.
    public var udpCandidates: Bool = true
    /// How long connectivity checks may run, from the moment they can start (local gathering
    /// started, remote credentials and a first remote candidate known) until a pair is
    /// connected, before the agent fails with ``ICEError/Code/timeout``. Default 10 s.
    public var connectTimeout: Duration = .seconds(10)
    /// Pacing of STUN transactions (RFC 8445 §14.2 "Ta"; libnice `stun-pacing-timer`).
    /// Default 5 ms, the RFC's floor: a node has a handful of candidates, and each check round
    /// waits for a tick (with regular nomination ≈ 3 Ta to connect on loopback: 16 ms at 5 ms,
    /// 61 ms at libnice's 20 ms; with aggressive nomination ≈ 1 Ta).
    public var checkPacing: Duration = .milliseconds(5)
    /// Nomination when controlling. Default ``ICENomination/aggressive``: a data-channel peer
    /// wants the first working pair now, and every stack tested here (Chromium, pion, aiortc,
    /// libdatachannel, libnice) accepts USE-CANDIDATE on any check as the controlled side.
    public var nomination: ICENomination = .aggressive
    /// Inbound silence after which a connected agent reports `.disconnected` (nil: never).
    /// libnice 0.1.21 has no state between ready and consent-lost failure, so silence on the
    /// data path is the early signal; an idle but healthy link also shows it and returns to
    /// `.connected`/`.completed` with the next datagram. Default 5 s.
    public var disconnectedAfter: Duration? = .seconds(5)
    /// Received datagrams buffered for a slow consumer before new ones are dropped. Default 4096.
    public var receiveQueueLimit: Int = 4096
    /// Datagrams queued by ``ICEAgent/send(_:)`` before it reports a full queue. Default 4096.
    public var sendQueueLimit: Int = 4096

    /// Creates a configuration with the defaults above.
    public init(
        servers: [ICEServer] = [], localAddresses: [String] = [], portRange: ClosedRange<UInt16>? = nil,
        transportPolicy: ICETransportPolicy = .all, tcpCandidates: Bool = false,
        connectTimeout: Duration = .seconds(10)
    ) {
        self.servers = servers
        self.localAddresses = localAddresses
        self.portRange = portRange
        self.transportPolicy = transportPolicy
        self.tcpCandidates = tcpCandidates
        self.connectTimeout = connectTimeout
    }
}

/// A parsed `stun:` / `turn:` URL (RFC 7064, RFC 7065).
///
/// ```
/// stunURI = "stun:" host [ ":" port ]
/// turnURI = "turn:" host [ ":" port ] [ "?transport=" ("udp" / "tcp") ]
/// ```
/// `stuns:`/`turns:` are refused: libnice's TURN-TLS is not real TLS in RFC 5245 mode.
public struct ICEServerURL: Hashable, Sendable {
    /// STUN or TURN.
    public enum Scheme: String, Sendable { case stun, turn }
    /// Transport towards a TURN server.
    public enum Transport: String, Sendable { case udp, tcp }

    /// Scheme.
    public var scheme: Scheme
    /// Host name or IP literal (without brackets).
    public var host: String
    /// Port, default 3478.
    public var port: UInt16
    /// TURN transport, default UDP.
    public var transport: Transport

    /// Parses a URL, naming the problem when it cannot be used.
    public init(parsing url: String) throws {
        func fail(_ why: String) -> ICEError { ICEError(.invalidServerURL, "\(why): \"\(url)\"") }
        guard let colon = url.firstIndex(of: ":") else { throw fail("missing scheme") }
        let schemeText = url[..<colon].lowercased()
        if schemeText == "stuns" || schemeText == "turns" {
            throw fail("TLS (stuns:/turns:) is not supported by libnice in RFC 5245 mode; use turn:…?transport=tcp")
        }
        guard let scheme = Scheme(rawValue: schemeText) else { throw fail("scheme must be stun or turn") }
        var rest = url[url.index(after: colon)...]
        var transport = Transport.udp
        if let q = rest.firstIndex(of: "?") {
            let query = rest[rest.index(after: q)...]
            rest = rest[..<q]
            guard scheme == .turn else { throw fail("stun: URLs take no query") }
            guard query.lowercased().hasPrefix("transport="),
                let t = Transport(rawValue: query.dropFirst("transport=".count).lowercased())
            else { throw fail("query must be transport=udp or transport=tcp") }
            transport = t
        }
        var host: Substring
        var portText: Substring?
        if rest.hasPrefix("[") {
            guard let close = rest.firstIndex(of: "]") else { throw fail("unclosed [ in IPv6 host") }
            host = rest[rest.index(after: rest.startIndex)..<close]
            let after = rest[rest.index(after: close)...]
            if !after.isEmpty {
                guard after.hasPrefix(":") else { throw fail("junk after ]") }
                portText = after.dropFirst()
            }
        } else if let c = rest.lastIndex(of: ":") {
            host = rest[..<c]
            portText = rest[rest.index(after: c)...]
        } else {
            host = rest
        }
        guard !host.isEmpty else { throw fail("empty host") }
        let hostString = String(host)
        guard IPLiteral.isIPv4(hostString) || IPLiteral.isIPv6(hostString) || IPLiteral.isHostName(hostString) else {
            throw fail("host \"\(hostString)\" is not a host name or IP literal")
        }
        var port: UInt16 = 3478
        if let portText {
            guard let p = UInt16(portText), p > 0 else { throw fail("port \"\(portText)\" is not 1-65535") }
            port = p
        }
        self.scheme = scheme
        self.host = hostString
        self.port = port
        self.transport = transport
    }
}
