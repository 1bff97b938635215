import XCTest
@testable import ICE

final class ICELinkTests: XCTestCase {
    func testModuleLinks() {
        _ = ICEModule.self
    }
}
