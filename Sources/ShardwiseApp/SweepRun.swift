import Foundation
import Shardwise

/// One trained combination of a sweep.
public struct SweepTrial: Codable, Sendable {
    public var index: Int
    public var dropoutInput: Double
    public var dropoutHidden: Double
    public var seedIndex: Int
    public var seed: UInt64
    public var bestValidationErrorPercent: Double
    public var testErrorAtBestPercent: Double
    public var bestEpoch: Int
    public var epochsRun: Int
    public var weightsSha256: String

    public init(
        index: Int, dropoutInput: Double, dropoutHidden: Double, seedIndex: Int, seed: UInt64,
        bestValidationErrorPercent: Double, testErrorAtBestPercent: Double, bestEpoch: Int, epochsRun: Int, weightsSha256: String
    ) {
        self.index = index
        self.dropoutInput = dropoutInput
        self.dropoutHidden = dropoutHidden
        self.seedIndex = seedIndex
        self.seed = seed
        self.bestValidationErrorPercent = bestValidationErrorPercent
        self.testErrorAtBestPercent = testErrorAtBestPercent
        self.bestEpoch = bestEpoch
        self.epochsRun = epochsRun
        self.weightsSha256 = weightsSha256
    }
}

/// A sweep's table row: one (input rate, hidden rate) over its seeds.
public struct SweepRow: Codable, Sendable {
    public var dropoutInput: Double
    public var dropoutHidden: Double
    public var seeds: Int
    public var validationErrorMean: Double
    public var validationErrorStd: Double
    public var validationErrorMin: Double
    public var validationErrorMax: Double
    public var testErrorAtBestMean: Double
    public var epochsRunMean: Double
}

public struct SweepReport: Codable, Sendable {
    public var command: String
    public var sweepSeed: UInt64
    public var base: RunConfiguration
    public var trials: [SweepTrial]
    public var rows: [SweepRow]
    /// What the "error" figures are: "error_percent" (classification) or "rmse" (regression).
    public var metric: String?

    /// "validation error %" or "validation RMSE".
    var figure: (validation: String, test: String) {
        metric == "rmse" ? ("validation RMSE", "test RMSE") : ("validation error %", "test error %")
    }
}

/// `shardwise sweep`: every combination of input and hidden dropout rates, over seeds.
///
/// Trials run one after another, each with all workers: the engine's 2-worker speed is
/// 95-103% of the machine's ceiling for two independent jobs (README, "Measured
/// performance"), so concurrent trials could not train faster, and one at a time each
/// trial's result arrives sooner. Each trial trains in `OUT/trial-NNN` with a
/// checkpoint per epoch; a rerun skips finished trials (their summary.json) and
/// resumes an interrupted one bit for bit, so the table is the same.
public enum SweepRun {
    /// Trial `trial`'s seed: Philox of (sweep seed, purpose sweep, trial).
    public static func trialSeed(sweepSeed: UInt64, trial: Int) -> UInt64 {
        let b = RandomAddress(seed: sweepSeed, purpose: .sweep, position: UInt32(trial)).block(0)
        return UInt64(b.x) << 32 | UInt64(b.y)
    }

    public static func run(
        base: RunConfiguration, inputRates: [Double], hiddenRates: [Double], seeds: Int, sweepSeed: UInt64,
        options: RunOptions, command: String, console: Console
    ) async throws -> SweepReport {
        guard let out = options.outDirectory else { throw RunError("sweep: needs --out DIR for its trials and results") }
        // The sweep holds its folder for its whole life; each trial holds its own below it.
        let folder: RunFolder
        do { folder = try RunFolder(out, owner: options.owner) } catch { throw RunError(error.description) }
        folder.recordOwner()
        defer { withExtendedLifetime(folder) {} }
        var trials: [SweepTrial] = []
        var metric = "error_percent"
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        var index = 0
        for input in inputRates {
            for hidden in hiddenRates {
                for s in 0..<seeds {
                    defer { index += 1 }
                    var configuration = base
                    configuration.network.dropoutInput = input
                    configuration.network.dropoutHidden = hidden
                    configuration.network.dropoutHiddenPerLayer = nil
                    configuration.seed = trialSeed(sweepSeed: sweepSeed, trial: index)
                    let folder = "\(out)/trial-\(String(format: "%03d", index))"
                    let summary: RunSummary
                    let earlier = try earlierTrial(in: folder, decoder: decoder)
                    if let trained = earlier.configuration, let difference = configuration.firstDifference(from: trained), !options.overwrite {
                        throw RunError(.configuration(ConfigurationError(
                            difference.field,
                            "\(difference.mine) in this sweep, but \(folder) was trained with \(difference.other); rerun a sweep with its own flags, use another --out, or pass --overwrite to retrain its trials")))
                    }
                    if let done = earlier.summary, done.configuration == configuration {
                        summary = done
                        console.line("trial \(index): input \(input), hidden \(hidden), seed \(s): done earlier")
                    } else {
                        var trialOptions = options
                        trialOptions.outDirectory = folder
                        trialOptions.checkpointEvery = .epochs(1)
                        trialOptions.keep = 1
                        if earlier.checkpoint, earlier.configuration == configuration { trialOptions.resume = folder }
                        console.line("trial \(index): input \(input), hidden \(hidden), seed \(s)\(trialOptions.resume == nil ? "" : " (resuming)")")
                        summary = try await TrainingRun.run(configuration: configuration, options: trialOptions, console: console)
                    }
                    metric = summary.metric ?? "error_percent"
                    guard let bestEpoch = summary.bestEpoch, let best = summary.bestValidationErrorPercent else {
                        throw RunError("sweep: trial \(index) has no validation results; it needs --validation N")
                    }
                    trials.append(SweepTrial(
                        index: index, dropoutInput: input, dropoutHidden: hidden, seedIndex: s, seed: configuration.seed,
                        bestValidationErrorPercent: best, testErrorAtBestPercent: summary.bestTestErrorPercent ?? .nan,
                        bestEpoch: bestEpoch, epochsRun: summary.epochs.count, weightsSha256: summary.weightsSha256))
                }
            }
        }
        return SweepReport(command: command, sweepSeed: sweepSeed, base: base, trials: trials, rows: rows(trials), metric: metric)
    }

