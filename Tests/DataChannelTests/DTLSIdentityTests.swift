import Foundation
import XCTest
@testable import DataChannel

final class DTLSIdentityTests: XCTestCase {
    /// Our SHA-256 fingerprint equals what the openssl command line computes for the same DER.
    func testFingerprintMatchesOpenSSLCommandLine() throws {
        let identity = try DTLSIdentity(commonName: "fingerprint-test")
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("ugate-dc-\(UUID().uuidString).der")
        try Data(identity.certificateDER).write(to: file)
        defer { try? FileManager.default.removeItem(at: file) }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
        process.arguments = ["x509", "-inform", "DER", "-in", file.path, "-noout", "-fingerprint", "-sha256", "-text"]
        let pipe = Pipe()
        process.standardOutput = pipe
        try process.run()
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        XCTAssertEqual(process.terminationStatus, 0)
        XCTAssertTrue(output.contains("sha256 Fingerprint=\(identity.fingerprint.hexBytes)"), output)
        XCTAssertTrue(output.contains("ASN1 OID: prime256v1"), output)
        XCTAssertTrue(output.contains("ecdsa-with-SHA256"), output)
        XCTAssertTrue(output.contains("CN = fingerprint-test"), output)
        XCTAssertEqual(identity.fingerprint.bytes.count, 32)
    }

    func testVerificationAgainstSeveralFingerprints() throws {
        let identity = try DTLSIdentity()
        let der = identity.certificateDER
        let sha384 = try XCTUnwrap(CertificateFingerprint(algorithm: "sha-384", certificateDER: der))
        let other = try DTLSIdentity().fingerprint
        XCTAssertNil(CertificateFingerprint.verify(certificateDER: der, against: [identity.fingerprint]))
        XCTAssertNil(CertificateFingerprint.verify(certificateDER: der, against: [other, identity.fingerprint]))
        XCTAssertNil(CertificateFingerprint.verify(certificateDER: der, against: [sha384]))
        // sha-256 is preferred: a matching sha-384 does not rescue a wrong sha-256 (RFC 8122 §5).
        let mismatch = CertificateFingerprint.verify(certificateDER: der, against: [other, sha384])
        XCTAssertEqual(mismatch?.code, .fingerprintMismatch)
        XCTAssertTrue(mismatch?.context.contains(other.sdpValue) == true)
        XCTAssertTrue(mismatch?.context.contains(identity.fingerprint.sdpValue) == true)
        XCTAssertEqual(CertificateFingerprint.verify(certificateDER: der, against: [CertificateFingerprint(algorithm: "md5", bytes: [1])])?.code, .fingerprintMismatch)
    }
}
