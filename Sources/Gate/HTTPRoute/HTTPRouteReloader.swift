import Foundation
import Logging

/// Watches a manifest folder and hands every valid new set of manifests to `apply`; calls
/// `tick` on every poll (the TLS listeners re-read changed certificate files there).
///
/// Polls the folder's file names, sizes, modification times and contents every `interval` seconds
/// (no inotify: works on every file system, and a burst of writes is one reload). An invalid
/// set is logged with the error naming file, object and field, and the previous routes stay
/// in force; connections are never touched (the gateway swaps its table under a mutex).
public final class HTTPRouteReloader: @unchecked Sendable {  // the timer is set up in init; cancel() is thread-safe
    private let timer: any DispatchSourceTimer

    public init(
        directory: String, loader: HTTPRouteLoader, interval: Double = 1, log: Logger = Logger(label: "ugate.httproute"),
        tick: (@Sendable () -> Void)? = nil, apply: @escaping @Sendable (RouteManifests) -> Void
    ) {
        // A timer on a private serial queue: the file reads block, so they stay off the
        // concurrency pool (and a busy pool cannot delay a reload).
        let queue = DispatchQueue(label: "ugate.httproute.reloader")
        let state = FingerprintBox(Self.fingerprint(directory))
        timer = DispatchSource.makeTimerSource(queue: queue)
        timer.schedule(deadline: .now() + interval, repeating: interval)
        timer.setEventHandler {
            // Files the manifests point at (certificates) are checked on the same timer.
            tick?()
            let current = Self.fingerprint(directory)
            guard current != state.last else { return }
            state.last = current
            do {
                let manifests = try loader.load(directory: directory)
                apply(manifests)
                log.info("routes reloaded", metadata: ["dir": "\(directory)", "routes": "\(manifests.routes.count)"])
            } catch {
                log.error("routes not reloaded, keeping the previous ones", metadata: ["dir": "\(directory)", "error": "\(error)"])
            }
        }
        timer.resume()
    }

    /// Stops watching.
    public func stop() { timer.cancel() }

    static func fingerprint(_ directory: String) -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return names.sorted().map { name in
            let attributes = try? FileManager.default.attributesOfItem(atPath: (directory as NSString).appendingPathComponent(name))
            let modified = (attributes?[.modificationDate] as? Date)?.timeIntervalSince1970 ?? 0
            // The content's hash too: an edit within the mtime's resolution that keeps the size still counts.
            let content = FileManager.default.contents(atPath: (directory as NSString).appendingPathComponent(name))?.hashValue ?? 0
            return "\(name) \(attributes?[.size] as? Int ?? -1) \(modified) \(content)"
        }
    }
}

/// The last fingerprint seen by a reloader.
private final class FingerprintBox: @unchecked Sendable {  // only the reloader's serial queue touches `last`
    var last: [String]
    init(_ last: [String]) { self.last = last }
}
