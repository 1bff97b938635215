import ArgumentParser

/// `ugate run`: starts a node.
struct Run: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Start a node: capture listeners, admin port and mesh listeners.")

    @Option(help: "JSON config file (ugate.json format).")
    var config: String?

    @Option(help: "Base port; listeners use base + offset (see README).")
    var basePort: Int?

    func run() async throws {
        throw ValidationError("the node is not built yet")
    }
}
