import ArgumentParser
import ShardwiseLayers
import ShardwiseRuntime
import ShardwiseTopology

struct TrainCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Train a ReLU network with dropout on MNIST.",
        discussion: "Defaults are the reference recipe (README, 'The reference recipe').")

    @OptionGroup var network: NetworkOptions

    @Option(help: "Base learning rate.")
    var lr = 0.05

    @Option(help: "Learning-rate schedule: constant, step, exponential or cosine.")
    var schedule = "cosine"

    @Option(help: "For --schedule step: epochs between decays.")
    var lrStep = 10

    @Option(help: "For --schedule step or exponential: the decay factor.")
    var lrGamma = 0.5

    @Option(help: "For --schedule cosine: the final rate as a fraction of the base rate.")
    var lrFloor = 0.01

    @Option(help: "Momentum coefficient (reached at the end of the ramp, if any).")
    var momentum = 0.9

    @Option(help: "Momentum at the start of the ramp (default: --momentum, no ramp).")
    var momentumStart: Double?

    @Option(help: "Epochs over which momentum ramps linearly from --momentum-start to --momentum (0: no ramp).")
    var momentumRamp = 0.0

    @Flag(help: "Nesterov momentum.")
    var nesterov = false

    @Option(help: "L2 weight decay (added to the gradient, as in PyTorch's SGD).")
    var weightDecay = 0.0

    @Option(help: "Max-norm bound on each hidden unit's incoming weight vector.")
    var maxNorm = 3.5

    @Flag(help: "No max-norm constraint.")
    var noMaxNorm = false

    @Option(help: "Passes over the training set.")
    var epochs = 80

    @Option(help: "Samples per optimisation step (the global batch): a whole number of shards.")
    var batchSize = 128

    @Option(help: "Samples per shard, the unit of work and of determinism.")
    var shardSize = 64

    @Option(help: "Worker threads, one pinned per core (default: one per core of this machine).")
    var workers: Int?

    @Option(help: "Worker placement: compact or spread.")
    var policy: PlacementPolicy = .compact

    @Flag(help: "Place workers on SMT siblings too.")
    var smt = false

    @Flag(help: "Allow more workers than processing units.")
    var oversubscribe = false

    @Option(help: "Random seed: initialisation, shuffling and dropout masks all derive from it.")
    var seed: UInt64 = 1

    @Option(help: "Folder with the four MNIST IDX files (default: data/mnist, then ../shared/datasets/mnist).")
    var data: String?

    @Option(help: "Folder for metrics.jsonl, summary.json and checkpoints.")
    var out: String?

    @Option(help: "Write a checkpoint every N steps, or every N epochs with 'Ne' (e.g. 500 or 2e). One is always written at the end.")
    var checkpointEvery: String?

    @Option(help: "Checkpoints to keep (the newest).")
    var keep = 3

    @Option(help: "Continue from the newest valid checkpoint in this folder (its configuration is used; --workers may change).")
    var resume: String?

    @Option(help: "Hold out N training samples for validation (the same ones for a seed, whatever the worker count).")
    var validation: Int?

    @Option(help: "Stop when the validation error has not improved for this many epochs; the best epoch's checkpoint is kept in OUT/best.")
    var earlyStopping: Int?

    @Flag(help: "Also train the same network and seed without dropout (into OUT/no-dropout) and draw both in OUT/curves.svg.")
    var compareNoDropout = false

    @Option(help: "Use only the first N training samples.")
    var trainSamples: Int?

    @Option(help: "Use only the first N test samples.")
    var testSamples: Int?

    func makeConfiguration() throws -> TrainingConfiguration {
        let schedule: LearningRateSchedule
        switch self.schedule {
        case "constant": schedule = .constant
        case "step": schedule = .step(every: lrStep, gamma: lrGamma)
        case "exponential": schedule = .exponential(gamma: lrGamma)
        case "cosine": schedule = .cosine(epochs: epochs, floor: lrFloor)
        default:
            throw ValidationError("--schedule: unknown schedule '\(self.schedule)', expected constant, step, exponential or cosine")
        }
        return TrainingConfiguration(
            network: try network.configuration(),
            optimizer: OptimizerConfiguration(
                learningRate: lr, schedule: schedule,
                momentum: MomentumRamp(start: momentumStart ?? momentum, end: momentum, epochs: momentumRamp),
                nesterov: nesterov, weightDecay: weightDecay, maxNorm: noMaxNorm ? nil : maxNorm),
            epochs: epochs, batchSize: batchSize, shardSize: shardSize, seed: seed)
            .with { $0.validationSamples = validation; $0.earlyStoppingPatience = earlyStopping }
    }

    func validate() throws {
        do {
            try makeConfiguration().validate()
        } catch let error as TrainingError {
            throw ValidationError(error.description)
        }
        if compareNoDropout && out == nil && resume == nil {
            throw ValidationError("--compare-no-dropout: needs --out DIR for the two runs and their curves")
        }
        if let checkpointEvery, CheckpointInterval(checkpointEvery) == nil {
            throw ValidationError("--checkpoint-every: '\(checkpointEvery)', expected a positive number of steps (500) or epochs (2e)")
        }
        if keep <= 0 {
            throw ValidationError("--keep: \(keep), expected at least 1")
        }
        if let workers, workers <= 0 {
            throw ValidationError("--workers: \(workers), expected at least 1")
        }
        if let trainSamples, trainSamples <= 0 {
            throw ValidationError("--train-samples: \(trainSamples), expected a positive count")
        }
        if let testSamples, testSamples <= 0 {
            throw ValidationError("--test-samples: \(testSamples), expected a positive count")
        }
    }

    func run() async throws {
        var options = RunOptions(dataDirectory: data, outDirectory: out, workers: workers, trainLimit: trainSamples, testLimit: testSamples)
        options.policy = policy
        options.smt = smt
        options.oversubscribe = oversubscribe
        options.checkpointEvery = checkpointEvery.flatMap(CheckpointInterval.init)
        options.keep = keep
        options.resume = resume
        let configuration = try makeConfiguration()
        let summary = try await TrainingRun.run(configuration: configuration, options: options)
        guard compareNoDropout, let out = options.outDirectory ?? resume else { return }
        var plain = summary.configuration
        plain.network.dropoutInput = 0
        plain.network.dropoutHidden = 0
        plain.network.dropoutHiddenPerLayer = nil
        var plainOptions = options
        plainOptions.outDirectory = "\(out)/no-dropout"
        plainOptions.resume = nil
        print("the same network and seed without dropout, into \(out)/no-dropout:")
        let baseline = try await TrainingRun.run(configuration: plain, options: plainOptions)
        let svg = Curves.svg(
            title: "Dropout effect: \(summary.configuration.network.hiddenSizes.map(String.init).joined(separator: "-")) ReLU network",
            runs: [(TrainingRun.label(summary.configuration.network), summary.epochs), ("no dropout", baseline.epochs)])
        do { try AtomicFile.write(svg, to: "\(out)/curves.svg") } catch { throw RunError(error.description) }
        print(String(format: "dropout effect: test error %.2f%% with dropout, %.2f%% without; curves in %@/curves.svg", summary.finalTestErrorPercent, baseline.finalTestErrorPercent, out))
    }
}

/// Parses "1024,1024,1024" into sizes; the error names the flag and the bad part.
func parseLayerSizes(_ text: String) throws -> [Int] {
    let parts = text.split(separator: ",", omittingEmptySubsequences: false)
    guard !text.isEmpty else {
        throw ValidationError("--layers: empty, expected sizes like 1024,1024,1024")
    }
    return try parts.map { part in
        guard let size = Int(part.trimmingCharacters(in: .whitespaces)), size > 0 else {
            throw ValidationError("--layers: '\(part)' in '\(text)' is not a positive integer, expected sizes like 1024,1024,1024")
        }
        return size
    }
}

import Foundation

extension TrainingConfiguration {
    func with(_ change: (inout TrainingConfiguration) -> Void) -> TrainingConfiguration {
        var copy = self
        change(&copy)
        return copy
    }
}
