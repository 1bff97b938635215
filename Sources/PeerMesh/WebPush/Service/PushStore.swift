#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// The push service's embedded store: one directory per subscription holding `subscription.json`
/// and one `<message id>.json` per undelivered durable message. Every file is written to a temporary
/// name, fsync'd, renamed into place and the directory fsync'd, so a crash leaves either the old or
/// the new file, never a torn one. Chosen over a database because messages are small (≤ 4 KiB),
/// queues are short and bounded, access is by key only, and the layout needs no dependency and can
/// be inspected with `ls` and `cat`.
///
/// Immutable configuration only; `PushService` (an actor) serializes the writes of one service.
public final class FilePushStore: Sendable {
    public let directory: String
    private let sync: Bool

    /// - Parameter sync: fsync files and directories (crash-safe). Only benchmarks turn it off.
    public init(directory: String, sync: Bool = true) throws {
        self.directory = directory
        self.sync = sync
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    /// Reads every stored subscription and message. Unreadable files are skipped and reported.
    public func load() -> (subscriptions: [PushSubscriptionRecord], messages: [PushMessage], problems: [String]) {
        var subs: [PushSubscriptionRecord] = []
        var messages: [PushMessage] = []
        var problems: [String] = []
        let decoder = JSONDecoder()
        let fm = FileManager.default
        for dir in (try? fm.contentsOfDirectory(atPath: directory)) ?? [] {
            let path = directory + "/" + dir
            for name in (try? fm.contentsOfDirectory(atPath: path)) ?? [] where name.hasSuffix(".json") {
                let file = path + "/" + name
                do {
                    let data = try Data(contentsOf: URL(fileURLWithPath: file))
                    if name == "subscription.json" {
                        subs.append(try decoder.decode(PushSubscriptionRecord.self, from: data))
                    } else {
                        messages.append(try decoder.decode(PushMessage.self, from: data))
                    }
                } catch {
                    problems.append("\(file): \(error)")
                }
            }
        }
        return (subs, messages, problems)
    }

    /// Performs the state machine's store actions in order.
    public func apply(_ actions: [PushServiceState.StoreAction]) throws {
        let encoder = JSONEncoder()
        for action in actions {
            switch action {
            case .saveSubscription(let s):
                try writeAtomically(try encoder.encode(s), dir: subscriptionDirectory(s.id), name: "subscription.json")
            case .saveMessage(let m):
                try writeAtomically(try encoder.encode(m), dir: subscriptionDirectory(m.subscription), name: m.id + ".json")
            case .removeMessage(let sid, let id):
                try remove(subscriptionDirectory(sid) + "/" + id + ".json")
                try syncDirectory(subscriptionDirectory(sid))
            case .removeSubscription(let id):
                let dir = subscriptionDirectory(id)
                for name in (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? [] {
                    try remove(dir + "/" + name)
                }
                guard rmdir(dir) == 0 || errno == ENOENT else { throw storeError("rmdir", dir) }
                try syncDirectory(directory)
            }
        }
    }

    private func subscriptionDirectory(_ id: String) -> String { directory + "/" + id }

    private func writeAtomically(_ data: Data, dir: String, name: String) throws {
        if mkdir(dir, 0o700) != 0 && errno != EEXIST { throw storeError("mkdir", dir) }
        let temp = dir + "/." + name + ".tmp"
        let fd = open(temp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw storeError("open", temp) }
        defer { close(fd) }
        try data.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count {
                let n = write(fd, raw.baseAddress! + offset, raw.count - offset)
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else { throw storeError("write", temp) }
                offset += n
            }
        }
        if sync && fsync(fd) != 0 { throw storeError("fsync", temp) }
        guard rename(temp, dir + "/" + name) == 0 else { throw storeError("rename", temp) }
        try syncDirectory(dir)
    }

    private func remove(_ path: String) throws {
        guard unlink(path) == 0 || errno == ENOENT else { throw storeError("unlink", path) }
    }

    private func syncDirectory(_ dir: String) throws {
        guard sync else { return }
        let fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw storeError("open", dir) }
        defer { close(fd) }
        guard fsync(fd) == 0 else { throw storeError("fsync", dir) }
    }

    private func storeError(_ call: String, _ path: String) -> WebPushError {
        WebPushError(.store, "\(call)(\(path)) failed: \(String(cString: strerror(errno)))")
    }
}
