import Foundation
import Shardwise
import XCTest

#if canImport(Glibc)
import Glibc
#endif

/// Runs the built `shardwise` executable and checks its output and exit status.
final class CLITests: XCTestCase {
    struct Result {
        var status: Int32
        var output: String
        var error: String
    }


    func shardwise(_ arguments: [String]) throws -> Result {
        let (status, output, error) = try runShardwise(arguments)
        return Result(status: status, output: output, error: error)
    }

    /// A usage error: exit status 2, one "error:" line naming the flag, no backtrace.
    func assertUsageError(_ arguments: [String], mentions text: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let result = try shardwise(arguments)
        XCTAssertEqual(result.status, 2, "\(arguments): \(result.error)", file: file, line: line)
        let first = result.error.split(separator: "\n").first.map(String.init) ?? ""
        XCTAssert(first.hasPrefix("error: ") && first.contains(text), "\(arguments): '\(first)' lacks '\(text)'", file: file, line: line)
        XCTAssertFalse(result.error.contains("Fatal error") || result.error.contains("backtrace"), file: file, line: line)
    }

    /// Help, in every form, goes to standard output with status 0.
    func testHelp() throws {
        for arguments in [["--help"], ["train", "--help"], ["help", "train"], ["topology", "-h"], ["help"]] {
            let result = try shardwise(arguments)
            XCTAssertEqual(result.status, 0, "\(arguments): \(result.error)")
            XCTAssert(result.output.contains("USAGE: shardwise"), "\(arguments): \(result.output.prefix(200))")
        }
        XCTAssert(try shardwise(["train", "--help"]).output.contains("--overwrite"))
    }

    /// `topology --trials`: the core sets a sweep's trials would train on, one per L3 domain here.
    func testTopologyShowsTrialSlots() throws {
        let result = try shardwise(["topology", "--synthetic", "pack:2 l3:2 core:4 pu:2", "--trials", "auto", "--shards", "4", "--json"])
        XCTAssertEqual(result.status, 0, result.error)
        let plan = try JSONSerialization.jsonObject(with: Data(result.output.utf8)) as! [String: Any]
        let slots = plan["slots"] as! [[Int]]
        XCTAssertEqual(slots.count, 4)
        XCTAssertEqual(slots.flatMap { $0 }.count, 32, "every PU (2 x 2 x 4 x 2) in one slot")
        XCTAssertEqual(Set(slots.flatMap { $0 }).count, 32)
        XCTAssertEqual((plan["packages"] as! [[Int]]).map(\.count), [1, 1, 1, 1])
        let table = try shardwise(["topology", "--synthetic", "pack:2 l3:2 core:4 pu:2", "--trials", "3", "--shards", "4"])
        XCTAssert(table.output.hasPrefix("3 trial slots of 4 cores"), table.output)
        try assertUsageError(["topology", "--trials", "0"], mentions: "--trials")
    }

    func testBadFlagValues() throws {
        try assertUsageError(["train", "--dropout-input", "1.5"], mentions: "--dropout-input: 1.5, expected a probability in [0, 1)")
        try assertUsageError(["train", "--dropout-hidden", "-0.1"], mentions: "--dropout-hidden")
        try assertUsageError(["train", "--layers", ""], mentions: "--layers: empty")
        try assertUsageError(["train", "--layers", "1024,0,5"], mentions: "--layers: '0' in '1024,0,5' is not a positive integer")
        try assertUsageError(["train", "--layers", "1024,,5"], mentions: "--layers")
        try assertUsageError(["train", "--batch-size", "0"], mentions: "--batch-size: 0, expected a positive number of samples")
        try assertUsageError(["train", "--batch-size", "100", "--shard-size", "64"], mentions: "--batch-size: 100 is not a whole number of shards of 64")
        try assertUsageError(["train", "--schedule", "sawtooth"], mentions: "--schedule: unknown schedule 'sawtooth'")
        try assertUsageError(["train", "--epochs", "ten"], mentions: "--epochs")
        try assertUsageError(["train", "--no-such-flag"], mentions: "--no-such-flag")
        try assertUsageError(["train", "--mpi-timeout", "0"], mentions: "--mpi-timeout: 0.0, expected a positive number of seconds")
        try assertUsageError(["curves", "a", "b", "--out", "c.svg", "--table", "t.md", "--paper-error", "1.06"], mentions: "--paper-error: 1 values for 2 runs")
        try assertUsageError(["curves", "a", "--out", "c.svg", "--paper-error", "1.06"], mentions: "--paper-error: needs --table")
    }

