import ShardwiseKernels

/// Settings of the optimizer (momentum SGD, Adam, AdamW or RMSprop) with schedules, the
/// max-norm constraint and gradient clipping.
public struct OptimizerConfiguration: Sendable, Codable, Equatable {
    /// The update rule (default SGD).
    public var algorithm: OptimizerAlgorithm = .sgd
    /// Adam's β₁ (PyTorch's default 0.9).
    public var beta1: Double = 0.9
    /// Adam's β₂ (0.999), or RMSprop's smoothing constant α (PyTorch's default 0.99).
    public var beta2: Double = 0.999
    /// Added to the denominator, outside the square root (Adam's and RMSprop's eps, 1e-8).
    public var epsilon: Double = 1e-8
    /// Clip the summed gradient to this global L2 norm before each update, as PyTorch's
    /// `clip_grad_norm_` (factor min(1, c / (‖g‖ + 1e-6))); nil: no clipping.
    public var clipNorm: Double?
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
    /// Steps over which the learning rate ramps up linearly first (nanoGPT's: update t, from 0,
    /// at (t + 1) / (warm-up + 1) of the schedule's rate); nil: none.
    public var warmupSteps: Int?
    /// Weight decay on the layers' weight matrices alone, not on biases, normalizations or
    /// embeddings (GPT-2's and nanoGPT's parameter groups); nil or false: on every tensor.
    public var decayMatricesOnly: Bool?

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

    enum CodingKeys: String, CodingKey {
        case algorithm, beta1, beta2, epsilon, clipNorm, learningRate, schedule, momentum, nesterov, weightDecay, maxNorm, warmupSteps, decayMatricesOnly
    }

    /// Files written before other optimizers existed decode as SGD without clipping.
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        learningRate = try c.decode(Double.self, forKey: .learningRate)
        schedule = try c.decode(LearningRateSchedule.self, forKey: .schedule)
        momentum = try c.decode(MomentumRamp.self, forKey: .momentum)
        nesterov = try c.decode(Bool.self, forKey: .nesterov)
        weightDecay = try c.decode(Double.self, forKey: .weightDecay)
        maxNorm = try c.decodeIfPresent(Double.self, forKey: .maxNorm)
        algorithm = try c.decodeIfPresent(OptimizerAlgorithm.self, forKey: .algorithm) ?? .sgd
        beta1 = try c.decodeIfPresent(Double.self, forKey: .beta1) ?? 0.9
        beta2 = try c.decodeIfPresent(Double.self, forKey: .beta2) ?? 0.999
        epsilon = try c.decodeIfPresent(Double.self, forKey: .epsilon) ?? 1e-8
        clipNorm = try c.decodeIfPresent(Double.self, forKey: .clipNorm)
        warmupSteps = try c.decodeIfPresent(Int.self, forKey: .warmupSteps)
        decayMatricesOnly = try c.decodeIfPresent(Bool.self, forKey: .decayMatricesOnly)
    }

    /// The hyperparameters in force at `progress` (epochs, fractional) for update number
    /// `step` + 1 (Adam's bias corrections 1 - βᵗ, computed in Double by repeated squaring:
    /// the same on any machine).
    public func hyperparameters(progress: Double, step: Int = 0) -> UpdateHyperparameters {
        var lr = schedule.learningRate(base: learningRate, progress: progress)
        if let warmup = warmupSteps, step < warmup { lr *= Double(step + 1) / Double(warmup + 1) }
        var h = UpdateHyperparameters(
            learningRate: Float(lr), momentum: Float(momentum.momentum(progress: progress)),
            weightDecay: Float(weightDecay), nesterov: nesterov)
        h.algorithm = algorithm
        guard algorithm != .sgd else { return h }
        (h.beta2, h.epsilon) = (Float(beta2), Float(epsilon))
        (h.beta1Complement, h.beta2Complement) = (Float(1 - beta1), Float(1 - beta2))
        h.decayFactor = Float(1 - lr * weightDecay)
        let t = step + 1
        h.stepSize = Float(lr / (1 - Self.power(beta1, t)))
        h.biasCorrection2Root = Float((1 - Self.power(beta2, t)).squareRoot())
        return h
    }

    /// xⁿ by repeated squaring (n ≥ 0).
    static func power(_ x: Double, _ n: Int) -> Double {
        var result = 1.0, base = x, e = n
        while e > 0 {
            if e & 1 == 1 { result *= base }
            base *= base
            e >>= 1
        }
        return result
    }

    /// The optimizer's state buffers, each laid out as the parameters, named as PyTorch's
    /// `optimizer.state_dict()` names them: SGD `momentum_buffer`; Adam and AdamW `exp_avg`
    /// and `exp_avg_sq`; RMSprop `square_avg` and, with momentum, `momentum_buffer`.
    public var stateNames: [String] {
        switch algorithm {
        case .sgd: ["momentum_buffer"]
        case .adam, .adamw: ["exp_avg", "exp_avg_sq"]
        case .rmsprop: momentum.start > 0 || momentum.end > 0 ? ["square_avg", "momentum_buffer"] : ["square_avg"]
        }
    }
}

