import ArgumentParser
import Shardwise
import ShardwiseApp

struct TrainCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Train a ReLU network with dropout on MNIST or on your own data (CSV, NPY, NPZ, safetensors).",
        discussion: "Defaults are the reference recipe (README, 'The reference recipe').")

    @OptionGroup var network: NetworkOptions

    @OptionGroup var training: TrainingOptions

    @OptionGroup var machine: MachineOptions

    @Option(help: "Use only the first N training samples.")
    var trainSamples: Int?

    @Option(help: "Folder for metrics.jsonl, summary.json and checkpoints.")
    var out: String?

    @Option(help: "Write a checkpoint every N steps, or every N epochs with 'Ne' (e.g. 500 or 2e). One is always written at the end.")
    var checkpointEvery: String?

    @Option(help: "Checkpoints to keep (the newest).")
    var keep = 3

    @Option(help: "Continue from the newest valid checkpoint in this folder (its configuration is kept: a flag that contradicts it is refused; --workers may change).")
    var resume: String?

    @Flag(help: "Replace a previous run's results in --out (its checkpoints, metrics and summary) instead of refusing to start.")
    var overwrite = false

    @Option(help: "Stop after N steps of this run, as if interrupted: the checkpoint is written (with --out) and --resume continues it.")
    var stopAfterSteps: Int?

    @Flag(help: "Also train the same network and seed without dropout (into OUT/no-dropout) and draw both in OUT/curves.svg.")
    var compareNoDropout = false

    func makeConfiguration() throws -> RunConfiguration {
        try training.configuration(network: network.configuration(), modelFile: network.model)
    }

    func validate() throws {
        try requirePaths(["--out": out, "--resume": resume])
        do {
            try makeConfiguration().validate(validationGiven: machine.dataFlags.validationData != nil)
        } catch let error as ConfigurationError {
            throw ValidationError("\(flag(error.field)): \(error.problem(naming: flag))")
        }
        if compareNoDropout, let layers = try makeConfiguration().network.layers, ModelDescription.withoutDropout(layers) == nil {
            throw ValidationError("--compare-no-dropout: the model (\(network.model ?? "--layers")) has no dropout rate above 0 to compare against")
        }
        if compareNoDropout && out == nil && resume == nil {
            throw ValidationError("--compare-no-dropout: needs --out DIR for the two runs and their curves")
        }
        if let checkpointEvery, checkpointInterval(checkpointEvery) == nil {
            throw ValidationError("--checkpoint-every: '\(checkpointEvery)', expected a positive number of steps (500) or epochs (2e)")
        }
        if let stopAfterSteps, stopAfterSteps <= 0 {
            throw ValidationError("--stop-after-steps: \(stopAfterSteps), expected a positive number of steps")
        }
        if let trainSamples, trainSamples <= 0 {
            throw ValidationError("--train-samples: \(trainSamples), expected a positive count")
        }
        if keep <= 0 {
            throw ValidationError("--keep: \(keep), expected at least 1")
        }
    }

    func run() async throws {
        var options = machine.runOptions(outDirectory: out)
        options.trainLimit = trainSamples
        options.checkpointEvery = checkpointEvery.flatMap(checkpointInterval)
        options.keep = keep
        options.stopAfterSteps = stopAfterSteps
        options.resume = resume
        options.overwrite = overwrite
        options.owner = "shardwise " + CommandLine.arguments.dropFirst().joined(separator: " ")
        options.typedFields = typedFields()
        let configuration = try makeConfiguration()
        let summary = try await TrainingRun.run(configuration: configuration, options: options, console: .standard)
        guard compareNoDropout, let out = options.outDirectory ?? resume else { return }
        var plain = summary.configuration
        plain.network.dropoutInput = 0
        plain.network.dropoutHidden = 0
        plain.network.dropoutHiddenPerLayer = nil
        // A described model: the same layers, every rate 0 (validated above).
        if let layers = plain.network.layers { plain.network.layers = ModelDescription.withoutDropout(layers) }
        var plainOptions = options
        plainOptions.outDirectory = "\(out)/no-dropout"
        plainOptions.resume = (try? Checkpoint.newest(in: "\(out)/no-dropout")) != nil ? "\(out)/no-dropout" : nil
        let writes = (Cluster.current?.rank ?? 0) == 0  // under MPI, rank 0 alone prints and writes
        if writes { Console.standard.line("the same network and seed without dropout, into \(out)/no-dropout:") }
        let baseline = try await TrainingRun.run(configuration: plain, options: plainOptions, console: .standard)
        let svg = Curves.svg(
            title: "Dropout effect: \(TrainingRun.name(summary.configuration.network, languageModel: summary.vocabulary != nil))",
            runs: [(TrainingRun.label(summary.configuration.network), summary.epochs), ("no dropout", baseline.epochs)],
            languageModel: summary.vocabulary != nil)
        guard writes else { return }
        do { try AtomicFile.write(svg, to: "\(out)/curves.svg") } catch { throw RunError(error.description) }
        Console.standard.line("dropout effect: \(summary.resultLine) with dropout, \(baseline.resultLine) without; curves in \(out)/curves.svg")
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

/// "500" (steps) or "2e" (epochs).
func checkpointInterval(_ text: String) -> CheckpointPolicy.Interval? {
    if text.hasSuffix("e"), let n = Int(text.dropLast()), n > 0 { return .epochs(n) }
    if let n = Int(text), n > 0 { return .steps(n) }
    return nil
}
