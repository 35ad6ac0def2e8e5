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

    func sweep(_ out: String, stopAfterSteps: Int? = nil, learningRate: Double? = nil) async throws -> SweepReport {
        var options = RunOptions(dataDirectory: try sharedMNISTFolder(), outDirectory: out, workers: 2, trainLimit: 2048, testLimit: 300)
        options.stopAfterSteps = stopAfterSteps
        var base = base()
        if let learningRate { base.training.optimizer.learningRate = learningRate }
        return try await SweepRun.run(
            base: base, inputRates: [0.2], hiddenRates: [0, 0.5], seeds: 1, sweepSeed: 3, options: options,
            command: "test", console: Console { _ in })
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
        let encoder = JSON.encoder(pretty: false)
        XCTAssertEqual(try encoder.encode(resumed.rows), try encoder.encode(whole.rows))

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
        func trial(_ hidden: Double, _ error: Double) -> SweepTrial {
            SweepTrial(index: 0, dropoutInput: 0.2, dropoutHidden: hidden, seedIndex: 0, seed: 0, bestValidationErrorPercent: error,
                       testErrorAtBestPercent: error + 1, bestEpoch: 1, epochsRun: 3, weightsSha256: "")
        }
        let rows = SweepRun.rows([trial(0.5, 1), trial(0.5, 2), trial(0.5, 3), trial(0.2, 4)])
        XCTAssertEqual(rows.map(\.dropoutHidden), [0.5, 0.2])
        XCTAssertEqual(rows[0].validationErrorMean, 2)
        XCTAssertEqual(rows[0].validationErrorStd, 1, accuracy: 1e-12)  // sample standard deviation of 1, 2, 3
        XCTAssertEqual(rows[0].validationErrorMin, 1)
        XCTAssertEqual(rows[0].validationErrorMax, 3)
        XCTAssertEqual(rows[0].testErrorAtBestMean, 3)
        XCTAssertEqual(rows[1].seeds, 1)
    }
}
