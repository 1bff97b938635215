import Foundation
import Glibc
import XCTest
@testable import ICE

/// A real coturn (`turnserver`) on 127.0.0.1 with random ports, started by a test and stopped
/// by its PID. Command line from shared/INTEROP.md.
final class Coturn: @unchecked Sendable {  // unchecked: fields are set in init; the test calls stop() from one task.
    let port: UInt16
    let user = "test"
    let password = "test"
    private let process = Process()
    private let directory: URL

    init() throws {
        guard let binary = ["/usr/bin/turnserver", "/usr/sbin/turnserver"].first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            throw NSError(domain: "ICETests", code: 3, userInfo: [NSLocalizedDescriptionKey: "turnserver not installed: apt-get install coturn (scripts/deps test)"])
        }
        port = try freePort()
        let relayBase = UInt16.random(in: 20000...59000)
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("ugate-coturn-\(getpid())-\(port)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = [
            "-n", "--listening-ip=127.0.0.1", "--relay-ip=127.0.0.1", "--listening-port=\(port)",
            "--lt-cred-mech", "--user=\(user):\(password)", "--realm=mesh.test", "--no-tls", "--no-dtls", "--no-cli",
            "--allow-loopback-peers", "--fingerprint", "--min-port=\(relayBase)", "--max-port=\(relayBase + 400)",
            "--pidfile=\(directory.path)/turnserver.pid", "--log-file=stdout", "--simple-log", "--verbose",
        ]
        _ = FileManager.default.createFile(atPath: directory.appendingPathComponent("turnserver.log").path, contents: nil)
        let log = try FileHandle(forWritingTo: directory.appendingPathComponent("turnserver.log"))
        process.standardOutput = log
        process.standardError = log
        try process.run()
        try waitForTCP(port: port, timeout: .seconds(10))
    }

    /// What coturn logged so far.
    var log: String {
        (try? String(contentsOf: directory.appendingPathComponent("turnserver.log"), encoding: .utf8)) ?? ""
    }

    /// Session ids with a successful ALLOCATE, and those refreshed with lifetime 0 (released).
    func allocations() -> (allocated: Set<String>, released: Set<String>) {
        var allocated = Set<String>()
        var released = Set<String>()
        for line in log.split(separator: "\n") {
            guard let range = line.range(of: "session "), let colon = line[range.upperBound...].firstIndex(of: ":") else { continue }
            let id = String(line[range.upperBound..<colon])
            if line.contains("ALLOCATE processed, success") { allocated.insert(id) }
            if line.contains("refreshed,"), line.hasSuffix("lifetime=0") { released.insert(id) }
        }
        return (allocated, released)
    }

    var stunURL: String { "stun:127.0.0.1:\(port)" }
    func turnServer(_ transport: String) -> ICEServer {
        ICEServer(url: "turn:127.0.0.1:\(port)?transport=\(transport)", username: user, credential: password)
    }

    /// Stops coturn by PID (SIGTERM, then SIGKILL after 1 s: coturn drains slowly) and removes its directory.
    func stop() {
        if process.isRunning {
            kill(process.processIdentifier, SIGTERM)
            let deadline = Date().addingTimeInterval(1)
            while process.isRunning && Date() < deadline { usleep(20_000) }
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
            process.waitUntilExit()
        }
        try? FileManager.default.removeItem(at: directory)
    }

    deinit { stop() }
}

/// Picks a port that is free for both UDP and TCP on 127.0.0.1 right now.
func freePort() throws -> UInt16 {
    for _ in 0..<50 {
        let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = 0
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) == 0 && getsockname(fd, $0, &len) == 0 }
        }
        guard bound else { continue }
        let port = UInt16(bigEndian: addr.sin_port)
        if canBindTCP(port) { return port }
    }
    throw NSError(domain: "ICETests", code: 1, userInfo: [NSLocalizedDescriptionKey: "no free port found"])
}

private func canBindTCP(_ port: UInt16) -> Bool {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    addr.sin_port = port.bigEndian
    return withUnsafePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
    }
}

/// Polls until something accepts TCP connections on 127.0.0.1:`port`.
func waitForTCP(port: UInt16, timeout: Duration) throws {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = port.bigEndian
        let ok = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
        close(fd)
        if ok { return }
        usleep(20_000)
    }
    throw NSError(domain: "ICETests", code: 2, userInfo: [NSLocalizedDescriptionKey: "nothing listening on 127.0.0.1:\(port) after \(timeout)"])
}
