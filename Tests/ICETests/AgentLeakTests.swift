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
        print("before: \(before), after: \(after)")
        XCTAssertEqual(ICEAgent.liveAgentCount, 0)
        XCTAssertEqual(after.openFDs, before.openFDs, "open descriptors")
        XCTAssertEqual(after.threads, before.threads, "threads")
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

    init() {
        openFDs = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count) ?? -1
        threads = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task").count) ?? -1
        let status = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
        let line = status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") } ?? ""
        rssKiB = Int(line.split(separator: " ").dropFirst().first ?? "") ?? -1
    }
}
