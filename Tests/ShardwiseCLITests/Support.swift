import Foundation
import XCTest

#if canImport(Glibc)
import Glibc
#endif

/// The `shardwise` executable built beside this test bundle.
let shardwiseExecutable = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("shardwise").path

/// The shared MNIST folder, or a skip that says it is absent.
func sharedMNIST() throws -> String {
    let candidates = ["../shared/datasets/mnist", "../../shared/datasets/mnist"]
    guard let found = candidates.first(where: { access("\($0)/train-labels-idx1-ubyte.gz", R_OK) == 0 }) else {
        throw XCTSkip("../shared/datasets/mnist is absent")
    }
    return found
}

/// `python3 arguments` (through env): its exit status and its standard output and error together.
func runPython(_ arguments: [String]) throws -> (status: Int32, output: String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = ["python3"] + arguments
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = pipe
    try process.run()
    let text = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    process.waitUntilExit()
    return (process.terminationStatus, text)
}

/// Runs the built `shardwise` with `arguments`: its exit status, standard output and standard error.
func runShardwise(_ arguments: [String]) throws -> (status: Int32, output: String, error: String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: shardwiseExecutable)
    process.arguments = arguments
    let out = Pipe(), err = Pipe()
    process.standardOutput = out
    process.standardError = err
    try process.run()
    let output = out.fileHandleForReading.readDataToEndOfFile()
    let error = err.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: output, as: UTF8.self), String(decoding: error, as: UTF8.self))
}
