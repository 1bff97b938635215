import Foundation
import XCTest
@testable import DataChannel

/// Two sessions joined by an in-memory datagram pipe: `client` is the DTLS client.
struct SessionPair {
    let client: DataChannelSession
    let server: DataChannelSession
    let clientEnd: MemoryDatagramEnd
    let serverEnd: MemoryDatagramEnd

    static func make(impairment: MemoryDatagramPipe.Impairment = .init(),
                     maximumDatagramSize: Int? = nil,
                     clientFingerprints: [CertificateFingerprint]? = nil,
                     configure: (inout DataChannelSessionConfiguration) -> Void = { _ in }) throws -> SessionPair {
        let clientIdentity = try DTLSIdentity(), serverIdentity = try DTLSIdentity()
        let (a, b) = MemoryDatagramPipe.makePair(impairment: impairment, maximumDatagramSize: maximumDatagramSize)
        var clientConfiguration = DataChannelSessionConfiguration(
            identity: clientIdentity, role: .client, remoteFingerprints: [serverIdentity.fingerprint], remoteMaxMessageSize: 262_144)
        var serverConfiguration = DataChannelSessionConfiguration(
            identity: serverIdentity, role: .server, remoteFingerprints: clientFingerprints ?? [clientIdentity.fingerprint],
            remoteMaxMessageSize: 262_144)
        configure(&clientConfiguration)
        configure(&serverConfiguration)
        return SessionPair(client: DataChannelSession(transport: a, configuration: clientConfiguration),
                           server: DataChannelSession(transport: b, configuration: serverConfiguration),
                           clientEnd: a, serverEnd: b)
    }

    func connect() async throws {
        async let c: Void = client.connect()
        async let s: Void = server.connect()
        _ = try await (c, s)
    }

    func close() {
        client.close()
        server.close()
    }

    /// A connected pair with one channel the client opened: (pair, client's end, server's end).
    static func withChannel(label: String = "bulk", impairment: MemoryDatagramPipe.Impairment = .init(),
                            configure: (inout DataChannelSessionConfiguration) -> Void = { _ in })
        async throws -> (SessionPair, DataChannel, DataChannel) {
        let pair = try SessionPair.make(impairment: impairment, configure: configure)
        try await pair.connect()
        let channel = try await pair.client.openChannel(label: label)
        return (pair, channel, try await nextChannel(pair.server))
    }
}

struct StreamEnded: Error {}

/// The next channel the peer opened.
func nextChannel(_ session: DataChannelSession) async throws -> DataChannel {
    var iterator = session.incomingChannels.makeAsyncIterator()
    guard let channel = await iterator.next() else { throw StreamEnded() }
    return channel
}

/// Receives one message and compares it.
func expectMessage(_ channel: DataChannel, _ expected: DataChannelMessage?, file: StaticString = #filePath, line: UInt = #line) async {
    let received = await channel.receive()
    XCTAssertEqual(received, expected, file: file, line: line)
}

/// Open file descriptors of this process and what they point to.
func openDescriptors() -> [String: String] {
    let names = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
    var result: [String: String] = [:]
    for name in names {
        result[name] = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/" + name)) ?? "?"
    }
    return result
}

extension XCTestCase {
    /// Runs `body` and fails the test (instead of hanging) when it does not finish in `seconds`.
    func run(timeout seconds: Double = 60, _ body: @escaping @Sendable () async throws -> Void,
             file: StaticString = #filePath, line: UInt = #line) async {
        let done = expectation(description: "finished")
        let failure = LockedBox<(any Error)?>(nil)
        let task = Task {
            do { try await body() } catch { failure.set(error) }
            done.fulfill()
        }
        await fulfillment(of: [done], timeout: seconds)
        task.cancel()
        if let error = failure.get() { XCTFail("\(error)", file: file, line: line) }
    }
}

/// Polls `condition` every 10 ms for at most `seconds`.
func eventually(_ seconds: Double = 20, _ condition: @escaping @Sendable () -> Bool) async -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if condition() { return true }
        try? await Task.sleep(nanoseconds: 10_000_000)
    }
    return condition()
}

final class LockedBox<Value: Sendable>: @unchecked Sendable {  // every access holds `lock`
    private let lock = NSLock()
    private var value: Value
    init(_ value: Value) { self.value = value }
    func get() -> Value { lock.withLock { value } }
    func set(_ newValue: Value) { lock.withLock { value = newValue } }
}

/// A fixed pseudo-random pattern that payloads are cut from (cheap in debug builds).
private let pattern: [UInt8] = {
    var generator = SplitMix64(seed: 0x5EED)
    return (0..<(262_144 + 4_096)).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
}()

/// Deterministic payload `n` of `size` bytes: different `n` give different bytes.
func payload(_ n: Int, size: Int) -> [UInt8] {
    let offset = (n &* 131) % 4_096
    guard offset + size <= pattern.count else {
        return (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ n &* 7) }
    }
    return Array(pattern[offset..<(offset + size)])
}
