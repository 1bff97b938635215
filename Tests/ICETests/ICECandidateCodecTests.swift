import XCTest
@testable import ICE

/// RFC 8839 §5.1 candidate lines and §5.4 credential lines, both ways.
final class ICECandidateCodecTests: XCTestCase {
    /// Lines as real stacks write them: RFC 8839 examples, Chromium, aioice, libnice, pion.
    let samples = [
        "a=candidate:1 1 UDP 2130706431 192.0.2.1 50000 typ host",
        "a=candidate:2 1 UDP 1694498815 198.51.100.7 55123 typ srflx raddr 192.0.2.1 rport 50000",
        "a=candidate:3 1 UDP 16777215 203.0.113.9 49170 typ relay raddr 198.51.100.7 rport 55123",
        "a=candidate:4 1 UDP 1845501695 198.51.100.8 61000 typ prflx raddr 192.0.2.1 rport 50000",
        "a=candidate:5 1 TCP 1518280447 192.0.2.1 9 typ host tcptype active",
        "a=candidate:6 1 TCP 1518214911 192.0.2.1 50001 typ host tcptype passive",
        "a=candidate:7 1 TCP 1518149375 192.0.2.1 50002 typ host tcptype so",
        "a=candidate:8 1 UDP 2130706175 2001:db8::1 50003 typ host",
        "a=candidate:9 1 UDP 2130706175 fe80::1%eth0 50004 typ host",
        "a=candidate:3442447574 1 udp 2122260223 192.168.1.10 54321 typ host generation 0 network-id 1 network-cost 10",
        "a=candidate:16572de626da4e5384a0ce2d0d93678a 1 udp 2130706431 127.0.0.1 60584 typ host",
        "a=candidate:10 2 UDP 2130706430 ::ffff:192.0.2.1 50005 typ host",
        "a=candidate:a+b/c 256 UDP 0 192.0.2.1 0 typ host",
    ]

    func testRoundTripKeepsEveryField() throws {
        for line in samples {
            let c = try ICECandidate(parsing: line)
            let again = try ICECandidate(parsing: c.sdpLine)
            XCTAssertEqual(c, again, line)
            XCTAssertEqual(try ICECandidate(parsing: c.attributeValue), c, "without a=: \(line)")
        }
    }

    func testFieldsOfASrflxCandidate() throws {
        let c = try ICECandidate(parsing: samples[1])
        XCTAssertEqual(c.foundation, "2")
        XCTAssertEqual(c.component, 1)
        XCTAssertEqual(c.transport, .udp)
        XCTAssertEqual(c.priority, 1_694_498_815)
        XCTAssertEqual(c.address, "198.51.100.7")
        XCTAssertEqual(c.port, 55123)
        XCTAssertEqual(c.kind, .srflx)
        XCTAssertEqual(c.relatedAddress, "192.0.2.1")
        XCTAssertEqual(c.relatedPort, 50000)
        XCTAssertNil(c.tcpType)
        XCTAssertEqual(c.sdpLine, samples[1])
    }

    func testTCPAndIPv6AndExtensions() throws {
        let tcp = try ICECandidate(parsing: samples[4])
        XCTAssertEqual(tcp.transport, .tcp)
        XCTAssertEqual(tcp.tcpType, .active)
        let v6 = try ICECandidate(parsing: samples[7])
        XCTAssertEqual(v6.address, "2001:db8::1")
        XCTAssertTrue(v6.hasIPLiteral)
        let chrome = try ICECandidate(parsing: samples[9])
        XCTAssertEqual(chrome.extensions, [
            .init(name: "generation", value: "0"), .init(name: "network-id", value: "1"), .init(name: "network-cost", value: "10"),
        ])
        XCTAssertEqual(chrome.transport, .udp, "transport is case-insensitive")
        XCTAssertTrue(chrome.sdpLine.hasSuffix("typ host generation 0 network-id 1 network-cost 10"))
    }

    func testMDNSCandidateParsesAndIsFlagged() throws {
        let c = try ICECandidate(parsing: "candidate:1 1 udp 2122260223 5a0c1f8e-7d1b-4b47-9a3e-0f4f2b9b1c2d.local 56789 typ host generation 0")
        XCTAssertTrue(c.isMDNS)
        XCTAssertFalse(c.hasIPLiteral)
    }

