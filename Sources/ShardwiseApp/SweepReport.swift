import Foundation
import Shardwise

/// One trained trial of a sweep.
public struct SweepTrial: Codable, Sendable {
    public var index: Int
    public var dropoutInput: Double
    public var dropoutHidden: Double
    public var seedIndex: Int
    public var seed: UInt64
    /// The data-size axis: the seeded subset's size (nil: every training sample).
    public var trainSamples: Int?
    /// Cross-validation: the fold held out (0-based); nil for the combination's refit on all folds.
    public var fold: Int?
    /// Cross-validation: this trial retrained the combination on every fold, for its folds' mean best epoch.
    public var refit: Bool?
    /// The best validation figure (error % or RMSE) and the test figure at that epoch; nil without validation.
    public var bestValidationErrorPercent: Double?
    public var testErrorAtBestPercent: Double?
    /// The last epoch's test figure.
    public var finalTestErrorPercent: Double?
    /// Cost of convergence: the best epoch (1-based), its step and the training seconds to reach it.
    public var bestEpoch: Int?
    public var stepsToBest: Int?
    public var secondsToBest: Double?
    /// The first evaluated epoch whose validation figure is at most `--target-error`, its step and seconds; nil if never.
    public var epochsToTarget: Int?
    public var stepsToTarget: Int?
    public var secondsToTarget: Double?
    public var epochsRun: Int
    public var stepsPerEpoch: Int
    public var weightsSha256: String
    /// The PUs (OS indices) the trial trained on, when trials ran side by side.
    public var cores: [Int]?

    public init(
        index: Int, dropoutInput: Double, dropoutHidden: Double, seedIndex: Int, seed: UInt64,
        bestValidationErrorPercent: Double?, testErrorAtBestPercent: Double?, bestEpoch: Int?, epochsRun: Int, weightsSha256: String,
        stepsPerEpoch: Int = 1
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
        self.stepsPerEpoch = stepsPerEpoch
        self.weightsSha256 = weightsSha256
    }

    /// The figures of a finished run; `target` is `--target-error`.
    init(index: Int, summary: RunSummary, seedIndex: Int, target: Double?) {
        let network = summary.configuration.network
        self.init(
            index: index, dropoutInput: network.dropoutInput, dropoutHidden: network.dropoutHidden, seedIndex: seedIndex,
            seed: summary.configuration.seed, bestValidationErrorPercent: summary.bestValidationErrorPercent,
            testErrorAtBestPercent: summary.bestTestErrorPercent, bestEpoch: summary.bestEpoch, epochsRun: summary.epochs.count,
            weightsSha256: summary.weightsSha256, stepsPerEpoch: summary.trainSamples / summary.configuration.batchSize)
        trainSamples = summary.selection?.trainSamples
        fold = summary.selection?.fold
        refit = summary.selection?.folds != nil && summary.selection?.fold == nil ? true : nil
        let last = summary.epochs.last
        finalTestErrorPercent = last?.testErrorPercent ?? last?.testRmse
        func seconds(through epoch: Int) -> Double { summary.epochs.prefix(epoch).reduce(0) { $0 + $1.seconds } }
        if let best = bestEpoch {
            stepsToBest = best * stepsPerEpoch
            secondsToBest = seconds(through: best)
        }
        if let target, let hit = summary.epochs.first(where: { ($0.validationErrorPercent ?? $0.validationRmse ?? .infinity) <= target }) {
            epochsToTarget = hit.epoch
            stepsToTarget = hit.epoch * stepsPerEpoch
            secondsToTarget = seconds(through: hit.epoch)
        }
    }
}

/// Mean, sample standard deviation, minimum and maximum of some figures.
public struct Spread: Codable, Sendable, Equatable {
    public var count: Int
    public var mean: Double
    public var std: Double
    public var min: Double
    public var max: Double

    public init?(_ values: [Double]) {
        guard !values.isEmpty else { return nil }
        count = values.count
        mean = values.reduce(0, +) / Double(values.count)
        let m = mean
        std = values.count > 1 ? (values.reduce(0) { $0 + ($1 - m) * ($1 - m) } / Double(values.count - 1)).squareRoot() : 0
        min = values.min()!
        max = values.max()!
    }
}

