import DataChannel
import Foundation
import ICE
import XCTest

@testable import PeerMesh

/// The datagram size follows the path down: two ugate peers inside a network namespace this
/// test creates (its loopback at MTU 9000, the ICE loop's thread inside the namespace) agree on
/// 8972-byte datagrams; while 48 MiB are in flight the loopback's MTU drops to 1500. Both
/// sessions notice within their once-a-second check (the kernel path MTU of the selected pair,
/// IP_MTU) and lower DTLS and SCTP to 1472; every byte arrives (SHA-256 both ways), and a second
/// transfer runs at 1472.
final class WebRTCPathMTUTests: XCTestCase {
    func testDatagramSizeFollowsALoweredLinkMTUMidTransfer() async throws {
        let namespace = "ugate-pcmtu-\(getpid())"
        try Self.ip("netns", "add", namespace)
        defer { _ = try? Self.ip("netns", "del", namespace) }
        try Self.ip("-n", namespace, "link", "set", "lo", "mtu", "9000")
        try Self.ip("-n", namespace, "link", "set", "lo", "up")
        let loop = try ICEEventLoop(name: "ice-pcmtu", networkNamespace: "/var/run/netns/\(namespace)")
        var ice = ICEConfiguration()
        ice.localAddresses = ["127.0.0.1"]
        ice.connectTimeout = .seconds(15)
        var configuration = PeerConnectionConfiguration(ice: ice)
        configuration.iceLoop = loop
        let offerer = try PeerConnection(configuration: configuration)
        let answerer = try PeerConnection(configuration: configuration)
        let offer = try await offerer.createOffer()
        let answer = try await answerer.acceptOffer(sdp: offer.sdp)
        try offerer.acceptAnswer(sdp: answer.sdp)
        let echo = Task { await ChannelTransfer.echo(answerer) }
        async let shrunk: Void = lowerMTU(of: namespace, once: offerer, uses: 8972)
        let first = try await ChannelTransfer.sendAndVerify(over: offerer, bytes: 48 << 20, messageSize: 65_536, label: "before")
        try await shrunk
        XCTAssertTrue(first.intact, "\(first)")
        for _ in 0..<500 where offerer.datagramSize != 1472 || answerer.datagramSize != 1472 {
            try await Task.sleep(for: .milliseconds(10))
        }
        XCTAssertEqual(offerer.datagramSize, 1472)
        XCTAssertEqual(answerer.datagramSize, 1472)
        let second = try await ChannelTransfer.sendAndVerify(over: offerer, bytes: 4 << 20, messageSize: 65_536, label: "after")
        XCTAssertTrue(second.intact, "\(second)")
        XCTAssertEqual(second.datagramSize, 1472)
        await offerer.close()
        for _ in 0..<2000 {
            if case .closed = answerer.state { break }
            if case .failed = answerer.state { break }
            try await Task.sleep(for: .milliseconds(10))
        }
        await echo.value
        await answerer.close()
    }

    /// `ip …` (`runCommand`, WebRTCTURNTests.swift).
    static func ip(_ arguments: String...) throws {
        try runCommand(["ip"] + arguments)
    }
}

/// Waits (bounded) until `connection` uses `size`, lets data flow for 200 ms, then sets the
/// namespace's loopback to MTU 1500.
private func lowerMTU(of namespace: String, once connection: PeerConnection, uses size: Int) async throws {
    for _ in 0..<1000 where connection.datagramSize != size { try await Task.sleep(for: .milliseconds(10)) }
    XCTAssertEqual(connection.datagramSize, size)
    try await Task.sleep(for: .milliseconds(200))
    try WebRTCPathMTUTests.ip("-n", namespace, "link", "set", "lo", "mtu", "1500")
}
