import Gate

/// A peer this node talks to. Everything not listed here is refused at the TLS handshake.
public struct PeerConfig: Codable, Hashable, Sendable {
    /// The peer's 52-character node ID (pins its key).
    public var id: String
    /// Short name for routes: `ugate run` registers the peer's upstream as `mesh:<name>`
    /// (`mesh:<id>` without a name).
    public var name: String?
    /// Where to reach the peer's mesh port (`host:port`, tried in order). Empty for peers that
    /// only call in.
    public var addresses: [String]
    /// May use this node as egress: reach any destination.
    public var egress: Bool
    /// `host:port` patterns the peer may reach through this node when `egress` is false
    /// (see `DestinationPattern`).
    public var destinations: [String]

    public init(id: String, name: String? = nil, addresses: [String] = [], egress: Bool = false, destinations: [String] = []) {
        self.id = id
        self.name = name
        self.addresses = addresses
        self.egress = egress
        self.destinations = destinations
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        id = try c.decode(String.self, forKey: .id)
        name = try c.decodeIfPresent(String.self, forKey: .name)
        addresses = try c.decodeIfPresent([String].self, forKey: .addresses) ?? []
        egress = try c.decodeIfPresent(Bool.self, forKey: .egress) ?? false
        destinations = try c.decodeIfPresent([String].self, forKey: .destinations) ?? []
    }
}

/// A `host:port` pattern: `*` in the host matches any run of characters (`*.example.com`,
/// `10.0.0.*`), a port of `*` matches any port; a bare `*` matches everything. Host comparison
/// ignores case; IPv6 literals are written in brackets (`[fd00::1]:80`).
public struct DestinationPattern: Hashable, Sendable {
    public let host: String
    /// nil = any port.
    public let port: UInt16?

    public init(_ text: String) throws {
        if text == "*" {
            host = "*"
            port = nil
            return
        }
        guard let colon = text.lastIndex(of: ":") else {
            throw MeshError(.config, "destination pattern \"\(text)\" must be host:port (port may be *)")
        }
        var h = String(text[..<colon])
        if h.hasPrefix("["), h.hasSuffix("]") { h = String(h.dropFirst().dropLast()) }
        let p = text[text.index(after: colon)...]
        if p == "*" {
            port = nil
        } else if let value = UInt16(p) {
            port = value
        } else {
            throw MeshError(.config, "destination pattern \"\(text)\" has a bad port \"\(p)\"")
        }
        guard !h.isEmpty else { throw MeshError(.config, "destination pattern \"\(text)\" has an empty host") }
        host = h.lowercased()
    }

    public func matches(_ destination: Destination) -> Bool {
        if let port, port != destination.port { return false }
        return Self.glob(Array(host.utf8)[...], Array(destination.host.lowercased().utf8)[...])
    }

    private static func glob(_ pattern: ArraySlice<UInt8>, _ text: ArraySlice<UInt8>) -> Bool {
        guard let first = pattern.first else { return text.isEmpty }
        if first == UInt8(ascii: "*") {
            let rest = pattern.dropFirst()
            var t = text
            while true {
                if glob(rest, t) { return true }
                if t.isEmpty { return false }
                t = t.dropFirst()
            }
        }
        guard let c = text.first, c == first else { return false }
        return glob(pattern.dropFirst(), text.dropFirst())
    }
}

/// Configuration of the HTTP/2 mesh transport of one node.
public struct MeshConfig: Codable, Sendable {
    /// Directory holding `key.pem`, `cert.pem` and optionally `cert-chain.pem`.
    public var identityDir: String
    public var naming: MeshNaming
    public var peers: [PeerConfig]
    /// Listen address for the mesh ports (base+7 `/dm/`, base+8 HBONE).
    public var listenHost: String
    /// Flow-control window per stream and per connection, bytes (default 8 MiB).
    public var windowSize: Int
    /// SETTINGS_MAX_CONCURRENT_STREAMS we advertise (default 4096).
    public var maxConcurrentStreams: Int

