@testable import ShardwiseApp
@testable import ShardwiseEngine
import Shardwise
import Foundation
import ShardwiseLayers
import XCTest

final class CheckpointTests: XCTestCase {
    var folder = ""

    override func setUpWithError() throws {
        folder = NSTemporaryDirectory() + "shardwise-ckpt-\(getpid())-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(atPath: folder)
    }

    func smallRun(epochs: Int = 2) -> RunConfiguration {
        var configuration = RunConfiguration.reference(epochs: epochs)
        configuration.network.hiddenSizes = [64, 64]
        configuration.batchSize = 64
        configuration.shardSize = 16
        return configuration
    }

    func options(_ out: String, workers: Int) throws -> RunOptions {
        var options = RunOptions(dataDirectory: try sharedMNISTFolder(), outDirectory: out, workers: workers, trainLimit: 2048, testLimit: 500)
        options.oversubscribe = true
        return options
    }

    /// 2N steps uninterrupted equal N steps, a checkpoint, a resume with another worker count, and N steps: bit for bit.
    func testResumeIsBitIdenticalAcrossWorkerCounts() async throws {
        let quiet = Console { _ in }
        let whole = try await TrainingRun.run(configuration: smallRun(), options: try options("\(folder)/whole", workers: 1), console: quiet)
        for (stopAfter, first, second) in [(40, 2, 1), (32, 1, 3), (7, 3, 2)] {  // mid-epoch, at an epoch boundary, early
            let out = "\(folder)/split-\(stopAfter)"
            var interrupted = try options(out, workers: first)
            interrupted.stopAfterSteps = stopAfter
            do {
                _ = try await TrainingRun.run(configuration: smallRun(), options: interrupted, console: quiet)
                XCTFail("the run should stop after \(stopAfter) steps")
            } catch let error as RunError {
                XCTAssert(error.description.contains("Resume with: shardwise train --resume \(out)"), error.description)
            }
            var resume = try options(out, workers: second)
            resume.resume = out
            // The configuration passed is ignored on resume: the checkpoint's is used.
            var other = smallRun()
            other.seed = 999
            let resumed = try await TrainingRun.run(configuration: other, options: resume, console: quiet)
            XCTAssertEqual(resumed.weightsSha256, whole.weightsSha256, "stopped after \(stopAfter) steps on \(first) workers, resumed on \(second)")
            XCTAssertEqual(resumed.epochs.map(\.testErrorPercent), whole.epochs.map(\.testErrorPercent))
        }
    }

    func writeCheckpoints(_ out: String, epochs: Int = 1, hidden: [Int] = [64, 64]) async throws {
        var configuration = smallRun(epochs: epochs)
        configuration.network.hiddenSizes = hidden
        var run = try options(out, workers: 1)
        run.checkpointEvery = .steps(10)
        run.keep = 2
        _ = try await TrainingRun.run(configuration: configuration, options: run, console: Console { _ in })
    }