    func testMissingAndCorruptData() throws {
        let missing = try shardwise(["train", "--data", "/nonexistent/mnist", "--epochs", "1"])
        XCTAssertEqual(missing.status, 1)
        XCTAssert(missing.error.hasPrefix("error: /nonexistent/mnist: cannot be read (No such file or directory)"), missing.error)

        let folder = NSTemporaryDirectory() + "shardwise-cli-\(getpid())"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        for name in ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"] {
            _ = FileManager.default.createFile(atPath: "\(folder)/\(name)", contents: Data([0x12, 0x34, 0x56, 0x78]))
        }
        let corrupt = try shardwise(["train", "--data", folder, "--epochs", "1"])
        XCTAssertEqual(corrupt.status, 1)
        XCTAssert(corrupt.error.contains("train-images-idx3-ubyte: wrong magic number 0x12345678, expected 0x00000803"), corrupt.error)
        XCTAssertEqual(corrupt.error.split(separator: "\n").count, 1)
    }

    func testTrainWritesMetricsAndSummary() throws {
        let data = ["../shared/datasets/mnist", "../../shared/datasets/mnist"].first { access("\($0)/train-labels-idx1-ubyte.gz", R_OK) == 0 }
        guard let data else { throw XCTSkip("../shared/datasets/mnist is absent") }
        let out = NSTemporaryDirectory() + "shardwise-out-\(getpid())"
        defer { try? FileManager.default.removeItem(atPath: out) }
        let result = try shardwise([
            "train", "--data", data, "--out", out, "--epochs", "2", "--layers", "64", "--train-samples", "2048",
            "--test-samples", "500", "--batch-size", "64", "--shard-size", "32",
        ])
        XCTAssertEqual(result.status, 0, result.error)
        let lines = result.output.split(separator: "\n")
        XCTAssertEqual(lines.filter { $0.hasPrefix("epoch ") }.count, 2)
        XCTAssert(lines.last!.hasPrefix("test error "), String(lines.last!))
        let metrics = try String(contentsOfFile: "\(out)/metrics.jsonl", encoding: .utf8).split(separator: "\n")
        XCTAssertEqual(metrics.count, 2)
        let epoch = try JSONSerialization.jsonObject(with: Data(metrics[1].utf8)) as! [String: Any]
        for key in ["epoch", "train_loss", "test_error_percent", "samples_per_second", "seconds"] {
            XCTAssertNotNil(epoch[key], key)
        }
        let summary = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: "\(out)/summary.json"))) as! [String: Any]
        let hash = summary["weights_sha256"] as! String
        XCTAssert(lines.last!.hasSuffix("weights sha256 \(hash)"))
        XCTAssertEqual(summary["final_test_error_percent"] as? Double, epoch["test_error_percent"] as? Double)
        XCTAssertNotNil((summary["blas"] as? [String: Any])?["kernels"])
        XCTAssertNotNil(summary["configuration"] as? [String: Any])
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: out).filter { $0.contains(".tmp") }
        XCTAssertEqual(leftovers, [])
    }

    func testDoctorReportsKernels() throws {
        let result = try shardwise(["doctor"])
        XCTAssertEqual(result.status, 0, result.error)
        XCTAssert(result.output.contains("kernels:"), result.output)
        XCTAssert(result.output.contains("GFLOP/s"), result.output)
    }

    func testVersion() throws {
        let result = try shardwise(["--version"])
        XCTAssertEqual(result.status, 0)
        let lines = result.output.split(separator: "\n").map(String.init)
        XCTAssertEqual(lines.count, 2, result.output)
        // The version and the commit it was built from (12 hex digits), then the BLAS it loads.
        let first = try XCTUnwrap(lines.first)
        XCTAssert(first.hasPrefix("shardwise \(ShardwiseVersion.current) (commit "), first)
        let commit = first.dropFirst("shardwise \(ShardwiseVersion.current) (commit ".count).dropLast()
        XCTAssert(commit == "unknown" || (commit.count == 12 && commit.allSatisfy(\.isHexDigit)), first)
        XCTAssert(lines.last?.hasPrefix("BLAS: /") == true, result.output)
    }
}
