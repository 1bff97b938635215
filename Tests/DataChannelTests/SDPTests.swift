import Foundation
import XCTest
@testable import DataChannel

final class SDPTests: XCTestCase {
    private var fingerprint256: CertificateFingerprint { CertificateFingerprint(sdpValue: SDPSamples.fp256)! }

    func testChromiumOffer() throws {
        let offer = try SessionDescription(parsing: SDPSamples.chromiumOffer)
        XCTAssertEqual(offer.iceUfrag, "Fh3A")
        XCTAssertEqual(offer.icePwd, "p9QhgUw8bU5dXE1Ihr0Q7yl0")
        XCTAssertEqual(offer.iceOptions, ["trickle"])
        XCTAssertEqual(offer.fingerprints, [fingerprint256])
        XCTAssertEqual(offer.setup, .actpass)
        XCTAssertEqual(offer.mid, "0")
        XCTAssertEqual(offer.sctpPort, 5000)
        XCTAssertEqual(offer.maxMessageSize, 262_144)
        XCTAssertEqual(offer.candidates.count, 2)
        XCTAssertTrue(offer.candidates[1].contains("tcptype active"))
        XCTAssertFalse(offer.endOfCandidates)
        XCTAssertEqual(offer.sessionID, "4611731400430051336")
    }

    func testAiortcOfferWithSeveralFingerprints() throws {
        let offer = try SessionDescription(parsing: SDPSamples.aiortcOffer)
        XCTAssertEqual(offer.fingerprints.map(\.algorithm), ["sha-256", "sha-384", "sha-512"])
        XCTAssertEqual(offer.fingerprints[1].bytes.count, 48)
        XCTAssertEqual(offer.iceUfrag.count, 4)
        XCTAssertTrue(offer.endOfCandidates)
        XCTAssertEqual(offer.candidates, ["candidate:a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6 1 udp 2130706431 127.0.0.1 40563 typ host"])
    }

    func testPionOfferWithSessionLevelFingerprint() throws {
        let offer = try SessionDescription(parsing: SDPSamples.pionOffer)
        XCTAssertEqual(offer.fingerprints, [fingerprint256])
        XCTAssertNil(offer.maxMessageSize)
        XCTAssertEqual(offer.effectiveMaxMessageSize, 65_536)
        XCTAssertEqual(offer.candidates.count, 2)
        XCTAssertTrue(offer.candidates[1].hasPrefix("candidate:2837134963 2 udp"))
    }

    func testLibdatachannelOfferWithSessionLevelAttributesAndLF() throws {
        let offer = try SessionDescription(parsing: SDPSamples.libdatachannelOffer)
        XCTAssertEqual(offer.setup, .actpass)
        XCTAssertEqual(offer.iceUfrag, "7Yk2")
        XCTAssertEqual(offer.iceOptions, ["ice2,trickle"])
        XCTAssertEqual(offer.fingerprints, [fingerprint256])
        XCTAssertTrue(offer.candidates.isEmpty)
    }

    func testLegacySCTPMapForm() throws {
        let answer = try SessionDescription(parsing: SDPSamples.legacyAnswer)
        XCTAssertTrue(answer.usedLegacySCTPMap)
        XCTAssertEqual(answer.sctpPort, 5001)
        XCTAssertNil(answer.maxMessageSize)
        XCTAssertEqual(answer.setup, .active)
        XCTAssertEqual(answer.mid, "data")
        // We answer/emit only the RFC 8841 form.
        XCTAssertTrue(answer.sdp.contains("m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n"))
        XCTAssertFalse(answer.sdp.contains("sctpmap"))
    }

    func testGeneratedOfferHasWhatBrowsersRequire() throws {
        let (ufrag, pwd) = SessionDescription.randomICECredentials()
        let offer = SessionDescription.offer(iceUfrag: ufrag, icePwd: pwd, fingerprints: [fingerprint256],
                                             candidates: ["candidate:1 1 udp 2130706431 127.0.0.1 5555 typ host"],
                                             endOfCandidates: true)
        let text = offer.sdp
        let lines = text.components(separatedBy: "\r\n")
        XCTAssertEqual(lines.first, "v=0")
        XCTAssertEqual(lines.last, "")
        for required in ["m=application 9 UDP/DTLS/SCTP webrtc-datachannel", "c=IN IP4 0.0.0.0", "a=ice-ufrag:\(ufrag)",
                         "a=ice-pwd:\(pwd)", "a=ice-options:trickle", "a=fingerprint:\(SDPSamples.fp256)",
                         "a=setup:actpass", "a=mid:0", "a=sctp-port:5000", "a=max-message-size:262144",
                         "a=candidate:1 1 udp 2130706431 127.0.0.1 5555 typ host", "a=end-of-candidates", "a=group:BUNDLE 0"] {
            XCTAssertTrue(lines.contains(required), "missing \(required)")
        }
        XCTAssertGreaterThanOrEqual(ufrag.count, 4)
        XCTAssertGreaterThanOrEqual(pwd.count, 22)
        XCTAssertEqual(try SessionDescription(parsing: text), offer)
    }