    /// What a trial folder holds from an earlier run of the sweep: its summary, whether it has a
    /// checkpoint, and the configuration it was trained with (from either).
    static func earlierTrial(in folder: String, decoder: JSONDecoder) throws -> (summary: RunSummary?, checkpoint: Bool, configuration: RunConfiguration?) {
        let summary: RunSummary?
        do {
            summary = try RegularFile.readIfPresent("\(folder)/summary.json", limit: 64 << 20, what: "a summary").flatMap {
                try? decoder.decode(RunSummary.self, from: Data($0))
            }
        } catch { throw RunError(error.description) }
        guard (try? Checkpoint.newest(in: folder)) != nil else { return (summary, false, summary?.configuration) }
        let state: TrainingState
        do { state = try TrainingRun.loadCheckpoint(try Checkpoint.newest(in: folder)).state } catch { throw RunError(error.description) }
        return (summary, true, state.network.map { RunConfiguration(network: $0, training: state.configuration) })
    }

    /// Groups trials by rates, in sweep order, with the spread over seeds.
    public static func rows(_ trials: [SweepTrial]) -> [SweepRow] {
        var order: [String] = []
        var groups: [String: [SweepTrial]] = [:]
        for t in trials {
            let key = "\(t.dropoutInput)/\(t.dropoutHidden)"
            if groups[key] == nil { order.append(key) }
            groups[key, default: []].append(t)
        }
        return order.map { key in
            let g = groups[key]!
            let v = g.map(\.bestValidationErrorPercent)
            let mean = v.reduce(0, +) / Double(v.count)
            let std = v.count > 1 ? (v.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(v.count - 1)).squareRoot() : 0
            return SweepRow(
                dropoutInput: g[0].dropoutInput, dropoutHidden: g[0].dropoutHidden, seeds: g.count,
                validationErrorMean: mean, validationErrorStd: std, validationErrorMin: v.min()!, validationErrorMax: v.max()!,
                testErrorAtBestMean: g.map(\.testErrorAtBestPercent).reduce(0, +) / Double(g.count),
                epochsRunMean: Double(g.map(\.epochsRun).reduce(0, +)) / Double(g.count))
        }
    }

    public static func table(_ report: SweepReport) -> [String] {
        let name = report.figure
        var lines = ["input  hidden  seeds  \(name.validation) (mean ± std)  \(name.test) at best epoch  epochs run"]
        for r in report.rows {
            lines.append(String(format: "%5.2f  %6.2f  %5d  %17.2f ± %-12.2f  %25.2f  %10.1f", r.dropoutInput, r.dropoutHidden, r.seeds, r.validationErrorMean, r.validationErrorStd, r.testErrorAtBestMean, r.epochsRunMean))
        }
        return lines
    }

    public static func csv(_ report: SweepReport) -> String {
        let prefix = report.metric == "rmse" ? "# metric: rmse\n" : ""
        var text = prefix + "dropout_input,dropout_hidden,seeds,validation_error_mean,validation_error_std,validation_error_min,validation_error_max,test_error_at_best_mean,epochs_run_mean\n"
        for r in report.rows {
            text += "\(r.dropoutInput),\(r.dropoutHidden),\(r.seeds),\(r.validationErrorMean),\(r.validationErrorStd),\(r.validationErrorMin),\(r.validationErrorMax),\(r.testErrorAtBestMean),\(r.epochsRunMean)\n"
        }
        return text
    }

    /// Validation error against the hidden rate, one line per input rate, bars from the best to the worst seed.
    public static func svg(_ report: SweepReport) -> String {
        let inputs = report.rows.map(\.dropoutInput).reduce(into: [Double]()) { if !$0.contains($1) { $0.append($1) } }
        let series = inputs.enumerated().map { i, input in
            let rows = report.rows.filter { $0.dropoutInput == input }
            return SVGChart.Series(
                name: "input dropout \(input)", points: rows.map { ($0.dropoutHidden, $0.validationErrorMean) },
                color: SVGChart.palette[i % SVGChart.palette.count],
                errorBars: rows.map { ($0.dropoutHidden, $0.validationErrorMin, $0.validationErrorMax) })
        }
        let n = report.base.network
        return SVGChart(
            title: "Dropout sweep: \(n.hiddenSizes.map(String.init).joined(separator: "-")) ReLU network",
            subtitle: "best \(report.figure.validation) over \(report.base.validationSamples ?? 0) held-out samples, mean over \(report.rows.first?.seeds ?? 0) seed(s), bars: min to max",
            panels: [.init(title: "Validation error against the hidden dropout rate", xLabel: "hidden dropout rate p", yLabel: report.figure.validation, series: series, yFromZero: false)]
        ).render()
    }
}
