import Foundation
import ShardwiseLayers
import ShardwiseApp
import Shardwise
import XCTest

final class SweepTests: XCTestCase {
    func base() -> RunConfiguration {
        var configuration = RunConfiguration.reference(epochs: 2)
        configuration.network.hiddenSizes = [64]
        configuration.batchSize = 64
        configuration.shardSize = 32
        configuration.validationSamples = 512
        return configuration
    }

    func sweep(
        _ out: String, stopAfterSteps: Int? = nil, learningRate: Double? = nil, workers: Int = 2, parallel: Int = 1,
        change: (inout SweepSettings, inout RunConfiguration) -> Void = { _, _ in }
    ) async throws -> SweepReport {
        var options = RunOptions(dataDirectory: try sharedMNISTFolder(), outDirectory: out, workers: workers, trainLimit: 2048, testLimit: 300)
        options.stopAfterSteps = stopAfterSteps
        var base = base()
        if let learningRate { base.training.optimizer.learningRate = learningRate }
        var settings = SweepSettings(inputRates: [0.2], hiddenRates: [0, 0.5], seeds: 1, sweepSeed: 3)
        settings.parallelTrials = parallel
        change(&settings, &base)
        return try await SweepRun.run(base: base, settings: settings, options: options, command: "test", console: Console { _ in })
    }

    /// An interrupted sweep, rerun, gives the same trials and table as an uninterrupted one;
    /// finished trials are not trained again.
    func testInterruptedSweepResumesToTheSameTable() async throws {
        let folder = NSTemporaryDirectory() + "shardwise-sweep-\(getpid())"
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let whole = try await sweep("\(folder)/whole")
        XCTAssertEqual(whole.trials.count, 2)

        let split = "\(folder)/split"
        do {
            _ = try await sweep(split, stopAfterSteps: 5)
            XCTFail("the first trial should have been interrupted")
        } catch let error as RunError {
            XCTAssert(error.description.contains("interrupted after step 5"), error.description)
        }
        // A rerun with other settings does not resume trials trained under the old ones: it names the setting.
        do {
            _ = try await sweep(split, learningRate: 0.01)
            XCTFail("a sweep with another learning rate resumed the old trials")
        } catch let error as RunError {
            guard case .configuration(let problem)? = error.underlying else { return XCTFail(error.description) }
            XCTAssertEqual(problem.field, .learningRate, error.description)
            XCTAssert(problem.problem.contains("0.01 in this sweep") && problem.problem.contains("0.05"), problem.problem)
        }
        let resumed = try await sweep(split)
        XCTAssertEqual(resumed.trials.map(\.weightsSha256), whole.trials.map(\.weightsSha256))
        // The same figures (the seconds each trial took differ from run to run).
        let encoder = JSON.encoder(pretty: false)
        let figures = { (r: SweepReport) in r.rows.map { [$0.validation, $0.testAtBest, $0.bestEpoch, $0.stepsToBest] } }
        XCTAssertEqual(try encoder.encode(figures(resumed)), try encoder.encode(figures(whole)))

        // A third run trains nothing: both trials are finished.
        let before = try FileManager.default.attributesOfItem(atPath: "\(split)/trial-000/summary.json")[.modificationDate] as! Date
        let again = try await sweep(split)
        let after = try FileManager.default.attributesOfItem(atPath: "\(split)/trial-000/summary.json")[.modificationDate] as! Date
        XCTAssertEqual(before, after)
        XCTAssertEqual(again.trials.map(\.weightsSha256), whole.trials.map(\.weightsSha256))
    }

