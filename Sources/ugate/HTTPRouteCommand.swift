import ArgumentParser
import Foundation
import Gate

/// `ugate httproute`: tools for the HTTPRoute gateway's manifests.
struct HTTPRouteCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "httproute", abstract: "Inspect HTTPRoute / TLSRoute manifests.", subcommands: [Status.self])

    /// `ugate httproute status`: the Gateway API conditions of every route and Gateway listener
    /// in a manifest folder.
    struct Status: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print the Gateway API status of every route (Accepted, ResolvedRefs per parentRef) and Gateway listener.",
            discussion: """
                Loads the folder the way `ugate run` does (an invalid manifest is reported with its file, \
                object and field, exit status 1). Routes: Accepted and ResolvedRefs per parentRef. Gateway \
                listeners: Accepted, ResolvedRefs (certificateRefs: permitted, PEM files present and valid), \
                Programmed (served by a listener of the httproute config), Conflicted, and the number of \
                attached routes. With --config, the `httproute` section's services map resolves backend \
                ports, its listeners count as parents for Gateways not in the folder and decide Programmed \
                (without it: Unknown); ports are not bound by this check (`ugate run` reports binding on \
                its admin port, /httproute/status). Exit status 2 when some condition is False (or \
                Conflicted is True).
                """)

        @Option(help: "Folder of Gateway API manifests (default: the config's httproute.manifests).")
        var manifests: String?

        @Option(help: "ugate.json whose httproute section supplies services and listeners.")
        var config: String?

        @Flag(help: "Print JSON instead of a table.")
        var json = false

        func run() throws {
            var section: HTTPRouteConfig?
            if let config {
                let data: Data
                do {
                    data = try Data(contentsOf: URL(fileURLWithPath: config))
                } catch {
                    throw ValidationError("cannot read \(config): \(error.localizedDescription)")
                }
                section = try Run.decode(data).0.httproute
            }
            guard let directory = manifests ?? section?.manifests else {
                throw ValidationError("give --manifests DIR (or a --config with an httproute section)")
            }
            let loaded: RouteManifests
            do {
                loaded = try HTTPRouteLoader(services: section?.services ?? [:]).load(directory: directory)
            } catch {
                FileHandle.standardError.write(Data("error: \(error)\n".utf8))
                throw ExitCode(1)
            }
            let report = HTTPRouteStatusReport.compute(loaded, listeners: section.map { $0.listeners.map { ConfiguredListenerState.offline($0, manifests: loaded) } })
            print(json ? report.json : report.table)
            if !report.healthy { throw ExitCode(2) }
        }
    }
}