    func testCorruptTruncatedAndMismatchedCheckpointsAreRejected() async throws {
        let out = "\(folder)/run"
        try await writeCheckpoints(out)
        let names = try FileManager.default.contentsOfDirectory(atPath: out).filter { $0.hasPrefix("checkpoint-") }.sorted()
        XCTAssertEqual(names, ["checkpoint-000000030", "checkpoint-000000032"], "--keep 2 keeps the newest two")
        let newest = "\(out)/\(names[1])", older = "\(out)/\(names[0])"
        XCTAssertEqual(try Checkpoint.newest(in: out), newest)

        // Flip one byte of the weights: the checksum catches it, and resuming falls back to the older checkpoint.
        var model = try Data(contentsOf: URL(fileURLWithPath: "\(newest)/model.safetensors"))
        model[model.count / 2] ^= 0xFF
        try model.write(to: URL(fileURLWithPath: "\(newest)/model.safetensors"))
        XCTAssertThrowsError(try TrainingRun.loadCheckpoint(newest)) { XCTAssert("\($0)".contains("model.safetensors: checksum mismatch"), "\($0)") }
        XCTAssertEqual(try Checkpoint.newest(in: older.components(separatedBy: "/checkpoint-")[0]), older)

        // Truncate the optimizer state.
        let optimizer = try Data(contentsOf: URL(fileURLWithPath: "\(older)/optimizer.safetensors"))
        try optimizer.prefix(optimizer.count - 100).write(to: URL(fileURLWithPath: "\(older)/optimizer.safetensors"))
        XCTAssertThrowsError(try TrainingRun.loadCheckpoint(older)) { XCTAssert("\($0)".contains("optimizer.safetensors: checksum mismatch (corrupted or truncated"), "\($0)") }
        XCTAssertThrowsError(try Checkpoint.newest(in: out)) { XCTAssert("\($0)".contains("no valid checkpoint"), "\($0)") }

        // A truncated safetensors file whose checksum was made to match is still caught by the format checks.
        XCTAssertThrowsError(try SafeTensors.decode(Array(optimizer.prefix(optimizer.count - 100)), path: "x")) {
            XCTAssert("\($0)".contains("truncated"), "\($0)")
        }

        // Another architecture's weights under this checkpoint's configuration.
        let otherRun = "\(folder)/other"
        try await writeCheckpoints(otherRun, hidden: [32, 64])
        let foreign = try Checkpoint.newest(in: otherRun)
        let target = "\(folder)/mismatch"
        try FileManager.default.copyItem(atPath: older, toPath: target)
        try FileManager.default.removeItem(atPath: "\(target)/model.safetensors")
        try FileManager.default.copyItem(atPath: "\(foreign)/model.safetensors", toPath: "\(target)/model.safetensors")
        try FileManager.default.removeItem(atPath: "\(target)/optimizer.safetensors")
        try FileManager.default.copyItem(atPath: "\(foreign)/optimizer.safetensors", toPath: "\(target)/optimizer.safetensors")
        let sums = ["model.safetensors", "optimizer.safetensors", "state.json"].map { name in
            "\(SHA256.hexDigest([UInt8](FileManager.default.contents(atPath: "\(target)/\(name)")!)))  \(name)"
        }.joined(separator: "\n") + "\n"
        try sums.write(toFile: "\(target)/SHA256SUMS", atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try TrainingRun.loadCheckpoint(target)) { XCTAssert("\($0)".contains("another architecture"), "\($0)") }

        // A folder with no checkpoint.
        XCTAssertThrowsError(try Checkpoint.newest(in: folder)) { XCTAssert("\($0)".contains("no checkpoint found"), "\($0)") }
    }

    /// `every: .steps(N)` writes at every N-th step, the last step of an epoch included (it used
    /// to wait for the end of training there), and each checkpoint written is announced by a
    /// `.checkpoint` event naming its folder, step and kind, in step order, before the epoch record
    /// it follows; the folders on disk are those announced.
    func testCheckpointEveryNStepsIncludesEpochEndsAndIsAnnounced() async throws {
        let pool = try WorkerPool.onThisMachine(workers: 2)
        defer { pool.shutdown() }
        var configuration = smallRun(epochs: 3).training
        configuration.epochs = 3
        for (every, expected) in [(CheckpointPolicy.Interval.steps(4), [4, 8, 12]), (.steps(3), [3, 6, 9, 12]), (.epochs(2), [8, 12])] {
            let trainer = try Trainer(network: smallRun().network, data: MachineLimits.randomData(count: 256, features: 784, classes: 10), configuration: configuration, workers: pool)
            XCTAssertEqual(trainer.stepsPerEpoch, 4)
            let out = "\(folder)/every-\(expected.count)"
            var announced: [(step: Int, kind: CheckpointKind, path: String)] = []
            var order: [String] = []
            for try await event in trainer.fit(checkpoints: CheckpointPolicy(directory: out, every: every, keep: 10)) {
                switch event {
                case .checkpoint(let path, let step, let kind):
                    announced.append((step, kind, path))
                    order.append("checkpoint \(step)")
                case .epoch(let record): order.append("epoch \(record.epoch)")
                default: break
                }
            }
            XCTAssertEqual(announced.map(\.step), expected, "\(every)")
            XCTAssert(announced.allSatisfy { $0.kind == .scheduled }, "\(every)")
            XCTAssertEqual(announced.map(\.path), expected.map { "\(out)/\(Checkpoint.folderName(step: $0))" })
            let onDisk = try FileManager.default.contentsOfDirectory(atPath: out).filter { $0.hasPrefix("checkpoint-") }.sorted()
            XCTAssertEqual(onDisk, expected.map { Checkpoint.folderName(step: $0) })
            // A checkpoint at an epoch's end comes after that epoch's record (it holds the record).
            if case .steps(4) = every { XCTAssertEqual(order, ["epoch 1", "checkpoint 4", "epoch 2", "checkpoint 8", "epoch 3", "checkpoint 12"]) }
            let loaded = try TrainingRun.loadCheckpoint(announced[0].path)
            XCTAssertEqual(loaded.state.globalStep, expected[0])
        }
    }

