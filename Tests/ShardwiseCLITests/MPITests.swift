import Foundation
import ShardwiseApp
import Shardwise
import XCTest

#if canImport(Glibc)
import Glibc
#endif

/// Training across MPI ranks on this machine (`mpirun --oversubscribe`): the weights are
/// bit-identical to one process for any rank count and worker count per rank, a
/// checkpoint written by 2 ranks resumes on 1, and a rank that stops answering ends the job.
final class MPITests: XCTestCase {
    var folder = ""
    var executable: String { shardwiseExecutable }
    let mpirun = "/usr/bin/mpirun"

    struct Result {
        var status: Int32
        var output: String
        var error: String
    }

    override func setUpWithError() throws {
        guard access(mpirun, X_OK) == 0 else { throw XCTSkip("\(mpirun) is absent (make deps installs openmpi-bin)") }
        _ = try sharedMNIST()
        folder = NSTemporaryDirectory() + "shardwise-mpi-\(getpid())-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        if !folder.isEmpty { try? FileManager.default.removeItem(atPath: folder) }
    }

    /// `ranks` nil: one process, no launcher.
    func launch(ranks: Int?, _ arguments: [String]) throws -> (Process, Pipe, Pipe) {
        let process = Process()
        if let ranks {
            process.executableURL = URL(fileURLWithPath: mpirun)
            process.arguments = (geteuid() == 0 ? ["--allow-run-as-root"] : []) + ["--oversubscribe", "-np", "\(ranks)", executable] + arguments
            // Containers often forbid the cross-process copies Open MPI's shared-memory transport tries first.
            process.environment = ProcessInfo.processInfo.environment.merging(["OMPI_MCA_btl_vader_single_copy_mechanism": "none"]) { $1 }
        } else {
            process.executableURL = URL(fileURLWithPath: executable)
            process.arguments = arguments
        }
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        return (process, out, err)
    }

    func run(ranks: Int?, _ arguments: [String]) throws -> Result {
        let (process, out, err) = try launch(ranks: ranks, arguments)
        let output = out.fileHandleForReading.readDataToEndOfFile()
        let error = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return Result(status: process.terminationStatus, output: String(decoding: output, as: UTF8.self), error: String(decoding: error, as: UTF8.self))
    }

    /// 4 shards of 32 per step, dropout on, 16 steps.
    func training(_ out: String) -> [String] {
        ["train", "--layers", "128,128", "--train-samples", "1024", "--test-samples", "500", "--epochs", "2",
         "--batch-size", "128", "--shard-size", "32", "--seed", "7", "--out", out, "--checkpoint-every", "1e"]
    }

    func summary(_ out: String) throws -> RunSummary {
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        return try decoder.decode(RunSummary.self, from: Data(contentsOf: URL(fileURLWithPath: "\(out)/summary.json")))
    }

    /// A regression from a CSV: 2 ranks (each mapping the parsed copy, made concurrently on the
    /// first run) give the single process's weights and the same test RMSE, summed in fixed chunks.
    func testOwnCSVRegressionAcrossRanks() throws {
        var text = "a,b,c,d,e,target\n"
        var state: UInt64 = 42
        func next() -> Double {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return Double(state >> 11) / Double(1 << 53) * 2 - 1
        }
        for _ in 0..<700 {
            let x = (0..<5).map { _ in next() * 10 }
            let y = 3 * x[0] - 2 * x[1] + x[2] * x[3] / 10 + next()
            text += (x + [y]).map { String(format: "%.6f", $0) }.joined(separator: ",") + "\n"
        }
        try text.write(toFile: "\(folder)/table.csv", atomically: true, encoding: .utf8)
        let flags = ["train", "--data", "\(folder)/table.csv", "--test-fraction", "0.2", "--normalize", "standard", "--layers", "32,32",
                     "--epochs", "3", "--batch-size", "64", "--shard-size", "16", "--lr", "0.01"]
        let two = try run(ranks: 2, flags + ["--out", "\(folder)/two"])
        XCTAssertEqual(two.status, 0, two.error)
        let single = try run(ranks: nil, flags + ["--out", "\(folder)/one", "--workers", "1"])
        XCTAssertEqual(single.status, 0, single.error)
        let (a, b) = (try summary("\(folder)/one"), try summary("\(folder)/two"))
        XCTAssertEqual(a.task, "regression")
        XCTAssertEqual(b.ranks, 2)
        XCTAssertEqual(a.weightsSha256, b.weightsSha256)
        XCTAssertEqual(a.epochs.map(\.testRmse), b.epochs.map(\.testRmse))
        XCTAssertNotNil(a.finalTestRmse)
    }

