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
    /// Request form of the `mesh:<name>` upstream: `dm` (`POST /dm/`, default) or `hbone` (CONNECT).
    public var transport: TunnelRequest.Kind
    /// The peer's public key, base64url of the 65-byte uncompressed point (as `ugate id` prints
    /// it); optional. It must hash to `id`. With it the peer's VIP6 (`fd00::/64` + the key's last
    /// 8 bytes) is known, so `[VIP6]:port` destinations route to the peer like `ID:port`.
    public var publicKey: String?
    /// For a gateway: host names this peer serves over plain TLS (its `mesh.tlsHosts`). TLS
    /// arriving here with such an SNI is passed to the peer undecrypted — spliced into one of
    /// its relay registrations, else forwarded to its address — as for its mangled hostname.
    /// Granted here, by the gateway's operator: a peer cannot claim names it was not given.
    /// A wildcard `*.example.com` grants every name one label below the domain (not the domain,
    /// not deeper names: RFC 6125 §6.4.3); a name granted exactly to another peer wins.
    public var tlsHosts: [String]

    public init(
        id: String, name: String? = nil, addresses: [String] = [], egress: Bool = false, destinations: [String] = [],
        transport: TunnelRequest.Kind = .dm, publicKey: String? = nil, tlsHosts: [String] = []
    ) {
        self.tlsHosts = tlsHosts
        self.publicKey = publicKey
        self.id = id
        self.name = name
        self.addresses = addresses
        self.egress = egress
        self.destinations = destinations
        self.transport = transport
    }

    /// The peer's VIP6 (RFC 5952 text), when `publicKey` is given and decodes; `PeerPolicy`
    /// refuses a config whose key does not decode or hash to `id`.
    public var vip6: String? {
        guard let publicKey, let key = try? PeerPolicy.nodeID(publicKey: publicKey, of: id) else { return nil }
        return key.vip6
    }

    private enum CodingKeys: String, CodingKey, CaseIterable {
        case id, name, addresses, egress, destinations, transport, publicKey, tlsHosts
    }

    public init(from decoder: any Decoder) throws {
        try ConfigKey.rejectUnknown(decoder, CodingKeys.allCases.map(\.rawValue))
        let c = try decoder.container(keyedBy: CodingKeys.self)
        id = try c.decode(String.self, forKey: .id)
        name = try c.decodeIfPresent(String.self, forKey: .name)
        addresses = try c.decodeIfPresent([String].self, forKey: .addresses) ?? []
        egress = try c.decodeIfPresent(Bool.self, forKey: .egress) ?? false
        destinations = try c.decodeIfPresent([String].self, forKey: .destinations) ?? []
        transport = try c.decodeIfPresent(TunnelRequest.Kind.self, forKey: .transport) ?? .dm
        publicKey = try c.decodeIfPresent(String.self, forKey: .publicKey)
        tlsHosts = try c.decodeIfPresent([String].self, forKey: .tlsHosts) ?? []
    }
}

/// A host name this node serves to plain TLS clients (`mesh.tlsHosts`): TLS whose SNI is the
/// name — on the node's mesh port, or spliced in by a gateway that routes the name here — is
/// terminated with `cert`/`key` and its plaintext carried to `127.0.0.1:port`.
/// A key `*.example.com` serves every name one label below the domain with a wildcard
/// certificate (its SAN must list `*.example.com`); an exact key wins over it.
///
/// ```json
/// "tlsHosts": {"db.example.com": {"port": 5432, "cert": "/etc/ugate/db.pem", "key": "/etc/ugate/db-key.pem"}}
/// ```
public struct TLSHostConfig: Codable, Hashable, Sendable {
    /// The local port the plaintext goes to (on 127.0.0.1).
    public var port: Int
    /// PEM file: the certificate for the name (its SAN must cover it), then any intermediates.
    public var cert: String
    /// PEM file: the certificate's private key.
    public var key: String

    public init(port: Int, cert: String, key: String) {
        self.port = port
        self.cert = cert
        self.key = key
    }

    private enum CodingKeys: String, CodingKey, CaseIterable { case port, cert, key }

    public init(from decoder: any Decoder) throws {
        try ConfigKey.rejectUnknown(decoder, CodingKeys.allCases.map(\.rawValue))
        let c = try decoder.container(keyedBy: CodingKeys.self)
        port = try c.decode(Int.self, forKey: .port)
        cert = try c.decode(String.self, forKey: .cert)
        key = try c.decode(String.self, forKey: .key)
    }

