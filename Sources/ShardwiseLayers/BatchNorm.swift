import ShardwiseKernels

/// A layer whose training pass needs sums over the whole global batch, not one shard's rows:
/// BatchNorm. The engine calls it in two halves around each sum: every shard writes its own
/// sums (``forwardSums(_:into:)``, ``backwardSums(_:forwardSums:batchRows:into:)``); the
/// engine adds them in shard order (and across MPI ranks in rank order) and hands every shard
/// the same total. So the statistics, the running averages and the trained weights do not
/// depend on how the batch is cut into shards or spread over workers and ranks.
///
/// With ``sharesStatistics`` false (ghost statistics) each shard uses its own sums and the
/// shards never meet; the engine still gathers every shard's sums for ``updateBuffers(_:shardSums:shards:)``.
///
/// The plain ``Layer/forward(_:)`` and ``Layer/backward(_:)`` are the evaluation mode: the
/// running statistics, as `torch.nn.BatchNorm2d` in `eval()`.
public protocol BatchStatisticsLayer: Layer {
    /// Whether training shares statistics across the global batch (the shards meet twice a step).
    var sharesStatistics: Bool { get }
    /// Doubles of sums one shard contributes, in the forward and in the backward pass.
    func statisticsCount(inputShape: [Int]) -> Int
    /// Training, forward: this shard's sums over its rows (overwrite every element).
    func forwardSums(_ pass: ForwardPass, into sums: UnsafeMutablePointer<Double>)
    /// Training, forward: the output from the sums over `batchRows` rows (the batch's, or the shard's own).
    func forward(_ pass: ForwardPass, batchSums: UnsafePointer<Double>, batchRows: Int)
    /// Training, backward: this shard's sums for the input gradient (overwrite every element).
    func backwardSums(_ pass: BackwardPass, forwardSums: UnsafePointer<Double>, batchRows: Int, into sums: UnsafeMutablePointer<Double>)
    /// Training, backward: parameter gradients (this shard's part, from `shardSums`, its own
    /// ``backwardSums(_:forwardSums:batchRows:into:)``) and the input gradient from the batch's sums.
    func backward(
        _ pass: BackwardPass, forwardSums: UnsafePointer<Double>, backwardSums: UnsafePointer<Double>, shardSums: UnsafePointer<Double>, batchRows: Int)
    /// After a step: the buffers (running statistics), in `parameters`, from every shard's forward sums
    /// (`shards` rows of ``statisticsCount(inputShape:)`` Doubles, in shard order) of `shardRows` rows each.
    func updateBuffers(_ parameters: ParameterGradients, inputShape: [Int], shardSums: UnsafePointer<Double>, shards: Int, shardRows: Int)
}

/// `torch.nn.BatchNorm1d` (flat rows: one statistic per feature) and `BatchNorm2d` ((C, H, W)
/// samples: one per channel over the rows and positions), PyTorch's parameters and buffers:
/// `weight`, `bias`, `running_mean`, `running_var`, `num_batches_tracked`.
///
/// Training normalizes with the mean and biased variance of the whole global batch — as
/// `SyncBatchNorm` does across devices — formed from the shards' sums in Double, added in shard
/// order: bit-identical weights for any worker or rank count. `statistics: .shard` normalizes each
/// shard by its own rows instead ("ghost" batch norm: no meeting, statistics of `shardSize` rows).
/// The running averages follow PyTorch: `(1 - momentum) · running + momentum · batch`, the
/// variance unbiased; with shard statistics, the mean over shards of each shard's mean and unbiased variance.
public struct BatchNorm: BatchStatisticsLayer {
    /// Where training's statistics come from.
    public enum Statistics: String, Sendable, Codable {
        /// The whole global batch (the default).
        case batch
        /// Each shard's own rows ("ghost" batch norm).
        case shard
    }

    /// ε added to the variance (PyTorch's default 1e-5).
    public let epsilon: Double
    /// The running averages' momentum (PyTorch's default 0.1).
    public let momentum: Double
    /// Where training's statistics come from.
    public let statistics: Statistics

    /// A batch norm with `epsilon`, `momentum` and `statistics`.
    public init(epsilon: Double = 1e-5, momentum: Double = 0.1, statistics: Statistics = .batch) {
        self.epsilon = epsilon
        self.momentum = momentum
        self.statistics = statistics
    }

    public var sharesStatistics: Bool { statistics == .batch }

    public func outputWidth(inputWidth: Int) throws(ModelError) -> Int { inputWidth }