/// A sweep's table row: one (training-set size, input rate, hidden rate) over its seeds (and folds).
public struct SweepRow: Codable, Sendable {
    public var trainSamples: Int?
    public var dropoutInput: Double
    public var dropoutHidden: Double
    public var seeds: Int
    /// The best validation figure of each trial (with folds: each fold's).
    public var validation: Spread?
    /// The test figure at each trial's best epoch (with folds: the fold models').
    public var testAtBest: Spread?
    /// Cross-validation: the test figure of the refits on every fold, over seeds.
    public var refitTest: Spread?
    public var bestEpoch: Spread?
    public var stepsToBest: Spread?
    public var secondsToBest: Spread?
    /// Trials that reached `--target-error`, and their epochs, steps and seconds to it.
    public var reachedTarget: Int
    public var epochsToTarget: Spread?
    public var stepsToTarget: Spread?
    public var secondsToTarget: Spread?
    public var epochsRunMean: Double

    /// The figure a user would judge this row by on the test set: the refits' with folds, else at the best epoch.
    public var test: Spread? { refitTest ?? testAtBest }

    public var label: String {
        (trainSamples.map { "\($0) samples, " } ?? "") + "input \(dropoutInput), hidden \(dropoutHidden)"
    }
}

/// Which combination validation chose, and which the test set would have.
public struct SweepChoice: Codable, Sendable {
    public var trainSamples: Int?
    /// By the lowest mean validation figure (the folds' with --folds): what a user may pick.
    public var byValidation: String
    public var byValidationTest: Double
    /// By the lowest test figure: hindsight, shown to measure what choosing on validation cost.
    public var byTest: String
    public var byTestTest: Double
}

public struct SweepReport: Codable, Sendable {
    public var command: String
    public var sweepSeed: UInt64
    public var base: RunConfiguration
    public var trials: [SweepTrial]
    public var rows: [SweepRow]
    /// What the "error" figures are: "error_percent" (classification) or "rmse" (regression).
    public var metric: String?
    public var folds: Int?
    public var targetError: Double?
    public var choices: [SweepChoice]?
    /// Trials side by side: slots, cores each, and why.
    public var parallelTrials: Int?
    public var parallelReason: String?

    /// "validation error %" or "validation RMSE".
    var figure: (validation: String, test: String) {
        metric == "rmse" ? ("validation RMSE", "test RMSE") : ("validation error %", "test error %")
    }

    /// Whether the sweep has a data-size axis with more than one size.
    var sizes: [Int] { rows.compactMap(\.trainSamples).reduce(into: [Int]()) { if !$0.contains($1) { $0.append($1) } } }
}

extension SweepRun {
    /// Groups trials by (size, rates), in sweep order, with their spreads over seeds (and folds).
    public static func rows(_ trials: [SweepTrial]) -> [SweepRow] {
        var order: [String] = []
        var groups: [String: [SweepTrial]] = [:]
        for t in trials {
            let key = "\(t.trainSamples ?? -1)/\(t.dropoutInput)/\(t.dropoutHidden)"
            if groups[key] == nil { order.append(key) }
            groups[key, default: []].append(t)
        }
        return order.map { key in
            let all = groups[key]!
            let g = all.filter { $0.refit != true }
            let refits = all.filter { $0.refit == true }
            let reached = g.filter { $0.epochsToTarget != nil }
            return SweepRow(
                trainSamples: g[0].trainSamples, dropoutInput: g[0].dropoutInput, dropoutHidden: g[0].dropoutHidden,
                seeds: Set(g.map(\.seedIndex)).count,
                validation: Spread(g.compactMap(\.bestValidationErrorPercent)), testAtBest: Spread(g.compactMap(\.testErrorAtBestPercent)),
                refitTest: Spread(refits.compactMap(\.finalTestErrorPercent)),
                bestEpoch: Spread(g.compactMap(\.bestEpoch).map(Double.init)), stepsToBest: Spread(g.compactMap(\.stepsToBest).map(Double.init)),
                secondsToBest: Spread(g.compactMap(\.secondsToBest)),
                reachedTarget: reached.count, epochsToTarget: Spread(reached.compactMap(\.epochsToTarget).map(Double.init)),
                stepsToTarget: Spread(reached.compactMap(\.stepsToTarget).map(Double.init)), secondsToTarget: Spread(reached.compactMap(\.secondsToTarget)),
                epochsRunMean: Double(g.map(\.epochsRun).reduce(0, +)) / Double(g.count))
        }
    }

    /// Per training-set size: the row validation chose and the row the test set would have.
    public static func choices(_ rows: [SweepRow]) -> [SweepChoice] {
        let sizes = rows.map(\.trainSamples).reduce(into: [Int?]()) { if !$0.contains($1) { $0.append($1) } }
        return sizes.compactMap { size in
            let group = rows.filter { $0.trainSamples == size && $0.validation != nil && $0.test != nil }
            guard let byValidation = group.min(by: { $0.validation!.mean < $1.validation!.mean }),
                  let byTest = group.min(by: { $0.test!.mean < $1.test!.mean }) else { return nil }
            return SweepChoice(
                trainSamples: size, byValidation: byValidation.label, byValidationTest: byValidation.test!.mean,
                byTest: byTest.label, byTestTest: byTest.test!.mean)
        }
    }

