import Foundation
import Logging

extension RouteManifests {
    /// The routes attached to `listener` of `gateway`: a route attaches when a `parentRefs`
    /// entry names the gateway (and the listener, when it gives `sectionName`). Routes without
    /// `parentRefs` attach to every listener, so a folder of bare HTTPRoutes works without a
    /// Gateway manifest.
    public func routes(for gateway: GatewayObject, listener: GatewayObject.Listener) -> [HTTPRouteObject] {
        routes.filter { route in
            route.parents.isEmpty
                || route.parents.contains {
                    $0.name == gateway.name && $0.namespace == gateway.namespace && ($0.sectionName == nil || $0.sectionName == listener.name)
                }
        }
    }
}

/// Watches a manifest folder and hands every valid new set of manifests to `apply`.
///
/// Polls the folder's file names, sizes and modification times every `interval` seconds
/// (no inotify: works on every file system, and a burst of writes is one reload). An invalid
/// set is logged with the error naming file, object and field, and the previous routes stay
/// in force; connections are never touched (the gateway swaps its table under a mutex).
public final class HTTPRouteReloader: Sendable {
    private let task: Task<Void, Never>

    public init(
        directory: String, loader: HTTPRouteLoader, interval: Double = 1, log: Logger = Logger(label: "ugate.httproute"),
        apply: @escaping @Sendable (RouteManifests) -> Void
    ) {
        task = Task {
            var last = Self.fingerprint(directory)
            while !Task.isCancelled {
                try? await Task.sleep(for: .milliseconds(Int(interval * 1000)))
                let current = Self.fingerprint(directory)
                guard current != last else { continue }
                last = current
                do {
                    let manifests = try loader.load(directory: directory)
                    apply(manifests)
                    log.info("routes reloaded", metadata: ["dir": "\(directory)", "routes": "\(manifests.routes.count)"])
                } catch {
                    log.error("routes not reloaded, keeping the previous ones", metadata: ["dir": "\(directory)", "error": "\(error)"])
                }
            }
        }
    }

    /// Stops watching.
    public func stop() { task.cancel() }

    static func fingerprint(_ directory: String) -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return names.sorted().map { name in
            let attributes = try? FileManager.default.attributesOfItem(atPath: (directory as NSString).appendingPathComponent(name))
            let modified = (attributes?[.modificationDate] as? Date)?.timeIntervalSince1970 ?? 0
            return "\(name) \(attributes?[.size] as? Int ?? -1) \(modified)"
        }
    }
}