    /// A NaN in one shard's gradient is caught in the reduction and named by tensor: a sample
    /// of NaNs, placed where step 2's fourth shard reads it, makes every gradient of that step
    /// NaN (the one named is the first in the layout), and none before.
    func testNaNGradientIsCaught() async throws {
        let pool = try WorkerPool.onThisMachine(workers: 2)
        defer { pool.shutdown() }
        let clean = MachineLimits.randomData(count: 256, features: 784, classes: 10)
        let configuration = smallRun().training
        let probe = try Trainer(network: smallRun().network, data: clean, configuration: configuration, workers: pool)
        probe.shuffle(epoch: 0)
        let poisoned = Int(probe.order[2 * configuration.batchSize + 3 * configuration.shardSize])
        var images = (0..<clean.count).flatMap { clean.inputs(of: $0) }
        for j in 0..<784 { images[poisoned * 784 + j] = .nan }
        let data = Dataset(features: 784, classes: 10, images: images, labels: (0..<clean.count).map { clean.label($0) })
        let trainer = try Trainer(network: smallRun().network, data: data, configuration: configuration, workers: pool)
        trainer.shuffle(epoch: 0)
        for s in 0..<2 {
            _ = try await trainer.step(epoch: 0, stepInEpoch: s)
            XCTAssertNil(trainer.nonFiniteGradientTensor)
        }
        _ = try await trainer.step(epoch: 0, stepInEpoch: 2)
        let first = trainer.network.layout.tensors.min { $0.offset < $1.offset }!
        XCTAssertEqual(trainer.nonFiniteGradientTensor, first.name)
        XCTAssertEqual(first.name, "layers.0.weight")
        let error = TrainingRun.divergence("the gradient of layers.1.weight is NaN or infinite", step: 2, lastCheckpoint: "/x/checkpoint-000000001", configuration: trainer.configuration)
        XCTAssertEqual(error.description, "training diverged at step 2: the gradient of layers.1.weight is NaN or infinite; lower --lr (now 0.05); the last good checkpoint /x/checkpoint-000000001 is untouched")
    }

    func testSafeTensorsRoundTrip() throws {
        let tensors = [
            SafeTensors.Tensor(name: "layers.0.weight", shape: [2, 3], values: [1, 2, 3, 4, 5, -6.5]),
            SafeTensors.Tensor(name: "layers.0.bias", shape: [2], values: [0.25, .greatestFiniteMagnitude]),
        ]
        let bytes = SafeTensors.encode(tensors, metadata: ["format": "pt", "note": "quote \" and \\ slash"])
        let headerLength = Int(bytes[0]) | Int(bytes[1]) << 8
        XCTAssertEqual((8 + headerLength) % 8, 0, "data starts 8-byte aligned")
        let decoded = try SafeTensors.decode(bytes, path: "x")
        XCTAssertEqual(decoded.tensors.map(\.name), ["layers.0.weight", "layers.0.bias"])
        XCTAssertEqual(decoded.tensors[0].values, tensors[0].values)
        XCTAssertEqual(decoded.tensors[1].shape, [2])
        XCTAssertEqual(decoded.metadata["note"], "quote \" and \\ slash")
    }
}

final class ValidationTests: XCTestCase {
    func testSplitIsDeterministicAndDisjoint() {
        let data = syntheticDataset(count: 300, seed: 2)
        let (train, validation) = data.splitValidation(count: 50, seed: 9)
        let again = data.splitValidation(count: 50, seed: 9)
        XCTAssertEqual(train.count, 250)
        XCTAssertEqual(validation.count, 50)
        let rowsOf = { (set: Dataset) in (0..<set.count).map { set.inputs(of: $0) } }
        XCTAssertEqual(rowsOf(again.validation), rowsOf(validation))
        XCTAssertEqual((0..<train.count).map { again.train.label($0) }, (0..<train.count).map { train.label($0) })
        XCTAssertNotEqual(rowsOf(data.splitValidation(count: 50, seed: 10).validation), rowsOf(validation))
        // Disjoint and complete: every sample's row lands in exactly one part.
        var rows = Set<[Float]>()
        for set in [train, validation] {
            for i in 0..<set.count { rows.insert(set.inputs(of: i)) }
        }
        XCTAssertEqual(rows.count, 300)
    }

