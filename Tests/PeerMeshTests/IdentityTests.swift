import Crypto
import Foundation
import XCTest
@testable import PeerMesh

final class IdentityTests: XCTestCase {
    func testKeyFileIsMode0600AndReusedAcrossLoads() throws {
        let base = try temporaryDirectory("identity")
        defer { try? FileManager.default.removeItem(atPath: base) }
        let dir = base + "/node"
        let first = try NodeIdentity.loadOrCreate(directory: dir)
        let attributes = try FileManager.default.attributesOfItem(atPath: dir + "/key.pem")
        XCTAssertEqual((attributes[.posixPermissions] as? NSNumber)?.intValue, 0o600)
        let dirAttributes = try FileManager.default.attributesOfItem(atPath: dir)
        XCTAssertEqual((dirAttributes[.posixPermissions] as? NSNumber)?.intValue, 0o700)

        let second = try NodeIdentity.loadOrCreate(directory: dir)
        XCTAssertEqual(first.node, second.node)
        XCTAssertEqual(first.fingerprint, second.fingerprint, "the certificate is stored and reused, not regenerated")
        XCTAssertEqual(first.node.id.count, 52)
    }

    func testCertificateCarriesMangledHostnameAndSpiffeID() throws {
        let naming = MeshNaming(namespace: "edge", trustDomain: "example.org")
        let identity = try NodeIdentity.generate(naming: naming)
        let id = identity.node.id
        XCTAssertEqual(identity.mangledHostname, "\(id).edge.example.org")
        XCTAssertEqual(identity.spiffeID, "spiffe://example.org/ns/edge/sa/\(id)")
        let sans = try XCTUnwrap(identity.leaf.extensions.subjectAlternativeNames)
        XCTAssertTrue(sans.contains(.dnsName("\(id).edge.example.org")))
        XCTAssertTrue(sans.contains(.uniformResourceIdentifier("spiffe://example.org/ns/edge/sa/\(id)")))
        XCTAssertEqual(try PeerVerifier.identify(leafDER: identity.leafDER), identity.node)
        // Fingerprint = SHA-256 of the DER certificate.
        let expected = SHA256.hash(data: identity.leafDER).map { String(format: "%02X", $0) }.joined(separator: ":")
        XCTAssertEqual(identity.fingerprint, expected)
        // Public key: base64url of the 65-byte point.
        var b64 = identity.publicKeyBase64URL.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while b64.count % 4 != 0 { b64 += "=" }
        XCTAssertEqual(Data(base64Encoded: b64).map(Array.init), identity.node.publicKey)
    }

    func testDefaultNaming() {
        XCTAssertEqual(MeshNaming().hostname(for: "X"), "X.default.cluster.local")
    }

    func testChangedNamingRegeneratesCertificateForSameKey() throws {
        let dir = try temporaryDirectory("identity-naming")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let first = try NodeIdentity.loadOrCreate(directory: dir)
        let second = try NodeIdentity.loadOrCreate(directory: dir, naming: MeshNaming(namespace: "other"))
        XCTAssertEqual(first.node, second.node)
        XCTAssertEqual(second.mangledHostname, "\(first.node.id).other.cluster.local")
    }

    /// A mesh CA (here: the openssl command line, like an Istio-style CA would) issues a leaf for the
    /// node key; `cert-chain.pem` is then presented and the node ID still comes from the key.
    func testLoadsChainIssuedByMeshCA() throws {
        let dir = try temporaryDirectory("identity-ca")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let identity = try NodeIdentity.loadOrCreate(directory: dir)
        try openssl(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
                     "-subj", "/CN=mesh-ca", "-keyout", "\(dir)/ca.key", "-out", "\(dir)/ca.pem"])
        try openssl(["req", "-new", "-key", "\(dir)/key.pem", "-subj", "/CN=\(identity.node.id)", "-out", "\(dir)/leaf.csr"])
        try "subjectAltName=URI:\(identity.spiffeID)\n".write(toFile: "\(dir)/ext.cnf", atomically: true, encoding: .utf8)
        try openssl(["x509", "-req", "-in", "\(dir)/leaf.csr", "-CA", "\(dir)/ca.pem", "-CAkey", "\(dir)/ca.key",
                     "-CAcreateserial", "-days", "2", "-extfile", "\(dir)/ext.cnf", "-out", "\(dir)/leaf.pem"])
        let chain = try String(contentsOfFile: "\(dir)/leaf.pem", encoding: .utf8) + String(contentsOfFile: "\(dir)/ca.pem", encoding: .utf8)
        try chain.write(toFile: "\(dir)/cert-chain.pem", atomically: true, encoding: .utf8)

        let loaded = try NodeIdentity.loadOrCreate(directory: dir)
        XCTAssertEqual(loaded.certificateChain.count, 2)
        XCTAssertEqual(loaded.node, identity.node)
        XCTAssertEqual(try PeerVerifier.identify(leafDER: loaded.leafDER), identity.node)
        XCTAssertNotEqual(loaded.fingerprint, identity.fingerprint)

        // A chain whose leaf is for another key is refused.
        try FileManager.default.removeItem(atPath: "\(dir)/key.pem")
        XCTAssertThrowsError(try NodeIdentity.loadOrCreate(directory: dir)) { error in
            XCTAssertEqual((error as? MeshError)?.code, .certificate)
        }
    }

    func testBadKeyFileIsAClearError() throws {
        let dir = try temporaryDirectory("identity-bad")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try "not a key".write(toFile: dir + "/key.pem", atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try NodeIdentity.loadOrCreate(directory: dir)) { error in
            XCTAssertEqual((error as? MeshError)?.code, .identityFile)
            XCTAssertTrue("\(error)".contains("key.pem"), "\(error)")
        }
    }

    private func openssl(_ arguments: [String]) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
        process.arguments = arguments
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        XCTAssertEqual(process.terminationStatus, 0, "openssl \(arguments.joined(separator: " "))")
    }
}
