import Foundation

/// A setting that cannot work: which field, the value found and what was expected.
/// The command line names the field by its flag.
public struct ConfigurationError: Error, CustomStringConvertible, Equatable {
    /// A configuration field, named as in Swift.
    public enum Field: String, Sendable, CaseIterable {
        /// Fields of `NetworkConfiguration` and `TrainingConfiguration` (`epochs`, `batchSize`, `shardSize`, `seed`).
        case hiddenSizes, dropoutInput, dropoutHidden, epochs, batchSize, shardSize, seed
        /// Fields of `OptimizerConfiguration` and its momentum ramp.
        case learningRate, momentumStart, momentum, momentumRamp, nesterov, weightDecay, maxNorm
        /// The learning-rate schedule's step, factor and floor; the validation split and early stopping.
        case scheduleStep, scheduleGamma, scheduleFloor, validationSamples, earlyStoppingPatience
        /// The training data (its shape against the model's).
        case data
        /// The ranks of an MPI job.
        case ranks
    }

    /// The field that holds the bad value.
    public var field: Field
    /// What was found and what was expected; may name another field as `{fieldName}`.
    public var problem: String

    /// A problem with `field`; `problem` says what was found and what was expected.
    public init(_ field: Field, _ problem: String) {
        self.field = field
        self.problem = problem
    }

    /// "batchSize: 100 is not a whole number of shards of 64 (shardSize)".
    public var description: String { "\(field.rawValue): \(problem(naming: { $0.rawValue }))" }

    /// The problem with each `{field}` mention replaced by `name(field)`.
    public func problem(naming name: (Field) -> String) -> String {
        var text = problem
        for field in Field.allCases { text = text.replacingOccurrences(of: "{\(field.rawValue)}", with: name(field)) }
        return text
    }
}


extension NetworkConfiguration {
    /// Checks sizes and rates; throws the first problem found.
    public func validate() throws(ConfigurationError) {
        func check(_ condition: Bool, _ field: ConfigurationError.Field, _ problem: @autoclosure () -> String) throws(ConfigurationError) {
            if !condition { throw ConfigurationError(field, problem()) }
        }
        try check(!hiddenSizes.isEmpty, .hiddenSizes, "no hidden layers given, expected sizes like 1024,1024,1024")
        for size in hiddenSizes {
            try check(size > 0, .hiddenSizes, "layer size \(size) in \(hiddenSizes.map(String.init).joined(separator: ",")), expected positive sizes")
        }
        try check(dropoutInput >= 0 && dropoutInput < 1, .dropoutInput, "\(dropoutInput), expected a probability in [0, 1)")
        for rate in [dropoutHidden] + (dropoutHiddenPerLayer ?? []) {
            try check(rate >= 0 && rate < 1, .dropoutHidden, "\(rate), expected a probability in [0, 1)")
        }
        if let perLayer = dropoutHiddenPerLayer {
            try check(perLayer.count == hiddenSizes.count, .dropoutHidden, "\(perLayer.count) rates for \(hiddenSizes.count) hidden layers")
        }
    }
}

extension OptimizerConfiguration {
    /// Checks every hyperparameter; throws the first problem found.
    public func validate() throws(ConfigurationError) {
        func check(_ condition: Bool, _ field: ConfigurationError.Field, _ problem: @autoclosure () -> String) throws(ConfigurationError) {
            if !condition { throw ConfigurationError(field, problem()) }
        }
        try check(learningRate > 0 && learningRate.isFinite, .learningRate, "\(learningRate), expected a positive learning rate")
        try check((0..<1).contains(momentum.start), .momentumStart, "\(momentum.start), expected a value in [0, 1)")
        try check((0..<1).contains(momentum.end), .momentum, "\(momentum.end), expected a value in [0, 1)")
        try check(momentum.epochs >= 0, .momentumRamp, "\(momentum.epochs), expected epochs >= 0")
        try check(!nesterov || momentum.end > 0, .nesterov, "needs momentum > 0 (as in PyTorch)")
        try check(weightDecay >= 0, .weightDecay, "\(weightDecay), expected a value >= 0")
        if let c = maxNorm {
            try check(c > 0 && c.isFinite, .maxNorm, "\(c), expected a positive norm bound")
        }
        switch schedule {
        case .constant: break
        case .step(let every, let gamma):
            try check(every > 0, .scheduleStep, "\(every), expected a positive number of epochs")
            try check(gamma > 0, .scheduleGamma, "\(gamma), expected a positive factor")
        case .exponential(let gamma):
            try check(gamma > 0, .scheduleGamma, "\(gamma), expected a positive factor")
        case .cosine(let total, let floor):
            try check(total > 0, .epochs, "\(total), expected a positive number of epochs")
            try check(floor >= 0 && floor <= 1, .scheduleFloor, "\(floor), expected a fraction in [0, 1]")
        }
    }
}
