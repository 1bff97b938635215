// swift-tools-version:6.0
import PackageDescription

/// Every Swift target builds in Swift 6 language mode with complete concurrency checking.
let swiftSettings: [SwiftSetting] = [
    .swiftLanguageMode(.v6),
    .enableUpcomingFeature("ExistentialAny"),
]

let package = Package(
    name: "ugate",
    products: [
        .executable(name: "ugate", targets: ["ugate"]),
        .library(name: "Gate", targets: ["Gate"]),
        .library(name: "ICE", targets: ["ICE"]),
        .library(name: "DataChannel", targets: ["DataChannel"]),
        .library(name: "PeerMesh", targets: ["PeerMesh"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-nio-http2.git", from: "1.46.0"),
        .package(url: "https://github.com/apple/swift-crypto.git", "3.12.3"..<"5.0.0"),
        .package(url: "https://github.com/apple/swift-certificates.git", from: "1.21.1"),
        .package(url: "https://github.com/apple/swift-asn1.git", from: "1.7.4"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "5.0.1"),
    ],
    targets: [
        // MARK: C system libraries (pkg-config names) and shims
        .systemLibrary(
            name: "CNice", pkgConfig: "nice",
            providers: [.apt(["libnice-dev"])]),
        .target(name: "CNiceShim", dependencies: ["CNice"]),
        .systemLibrary(
            name: "COpenSSL", pkgConfig: "openssl",
            providers: [.apt(["libssl-dev"])]),
        .target(name: "COpenSSLShim", dependencies: ["COpenSSL"]),
        .systemLibrary(
            name: "CUsrsctp", pkgConfig: "usrsctp",
            providers: [.apt(["libusrsctp-dev"])]),
        .systemLibrary(
            name: "CSRTP", pkgConfig: "libsrtp2",
            providers: [.apt(["libsrtp2-dev"])]),
        .target(
            name: "CLinux",
            cSettings: [.define("_GNU_SOURCE")]),

        // MARK: Swift modules
        .target(
            name: "Gate",
            dependencies: [
                "CLinux", "COpenSSL", "COpenSSLShim",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOHTTP2", package: "swift-nio-http2"),
                .product(name: "NIOHPACK", package: "swift-nio-http2"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Yams", package: "Yams"),
            ],
            swiftSettings: swiftSettings + [
                // The gate's data path (loops, HTTP/1.1 and HTTP/2 serving) in release builds
                // without the runtime's dynamic exclusivity checks (swift_beginAccess on every
                // access to a class's stored property: about 2 % of the CPU time of an HTTP/1.1
                // request, docs/httproute.md). Debug builds, and so the tests, keep them.
                .unsafeFlags(["-enforce-exclusivity=unchecked"], .when(configuration: .release))
            ]),
        .target(
            name: "ICE",
            dependencies: [
                "CNice", "CNiceShim",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings),
        .target(
            name: "DataChannel",
            dependencies: [
                "COpenSSL", "COpenSSLShim", "CUsrsctp", "CSRTP",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: swiftSettings),
        .target(
            name: "PeerMesh",
            dependencies: [
                "Gate", "ICE", "DataChannel",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOHTTP2", package: "swift-nio-http2"),
                .product(name: "NIOHPACK", package: "swift-nio-http2"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "_CryptoExtras", package: "swift-crypto"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
            ],
            swiftSettings: swiftSettings),
        .executableTarget(
            name: "ugate",
            dependencies: [
                "PeerMesh", "Gate", "ICE", "DataChannel",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings),

        // MARK: Tests
        .testTarget(
            name: "GateTests",
            dependencies: [
                "Gate", "CLinux", .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings),
        .testTarget(
            name: "ICETests",
            dependencies: ["ICE", .product(name: "Logging", package: "swift-log")],
            swiftSettings: swiftSettings),
        .testTarget(name: "DataChannelTests", dependencies: ["DataChannel"], swiftSettings: swiftSettings),
        .testTarget(
            name: "PeerMeshTests",
            dependencies: [
                "PeerMesh", "Gate", .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOTLS", package: "swift-nio"),
            ],
            resources: [.copy("Resources")],
            swiftSettings: swiftSettings),
    ]
)
