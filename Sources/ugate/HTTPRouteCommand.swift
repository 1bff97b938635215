import ArgumentParser
import Foundation
import Gate

/// `ugate httproute`: tools for the HTTPRoute gateway's manifests.
struct HTTPRouteCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "httproute", abstract: "Inspect HTTPRoute / TLSRoute manifests.", subcommands: [Status.self])

    /// `ugate httproute status`: the Gateway API conditions of every route in a manifest folder.
    struct Status: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print, per route and parentRef, whether it is Accepted and its references resolved (and why not).",
            discussion: """
                Loads the folder the way `ugate run` does (an invalid manifest is reported with its file, \
                object and field, exit status 1). With --config, the `httproute` section's services map \
                resolves backend ports and its listeners count as parents for Gateways not in the folder. \
                Exit status 2 when some route is not Accepted or has unresolved references.
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
            let statuses = RouteStatus.compute(loaded, listeners: section?.listeners ?? [])
            print(json ? RouteStatus.json(statuses) : RouteStatus.table(statuses))
            let healthy = statuses.allSatisfy { $0.parents.allSatisfy { $0.conditions.allSatisfy { $0.status == "True" } } }
            if !healthy { throw ExitCode(2) }
        }
    }
}
