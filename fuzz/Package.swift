// swift-tools-version:5.4
import PackageDescription

/// libFuzzer harnesses for the HTTPRoute gateway's parsers: a separate package so the main
/// build and `swift test` never see them. Built and run by `scripts/fuzz-httproute` (debug,
/// `-sanitize=fuzzer,address`). The contracts are the ones the fixed-seed tests check
/// (`Tests/GateTests/HTTPRouteFuzzContracts.swift`, linked into the target). Tools version
/// 5.4: from 5.5 on SwiftPM renames an executable's entry point and links `main` to it,
/// which clashes with libFuzzer's `main`; the target has no `main.swift` and no `@main`.
let package = Package(
    name: "ugate-fuzz",
    dependencies: [
        .package(name: "ugate", path: ".."),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-http2.git", from: "1.46.0"),
    ],
    targets: [
        .executableTarget(
            name: "FuzzHTTPRoute",
            dependencies: [
                .product(name: "Gate", package: "ugate"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHPACK", package: "swift-nio-http2"),
            ]),
    ]
)
