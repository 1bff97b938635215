import XCTest
@testable import PeerMesh

final class PeerMeshLinkTests: XCTestCase {
    func testModuleLinks() {
        _ = PeerMeshModule.self
    }
}
