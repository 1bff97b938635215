import ArgumentParser
import Foundation

/// `ugate bench-gate`: runs the gate benchmark script (`scripts/bench-gate`) of the source tree
/// this binary was built from.
struct BenchGate: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-gate",
        abstract: "Benchmark the gate against iperf3 direct, HAProxy, nginx, dante and tinyproxy (runs scripts/bench-gate).",
        discussion: """
            A command, not a test: it installs the anchors (Debian packages), builds ugate in release \
            mode, starts every server on loopback, prints a table of Gbit/s and ratios to direct and \
            to the best anchor, and stops everything it started. It takes several minutes and uses \
            every core; only ratios from one run are comparable.
            """)

    @Option(help: "Seconds per iperf3 measurement.")
    var seconds: Int = 5

    @Flag(help: "Use the existing release build.")
    var skipBuild = false

    @Option(help: "Run one part only: tcp, http, conn or mem.")
    var only: String?

    @Option(help: "The benchmark script (default: scripts/bench-gate of the source tree, found from the binary's or the current directory).")
    var script: String?

    func validate() throws {
        if let only, !["tcp", "http", "conn", "mem"].contains(only) {
            throw ValidationError("--only must be tcp, http, conn or mem, not \(only)")
        }
        guard seconds > 0 else { throw ValidationError("--seconds must be positive") }
    }

    func run() throws {
        guard let path = script ?? BenchGate.findScript() else {
            throw ValidationError("scripts/bench-gate not found above \(BenchGate.executableDirectory.path) or the current directory; pass --script PATH")
        }
        var arguments = ["--seconds", "\(seconds)"]
        if skipBuild { arguments.append("--skip-build") }
        if let only { arguments += ["--only", only] }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = arguments
        do {
            try process.run()
        } catch {
            throw ValidationError("cannot run \(path): \(error.localizedDescription)")
        }
        process.waitUntilExit()
        if process.terminationStatus != 0 { throw ExitCode(process.terminationStatus) }
    }

    static var executableDirectory: URL {
        URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent()
    }

    /// Walks up from the binary (`.build/<config>/ugate`) and from the current directory.
    static func findScript() -> String? {
        for start in [executableDirectory, URL(fileURLWithPath: FileManager.default.currentDirectoryPath)] {
            var dir = start
            for _ in 0..<6 {
                let candidate = dir.appendingPathComponent("scripts/bench-gate").path
                if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
                dir = dir.deletingLastPathComponent()
            }
        }
        return nil
    }
}
