import ArgumentParser
import Foundation
import Shardwise
import ShardwiseApp

struct SweepCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sweep",
        abstract: "Train every combination of dropout rates (over seeds, training-set sizes or cross-validation folds) and compare them.",
        discussion: "Resumable: rerun the same command to finish an interrupted sweep; finished trials are not rerun. Studies: docs/dropout-studies.md.")

    @Option(help: "Hidden dropout rates to try, comma-separated.")
    var dropoutHidden = "0,0.2,0.35,0.5,0.65"

    @Option(help: "Input dropout rates to try, comma-separated (default 0,0.2; with --model, 0).")
    var dropoutInput: String?

    /// The input rates as given, or the default for the network.
    var inputRates: String { dropoutInput ?? (model == nil ? "0,0.2" : "0") }

    @Option(help: "Seeds per combination.")
    var seeds = 1

    @Option(help: "The sweep's seed: each trial's seed derives from it and the trial's number.")
    var sweepSeed: UInt64 = 1

    @Option(help: "Hidden layer sizes, comma-separated.")
    var layers = "1024,1024,1024"

    @Option(help: "A model file (see docs/models.md) instead of --layers: each trial sets the rate of its dropout layers (dropout, dropout2d, gaussian_dropout) to the --dropout-input rate before its first layer with parameters and to the --dropout-hidden rate after it.")
    var model: String?

    @Option(help: "Dropout noise: bernoulli, gaussian or dropconnect.")
    var dropoutKind: DropoutKind = .bernoulli

    @Option(help: "Training samples held out for validation (with --train-samples: held out first, the same for every size; with --folds: not used).")
    var validationSamples = 10_000

    @Option(help: "A data-size axis: training-set sizes, comma-separated (e.g. 100,1000,10000); each a subset chosen by --sweep-seed, the same for every dropout setting and seed, a smaller one inside a larger.")
    var trainSamples: String?

    @Option(help: "Fewer seeds for large training sets: SIZE:N trains N seeds for sizes above SIZE (e.g. 5000:1).")
    var seedsAbove: String?

    @Option(help: "K-fold cross-validation: each combination trains K times, each fold held out once (folds chosen by --sweep-seed), then once more on every fold for the folds' mean best epoch; that refit's test error is reported.")
    var folds: Int?

    @Option(help: "Each trial trains at least this many steps: a small training set runs k times --epochs (evaluated every k epochs, its schedule stretched k times).")
    var minSteps: Int?

    @Option(help: "Report the epochs, steps and seconds each trial took to reach this validation error (percent, or RMSE).")
    var targetError: Double?

    @Option(help: "Trials trained side by side, each on its own cores (whole L3 domains or NUMA nodes first, never split across packages when one holds it): a count, or auto (from the topology and the shards per step).")
    var parallelTrials = "1"

    @Option(help: "Stop each running trial after N steps of this run, as if interrupted (checkpoints written); rerun without it to resume.")
    var stopAfterSteps: Int?

    @OptionGroup var training: TrainingOptions
    @OptionGroup var machine: MachineOptions

    @Option(help: "Folder for the trials, sweep.csv, sweep.json and sweep.svg.")
    var out: String

    @Flag(help: "Retrain trials whose folders hold results of other settings instead of refusing to start.")
    var overwrite = false

    func rates(_ text: String, flag: String) throws -> [Double] {
        let values = text.split(separator: ",").map { Double($0.trimmingCharacters(in: .whitespaces)) }
        guard !values.isEmpty, values.allSatisfy({ $0 != nil && $0! >= 0 && $0! < 1 }) else {
            throw ValidationError("\(flag): '\(text)', expected probabilities in [0, 1) like 0,0.2,0.5")
        }
        return values.map { $0! }
    }

    func validate() throws {
        try requirePaths(["--out": out, "--model": model])
        _ = try rates(dropoutHidden, flag: "--dropout-hidden")
        _ = try rates(inputRates, flag: "--dropout-input")
        guard (1...Self.maximumTrials).contains(seeds) else { throw ValidationError("--seeds: \(seeds), expected 1 to \(Self.maximumTrials)") }
        guard validationSamples > 0 else { throw ValidationError("--validation-samples: \(validationSamples), expected at least 1") }
        _ = try parseLayerSizes(layers)
        if let model, let layers = try ModelFile.load(model).layers {
            // Every combination must have dropout layers to take its rates.
            for input in try rates(inputRates, flag: "--dropout-input") {
                for hidden in try rates(dropoutHidden, flag: "--dropout-hidden") {
                    do { _ = try ModelDescription.withDropoutRates(layers, input: input, hidden: hidden) } catch {
                        throw ValidationError("--model: \(model): \(error) (rates from --dropout-input \(inputRates), --dropout-hidden \(dropoutHidden))")
                    }
                }
            }
        }
        _ = try sizes()
        _ = try fewerSeeds()
        _ = try parallel()
        if try parallel() != 1, let workers = machine.workers {
            throw ValidationError("--workers: \(workers) with --parallel-trials \(parallelTrials): trials side by side get one worker per core of their own core set; leave --workers out")
        }
        if let folds, folds < 2 { throw ValidationError("--folds: \(folds), expected at least 2") }
        if let minSteps, !(1...Int(UInt32.max)).contains(minSteps) { throw ValidationError("--min-steps: \(minSteps), expected 1 to 4294967295 steps (what a run can address)") }
        if let targetError, !(targetError > 0 && targetError.isFinite) { throw ValidationError("--target-error: \(targetError), expected a positive finite error") }
        // The trials of the whole grid, counted before any is planned.
        let grid = [try rates(inputRates, flag: "--dropout-input").count, try rates(dropoutHidden, flag: "--dropout-hidden").count,
                    seeds, try sizes()?.count ?? 1, folds.map { $0 + 1 } ?? 1]
        let trials = CheckedSize.product(grid)
        guard let trials, trials <= Self.maximumTrials else {
            let total = trials.map { "\($0) trials" } ?? "more trials than can be counted"
            throw ValidationError("--seeds \(seeds): \(grid.map(String.init).joined(separator: " x ")) (input rates x hidden rates x seeds x sizes x folds) = \(total), expected at most \(Self.maximumTrials)")
        }
        if let stopAfterSteps, stopAfterSteps <= 0 { throw ValidationError("--stop-after-steps: \(stopAfterSteps), expected a positive number of steps") }
    }

    /// The most trials one sweep plans (each a training run, its folder and a row of sweep.csv).
    static let maximumTrials = 100_000

    func sizes() throws -> [Int]? {
        guard let trainSamples else { return nil }
        let values = trainSamples.split(separator: ",", omittingEmptySubsequences: false).map { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard !values.isEmpty, values.allSatisfy({ ($0 ?? 0) > 0 }), Set(values).count == values.count else {
            throw ValidationError("--train-samples: '\(trainSamples)', expected distinct positive sizes like 100,1000,10000")
        }
        return values.map { $0! }
    }

    func fewerSeeds() throws -> (size: Int, seeds: Int)? {
        guard let seedsAbove else { return nil }
        let parts = seedsAbove.split(separator: ":").map { Int($0) }
        guard parts.count == 2, let size = parts[0], let n = parts[1], size > 0, n > 0 else {
            throw ValidationError("--seeds-above: '\(seedsAbove)', expected SIZE:SEEDS like 5000:1")
        }
        return (size, n)
    }

    /// nil for auto.
    func parallel() throws -> Int? {
        if parallelTrials == "auto" { return nil }
        guard let n = Int(parallelTrials), n > 0 else {
            throw ValidationError("--parallel-trials: '\(parallelTrials)', expected a positive count or auto")
        }
        return n
    }

    func run() async throws {
        var base = try training.configuration(network: try model.map(ModelFile.load) ?? NetworkConfiguration(
            hiddenSizes: try parseLayerSizes(layers), dropoutInput: 0, dropoutHidden: 0, dropoutKind: dropoutKind), modelFile: model)
        base.validationSamples = validationSamples
        let command = "shardwise " + CommandLine.arguments.dropFirst().joined(separator: " ")
        var options = machine.runOptions(outDirectory: out)
        options.overwrite = overwrite
        options.owner = command
        options.stopAfterSteps = stopAfterSteps
        var settings = SweepSettings(
            inputRates: try rates(inputRates, flag: "--dropout-input"), hiddenRates: try rates(dropoutHidden, flag: "--dropout-hidden"),
            seeds: seeds, sweepSeed: sweepSeed)
        settings.trainSamples = try sizes()
        settings.fewerSeedsAbove = try fewerSeeds()
        settings.folds = folds
        settings.minSteps = minSteps
        settings.targetError = targetError
        settings.parallelTrials = try parallel()
        let report = try await SweepRun.run(base: base, settings: settings, options: options, command: command, console: .standard)
        for line in SweepRun.table(report) { print(line) }
        do {
            try AtomicFile.write(SweepRun.csv(report), to: "\(out)/sweep.csv")
            try AtomicFile.write(String(decoding: try JSON.encoder(pretty: true).encode(report), as: UTF8.self) + "\n", to: "\(out)/sweep.json")
            try AtomicFile.write(SweepRun.svg(report), to: "\(out)/sweep.svg")
        } catch let error as FileWriteError { throw RunError(error.description) }
        print("wrote \(out)/sweep.csv, \(out)/sweep.json, \(out)/sweep.svg")
    }
}
