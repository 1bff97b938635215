import CNiceShim
import Foundation
import XCTest

@testable import ICE

/// The kernel path MTU the data channel may use above 1200 bytes (PathMTU, IP_MTU probe).
final class PathMTUTests: XCTestCase {
    private func candidate(_ address: String, _ kind: ICECandidate.Kind, _ transport: ICECandidate.Transport = .udp) throws -> ICECandidate {
        let tcp = transport == .tcp ? " tcptype passive" : ""
        return try ICECandidate(parsing: "candidate:1 1 \(transport.rawValue) 2015363327 \(address) 40000 typ \(kind.rawValue)\(tcp)")
    }

    /// Loopback: the 65 536-byte MTU minus IP and UDP headers (over IPv4 the kernel reports
    /// 65 535, the 16-bit total length: 65 507 bytes of payload).
    func testLoopbackHostPair() throws {
        let v4 = ICECandidatePair(local: try candidate("127.0.0.1", .host), remote: try candidate("127.0.0.1", .host))
        XCTAssertEqual(PathMTU.payloadLimit(v4), 65_535 - 28)
        let v6 = ICECandidatePair(local: try candidate("::1", .host), remote: try candidate("::1", .host))
        XCTAssertEqual(PathMTU.payloadLimit(v6), 65_536 - 48)
    }

    /// Pairs through NAT mappings, relays or TCP: the kernel does not know their path, nil.
    func testNonHostPairsHaveNoLimit() throws {
        let host = try candidate("127.0.0.1", .host)
        for kind in [ICECandidate.Kind.srflx, .prflx, .relay] {
            XCTAssertNil(PathMTU.payloadLimit(ICECandidatePair(local: try candidate("127.0.0.1", kind), remote: host)), "\(kind)")
            XCTAssertNil(PathMTU.payloadLimit(ICECandidatePair(local: host, remote: try candidate("127.0.0.1", kind))), "\(kind)")
        }
        XCTAssertNil(PathMTU.payloadLimit(ICECandidatePair(local: host, remote: try candidate("127.0.0.1", .host, .tcp))))
        XCTAssertEqual(ugate_udp_path_payload_limit("not-an-ip", 1), -EINVAL)
    }

    /// A route with a 1500-byte MTU (the loopback of a namespace this test creates, set to
    /// Ethernet's MTU): 1472 bytes of UDP payload over IPv4.
    func testEthernetSizedRoute() throws {
        let namespace = try NetNamespace(addresses: ["10.203.0.1"])
        defer { namespace.delete() }
        try ICETests.run("/usr/sbin/ip", "-n", namespace.name, "link", "set", "lo", "mtu", "1500")
        let result = ProbeResult()
        let done = DispatchSemaphore(value: 0)
        let path = namespace.path
        // setns moves only the calling thread: probe from a thread of its own.
        Thread.detachNewThread {
            let entered = ugate_enter_net_namespace(path)
            result.value = entered == 0 ? Int(ugate_udp_path_payload_limit("10.203.0.1", 9)) : Int(entered) * 1000
            done.signal()
        }
        XCTAssertEqual(done.wait(timeout: .now() + 10), .success)
        XCTAssertEqual(result.value, 1472)
    }
}

/// The probe thread's answer (written once before the semaphore is signalled, read after).
private final class ProbeResult: @unchecked Sendable {  // unchecked: one write, then a semaphore hand-off
    var value = 0
}
