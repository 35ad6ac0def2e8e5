import Foundation
import ShardwiseApp
import Shardwise
import XCTest

#if canImport(Glibc)
import Glibc
#endif

/// Output folders under the real executable: a second writer is refused while the first
/// trains, a reused folder is refused unless resumed or overwritten, a finished run is left
/// as it is, and nothing of a previous run is lost along the way.
final class OutputFolderTests: XCTestCase {
    var folder = ""

    override func setUpWithError() throws {
        folder = NSTemporaryDirectory() + "shardwise-folders-\(getpid())-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(atPath: folder)
    }

    func launch(_ arguments: [String]) throws -> (Process, Pipe) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: shardwiseExecutable)
        process.arguments = arguments
        let err = Pipe()
        process.standardOutput = FileHandle.nullDevice
        process.standardError = err
        try process.run()
        return (process, err)
    }

    func run(_ arguments: [String]) throws -> (status: Int32, error: String) {
        let (process, err) = try launch(arguments)
        let text = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        return (process.terminationStatus, text)
    }

    /// Files of a run folder with their contents' digests (the lock file excepted: it names its holder).
    func contents(_ out: String) throws -> [String: String] {
        var result: [String: String] = [:]
        let walker = FileManager.default.enumerator(atPath: out)
        while let name = walker?.nextObject() as? String {
            guard !name.hasSuffix(RunFolder.lockName), let data = FileManager.default.contents(atPath: "\(out)/\(name)") else { continue }
            result[name] = SHA256.hexDigest(Array(data))
        }
        return result
    }

    func training(_ data: String, out: String, epochs: Int, seed: Int = 1) -> [String] {
        ["train", "--data", data, "--out", out, "--epochs", "\(epochs)", "--layers", "256,256", "--train-samples", "2048",
         "--test-samples", "200", "--batch-size", "64", "--shard-size", "32", "--checkpoint-every", "8", "--seed", "\(seed)"]
    }

    func testSecondWriterReusedFolderAndOverwrite() throws {
        let data = try sharedMNIST()
        let out = "\(folder)/run"
        // The first writer trains (long enough to be interrupted) ...
        let (first, firstError) = try launch(training(data, out: out, epochs: 200))
        let deadline = Date().addingTimeInterval(120)
        while (try? Checkpoint.newest(in: out)) == nil && Date() < deadline && first.isRunning { usleep(50_000) }
        // ... a second one into the same folder is refused, naming the holder.
        let second = try run(training(data, out: out, epochs: 1))
        XCTAssertEqual(second.status, 1, second.error)
        XCTAssert(second.error.hasPrefix("error: \(out): in use by another run (pid \(first.processIdentifier)"), second.error)
        XCTAssertEqual(second.error.split(separator: "\n").count, 1, second.error)
        kill(first.processIdentifier, SIGINT)
        first.waitUntilExit()
        _ = firstError.fileHandleForReading.readDataToEndOfFile()
        let interrupted = try TrainingRun.loadCheckpoint(try Checkpoint.newest(in: out))
        let before = try contents(out)

        // A new run into the finished folder is refused and changes nothing.
        let reused = try run(training(data, out: out, epochs: 1, seed: 2))
        XCTAssertEqual(reused.status, 1, reused.error)
        XCTAssert(reused.error.contains("--resume \(out)") && reused.error.contains("--overwrite"), reused.error)
        XCTAssertEqual(try contents(out), before, "a refused run changed the folder")

        // --resume continues the interrupted run from its checkpoint (interrupted again once it has gone further).
        let (resumed, resumedError) = try launch(training(data, out: out, epochs: 200) + ["--resume", out])
        let later = Date().addingTimeInterval(120)
        while ((try? TrainingRun.loadCheckpoint(try Checkpoint.newest(in: out)))?.state.globalStep ?? 0) <= interrupted.state.globalStep,
              Date() < later, resumed.isRunning { usleep(50_000) }
        kill(resumed.processIdentifier, SIGINT)
        resumed.waitUntilExit()
        let resumedText = String(decoding: resumedError.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        XCTAssertEqual(resumed.terminationStatus, 130, resumedText)
        XCTAssertGreaterThan(try TrainingRun.loadCheckpoint(try Checkpoint.newest(in: out)).state.globalStep, interrupted.state.globalStep)

        // --overwrite replaces the run: no checkpoint of the old one is left for eval or --resume to pick.
        let replaced = try run(training(data, out: out, epochs: 1, seed: 2) + ["--overwrite"])
        XCTAssertEqual(replaced.status, 0, replaced.error)
        let names = try FileManager.default.contentsOfDirectory(atPath: out).filter { $0.hasPrefix(Checkpoint.prefix) }
        for name in names {
            XCTAssertEqual(try TrainingRun.loadCheckpoint("\(out)/\(name)").state.configuration.seed, 2, "\(name) survived the overwrite")
        }
    }

    /// Resuming a finished run trains nothing and rewrites nothing: checkpoints and summary stay as they were.
    func testFinishedRunStaysFinished() throws {
        let data = try sharedMNIST()
        let out = "\(folder)/done"
        let trained = try run(training(data, out: out, epochs: 1))
        XCTAssertEqual(trained.status, 0, trained.error)
        let before = try contents(out)
        let again = try run(["train", "--resume", out, "--data", data, "--train-samples", "2048", "--test-samples", "200"])
        XCTAssertEqual(again.status, 0, again.error)
        XCTAssertEqual(try contents(out), before, "resuming a finished run changed its files")
    }

    /// The validation split is checked against the samples before it is held out: 700 of 1280 leaves 580 to train on.
    func testValidationCountedBeforeTheSplit() throws {
        let data = try sharedMNIST()
        let result = try run(["train", "--data", data, "--train-samples", "1280", "--validation", "700", "--test-samples", "100",
                              "--epochs", "1", "--layers", "32", "--batch-size", "128"])
        XCTAssertEqual(result.status, 0, result.error)
    }

    /// A path flag given as '' (an unset shell variable) is a usage error (exit 2) naming the
    /// flag: not a run that saves nothing, not "error: : cannot open".
    func testEmptyPathFlagsAreRefused() throws {
        for (arguments, flag) in [
            (["train", "--out", ""], "--out"), (["train", "--data", ""], "--data"), (["train", "--model", " "], "--model"),
            (["train", "--resume", ""], "--resume"), (["train", "--test-data", ""], "--test-data"),
            (["sweep", "--dropout-hidden", "0,0.5", "--out", ""], "--out"), (["scale", "--out", ""], "--out"),
            (["predict", "--checkpoint", "", "--out", "p.csv"], "--checkpoint"), (["eval", "--checkpoint", "c", "--data", ""], "--data"),
        ] {
            let result = try run(arguments)
            XCTAssertEqual(result.status, 2, "\(arguments): \(result.error)")
            XCTAssertTrue(result.error.contains("\(flag): '"), "\(arguments): \(result.error)")
            XCTAssertTrue(result.error.contains("is empty, expected a path"), "\(arguments): \(result.error)")
        }
    }
}
