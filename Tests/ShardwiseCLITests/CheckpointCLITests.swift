import Foundation
import ShardwiseApp
import Shardwise
import XCTest

#if canImport(Glibc)
import Glibc
#endif

/// Checkpoints under the real executable: SIGKILL at random points, SIGINT, and the
/// weights read back by Python's `safetensors` package.
final class CheckpointCLITests: XCTestCase {
    var folder = ""
    var executable: String { shardwiseExecutable }

    func mnist() throws -> String { try sharedMNIST() }

    override func setUpWithError() throws {
        folder = NSTemporaryDirectory() + "shardwise-kill-\(getpid())-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(atPath: folder)
    }

    func launch(_ arguments: [String]) throws -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.standardOutput = FileHandle.nullDevice
        process.standardError = Pipe()
        try process.run()
        return process
    }

    func trainArguments(_ out: String, data: String) -> [String] {
        ["train", "--data", data, "--out", out, "--epochs", "50", "--layers", "256,256", "--train-samples", "2048",
         "--test-samples", "200", "--batch-size", "64", "--shard-size", "32", "--checkpoint-every", "1", "--keep", "2"]
    }

    /// A process killed with SIGKILL at random points, while it writes a checkpoint every
    /// step, always leaves a loadable newest checkpoint; the next run resumes from it.
    func testSIGKILLNeverLeavesABrokenCheckpoint() throws {
        let data = try mnist()
        let out = "\(folder)/run"
        var generator = SystemRandomNumberGenerator()
        var kills = 0
        var lastStep = -1
        for attempt in 0..<8 {
            let arguments = trainArguments(out, data: data) + (attempt == 0 ? [] : ["--resume", out])
            let process = try launch(arguments)
            if attempt == 0 {
                // Let the first run write a checkpoint (however slow the machine), then kill it at a random point.
                let deadline = Date().addingTimeInterval(120)
                while (try? Checkpoint.newest(in: out)) == nil && Date() < deadline && process.isRunning { usleep(50_000) }
                usleep(UInt32.random(in: 0...1_000_000, using: &generator))
            } else {
                usleep(UInt32.random(in: 1_600_000...3_000_000, using: &generator))
            }
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            kills += 1
            let newest = try Checkpoint.newest(in: out)
            let loaded = try TrainingRun.loadCheckpoint(newest)
            XCTAssertGreaterThanOrEqual(loaded.state.globalStep, lastStep, "attempt \(attempt): the newest checkpoint went backwards")
            lastStep = loaded.state.globalStep
            // Every folder named as a checkpoint is complete; only dot-named temporaries may be partial.
            for name in try FileManager.default.contentsOfDirectory(atPath: out) where name.hasPrefix("checkpoint-") {
                do {
                    let checkpoint = try TrainingRun.loadCheckpoint("\(out)/\(name)")
                    XCTAssertEqual(Checkpoint.folderName(step: checkpoint.state.globalStep), name, "attempt \(attempt): the folder's name is its step")
                } catch { XCTFail("attempt \(attempt): \(name): \(error)") }
            }
        }
        XCTAssertEqual(kills, 8)
        XCTAssertGreaterThan(lastStep, 0)
    }

    /// SIGINT finishes the step, writes a checkpoint and says how to resume.
    func testSIGINTCheckpointsAndExplains() throws {
        let data = try mnist()
        let out = "\(folder)/interrupted"
        let process = try launch(trainArguments(out, data: data).filter { $0 != "--checkpoint-every" && $0 != "1" })
        // Interrupt mid-training: after the first epoch's metrics appear (the handlers are installed by then).
        let deadline = Date().addingTimeInterval(120)
        while access("\(out)/metrics.jsonl", F_OK) != 0 && Date() < deadline && process.isRunning { usleep(50_000) }
        usleep(300_000)
        kill(process.processIdentifier, SIGINT)
        process.waitUntilExit()
        let message = String(decoding: (process.standardError as! Pipe).fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        XCTAssertEqual(process.terminationStatus, 130, message)
        XCTAssert(message.contains("Resume with: shardwise train --resume \(out)"), message)
        // The checkpoint is of the step that finished: after the first epoch (32 steps), named by its step.
        let newest = try Checkpoint.newest(in: out)
        let loaded = try TrainingRun.loadCheckpoint(newest)
        XCTAssertGreaterThanOrEqual(loaded.state.globalStep, 32)
        XCTAssertEqual(loaded.state.globalStep, loaded.state.epoch * 32 + loaded.state.stepInEpoch)
        XCTAssertEqual(newest, "\(out)/\(Checkpoint.folderName(step: loaded.state.globalStep))")
    }

    /// A full disk: one clear line, exit status 1, no partial checkpoint left, the previous one loadable.
    /// Uses a 1.2 MB tmpfs (needs root and mount rights; skips otherwise).
    func testFullDisk() throws {
        let data = try mnist()
        let mountPoint = "\(folder)/small-disk"
        try FileManager.default.createDirectory(atPath: mountPoint, withIntermediateDirectories: true)
        let mount = Process()
        mount.executableURL = URL(fileURLWithPath: "/bin/mount")
        mount.arguments = ["-t", "tmpfs", "-o", "size=1200k", "tmpfs", mountPoint]
        mount.standardError = FileHandle.nullDevice
        try mount.run()
        mount.waitUntilExit()
        guard mount.terminationStatus == 0 else { throw XCTSkip("cannot mount a small tmpfs here (needs root and mount rights)") }
        defer {
            let umount = Process()
            umount.executableURL = URL(fileURLWithPath: "/bin/umount")
            umount.arguments = [mountPoint]
            try? umount.run()
            umount.waitUntilExit()
        }
        let out = "\(mountPoint)/run"
        // About 420 KB per checkpoint: the third or fourth does not fit.
        let process = try launch(["train", "--data", data, "--out", out, "--epochs", "3", "--layers", "64", "--train-samples", "1024",
                                  "--test-samples", "100", "--batch-size", "64", "--shard-size", "32", "--checkpoint-every", "4", "--keep", "9"])
        process.waitUntilExit()
        let message = String(decoding: (process.standardError as! Pipe).fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        XCTAssertEqual(process.terminationStatus, 1, message)
        XCTAssertEqual(message.split(separator: "\n").count, 1, message)
        XCTAssert(message.contains("No space left on device"), message)
        XCTAssert(message.contains("the previous checkpoint") && message.contains("is intact"), message)
        // The previous checkpoint is a scheduled one (every 4 steps), loadable, with its step's weights.
        let previous = try TrainingRun.loadCheckpoint(try Checkpoint.newest(in: out))
        XCTAssertGreaterThan(previous.state.globalStep, 0)
        XCTAssertEqual(previous.state.globalStep % 4, 0)
        XCTAssert(previous.parameters.allSatisfy(\.isFinite))
        let names = try FileManager.default.contentsOfDirectory(atPath: out)
        XCTAssertFalse(names.contains { $0.contains(".tmp") }, "partial files left: \(names)")
    }

    /// The weights load with Python's safetensors package (installed from PyPI if missing),
    /// and a numpy forward pass over them gives the test error `shardwise eval` prints.
    func testPythonSafetensorsAgreesWithEval() async throws {
        let data = try mnist()
        let out = "\(folder)/py"
        let train = try launch(["train", "--data", data, "--out", out, "--epochs", "1", "--layers", "128,64", "--train-samples", "4096", "--batch-size", "64", "--shard-size", "32"])
        train.waitUntilExit()
        XCTAssertEqual(train.terminationStatus, 0)
        let python = runPython
        if try python(["-c", "import safetensors, numpy"]).0 != 0 {
            let (status, text) = try python(["-m", "pip", "install", "--quiet", "safetensors", "numpy"])
            guard status == 0 else { throw XCTSkip("the safetensors package cannot be had here: \(text.suffix(300))") }
        }
        let model = "\(try Checkpoint.newest(in: out))/model.safetensors"
        let (status, text) = try python(["Tests/python/safetensors_forward.py", model, data])
        XCTAssertEqual(status, 0, text)
        let numpyError = Double(text.trimmingCharacters(in: .whitespacesAndNewlines))
        let report = try await Evaluation.run(checkpoint: model, data: DataOptions(path: data))
        XCTAssertNotNil(numpyError, text)
        // numpy's float32 products sum in another order than OpenBLAS's: allow one sample in 10,000 to flip.
        XCTAssertEqual(numpyError ?? -1, try XCTUnwrap(report.errorPercent), accuracy: 0.011, "numpy \(text), shardwise eval \(String(describing: report.errorPercent))")
    }
}