    /// The lower-cased `name` when it is a DNS host name (letters, digits, hyphens; labels of
    /// 1–63 characters, 253 in all; no wildcard, no trailing dot), else a config error naming
    /// `field`.
    public static func hostName(_ name: String, field: String) throws -> String {
        let lower = name.lowercased()
        let labels = lower.split(separator: ".", omittingEmptySubsequences: false)
        let valid = !lower.isEmpty && lower.utf8.count <= 253 && labels.allSatisfy { label in
            (1...63).contains(label.utf8.count) && label.first != "-" && label.last != "-"
                && label.utf8.allSatisfy { ($0 >= 0x61 && $0 <= 0x7a) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x2d }
        }
        guard valid else {
            throw MeshError(.config, "field \(field): \"\(name)\" is not a DNS host name (letters, digits, hyphens and dots; a wildcard only as *.domain)")
        }
        return lower
    }

    /// The lower-cased `name` when it is a DNS host name (see `hostName`) or a wildcard
    /// `*.domain` whose domain has at least two labels (`*.example.com`; the `*` alone is the
    /// left-most label, RFC 6125 §6.4.3), else a config error naming `field`.
    public static func hostPattern(_ name: String, field: String) throws -> String {
        guard name.hasPrefix("*.") else { return try hostName(name, field: field) }
        let domain = String(name.dropFirst(2))
        guard domain.contains("."), let lower = try? hostName(domain, field: field) else {
            throw MeshError(
                .config,
                "field \(field): \"\(name)\" is not a host name or wildcard (a wildcard is *. followed by a domain of two or more labels, e.g. *.example.com)")
        }
        return "*." + lower
    }

    /// Checks the port and that both files are named; `field` is the entry's path
    /// (`mesh.tlsHosts["db.example.com"]`). The files are read when the node starts (`MeshTLS`).
    func validate(field: String) throws {
        guard (1...65535).contains(port) else { throw MeshError(.config, "field \(field).port: \(port) is not a TCP port (1-65535)") }
        guard !cert.isEmpty else { throw MeshError(.config, "field \(field).cert: the certificate PEM file is required") }
        guard !key.isEmpty else { throw MeshError(.config, "field \(field).key: the private key PEM file is required") }
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
    /// Flow-control window per stream, bytes (default 32 MiB; the connection's is max(16 MiB, 2 ×)).
    /// A path through a relay hop (SNI relay, SNI forwarding) keeps more bytes in flight than a
    /// direct connection: 8 MiB capped it at about half the direct stream's rate (docs/peermesh.md).
    public var windowSize: Int
    /// SETTINGS_MAX_CONCURRENT_STREAMS we advertise (default 4096).
    public var maxConcurrentStreams: Int
    /// Seconds a peer has to answer a tunnel request before the stream is reset and the dial
    /// fails (default 15: above the 10 s a peer allows its own connect to the destination, so
    /// an unreachable destination is reported by the peer's 500/503, not by this timeout).
    public var streamOpenTimeout: Double
    /// Idle relay-over-SNI connections a gateway keeps per registering node (default 64).
    public var maxRelayConnectionsPerPeer: Int
    /// How the Gate's relay moves the bytes of TLS forwarded by SNI (default copy, as the Gate's
    /// `forwarder`).
    public var forwarder: ForwardMode
    /// Largest read from a mesh connection or from a socket joined to a stream, and the largest
    /// HTTP/2 DATA frame this node accepts (SETTINGS_MAX_FRAME_SIZE), bytes; clamped to
    /// 16 KiB … 16 MiB − 1. Default `defaultIOChunkSize`.
    public var ioChunkSize: Int
    /// Local ports a plain TLS client (no mesh identity) may reach on this node: TLS whose SNI
    /// is `outbound_.PORT_._.<this node's hostname>` with PORT listed here — arriving on the mesh
    /// port or spliced in by a gateway through a relay registration — is terminated with the
    /// node's certificate (no client certificate asked) and its plaintext carried to
    /// `127.0.0.1:PORT`. Default none: every TLS connection is mesh mTLS.
    public var tlsPorts: [Int]
    /// Host names this node serves to plain TLS clients, each with its port and certificate
    /// (`TLSHostConfig`); keys are compared without case. Default none.
    public var tlsHosts: [String: TLSHostConfig]

    /// The default `ioChunkSize`.
    public static let defaultIOChunkSize = 1 << 19

    public init(
        identityDir: String, naming: MeshNaming = MeshNaming(), peers: [PeerConfig] = [],
        listenHost: String = "0.0.0.0", windowSize: Int = 32 << 20, maxConcurrentStreams: Int = 4096,
        streamOpenTimeout: Double = 15, maxRelayConnectionsPerPeer: Int = 64, forwarder: ForwardMode = .copy,
        ioChunkSize: Int = MeshConfig.defaultIOChunkSize, tlsPorts: [Int] = [], tlsHosts: [String: TLSHostConfig] = [:]
    ) {
        self.tlsPorts = tlsPorts
        self.tlsHosts = tlsHosts
        self.forwarder = forwarder
        self.ioChunkSize = ioChunkSize
        self.identityDir = identityDir
        self.naming = naming
        self.peers = peers
        self.listenHost = listenHost
        self.windowSize = windowSize
        self.maxConcurrentStreams = maxConcurrentStreams
        self.streamOpenTimeout = streamOpenTimeout
        self.maxRelayConnectionsPerPeer = maxRelayConnectionsPerPeer
    }
}

/// A relay-over-SNI registration in `ugate.json`: keep `poolSize` idle connections registered
/// with `gateway` (a peer name or ID).
public struct RelaySection: Codable, Sendable, Equatable {
    public var gateway: String
    public var poolSize: Int

