import ShardwiseLayers

/// Everything that determines a training run's weights, together with the seed and the data.
public struct TrainingConfiguration: Sendable, Codable, Equatable {
    public var network: NetworkConfiguration
    public var optimizer: OptimizerConfiguration
    public var epochs: Int
    /// Samples per optimisation step (the global batch). A whole number of shards.
    public var batchSize: Int
    /// Samples per shard: the unit of work and of determinism.
    public var shardSize: Int
    public var seed: UInt64
    /// Training samples held out for validation (the same ones for a seed, whatever the worker count).
    public var validationSamples: Int?
    /// Stop when the validation error has not improved for this many epochs.
    public var earlyStoppingPatience: Int?

    public init(
        network: NetworkConfiguration, optimizer: OptimizerConfiguration, epochs: Int,
        batchSize: Int, shardSize: Int, seed: UInt64
    ) {
        self.network = network
        self.optimizer = optimizer
        self.epochs = epochs
        self.batchSize = batchSize
        self.shardSize = shardSize
        self.seed = seed
    }

    public var shardsPerBatch: Int { batchSize / shardSize }

    /// The reference recipe: Srivastava et al. (2014)'s MNIST network, trained
    /// with PyTorch-form momentum SGD (README, "The reference recipe").
    public static func reference(epochs: Int = 80) -> TrainingConfiguration {
        TrainingConfiguration(
            network: NetworkConfiguration(hiddenSizes: [1024, 1024, 1024], dropoutInput: 0.2, dropoutHidden: 0.5),
            optimizer: OptimizerConfiguration(
                learningRate: 0.05, schedule: .cosine(epochs: epochs, floor: 0.01),
                momentum: MomentumRamp(start: 0.9, end: 0.9, epochs: 0), nesterov: false,
                weightDecay: 0, maxNorm: 3.5),
            epochs: epochs, batchSize: 128, shardSize: 64, seed: 1)
    }
}
