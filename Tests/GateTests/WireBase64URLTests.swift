import Foundation
import XCTest

@testable import Gate

/// `Base64URLCoding`: RFC 4648 §10 vectors, the URL alphabet against Foundation's base64 for
/// random inputs of every length up to 64, padding, and the refusals (lone 6-bit group, bytes
/// outside the alphabet; `+` and `/` only when standard base64 is asked for).
final class WireBase64URLTests: XCTestCase {
    func testRFC4648Vectors() throws {
        for (plain, encoded) in [("", ""), ("f", "Zg"), ("fo", "Zm8"), ("foo", "Zm9v"), ("foob", "Zm9vYg"), ("fooba", "Zm9vYmE"), ("foobar", "Zm9vYmFy")] {
            XCTAssertEqual(Base64URLCoding.encode(Array(plain.utf8)), encoded)
            XCTAssertEqual(try Base64URLCoding.decode(encoded), Array(plain.utf8))
            let padded = encoded + String(repeating: "=", count: (4 - encoded.count % 4) % 4)
            XCTAssertEqual(try Base64URLCoding.decode(padded), Array(plain.utf8), padded)
        }
    }

    func testAgainstFoundationForEveryLength() throws {
        var generator = SystemRandomNumberGenerator()
        for length in 0...64 {
            let bytes = (0..<length).map { _ in UInt8.random(in: 0...255, using: &generator) }
            let standard = Data(bytes).base64EncodedString()
            let url = standard.replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
            XCTAssertEqual(Base64URLCoding.encode(bytes), url)
            XCTAssertEqual(try Base64URLCoding.decode(url), bytes)
            XCTAssertEqual(try Base64URLCoding.decode(standard, standardAlphabet: true), bytes)
        }
        XCTAssertEqual(try Base64URLCoding.decode("-_-_"), [0xFB, 0xFF, 0xBF])
    }

    func testRefusals() {
        func refused(_ text: String, standard: Bool = false, _ failure: Base64URLCoding.Failure, line: UInt = #line) {
            XCTAssertThrowsError(try Base64URLCoding.decode(text, standardAlphabet: standard), line: line) { error in
                XCTAssertEqual(error as? Base64URLCoding.Failure, failure, line: line)
            }
        }
        refused("A", .length(1))
        refused("AAAAA==", .length(5))
        refused("AA!A", .byte(0x21, at: 2))
        refused("AA+A", .byte(0x2B, at: 2))
        refused("AA/A", .byte(0x2F, at: 2))
        refused("A=AA", .byte(0x3D, at: 1))
        refused("AA A", standard: true, .byte(0x20, at: 2))
        refused("Zg\u{e9}", .byte(0xC3, at: 2))
        XCTAssertEqual("\(Base64URLCoding.Failure.byte(0x21, at: 2))", "byte 0x21 at offset 2 is not base64url")
    }
}
