import ArgumentParser
import Foundation
import Gate

/// `ugate iptables`: prints (or applies inside a network namespace) Istio-style capture rules.
struct IPTables: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "iptables",
        abstract: "Print or apply Istio-style REDIRECT capture rules (nftables) for the gate.",
        discussion: """
            Outbound TCP is redirected to base+1 and inbound TCP to base+6, except traffic of the \
            exempt uid/gid (run the node as that user or group), loopback destinations and excluded \
            ports. Without --apply the ruleset is printed (pipe it into `nft -f -` yourself). \
            --apply only works together with --netns, so it never changes the host's own rules by accident.
            """)

    @Option(help: "Base port of the node.")
    var basePort: Int = 15000

    @Option(help: "Exempt uid (the node's user); -1 for none.")
    var uid: Int = 1337

    @Option(help: "Exempt gid (the node's group); -1 for none.")
    var gid: Int = 1337

    @Option(help: "Comma-separated destination ports never captured outbound.")
    var excludeOutbound: String = ""

    @Option(help: "Comma-separated destination ports never captured inbound.")
    var excludeInbound: String = "22"

    @Flag(help: "Do not capture inbound connections.")
    var noInbound = false

    @Option(help: "Network namespace (ip netns) to apply the rules in.")
    var netns: String?

    @Flag(help: "Apply the rules with nft inside --netns.")
    var apply = false

    @Flag(help: "Remove the rules (with --apply and --netns) instead of installing them.")
    var remove = false

    func run() throws {
        func ports(_ list: String, _ name: String) throws -> [UInt16] {
            try list.split(separator: ",").map {
                guard let p = UInt16($0.trimmingCharacters(in: .whitespaces)) else { throw ValidationError("\(name): \($0) is not a port") }
                return p
            }
        }
        let rules = CaptureRules(
            outboundPort: UInt16(basePort + 1), inboundPort: noInbound ? nil : UInt16(basePort + 6),
            exemptUID: uid < 0 ? nil : UInt32(uid), exemptGID: gid < 0 ? nil : UInt32(gid),
            excludeOutboundPorts: try ports(excludeOutbound, "--exclude-outbound"),
            excludeInboundPorts: try ports(excludeInbound, "--exclude-inbound"))
        let script = remove ? rules.removeScript : rules.nftScript
        guard apply else {
            print(script, terminator: "")
            return
        }
        guard let netns else { throw ValidationError("--apply needs --netns NAME (rules are only applied inside a network namespace)") }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
        p.arguments = ["netns", "exec", netns, "nft", "-f", "-"]
        let input = Pipe()
        p.standardInput = input
        try p.run()
        input.fileHandleForWriting.write(Data(script.utf8))
        try input.fileHandleForWriting.close()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else { throw ValidationError("nft failed in netns \(netns) (status \(p.terminationStatus))") }
    }
}
