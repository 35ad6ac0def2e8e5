import ArgumentParser
import Foundation
import Shardwise
import ShardwiseApp

struct SweepCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sweep",
        abstract: "Train every combination of dropout rates (over seeds) and compare them on a validation set.",
        discussion: "Resumable: rerun the same command to finish an interrupted sweep; finished trials are not rerun.")

    @Option(help: "Hidden dropout rates to try, comma-separated.")
    var dropoutHidden = "0,0.2,0.35,0.5,0.65"

    @Option(help: "Input dropout rates to try, comma-separated.")
    var dropoutInput = "0,0.2"

    @Option(help: "Seeds per combination.")
    var seeds = 1

    @Option(help: "The sweep's seed: each trial's seed derives from it and the trial's number.")
    var sweepSeed: UInt64 = 1

    @Option(help: "Hidden layer sizes, comma-separated.")
    var layers = "1024,1024,1024"

    @Option(help: "Dropout noise: bernoulli, gaussian or dropconnect.")
    var dropoutKind: DropoutKind = .bernoulli

    @Option(help: "Training samples held out for validation.")
    var validationSamples = 10_000

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
        _ = try rates(dropoutHidden, flag: "--dropout-hidden")
        _ = try rates(dropoutInput, flag: "--dropout-input")
        guard seeds > 0 else { throw ValidationError("--seeds: \(seeds), expected at least 1") }
        guard validationSamples > 0 else { throw ValidationError("--validation-samples: \(validationSamples), expected at least 1") }
        _ = try parseLayerSizes(layers)
    }

    func run() async throws {
        var base = try training.configuration(network: NetworkConfiguration(
            hiddenSizes: try parseLayerSizes(layers), dropoutInput: 0, dropoutHidden: 0, dropoutKind: dropoutKind))
        base.validationSamples = validationSamples
        let command = "shardwise " + CommandLine.arguments.dropFirst().joined(separator: " ")
        var options = machine.runOptions(outDirectory: out)
        options.overwrite = overwrite
        options.owner = command
        let report = try await SweepRun.run(
            base: base, inputRates: try rates(dropoutInput, flag: "--dropout-input"), hiddenRates: try rates(dropoutHidden, flag: "--dropout-hidden"),
            seeds: seeds, sweepSeed: sweepSeed, options: options, command: command, console: .standard)
        for line in SweepRun.table(report) { print(line) }
        do {
            try AtomicFile.write(SweepRun.csv(report), to: "\(out)/sweep.csv")
            try AtomicFile.write(String(decoding: try JSON.encoder(pretty: true).encode(report), as: UTF8.self) + "\n", to: "\(out)/sweep.json")
            try AtomicFile.write(SweepRun.svg(report), to: "\(out)/sweep.svg")
        } catch let error as FileWriteError { throw RunError(error.description) }
        print("wrote \(out)/sweep.csv, \(out)/sweep.json, \(out)/sweep.svg")
    }
}
