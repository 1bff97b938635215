import Foundation

@testable import Gate

// libFuzzer harness for the HTTPRoute gateway's parsers. The target is chosen with
// UGATE_FUZZ_TARGET (h2, h1, response, chunked, manifest: `FuzzContract.targets`);
// UGATE_FUZZ_SEEDS=<dir> writes the target's seed inputs there and exits. An input that
// breaks the target's contract (`FuzzContract`) traps with what broke, so libFuzzer keeps it
// as a crash artifact. This file's top-level code is the program's `main`, which hands over
// to libFuzzer's driver (SwiftPM names an executable's entry point itself, so libFuzzer's own
// `main` cannot be used).

/// libFuzzer's entry point for programs that have their own `main`.
@_silgen_name("LLVMFuzzerRunDriver")
func runFuzzerDriver(
    _ argc: UnsafeMutablePointer<Int32>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
    _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> Int32
) -> Int32

enum Harness {
    nonisolated(unsafe) static var target = "h2"
}

let environment = ProcessInfo.processInfo.environment
Harness.target = environment["UGATE_FUZZ_TARGET"] ?? "h2"
guard FuzzContract.targets.contains(Harness.target) else {
    FileHandle.standardError.write(Data("UGATE_FUZZ_TARGET \(Harness.target): not one of \(FuzzContract.targets)\n".utf8))
    exit(2)
}
if let directory = environment["UGATE_FUZZ_SEEDS"] {
    for (index, seed) in FuzzContract.seeds(Harness.target).enumerated() {
        FileManager.default.createFile(atPath: "\(directory)/seed-\(index)", contents: Data(seed))
    }
    exit(0)
}
var argc = CommandLine.argc
var argv = CommandLine.unsafeArgv
exit(runFuzzerDriver(&argc, &argv) { data, size in
    let input = data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? []
    if let violation = FuzzContract.check(Harness.target, input) {
        fatalError("contract of \(Harness.target) broken: \(violation)")
    }
    return 0
})
