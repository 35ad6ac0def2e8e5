import Foundation
import Shardwise

/// `summary.json`: the configuration, the result and how it was computed.
public struct RunSummary: Codable, Sendable {
    public var version: String
    public var configuration: RunConfiguration
    /// Classification: the last epoch's test error (nil without a test set, or for a regression).
    public var finalTestErrorPercent: Double?
    /// "classification" or "regression", and the metric the run reports: "error_percent" or "rmse".
    public var task: String?
    public var metric: String?
    /// Regression: the last epoch's test RMSE and MAE.
    public var finalTestRmse: Double?
    public var finalTestMae: Double?
    /// How stored values became inputs (`none`, `scale:255`, `standard`, `minmax`).
    public var preprocessing: String?
    /// The matrix kernels that ran: "blas", or "portable (avx512)" and the like.
    public var kernels: String?
    public var samplesPerSecond: Double
    public var wallSeconds: Double
    public var weightsSha256: String
    public var workers: Int
    public var shardSize: Int
    public var placement: PlacementPlan
    public var pinned: Bool
    /// Mean seconds per step per worker: computing shards, waiting at the barrier, reducing.
    public var stepSeconds: StepSplit
    /// The BLAS library, when one loaded (nil: none on this machine; the portable kernels need none).
    public var blas: BLASInfo?
    public var trainSamples: Int
    public var testSamples: Int
    public var dataDirectory: String
    public var epochs: [EpochRecord]
    /// With --validation: the epoch (1-based) of the lowest validation error, and its errors
    /// (for a regression: RMSE, as `metric` says).
    public var bestEpoch: Int?
    public var bestValidationErrorPercent: Double?
    public var bestTestErrorPercent: Double?
    public var validationSamples: Int?
    /// Whether early stopping ended the run before its last epoch.
    public var stoppedEarly: Bool?
    /// Under MPI: the number of ranks (workers is per rank) and how their gradients were
    /// combined ("ordered": bit-identical to one process; "fast": MPI_Allreduce).
    public var ranks: Int?
    public var crossRank: String?
    /// Under MPI: whether the exchange overlapped the backward pass, and the bytes this rank
    /// moved per step beside a ring all-reduce of the same gradient.
    public var overlap: Bool?
    public var traffic: Traffic?
    /// A sweep trial's choice of samples (subset, fold), when it had one.
    public var selection: DataSelection?
    /// A language model's: the last epoch's test loss per token (nats) and its vocabulary.
    public var finalTestLoss: Double?
    public var vocabulary: Vocabulary?
}

extension RunSummary {
    /// The summary of a finished run of `trainer`; `steps` were taken in this process.
    init(
        trainer: Trainer, configuration: RunConfiguration, steps: Int, wallSeconds: Double, blas: BLASInfo?,
        testSamples: Int, dataDirectory: String
    ) {
        let state = trainer.state
        let samplesPerEpoch = trainer.stepsPerEpoch * configuration.batchSize
        let trainingSeconds = state.records.reduce(0) { $0 + $1.seconds }
        var split = trainer.timing.meanSplit(steps: steps)
        split.crossRank = trainer.cluster.map { _ in trainer.communicationSeconds / Double(max(steps, 1)) }
        split.wall = trainer.stepSeconds / Double(max(steps, 1))
        let validation = trainer.validationData
        self.init(
            version: ShardwiseVersion.current, configuration: configuration,
            finalTestErrorPercent: state.records.last!.testErrorPercent,
            task: trainer.trainingData.task.rawValue, metric: trainer.trainingData.task == .classification ? "error_percent" : "rmse",
            finalTestRmse: state.records.last!.testRmse, finalTestMae: state.records.last!.testMae,
            preprocessing: trainer.trainingData.preprocessing.kind, kernels: MatrixKernels.description,
            samplesPerSecond: Double(samplesPerEpoch * state.records.count) / trainingSeconds,
            wallSeconds: wallSeconds, weightsSha256: trainer.weightsSHA256,
            workers: trainer.workerCount, shardSize: configuration.shardSize, placement: trainer.pool.plan,
            pinned: trainer.pool.allPinned, stepSeconds: split, blas: blas,
            trainSamples: trainer.trainingData.count, testSamples: testSamples, dataDirectory: dataDirectory,
            epochs: state.records, bestEpoch: state.bestEpoch, bestValidationErrorPercent: state.bestValidationErrorPercent,
            bestTestErrorPercent: state.bestEpoch.flatMap { state.records[$0 - 1].test?.primary },
            validationSamples: validation?.count, stoppedEarly: validation.map { _ in state.records.count < configuration.epochs },
            ranks: trainer.cluster?.size, crossRank: trainer.cluster.map { _ in trainer.fastAllreduce ? "fast" : "ordered" },
            overlap: trainer.cluster.map { _ in trainer.overlapsExchange }, traffic: trainer.traffic)
        if let vocabulary = trainer.trainingData.vocabulary {
            self.vocabulary = vocabulary
            finalTestLoss = state.records.last!.testLoss
        }
    }
}

extension RunSummary {
    /// "test error 1.23%", "test RMSE 54.1, MAE 43.2", or "no test set".
    public var resultLine: String {
        if vocabulary != nil, let loss = finalTestLoss {
            return String(format: "test loss %.4f (%.3f bits/token), error %.2f%%", loss, loss / M_LN2, finalTestErrorPercent ?? .nan)
        }
        if let e = finalTestErrorPercent { return String(format: "test error %.2f%%", e) }
        if let r = finalTestRmse { return String(format: "test RMSE %.4g, MAE %.4g", r, finalTestMae ?? .nan) }
        return "no test set"
    }
}
