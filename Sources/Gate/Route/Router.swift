/// Where a stream goes: the upstream that dials and the destination it dials.
public struct RouteDecision: Sendable {
    public var upstream: any Upstream
    public var destination: Destination
}

/// The route table: ordered rules from the config (by listener, by SNI/Host exact or `*.`
/// wildcard, by original destination), targets resolved against `hosts` and a registry of
/// named `Upstream`s. Mesh transports register their upstreams by name; capture code only
/// ever calls `route(_:)`.
public struct Router: Sendable {
    private let rules: [RouteConfig]
    private let hosts: [String: HostConfig]
    private let upstreams: [String: any Upstream]
    private let direct: any Upstream

    /// - Parameters:
    ///   - upstreams: named upstreams (mesh transports); `direct` is always available.
    public init(rules: [RouteConfig], hosts: [String: HostConfig], direct: any Upstream, upstreams: [String: any Upstream] = [:]) throws {
        self.rules = rules
        self.hosts = hosts
        self.direct = direct
        self.upstreams = upstreams
        for (i, rule) in rules.enumerated()
        where rule.to != "direct" && rule.to != "deny" && hosts[rule.to] == nil && upstreams[rule.to] == nil {
            throw GateError(.config, "field routes[\(i)].to: \(rule.to) is not direct, deny, a hosts name or a known upstream")
        }
    }

    /// The decision for a stream; falls back to a direct dial of the stream's destination.
    public func route(_ info: StreamInfo) throws -> RouteDecision {
        for rule in rules where matches(rule, info) {
            return try target(rule.to, info.destination)
        }
        return RouteDecision(upstream: direct, destination: info.destination)
    }

    /// `forwardTo` of a listener: a hosts name, or `host:port`.
    func resolveForward(_ forwardTo: String) throws -> Destination {
        if let host = hosts[forwardTo] { return try Destination(parsing: host.addr) }
        return try Destination(parsing: forwardTo)
    }

    private func target(_ to: String, _ destination: Destination) throws -> RouteDecision {
        if to == "direct" { return RouteDecision(upstream: direct, destination: destination) }
        if to == "deny" { throw GateError(.noRoute, "\(destination) is denied by the route table") }
        if let host = hosts[to] { return RouteDecision(upstream: direct, destination: try Destination(parsing: host.addr)) }
        if let upstream = upstreams[to] { return RouteDecision(upstream: upstream, destination: destination) }
        throw GateError(.noRoute, "route target \(to) is unknown")
    }

    private func matches(_ rule: RouteConfig, _ info: StreamInfo) -> Bool {
        if let listener = rule.listener, listener != info.listener { return false }
        if let pattern = rule.host, !Router.hostMatches(pattern, info.serverName ?? info.destination.host) { return false }
        if let dest = rule.dest, dest != info.destination.description, dest != info.destination.host { return false }
        return true
    }

    /// Exact (case-insensitive) or `*.suffix`, which matches any name below the suffix but not the suffix itself.
    static func hostMatches(_ pattern: String, _ name: String) -> Bool {
        let p = pattern.lowercased()
        let n = name.lowercased()
        if p.hasPrefix("*.") { return n.hasSuffix(p.dropFirst(1)) && n.count > p.count - 1 }
        return p == n
    }
}