    func testTrialSeedsAndRowStatistics() {
        XCTAssertEqual(SweepRun.trialSeed(sweepSeed: 1, trial: 4), SweepRun.trialSeed(sweepSeed: 1, trial: 4))
        XCTAssertNotEqual(SweepRun.trialSeed(sweepSeed: 1, trial: 4), SweepRun.trialSeed(sweepSeed: 1, trial: 5))
        XCTAssertNotEqual(SweepRun.trialSeed(sweepSeed: 1, trial: 4), SweepRun.trialSeed(sweepSeed: 2, trial: 4))
        func trial(_ hidden: Double, _ error: Double, seed: Int) -> SweepTrial {
            SweepTrial(index: 0, dropoutInput: 0.2, dropoutHidden: hidden, seedIndex: seed, seed: 0, bestValidationErrorPercent: error,
                       testErrorAtBestPercent: error + 1, bestEpoch: Int(error), epochsRun: 3, weightsSha256: "")
        }
        let rows = SweepRun.rows([trial(0.5, 1, seed: 0), trial(0.5, 2, seed: 1), trial(0.5, 3, seed: 2), trial(0.2, 4, seed: 0)])
        XCTAssertEqual(rows.map(\.dropoutHidden), [0.5, 0.2])
        XCTAssertEqual(rows[0].validation?.mean, 2)
        XCTAssertEqual(rows[0].validation!.std, 1, accuracy: 1e-12)  // sample standard deviation of 1, 2, 3
        XCTAssertEqual(rows[0].validation?.min, 1)
        XCTAssertEqual(rows[0].validation?.max, 3)
        XCTAssertEqual(rows[0].testAtBest?.mean, 3)
        XCTAssertEqual(rows[0].bestEpoch?.mean, 2)
        XCTAssertEqual(rows[0].seeds, 3)
        XCTAssertEqual(rows[1].seeds, 1)
        // Validation picks hidden 0.5 (mean 2 against 4); so does the test set (3 against 5).
        let choice = SweepRun.choices(rows)
        XCTAssertEqual(choice.count, 1)
        XCTAssertEqual(choice[0].byValidation, "input 0.2, hidden 0.5")
        XCTAssertEqual(choice[0].byValidationTest, 3)
    }

    /// Folds: disjoint, together the whole set, sizes within one of each other, the kept part
    /// the complement; the same for a seed, other folds for another.
    func testFoldsPartitionTheTrainingSet() {
        let data = syntheticDataset(count: 1003, seed: 2)
        var seen = Set<Int>()
        for k in 0..<5 {
            let (kept, held) = data.fold(k, of: 5, seed: 9)
            let heldRows = Set((0..<held.count).map(held.row)), keptRows = Set((0..<kept.count).map(kept.row))
            XCTAssert(heldRows.isDisjoint(with: seen), "fold \(k) overlaps an earlier fold")
            XCTAssert(heldRows.isDisjoint(with: keptRows))
            XCTAssertEqual(heldRows.union(keptRows).count, 1003)
            XCTAssert([200, 201].contains(held.count), "fold of \(held.count)")
            seen.formUnion(heldRows)
            XCTAssertEqual((0..<held.count).map(held.row), (0..<held.count).map(data.fold(k, of: 5, seed: 9).held.row))
        }
        XCTAssertEqual(seen.count, 1003)
        XCTAssertNotEqual((0..<50).map(data.fold(0, of: 5, seed: 9).held.row), (0..<50).map(data.fold(0, of: 5, seed: 10).held.row))
    }

    /// A data-size axis: the validation samples are held out first and are the same for every
    /// size; a smaller subset lies inside a larger one; too large a size names its flag.
    func testSubsetsAreNestedAndValidationIsShared() throws {
        let data = RunData(train: syntheticDataset(count: 2000, seed: 4), origin: "synthetic")
        func chosen(_ size: Int) throws -> RunData {
            var copy = data
            try DataSelection(seed: 5, validationSamples: 300, trainSamples: size).apply(to: &copy)
            return copy
        }
        let small = try chosen(100), large = try chosen(1000)
        let rows = { (d: Dataset) in Set((0..<d.count).map(d.row)) }
        XCTAssertEqual(small.train.count, 100)
        XCTAssert(rows(small.train).isSubset(of: rows(large.train)))
        XCTAssertEqual(rows(small.validation!), rows(large.validation!))
        XCTAssert(rows(large.train).isDisjoint(with: rows(large.validation!)))
        XCTAssertThrowsError(try chosen(1701)) { XCTAssert("\($0)".contains("--train-samples: 1701, but 1700 training samples are available"), "\($0)") }
    }