    func testMalformedLinesAreRefusedWithAReason() {
        let cases: [(String, String)] = [
            ("a=candidate:1 1 UDP 2130706431 192.0.2.1 50000", "at least 8 fields"),
            ("a=candidate:1 1 UDP 2130706431 192.0.2.1 50000 host host", "expected \"typ\""),
            ("a=candidate:1 1 UDP 2130706431 192.0.2.1 50000 typ bogus", "candidate type"),
            ("a=candidate:1 1 SCTP 2130706431 192.0.2.1 50000 typ host", "transport"),
            ("a=candidate:1 0 UDP 2130706431 192.0.2.1 50000 typ host", "component-id"),
            ("a=candidate:1 257 UDP 2130706431 192.0.2.1 50000 typ host", "component-id"),
            ("a=candidate:1 1 UDP 4294967296 192.0.2.1 50000 typ host", "priority"),
            ("a=candidate:1 1 UDP -5 192.0.2.1 50000 typ host", "priority"),
            ("a=candidate:1 1 UDP 1 192.0.2.1 65536 typ host", "port"),
            ("a=candidate:1 1 UDP 1 192.0.2.1 5x typ host", "port"),
            ("a=candidate:1 1 UDP 1 999.0.2.1.7 5 typ host", "connection-address"),
            ("a=candidate:1 1 UDP 1 2001:db8:::1 5 typ host", "connection-address"),
            ("a=candidate:1 1 UDP 1 192.0.2.1 5 typ srflx raddr", "has no value"),
            ("a=candidate:1 1 UDP 1 192.0.2.1 5 typ srflx rport 70000", "rport"),
            ("a=candidate:1 1 TCP 1 192.0.2.1 9 typ host", "without tcptype"),
            ("a=candidate:1 1 TCP 1 192.0.2.1 9 typ host tcptype sideways", "tcptype"),
            ("a=candidate:1 1 UDP 1 192.0.2.1 9 typ host tcptype active", "tcptype on a UDP"),
            ("a=candidate:1  1 UDP 1 192.0.2.1 9 typ host", "empty field"),
            ("a=candidate:this-is-not-ice 1 UDP 1 192.0.2.1 9 typ host", "foundation"),
            ("a=candidate:\(String(repeating: "f", count: 33)) 1 UDP 1 192.0.2.1 9 typ host", "foundation"),
            ("", "at least 8 fields"),
        ]
        for (line, reason) in cases {
            XCTAssertThrowsError(try ICECandidate(parsing: line), line) { error in
                let e = error as? ICEError
                XCTAssertEqual(e?.code, .malformedCandidate, line)
                XCTAssertTrue(e?.message.contains(reason) ?? false, "\(line): \(String(describing: e))")
            }
        }
    }

    /// Every strict prefix of a valid line is either refused or parses to a different,
    /// shorter candidate — never crashes, never silently equals the whole.
    func testTruncatedLinesNeverParseAsTheOriginal() throws {
        for line in samples {
            let full = try ICECandidate(parsing: line)
            for end in 0..<line.count {
                let prefix = String(line.prefix(end))
                if let c = try? ICECandidate(parsing: prefix) {
                    XCTAssertNotEqual(c, full, "prefix \(prefix)")
                }
            }
        }
    }

    func testAttributeLines() throws {
        XCTAssertEqual(try ICEAttribute(parsing: "a=end-of-candidates"), .endOfCandidates)
        XCTAssertEqual(try ICEAttribute(parsing: "a=end-of-candidates\r\n"), .endOfCandidates)
        XCTAssertEqual(try ICEAttribute(parsing: "a=ice-ufrag:8fXW"), .ufrag("8fXW"))
        XCTAssertEqual(try ICEAttribute(parsing: "ice-pwd:hwJ2kLTT49bHj8ftg8t7TG"), .pwd("hwJ2kLTT49bHj8ftg8t7TG"))
        guard case .candidate(let c) = try ICEAttribute(parsing: samples[0]) else { return XCTFail("candidate") }
        XCTAssertEqual(c.port, 50000)
        for a in [ICEAttribute.endOfCandidates, .ufrag("abcd"), .pwd(String(repeating: "p", count: 22)), .candidate(c)] {
            XCTAssertEqual(try ICEAttribute(parsing: a.sdpLine), a)
        }
        XCTAssertThrowsError(try ICEAttribute(parsing: "a=ice-ufrag:abc")) { XCTAssertEqual(($0 as? ICEError)?.code, .malformedAttribute) }
        XCTAssertThrowsError(try ICEAttribute(parsing: "a=ice-pwd:short")) { XCTAssertTrue("\($0)".contains("22-256")) }
        XCTAssertThrowsError(try ICEAttribute(parsing: "a=ice-ufrag:ab cd")) { XCTAssertTrue("\($0)".contains("character")) }
        XCTAssertThrowsError(try ICEAttribute(parsing: "a=fingerprint:sha-256 AA")) { XCTAssertTrue("\($0)".contains("not an ICE attribute")) }
    }

