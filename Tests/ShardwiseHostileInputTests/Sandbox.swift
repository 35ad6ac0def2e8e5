import Foundation
import Shardwise
import XCTest

#if canImport(Glibc)
import Glibc
#endif

/// The built `shardwise` beside the test bundle.
let shardwiseExecutable = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("shardwise").path

/// What a run of the binary did.
struct Outcome {
    var status: Int32
    var output: String
    var error: String
    var seconds: Double
    /// The first line of standard error.
    var firstLine: String { error.split(separator: "\n").first.map(String.init) ?? "" }
}

/// Runs `shardwise arguments` in `directory` under a 2 GB address-space limit (`ulimit -v`)
/// and a time limit (killed with SIGKILL, status 137, when it runs past it).
func runLimited(_ arguments: [String], in directory: String, seconds: Int = 60, memoryKB: Int = 2_097_152) throws -> Outcome {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/bin/sh")
    process.arguments = ["-c", "ulimit -v \(memoryKB); exec timeout -s KILL \(seconds) \"$0\" \"$@\"", shardwiseExecutable] + arguments
    process.currentDirectoryURL = URL(fileURLWithPath: directory)
    let out = Pipe(), err = Pipe()
    process.standardOutput = out
    process.standardError = err
    let start = Date()
    try process.run()
    // Read both pipes concurrently: a chatty child must not block on a full pipe.
    nonisolated(unsafe) var output = Data()
    let reader = Thread { output = out.fileHandleForReading.readDataToEndOfFile() }
    reader.start()
    let error = err.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    while !reader.isFinished { usleep(1_000) }
    return Outcome(
        status: process.terminationStatus, output: String(decoding: output, as: UTF8.self),
        error: String(decoding: error, as: UTF8.self), seconds: Date().timeIntervalSince(start))
}

/// A small MNIST-shaped data set as raw IDX files: `train` and `test` images of 28x28 random
/// pixels with labels 0...9, written by the test so that it needs no shared data.
func writeSyntheticMNIST(to folder: String, train: Int = 512, test: Int = 128, seed: UInt64 = 7) throws {
    try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
    var state = seed
    func next() -> UInt8 {
        state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
        return UInt8(truncatingIfNeeded: state >> 56)
    }
    for (prefix, count) in [("train", train), ("t10k", test)] {
        let labels = (0..<count).map { UInt8($0 % 10) }
        // Images correlate with their label (a bright band per class), so a network can learn.
        // 500 distinct images (50 per class), repeated: large sets are written in moments even in debug builds.
        let distinct = min(count, 500)
        var base = [UInt8](repeating: 0, count: distinct * 784)
        for i in 0..<distinct {
            for p in 0..<784 { base[i * 784 + p] = next() / 4 }
            for p in 0..<28 { base[i * 784 + Int(labels[i]) * 56 + p] = 255 }
        }
        var pixels: [UInt8] = []
        pixels.reserveCapacity(count * 784)
        while pixels.count < count * 784 { pixels += base.prefix(count * 784 - pixels.count) }
        try Data(idxHeader(dimensions: [count, 28, 28]) + pixels).write(to: URL(fileURLWithPath: "\(folder)/\(prefix)-images-idx3-ubyte"))
        try Data(idxHeader(dimensions: [count]) + labels).write(to: URL(fileURLWithPath: "\(folder)/\(prefix)-labels-idx1-ubyte"))
    }
}

/// An IDX header of unsigned bytes with these dimensions (each written as a big-endian UInt32).
func idxHeader(dimensions: [Int]) -> [UInt8] {
    [0, 0, 8, UInt8(dimensions.count)] + dimensions.flatMap { d in (0..<4).map { UInt8(truncatingIfNeeded: UInt32(truncatingIfNeeded: d) >> (24 - 8 * $0)) } }
}

/// Every file under `root` (folders whose names start with `case-` excepted): path to mode,
/// size, modification time and (under 1 MB) content digest. Equal snapshots: nothing was written there.
func snapshot(_ root: String) -> [String: String] {
    var result: [String: String] = [:]
    guard let walker = FileManager.default.enumerator(atPath: root) else { return result }
    while let relative = walker.nextObject() as? String {
        if relative.hasPrefix("case-") {
            walker.skipDescendants()
            continue
        }
        let path = "\(root)/\(relative)"
        var info = stat()
        guard lstat(path, &info) == 0 else { continue }
        var entry = "mode \(info.st_mode) size \(info.st_size) mtime \(info.st_mtim.tv_sec).\(info.st_mtim.tv_nsec)"
        // Small files by content too (the size and nanosecond mtime already reveal a write to a large one).
        if info.st_mode & S_IFMT == S_IFREG, info.st_size < 1 << 20, let data = FileManager.default.contents(atPath: path) {
            entry += " sha256 \(SHA256.hexDigest(Array(data)))"
        }
        result[relative] = entry
    }
    return result
}

/// Rewrites a checkpoint's SHA256SUMS to match its files, so that only the format checks stand
/// between a mutated file and the program.
func resealCheckpoint(_ folder: String) throws {
    var sums = ""
    for name in ["model.safetensors", "optimizer.safetensors", "state.json"] {
        let bytes = FileManager.default.contents(atPath: "\(folder)/\(name)").map(Array.init) ?? []
        sums += "\(SHA256.hexDigest(bytes))  \(name)\n"
    }
    try sums.write(toFile: "\(folder)/SHA256SUMS", atomically: true, encoding: .utf8)
}

/// Edits a checkpoint's state.json as a JSON object, then reseals the checkpoint.
func editState(_ folder: String, _ edit: (inout [String: Any]) -> Void) throws {
    let data = try Data(contentsOf: URL(fileURLWithPath: "\(folder)/state.json"))
    var object = try JSONSerialization.jsonObject(with: data) as! [String: Any]
    edit(&object)
    try JSONSerialization.data(withJSONObject: object).write(to: URL(fileURLWithPath: "\(folder)/state.json"))
    try resealCheckpoint(folder)
}

/// A safetensors file from a raw JSON header and data bytes (the header length is written as given).
func safetensors(header: String, data: [UInt8] = [], declaredLength: UInt64? = nil) -> [UInt8] {
    let h = Array(header.utf8)
    let n = declaredLength ?? UInt64(h.count)
    return (0..<8).map { UInt8(truncatingIfNeeded: n >> (8 * UInt64($0))) } + h + data
}