    /// The held-out samples, and so every validation figure and the weights, are the same for any worker count.
    func testValidationAcrossWorkerCountsAndEarlyStopping() async throws {
        let folder = NSTemporaryDirectory() + "shardwise-val-\(getpid())"
        defer { try? FileManager.default.removeItem(atPath: folder) }
        var configuration = RunConfiguration.reference(epochs: 3)
        configuration.network.hiddenSizes = [64]
        configuration.batchSize = 64
        configuration.shardSize = 16
        configuration.validationSamples = 512
        var summaries: [RunSummary] = []
        for workers in [1, 3] {
            var options = RunOptions(dataDirectory: try sharedMNISTFolder(), outDirectory: "\(folder)/w\(workers)", workers: workers, trainLimit: 2560, testLimit: 300)
            options.oversubscribe = true
            summaries.append(try await TrainingRun.run(configuration: configuration, options: options, console: Console { _ in }))
        }
        XCTAssertEqual(summaries[0].weightsSha256, summaries[1].weightsSha256)
        XCTAssertEqual(summaries[0].epochs.map(\.validationErrorPercent), summaries[1].epochs.map(\.validationErrorPercent))
        XCTAssertEqual(summaries[0].trainSamples, 2048)
        XCTAssertEqual(summaries[0].validationSamples, 512)

        // A learning rate too small to change anything: no improvement after epoch 1, so patience 2 stops after epoch 3 of 10.
        var stuck = configuration
        stuck.epochs = 10
        stuck.optimizer.learningRate = 1e-12
        stuck.earlyStoppingPatience = 2
        let lines = Lines()
        let out = "\(folder)/stuck"
        let summary = try await TrainingRun.run(
            configuration: stuck, options: RunOptions(dataDirectory: try sharedMNISTFolder(), outDirectory: out, workers: 2, trainLimit: 2560, testLimit: 300),
            console: lines.console)
        XCTAssertEqual(summary.epochs.count, 3)
        XCTAssertEqual(summary.stoppedEarly, true)
        XCTAssertEqual(summary.bestEpoch, 1)
        XCTAssert(lines.all.contains { $0.hasPrefix("early stopping after epoch 3") }, lines.all.joined(separator: "\n"))
        let best = try TrainingRun.loadCheckpoint(try Checkpoint.newest(in: "\(out)/best"))
        XCTAssertEqual(best.state.epoch, 1, "the best checkpoint is the one after epoch 1")
    }

    /// Pruning keeps the newest checkpoints up to the one just written: a later checkpoint in
    /// the folder (another run's) is never counted nor deleted, and the new one always stays.
    func testPruningNeverDeletesALaterCheckpoint() throws {
        let folder = NSTemporaryDirectory() + "shardwise-prune-\(getpid())-\(UUID().uuidString.prefix(8))"
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let network = try Network(NetworkConfiguration(inputSize: 4, hiddenSizes: [3], outputSize: 2, dropoutInput: 0, dropoutHidden: 0))
        let values = [Float](repeating: 0.5, count: network.layout.count)
        func write(_ step: Int) throws -> String {
            try values.withUnsafeBufferPointer { p in
                try Checkpoint.write(
                    parameters: p.baseAddress!, optimizerState: p.baseAddress!, layout: network.layout, state: ["step": step],
                    step: step, directory: folder, keep: 2)
            }
        }
        _ = try write(900)  // a later run's
        for step in [10, 20, 30] { _ = try write(step) }
        let names = try FileManager.default.contentsOfDirectory(atPath: folder).sorted()
        XCTAssertEqual(names, [Checkpoint.folderName(step: 20), Checkpoint.folderName(step: 30), Checkpoint.folderName(step: 900)])
        // Rewriting an existing step swaps the folders in one rename: the step's checkpoint is never missing.
        _ = try write(30)
        let rewritten = try Checkpoint.load("\(folder)/\(Checkpoint.folderName(step: 30))", as: [String: Int].self) { _ in network.layout }
        XCTAssertEqual(rewritten.state, ["step": 30])
        for tensor in network.layout.tensors {
            XCTAssertEqual(Array(rewritten.parameters[tensor.offset..<tensor.offset + tensor.count]), Array(values[tensor.offset..<tensor.offset + tensor.count]), tensor.name)
        }
    }
}
