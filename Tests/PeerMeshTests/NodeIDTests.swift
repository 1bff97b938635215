import Crypto
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
        let tail = node.publicKey.suffix(8)
        let expected = "fd00::" + stride(from: tail.startIndex, to: tail.endIndex, by: 2)
            .map { String(UInt16(tail[$0]) << 8 | UInt16(tail[$0 + 1]), radix: 16) }.joined(separator: ":")
        XCTAssertEqual(node.vip6, expected)
    }

    func testRejectsBadKey() {
        XCTAssertThrowsError(try NodeID(publicKey: [0x04] + [UInt8](repeating: 1, count: 64)))
        XCTAssertThrowsError(try NodeID(publicKey: [1, 2, 3]))
    }
}
