import ShardwiseData
import ShardwiseLayers

/// How a model is trained: together with the model, the seed inside and the data,
/// everything that determines the trained weights.
public struct TrainingConfiguration: Sendable, Codable, Equatable {
    /// Momentum SGD settings and max-norm.
    public var optimizer: OptimizerConfiguration
    /// Passes over the training samples.
    public var epochs: Int
    /// Samples per optimisation step (the global batch). A whole number of shards.
    public var batchSize: Int
    /// Samples per shard: the unit of work and of determinism.
    public var shardSize: Int
    /// Initialisation, shuffling, the validation split and every random layer derive from it.
    public var seed: UInt64
    /// Training samples held out for validation (the same ones for a seed, whatever the worker count).
    public var validationSamples: Int?
    /// Stop when the validation error has not improved for this many evaluations.
    public var earlyStoppingPatience: Int?
    /// Evaluate (test and validation sets) after every this many epochs and after the last
    /// one; nil means every epoch. Small training sets run many short epochs: evaluating
    /// each would cost more than training.
    public var evaluateEvery: Int?
    /// Steps an epoch takes, each epoch over the first samples of its own shuffled order (a
    /// language model's windows, far more than a run trains on); nil: a whole pass.
    public var stepsPerEpoch: Int?

    /// Training settings; `validate(trainingSamples:)` checks them.
    public init(
        optimizer: OptimizerConfiguration, epochs: Int, batchSize: Int, shardSize: Int, seed: UInt64,
        validationSamples: Int? = nil, earlyStoppingPatience: Int? = nil, evaluateEvery: Int? = nil
    ) {
        self.optimizer = optimizer
        self.epochs = epochs
        self.batchSize = batchSize
        self.shardSize = shardSize
        self.seed = seed
        self.validationSamples = validationSamples
        self.earlyStoppingPatience = earlyStoppingPatience
        self.evaluateEvery = evaluateEvery
    }

    /// Whether epoch `epoch` (1-based) is evaluated: every `evaluateEvery`-th, and the last.
    public func evaluates(epoch: Int) -> Bool {
        epoch % (evaluateEvery ?? 1) == 0 || epoch >= epochs
    }

    /// Shards per step: `batchSize / shardSize`.
    public var shardsPerBatch: Int { batchSize / shardSize }

    /// The reference recipe's training (README): momentum SGD 0.9, lr 0.05 cosine to 1%,
    /// max-norm 3.5, batch 128 in shards of 64, seed 1.
    public static func reference(epochs: Int = 80) -> TrainingConfiguration {
        TrainingConfiguration(
            optimizer: OptimizerConfiguration(
                learningRate: 0.05, schedule: .cosine(epochs: epochs, floor: 0.01),
                momentum: MomentumRamp(start: 0.9, end: 0.9, epochs: 0), nesterov: false,
                weightDecay: 0, maxNorm: 3.5),
            epochs: epochs, batchSize: 128, shardSize: 64, seed: 1)
    }
}

extension TrainingConfiguration {
    /// Checks every setting, against the training data's size when given; throws the first problem found.
    /// `validationGiven`: a separate validation set is given (early stopping needs no split then).
    public func validate(trainingSamples: Int? = nil, validationGiven: Bool = false) throws(ConfigurationError) {
        func check(_ condition: Bool, _ field: ConfigurationError.Field, _ problem: @autoclosure () -> String) throws(ConfigurationError) {
            if !condition { throw ConfigurationError(field, problem()) }
        }
        try check(epochs > 0 && epochs <= Int(Int32.max), .epochs, "\(epochs), expected 1 to 2147483647 epochs")
        try check(batchSize > 0 && batchSize <= Int(Int32.max), .batchSize, "\(batchSize), expected a positive number of samples below 2^31 (random streams address samples with 32 bits)")
        try check(shardSize > 0, .shardSize, "\(shardSize), expected a positive number of samples")
        try check(batchSize % shardSize == 0, .batchSize, "\(batchSize) is not a whole number of shards of \(shardSize) ({shardSize})")
        try optimizer.validate()
        if let n = validationSamples {
            try check(n >= 0, .validationSamples, "\(n), expected a number of samples >= 0")
        }
        if let every = evaluateEvery {
            try check(every > 0, .evaluateEvery, "\(every), expected a positive number of epochs")
        }
        if let steps = stepsPerEpoch {
            try check(steps > 0 && steps <= Int(UInt32.max), .stepsPerEpoch, "\(steps), expected a positive number of steps")
        }
        if let patience = earlyStoppingPatience {
            try check(patience > 0, .earlyStoppingPatience, "\(patience), expected a positive number of evaluations")
            try check((validationSamples ?? 0) > 0 || validationGiven, .earlyStoppingPatience, "needs a validation set ({validationSamples} or --validation-data)")
        }
        if let trainingSamples {
            let validation = validationSamples ?? 0
            try check(validation < trainingSamples, .validationSamples, "\(validation) of \(trainingSamples) training samples leaves none to train on")
            try check(batchSize <= trainingSamples - validation, .batchSize, "\(batchSize) is larger than the \(trainingSamples - validation) training samples")
            let perEpoch = (trainingSamples - validation) / batchSize
            if let steps = stepsPerEpoch {
                try check(steps <= perEpoch, .stepsPerEpoch, "\(steps) steps of \(batchSize) samples, more than the \(trainingSamples - validation) training samples hold (\(perEpoch) steps)")
            }
            // Random streams address steps with 32 bits: a run no machine could finish is refused, not wrapped.
            let steps = CheckedSize.product([epochs, stepsPerEpoch ?? perEpoch])
            try check(steps.map { $0 <= Int(UInt32.max) } ?? false, .epochs, "\(epochs) epochs of \(stepsPerEpoch ?? perEpoch) steps, more than the 2^32 - 1 steps a run can address")
        }
    }
}
