import ArgumentParser
import Foundation
import Shardwise
import ShardwiseApp

struct EvalCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eval",
        abstract: "Test error and confusion matrix of a checkpoint; Monte Carlo dropout with --mc-dropout.")

    @Option(help: "A checkpoint folder, a folder of checkpoints (the newest valid one is used), or a model.safetensors.")
    var checkpoint: String

    @Option(help: "Folder with the MNIST files (default: data/mnist, then ../shared/datasets/mnist).")
    var data: String?

    @Option(help: "Keep dropout on and average T stochastic passes (Gal and Ghahramani 2016).")
    var mcDropout: Int?

    @Option(help: "Seed of the Monte Carlo dropout masks.")
    var seed: UInt64 = 1

    @Option(help: "Use only the first N test samples.")
    var testSamples: Int?

    func validate() throws {
        // Each pass draws its masks from the stream of "step" t, addressed with 32 bits; 10,000 passes is far past convergence.
        if let mcDropout, !(1...10_000).contains(mcDropout) {
            throw ValidationError("--mc-dropout: \(mcDropout), expected 1 to 10000 passes")
        }
        if let testSamples, testSamples <= 0 { throw ValidationError("--test-samples: \(testSamples), expected a positive count") }
    }

    func run() throws {
        let report = try Evaluation.run(
            checkpoint: checkpoint, dataDirectory: data, testLimit: testSamples, mcDropoutPasses: mcDropout, seed: seed)
        print("confusion matrix (rows: true digit, columns: predicted):")
        print("     " + (0..<report.confusion.count).map { pad(String($0), 6) }.joined())
        for (digit, row) in report.confusion.enumerated() {
            print(pad(String(digit), 5) + row.map { pad(String($0), 6) }.joined())
        }
        if let mc = report.monteCarlo {
            print(String(format: "MC dropout, %d passes: test error %.2f%%, mean predictive entropy %.4f nats (%.4f on images it gets right, %.4f on those it gets wrong)", mc.passes, mc.errorPercent, mc.meanEntropy, mc.entropyCorrect, mc.entropyWrong))
        }
        print(String(format: "test error %.2f%% on %d samples", report.errorPercent, report.samples))
    }

    func pad(_ text: String, _ width: Int) -> String {
        String(repeating: " ", count: max(0, width - text.count)) + text
    }
}