    /// An answer to Chromium carries only what we understand: nothing from the offer is echoed.
    func testAnswerDoesNotEchoUnknownAttributes() throws {
        let offer = try SessionDescription(parsing: SDPSamples.chromiumOffer)
        let answer = try offer.answer(iceUfrag: "abcd", icePwd: "abcdefghijklmnopqrstuvwx", fingerprints: [fingerprint256])
        XCTAssertEqual(answer.setup, .active)
        XCTAssertEqual(answer.mid, "0")
        let text = answer.sdp
        for foreign in ["extmap-allow-mixed", "msid-semantic", "network-id", "1467250027", "Fh3A"] {
            XCTAssertFalse(text.contains(foreign), "echoed \(foreign)")
        }
        let attributeNames = Set(text.components(separatedBy: "\r\n").filter { $0.hasPrefix("a=") }
            .map { String($0.dropFirst(2).prefix { $0 != ":" }) })
        XCTAssertEqual(attributeNames, ["group", "ice-ufrag", "ice-pwd", "ice-options", "fingerprint", "setup", "mid", "sctp-port", "max-message-size"])
    }

    func testDTLSRoles() throws {
        XCTAssertEqual(SessionDescription.dtlsRole(local: .active, remote: .actpass), .client)
        XCTAssertEqual(SessionDescription.dtlsRole(local: .actpass, remote: .active), .server)
        XCTAssertEqual(SessionDescription.dtlsRole(local: .actpass, remote: .passive), .client)
        XCTAssertEqual(SessionDescription.dtlsRole(local: .passive, remote: .active), .server)
        XCTAssertNil(SessionDescription.dtlsRole(local: .active, remote: .active))
        let legacy = try SessionDescription(parsing: SDPSamples.legacyAnswer)
        XCTAssertEqual(try legacy.answer(iceUfrag: "abcd", icePwd: "abcdefghijklmnopqrstuvwx", fingerprints: [fingerprint256]).setup, .passive)
    }

    func testTrickledCandidates() throws {
        XCTAssertEqual(try SessionDescription.parseCandidate("a=candidate:1 1 udp 1 10.0.0.1 9 typ host"),
                       "candidate:1 1 udp 1 10.0.0.1 9 typ host")
        XCTAssertEqual(try SessionDescription.parseCandidate("candidate:1 2 UDP 5 ::1 9 typ relay raddr ::1 rport 1"),
                       "candidate:1 2 UDP 5 ::1 9 typ relay raddr ::1 rport 1")
        XCTAssertThrowsError(try SessionDescription.parseCandidate("candidate:1 1 udp 1 10.0.0.1 x typ host"))
        XCTAssertThrowsError(try SessionDescription.parseCandidate("a=end-of-candidates"))
    }

    /// Every stack's sample, cut after each line: either it still parses (only optional lines
    /// were lost) or the error names the data section or says what is missing — never a crash.
    func testTruncatedDescriptions() {
        for sample in [SDPSamples.chromiumOffer, SDPSamples.aiortcOffer, SDPSamples.pionOffer, SDPSamples.libdatachannelOffer, SDPSamples.legacyAnswer] {
            let lines = sample.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\r\n" || $0 == "\n" })
            XCTAssertGreaterThan(lines.count, 10)
            for keep in 0..<lines.count - 1 {
                let truncated = lines.prefix(keep).joined(separator: "\r\n")
                do throws(SDPError) {
                    let parsed = try SessionDescription(parsing: truncated)
                    XCTAssertFalse(parsed.fingerprints.isEmpty)
                } catch {
                    XCTAssertTrue(error.reason.contains("missing") || error.reason.contains("no ") || error.reason.contains("empty"), "\(error)")
                }
            }
            // Cut in the middle of a line (character by character over the last 40 characters).
            for cut in stride(from: sample.count - 40, to: sample.count, by: 1) {
                _ = try? SessionDescription(parsing: String(sample.prefix(cut)))
            }
        }
    }

