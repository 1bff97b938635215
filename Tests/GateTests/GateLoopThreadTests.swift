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