    /// --min-steps: a small training set trains k times the epochs, evaluated every k, its schedule stretched.
    func testMinimumStepsStretchSmallTrainingSets() throws {
        var configuration = base()
        configuration.epochs = 10
        configuration.training.optimizer.schedule = .cosine(epochs: 10, floor: 0.01)
        configuration.batchSize = 100
        configuration.shardSize = 50
        var small = configuration
        try SweepRun.stretch(&small, trainingSamples: 500, minSteps: 1500)  // 5 steps an epoch: 30 x 10 epochs
        XCTAssertEqual(small.epochs, 300)
        XCTAssertEqual(small.training.evaluateEvery, 30)
        XCTAssertEqual(small.training.optimizer.schedule, .cosine(epochs: 300, floor: 0.01))
        var large = configuration
        try SweepRun.stretch(&large, trainingSamples: 50_000, minSteps: 1500)
        XCTAssertEqual(large, configuration)
        XCTAssertThrowsError(try SweepRun.stretch(&large, trainingSamples: 99, minSteps: nil)) { XCTAssert("\($0)".contains("--batch-size: 100"), "\($0)") }
        XCTAssertTrue(small.training.evaluates(epoch: 60))
        XCTAssertFalse(small.training.evaluates(epoch: 61))
        XCTAssertTrue(small.training.evaluates(epoch: 300))
    }

    /// Trials side by side (one core each) give each trial the weights of the sweep run one
    /// trial at a time on both cores; an interrupted parallel sweep resumes to the same table.
    func testParallelTrialsMatchLoneTrialsAndResume() async throws {
        let folder = NSTemporaryDirectory() + "shardwise-parallel-\(getpid())"
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let alone = try await sweep("\(folder)/alone")
        let side = try await sweep("\(folder)/side", parallel: 2)
        XCTAssertEqual(side.parallelTrials, 2)
        XCTAssertEqual(side.trials.map(\.weightsSha256), alone.trials.map(\.weightsSha256))
        XCTAssertEqual(Set(side.trials.compactMap(\.cores).map { $0.count }), [1])
        XCTAssertNotEqual(side.trials[0].cores, side.trials[1].cores, "two trials on one core")
        let split = "\(folder)/split"
        do {
            _ = try await sweep(split, stopAfterSteps: 5, parallel: 2)
            XCTFail("the trials should have been interrupted")
        } catch let error as RunError {
            XCTAssert(error.description.contains("interrupted after step"), error.description)
        }
        let resumed = try await sweep(split, parallel: 2)
        XCTAssertEqual(resumed.trials.map(\.weightsSha256), alone.trials.map(\.weightsSha256))
    }