/// The optimizer over the flat parameter vector (SGD, Adam, AdamW or RMSprop), cut into
/// chunks that can be updated independently (by different workers at once).
///
/// A chunk is a block of whole rows of one tensor, so the max-norm constraint,
/// which needs a hidden unit's whole incoming weight row, is applied in the same
/// pass right after the row's update: one owner per chunk, no lock, no second pass.
public final class ChunkedOptimizer: @unchecked Sendable {
    /// A block of whole rows of one tensor: the unit one worker updates.
    public struct Chunk: Sendable, Equatable {
        /// Its elements in the flat parameter vector.
        public var range: Range<Int>
        /// The row length of its tensor.
        public var columns: Int
        /// True for rows of a hidden layer's weight matrix (max-norm applies).
        public var constrained: Bool
        /// Whether weight decay applies (every tensor, or with `decayMatricesOnly` the weight matrices).
        public var decays = true
    }

    /// The hyperparameters and max-norm bound.
    public let configuration: OptimizerConfiguration
    /// The state buffers (``OptimizerConfiguration/stateNames``) one after another, each laid
    /// out as the parameters: `stateCount` × the layout's count floats.
    public let state: FloatBuffer
    /// The number of state buffers.
    public let stateCount: Int
    /// Floats per state buffer: the layout's count.
    public let stateStride: Int
    /// The chunks, in parameter order; together they cover every trained parameter once (buffers are not trained).
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
        stateCount = configuration.stateNames.count
        stateStride = layout.count
        state = FloatBuffer(count: stateCount * layout.count)
        var chunks: [Chunk] = []
        for tensor in layout.tensors where !tensor.isBuffer {
            let rowsPerChunk = max(1, chunkElements / tensor.columns)
            var row = 0
            while row < tensor.rows {
                let end = min(tensor.rows, row + rowsPerChunk)
                var chunk = Chunk(
                    range: tensor.offset + row * tensor.columns..<tensor.offset + end * tensor.columns,
                    columns: tensor.columns, constrained: tensor.maxNormApplies)
                chunk.decays = configuration.decayMatricesOnly != true || tensor.isWeight
                chunks.append(chunk)
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
        hyperparameters: UpdateHyperparameters
    ) -> Bool {
        let chunk = chunks[index]
        var hyperparameters = hyperparameters
        if !chunk.decays { (hyperparameters.weightDecay, hyperparameters.decayFactor) = (0, 1) }
        let finite: Bool
        if hyperparameters.algorithm == .sgd {
            finite = SGDKernel.update(
                range: chunk.range, weights: parameters, gradients: shardGradients, shardCount: shardCount,
                velocity: state.pointer, hyper: hyperparameters, firstStep: stepsTaken == 0)
        } else {
            let second = stateCount > 1 ? state.pointer + stateStride : state.pointer
            finite = AdaptiveKernel.update(
                range: chunk.range, weights: parameters, gradients: shardGradients, shardCount: shardCount,
                first: state.pointer, second: second, hyper: hyperparameters, firstStep: stepsTaken == 0)
        }
        if chunk.constrained, let c = configuration.maxNorm {
            Elementwise.clampRowNorms(
                rows: chunk.range.count / chunk.columns, columns: chunk.columns,
                w: parameters + chunk.range.lowerBound, maxNorm: Float(c))
        }
        return finite
    }

    /// Gradient clipping's first pass over chunk `index`: the shard sum (in shard order, as the
    /// update forms it) written into the first shard's buffer; returns its sum of squares.
    /// The update then reads that buffer alone (`shardCount` 1) with the clipping factor.
    public func sumForClipping(chunk index: Int, shardGradients: UnsafePointer<UnsafeMutablePointer<Float>>, shardCount: Int) -> Double {
        GradientSum.sumInPlace(range: chunks[index].range, gradients: shardGradients, shardCount: shardCount)
    }

    /// PyTorch's `clip_grad_norm_` factor for the chunks' sums of squares (added in chunk
    /// order, so every worker and rank count finds the same norm): min(1, c / (‖g‖ + 1e-6)).
    public static func clippingFactor(chunkSquares: UnsafePointer<Double>, count: Int, maxNorm: Double) -> Float {
        var total = 0.0
        for c in 0..<count { total += chunkSquares[c] }
        let norm = Double(Float(total.squareRoot()))
        return Float(min(1, maxNorm / (norm + 1e-6)))
    }

    /// The name of the tensor chunk `index` belongs to.
    public func tensorName(ofChunk index: Int, in layout: ParameterLayout) -> String {
        let start = chunks[index].range.lowerBound
        return layout.tensors.first { $0.offset <= start && start < $0.offset + $0.count }?.name ?? "?"
    }
}
