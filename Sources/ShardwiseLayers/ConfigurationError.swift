import Foundation
import ShardwiseData

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
        /// How often the test and validation sets are evaluated (epochs); an epoch's length in steps.
        case evaluateEvery, stepsPerEpoch
        /// The training data (its shape against the model's).
        case data
        /// The ranks of an MPI job.
        case ranks
        /// The memory a configuration needs, against what the process may use.
        case memory
        /// The learning-rate schedule's kind, the dropout noise, how MPI ranks combine
        /// gradients, and the checkpoint a run resumes from (settings ranks must agree on).
        case schedule, dropoutKind, fastAllreduce, overlap, exchange, resume
        /// The matrix kernels (BLAS or portable), which set the weights' bits.
        case kernels
        /// The optimizer, its β₁, β₂ (RMSprop's α) and ε, and gradient clipping's norm bound.
        case optimizer, beta1, beta2, epsilon, clipNorm, warmupSteps
        /// A model description (its file, layers and loss).
        case model
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
        try check((1...Network.maximumWidth).contains(inputSize), .data, "inputs of \(inputSize) values, expected 1 to \(Network.maximumWidth)")
        try check((1...Network.maximumWidth).contains(outputSize), .data, "\(outputSize) outputs, expected 1 to \(Network.maximumWidth) (classes, or targets of a regression)")
        if layers != nil {
            // A described model: it must parse, fit its input shape and give the data's outputs.
            try check(inputShape.flatMap { CheckedSize.product($0) } == inputSize, .model, "input shape \(inputShape.map(Network.describe) ?? "none") does not hold the \(inputSize) values of a row")
            let network: Network
            do { network = try Network(self) } catch { throw ConfigurationError(.model, error.description) }
            try check(network.widths.last == outputSize, .model, "the last layer gives \(network.widths.last!) outputs, the data has \(outputSize) (classes or targets)")
            return
        }
        try check(!hiddenSizes.isEmpty, .hiddenSizes, "no hidden layers given, expected sizes like 1024,1024,1024")
        for size in hiddenSizes {
            try check(size > 0 && size <= Network.maximumWidth, .hiddenSizes, "layer size \(size) in \(hiddenSizes.map(String.init).joined(separator: ",")), expected sizes from 1 to \(Network.maximumWidth)")
        }
        try check(isProbability(dropoutInput), .dropoutInput, "\(dropoutInput), expected a probability in [0, 1) (below 1 as a Float)")
        for rate in [dropoutHidden] + (dropoutHiddenPerLayer ?? []) {
            try check(isProbability(rate), .dropoutHidden, "\(rate), expected a probability in [0, 1) (below 1 as a Float)")
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
        // Checked as the kernels see them: in Float, where 1e-46 is 0 and 1e39 is infinite.
        try check(isPositiveFloat(learningRate), .learningRate, "\(learningRate), expected a positive learning rate that is finite and not 0 as a Float")
        try check(isProbability(momentum.start), .momentumStart, "\(momentum.start), expected a value in [0, 1) (below 1 as a Float)")
        try check(isProbability(momentum.end), .momentum, "\(momentum.end), expected a value in [0, 1) (below 1 as a Float)")
        try check(momentum.epochs >= 0 && momentum.epochs.isFinite, .momentumRamp, "\(momentum.epochs), expected a finite number of epochs >= 0")
        try check(!nesterov || algorithm == .sgd, .nesterov, "applies to SGD only, the optimizer is \(algorithm.rawValue)")
        try check(!nesterov || momentum.end > 0, .nesterov, "needs momentum > 0 (as in PyTorch)")
        try check(weightDecay >= 0 && Float(weightDecay).isFinite, .weightDecay, "\(weightDecay), expected a value >= 0, finite as a Float")
        if let c = maxNorm {
            // The kernel compares squared norms: the bound's square must be a normal Float too.
            try check(isPositiveFloat(c) && Float(c * c).isNormal && Float(c * c).isFinite, .maxNorm, "\(c), expected a positive norm bound between 1e-19 and 1e19")
        }
        try check(isProbability(beta1), .beta1, "\(beta1), expected a value in [0, 1) (below 1 as a Float)")
        try check(isProbability(beta2), .beta2, "\(beta2), expected a value in [0, 1) (below 1 as a Float)")
        try check(isPositiveFloat(epsilon), .epsilon, "\(epsilon), expected a positive value that is finite and not 0 as a Float")
        if let w = warmupSteps {
            try check(w >= 0 && w <= Int(UInt32.max), .warmupSteps, "\(w), expected a number of steps >= 0")
        }
        if let c = clipNorm {
            try check(isPositiveFloat(c), .clipNorm, "\(c), expected a positive norm bound, finite and not 0 as a Float")
        }
        switch schedule {
        case .constant: break
        case .step(let every, let gamma):
            try check(every > 0, .scheduleStep, "\(every), expected a positive number of epochs")
            try check(isPositiveFloat(gamma), .scheduleGamma, "\(gamma), expected a positive, finite factor")
        case .exponential(let gamma):
            try check(isPositiveFloat(gamma), .scheduleGamma, "\(gamma), expected a positive, finite factor")
        case .cosine(let total, let floor):
            try check(total > 0, .epochs, "\(total), expected a positive number of epochs")
            try check(floor >= 0 && floor <= 1 && !floor.isNaN, .scheduleFloor, "\(floor), expected a fraction in [0, 1]")
        }
    }
}

/// A rate in [0, 1) that stays below 1 in Float (0.999999999 rounds to 1 and would divide by zero).
func isProbability(_ p: Double) -> Bool { p >= 0 && p < 1 && Float(p) < 1 }

/// A positive value that is neither 0 nor infinite as a Float.
func isPositiveFloat(_ x: Double) -> Bool { x > 0 && Float(x).isNormal && Float(x).isFinite }
