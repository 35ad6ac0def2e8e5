import ShardwiseKernels

/// Settings of momentum SGD with schedules and the max-norm constraint.
public struct OptimizerConfiguration: Sendable, Codable, Equatable {
    /// The base learning rate, before the schedule.
    public var learningRate: Double
    /// How the learning rate changes with progress.
    public var schedule: LearningRateSchedule
    /// The momentum coefficient, constant or ramped.
    public var momentum: MomentumRamp
    /// Nesterov momentum, as PyTorch's `nesterov=True`.
    public var nesterov: Bool
    /// L2 weight decay added to the gradient, as PyTorch's SGD.
    public var weightDecay: Double
    /// Max-norm bound c on each hidden unit's incoming weight vector; nil disables it.
    public var maxNorm: Double?

    /// Momentum SGD settings; the defaults are PyTorch's (no momentum, decay or max-norm).
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

/// Momentum SGD over the flat parameter vector, cut into chunks that can be
/// updated independently (by different workers at once).
///
/// A chunk is a block of whole rows of one tensor, so the max-norm constraint,
/// which needs a hidden unit's whole incoming weight row, is applied in the same
/// pass right after the row's update: one owner per chunk, no lock, no second pass.
public final class SGDOptimizer: @unchecked Sendable {
    /// A block of whole rows of one tensor: the unit one worker updates.
    public struct Chunk: Sendable, Equatable {
        /// Its elements in the flat parameter vector.
        public var range: Range<Int>
        /// The row length of its tensor.
        public var columns: Int
        /// True for rows of a hidden layer's weight matrix (max-norm applies).
        public var constrained: Bool
    }

    /// The hyperparameters and max-norm bound.
    public let configuration: OptimizerConfiguration
    /// The momentum buffer, laid out as the parameters.
    public let velocity: FloatBuffer
    /// The chunks, in parameter order; together they cover every parameter once.
    public let chunks: [Chunk]
    /// Number of updates applied so far (the momentum buffer is set on the first).
    public var stepsTaken: Int = 0

    /// - Parameters:
    ///   - configuration: the hyperparameters and max-norm bound.
    ///   - layout: the parameters' layout; chunks never cross a tensor, and max-norm applies to the tensors that ask for it.
    ///   - chunkElements: target floats per chunk. 16K floats (64 KiB, 16 rows of
    ///   a 1024-wide layer) gives ~180 chunks on the reference network: enough to balance
    ///   many workers, few enough that claiming them costs nothing.
    public init(configuration: OptimizerConfiguration, layout: ParameterLayout, chunkElements: Int = 16_384) {
        self.configuration = configuration
        velocity = FloatBuffer(count: layout.count)
        var chunks: [Chunk] = []
        for tensor in layout.tensors {
            let rowsPerChunk = max(1, chunkElements / tensor.columns)
            var row = 0
            while row < tensor.rows {
                let end = min(tensor.rows, row + rowsPerChunk)
                chunks.append(Chunk(
                    range: tensor.offset + row * tensor.columns..<tensor.offset + end * tensor.columns,
                    columns: tensor.columns, constrained: tensor.maxNormApplies))
                row = end
            }
        }
        self.chunks = chunks
    }

    /// Sums the shard gradients over chunk `index` in shard order, updates the
    /// chunk's parameters, and applies max-norm to its rows where it applies.
    /// Returns false when the summed gradient has a NaN or infinite element.
    @discardableResult
    public func update(
        chunk index: Int, parameters: UnsafeMutablePointer<Float>,
        shardGradients: UnsafePointer<UnsafeMutablePointer<Float>>, shardCount: Int,
        hyperparameters: SGDHyperparameters
    ) -> Bool {
        let chunk = chunks[index]
        let finite = SGDKernel.update(
            range: chunk.range, weights: parameters, gradients: shardGradients, shardCount: shardCount,
            velocity: velocity.pointer, hyper: hyperparameters, firstStep: stepsTaken == 0)
        if chunk.constrained, let c = configuration.maxNorm {
            Elementwise.clampRowNorms(
                rows: chunk.range.count / chunk.columns, columns: chunk.columns,
                w: parameters + chunk.range.lowerBound, maxNorm: Float(c))
        }
        return finite
    }

    /// The name of the tensor chunk `index` belongs to.
    public func tensorName(ofChunk index: Int, in layout: ParameterLayout) -> String {
        let start = chunks[index].range.lowerBound
        return layout.tensors.first { $0.offset <= start && start < $0.offset + $0.count }?.name ?? "?"
    }
}
