import Crypto
import Glibc
import XCTest
@testable import PeerMesh

final class NodeIDTests: XCTestCase {
    /// RFC 4648 §10 test vectors (padding removed).
    func testBase32Vectors() {
        let cases = ["": "", "f": "MY", "fo": "MZXQ", "foo": "MZXW6", "foob": "MZXW6YQ", "fooba": "MZXW6YTB", "foobar": "MZXW6YTBOI"]
        for (input, expected) in cases {
            XCTAssertEqual(Base32.encode(Array(input.utf8)), expected, input)
        }
    }

    func testIDIs52CharactersAndVIP6UsesKeyTail() throws {
        let key = P256.Signing.PrivateKey().publicKey
        let node = NodeID(key)
        XCTAssertEqual(node.id.count, 52)
        XCTAssertEqual(try NodeID(publicKey: node.publicKey), node)
        var address = in6_addr()
        XCTAssertEqual(inet_pton(AF_INET6, node.vip6, &address), 1, node.vip6)
        let bytes = withUnsafeBytes(of: &address) { Array($0) }
        XCTAssertEqual(bytes, [0xfd] + [UInt8](repeating: 0, count: 7) + node.publicKey.suffix(8))
    }

    /// VIP6 text is RFC 5952 (as capture listeners write IPv6 destinations), also when a tail
    /// group is zero; other spellings of the same address canonicalize to it.
    func testVIP6TextIsCanonical() {
        let key = [UInt8](repeating: 0xab, count: 57) + [0, 0, 0x12, 0x34, 0, 0x5, 0xab, 0xcd]
        XCTAssertEqual(NodeID.vip6(publicKey: key), "fd00::1234:5:abcd")
        XCTAssertEqual(NodeID.vip6(publicKey: [UInt8](repeating: 0xff, count: 65)), "fd00::ffff:ffff:ffff:ffff")
        XCTAssertEqual(NodeID.canonicalIPv6("FD00:0:0:0:0:1234:0005:ABCD"), "fd00::1234:5:abcd")
        XCTAssertNil(NodeID.canonicalIPv6("127.0.0.1"))
        XCTAssertNil(NodeID.canonicalIPv6("fd00::1::2"))
        XCTAssertNil(NodeID.canonicalIPv6("bob.example"))
    }

    func testRejectsBadKey() {
        XCTAssertThrowsError(try NodeID(publicKey: [0x04] + [UInt8](repeating: 1, count: 64)))
        XCTAssertThrowsError(try NodeID(publicKey: [1, 2, 3]))
    }
}
