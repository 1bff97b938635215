import XCTest
@testable import ICE

/// Interop with aioice (aiortc's ICE agent, from PyPI) over loopback, in both roles.
final class AioiceInteropTests: XCTestCase {
    func testUgateControllingAioiceControlled() async throws {
        try await interop(ours: .controlling)
    }

    func testUgateControlledAioiceControlling() async throws {
        try await interop(ours: .controlled)
    }

    private func interop(ours role: ICERole) async throws {
        let aioice = try AioicePeer(role: role == .controlling ? .controlled : .controlling, greet: 10)
        defer { aioice.stop() }
        let peer = try Peer(role)
        wire(peer, aioice)
        let received = LockedBox<[[UInt8]]>([])
        let aioiceConnected = LockedBox(false)
        let failure = LockedBox<String?>(nil)
        let agent = peer.agent
        let reader = Task {
            var ufrag: String?
            for await msg in aioice.messages {
                switch msg["type"] as? String {
                case "credentials":
                    ufrag = msg["ufrag"] as? String
                    if let u = ufrag, let p = msg["pwd"] as? String { agent.setRemoteCredentials(try ICECredentials(ufrag: u, pwd: p)) }
                case "candidate":
                    if let line = msg["line"] as? String { try agent.applyRemote(line: line) }
                case "end-of-candidates": agent.addRemoteEndOfCandidates()
                case "connected": aioiceConnected.value = true
                case "failed": failure.value = msg["error"] as? String
                default: break
                }
            }
        }
        agent.start()
        try await peer.waitConnected()
        try await waitUntil("aioice connected") { aioiceConnected.value || failure.value != nil }
        XCTAssertNil(failure.value)
        let pair = try XCTUnwrap(agent.selectedPair)
        XCTAssertEqual(pair.remote.address, "127.0.0.1")
        let collector = Task {
            for await d in agent.datagrams {
                received.value.append(d)
                if received.value.count == 30 { break }
            }
        }
        for i in 0..<20 { XCTAssertTrue(agent.send(Array("ugate:\(i)".utf8))) }
        try await waitUntil("20 echoes and 10 greetings from aioice") { received.value.count >= 30 }
        collector.cancel()
        let texts = Set(received.value.map { String(decoding: $0, as: UTF8.self) })
        for i in 0..<20 { XCTAssertTrue(texts.contains("echo:ugate:\(i)"), "missing echo \(i): \(texts)") }
        for i in 0..<10 { XCTAssertTrue(texts.contains("aioice:\(i)"), "missing greeting \(i)") }
        aioice.stop()
        reader.cancel()
        await peer.close()
    }
}