    func testMalformedLinesAreNamed() {
        let cases: [(String, String, Int, String)] = [
            ("a=setup:actpass", "a=setup:sideways", 16, "setup"),
            ("a=sctp-port:5000", "a=sctp-port:70000", 18, "sctp-port"),
            ("a=max-message-size:262144", "a=max-message-size:big", 19, "max-message-size"),
            ("a=ice-ufrag:Fh3A", "a=ice-ufrag:ab", 12, "ice-ufrag"),
            ("a=ice-pwd:p9QhgUw8bU5dXE1Ihr0Q7yl0", "a=ice-pwd:short", 13, "ice-pwd"),
            ("a=fingerprint:\(SDPSamples.fp256)", "a=fingerprint:sha-256 ZZ:00", 15, "fingerprint"),
            ("a=mid:0", "mid:0", 17, "type"),
            ("m=application 46243 UDP/DTLS/SCTP webrtc-datachannel", "m=application x UDP/DTLS/SCTP webrtc-datachannel", 8, "m="),
            ("m=application 46243 UDP/DTLS/SCTP webrtc-datachannel", "m=application 0 UDP/DTLS/SCTP webrtc-datachannel", 8, "rejected"),
            ("c=IN IP4 127.0.0.1", "c=IN IPX 127.0.0.1", 9, "c="),
            ("a=candidate:1467250027 1 udp 2122260223 127.0.0.1 46243 typ host generation 0 network-id 1", "a=candidate:1467250027 1 udp", 10, "candidate"),
        ]
        for (original, replacement, line, word) in cases {
            let sample = SDPSamples.chromiumOffer.replacingOccurrences(of: original + "\r\n", with: replacement + "\r\n")
            XCTAssertNotEqual(sample, SDPSamples.chromiumOffer, original)
            guard let error = refusal(sample, line: line, text: replacement) else { continue }
            XCTAssertTrue(error.description.contains(replacement), error.description)
            XCTAssertTrue(error.reason.contains(word) || error.description.contains(word), "\(error)")
        }
        XCTAssertEqual((try? SessionDescription(parsing: "v=1\r\n"))?.iceUfrag, nil)
        XCTAssertThrowsError(try SessionDescription(parsing: "")) { XCTAssertEqual(($0 as? SDPError)?.line, 0) }
        XCTAssertThrowsError(try SessionDescription(parsing: "s=-\r\nv=0\r\n")) { XCTAssertEqual(($0 as? SDPError)?.line, 1) }
        let noData = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"
        XCTAssertThrowsError(try SessionDescription(parsing: noData)) { XCTAssertTrue(($0 as! SDPError).reason.contains("no m=application")) }
        let noFingerprint = SDPSamples.chromiumOffer.replacingOccurrences(of: "a=fingerprint:\(SDPSamples.fp256)\r\n", with: "")
        XCTAssertThrowsError(try SessionDescription(parsing: noFingerprint)) { error in
            XCTAssertEqual((error as! SDPError).line, 8)
            XCTAssertTrue((error as! SDPError).reason.contains("a=fingerprint"))
        }
    }

    func testFingerprintFormatting() {
        let fp = CertificateFingerprint(algorithm: "SHA-256", bytes: [0x0A, 0xFF, 0x00])
        XCTAssertEqual(fp.sdpValue, "sha-256 0A:FF:00")
        XCTAssertEqual(CertificateFingerprint(sdpValue: "sha-256 0a:ff:00"), fp)
        XCTAssertNil(CertificateFingerprint(sdpValue: "sha-256"))
        XCTAssertNil(CertificateFingerprint(sdpValue: "sha-256 0A:F"))
        XCTAssertNil(CertificateFingerprint(sdpValue: "sha-256 0A::FF"))
    }

    func testJSONSignalingShape() throws {
        let message = SessionDescriptionMessage(type: "offer", sdp: "v=0\r\n")
        let json = String(decoding: try JSONEncoder().encode(message), as: UTF8.self)
        XCTAssertTrue(json.contains("\"type\":\"offer\""))
        XCTAssertEqual(try JSONDecoder().decode(SessionDescriptionMessage.self, from: Data(json.utf8)), message)
    }

