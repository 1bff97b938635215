import Foundation
import Glibc
import XCTest
@testable import ICE

/// interop/ice/aioice_peer.py run as a child process; JSON lines over its stdin/stdout.
final class AioicePeer: @unchecked Sendable {  // unchecked: `process`/pipes are set in init; writes are serialised by `writeLock`.
    let messages: AsyncStream<[String: any Sendable]>
    private let process = Process()
    private let stdin = Pipe()
    private let stdout = Pipe()
    private let writeLock = NSLock()

    static var scriptPath: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("interop/ice/aioice_peer.py").path
    }

    init(role: ICERole, greet: Int = 0) throws {
        guard FileManager.default.fileExists(atPath: Self.scriptPath) else {
            throw NSError(domain: "ICETests", code: 4, userInfo: [NSLocalizedDescriptionKey: "missing \(Self.scriptPath)"])
        }
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", Self.scriptPath, "--role", role.rawValue, "--greet", "\(greet)"]
        process.standardInput = stdin
        process.standardOutput = stdout
        let (stream, continuation) = AsyncStream<[String: any Sendable]>.makeStream()
        messages = stream
        let handle = stdout.fileHandleForReading
        try process.run()
        Thread.detachNewThread {
            var buffer = Data()
            while true {
                let chunk = handle.availableData
                if chunk.isEmpty { break }
                buffer.append(chunk)
                while let nl = buffer.firstIndex(of: 0x0A) {
                    let line = Data(buffer[buffer.startIndex..<nl])
                    buffer = Data(buffer[(nl + 1)...])
                    if let obj = try? JSONSerialization.jsonObject(with: line) as? [String: Any] {
                        continuation.yield(obj.compactMapValues { $0 as? String ?? ($0 as? Double).map { "\($0)" } })
                    }
                }
            }
            continuation.finish()
        }
    }

    func send(_ obj: [String: String]) {
        guard let data = try? JSONSerialization.data(withJSONObject: obj) else { return }
        writeLock.withLock {
            stdin.fileHandleForWriting.write(data + Data([0x0A]))
        }
    }

    /// Asks the script to close its connection and exit; kills it by PID after a bound.
    func stop() {
        if process.isRunning {
            send(["type": "close"])
            try? stdin.fileHandleForWriting.close()
            let deadline = Date().addingTimeInterval(5)
            while process.isRunning && Date() < deadline { usleep(20_000) }
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        }
        process.waitUntilExit()
    }

    deinit { stop() }
}

/// Wires an agent and an aioice peer together by trickle, both directions.
func wire(_ peer: Peer, _ aioice: AioicePeer) {
    aioice.send(["type": "credentials", "ufrag": peer.agent.localCredentials.ufrag, "pwd": peer.agent.localCredentials.pwd])
    peer.forwardEvents { event in
        switch event {
        case .localCandidate(let c): aioice.send(["type": "candidate", "line": c.attributeValue])
        case .localGatheringDone: aioice.send(["type": "end-of-candidates"])
        default: break
        }
    }
}