    /// Two ranks on different instruction sets (scalar on one, the fastest on the other, by
    /// mpirun's MPMD syntax) train the single process's weights with the portable kernels.
    func testRanksOnDifferentInstructionSetsAgreeWithPortableKernels() throws {
        let flags = ["train", "--kernels", "portable", "--layers", "64,32", "--train-samples", "1024", "--test-samples", "200",
                     "--epochs", "1", "--batch-size", "128", "--shard-size", "32", "--seed", "5"]
        let single = try run(ranks: nil, flags + ["--out", "\(folder)/one", "--workers", "2", "--oversubscribe"])
        XCTAssertEqual(single.status, 0, single.error)
        let fastest = MatrixKernels.availableISAs.last!
        let process = Process()
        process.executableURL = URL(fileURLWithPath: mpirun)
        let rankArguments = flags + ["--out", "\(folder)/mixed", "--workers", "1"]
        process.arguments = (geteuid() == 0 ? ["--allow-run-as-root"] : []) + ["--oversubscribe",
            "-np", "1", "-x", "SHARDWISE_KERNEL_ISA=scalar", executable] + rankArguments
            + [":", "-np", "1", "-x", "SHARDWISE_KERNEL_ISA=\(fastest)", executable] + rankArguments
        process.environment = ProcessInfo.processInfo.environment.merging(["OMPI_MCA_btl_vader_single_copy_mechanism": "none"]) { $1 }
        let err = Pipe()
        process.standardError = err
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        let error = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        XCTAssertEqual(process.terminationStatus, 0, error)
        let (a, b) = (try summary("\(folder)/one"), try summary("\(folder)/mixed"))
        XCTAssertEqual(b.ranks, 2)
        XCTAssertEqual(b.kernels, "portable (scalar)")  // rank 0's
        XCTAssertEqual(a.weightsSha256, b.weightsSha256, "scalar and \(fastest) ranks")
    }

    func testWeightsIdenticalForAnyRankCount() throws {
        let single = try run(ranks: nil, training("\(folder)/single") + ["--workers", "2", "--oversubscribe"])
        XCTAssertEqual(single.status, 0, single.error)
        let reference = try summary("\(folder)/single")
        XCTAssertNil(reference.ranks)
        XCTAssertNil(reference.stepSeconds.crossRank)
        // (ranks, workers per rank, flags): even and uneven shard splits, one and two workers a rank,
        // each exchange pattern, overlapped with the backward pass (the default) or not.
        for (ranks, workers, flags) in [
            (2, 1, []), (2, 2, ["--exchange", "scatter"]), (3, 1, ["--exchange", "chain"]), (4, 1, []),
            (3, 2, ["--exchange", "chain", "--no-overlap"]), (2, 1, ["--exchange", "scatter", "--no-overlap"]),
        ] {
            let out = "\(folder)/ranks\(ranks)x\(workers)\(flags.joined())"
            let result = try run(ranks: ranks, training(out) + ["--workers", "\(workers)", "--oversubscribe"] + flags)
            XCTAssertEqual(result.status, 0, "\(ranks) ranks: \(result.error)")
            let multi = try summary(out)
            XCTAssertEqual(multi.ranks, ranks)
            XCTAssertEqual(multi.crossRank, "ordered")
            XCTAssertEqual(multi.workers, workers)
            XCTAssertGreaterThan(try XCTUnwrap(multi.stepSeconds.crossRank), 0)
            XCTAssertEqual(multi.weightsSha256, reference.weightsSha256, "\(ranks) ranks x \(workers) workers \(flags)")
            XCTAssertEqual(multi.overlap, !flags.contains("--no-overlap"))
            // 4 shards, a first layer of 85% of the parameters: auto chooses the scatter (see the next test).
            let pattern = flags.count > 1 ? flags[1] : "scatter"
            XCTAssertEqual(multi.traffic?.pattern, pattern, "\(ranks) ranks \(flags)")
            XCTAssertEqual(multi.epochs.map(\.testErrorPercent), reference.epochs.map(\.testErrorPercent))
            XCTAssertEqual(multi.epochs.map(\.trainLoss), reference.epochs.map(\.trainLoss))
            // Rank 0 alone prints: one line per epoch, not one per rank.
            XCTAssertEqual(result.output.components(separatedBy: "epoch 1/2:").count - 1, 1, result.output)
        }
        // The plain all-reduce trains too, and says it is not the ordered sum.
        let fast = try run(ranks: 2, training("\(folder)/fast") + ["--fast-allreduce"])
        XCTAssertEqual(fast.status, 0, fast.error)
        let fastSummary = try summary("\(folder)/fast")
        XCTAssertEqual(fastSummary.crossRank, "fast")
        XCTAssertLessThan(try XCTUnwrap(fastSummary.finalTestErrorPercent), 60)
    }