    public static func table(_ report: SweepReport) -> [String] {
        let name = report.figure
        let cv = report.folds != nil
        func f(_ s: Spread?, _ digits: Int = 2) -> String { s.map { String(format: "%.\(digits)f ± %.\(digits)f", $0.mean, $0.std) } ?? "-" }
        var lines = [
            "samples  input  hidden  seeds  \(cv ? "fold " : "")\(name.validation)  \(cv ? "refit \(name.test)" : "\(name.test) at best")  best epoch  steps to best  s to best"
                + (report.targetError.map { "  to \($0): reached, epochs, steps" } ?? ""),
        ]
        for r in report.rows {
            var line = (r.trainSamples.map(String.init) ?? "all").padding(toLength: 7, withPad: " ", startingAt: 0)
            line += String(format: "  %5.2f  %6.2f  %5d", r.dropoutInput, r.dropoutHidden, r.seeds)
            line += "  " + f(r.validation).padding(toLength: max(name.validation.count + (cv ? 5 : 0), 13), withPad: " ", startingAt: 0)
            line += "  " + f(r.test).padding(toLength: max(name.test.count + (cv ? 6 : 8), 13), withPad: " ", startingAt: 0)
            line += "  " + f(r.bestEpoch, 1).padding(toLength: 10, withPad: " ", startingAt: 0)
            line += "  " + f(r.stepsToBest, 0).padding(toLength: 13, withPad: " ", startingAt: 0)
            line += "  " + f(r.secondsToBest, 1)
            if report.targetError != nil {
                line += "  \(r.reachedTarget)/\(r.validation?.count ?? 0), \(f(r.epochsToTarget, 1)), \(f(r.stepsToTarget, 0))"
            }
            lines.append(line)
        }
        for c in report.choices ?? [] {
            let size = c.trainSamples.map { "\($0) samples: " } ?? ""
            lines.append(String(format: "%@chosen by %@: %@ (%@ %.2f); best on the test set: %@ (%.2f)", size, cv ? "the folds" : "validation", c.byValidation, name.test, c.byValidationTest, c.byTest, c.byTestTest))
        }
        return lines
    }

    public static func csv(_ report: SweepReport) -> String {
        let prefix = report.metric == "rmse" ? "# metric: rmse\n" : ""
        var text = prefix + "train_samples,dropout_input,dropout_hidden,seeds,validation_error_mean,validation_error_std,validation_error_min,validation_error_max,test_error_at_best_mean,test_error_at_best_std,refit_test_error_mean,refit_test_error_std,best_epoch_mean,best_epoch_std,steps_to_best_mean,seconds_to_best_mean,reached_target,epochs_to_target_mean,steps_to_target_mean,seconds_to_target_mean,epochs_run_mean\n"
        func v(_ x: Double?) -> String { x.map { "\($0)" } ?? "" }
        for r in report.rows {
            let fields: [String] = [
                r.trainSamples.map(String.init) ?? "", "\(r.dropoutInput)", "\(r.dropoutHidden)", "\(r.seeds)",
                v(r.validation?.mean), v(r.validation?.std), v(r.validation?.min), v(r.validation?.max),
                v(r.testAtBest?.mean), v(r.testAtBest?.std), v(r.refitTest?.mean), v(r.refitTest?.std),
                v(r.bestEpoch?.mean), v(r.bestEpoch?.std), v(r.stepsToBest?.mean), v(r.secondsToBest?.mean),
                "\(r.reachedTarget)", v(r.epochsToTarget?.mean), v(r.stepsToTarget?.mean), v(r.secondsToTarget?.mean), "\(r.epochsRunMean)",
            ]
            text += fields.joined(separator: ",") + "\n"
        }
        return text
    }

