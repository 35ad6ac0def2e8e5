import ArgumentParser
import Foundation
import Shardwise
import ShardwiseApp

struct EvalCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eval",
        abstract: "Test error and confusion matrix (or RMSE and MAE) of a checkpoint; Monte Carlo dropout with --mc-dropout.")

    @Option(help: "A checkpoint folder, a folder of checkpoints (the newest valid one is used), or a model.safetensors.")
    var checkpoint: String

    @Option(help: "Test data: a folder with the MNIST files (default: data/mnist, then ../shared/datasets/mnist; its test set), or a file of the training data's kind.")
    var data: String?

    @OptionGroup var file: FileFlags

    @Option(help: "Keep dropout on and average T stochastic passes (Gal and Ghahramani 2016).")
    var mcDropout: Int?

    @Option(help: "Seed of the Monte Carlo dropout masks.")
    var seed: UInt64 = 1

    @Option(help: "Use only the first N test samples.")
    var testSamples: Int?

    func validate() throws {
        try requirePaths(["--checkpoint": checkpoint, "--data": data])
        // Each pass draws its masks from the stream of "step" t, addressed with 32 bits; 10,000 passes is far past convergence.
        if let mcDropout, !(1...10_000).contains(mcDropout) {
            throw ValidationError("--mc-dropout: \(mcDropout), expected 1 to 10000 passes")
        }
        if let testSamples, testSamples <= 0 { throw ValidationError("--test-samples: \(testSamples), expected a positive count") }
    }

    func run() async throws {
        var options = DataOptions(path: data)
        file.apply(to: &options)
        let report = try await Evaluation.run(
            checkpoint: checkpoint, data: options, testLimit: testSamples, mcDropoutPasses: mcDropout, seed: seed)
        if let loss = report.loss, let t = report.context {
            if mcDropout != nil { throw ValidationError("--mc-dropout: for classifiers and regressions; a language model is evaluated by its loss") }
            print(String(format: "test loss %.4f (%.3f bits/token), error %.2f%% on %d windows of %d tokens", loss, loss / M_LN2, report.errorPercent ?? .nan, report.samples, t))
            return
        }
        if let rmse = report.rmse {
            if let mc = report.monteCarlo {
                print(String(format: "MC dropout, %d passes: RMSE of the predictive mean %.6g, mean predictive variance %.6g", mc.passes, mc.errorPercent, mc.meanEntropy))
            }
            print(String(format: "test RMSE %.6g, MAE %.6g on %d samples", rmse, report.mae ?? .nan, report.samples))
            return
        }
        print("confusion matrix (rows: true class, columns: predicted):")
        print("     " + (0..<report.confusion.count).map { pad(String($0), 6) }.joined())
        for (digit, row) in report.confusion.enumerated() {
            print(pad(String(digit), 5) + row.map { pad(String($0), 6) }.joined())
        }
        if let mc = report.monteCarlo {
            print(String(format: "MC dropout, %d passes: test error %.2f%%, mean predictive entropy %.4f nats (%.4f on images it gets right, %.4f on those it gets wrong)", mc.passes, mc.errorPercent, mc.meanEntropy, mc.entropyCorrect, mc.entropyWrong))
        }
        print(String(format: "test error %.2f%% on %d samples", report.errorPercent ?? .nan, report.samples))
    }

    func pad(_ text: String, _ width: Int) -> String {
        String(repeating: " ", count: max(0, width - text.count)) + text
    }
}
