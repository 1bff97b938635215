import Foundation
import Glibc
import Logging

/// Watches a manifest folder and hands every valid new set of manifests to `apply`; calls
/// `tick` on every poll (the TLS listeners re-read changed certificate files there).
///
/// Polls the folder's file names and a `FileStamp` of each (one `stat`: inode, size, times)
/// every `interval` seconds (no inotify: works on every file system, and a burst of writes is
/// one reload); files are read only when a stamp changed. An invalid
/// set is logged with the error naming file, object and field, and the previous routes stay
/// in force; connections are never touched (the gateway swaps its table under a mutex).
public final class HTTPRouteReloader: @unchecked Sendable {  // the timer is set up in init; cancel() is thread-safe
    private let timer: any DispatchSourceTimer

    public init(
        directory: String, loader: HTTPRouteLoader, interval: Double = 1, log: Logger = Logger(label: "ugate.httproute"),
        queue: DispatchQueue = DispatchQueue(label: "ugate.httproute.reloader"), tick: (@Sendable () -> Void)? = nil,
        apply: @escaping @Sendable (RouteManifests) -> Void
    ) {
        // A timer on a serial queue of the reloader's (the caller's when it hands work to it
        // too): the file reads block, so they stay off the concurrency pool (and a busy pool
        // cannot delay a reload).
        let state = FingerprintBox(Self.fingerprint(directory))
        timer = DispatchSource.makeTimerSource(queue: queue)
        timer.schedule(deadline: .now() + interval, repeating: interval)
        timer.setEventHandler {
            // Files the manifests point at (certificates) are checked on the same timer.
            tick?()
            let current = Self.fingerprint(directory)
            guard !FileStamp.same(current, state.last) else { return }
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

    /// File name → stamp of every entry of `directory` (one `stat` each, no read).
    static func fingerprint(_ directory: String) -> [String: FileStamp?] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        var stamps: [String: FileStamp?] = [:]
        for name in names { stamps[name] = FileStamp(directory + "/" + name) }
        return stamps
    }
}

/// What one `stat(2)` says about a file — device, inode, size, modification and status-change
/// times in nanoseconds — so the reload timer notices a changed file without reading it: a
/// file replaced by `rename` has a new inode, one written in place a new ctime (which no
/// `utime` can set back) and usually a new size and mtime.
///
/// A file whose status changed within `recent` seconds (2 by default) also carries a hash of
/// its content: on a file system with coarse timestamps two same-size writes within one tick
/// would otherwise look alike. Older files are never read by the check.
struct FileStamp: Equatable, Sendable {
    var device: UInt64
    var inode: UInt64
    var size: Int64
    var modified: Int64
    var changed: Int64
    /// Hash of the content, for recently changed files only (see above).
    var content: Int?

    /// The stamp of `path`; nil when it does not exist or cannot be `stat`ed.
    init?(_ path: String, now: Date = Date(), recent: Double = 2) {
        var info = stat()
        guard stat(path, &info) == 0 else { return nil }
        device = UInt64(info.st_dev)
        inode = UInt64(info.st_ino)
        size = Int64(info.st_size)
        modified = Int64(info.st_mtim.tv_sec) * 1_000_000_000 + Int64(info.st_mtim.tv_nsec)
        changed = Int64(info.st_ctim.tv_sec) * 1_000_000_000 + Int64(info.st_ctim.tv_nsec)
        if Double(changed) / 1e9 > now.timeIntervalSince1970 - recent {
            content = FileManager.default.contents(atPath: path)?.hashValue
        }
    }

    /// Whether `self` and `other` describe the same file state: equal `stat` fields and, when
    /// both carry one, equal content hashes (a stamp that aged past `recent` has none).
    func same(as other: FileStamp?) -> Bool {
        guard let other else { return false }
        guard device == other.device, inode == other.inode, size == other.size, modified == other.modified, changed == other.changed else {
            return false
        }
        guard let content, let previous = other.content else { return true }
        return content == previous
    }

    /// Whether two sets of stamps (by name) describe the same files.
    static func same<Key: Hashable>(_ a: [Key: FileStamp?], _ b: [Key: FileStamp?]) -> Bool {
        guard a.count == b.count else { return false }
        for (key, stamp) in a {
            guard let old = b[key] else { return false }
            if stamp == nil && old == nil { continue }
            guard let stamp, stamp.same(as: old) else { return false }
        }
        return true
    }
}

/// The last fingerprint seen by a reloader.
private final class FingerprintBox: @unchecked Sendable {  // only the reloader's serial queue touches `last`
    var last: [String: FileStamp?]
    init(_ last: [String: FileStamp?]) { self.last = last }
}
