import Foundation
import XCTest

@testable import Gate

final class GateLoopThreadTests: XCTestCase {
    /// Each gate loop's thread carries its name in the kernel (`/proc/self/task/*/comm`), where
    /// `top -H`, `perf` and `ps -L` read it.
    /// Only threads started after the group's creation count: an earlier test's loops, still
    /// stopping, carry the same names.
    func testGateLoopThreadsAreNamedInTheKernel() throws {
        let earlier = Set(Self.threadNames().keys)
        let group = try GateLoopGroup(count: 2)
        defer { group.shutdown() }
        var names: Set<String> = []
        // A loop names its thread as it starts running: bounded wait for both.
        for _ in 0..<100 {
            names = Set(Self.threadNames().filter { !earlier.contains($0.key) }.values)
            if names.isSuperset(of: ["ugate-gate-0", "ugate-gate-1"]) { break }
            usleep(50_000)
        }
        XCTAssertTrue(names.isSuperset(of: ["ugate-gate-0", "ugate-gate-1"]), "names of the threads started since: \(names.sorted())")
    }

    /// A loop reports the share of its last window it spent outside `epoll_wait`: 0 while
    /// idle, at least 200 ms of a window of about 1.2 s at most (the longest wait, then the work)
    /// once work held it 200 ms — published when it next waits, so before the next work runs.
    func testALoopReportsItsBusyShare() throws {
        let group = try GateLoopGroup(count: 1)
        defer { group.shutdown() }
        let loop = group.loops[0]
        XCTAssertEqual(loop.busyShare, 0)
        let done = DispatchSemaphore(value: 0)
        XCTAssertTrue(loop.execute { usleep(200_000) })
        XCTAssertTrue(loop.execute { done.signal() })
        XCTAssertEqual(done.wait(timeout: .now() + 30), .success)
        let after = DispatchSemaphore(value: 0)
        XCTAssertTrue(loop.execute { after.signal() })
        XCTAssertEqual(after.wait(timeout: .now() + 30), .success)
        XCTAssertGreaterThanOrEqual(loop.busyShare, 150, "a loop held 200 ms")
    }

    /// Thread ID → its name in the kernel.
    private static func threadNames() -> [String: String] {
        let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task")) ?? []
        return Dictionary(uniqueKeysWithValues: tasks.compactMap { task in
            (try? String(contentsOfFile: "/proc/self/task/\(task)/comm", encoding: .utf8)).map {
                (task, $0.trimmingCharacters(in: .whitespacesAndNewlines))
            }
        })
    }
}