    /// 16 shards on 2 ranks: the scatter moves each rank's 8 shard slices and its part of the
    /// parameters (9/2 of the gradient each way, on average), the chain one partial sum (1 gradient,
    /// a ring all-reduce's bytes); the same weights, which auto gets by choosing the chain.
    func testChainSendsOnePartialSumWhateverTheShards() throws {
        let flags = ["train", "--layers", "128,128", "--train-samples", "1024", "--test-samples", "100", "--epochs", "1",
                     "--batch-size", "128", "--shard-size", "8", "--seed", "7", "--workers", "2", "--oversubscribe"]
        var sent: [String: Traffic] = [:], hashes: Set<String> = []
        for pattern in ["scatter", "chain", "auto"] {
            let out = "\(folder)/\(pattern)"
            let result = try run(ranks: 2, flags + ["--out", out, "--exchange", pattern])
            XCTAssertEqual(result.status, 0, result.error)
            let summary = try summary(out)
            sent[pattern] = try XCTUnwrap(summary.traffic)
            hashes.insert(summary.weightsSha256)
        }
        XCTAssertEqual(hashes.count, 1, "every pattern trains the same weights")
        let scatter = try XCTUnwrap(sent["scatter"]), chain = try XCTUnwrap(sent["chain"])
        XCTAssertEqual(scatter.pattern, "scatter")
        XCTAssertEqual(sent["auto"]?.pattern, "chain")
        XCTAssertEqual(chain.sentBytes, chain.ringAllreduceBytes)
        XCTAssertEqual(chain.receivedBytes, chain.ringAllreduceBytes)
        // A rank sends 8 slices of the other's part and its own part, and receives the mirror: 9 gradients in all.
        XCTAssertEqual(Double(scatter.sentBytes + scatter.receivedBytes) / Double(chain.sentBytes + chain.receivedBytes), 4.5, accuracy: 0.01)
    }

    /// A checkpoint written by 2 ranks (after epoch 1) resumes on 1 process to the same weights.
    func testTwoRankCheckpointResumesOnOneProcess() throws {
        let single = try run(ranks: nil, training("\(folder)/single"))
        XCTAssertEqual(single.status, 0, single.error)
        let two = try run(ranks: 2, training("\(folder)/two"))
        XCTAssertEqual(two.status, 0, two.error)
        XCTAssertEqual(try summary("\(folder)/two").weightsSha256, try summary("\(folder)/single").weightsSha256)
        // 1024 samples / 128 = 8 steps an epoch: the checkpoint after epoch 1.
        let resume = "\(folder)/resume"
        try FileManager.default.createDirectory(atPath: resume, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: "\(folder)/two/\(Checkpoint.folderName(step: 8))", toPath: "\(resume)/\(Checkpoint.folderName(step: 8))")
        // The same command (the data subset is a flag, not part of the checkpoint), on one process.
        let resumed = try run(ranks: nil, training(resume) + ["--resume", resume])
        XCTAssertEqual(resumed.status, 0, resumed.error)
        XCTAssert(resumed.output.contains("resuming from"), resumed.output)
        XCTAssertEqual(try summary(resume).weightsSha256, try summary("\(folder)/single").weightsSha256)
    }

