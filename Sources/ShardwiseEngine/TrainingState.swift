import ShardwiseKernels
import ShardwiseData
import ShardwiseIO
import ShardwiseLayers

/// One finished epoch's metrics (a line of `metrics.jsonl`).
public struct EpochRecord: Codable, Sendable, Equatable {
    /// 1-based.
    public var epoch: Int
    /// Mean training loss over the epoch's samples.
    public var trainLoss: Double
    /// Error on the test set given to `fit`; nil when none was given.
    public var testErrorPercent: Double?
    /// Training samples per second (evaluation excluded).
    public var samplesPerSecond: Double
    /// Training seconds (evaluation excluded).
    public var seconds: Double
    /// With a validation split: the error on the held-out training samples.
    public var validationErrorPercent: Double?
    /// Regression: the test set's root mean squared and mean absolute errors.
    public var testRmse: Double?
    /// Regression: the test set's mean absolute error.
    public var testMae: Double?
    /// Regression, with a validation split: the held-out samples' RMSE and MAE.
    public var validationRmse: Double?
    /// Regression, with a validation split: the held-out samples' mean absolute error.
    public var validationMae: Double?
    /// Classification: the test set's and the validation split's mean loss a sample (a
    /// language model's: per token, in nats).
    public var testLoss: Double?
    public var validationLoss: Double?

    /// What is wrong with a record read from a file (`metrics.jsonl`, a state's records), or nil:
    /// a positive epoch, finite figures, error percentages in [0, 100], RMSE, MAE, seconds and
    /// rates at least 0.
    public var problem: String? {
        if epoch < 1 { return "epoch \(epoch), expected 1 or more" }
        let figures: [(String, Double?, ClosedRange<Double>)] = [
            ("train_loss", trainLoss, -Double.greatestFiniteMagnitude...Double.greatestFiniteMagnitude),
            ("test_error_percent", testErrorPercent, 0...100), ("validation_error_percent", validationErrorPercent, 0...100),
            ("test_rmse", testRmse, 0...Double.greatestFiniteMagnitude), ("test_mae", testMae, 0...Double.greatestFiniteMagnitude),
            ("validation_rmse", validationRmse, 0...Double.greatestFiniteMagnitude), ("validation_mae", validationMae, 0...Double.greatestFiniteMagnitude),
            ("seconds", seconds, 0...Double.greatestFiniteMagnitude), ("samples_per_second", samplesPerSecond, 0...Double.greatestFiniteMagnitude),
            ("test_loss", testLoss, 0...Double.greatestFiniteMagnitude), ("validation_loss", validationLoss, 0...Double.greatestFiniteMagnitude),
        ]
        for (name, value, range) in figures { if let value, !range.contains(value) { return "epoch \(epoch): \(name) \(value), expected a value in [\(range.lowerBound), \(range.upperBound)]" } }
        return nil
    }

    /// The test metrics (nil when no test set was given).
    public var test: Metrics? {
        get { testErrorPercent == nil && testRmse == nil ? nil : Metrics(errorPercent: testErrorPercent, rmse: testRmse, mae: testMae, loss: testLoss) }
        set { (testErrorPercent, testRmse, testMae, testLoss) = (newValue?.errorPercent, newValue?.rmse, newValue?.mae, newValue?.loss) }
    }

    /// The validation metrics (nil without a validation split).
    public var validation: Metrics? {
        get {
            validationErrorPercent == nil && validationRmse == nil
                ? nil : Metrics(errorPercent: validationErrorPercent, rmse: validationRmse, mae: validationMae, loss: validationLoss)
        }
        set { (validationErrorPercent, validationRmse, validationMae, validationLoss) = (newValue?.errorPercent, newValue?.rmse, newValue?.mae, newValue?.loss) }
    }

    /// An epoch's metrics.
    public init(epoch: Int, trainLoss: Double, testErrorPercent: Double?, samplesPerSecond: Double, seconds: Double) {
        self.epoch = epoch
        self.trainLoss = trainLoss
        self.testErrorPercent = testErrorPercent
        self.samplesPerSecond = samplesPerSecond
        self.seconds = seconds
    }
}