    public init(
        identityDir: String, naming: MeshNaming = MeshNaming(), peers: [PeerConfig] = [],
        listenHost: String = "0.0.0.0", windowSize: Int = 8 << 20, maxConcurrentStreams: Int = 4096
    ) {
        self.identityDir = identityDir
        self.naming = naming
        self.peers = peers
        self.listenHost = listenHost
        self.windowSize = windowSize
        self.maxConcurrentStreams = maxConcurrentStreams
    }
}

/// The optional `mesh` section of `ugate.json` (the rest of the file is the Gate's config):
/// `{"mesh": {"peers": [{"id": "…", "name": "b", "addresses": ["host:port"], "egress": true}],
/// "namespace": "default", "trustDomain": "cluster.local", "listenHost": "0.0.0.0", "listen": true}}`.
public struct MeshSection: Codable, Sendable, Equatable {
    public var peers: [PeerConfig] = []
    public var namespace: String = "default"
    public var trustDomain: String = "cluster.local"
    /// Listen address of the mesh ports; nil = the Gate's `bind` (loopback unless changed).
    public var listenHost: String?
    /// Bind the base+7/base+8 listeners; nil = as the Gate's `defaultListeners` (a config that
    /// turns those off and puts its own listener on base+7 gets no mesh ports unless it asks).
    public var listen: Bool?

    public init() {}

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        peers = try c.decodeIfPresent([PeerConfig].self, forKey: .peers) ?? []
        namespace = try c.decodeIfPresent(String.self, forKey: .namespace) ?? "default"
        trustDomain = try c.decodeIfPresent(String.self, forKey: .trustDomain) ?? "cluster.local"
        listenHost = try c.decodeIfPresent(String.self, forKey: .listenHost)
        listen = try c.decodeIfPresent(Bool.self, forKey: .listen)
    }

    /// The Gate upstream name of `peer`: `mesh:<name>`, or `mesh:<id>` without a name.
    public static func upstreamName(_ peer: PeerConfig) -> String { "mesh:\(peer.name ?? peer.id)" }

    /// The transport config for a node whose identity lives in `identityDir`.
    public func meshConfig(identityDir: String, defaultHost: String) -> MeshConfig {
        MeshConfig(
            identityDir: identityDir, naming: MeshNaming(namespace: namespace, trustDomain: trustDomain), peers: peers,
            listenHost: listenHost ?? defaultHost)
    }
}

/// Who may do what: the known peers and their permissions, as a lookup table.
public struct PeerPolicy: Sendable {
    private struct Entry: Sendable {
        var config: PeerConfig
        var patterns: [DestinationPattern]
    }

    private let entries: [String: Entry]

    public init(peers: [PeerConfig]) throws {
        var entries: [String: Entry] = [:]
        for peer in peers {
            guard peer.id.count == 52, peer.id.utf8.allSatisfy(Self.isBase32) else {
                throw MeshError(.config, "peer ID \"\(peer.id)\" is not a 52-character base32 node ID")
            }
            guard entries[peer.id] == nil else { throw MeshError(.config, "peer \(peer.id) is listed twice") }
            entries[peer.id] = Entry(config: peer, patterns: try peer.destinations.map(DestinationPattern.init))
        }
        self.entries = entries
    }

    /// The configuration of a known peer.
    public func peer(_ id: String) -> PeerConfig? { entries[id]?.config }

    /// nil when `peerID` may reach `destination` through this node, else the refusal.
    public func refusal(peerID: String, destination: Destination) -> MeshError? {
        guard let entry = entries[peerID] else {
            return MeshError(.unknownPeer, "node \(peerID) is not a known peer", status: 403)
        }
        if entry.config.egress || entry.patterns.contains(where: { $0.matches(destination) }) { return nil }
        return MeshError(.forbidden, "peer \(peerID) may not reach \(destination) through this node", status: 403)
    }

    static func isBase32(_ c: UInt8) -> Bool {
        (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(c) || (UInt8(ascii: "2")...UInt8(ascii: "7")).contains(c)
    }
}