    /// A rank that stops answering (SIGSTOP) ends the job with a message naming the
    /// wait, within --mpi-timeout plus start-up.
    func testStoppedRankEndsTheJob() throws {
        let arguments = ["train", "--layers", "128,128", "--train-samples", "4096", "--test-samples", "200", "--epochs", "500",
                         "--batch-size", "128", "--shard-size", "64", "--mpi-timeout", "3", "--out", "\(folder)/stopped"]
        let (process, _, err) = try launch(ranks: 2, arguments)
        let deadline = Date().addingTimeInterval(120)
        while access("\(folder)/stopped/metrics.jsonl", F_OK) != 0 && Date() < deadline && process.isRunning { usleep(50_000) }
        // Rank 1: the child of mpirun whose environment says so.
        let rank1 = try childRanks(of: process.processIdentifier).first { $0.rank == 1 }
        let victim = try XCTUnwrap(rank1?.pid, "no rank 1 found")
        let stopped = Date()
        kill(victim, SIGSTOP)
        let message = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        let seconds = Date().timeIntervalSince(stopped)
        kill(victim, SIGKILL)
        XCTAssertNotEqual(process.terminationStatus, 0)
        XCTAssert(message.contains("rank 0 of 2") && message.contains("no answer from the other ranks within 3 s"), message)
        XCTAssertLessThan(seconds, 30, "the job took \(seconds) s to end")
    }

    /// Ranks started with different flags or data (MPMD: `-np 1 A : -np 1 B`) end within
    /// 10 s, every rank naming the differing flag and each rank's value, instead of training
    /// different weights, hanging until the timeout or aborting with MPI_ERR_TRUNCATE.
    func testRanksThatDisagreeEndTogetherNamingTheSetting() throws {
        let base = ["train", "--layers", "128,128", "--train-samples", "1024", "--test-samples", "200", "--epochs", "2",
                    "--batch-size", "128", "--shard-size", "32"]
        for (flag, first, second, named) in [
            ("--lr", "0.05", "0.1", "--lr"), ("--seed", "1", "2", "--seed"), ("--layers", "128,128", "128", "--layers"),
            ("--epochs", "2", "3", "--epochs"), ("--train-samples", "1024", "512", "--data"),
        ] {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: mpirun)
            process.arguments = (geteuid() == 0 ? ["--allow-run-as-root"] : []) + ["--oversubscribe",
                "-np", "1", executable] + base + [flag, first, "--out", "\(folder)/disagree-\(flag.dropFirst(2))",
                ":", "-np", "1", executable] + base + [flag, second, "--out", "\(folder)/disagree-\(flag.dropFirst(2))"]
            process.environment = ProcessInfo.processInfo.environment.merging(["OMPI_MCA_btl_vader_single_copy_mechanism": "none"]) { $1 }
            let err = Pipe()
            process.standardOutput = FileHandle.nullDevice
            process.standardError = err
            let start = Date()
            try process.run()
            let message = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            process.waitUntilExit()
            let seconds = Date().timeIntervalSince(start)
            XCTAssertNotEqual(process.terminationStatus, 0, "\(flag): \(message)")
            XCTAssertLessThan(seconds, 10, "\(flag): the job took \(seconds) s to end")
            for rank in 0..<2 {
                let line = message.split(separator: "\n").first { $0.hasPrefix("rank \(rank) of 2: error: \(named): the MPI ranks disagree") }
                XCTAssertNotNil(line, "\(flag): rank \(rank) did not name \(named): \(message)")
            }
            if named != "--data" { XCTAssert(message.contains("rank 0: \(first); rank 1: \(second)") || flag == "--layers", "\(flag): \(message)") }
        }
    }

    func childRanks(of parent: Int32) throws -> [(pid: Int32, rank: Int)] {
        var found: [(Int32, Int)] = []
        for name in try FileManager.default.contentsOfDirectory(atPath: "/proc") {
            guard let pid = Int32(name),
                  let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
                  let close = stat.lastIndex(of: ")") else { continue }
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            guard fields.count > 2, Int32(fields[1]) == parent,
                  let environ = FileManager.default.contents(atPath: "/proc/\(pid)/environ") else { continue }
            for entry in environ.split(separator: 0) {
                let text = String(decoding: entry, as: UTF8.self)
                if text.hasPrefix("OMPI_COMM_WORLD_RANK="), let rank = Int(text.dropFirst("OMPI_COMM_WORLD_RANK=".count)) {
                    found.append((pid, rank))
                }
            }
        }
        return found
    }
}
