import XCTest
@testable import Gate

final class DestinationTests: XCTestCase {
    func testIPv6LiteralIsBracketed() {
        XCTAssertEqual(Destination(host: "::1", port: 80).description, "[::1]:80")
        XCTAssertEqual(Destination(host: "example.com", port: 443).description, "example.com:443")
    }
}
