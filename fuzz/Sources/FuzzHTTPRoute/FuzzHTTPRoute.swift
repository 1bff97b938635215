import Foundation

@testable import Gate

// libFuzzer harness for the HTTPRoute gateway's parsers (libFuzzer brings `main`). The target
// is chosen with UGATE_FUZZ_TARGET (h2, h1, response, chunked, manifest:
// `FuzzContract.targets`); UGATE_FUZZ_SEEDS=<dir> writes the target's seed inputs there and
// exits. An input that breaks the target's contract (`FuzzContract`) traps with what broke,
// so libFuzzer keeps it as a crash artifact.

enum Harness {
    nonisolated(unsafe) static var target = "h2"
}

@_cdecl("LLVMFuzzerInitialize")
public func fuzzInitialize(_ argc: UnsafeMutablePointer<Int32>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>) -> Int32 {
    let environment = ProcessInfo.processInfo.environment
    Harness.target = environment["UGATE_FUZZ_TARGET"] ?? "h2"
    guard FuzzContract.targets.contains(Harness.target) else {
        FileHandle.standardError.write(Data("UGATE_FUZZ_TARGET \(Harness.target): not one of \(FuzzContract.targets)\n".utf8))
        exit(2)
    }
    if let directory = environment["UGATE_FUZZ_SEEDS"] {
        for (index, seed) in FuzzContract.seeds(Harness.target).enumerated() {
            guard FileManager.default.createFile(atPath: "\(directory)/seed-\(index)", contents: Data(seed)) else { exit(1) }
        }
        exit(0)
    }
    return 0
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let input = data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? []
    if let violation = FuzzContract.check(Harness.target, input) {
        fatalError("contract of \(Harness.target) broken: \(violation)")
    }
    return 0
}