    public func outputShape(inputShape: [Int]) throws(ModelError) -> [Int] {
        guard epsilon.isFinite, epsilon > 0 else { throw ModelError("BatchNorm: epsilon \(epsilon), expected a positive number") }
        guard (0...1).contains(momentum) else { throw ModelError("BatchNorm: momentum \(momentum), expected a value in [0, 1]") }
        guard inputShape.count == 1 || inputShape.count == 3 else {
            throw ModelError("BatchNorm takes flat rows (BatchNorm1d) or (C, H, W) samples (BatchNorm2d), got \(Network.describe(inputShape))")
        }
        return inputShape
    }

    public func parameters(inputShape: [Int]) -> [ParameterSpec] {
        let c = inputShape[0]
        return [
            ParameterSpec(name: "weight", shape: [c], initializer: .constant(1)),
            ParameterSpec(name: "bias", shape: [c], initializer: .zeros, role: .bias),
            ParameterSpec(name: "running_mean", shape: [c], initializer: .zeros, role: .buffer),
            ParameterSpec(name: "running_var", shape: [c], initializer: .constant(1), role: .buffer),
            ParameterSpec(name: "num_batches_tracked", shape: [1], initializer: .zeros, role: .buffer),
        ]
    }

    /// (C, positions per channel) of a sample.
    func geometry(_ inputShape: [Int]) -> (channels: Int, positions: Int) {
        (inputShape[0], inputShape.reduce(1, *) / inputShape[0])
    }

    /// Two sums per channel: of x and of x² (forward), of dy and of dy · x̂ (backward).
    public func statisticsCount(inputShape: [Int]) -> Int { 2 * inputShape[0] }

    /// The mean and 1 / √(biased variance + ε) of channel c from sums over `count` values.
    @inline(__always) func moments(_ sums: UnsafePointer<Double>, _ c: Int, channels: Int, count: Double) -> (mean: Double, rstd: Double) {
        let mean = sums[c] / count
        let variance = max(sums[channels + c] / count - mean * mean, 0)
        return (mean, 1 / (variance + epsilon).squareRoot())
    }

    public func forwardSums(_ pass: ForwardPass, into sums: UnsafeMutablePointer<Double>) {
        let (channels, positions) = geometry(pass.inputShape)
        for c in 0..<channels {
            (sums[c], sums[channels + c]) = ChannelKernels.sums(rows: pass.rows, count: positions, stride: pass.inputWidth, pass.input + c * positions)
        }
    }

    public func forward(_ pass: ForwardPass, batchSums: UnsafePointer<Double>, batchRows: Int) {
        let (channels, positions) = geometry(pass.inputShape)
        let gamma = pass.parameters[0], beta = pass.parameters[1]
        for c in 0..<channels {
            let (mean, rstd) = moments(batchSums, c, channels: channels, count: Double(batchRows * positions))
            let scale = rstd * Double(gamma[c])
            // y = x · a + b, a = γ · rstd, b = β - μ · a (each rounded once from Double).
            ChannelKernels.affine(
                rows: pass.rows, count: positions, stride: pass.inputWidth, x: pass.input + c * positions, out: pass.output + c * positions,
                a: Float(scale), b: Float(Double(beta[c]) - mean * scale))
        }
    }

    /// This shard's Σ dy and Σ dy · x̂ of channel c (x̂ = (x - μ) rstd, so Σ dy · x̂ = rstd (Σ dy · x - μ Σ dy)).
    @inline(__always) func gradientSums(_ pass: BackwardPass, _ c: Int, positions: Int, mean: Double, rstd: Double) -> (Double, Double) {
        let (s, q) = ChannelKernels.sums(
            rows: pass.rows, count: positions, stride: pass.inputWidth, pass.outputGradient + c * positions, pass.input + c * positions)
        return (s, rstd * (q - mean * s))
    }

    public func backwardSums(_ pass: BackwardPass, forwardSums: UnsafePointer<Double>, batchRows: Int, into sums: UnsafeMutablePointer<Double>) {
        let (channels, positions) = geometry(pass.inputShape)
        for c in 0..<channels {
            let (mean, rstd) = moments(forwardSums, c, channels: channels, count: Double(batchRows * positions))
            (sums[c], sums[channels + c]) = gradientSums(pass, c, positions: positions, mean: mean, rstd: rstd)
        }
    }

