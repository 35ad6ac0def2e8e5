import Shardwise

/// What the command line trains: a described network and how to train it. Encoded as one
/// flat object (the training fields beside `network`), as in `summary.json` and `state.json`.
@dynamicMemberLookup
public struct RunConfiguration: Sendable, Codable, Equatable {
    public var network: NetworkConfiguration
    public var training: TrainingConfiguration

    public init(network: NetworkConfiguration, training: TrainingConfiguration) {
        self.network = network
        self.training = training
    }

    /// The training fields read and written as if they were this type's own.
    public subscript<T>(dynamicMember field: WritableKeyPath<TrainingConfiguration, T>) -> T {
        get { training[keyPath: field] }
        set { training[keyPath: field] = newValue }
    }

    public subscript<T>(dynamicMember field: KeyPath<TrainingConfiguration, T>) -> T { training[keyPath: field] }

    /// The reference recipe: Srivastava et al. (2014)'s MNIST network, trained with
    /// PyTorch-form momentum SGD (README, "The reference recipe").
    public static func reference(epochs: Int = 80) -> RunConfiguration {
        RunConfiguration(
            network: NetworkConfiguration(hiddenSizes: [1024, 1024, 1024], dropoutInput: 0.2, dropoutHidden: 0.5),
            training: .reference(epochs: epochs))
    }

    /// Checks the network and the training settings; throws the first problem found.
    public func validate(validationGiven: Bool = false) throws(ConfigurationError) {
        try network.validate()
        try training.validate(validationGiven: validationGiven)
    }

    /// Every setting that shapes the trained weights, by field, as text: what resumed runs,
    /// sweep trials and MPI ranks compare (the first difference names its field).
    public var settings: [(field: ConfigurationError.Field, value: String)] {
        let o = training.optimizer
        var schedule: (kind: String, step: String, gamma: String, floor: String) = ("constant", "-", "-", "-")
        switch o.schedule {
        case .constant: break
        case .step(let every, let gamma): schedule = ("step", "\(every)", "\(gamma)", "-")
        case .exponential(let gamma): schedule = ("exponential", "-", "\(gamma)", "-")
        case .cosine(_, let floor): schedule = ("cosine", "-", "-", "\(floor)")
        }
        return [
            (.hiddenSizes, ([network.inputSize] + network.hiddenSizes + [network.outputSize]).map(String.init).joined(separator: ",")),
            (.dropoutInput, "\(network.dropoutInput)"),
            (.dropoutHidden, network.dropoutHiddenPerLayer.map { $0.map { "\($0)" }.joined(separator: ",") } ?? "\(network.dropoutHidden)"),
            (.dropoutKind, network.dropoutKind.rawValue),
            (.epochs, "\(training.epochs)"), (.batchSize, "\(training.batchSize)"), (.shardSize, "\(training.shardSize)"),
            (.seed, "\(training.seed)"), (.learningRate, "\(o.learningRate)"), (.schedule, schedule.kind),
            (.scheduleStep, schedule.step), (.scheduleGamma, schedule.gamma), (.scheduleFloor, schedule.floor),
            (.momentumStart, "\(o.momentum.start)"), (.momentum, "\(o.momentum.end)"), (.momentumRamp, "\(o.momentum.epochs)"),
            (.nesterov, "\(o.nesterov)"), (.weightDecay, "\(o.weightDecay)"), (.maxNorm, o.maxNorm.map { "\($0)" } ?? "none"),
            (.validationSamples, training.validationSamples.map(String.init) ?? "none"),
            (.earlyStoppingPatience, training.earlyStoppingPatience.map(String.init) ?? "none"),
            (.evaluateEvery, "\(training.evaluateEvery ?? 1)"),
            (.model, network.layers.map { "\($0) on \(network.sampleShape), loss \(network.loss ?? "default")\(network.initialization == .pytorch ? ", init pytorch" : "")" } ?? "none"),
            (.optimizer, o.algorithm.rawValue), (.beta1, "\(o.beta1)"), (.beta2, "\(o.beta2)"), (.epsilon, "\(o.epsilon)"),
            (.clipNorm, o.clipNorm.map { "\($0)" } ?? "none"),
        ]
    }

    /// The first setting in which `other` differs from this configuration: its field, this
    /// value and the other's; nil when they train the same weights.
    public func firstDifference(from other: RunConfiguration) -> (field: ConfigurationError.Field, mine: String, other: String)? {
        zip(settings, other.settings).first { $0.value != $1.value }.map { ($0.0.field, $0.0.value, $0.1.value) }
    }

    enum Key: String, CodingKey { case network }

    public init(from decoder: Decoder) throws {
        training = try TrainingConfiguration(from: decoder)
        network = try decoder.container(keyedBy: Key.self).decode(NetworkConfiguration.self, forKey: .network)
    }

    public func encode(to encoder: Encoder) throws {
        try training.encode(to: encoder)
        var c = encoder.container(keyedBy: Key.self)
        try c.encode(network, forKey: .network)
    }
}

/// A failure that ends a run, with a one-line message for the user.
public struct RunError: Error, CustomStringConvertible {
    public var description: String
    /// The process exit status for a failure (1).
    public var exitStatus: Int32
    /// Training was stopped (cancelled) and its checkpoint written: the program picks the status.
    public var stopped: Bool
    /// Under MPI: every rank reached this error together (an agreed stop or divergence),
    /// so the job can end normally; otherwise the failing rank ends the job.
    public var collective: Bool
    /// The engine's error, when it came from one (the program names configuration fields by its flags).
    public var underlying: TrainingError?
    /// Under MPI, for a collective error: every rank reports it (each rank's view matters), not rank 0 alone.
    public var everyRank = false

    public init(_ description: String, exitStatus: Int32 = 1, stopped: Bool = false, collective: Bool = false) {
        self.description = description
        self.exitStatus = exitStatus
        self.stopped = stopped
        self.collective = collective
    }

    public init(_ error: TrainingError) {
        var collective = false
        if case .diverged = error { collective = true }
        self.init(error.description, collective: collective)
        underlying = error
    }
}