    /// With a data-size axis: test error against the training-set size, one line per dropout
    /// setting. Otherwise: validation error against the hidden rate, one line per input rate.
    /// The second panel shows the cost of convergence: steps to the best validation error.
    public static func svg(_ report: SweepReport) -> String {
        let n = report.base.network
        let settings = report.rows.map { "\($0.dropoutInput)/\($0.dropoutHidden)" }.reduce(into: [String]()) { if !$0.contains($1) { $0.append($1) } }
        let byInput = report.rows.map(\.dropoutInput).reduce(into: [Double]()) { if !$0.contains($1) { $0.append($1) } }
        let color = { (i: Int) in SVGChart.palette[i % SVGChart.palette.count] }
        var panels: [SVGChart.Panel] = []
        let bars = { (s: Spread?, x: Double) in s.map { [(x, $0.min, $0.max)] } ?? [] }
        if report.sizes.count > 1 {
            func series(_ value: @escaping (SweepRow) -> Spread?) -> [SVGChart.Series] {
                settings.enumerated().map { i, key in
                    let rows = report.rows.filter { "\($0.dropoutInput)/\($0.dropoutHidden)" == key && value($0) != nil }
                    return SVGChart.Series(
                        name: "input \(rows.first?.dropoutInput ?? 0), hidden \(rows.first?.dropoutHidden ?? 0)",
                        points: rows.map { (Double($0.trainSamples!), value($0)!.mean) }, color: color(i),
                        errorBars: rows.flatMap { bars(value($0), Double($0.trainSamples!)) })
                }
            }
            panels.append(.init(title: "Test error against the training-set size", xLabel: "training samples (log scale)", yLabel: report.figure.test + " (log scale)", series: series(\.test), yFromZero: true, xLog: true, yLog: true))
            var cost = series(\.stepsToBest)
            if let target = report.targetError {
                cost += series(\.stepsToTarget).map { var s = $0; s.name += ", to \(target)"; s.dashed = true; s.errorBars = []; s.inLegend = false; return s }
            }
            panels.append(.init(title: "Steps to the best validation error\(report.targetError.map { " (dashed: to \($0))" } ?? "")", xLabel: "training samples (log scale)", yLabel: "steps (log scale)", series: cost, yFromZero: true, xLog: true, yLog: true))
        } else {
            let validation = byInput.enumerated().map { i, input in
                let rows = report.rows.filter { $0.dropoutInput == input && $0.validation != nil }
                return SVGChart.Series(
                    name: "input dropout \(input)\(report.folds != nil ? " (folds)" : "")", points: rows.map { ($0.dropoutHidden, $0.validation!.mean) },
                    color: color(i), errorBars: rows.map { ($0.dropoutHidden, $0.validation!.min, $0.validation!.max) })
            }
            let tests: [SVGChart.Series] = report.folds == nil ? [] : byInput.enumerated().map { i, input in
                let rows = report.rows.filter { $0.dropoutInput == input && $0.refitTest != nil }
                return SVGChart.Series(name: "input \(input): refit, test", points: rows.map { ($0.dropoutHidden, $0.refitTest!.mean) }, color: color(i), dashed: true)
            }
            panels.append(.init(title: "\(report.folds != nil ? "Fold" : "Validation") error against the hidden dropout rate", xLabel: "hidden dropout rate p", yLabel: report.folds == nil ? report.figure.validation : (report.metric == "rmse" ? "RMSE" : "error %"), series: validation + tests, yFromZero: false))
            let cost = byInput.enumerated().map { i, input in
                let rows = report.rows.filter { $0.dropoutInput == input && $0.bestEpoch != nil }
                return SVGChart.Series(name: "input dropout \(input)", points: rows.map { ($0.dropoutHidden, $0.bestEpoch!.mean) }, color: color(i),
                                       errorBars: rows.map { ($0.dropoutHidden, $0.bestEpoch!.min, $0.bestEpoch!.max) })
            }
            let toTarget: [SVGChart.Series] = report.targetError == nil ? [] : byInput.enumerated().map { i, input in
                let rows = report.rows.filter { $0.dropoutInput == input && $0.epochsToTarget != nil }
                return SVGChart.Series(name: "input \(input): to \(report.targetError!)", points: rows.map { ($0.dropoutHidden, $0.epochsToTarget!.mean) }, color: color(i), dashed: true, inLegend: false)
            }
            panels.append(.init(title: "Epochs to the best validation error\(report.targetError.map { " (dashed: to \($0))" } ?? "")", xLabel: "hidden dropout rate p", yLabel: "epochs", series: cost + toTarget, yFromZero: true))
        }
        let seeds = Set(report.rows.map(\.seeds)).sorted().map(String.init).joined(separator: " or ")
        let validation = report.folds.map { "\($0)-fold cross-validation" } ?? "\(report.base.validationSamples ?? 0) held-out validation samples"
        return SVGChart(
            title: "Dropout sweep: \(n.hiddenSizes.map(String.init).joined(separator: "-")) ReLU network",
            subtitle: "\(validation), mean over \(seeds) seed(s); bars: min to max",
            panels: panels
        ).render()
    }
}