    public init(gateway: String, poolSize: Int = 4) {
        self.gateway = gateway
        self.poolSize = poolSize
    }

    private enum CodingKeys: String, CodingKey, CaseIterable { case gateway, poolSize }

    public init(from decoder: any Decoder) throws {
        try ConfigKey.rejectUnknown(decoder, CodingKeys.allCases.map(\.rawValue))
        let c = try decoder.container(keyedBy: CodingKeys.self)
        gateway = try c.decode(String.self, forKey: .gateway)
        poolSize = try c.decodeIfPresent(Int.self, forKey: .poolSize) ?? 4
    }
}

/// The optional `mesh` section of `ugate.json` (the rest of the file is the Gate's config);
/// unknown fields are refused with their path (`unknown field mesh.peers[0].adress`):
///
/// ```json
/// {"mesh": {"peers": [{"id": "…", "name": "gw", "addresses": ["host:port"], "egress": true,
///                      "transport": "hbone", "publicKey": "… (optional, enables [VIP6]:port)"}],
///           "namespace": "default", "trustDomain": "cluster.local", "listenHost": "0.0.0.0",
///           "listen": true, "reverseTunnels": ["gw"], "relays": [{"gateway": "gw", "poolSize": 4}],
///           "streamOpenTimeout": 15, "maxRelayConnectionsPerPeer": 64, "meshRoutes": true,
///           "tlsPorts": [8443],
///           "tlsHosts": {"db.example.com": {"port": 5432, "cert": "db.pem", "key": "db-key.pem"}}}}
/// ```
public struct MeshSection: Codable, Sendable, Equatable {
    public var peers: [PeerConfig] = []
    public var namespace: String = "default"
    public var trustDomain: String = "cluster.local"
    /// Listen address of the mesh ports; nil = the Gate's `bind` (loopback unless changed).
    public var listenHost: String?
    /// Bind the base+7/base+8 listeners; nil = as the Gate's `defaultListeners` (a config that
    /// turns those off and puts its own listener on base+7 gets no mesh ports unless it asks).
    public var listen: Bool?
    /// Gateways (peer names or IDs) to keep a reverse tunnel to (this node is behind NAT).
    public var reverseTunnels: [String] = []
    /// Gateways to keep relay-over-SNI registrations with.
    public var relays: [RelaySection] = []
    /// Seconds a peer has to answer a tunnel request (default 15).
    public var streamOpenTimeout: Double = 15
    /// Idle relay connections kept per registering node when this node is a gateway (default 64).
    public var maxRelayConnectionsPerPeer: Int = 64
    /// Route the mangled hostnames (`ID.namespace.trustdomain`) and bare IDs of known peers to
    /// their `mesh:<name>` upstream, after the config's own routes (default true).
    public var meshRoutes: Bool = true
    /// Local ports plain TLS clients may reach by SNI `outbound_.PORT_._.<hostname>` (see
    /// `MeshConfig.tlsPorts`; default none).
    public var tlsPorts: [Int] = []
    /// Host names plain TLS clients may reach by SNI, with port and certificate (see
    /// `TLSHostConfig`; default none). A gateway routes such a name to this node when its peer
    /// entry for this node lists it (`PeerConfig.tlsHosts`).
    public var tlsHosts: [String: TLSHostConfig] = [:]

    public init() {}

    private enum CodingKeys: String, CodingKey, CaseIterable {
        case peers, namespace, trustDomain, listenHost, listen, reverseTunnels, relays, streamOpenTimeout,
            maxRelayConnectionsPerPeer, meshRoutes, tlsPorts, tlsHosts
    }