    /// ugate's `a=ugate-max-datagram-size`: written in the media section, parsed back (whole,
    /// split at every line, LF only), absent from foreign descriptions, never echoed by an answer.
    func testMaxDatagramSizeRoundTrip() throws {
        let offer = SessionDescription.offer(iceUfrag: "abcd", icePwd: "abcdefghijklmnopqrstuvwx",
                                             fingerprints: [fingerprint256], maxDatagramSize: 16_449)
        XCTAssertTrue(offer.sdp.contains("\r\na=ugate-max-datagram-size:16449 abcd\r\n"), offer.sdp)
        XCTAssertEqual(try SessionDescription(parsing: offer.sdp), offer)
        XCTAssertEqual(try SessionDescription(parsing: offer.sdp.replacingOccurrences(of: "\r\n", with: "\n")).maxDatagramSize, 16_449)
        // The attribute comes after the m= line: a description cut before it has none.
        let lines = offer.sdp.components(separatedBy: "\r\n")
        let at = try XCTUnwrap(lines.firstIndex { $0.hasPrefix("a=ugate-max-datagram-size") })
        XCTAssertNil(try SessionDescription(parsing: lines[..<at].joined(separator: "\r\n")).maxDatagramSize)
        for sample in [SDPSamples.chromiumOffer, SDPSamples.aiortcOffer, SDPSamples.pionOffer, SDPSamples.libdatachannelOffer] {
            XCTAssertNil(try SessionDescription(parsing: sample).maxDatagramSize)
        }
        // An answer carries only its own value (or none), whatever the offer said.
        let parsed = try SessionDescription(parsing: offer.sdp)
        let plain = try parsed.answer(iceUfrag: "efgh", icePwd: "abcdefghijklmnopqrstuvwx", fingerprints: [fingerprint256])
        XCTAssertNil(plain.maxDatagramSize)
        XCTAssertFalse(plain.sdp.contains("ugate-max-datagram-size"))
        let own = try parsed.answer(iceUfrag: "efgh", icePwd: "abcdefghijklmnopqrstuvwx", fingerprints: [fingerprint256],
                                    maxDatagramSize: 1472)
        XCTAssertEqual(try SessionDescription(parsing: own.sdp).maxDatagramSize, 1472)
        // Session level is not where it belongs: ignored like any attribute we do not use there.
        let sessionLevel = SDPSamples.chromiumOffer.replacingOccurrences(of: "t=0 0\r\n", with: "t=0 0\r\na=ugate-max-datagram-size:9000 Fh3A\r\n")
        XCTAssertNil(try SessionDescription(parsing: sessionLevel).maxDatagramSize)
        // A foreign answer that copied the offer's line (libdatachannel 0.22 copies unknown
        // media attributes) carries the offerer's ufrag, not its own: ignored.
        let echoed = own.sdp.replacingOccurrences(of: "a=ugate-max-datagram-size:1472 efgh", with: "a=ugate-max-datagram-size:16449 abcd")
        XCTAssertNotEqual(echoed, own.sdp)
        XCTAssertNil(try SessionDescription(parsing: echoed).maxDatagramSize)
    }

    /// Malformed or out-of-range values are refused with the line named.
    func testMalformedMaxDatagramSizeIsNamed() throws {
        let offer = SessionDescription.offer(iceUfrag: "abcd", icePwd: "abcdefghijklmnopqrstuvwx",
                                             fingerprints: [fingerprint256], maxDatagramSize: 9000)
        let lines = offer.sdp.components(separatedBy: "\r\n")
        let number = try XCTUnwrap(lines.firstIndex { $0.hasPrefix("a=ugate-max-datagram-size") }) + 1
        for bad in ["", "9000", "big abcd", "-1 abcd", "1199 abcd", "65508 abcd", "+9000 abcd", "9000  abcd", "9000 abcd ",
                    "９０００ abcd", "99999999999999999999 abcd", "9000 abc", "9000 ab-cd", "9000 abcd extra"] {
            let line = "a=ugate-max-datagram-size:" + bad
            let text = offer.sdp.replacingOccurrences(of: "a=ugate-max-datagram-size:9000 abcd\r\n", with: line + "\r\n")
            guard let error = refusal(text, line: number, text: line) else { continue }
            XCTAssertTrue(error.description.contains("ugate-max-datagram-size must be <bytes> <ice-ufrag>, bytes from 1200 to 65507"), "\(error)")
        }
        for good in [1200, 65_507] {
            let text = offer.sdp.replacingOccurrences(of: "a=ugate-max-datagram-size:9000 ", with: "a=ugate-max-datagram-size:\(good) ")
            XCTAssertEqual(try SessionDescription(parsing: text).maxDatagramSize, good)
        }
    }
}

/// Parses `sdp`, which must be refused at line `line` (1-based) whose text is `text`; the error,
/// or nil (after recording a failure) when it was accepted.
private func refusal(_ sdp: String, line: Int, text: String, file: StaticString = #filePath, lineNumber: UInt = #line) -> SDPError? {
    do throws(SDPError) {
        _ = try SessionDescription(parsing: sdp)
        XCTFail("accepted \(text)", file: file, line: lineNumber)
        return nil
    } catch {
        XCTAssertEqual(error.line, line, "\(text): \(error)", file: file, line: lineNumber)
        XCTAssertEqual(error.text, text, file: file, line: lineNumber)
        return error
    }
}
