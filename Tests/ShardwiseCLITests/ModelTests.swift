import Foundation
import ShardwiseApp
import Shardwise
import XCTest

#if canImport(Glibc)
import Glibc
#endif

/// Networks from model files (`--model`) with the new layers, losses and optimizers: the
/// determinism contract (one hash for 1-4 workers and 2 MPI ranks, dropout on), bit-exact
/// resumption of Adam and AdamW with another worker count, clear errors for bad model files,
/// and a tabular model with embeddings whose checkpoint PyTorch loads and predicts alike.
final class ModelTests: XCTestCase {
    var folder = ""

    override func setUpWithError() throws {
        folder = NSTemporaryDirectory() + "shardwise-model-\(getpid())-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
    }

    override func tearDown() { try? FileManager.default.removeItem(atPath: folder) }

    func write(_ name: String, _ text: String) throws -> String {
        let path = "\(folder)/\(name)"
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    func summary(_ out: String) throws -> RunSummary {
        try JSON.decoder().decode(RunSummary.self, from: Data(contentsOf: URL(fileURLWithPath: "\(out)/summary.json")))
    }

    /// Every new layer kind in one small CNN, with dropout of three kinds on.
    var cnn: String {
        get throws {
            try write("cnn.yaml", """
                input: [1, 28, 28]
                layers:
                  - conv(6, 5, pad=2) leaky_relu(0.1) maxpool(2) dropout2d(0.2)
                  - "conv(8, 3, stride: 2) gelu avgpool(2, stride: 1)"
                  - flatten dropout(0.3) linear(32) tanh gaussian_dropout(0.2) linear(24) gelu(approximate=tanh) sigmoid linear(10)
                loss: cross_entropy(label_smoothing=0.1)
                """)
        }
    }

    func training(_ out: String, model: String, _ extra: [String]) throws -> [String] {
        ["train", "--data", try sharedMNIST(), "--model", model, "--train-samples", "512", "--test-samples", "200", "--epochs", "2",
         "--batch-size", "128", "--shard-size", "32", "--seed", "3", "--out", out, "--oversubscribe"] + extra
    }

    func testWeightsIdenticalForAnyWorkerAndRankCount() throws {
        let model = try cnn
        for (name, flags, counts) in [
            ("adam, clip-norm", ["--optimizer", "adam", "--lr", "2e-3", "--clip-norm", "0.5"], [1, 2, 3, 4]),
            ("adamw", ["--optimizer", "adamw", "--lr", "2e-3"], [1, 3]),
            ("rmsprop, momentum", ["--optimizer", "rmsprop", "--lr", "1e-3", "--momentum", "0.5"], [2, 4]),
        ] {
            var hashes: [String: [Int]] = [:]
            for workers in counts {
                let out = "\(folder)/\(name)-\(workers)"
                let run = try runShardwise(try training(out, model: model, flags + ["--workers", "\(workers)"]))
                XCTAssertEqual(run.status, 0, "\(name), \(workers) workers: \(run.error)")
                hashes[try summary(out).weightsSha256, default: []].append(workers)
            }
            if let hash = try twoRanksHash("\(folder)/\(name)-ranks", model: model, flags) { hashes[hash, default: []].append(-2) }
            XCTAssertEqual(hashes.count, 1, "\(name): weights by worker count (-2: two MPI ranks): \(hashes)")
        }
    }

    /// The weights hash of `model` trained with `flags` on 2 MPI ranks of 1 worker each into
    /// `out`; nil where Open MPI is not installed.
    func twoRanksHash(_ out: String, model: String, _ flags: [String]) throws -> String? {
        guard access("/usr/bin/mpirun", X_OK) == 0 else { return nil }
        let mpi = Process()
        mpi.executableURL = URL(fileURLWithPath: "/usr/bin/mpirun")
        mpi.arguments = (geteuid() == 0 ? ["--allow-run-as-root"] : []) + ["--oversubscribe", "-np", "2", shardwiseExecutable]
            + (try training(out, model: model, flags + ["--workers", "1"]))
        mpi.environment = ProcessInfo.processInfo.environment.merging(["OMPI_MCA_btl_vader_single_copy_mechanism": "none"]) { $1 }
        mpi.standardOutput = FileHandle.nullDevice
        try mpi.run()
        mpi.waitUntilExit()
        XCTAssertEqual(mpi.terminationStatus, 0, "\(out): 2 ranks")
        return try summary(out).weightsSha256
    }

    /// A model as a tree: residual blocks (one with a strided 1x1 shortcut), branches
    /// concatenated along channels, BatchNorm2d (the global batch's statistics: the shards meet),
    /// GroupNorm, LayerNorm, RMSNorm and dropout inside the blocks.
    var residualModel: String {
        get throws {
            try write("residual.yaml", """
                input: [1, 28, 28]
                layers: >
                  conv(8, 3, stride: 2, pad: 1) batchnorm2d relu
                  residual(conv(8, 3, pad: 1) batchnorm2d relu dropout2d(0.1) conv(8, 3, pad: 1) groupnorm(4)) relu
                  residual(conv(12, 3, stride: 2, pad: 1) layernorm(dims: 2) relu conv(12, 3, pad: 1), shortcut: conv(12, 1, stride: 2)) relu
                  parallel(conv(4, 1) | maxpool(3, stride: 1, pad: 1) conv(4, 1)) maxpool(2)
                  flatten dropout(0.3) linear(32) rmsnorm relu residual(linear(32) tanh dropout(0.2)) linear(10)
                """)
        }
    }

    func testTreeModelIdenticalForWorkersRanksAndResume() throws {
        let model = try residualModel
        let flags = ["--optimizer", "adamw", "--lr", "3e-3", "--checkpoint-every", "1"]
        var hashes: [String: [Int]] = [:]
        for workers in [1, 2, 3] {
            let out = "\(folder)/tree-\(workers)"
            let run = try runShardwise(try training(out, model: model, flags + ["--workers", "\(workers)"]))
            XCTAssertEqual(run.status, 0, "\(workers) workers: \(run.error)")
            hashes[try summary(out).weightsSha256, default: []].append(workers)
        }
        if let hash = try twoRanksHash("\(folder)/tree-ranks", model: model, flags) { hashes[hash, default: []].append(-2) }
        // Stopped after step 3 on 1 worker, resumed on 3: the uninterrupted run's weights.
        let split = "\(folder)/tree-split"
        _ = try runShardwise(try training(split, model: model, flags + ["--workers", "1", "--stop-after-steps", "3"]))
        let names = try String(decoding: Data(contentsOf: URL(fileURLWithPath: "\(Checkpoint.newest(in: split))/model.safetensors")), as: UTF8.self)
        for name in ["layers.1.running_mean", "layers.2.body.1.running_var", "layers.2.body.1.num_batches_tracked", "layers.2.body.1.weight", "layers.3.shortcut.0.weight", "layers.3.body.1.bias", "layers.4.branches.1.1.weight", "layers.5.weight", "layers.6.weight", "layers.7.body.0.weight"] {
            XCTAssertTrue(names.contains("\"\(name)\""), "the checkpoint names \(name) by its place in the tree")
        }
        let resumed = try runShardwise(try training(split, model: model, flags + ["--workers", "3", "--resume", split]))
        XCTAssertEqual(resumed.status, 0, resumed.error)
        hashes[try summary(split).weightsSha256, default: []].append(-3)
        XCTAssertEqual(hashes.count, 1, "weights by worker count (-2: two MPI ranks, -3: resumed on 3 workers): \(hashes)")
        // The trained tree evaluates from its checkpoint to the error training reported.
        let trained = try summary("\(folder)/tree-2")
        let evaluation = try runShardwise(["eval", "--checkpoint", "\(folder)/tree-2", "--data", try sharedMNIST(), "--test-samples", "200"])
        XCTAssertEqual(evaluation.status, 0, evaluation.error)
        XCTAssertTrue(evaluation.output.contains(String(format: "%.2f%%", try XCTUnwrap(trained.finalTestErrorPercent))), "\(evaluation.output) vs \(String(describing: trained.finalTestErrorPercent))")
    }

    /// Adam and AdamW: stopped mid-epoch on 1 worker and resumed on 3, the weights equal the
    /// uninterrupted run's on 2, bit for bit (the moments and the step count travel in the checkpoint).
    func testAdamResumesBitExactWithAnotherWorkerCount() throws {
        let model = try cnn
        for optimizer in ["adam", "adamw"] {
            let flags = ["--optimizer", optimizer, "--lr", "2e-3", "--checkpoint-every", "1"]
            let whole = "\(folder)/\(optimizer)-whole", split = "\(folder)/\(optimizer)-split"
            XCTAssertEqual(try runShardwise(try training(whole, model: model, flags + ["--workers", "2"])).status, 0)
            let first = try runShardwise(try training(split, model: model, flags + ["--workers", "1", "--stop-after-steps", "5"]))
            XCTAssertTrue(first.error.contains("interrupted after step 5") || first.output.contains("interrupted after step 5"), first.error)
            let optimizerFile = try String(decoding: Data(contentsOf: URL(fileURLWithPath: "\(Checkpoint.newest(in: split))/optimizer.safetensors")), as: UTF8.self)
            XCTAssertTrue(optimizerFile.contains("exp_avg_sq.layers.0.weight"), "the checkpoint holds Adam's moments")
            let second = try runShardwise(try training(split, model: model, flags + ["--workers", "3", "--resume", split]))
            XCTAssertEqual(second.status, 0, second.error)
            XCTAssertEqual(try summary(split).weightsSha256, try summary(whole).weightsSha256, optimizer)
        }
    }

    /// A model file's `training:` recipe is in force where no flag overrides it, a model run
    /// without one gets a constant rate and no max-norm (not the perceptron's cosine and
    /// max-norm 3.5), `init: pytorch` starts elsewhere, and the first line states the recipe.
    /// The same recipe from flags gives the same bits as from the file.
    func testModelFileRecipeFlagsAndNeutralDefaults() throws {
        let mnist = try sharedMNIST()
        let layers = "input: [1, 28, 28]\nlayers: flatten linear(32) relu dropout(0.2) linear(10)\n"
        let plain = try write("plain.yaml", layers)
        let recipe = try write("recipe.yaml", layers + "training: {optimizer: adam, lr: 0.002, schedule: cosine, lr_floor: 0.1, max_norm: 2, weight_decay: 0.001, clip_norm: 1, epochs: 2, batch_size: 64}\n")
        let torchInit = try write("torch-init.yaml", layers + "init: pytorch\n")
        func train(_ model: String, _ name: String, _ flags: [String] = []) throws -> (line: Substring, summary: RunSummary) {
            let out = "\(folder)/\(name)"
            let run = try runShardwise(["train", "--data", mnist, "--model", model, "--train-samples", "256", "--test-samples", "100",
                                        "--shard-size", "32", "--seed", "5", "--out", out] + flags)
            XCTAssertEqual(run.status, 0, run.error)
            return (run.output.split(separator: "\n").first ?? "", try summary(out))
        }
        let neutral = try train(plain, "plain", ["--epochs", "1"])
        // A byte-order mark before the YAML (as Windows editors write) changes nothing.
        let marked = try train(try write("bom.yaml", "\u{FEFF}" + layers), "bom", ["--epochs", "1"])
        XCTAssertEqual(marked.summary.weightsSha256, neutral.summary.weightsSha256)
        XCTAssertEqual(neutral.summary.configuration.training.optimizer.schedule, .constant)
        XCTAssertNil(neutral.summary.configuration.training.optimizer.maxNorm)
        XCTAssertEqual(neutral.summary.configuration.training.optimizer.learningRate, 0.05)
        XCTAssertTrue(neutral.line.contains("recipe: sgd momentum 0.9, lr 0.05 constant, no max-norm, batch 128, 1 epochs"), String(neutral.line))

        let fromFile = try train(recipe, "recipe")
        let o = fromFile.summary.configuration.training.optimizer
        XCTAssertEqual(o.algorithm, .adam)
        XCTAssertEqual(o.learningRate, 0.002)
        XCTAssertEqual(o.schedule, .cosine(epochs: 2, floor: 0.1))
        XCTAssertEqual(o.maxNorm, 2)
        XCTAssertEqual(o.weightDecay, 0.001)
        XCTAssertEqual(o.clipNorm, 1)
        XCTAssertEqual(fromFile.summary.configuration.training.epochs, 2)
        XCTAssertEqual(fromFile.summary.configuration.training.batchSize, 64)
        XCTAssertTrue(fromFile.line.contains("recipe: adam, lr 0.002 cosine"), String(fromFile.line))
        let fromFlags = try train(plain, "flags", ["--optimizer", "adam", "--lr", "0.002", "--schedule", "cosine", "--lr-floor", "0.1", "--max-norm", "2",
                                                   "--weight-decay", "0.001", "--clip-norm", "1", "--epochs", "2", "--batch-size", "64"])
        XCTAssertEqual(fromFlags.summary.weightsSha256, fromFile.summary.weightsSha256)

        // Flags win over the file.
        let overridden = try train(recipe, "overridden", ["--lr", "0.001", "--no-max-norm", "--epochs", "1", "--schedule", "constant"])
        XCTAssertEqual(overridden.summary.configuration.training.optimizer.learningRate, 0.001)
        XCTAssertNil(overridden.summary.configuration.training.optimizer.maxNorm)
        XCTAssertEqual(overridden.summary.configuration.training.optimizer.schedule, .constant)
        XCTAssertEqual(overridden.summary.configuration.training.optimizer.algorithm, .adam)
        XCTAssertEqual(overridden.summary.configuration.training.epochs, 1)

        let pytorch = try train(torchInit, "torch-init", ["--epochs", "1"])
        XCTAssertEqual(pytorch.summary.configuration.network.initialization, .pytorch)
        XCTAssertTrue(pytorch.line.contains("PyTorch initialisation"), String(pytorch.line))
        XCTAssertNotEqual(pytorch.summary.weightsSha256, neutral.summary.weightsSha256)
    }

    /// Seven levels of ten aliases each: a few hundred bytes naming 10^7 values.
    var aliasBomb: String {
        var text = "l0: &l0 [x, x, x, x, x, x, x, x, x, x]\n"
        for level in 1...6 { text += "l\(level): &l\(level) [\(Array(repeating: "*l\(level - 1)", count: 10).joined(separator: ", "))]\n" }
        return text + "input: [1, 28, 28]\nlayers: flatten linear(10)\n"
    }

    func testBadModelFilesAreRefusedNamingTheFileAndLayer() throws {
        let mnist = try sharedMNIST()
        // The file alone is wrong: a usage error (2), found before any data is read. The file
        // does not fit the data: found when the data is read (1).
        for (text, expected, status) in [
            ("input: [1, 28, 28]\nlayers: conv(8, 5) relu linear(10)\n", "layer 2: linear(10): takes flat rows, got samples of shape (8, 24, 24); add flatten", 2),
            ("input: [1, 28, 28]\nlayers: flatten linear(10) softmaxx\n", "unknown layer 'softmaxx'", 2),
            ("input: [1, 28, 28]\nlayer: flatten linear(10)\n", "unknown key 'layer'", 2),
            ("input: [1, 28, 28]\nlayers: [flatten, linear(10)\n", "not YAML", 2),
            ("input: [1, 28, 28]\nlayers:\n  - conv(8, 5, pad: 2)\n", "write arguments as pad=2", 2),
            ("input: [0, 28]\nlayers: flatten\n", "expected positive sizes", 2),
            ("input: [1, 28, 28]\nlayers: flatten linear(10)\nloss: hinge\n", "loss 'hinge'", 2),
            ("input: [3, 28, 28]\nlayers: flatten linear(10)\n", "input shape (3, 28, 28) does not hold the 784 values", 1),
            ("input: [1, 28, 28]\nlayers: flatten linear(7)\n", "the last layer gives 7 outputs, the data has 10", 1),
            ("input: [1, 28, 28]\nlayers: flatten linear(10)\ninit: xavier\n", "init 'xavier', expected he (the default) or pytorch", 2),
            ("input: [1, 28, 28]\nlayers: flatten linear(10)\ntraining: adam\n", "'training' must be a mapping", 2),
            ("input: [1, 28, 28]\nlayers: flatten linear(10)\ntraining: {learning_rate: 0.1}\n", "unknown training key 'learning_rate'", 2),
            ("input: [1, 28, 28]\nlayers: flatten linear(10)\ntraining: {optimizer: lamb}\n", "training optimizer 'lamb', expected sgd, adam", 2),
            ("input: [1, 28, 28]\nlayers: flatten linear(10)\ntraining: {lr: -1}\n", "training lr '-1', expected a non-negative number", 2),
            ("input: [1, 28, 28]\nlayers: flatten linear(10)\ntraining: {epochs: 0}\n", "training epochs '0', expected a positive whole number", 2),
            ("input: [1, 28, 28]\nlayers: flatten linear(10)\ntraining: {schedule: linear}\n", "training schedule 'linear'", 2),
            ("- input\n- layers\n", "found a list of 2 values", 2),
            // Nested aliases: nine lines that expand to 10^7 values, refused before any walk.
            (aliasBomb, "expands to more than 100000 YAML values", 2),
        ] {
            let path = try write("bad.yaml", text)
            let run = try runShardwise(["train", "--data", mnist, "--model", path, "--train-samples", "256", "--test-samples", "100", "--epochs", "1"])
            XCTAssertEqual(run.status, Int32(status), text)
            XCTAssertTrue(run.error.contains(expected), "'\(run.error)' lacks '\(expected)'")
            XCTAssertTrue(run.error.contains("--model") || run.error.contains("data"), run.error)
            XCTAssertFalse(run.error.contains("Fatal error"), run.error)
        }
        let missing = try runShardwise(["train", "--data", mnist, "--model", "\(folder)/absent.yaml"])
        XCTAssertEqual(missing.status, 2)
        XCTAssertTrue(missing.error.contains("absent.yaml"), missing.error)
    }

    /// `sweep --model`: each trial's dropout layers take its rates (input rate before the first
    /// layer with parameters, hidden rate after), the trials differ, and a second sweep with 2
    /// workers gives each trial the same weights;
    /// a model without dropout, or an input rate with no input dropout, is refused before any data is read.
    func testSweepVariesTheModelsDropoutRates() throws {
        let mnist = try sharedMNIST()
        let model = try write("sweep.yaml", "input: [1, 28, 28]\nlayers: dropout(0.1) conv(4, 5) relu maxpool(2) dropout2d(0.1) flatten gaussian_dropout(0.3) linear(10)\n")
        func sweep(_ out: String, workers: Int) throws -> SweepReport {
            let run = try runShardwise([
                "sweep", "--data", mnist, "--model", model, "--dropout-input", "0,0.2", "--dropout-hidden", "0,0.5", "--out", "\(folder)/\(out)",
                "--train-samples", "512", "--test-samples", "200", "--epochs", "1", "--batch-size", "64", "--shard-size", "32",
                "--validation-samples", "100", "--workers", "\(workers)"])
            XCTAssertEqual(run.status, 0, run.error)
            return try JSON.decoder().decode(SweepReport.self, from: Data(contentsOf: URL(fileURLWithPath: "\(folder)/\(out)/sweep.json")))
        }
        let one = try sweep("one", workers: 1)
        XCTAssertEqual(one.trials.count, 4)
        XCTAssertEqual(Set(one.trials.map(\.weightsSha256)).count, 4, "every combination of rates trains another network")
        for (k, trial) in one.trials.enumerated() {
            let expected = "dropout(\(trial.dropoutInput)) conv(4, 5) relu maxpool(2) dropout2d(\(trial.dropoutHidden)) flatten gaussian_dropout(\(trial.dropoutHidden)) linear(10)"
            XCTAssertEqual(try summary("\(folder)/one/trial-00\(k)").configuration.network.layers, expected)
        }
        XCTAssertEqual(try sweep("two", workers: 2).trials.map(\.weightsSha256), one.trials.map(\.weightsSha256))
        for (text, flags, expected) in [
            ("layers: conv(4, 5) relu maxpool(2) flatten linear(10)", ["--dropout-hidden", "0,0.5"], "no dropout, dropout2d or gaussian_dropout layer"),
            ("layers: conv(4, 5) relu maxpool(2) flatten dropout(0.5) linear(10)", ["--dropout-input", "0.2"], "no dropout layer before its first layer with parameters"),
        ] {
            let path = try write("bad-sweep.yaml", "input: [1, 28, 28]\n\(text)\n")
            let run = try runShardwise(["sweep", "--data", "\(folder)/absent", "--model", path, "--out", "\(folder)/bad"] + flags)
            XCTAssertEqual(run.status, 2, run.error)
            XCTAssertTrue(run.error.contains("--model") && run.error.contains(expected), run.error)
        }
    }

    /// Two categorical columns (6 and 4 categories), two numeric ones, three classes.
    func tabularRows(_ count: Int, seed: UInt64, labels: Bool) -> String {
        var state = seed
        func next() -> Double {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return Double(state >> 11) / Double(1 << 53)
        }
        let city: [[Double]] = [[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [0, 1, 1], [0.5, 0, 1]]
        let kind: [[Double]] = [[0.8, 0, 0], [0, 0.8, 0], [0, 0, 0.8], [0.3, 0.3, 0]]
        var text = "city,kind,x1,x2" + (labels ? ",label" : "") + "\n"
        for _ in 0..<count {
            let c = Int(next() * 6), k = Int(next() * 4), x1 = next() * 2 - 1, x2 = next() * 2 - 1
            let scores = (0..<3).map { city[c][$0] + kind[k][$0] + [x1, x2, -x1 - x2][$0] * 0.7 }
            let label = scores.indices.max { scores[$0] < scores[$1] }!
            text += "\(c),\(k),\(String(format: "%.4f", x1)),\(String(format: "%.4f", x2))" + (labels ? ",\(label)" : "") + "\n"
        }
        return text
    }

    func testTabularEmbeddingsTrainAndLoadIntoPyTorch() throws {
        let train = try write("tabular.csv", tabularRows(3000, seed: 5, labels: true))
        let new = try write("new.csv", tabularRows(300, seed: 9, labels: false))
        let model = try write("tabular.yaml", "input: [4]\nlayers: embedding(6, 3) embedding(4, 2) linear(16) relu dropout(0.1) linear(3)\n")
        let out = "\(folder)/tabular"
        let run = try runShardwise(["train", "--data", train, "--model", model, "--optimizer", "adamw", "--lr", "0.01", "--epochs", "20",
                                    "--batch-size", "64", "--shard-size", "32", "--test-fraction", "0.2", "--out", out, "--cache-dir", "\(folder)/cache"])
        XCTAssertEqual(run.status, 0, run.error)
        let error = try XCTUnwrap(try summary(out).finalTestErrorPercent)
        XCTAssertLessThan(error, 8, "the embeddings learn the categories' effects")
        let predict = try runShardwise(["predict", "--checkpoint", out, "--data", new, "--out", "\(folder)/p.csv", "--cache-dir", "\(folder)/cache"])
        XCTAssertEqual(predict.status, 0, predict.error)
        // A category outside the table is refused with the file, the sample and the column.
        let bad = try write("bad.csv", "city,kind,x1,x2\n1,2,0.5,0.5\n6,1,0.1,0.2\n")
        let refused = try runShardwise(["predict", "--checkpoint", out, "--data", bad, "--out", "\(folder)/q.csv", "--cache-dir", "\(folder)/cache"])
        XCTAssertEqual(refused.status, 1)
        XCTAssertTrue(refused.error.contains("sample 2, column 1 holds 6.0, expected a category in 0...5"), refused.error)
        // PyTorch's CPU build, where the machine's wheels hold it (PyTorchComparisonTests says more).
        if try runPython(["-c", "import torch"]).status != 0 { _ = try runPython(["-m", "pip", "install", "--quiet", "torch==2.13.0+cpu", "numpy"]) }
        let compare = try runPython(["Tests/python/tabular_torch.py", "\(try Checkpoint.newest(in: out))/model.safetensors", new, "\(folder)/p.csv"])
        if compare.status == 77 { throw XCTSkip("PyTorch is not available: \(compare.output)") }
        XCTAssertEqual(compare.status, 0, compare.output)
    }
}