/// Where training stands: with the parameters and the optimizer's state, everything
/// needed to continue bit for bit (the `state.json` of a checkpoint).
public struct TrainingState: Codable, Sendable {
    /// The Shardwise version that wrote the state.
    public var version: String
    /// How the model is trained; a resumed trainer must have the same.
    public var configuration: TrainingConfiguration
    /// The model's description when it has one (the command line's networks): a checkpoint
    /// with one can be evaluated without the code that built the model. Stored inside
    /// `configuration` in the file, as `network`.
    public var network: NetworkConfiguration?
    /// The epoch in progress (0-based) and the next step to run in it.
    public var epoch: Int
    /// The next step to run in the epoch in progress.
    public var stepInEpoch: Int
    /// Optimisation steps taken so far (the random streams' step, the momentum buffer's age).
    public var globalStep: Int
    /// Loss summed over the steps of the epoch in progress, and its training seconds so far.
    public var epochLossSum: Double
    /// The epoch in progress's training seconds so far.
    public var epochSeconds: Double
    /// Finished epochs' metrics.
    public var records: [EpochRecord]
    /// Early stopping: the best validation error so far (error percent, or RMSE for a
    /// regression), its epoch (1-based), and epochs since.
    public var bestValidationErrorPercent: Double?
    /// The 1-based epoch of the best validation error so far.
    public var bestEpoch: Int?
    /// Epochs since the best validation error.
    public var epochsWithoutImprovement: Int?
    /// The training samples (before the validation split): a resumed run must have the same.
    public var trainingData: DataFingerprint?
    /// The test set given to `fit`: its records are comparable only on the same one.
    public var testData: DataFingerprint?
    /// Classification or regression: what `eval` and `predict` report.
    public var task: TrainingTask?
    /// How stored values became the model's inputs: `eval` and `predict` apply the same.
    public var preprocessing: Preprocessing?
    /// The matrix kernels the steps ran on (they set the weights' bits); nil: written before
    /// they were recorded, which means the BLAS.
    public var kernels: MatrixKernels?
    /// A language model's: how its token ids map to text (`generate`, evaluation on text).
    public var vocabulary: Vocabulary?

    /// The state before the first step.
    public init(configuration: TrainingConfiguration, network: NetworkConfiguration?) {
        version = ShardwiseVersion.current
        self.configuration = configuration
        self.network = network
        epoch = 0
        stepInEpoch = 0
        globalStep = 0
        epochLossSum = 0
        epochSeconds = 0
        records = []
    }

    enum CodingKeys: String, CodingKey {
        case version, configuration, epoch, stepInEpoch, globalStep, epochLossSum, epochSeconds, records
        case bestValidationErrorPercent, bestEpoch, epochsWithoutImprovement, trainingData, testData, task, preprocessing, kernels, vocabulary
    }

