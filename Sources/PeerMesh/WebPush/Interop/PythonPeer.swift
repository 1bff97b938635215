import Foundation

/// Runs `interop/webpush/webpush_peer.py` (http_ece, py_vapid, pywebpush: the independent
/// implementation) with one JSON request on stdin and returns its JSON answer. Used by the interop
/// tests and by `ugate push bench`; fails loudly when python3 or the packages are missing.
public struct PythonPeer: Sendable {
    public let python: String
    public let script: String

    public init(python: String = "/usr/bin/env", script: String) {
        self.python = python
        self.script = script
    }

    /// Runs `subcommand` with `request`; returns the decoded JSON object.
    /// - Throws: `WebPushError.http` naming the command, exit status and stderr on any failure.
    public func call(_ subcommand: String, _ request: [String: Any]) throws -> [String: Any] {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: python)
        process.arguments = (python.hasSuffix("env") ? ["python3"] : []) + [script, subcommand]
        let input = Pipe()
        let output = Pipe()
        let errors = Pipe()
        process.standardInput = input
        process.standardOutput = output
        process.standardError = errors
        try process.run()
        input.fileHandleForWriting.write(try JSONSerialization.data(withJSONObject: request))
        try input.fileHandleForWriting.close()
        let out = output.fileHandleForReading.readDataToEndOfFile()
        let err = errors.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0,
              let answer = (try? JSONSerialization.jsonObject(with: out)) as? [String: Any]
        else {
            throw WebPushError(.http, "python peer \(subcommand) failed (status \(process.terminationStatus)): "
                + String(decoding: err, as: UTF8.self).suffix(800))
        }
        return answer
    }
}
