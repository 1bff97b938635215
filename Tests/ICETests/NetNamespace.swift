import Foundation
import Glibc
import XCTest

/// A network namespace created by a test (`ip netns add ugate-ice-<pid>-<n>`) with extra
/// addresses on its loopback, deleted by ``delete()`` — nothing touches the host's interfaces.
final class NetNamespace {
    let name: String
    var path: String { "/var/run/netns/\(name)" }
    private var deleted = false

    init(addresses: [String]) throws {
        name = "ugate-ice-\(getpid())-\(UInt16.random(in: 0...UInt16.max))"
        try run("/usr/sbin/ip", "netns", "add", name)
        do {
            try run("/usr/sbin/ip", "-n", name, "link", "set", "lo", "up")
            for a in addresses { try run("/usr/sbin/ip", "-n", name, "addr", "add", "\(a)/32", "dev", "lo") }
        } catch {
            delete()
            throw error
        }
    }

    /// Loads an nftables ruleset inside the namespace.
    func nft(_ ruleset: String) throws {
        try run("/usr/sbin/ip", "netns", "exec", name, "nft", "-f", "-", input: ruleset)
    }

    /// Starts a process inside the namespace (`ip netns exec` execs it, so the PID is its own).
    func spawn(_ arguments: [String]) throws -> Process {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
        p.arguments = ["netns", "exec", name] + arguments
        p.standardOutput = FileHandle(forWritingAtPath: "/dev/null")
        p.standardError = FileHandle(forWritingAtPath: "/dev/null")
        try p.run()
        return p
    }

    /// Waits until something listens on TCP `port` inside the namespace.
    func waitForListener(port: UInt16, timeout: Duration = .seconds(10)) throws {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            let out = try run("/usr/sbin/ip", "netns", "exec", name, "ss", "-Hltn", "sport = :\(port)")
            if !out.isEmpty { return }
            usleep(50_000)
        }
        throw NSError(domain: "ICETests", code: 5, userInfo: [NSLocalizedDescriptionKey: "nothing listening on port \(port) in \(name)"])
    }

    func delete() {
        guard !deleted else { return }
        deleted = true
        _ = try? run("/usr/sbin/ip", "netns", "del", name)
    }

    deinit { delete() }
}

/// Runs a command, failing with its stderr when it exits non-zero; returns its stdout.
@discardableResult
func run(_ arguments: String..., input: String? = nil) throws -> String {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: arguments[0])
    p.arguments = Array(arguments.dropFirst())
    let out = Pipe()
    let err = Pipe()
    p.standardOutput = out
    p.standardError = err
    let inPipe = Pipe()
    if input != nil { p.standardInput = inPipe }
    try p.run()
    if let input {
        inPipe.fileHandleForWriting.write(Data(input.utf8))
        try inPipe.fileHandleForWriting.close()
    }
    let stdout = out.fileHandleForReading.readDataToEndOfFile()
    let stderr = err.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    guard p.terminationStatus == 0 else {
        throw NSError(domain: "ICETests", code: Int(p.terminationStatus), userInfo: [
            NSLocalizedDescriptionKey: "\(arguments.joined(separator: " ")) failed: \(String(decoding: stderr, as: UTF8.self))",
        ])
    }
    return String(decoding: stdout, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
}
