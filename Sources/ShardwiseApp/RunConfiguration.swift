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
    public func validate() throws(ConfigurationError) {
        try network.validate()
        try training.validate()
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
