import Foundation
import Synchronization
import XCTest

@testable import PeerMesh

/// The shared WebPush vectors (Resources/webpush_vectors.json) and helpers for the WebPush tests.
enum WebPushFixtures {
    /// Parsed on each use: `[String: Any]` cannot be a Sendable static.
    static var vectors: [String: Any] {
        guard let url = Bundle.module.url(forResource: "webpush_vectors", withExtension: "json", subdirectory: "Resources"),
              let data = try? Data(contentsOf: url),
              let object = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any]
        else { fatalError("Resources/webpush_vectors.json missing from the test bundle") }
        return object
    }

    static var appendixA: [String: Any] { vectors["rfc8291_appendix_a"] as! [String: Any] }
    static var aes128gcm: [[String: Any]] { vectors["aes128gcm"] as! [[String: Any]] }
    static var vapid: [[String: Any]] { vectors["vapid"] as! [[String: Any]] }

    /// The interop script, found relative to this file so tests run from any directory.
    static let peer = PythonPeer(script: URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("interop/webpush/webpush_peer.py").path)
}

/// base64url field of a vector case.
func b64(_ object: [String: Any], _ key: String, file: StaticString = #filePath, line: UInt = #line) -> [UInt8] {
    guard let text = object[key] as? String, let bytes = try? Base64URL.decode(text) else {
        XCTFail("vector field \(key) missing or not base64url", file: file, line: line)
        return []
    }
    return bytes
}

/// A clock the test moves by hand (seconds since the epoch).
final class ManualClock: Sendable {
    private let value: Mutex<Double>
    init(_ start: Double = 1_800_000_000) { value = Mutex(start) }
    var now: Double { value.withLock { $0 } }
    func advance(_ seconds: Double) { value.withLock { $0 += seconds } }
    var closure: @Sendable () -> Double { { self.now } }
}

/// Asserts that `body` throws a `WebPushError` with `code`; returns its message.
@discardableResult
func assertWebPushError<T>(_ code: WebPushError.Code, file: StaticString = #filePath, line: UInt = #line, _ body: () throws -> T) -> String {
    do {
        _ = try body()
        XCTFail("expected WebPushError.\(code), nothing was thrown", file: file, line: line)
    } catch let error as WebPushError {
        XCTAssertEqual(error.code, code, "\(error)", file: file, line: line)
        XCTAssertFalse(error.context.isEmpty, file: file, line: line)
        return error.context
    } catch {
        XCTFail("expected WebPushError.\(code), got \(error)", file: file, line: line)
    }
    return ""
}

/// Asserts a push service answer's status, showing its reason text on failure.
func assertStatus(_ response: PushHTTPResponse, _ status: Int, file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(response.status, status, response.text, file: file, line: line)
}