    public init(from decoder: any Decoder) throws {
        try ConfigKey.rejectUnknown(decoder, CodingKeys.allCases.map(\.rawValue))
        let c = try decoder.container(keyedBy: CodingKeys.self)
        peers = try c.decodeIfPresent([PeerConfig].self, forKey: .peers) ?? []
        namespace = try c.decodeIfPresent(String.self, forKey: .namespace) ?? "default"
        trustDomain = try c.decodeIfPresent(String.self, forKey: .trustDomain) ?? "cluster.local"
        listenHost = try c.decodeIfPresent(String.self, forKey: .listenHost)
        listen = try c.decodeIfPresent(Bool.self, forKey: .listen)
        reverseTunnels = try c.decodeIfPresent([String].self, forKey: .reverseTunnels) ?? []
        relays = try c.decodeIfPresent([RelaySection].self, forKey: .relays) ?? []
        streamOpenTimeout = try c.decodeIfPresent(Double.self, forKey: .streamOpenTimeout) ?? 15
        maxRelayConnectionsPerPeer = try c.decodeIfPresent(Int.self, forKey: .maxRelayConnectionsPerPeer) ?? 64
        meshRoutes = try c.decodeIfPresent(Bool.self, forKey: .meshRoutes) ?? true
        tlsPorts = try c.decodeIfPresent([Int].self, forKey: .tlsPorts) ?? []
        tlsHosts = try c.decodeIfPresent([String: TLSHostConfig].self, forKey: .tlsHosts) ?? [:]
    }

    /// The Gate upstream name of `peer`: `mesh:<name>`, or `mesh:<id>` without a name.
    public static func upstreamName(_ peer: PeerConfig) -> String { "mesh:\(peer.name ?? peer.id)" }

    /// The ID of the peer called `nameOrID` (its `name` or its ID); `field` names the config
    /// field in the error.
    public func peerID(_ nameOrID: String, field: String) throws -> String {
        guard let peer = peers.first(where: { $0.name == nameOrID || $0.id == nameOrID }) else {
            throw MeshError(.config, "field mesh.\(field): \(nameOrID) is not the name or ID of a peer in mesh.peers")
        }
        return peer.id
    }

    /// Checks what JSON types cannot: timeouts, pool sizes, gateway names.
    public func validate() throws {
        guard streamOpenTimeout > 0 else { throw MeshError(.config, "field mesh.streamOpenTimeout must be > 0") }
        guard maxRelayConnectionsPerPeer > 0 else { throw MeshError(.config, "field mesh.maxRelayConnectionsPerPeer must be > 0") }
        for (i, name) in reverseTunnels.enumerated() { _ = try peerID(name, field: "reverseTunnels[\(i)]") }
        for (i, relay) in relays.enumerated() {
            _ = try peerID(relay.gateway, field: "relays[\(i)].gateway")
            guard relay.poolSize > 0 else { throw MeshError(.config, "field mesh.relays[\(i)].poolSize must be > 0") }
        }
        for (i, port) in tlsPorts.enumerated() where !(1...65535).contains(port) {
            throw MeshError(.config, "field mesh.tlsPorts[\(i)]: \(port) is not a TCP port (1-65535)")
        }
        var seen: [String: String] = [:]
        for name in tlsHosts.keys.sorted() {
            let field = "mesh.tlsHosts[\"\(name)\"]"
            let lower = try TLSHostConfig.hostPattern(name, field: field)
            if let other = seen[lower] { throw MeshError(.config, "field \(field): the same name as mesh.tlsHosts[\"\(other)\"]") }
            seen[lower] = name
            try tlsHosts[name]!.validate(field: field)
        }
        _ = try PeerPolicy.tlsHostGrants(peers)
    }

    /// Route rules that send a known peer's mangled hostname (as SNI/Host or destination), its
    /// bare ID (`ID:port` destinations) and, when its `publicKey` is configured, its VIP6
    /// (`[VIP6]:port`) to the peer's upstream; appended after the config's own routes, so those
    /// win. The peer then connects `127.0.0.1:port` on itself.
    public func meshRoutes(naming: MeshNaming) -> [RouteConfig] {
        guard meshRoutes else { return [] }
        return peers.flatMap { peer in
            [RouteConfig(host: naming.hostname(for: peer.id), to: Self.upstreamName(peer)),
             RouteConfig(dest: peer.id, to: Self.upstreamName(peer))]
                + (peer.vip6.map { [RouteConfig(dest: $0, to: Self.upstreamName(peer))] } ?? [])
        }
    }

