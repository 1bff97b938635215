import Foundation
import Glibc
import XCTest

@testable import Gate

/// REDIRECT capture inside a network namespace this test creates: the node binary runs in it
/// with the exempt group, `ugate iptables --netns` installs the rules, and a client that knows
/// nothing of the proxy (curl) reaches an HTTP server through the node.
final class RedirectTests: XCTestCase {
    private var processes: [Process] = []
    private var namespace = ""

    override func tearDown() {
        for p in processes where p.isRunning {
            kill(p.processIdentifier, SIGTERM)
            for _ in 0..<50 where p.isRunning { usleep(100_000) }
            if p.isRunning { kill(p.processIdentifier, SIGKILL) }
            p.waitUntilExit()
        }
        processes = []
        if !namespace.isEmpty { _ = try? runProcess("/usr/sbin/ip", ["netns", "del", namespace]) }
    }

    private var ugatePath: String { ugateExecutable() }

    private func start(_ args: [String], log: String) throws -> Process {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
        p.arguments = ["netns", "exec", namespace] + args
        FileManager.default.createFile(atPath: log, contents: nil)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        p.standardOutput = handle
        p.standardError = handle
        try p.run()
        processes.append(p)
        return p
    }

    private func inNamespace(_ args: [String], timeout: Double = 30) throws -> (status: Int32, out: String, err: String) {
        try runProcess("/usr/sbin/ip", ["netns", "exec", namespace] + args, timeout: timeout)
    }

    /// curl in namespace `ns` until the HTTP server answers (bounded: 50 tries, 0.1 s apart).
    private func curlUntilServed(_ ns: String, _ url: String) throws -> (status: Int32, out: String, err: String) {
        var response = (status: Int32(-1), out: "", err: "")
        for _ in 0..<50 where response.status != 0 {
            response = try runProcess("/usr/sbin/ip", ["netns", "exec", ns, "curl", "-sS", "--max-time", "5", url])
            if response.status != 0 { usleep(100_000) }
        }
        return response
    }

    private func waitFor(_ path: String, _ fragments: [String], timeout: Double = 15) -> String? {
        let end = Date().addingTimeInterval(timeout)
        while Date() < end {
            let text = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
            if let line = text.split(separator: "\n").first(where: { l in fragments.allSatisfy { l.contains($0) } }) { return String(line) }
            usleep(100_000)
        }
        return nil
    }

    func testRedirectCaptureInNamespaceShowsOriginalDestination() throws {
        _ = try tool("nft")
        _ = try tool("curl")
        _ = try tool("setpriv")
        namespace = "ugate-gt-\(getpid())"
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent(namespace).path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }

        XCTAssertEqual(try runProcess("/usr/sbin/ip", ["netns", "add", namespace]).status, 0)
        XCTAssertEqual(try inNamespace(["ip", "link", "set", "lo", "up"]).status, 0)
        XCTAssertEqual(try inNamespace(["ip", "addr", "add", "10.77.0.2/32", "dev", "lo"]).status, 0)

        let nodeLog = "\(dir)/node.log"
        _ = try start(["setpriv", "--regid", "1337", "--clear-groups", ugatePath, "run", "--identity-dir", "\(dir)/id"], log: nodeLog)
        XCTAssertNotNil(waitFor(nodeLog, ["ready"]), (try? String(contentsOfFile: nodeLog, encoding: .utf8)) ?? "")
        let rules = try inNamespace([ugatePath, "iptables", "--netns", namespace, "--apply"])
        XCTAssertEqual(rules.status, 0, rules.err)
        // The rules are only inside the namespace (nft runs there).
        XCTAssertTrue(try inNamespace(["nft", "list", "table", "inet", "ugate"]).out.contains("redirect to :15001"))

        _ = try start(["python3", "-m", "http.server", "8000", "--bind", "10.77.0.2", "--directory", dir], log: "\(dir)/http.log")
        let response = try curlUntilServed(namespace, "http://10.77.0.2:8000/node.log")
        XCTAssertEqual(response.status, 0, response.err)
        XCTAssertTrue(response.out.contains("ready"), "the file came through: \(response.out)")