    enum NetworkKey: String, CodingKey { case network }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        version = try c.decode(String.self, forKey: .version)
        configuration = try c.decode(TrainingConfiguration.self, forKey: .configuration)
        network = try c.nestedContainer(keyedBy: NetworkKey.self, forKey: .configuration).decodeIfPresent(NetworkConfiguration.self, forKey: .network)
        epoch = try c.decode(Int.self, forKey: .epoch)
        stepInEpoch = try c.decode(Int.self, forKey: .stepInEpoch)
        globalStep = try c.decode(Int.self, forKey: .globalStep)
        epochLossSum = try c.decode(Double.self, forKey: .epochLossSum)
        epochSeconds = try c.decode(Double.self, forKey: .epochSeconds)
        records = try c.decode([EpochRecord].self, forKey: .records)
        bestValidationErrorPercent = try c.decodeIfPresent(Double.self, forKey: .bestValidationErrorPercent)
        bestEpoch = try c.decodeIfPresent(Int.self, forKey: .bestEpoch)
        epochsWithoutImprovement = try c.decodeIfPresent(Int.self, forKey: .epochsWithoutImprovement)
        trainingData = try c.decodeIfPresent(DataFingerprint.self, forKey: .trainingData)
        testData = try c.decodeIfPresent(DataFingerprint.self, forKey: .testData)
        task = try c.decodeIfPresent(TrainingTask.self, forKey: .task)
        preprocessing = try c.decodeIfPresent(Preprocessing.self, forKey: .preprocessing)
        kernels = try c.decodeIfPresent(MatrixKernels.self, forKey: .kernels)
        vocabulary = try c.decodeIfPresent(Vocabulary.self, forKey: .vocabulary)
    }

    /// Checks that the state can be where training stands: counters in range and consistent
    /// with each other and with the configuration, one record per finished epoch, finite sums.
    /// A state read from a file must pass before a trainer uses it (a hand-edited or damaged
    /// `state.json` whose checksum was made to match is refused, never trusted).
    public func validate() throws(CheckpointError) {
        func check(_ condition: Bool, _ problem: @autoclosure () -> String) throws(CheckpointError) {
            if !condition { throw CheckpointError(problem()) }
        }
        try check((0...configuration.epochs).contains(epoch), "epoch \(epoch), expected 0 to \(configuration.epochs) (the configuration's epochs)")
        try check(stepInEpoch >= 0 && globalStep >= 0, "step \(stepInEpoch) of the epoch and global step \(globalStep), expected counts >= 0")
        try check(records.count == epoch, "\(records.count) epoch records for \(epoch) finished epochs")
        try check(records.enumerated().allSatisfy { $0.element.epoch == $0.offset + 1 }, "epoch records out of order, expected epochs 1 to \(records.count)")
        if let problem = records.lazy.compactMap(\.problem).first { throw CheckpointError("epoch records: \(problem)") }
        try check(epochLossSum.isFinite && epochSeconds.isFinite && epochSeconds >= 0, "epoch loss sum \(epochLossSum) and seconds \(epochSeconds), expected finite values")
        if let best = bestEpoch { try check((1...max(records.count, 1)).contains(best) && !records.isEmpty, "best epoch \(best) of \(records.count) finished epochs") }
        try check((epochsWithoutImprovement ?? 0) >= 0, "\(epochsWithoutImprovement ?? 0) epochs without improvement, expected >= 0")
        if let problem = preprocessing?.problem { throw CheckpointError(problem) }
        if let problem = vocabulary?.problem { throw CheckpointError("vocabulary: \(problem)") }
    }

    /// The configuration's fields and `network` in one object.
    struct WithNetwork: Encodable {
        var configuration: TrainingConfiguration
        var network: NetworkConfiguration?

        func encode(to encoder: Encoder) throws {
            try configuration.encode(to: encoder)
            var c = encoder.container(keyedBy: NetworkKey.self)
            try c.encodeIfPresent(network, forKey: .network)
        }
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(version, forKey: .version)
        try c.encode(WithNetwork(configuration: configuration, network: network), forKey: .configuration)
        try c.encode(epoch, forKey: .epoch)
        try c.encode(stepInEpoch, forKey: .stepInEpoch)
        try c.encode(globalStep, forKey: .globalStep)
        try c.encode(epochLossSum, forKey: .epochLossSum)
        try c.encode(epochSeconds, forKey: .epochSeconds)
        try c.encode(records, forKey: .records)
        try c.encodeIfPresent(bestValidationErrorPercent, forKey: .bestValidationErrorPercent)
        try c.encodeIfPresent(bestEpoch, forKey: .bestEpoch)
        try c.encodeIfPresent(epochsWithoutImprovement, forKey: .epochsWithoutImprovement)
        try c.encodeIfPresent(trainingData, forKey: .trainingData)
        try c.encodeIfPresent(testData, forKey: .testData)
        try c.encodeIfPresent(task, forKey: .task)
        try c.encodeIfPresent(preprocessing, forKey: .preprocessing)
        try c.encodeIfPresent(vocabulary, forKey: .vocabulary)
        try c.encodeIfPresent(kernels, forKey: .kernels)
    }
}

/// Mean seconds per step per worker.
public struct StepSplit: Codable, Sendable {
    /// Computing shards (forward and backward).
    public var compute: Double
    /// Waiting at the barrier for the other workers' shards.
    public var waiting: Double
    /// Summing shard gradients and updating parameters.
    public var reduction: Double
    /// Under MPI: seconds per step in cross-rank calls (exchange or all-reduce, allgather, agreement).
    public var crossRank: Double?
    /// Wall-clock seconds per step.
    public var wall: Double?

    /// A split of mean seconds per step.
    public init(compute: Double, waiting: Double, reduction: Double, crossRank: Double? = nil) {
        self.compute = compute
        self.waiting = waiting
        self.reduction = reduction
        self.crossRank = crossRank
    }
}

/// The library's version, written into checkpoints and summaries.
public enum ShardwiseVersion {
    /// This library's version.
    public static let current = "0.2.0"

    /// Whether this build reads files written by `version` ("major.minor.patch"): any up to its own
    /// major and minor version (the formats only grow by optional fields within them).
    public static func canRead(_ version: String) -> Bool {
        func parts(_ v: String) -> [Int]? {
            let p = v.split(separator: ".").map { Int($0) }
            return p.count == 3 && p.allSatisfy { ($0 ?? -1) >= 0 } ? p.map { $0! } : nil
        }
        guard let found = parts(version), let own = parts(current) else { return false }
        return found.prefix(2).lexicographicallyPrecedes(own.prefix(2)) || found.prefix(2) == own.prefix(2)
    }
}
