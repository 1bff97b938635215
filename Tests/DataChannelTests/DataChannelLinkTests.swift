import XCTest
@testable import DataChannel

final class DataChannelLinkTests: XCTestCase {
    func testModuleLinks() {
        _ = DataChannelModule.self
    }
}
