import Foundation
import XCTest
@testable import DataChannel

/// The whole stack over real UDP sockets on 127.0.0.1 (ephemeral ports).
final class UDPLoopbackTests: XCTestCase {
    func testSessionOverLoopbackUDP() async throws {
        await run(timeout: 120) {
            let descriptorsBefore = openDescriptors()
            let a = try UDPDatagramTransport(), b = try UDPDatagramTransport()
            XCTAssertNotEqual(a.localPort, 0)
            try a.connect(port: b.localPort)
            try b.connect(port: a.localPort)
            let clientIdentity = try DTLSIdentity(), serverIdentity = try DTLSIdentity()
            let client = DataChannelSession(transport: a, configuration: .init(
                identity: clientIdentity, role: .client, remoteFingerprints: [serverIdentity.fingerprint], remoteMaxMessageSize: 262_144))
            let server = DataChannelSession(transport: b, configuration: .init(
                identity: serverIdentity, role: .server, remoteFingerprints: [clientIdentity.fingerprint], remoteMaxMessageSize: 262_144))
            async let c: Void = client.connect()
            async let s: Void = server.connect()
            _ = try await (c, s)
            let channel = try await server.openChannel(label: "udp")
            let remote = try await nextChannel(client)
            let count = 128, size = 65_536
            let start = Date()
            let sender = Task { for n in 0..<count { try await channel.send(payload(n, size: size)) } }
            for n in 0..<count {
                guard case .binary(let bytes)? = await remote.receive(), bytes == payload(n, size: size) else {
                    return XCTFail("message \(n) missing or corrupted")
                }
            }
            try await sender.value
            print("UDP loopback: \((count * size) >> 20) MiB in \(String(format: "%.2f", Date().timeIntervalSince(start))) s (debug build)")
            remote.close()
            await expectMessage(channel, nil)
            client.close()
            _ = await eventually { server.state == .closed }
            XCTAssertEqual(server.state, .closed)
            let released = await eventually { !openDescriptors().values.contains { $0.hasPrefix("socket:") && !descriptorsBefore.values.contains($0) } }
            XCTAssertTrue(released, "sockets still open: \(openDescriptors().filter { descriptorsBefore[$0.key] == nil })")
        }
    }
}
