import ShardwiseKernels

/// Settings of momentum SGD with schedules and the max-norm constraint.
public struct OptimizerConfiguration: Sendable, Codable, Equatable {
    public var learningRate: Double
    public var schedule: LearningRateSchedule
    public var momentum: MomentumRamp
    public var nesterov: Bool
    public var weightDecay: Double
    /// Max-norm bound c on each hidden unit's incoming weight vector; nil disables it.
    public var maxNorm: Double?

    public init(
        learningRate: Double, schedule: LearningRateSchedule = .constant,
        momentum: MomentumRamp = MomentumRamp(start: 0, end: 0, epochs: 0), nesterov: Bool = false,
        weightDecay: Double = 0, maxNorm: Double? = nil
    ) {
        self.learningRate = learningRate
        self.schedule = schedule
        self.momentum = momentum
        self.nesterov = nesterov
        self.weightDecay = weightDecay
        self.maxNorm = maxNorm
    }

    /// The hyperparameters in force at `progress` (epochs, fractional).
    public func hyperparameters(progress: Double) -> SGDHyperparameters {
        SGDHyperparameters(
            learningRate: Float(schedule.learningRate(base: learningRate, progress: progress)),
            momentum: Float(momentum.momentum(progress: progress)),
            weightDecay: Float(weightDecay), nesterov: nesterov)
    }
}

/// Momentum SGD over the flat parameter vector, with its velocity buffer.
///
/// `update(range:)` touches only its range, so disjoint ranges can be updated
/// by different workers at once; `applyMaxNorm` runs after all ranges are done.
public final class SGDOptimizer: @unchecked Sendable {
    public let configuration: OptimizerConfiguration
    public let velocity: FloatBuffer
    /// Number of updates applied so far (the momentum buffer is set on the first).
    public var stepsTaken: Int = 0

    public init(configuration: OptimizerConfiguration, parameterCount: Int) {
        self.configuration = configuration
        velocity = FloatBuffer(count: parameterCount)
    }

    public func update(
        range: Range<Int>, parameters: UnsafeMutablePointer<Float>, gradient: UnsafePointer<Float>,
        hyperparameters: SGDHyperparameters
    ) {
        SGDKernel.update(
            count: range.count, weights: parameters + range.lowerBound, gradient: gradient + range.lowerBound,
            velocity: velocity.pointer + range.lowerBound, hyper: hyperparameters, firstStep: stepsTaken == 0)
    }

    /// Rescales the hidden units' incoming weight vectors to norm <= c (Srivastava et al. 2014).
    public func applyMaxNorm(network: Network, parameters: UnsafeMutablePointer<Float>) {
        guard let c = configuration.maxNorm else { return }
        for tensor in network.hiddenWeightTensors {
            Elementwise.clampRowNorms(
                rows: tensor.rows, columns: tensor.columns, w: parameters + tensor.offset, maxNorm: Float(c))
        }
    }
}