        let line = waitFor(nodeLog, ["stream", "listener=redirect-out", "dst=10.77.0.2:8000", "proto=http/1.1", "sni=10.77.0.2"])
        XCTAssertNotNil(line, (try? String(contentsOfFile: nodeLog, encoding: .utf8)) ?? "")

        // The node's metrics count the captured stream (its own traffic to 127.0.0.1 is not captured).
        let metrics = try inNamespace(["curl", "-sS", "--max-time", "5", "http://127.0.0.1:15000/metrics"])
        XCTAssertTrue(metrics.out.contains("ugate_gate_streams_opened_total"), metrics.out + metrics.err)

        let removed = try inNamespace([ugatePath, "iptables", "--netns", namespace, "--apply", "--remove"])
        XCTAssertEqual(removed.status, 0, removed.err)
    }

    /// IPv6 REDIRECT: the same Istio-style rules (an `inet` table) capture a connection to
    /// [fd77::2]:8000; the node's dual-stack listener recovers the destination with
    /// `IP6T_SO_ORIGINAL_DST` and the access log shows it.
    func testIPv6RedirectCaptureShowsOriginalDestination() throws {
        _ = try tool("nft")
        _ = try tool("curl")
        _ = try tool("setpriv")
        namespace = "ugate-g6-\(getpid())"
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent(namespace).path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        XCTAssertEqual(try runProcess("/usr/sbin/ip", ["netns", "add", namespace]).status, 0)
        XCTAssertEqual(try inNamespace(["ip", "link", "set", "lo", "up"]).status, 0)
        let added = try inNamespace(["ip", "-6", "addr", "add", "fd77::2/128", "dev", "lo", "nodad"])
        XCTAssertEqual(added.status, 0, added.err)

        let config = #"{"defaultListeners": false, "listeners": {"-:15001": {"proto": "redirect"}}}"#
        try config.write(toFile: "\(dir)/ugate.json", atomically: true, encoding: .utf8)
        let nodeLog = "\(dir)/node.log"
        _ = try start(["setpriv", "--regid", "1337", "--clear-groups", ugatePath, "run", "--config", "\(dir)/ugate.json", "--identity-dir", "\(dir)/id"], log: nodeLog)
        XCTAssertNotNil(waitFor(nodeLog, ["ready"]), (try? String(contentsOfFile: nodeLog, encoding: .utf8)) ?? "")
        let rules = try inNamespace([ugatePath, "iptables", "--netns", namespace, "--apply"])
        XCTAssertEqual(rules.status, 0, rules.err)

        try "over ipv6".write(toFile: "\(dir)/file.txt", atomically: true, encoding: .utf8)
        _ = try start(["python3", "-m", "http.server", "8000", "--bind", "fd77::2", "--directory", dir], log: "\(dir)/http.log")
        let response = try curlUntilServed(namespace, "http://[fd77::2]:8000/file.txt")
        XCTAssertEqual(response.status, 0, response.err)
        XCTAssertEqual(response.out, "over ipv6")
        let line = waitFor(nodeLog, ["stream", "listener=-:15001", "dst=[fd77::2]:8000", "src=[fd77::2]:", "proto=http/1.1"])
        XCTAssertNotNil(line, (try? String(contentsOfFile: nodeLog, encoding: .utf8)) ?? "")
    }

    /// Addresses of the TPROXY topology per family.
    private struct TProxyAddresses {
        var client, gateway, node, any, nodeInside, server, serverPrefix, target: String
        static let v4 = TProxyAddresses(
            client: "10.88.0.2/24", gateway: "10.88.0.1", node: "10.88.0.1/24", any: "0.0.0.0/0", nodeInside: "10.66.0.1/24",
            server: "10.66.0.2", serverPrefix: "10.66.0.2/24", target: "10.99.0.9/32")
        static let v6 = TProxyAddresses(
            client: "fd88::2/64", gateway: "fd88::1", node: "fd88::1/64", any: "::/0", nodeInside: "fd66::1/64",
            server: "fd66::2", serverPrefix: "fd66::2/64", target: "fd99::9/128")
    }

    /// The TPROXY topology (IPv4 shown; `ipv6` uses the fd88/fd66/fd99 equivalents): a client namespace (10.88.0.2, default route via the node) joined by
    /// a veth to the node's namespace (`namespace`, 10.88.0.1) whose policy routing delivers
    /// packets marked 1 locally (what `tproxy … meta mark set 1` needs). 10.99.0.9 lives on the
    /// node namespace's lo, or with `server` in a third namespace behind it (10.66.0.2).
    /// Applies `rule` (an nft prerouting statement; `IIF` stands for the node's client-side veth)
    /// and starts the node with `config`; returns the node's log path.
    private func tproxyTopology(client: String, server: String?, rule: String, config: String, dir: String, ipv6: Bool = false) throws -> String {
        let tag = getpid() % 100000
        let a = ipv6 ? TProxyAddresses.v6 : TProxyAddresses.v4
        let ipf = ["ip", ipv6 ? "-6" : "-4"]
        let nodad = ipv6 ? ["nodad"] : []
        let (cv, nv, nsv, sv) = ("utc\(tag)", "utn\(tag)", "utm\(tag)", "uts\(tag)")
        var links = [
            ["netns", "add", namespace], ["netns", "add", client],
            ["link", "add", cv, "netns", client, "type", "veth", "peer", "name", nv, "netns", namespace],
        ]
        var setup = [
            (client, ["ip", "link", "set", "lo", "up"]), (client, ipf + ["addr", "add", a.client, "dev", cv] + nodad),
            (client, ["ip", "link", "set", cv, "up"]), (client, ipf + ["route", "add", "default", "via", a.gateway]),
            (namespace, ["ip", "link", "set", "lo", "up"]), (namespace, ipf + ["addr", "add", a.node, "dev", nv] + nodad),
            (namespace, ["ip", "link", "set", nv, "up"]),
            (namespace, ipf + ["rule", "add", "fwmark", "1", "lookup", "100"]),
            (namespace, ipf + ["route", "add", "local", a.any, "dev", "lo", "table", "100"]),
        ]
        if let server {
            links += [["netns", "add", server], ["link", "add", nsv, "netns", namespace, "type", "veth", "peer", "name", sv, "netns", server]]
            setup += [
                (namespace, ipf + ["addr", "add", a.nodeInside, "dev", nsv] + nodad), (namespace, ["ip", "link", "set", nsv, "up"]),
                (namespace, ipf + ["route", "add", a.target, "via", a.server]),
                (server, ["ip", "link", "set", "lo", "up"]), (server, ipf + ["addr", "add", a.serverPrefix, "dev", sv] + nodad),
                (server, ["ip", "link", "set", sv, "up"]), (server, ipf + ["addr", "add", a.target, "dev", "lo"] + nodad),
            ]
        } else {
            setup.append((namespace, ipf + ["addr", "add", a.target, "dev", "lo"] + nodad))
        }
        for cmd in links {
            let r = try runProcess("/usr/sbin/ip", cmd)
            XCTAssertEqual(r.status, 0, "\(cmd): \(r.err)")
        }
        for (ns, cmd) in setup {
            let r = try runProcess("/usr/sbin/ip", ["netns", "exec", ns] + cmd)
            XCTAssertEqual(r.status, 0, "\(cmd): \(r.err)")
        }
        let rules = """
            table \(ipv6 ? "ip6" : "ip") ugate_tproxy {
                chain prerouting {
                    type filter hook prerouting priority mangle; policy accept;
                    \(rule.replacingOccurrences(of: "IIF", with: "\"\(nv)\""))
                }
            }
            """
        try rules.write(toFile: "\(dir)/tproxy.nft", atomically: true, encoding: .utf8)
        let applied = try inNamespace(["nft", "-f", "\(dir)/tproxy.nft"])
        XCTAssertEqual(applied.status, 0, applied.err)

        try config.write(toFile: "\(dir)/ugate.json", atomically: true, encoding: .utf8)
        let nodeLog = "\(dir)/node.log"
        _ = try start([ugatePath, "run", "--config", "\(dir)/ugate.json", "--identity-dir", "\(dir)/id"], log: nodeLog)
        XCTAssertNotNil(waitFor(nodeLog, ["ready"]), (try? String(contentsOfFile: nodeLog, encoding: .utf8)) ?? "")
        return nodeLog
    }

    /// TPROXY: a client in one namespace talks to 10.99.0.9:8000 through a second namespace
    /// whose prerouting hook TPROXYs the connection to the node's transparent listener; the
    /// node learns the destination from the socket's local address and dials it.
    func testTPROXYCaptureBetweenNamespaces() throws {
        _ = try tool("nft")
        _ = try tool("curl")
        namespace = "ugate-gtp-\(getpid())"
        let client = "ugate-gtc-\(getpid())"
        defer { _ = try? runProcess("/usr/sbin/ip", ["netns", "del", client]) }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent(namespace).path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let nodeLog = try tproxyTopology(
            client: client, server: nil, rule: "iifname IIF tcp dport 8000 tproxy to :15007 meta mark set 1 accept",
            config: #"{"defaultListeners": false, "listeners": {"0.0.0.0:15007": {"proto": "tproxy"}}}"#, dir: dir)
        try "tproxied".write(toFile: "\(dir)/file.txt", atomically: true, encoding: .utf8)
        _ = try start(["python3", "-m", "http.server", "8000", "--bind", "10.99.0.9", "--directory", dir], log: "\(dir)/http.log")

        let response = try curlUntilServed(client, "http://10.99.0.9:8000/file.txt")
        XCTAssertEqual(response.status, 0, response.err)
        XCTAssertEqual(response.out, "tproxied")
        let line = waitFor(nodeLog, ["stream", "listener=0.0.0.0:15007", "dst=10.99.0.9:8000", "src=10.88.0.2"])
        XCTAssertNotNil(line, (try? String(contentsOfFile: nodeLog, encoding: .utf8)) ?? "")
    }

    /// TPROXY UDP: a client in one namespace sends to 10.99.0.9:9000, which lives in a third
    /// namespace behind the node's; the node's prerouting hook TPROXYs the datagrams to a
    /// transparent UDP listener, the node forwards them from its own address and sends the
    /// echo back from 10.99.0.9:9000 (the client's socket is connected to that address, so it
    /// only accepts replies from there).
    func testTPROXYUDPBetweenNamespaces() throws {
        try checkTPROXYUDP(ipv6: false, tag: "gu", sends: ["one", "two", "three"].map { ($0, 9000, true) })
    }

    /// The same over IPv6 (`IPV6_TRANSPARENT`, `IPV6_ORIGDSTADDR`), to [fd99::9]:9000.
    func testTPROXYUDPOverIPv6BetweenNamespaces() throws {
        try checkTPROXYUDP(ipv6: true, tag: "g6u", sends: ["one", "two", "three"].map { ($0, 9000, true) })
    }

    /// TPROXY UDP flows follow the route table: datagrams to 10.99.0.9:9001 go to the `hosts`
    /// entry `echo` (10.99.0.9:9000) and the reply still comes from :9001; a flow to :9002 is
    /// denied (no reply, one log line), and a flow to :9000 keeps working beside them.
    func testTPROXYUDPFollowsRoutes() throws {
        let routes = """
            "udpIdleTimeout": 1, "hosts": {"echo": {"addr": "10.99.0.9:9000"}},
            "routes": [{"dest": "10.99.0.9:9001", "to": "echo"}, {"dest": "10.99.0.9:9002", "to": "deny"}]
            """
        try checkTPROXYUDP(
            ipv6: false, tag: "gr", routes: routes, sends: [("aliased", 9001, true), ("denied", 9002, false), ("direct", 9000, true)],
            logLines: [
                ["udp flow refused", "dst=10.99.0.9:9002", "denied by the route table"],
                ["udp flow", "dst=10.99.0.9:9001", "to=10.99.0.9:9000", "end=idle"],
            ])
    }

    /// Sends each word to the target's port from the client namespace (resending on loss) and
    /// checks the echo comes back from that port via the node — or, for `replies: false`, that
    /// none comes back; then waits for each of `logLines` (fragments of one line) in the node's log.
    private func checkTPROXYUDP(
        ipv6: Bool, tag: String, routes: String? = nil, sends: [(word: String, port: Int, replies: Bool)], logLines: [[String]] = []
    ) throws {
        _ = try tool("nft")
        namespace = "ugate-\(tag)p-\(getpid())"
        let client = "ugate-\(tag)c-\(getpid())"
        let server = "ugate-\(tag)s-\(getpid())"
        defer {
            _ = try? runProcess("/usr/sbin/ip", ["netns", "del", client])
            _ = try? runProcess("/usr/sbin/ip", ["netns", "del", server])
        }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent(namespace).path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let ip = "/usr/sbin/ip"
        let listener = ipv6 ? "udp://[::]:15008" : "udp://0.0.0.0:15008"
        let (target, node, family) = ipv6 ? ("fd99::9", "fd66::1", "AF_INET6") : ("10.99.0.9", "10.66.0.1", "AF_INET")
        let ports = Set(sends.map(\.port)).sorted().map(String.init).joined(separator: ", ")
        let nodeLog = try tproxyTopology(
            client: client, server: server, rule: "iifname IIF udp dport { \(ports) } tproxy to :15008 meta mark set 1 accept",
            config: #"{"defaultListeners": false, "listeners": {"\#(listener)": {"proto": "tproxy"}}\#(routes.map { ", " + $0 } ?? "")}"#,
            dir: dir, ipv6: ipv6)
        XCTAssertTrue(((try? String(contentsOfFile: nodeLog, encoding: .utf8)) ?? "").contains("\(listener) tproxy"))

        // The echo server names the source it saw, so the test proves the node sent it.
        let echo = """
            import socket
            s = socket.socket(socket.\(family), socket.SOCK_DGRAM)
            s.bind(("\(target)", 9000))
            while True:
                data, src = s.recvfrom(65536)
                s.sendto(b"echo " + data + b" via " + src[0].encode(), src)
            """
        let serverProcess = Process()
        serverProcess.executableURL = URL(fileURLWithPath: ip)
        serverProcess.arguments = ["netns", "exec", server, "python3", "-c", echo]
        try serverProcess.run()
        processes.append(serverProcess)

        let plan = sends.map { "(\"\($0.word)\", \($0.port), \($0.replies ? "True" : "False"))" }.joined(separator: ", ")
        let probe = """
            import socket, sys
            got = []
            for word, port, replies in [\(plan)]:
                s = socket.socket(socket.\(family), socket.SOCK_DGRAM)
                s.connect(("\(target)", port))
                s.settimeout(0.5)
                line = "%s: no reply" % word
                for attempt in range(20 if replies else 4):
                    s.send(word.encode())
                    try:
                        data, src = s.recvfrom(65536)
                        # A resent word can be echoed more than once: skip earlier words' echoes.
                        while not data.startswith(b"echo " + word.encode() + b" "):
                            data, src = s.recvfrom(65536)
                    except socket.timeout:
                        continue
                    line = "%s from %s:%d" % (data.decode(), src[0], src[1])
                    break
                got.append(line)
            print("\\n".join(got))
            """
        let result = try runProcess(ip, ["netns", "exec", client, "python3", "-c", probe], timeout: 60)
        XCTAssertEqual(result.status, 0, result.err)
        XCTAssertEqual(
            result.out.split(separator: "\n").map(String.init),
            sends.map { $0.replies ? "echo \($0.word) via \(node) from \(target):\($0.port)" : "\($0.word): no reply" },
            (try? String(contentsOfFile: nodeLog, encoding: .utf8)) ?? "")
        for fragments in logLines {
            XCTAssertNotNil(waitFor(nodeLog, fragments), "\(fragments): " + ((try? String(contentsOfFile: nodeLog, encoding: .utf8)) ?? ""))
        }
    }
}
