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
        XCTAssertEqual(after.openFDs, before.openFDs, "open descriptors")
        // Swift's cooperative pool and Dispatch start their (≤ 1 per core) workers lazily,
        // whenever this test happens to run first; a thread per agent would show as 500.
        XCTAssertLessThanOrEqual(after.threads - before.threads, ProcessInfo.processInfo.activeProcessorCount, "threads: \(before.threadNames) -> \(after.threadNames)")
        XCTAssertEqual(after.threadNames.filter { $0.hasPrefix("ugate") || $0.hasPrefix("gmain") || $0.hasPrefix("pool") }.count,
                       before.threadNames.filter { $0.hasPrefix("ugate") || $0.hasPrefix("gmain") || $0.hasPrefix("pool") }.count,
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

/// Open descriptors, threads and resident memory of this process, from /proc.
struct ProcessSnapshot {
    let openFDs: Int
    let threads: Int
    let rssKiB: Int
    let threadNames: [String]

    init() {
        openFDs = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count) ?? -1
        let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task")) ?? []
        threads = tasks.count
        threadNames = tasks.map { ((try? String(contentsOfFile: "/proc/self/task/\($0)/comm", encoding: .utf8)) ?? "?").trimmingCharacters(in: .whitespacesAndNewlines) }.sorted()
        let status = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
        let line = status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") } ?? ""
        rssKiB = Int(line.split(separator: " ").dropFirst().first ?? "") ?? -1
    }
}