    /// The transport config for a node whose identity lives in `identityDir`; SNI forwarding
    /// uses `forwarder` (the Gate's).
    public func meshConfig(identityDir: String, defaultHost: String, forwarder: ForwardMode = .copy) -> MeshConfig {
        MeshConfig(
            identityDir: identityDir, naming: MeshNaming(namespace: namespace, trustDomain: trustDomain), peers: peers,
            listenHost: listenHost ?? defaultHost, streamOpenTimeout: streamOpenTimeout,
            maxRelayConnectionsPerPeer: maxRelayConnectionsPerPeer, forwarder: forwarder, tlsPorts: tlsPorts, tlsHosts: tlsHosts)
    }
}

/// Who may do what: the known peers and their permissions, as a lookup table.
public struct PeerPolicy: Sendable {
    private struct Entry: Sendable {
        var config: PeerConfig
        var patterns: [DestinationPattern]
    }

    private let entries: [String: Entry]
    /// Peer IDs by VIP6 (RFC 5952 text), for peers whose public key is configured.
    private let vip6: [String: String]
    /// Peer IDs by the plain-TLS host names and wildcards they serve (`PeerConfig.tlsHosts`).
    private let tlsHosts: HostNameTable<String>

    public init(peers: [PeerConfig]) throws {
        var entries: [String: Entry] = [:]
        var vip6: [String: String] = [:]
        for peer in peers {
            guard peer.id.count == 52, peer.id.utf8.allSatisfy(Self.isBase32) else {
                throw MeshError(.config, "peer ID \"\(peer.id)\" is not a 52-character base32 node ID")
            }
            guard entries[peer.id] == nil else { throw MeshError(.config, "peer \(peer.id) is listed twice") }
            entries[peer.id] = Entry(config: peer, patterns: try peer.destinations.map(DestinationPattern.init))
            if let publicKey = peer.publicKey { vip6[try Self.nodeID(publicKey: publicKey, of: peer.id).vip6] = peer.id }
        }
        self.entries = entries
        self.vip6 = vip6
        tlsHosts = try Self.tlsHostGrants(peers)
    }

    /// The plain-TLS host grants of `peers` (`PeerConfig.tlsHosts`: names and `*.domain`
    /// wildcards → peer ID). A name or wildcard granted to two peers is refused, naming both
    /// fields; an exact name and a wildcard covering it may go to different peers (the exact
    /// name wins).
    static func tlsHostGrants(_ peers: [PeerConfig]) throws -> HostNameTable<String> {
        var grants = HostNameTable<String>()
        var fields: [String: String] = [:]
        for (i, peer) in peers.enumerated() {
            for (j, name) in peer.tlsHosts.enumerated() {
                let field = "mesh.peers[\(i)].tlsHosts[\(j)]"
                let lower = try TLSHostConfig.hostPattern(name, field: field)
                if let other = grants[pattern: lower], other != peer.id {
                    let kind = lower.hasPrefix("*.") ? "wildcard " : ""
                    throw MeshError(
                        .config,
                        "field \(field): \(kind)\(lower) is listed for two peers, \(other) (\(fields[lower] ?? "")) and \(peer.id); grant a name or wildcard to one peer only")
                }
                grants[pattern: lower] = peer.id
                fields[lower] = field
            }
        }
        return grants
    }

    /// The known peer that serves `name` over plain TLS (`PeerConfig.tlsHosts`; any case): the
    /// peer granted the exact name, else the one granted the wildcard covering it.
    public func peer(tlsHost name: String) -> PeerConfig? {
        tlsHosts.lookup(name).flatMap { entries[$0]?.config }
    }

    /// The configuration of a known peer.
    public func peer(_ id: String) -> PeerConfig? { entries[id]?.config }

    /// The known peer whose VIP6 `address` is (any IPv6 text form), if its key is configured.
    public func peer(vip6 address: String) -> PeerConfig? {
        NodeID.canonicalIPv6(address).flatMap { vip6[$0] }.flatMap { entries[$0]?.config }
    }

    /// The node ID of a configured `publicKey` (base64url, 65-byte point) that must hash to `id`.
    static func nodeID(publicKey: String, of id: String) throws -> NodeID {
        let node: NodeID
        do {
            node = try NodeID(publicKey: try Base64URL.decode(publicKey, what: "publicKey"))
        } catch {
            throw MeshError(.config, "peer \(id): publicKey is not a base64url 65-byte P-256 point (\(error))")
        }
        guard node.id == id else { throw MeshError(.config, "peer \(id): publicKey hashes to \(node.id), not to the peer's ID") }
        return node
    }

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