    public func backward(
        _ pass: BackwardPass, forwardSums: UnsafePointer<Double>, backwardSums: UnsafePointer<Double>, shardSums: UnsafePointer<Double>, batchRows: Int
    ) {
        let (channels, positions) = geometry(pass.inputShape)
        let gamma = pass.parameters[0], count = Double(batchRows * positions)
        for c in 0..<channels {
            let (mean, rstd) = moments(forwardSums, c, channels: channels, count: count)
            // This shard's parameter gradients (the reduction adds the shards'): Σ dy · x̂ and Σ dy over its own rows.
            pass.parameterGradients[0][c] = Float(shardSums[channels + c])
            pass.parameterGradients[1][c] = Float(shardSums[c])
            guard let dx = pass.inputGradient else { continue }
            // dx = γ rstd (dy - Σdy / M - x̂ Σ(dy x̂) / M) over the batch's M values = dy · a + x · b + c.
            let meanD = backwardSums[c] / count, meanDX = backwardSums[channels + c] / count, a = Double(gamma[c]) * rstd
            let b = -a * rstd * meanDX
            ChannelKernels.affine2(
                rows: pass.rows, count: positions, stride: pass.inputWidth, dy: pass.outputGradient + c * positions, x: pass.input + c * positions,
                out: dx + c * positions, a: Float(a), b: Float(b), c: Float(-a * meanD - b * mean))
        }
    }

    public func updateBuffers(_ parameters: ParameterGradients, inputShape: [Int], shardSums: UnsafePointer<Double>, shards: Int, shardRows: Int) {
        let (channels, positions) = geometry(inputShape)
        let runningMean = parameters[2], runningVariance = parameters[3], tracked = parameters[4]
        let stride = 2 * channels
        for c in 0..<channels {
            var mean = 0.0, variance = 0.0
            if statistics == .batch {
                var s = 0.0, q = 0.0
                for k in 0..<shards { s += shardSums[k * stride + c]; q += shardSums[k * stride + channels + c] }
                (mean, variance) = Self.unbiased(s, q, count: Double(shards * shardRows * positions))
            } else {
                for k in 0..<shards {
                    let (m, v) = Self.unbiased(shardSums[k * stride + c], shardSums[k * stride + channels + c], count: Double(shardRows * positions))
                    mean += m
                    variance += v
                }
                (mean, variance) = (mean / Double(shards), variance / Double(shards))
            }
            runningMean[c] = Float((1 - momentum) * Double(runningMean[c]) + momentum * mean)
            runningVariance[c] = Float((1 - momentum) * Double(runningVariance[c]) + momentum * variance)
        }
        tracked[0] += 1
    }

    /// The mean and the unbiased variance from the sum and the sum of squares of `count` values.
    static func unbiased(_ s: Double, _ q: Double, count: Double) -> (Double, Double) {
        let mean = s / count
        return (mean, max(q - count * mean * mean, 0) / max(count - 1, 1))
    }

    // MARK: - Evaluation: the running statistics

    public func forward(_ pass: ForwardPass) {
        let (channels, positions) = geometry(pass.inputShape)
        let gamma = pass.parameters[0], beta = pass.parameters[1], mean = pass.parameters[2], variance = pass.parameters[3]
        for c in 0..<channels {
            let scale = Double(gamma[c]) / (Double(variance[c]) + epsilon).squareRoot()
            ChannelKernels.affine(
                rows: pass.rows, count: positions, stride: pass.inputWidth, x: pass.input + c * positions, out: pass.output + c * positions,
                a: Float(scale), b: Float(Double(beta[c]) - Double(mean[c]) * scale))
        }
    }

    /// The evaluation mode's gradients (the statistics held fixed: an affine map per channel).
    public func backward(_ pass: BackwardPass) {
        let (channels, positions) = geometry(pass.inputShape), width = pass.inputWidth
        let gamma = pass.parameters[0], mean = pass.parameters[2], variance = pass.parameters[3]
        for c in 0..<channels {
            let rstd = 1 / (Double(variance[c]) + epsilon).squareRoot(), m = Double(mean[c])
            var dGamma = 0.0, dBeta = 0.0
            for r in 0..<pass.rows {
                let x = pass.input + r * width + c * positions, g = pass.outputGradient + r * width + c * positions
                for i in 0..<positions {
                    dBeta += Double(g[i])
                    dGamma += Double(g[i]) * (Double(x[i]) - m) * rstd
                }
                if let dx = pass.inputGradient {
                    let out = dx + r * width + c * positions, scale = Double(gamma[c]) * rstd
                    for i in 0..<positions { out[i] = Float(Double(g[i]) * scale) }
                }
            }
            pass.parameterGradients[0][c] = Float(dGamma)
            pass.parameterGradients[1][c] = Float(dBeta)
        }
    }
}
