import ArgumentParser

/// The `ugate` command line: a thin layer that parses flags and config and starts services.
@main
struct Ugate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ugate",
        abstract: "A WebRTC/ICE-capable peer mesh node and TCP/UDP gateway.",
        subcommands: [Run.self, IPTables.self, BenchGate.self, BenchICE.self, Id.self, BenchMesh.self, Push.self, WebRTC.self, HTTPRouteCommand.self]
    )
}
