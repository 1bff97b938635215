import Logging
import Synchronization
import XCTest
@testable import ICE

/// libnice's own g_log output arrives in swift-log.
final class LibniceLogTests: XCTestCase {
    func testLibniceDebugMessagesReachSwiftLog() async throws {
        let captured = Captured()
        let previous = LibniceLog.logger
        LibniceLog.logger = Logger(label: "test.libnice") { _ in CapturingHandler(store: captured) }
        LibniceLog.enableLibniceDebug()
        defer {
            LibniceLog.disableLibniceDebug()
            LibniceLog.logger = previous
        }
        let a = try Peer(.controlling)
        a.agent.start()
        try await a.waitGathered()
        await a.close()
        let lines = captured.lines.withLock { $0 }
        let fromLibnice = lines.filter { $0.domain == "libnice" }
        XCTAssertFalse(fromLibnice.isEmpty, "no libnice line among \(lines.count)")
        XCTAssertTrue(fromLibnice.allSatisfy { $0.level == .trace }, "libnice debug goes to trace")
        XCTAssertTrue(fromLibnice.contains { $0.message.contains("gathering") }, "\(fromLibnice.prefix(5))")
    }
}

final class Captured: Sendable {
    struct Line: Sendable {
        var level: Logger.Level
        var message: String
        var domain: String
    }
    let lines = Mutex<[Line]>([])
}

struct CapturingHandler: LogHandler {
    let store: Captured
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .trace

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        let line = Captured.Line(level: event.level, message: "\(event.message)", domain: event.metadata?["glib.domain"].map { "\($0)" } ?? "")
        store.lines.withLock { $0.append(line) }
    }
}
