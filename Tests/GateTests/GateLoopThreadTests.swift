import Foundation
import XCTest

@testable import Gate

final class GateLoopThreadTests: XCTestCase {
    /// Each gate loop's thread carries its name in the kernel (`/proc/self/task/*/comm`), where
    /// `top -H`, `perf` and `ps -L` read it.
    func testGateLoopThreadsAreNamedInTheKernel() throws {
        let group = try GateLoopGroup(count: 2)
        defer { group.shutdown() }
        var names: Set<String> = []
        // A loop names its thread as it starts running: bounded wait for both.
        for _ in 0..<100 {
            names = Self.threadNames()
            if names.isSuperset(of: ["ugate-gate-0", "ugate-gate-1"]) { break }
            usleep(50_000)
        }
        XCTAssertTrue(names.isSuperset(of: ["ugate-gate-0", "ugate-gate-1"]), "thread names: \(names.sorted())")
    }

    private static func threadNames() -> Set<String> {
        let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task")) ?? []
        return Set(tasks.compactMap { task in
            (try? String(contentsOfFile: "/proc/self/task/\(task)/comm", encoding: .utf8))?
                .trimmingCharacters(in: .whitespacesAndNewlines)
        })
    }
}
