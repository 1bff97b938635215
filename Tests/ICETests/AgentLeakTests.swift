import Foundation
import XCTest
@testable import ICE

/// Creating and closing many agents leaves no descriptors, threads or memory behind.
final class AgentLeakTests: XCTestCase {
    func testFiveHundredAgentsCreatedAndClosedLeaveNothingBehind() async throws {
        // Warm up: the shared loop thread, GLib's type system and caches exist from here on.
        try await cycle(20)
        let before = ProcessSnapshot()
        try await cycle(500)
        let after = ProcessSnapshot()
        XCTAssertEqual(ICEAgent.liveAgentCount, 0)
        // Descriptors opened since and still open (an earlier test's descriptor that another
        // thread closes meanwhile neither fails nor hides this), given 5 s to settle.
        var opened = ProcessSnapshot().descriptors(openedSince: before)
        for _ in 0..<100 where !opened.isEmpty {
            try await Task.sleep(for: .milliseconds(50))
            opened = ProcessSnapshot().descriptors(openedSince: before)
        }
        XCTAssertEqual(opened, [:], "descriptors left open")
        // Swift's cooperative pool and Dispatch start their (≤ 1 per core) workers lazily,
        // whenever this test happens to run first; a thread per agent would show as 500.
        XCTAssertLessThanOrEqual(after.threads - before.threads, ProcessInfo.processInfo.activeProcessorCount, "threads: \(before.threadNames) -> \(after.threadNames)")
        // GLib's threads and the ICE loop's (not the Gate's `ugate-gate-N` loops, which an
        // earlier test's loop group may still be stopping).
        let ice: (String) -> Bool = { $0.hasPrefix("ugate-ice") || $0.hasPrefix("gmain") || $0.hasPrefix("pool") }
        XCTAssertEqual(after.threadNames.filter(ice).count, before.threadNames.filter(ice).count,
                       "GLib and ICE loop threads: \(before.threadNames) -> \(after.threadNames)")
        // Allocator noise is a few MiB; a leaked agent (sockets, GObject, buffers) costs tens
        // of KiB, so 500 leaked agents would show well above this.
        XCTAssertLessThan(after.rssKiB - before.rssKiB, 8 * 1024, "resident memory grew from \(before.rssKiB) to \(after.rssKiB) KiB")
    }

    /// Creates `n` agents, each gathering on loopback, and closes them (half before gathering
    /// finished, half after).
    private func cycle(_ n: Int) async throws {
        for i in 0..<n {
            let agent = try ICEAgent(role: i % 2 == 0 ? .controlling : .controlled, configuration: .loopback)
            agent.start()
            if i % 2 == 0 {
                for await event in agent.events {
                    if case .localGatheringDone = event { break }
                }
            }
            await agent.close()
        }
        // The GTask of the last close drops its agent reference just after our callback.
        await ICEEventLoop.shared.submit {}
    }
}

/// Open descriptors (number → what it points to), threads and resident memory of this
/// process, from /proc.
struct ProcessSnapshot {
    let fds: [String: String]
    let threads: Int
    let rssKiB: Int
    let threadNames: [String]

    init() {
        let numbers = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
        fds = Dictionary(uniqueKeysWithValues: numbers.compactMap { number in
            (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/\(number)")).map { (number, $0) }
        })
        let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task")) ?? []
        threads = tasks.count
        threadNames = tasks.map { ((try? String(contentsOfFile: "/proc/self/task/\($0)/comm", encoding: .utf8)) ?? "?").trimmingCharacters(in: .whitespacesAndNewlines) }.sorted()
        let status = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
        let line = status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") } ?? ""
        rssKiB = Int(line.split(separator: " ").dropFirst().first ?? "") ?? -1
    }

    /// Descriptors open in this snapshot that were not open in `earlier`, or pointed elsewhere.
    func descriptors(openedSince earlier: ProcessSnapshot) -> [String: String] {
        fds.filter { earlier.fds[$0.key] != $0.value }
    }
}