    /// Two trials side by side on a small CSV (no MNIST needed; run under ThreadSanitizer by
    /// `make test`): each trial's weights are those of the trial run alone.
    func testTrialsSideBySideOnASmallCSV() async throws {
        let folder = NSTemporaryDirectory() + "shardwise-side-\(getpid())"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let stream = RandomAddress(seed: 11, purpose: .synthetic)
        var csv = "a,b,c,d,label\n"
        for i in 0..<384 {
            let x = (0..<4).map { stream.uniform(i * 4 + $0) }
            csv += x.map { String($0) }.joined(separator: ",") + ",\(x[0] + x[1] > 1 ? 1 : 0)\n"
        }
        try csv.write(toFile: "\(folder)/data.csv", atomically: true, encoding: .utf8)
        var base = base()
        base.validationSamples = 64
        base.batchSize = 32
        base.shardSize = 16
        func run(_ out: String, parallel: Int, folds: Int? = nil, stopAfterSteps: Int? = nil) async throws -> SweepReport {
            var options = RunOptions(dataDirectory: "\(folder)/data.csv", outDirectory: "\(folder)/\(out)")
            options.data.cacheFolder = "\(folder)/cache"
            options.stopAfterSteps = stopAfterSteps
            var settings = SweepSettings(inputRates: [0], hiddenRates: [0, 0.5], seeds: 1, sweepSeed: 2)
            settings.parallelTrials = parallel
            settings.folds = folds
            var configuration = base
            if folds != nil { configuration.training.earlyStoppingPatience = 1 }
            return try await SweepRun.run(base: configuration, settings: settings, options: options, command: "test", console: Console { _ in })
        }
        let alone = try await run("alone", parallel: 1)
        let side = try await run("side", parallel: 2)
        XCTAssertEqual(side.trials.map(\.weightsSha256), alone.trials.map(\.weightsSha256))
        XCTAssertEqual(side.parallelTrials, 2)
        // A rerun reads the finished trials back (4 features, not MNIST's 784) without training them again.
        let summary = "\(folder)/side/trial-000/summary.json"
        let before = try FileManager.default.attributesOfItem(atPath: summary)[.modificationDate] as! Date
        let again = try await run("side", parallel: 2)
        XCTAssertEqual(try FileManager.default.attributesOfItem(atPath: summary)[.modificationDate] as! Date, before)
        XCTAssertEqual(again.trials.map(\.weightsSha256), alone.trials.map(\.weightsSha256))
        // Folds with early stopping, interrupted and resumed from their checkpoints: the same trials.
        let folds = try await run("folds", parallel: 2, folds: 2)
        do {
            _ = try await run("split", parallel: 2, folds: 2, stopAfterSteps: 3)
            XCTFail("the trials should have been interrupted")
        } catch let error as RunError {
            XCTAssert(error.description.contains("rerun the same command"), error.description)
        }
        let resumed = try await run("split", parallel: 2, folds: 2)
        XCTAssertEqual(resumed.trials.map(\.weightsSha256), folds.trials.map(\.weightsSha256))
    }

    /// Cross-validation: each combination's folds and a refit on all of them for the folds'
    /// mean best epoch; the same weights for 1 and 2 workers; the table names the choice.
    func testCrossValidationIsTheSameForAnyWorkerCount() async throws {
        let folder = NSTemporaryDirectory() + "shardwise-folds-\(getpid())"
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let folds = { (settings: inout SweepSettings, base: inout RunConfiguration) in
            settings.folds = 3
            settings.targetError = 60
            settings.hiddenRates = [0.5]
            base.epochs = 3
        }
        let one = try await sweep("\(folder)/one", workers: 1, change: folds)
        let two = try await sweep("\(folder)/two", workers: 2, change: folds)
        XCTAssertEqual(one.trials.count, 4)  // 3 folds and a refit
        XCTAssertEqual(one.trials.map(\.weightsSha256), two.trials.map(\.weightsSha256))
        XCTAssertEqual(one.trials.map(\.fold), [0, 1, 2, nil])
        XCTAssertEqual(one.trials.map { $0.refit ?? false }, [false, false, false, true])
        let refit = one.trials[3], foldBest = one.trials[0..<3].compactMap(\.bestEpoch)
        XCTAssertEqual(refit.epochsRun, Int((Double(foldBest.reduce(0, +)) / 3).rounded()))
        XCTAssertNil(refit.bestValidationErrorPercent)
        XCTAssertEqual(one.rows.count, 1)
        XCTAssertEqual(one.rows[0].validation?.count, 3)
        XCTAssertEqual(one.rows[0].refitTest?.mean, refit.finalTestErrorPercent)
        XCTAssertEqual(one.choices?.count, 1)
        XCTAssert(SweepRun.table(one).contains { $0.contains("chosen by the folds") })
        // A fold trial trains on 2 of 3 folds of the 2048 samples and validates on the third.
        let summary = try JSON.decoder().decode(RunSummary.self, from: Data(contentsOf: URL(fileURLWithPath: "\(folder)/one/trial-001/summary.json")))
        XCTAssertEqual(summary.trainSamples, 2048 - 683)
        XCTAssertEqual(summary.validationSamples, 683)
        XCTAssertEqual(summary.selection?.fold, 1)
    }
}
