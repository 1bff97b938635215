/// Istio-style capture rules (as an nftables ruleset): outbound TCP from everyone except the
/// node's own user/group is REDIRECTed to base+1, inbound TCP to base+6; loopback
/// destinations and excluded ports pass untouched. The node runs as the exempt user or group,
/// so its own connections are not captured again.
public struct CaptureRules: Sendable {
    /// REDIRECT target for outbound connections (base+1).
    public var outboundPort: UInt16
    /// REDIRECT target for inbound connections (base+6); nil leaves inbound alone.
    public var inboundPort: UInt16?
    /// Connections from processes with this uid / gid are not captured.
    public var exemptUID: UInt32?
    public var exemptGID: UInt32?
    /// Destination ports never captured outbound / inbound (ssh, the mesh ports …).
    public var excludeOutboundPorts: [UInt16]
    public var excludeInboundPorts: [UInt16]
    /// The nftables table the rules live in (deleted and recreated on each apply).
    public var table: String

    public init(
        outboundPort: UInt16, inboundPort: UInt16? = nil, exemptUID: UInt32? = 1337, exemptGID: UInt32? = 1337,
        excludeOutboundPorts: [UInt16] = [], excludeInboundPorts: [UInt16] = [22], table: String = "ugate"
    ) {
        self.outboundPort = outboundPort
        self.inboundPort = inboundPort
        self.exemptUID = exemptUID
        self.exemptGID = exemptGID
        self.excludeOutboundPorts = excludeOutboundPorts
        self.excludeInboundPorts = excludeInboundPorts
        self.table = table
    }

    /// An `nft -f` script that replaces the table with the capture rules.
    public var nftScript: String {
        var lines = [
            "table inet \(table)", "delete table inet \(table)", "table inet \(table) {",
            "    chain output {",
            "        type nat hook output priority -100; policy accept;",
        ]
        if let exemptUID { lines.append("        meta skuid \(exemptUID) return") }
        if let exemptGID { lines.append("        meta skgid \(exemptGID) return") }
        lines.append("        ip daddr 127.0.0.0/8 return")
        lines.append("        ip6 daddr ::1 return")
        if !excludeOutboundPorts.isEmpty {
            lines.append("        tcp dport { \(excludeOutboundPorts.map(String.init).joined(separator: ", ")) } return")
        }
        lines.append("        meta l4proto tcp redirect to :\(outboundPort)")
        lines.append("    }")
        if let inboundPort {
            lines += [
                "    chain prerouting {",
                "        type nat hook prerouting priority dstnat; policy accept;",
            ]
            if !excludeInboundPorts.isEmpty {
                lines.append("        tcp dport { \(excludeInboundPorts.map(String.init).joined(separator: ", ")) } return")
            }
            lines.append("        meta l4proto tcp redirect to :\(inboundPort)")
            lines.append("    }")
        }
        lines.append("}")
        return lines.joined(separator: "\n") + "\n"
    }

    /// An `nft -f` script that removes the rules.
    public var removeScript: String {
        "table inet \(table)\ndelete table inet \(table)\n"
    }
}