    func testRandomCredentialsAreValidAndDistinct() throws {
        let a = ICECredentials.random()
        let b = ICECredentials.random()
        XCTAssertNotEqual(a, b)
        XCTAssertEqual(try ICECredentials(ufrag: a.ufrag, pwd: a.pwd), a)
        XCTAssertEqual(a.sdpLines, ["a=ice-ufrag:\(a.ufrag)", "a=ice-pwd:\(a.pwd)"])
    }

    func testServerURLs() throws {
        let stun = try ICEServerURL(parsing: "stun:stun.example.org")
        XCTAssertEqual(stun.scheme, .stun)
        XCTAssertEqual(stun.host, "stun.example.org")
        XCTAssertEqual(stun.port, 3478)
        let turn = try ICEServerURL(parsing: "turn:192.0.2.5:3479?transport=tcp")
        XCTAssertEqual(turn.scheme, .turn)
        XCTAssertEqual(turn.port, 3479)
        XCTAssertEqual(turn.transport, .tcp)
        let v6 = try ICEServerURL(parsing: "turn:[2001:db8::5]:5349")
        XCTAssertEqual(v6.host, "2001:db8::5")
        XCTAssertEqual(v6.transport, .udp)
        for (bad, reason) in [
            ("turns:example.org", "TLS"), ("http://example.org", "scheme"), ("stun:example.org?transport=udp", "no query"),
            ("turn:example.org?transport=sctp", "transport=udp"), ("stun:example.org:0", "port"), ("stun:", "empty host"),
            ("turn:[2001:db8::5", "unclosed"), ("stun:exa mple.org", "host"),
        ] {
            XCTAssertThrowsError(try ICEServerURL(parsing: bad), bad) { error in
                XCTAssertEqual((error as? ICEError)?.code, .invalidServerURL)
                XCTAssertTrue("\(error)".contains(reason), "\(bad): \(error)")
            }
        }
        XCTAssertThrowsError(try ICEAgent(role: .controlling, configuration: ICEConfiguration(servers: [ICEServer(url: "turn:127.0.0.1")]))) {
            XCTAssertTrue("\($0)".contains("username"), "\($0)")
        }
        XCTAssertThrowsError(try ICEAgent(role: .controlling, configuration: ICEConfiguration(localAddresses: ["not-an-ip"]))) {
            XCTAssertEqual(($0 as? ICEError)?.code, .invalidConfiguration)
        }
    }
}

/// The pure state mapping from libnice component states to ICE connection states.
final class ConnectionStateMachineTests: XCTestCase {
    func testHappyPathThenSilenceThenConsentLoss() {
        var m = ConnectionStateMachine()
        XCTAssertNil(m.nice(.gathering), "gathering is not checking")
        XCTAssertEqual(m.checksStarted(), .checking)
        XCTAssertNil(m.nice(.connecting))
        XCTAssertEqual(m.nice(.connected), .connected)
        XCTAssertEqual(m.nice(.ready), .completed)
        XCTAssertEqual(m.silent(), .disconnected)
        XCTAssertEqual(m.trafficResumed(), .completed)
        XCTAssertEqual(m.silent(), .disconnected)
        XCTAssertEqual(m.nice(.failed), .failed)
        XCTAssertNil(m.timedOut(), "timeout after failure changes nothing")
        XCTAssertEqual(m.closed(), .closed)
        XCTAssertNil(m.nice(.ready), "closed is final")
    }

    func testTimeoutOnlyBeforeConnected() {
        var m = ConnectionStateMachine()
        _ = m.checksStarted()
        XCTAssertEqual(m.timedOut(), .failed)
        var n = ConnectionStateMachine()
        _ = n.nice(.connected)
        XCTAssertNil(n.timedOut())
    }

    func testRestartGoesBackToChecking() {
        var m = ConnectionStateMachine()
        _ = m.nice(.ready)
        XCTAssertEqual(m.restarted(), .checking)
        XCTAssertEqual(m.nice(.ready), .completed)
        XCTAssertNil(m.silent().flatMap { _ in m.closed() }.flatMap { _ in m.restarted() })
    }
}
