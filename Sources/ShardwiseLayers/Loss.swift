import ShardwiseKernels

/// A shard's targets, as a loss reads them: class labels (classification) or values (regression).
public struct LossTargets {
    /// (N): class indices in `0..<width`.
    public var labels: UnsafePointer<Int32>
    /// (N, width): target values.
    public var values: UnsafePointer<Float>

    /// Whether the targets are class labels (classification) rather than values.
    public var areLabels: Bool

    /// The targets at these pointers; `areLabels` says which of the two holds them.
    public init(labels: UnsafePointer<Int32>, values: UnsafePointer<Float>, areLabels: Bool = true) {
        self.labels = labels
        self.values = values
        self.areLabels = areLabels
    }

    /// Output j's target in row r: the value, or, for labels, one-hot (1 at the label's output).
    @inline(__always)
    public func target(row r: Int, output j: Int, width: Int) -> Float {
        guard areLabels else { return values[r * width + j] }
        return Int(labels[r]) == j ? 1 : 0
    }
}

/// What training minimises, from a shard's model outputs and targets.
public protocol Loss: Sendable {
    /// Returns the sum over the `rows` rows of the per-row loss, and overwrites `gradient`
    /// (N, width) with `gradientScale` x d(sum)/d(outputs).
    ///
    /// - Parameters:
    ///   - outputs: (N, width), the model's last layer's output.
    ///   - targets: the rows' labels or target values.
    ///   - rows: N, the shard's rows.
    ///   - width: the model's output width.
    ///   - gradientScale: the factor on the gradient (1 / global batch size: the shards' gradients then add up to the batch mean's).
    ///   - gradient: (N, width), overwritten.
    func evaluate(
        outputs: UnsafePointer<Float>, targets: LossTargets, rows: Int, width: Int,
        gradientScale: Float, gradient: UnsafeMutablePointer<Float>
    ) -> Double
}

/// Softmax cross-entropy on logits, as PyTorch's `nn.CrossEntropyLoss(label_smoothing=ε)`
/// (summed here; the engine scales by 1 / global batch, which makes it the batch mean).
public struct SoftmaxCrossEntropy: Loss {
    /// ε in [0, 1]: the target is (1 - ε) one-hot + ε / classes.
    public let labelSmoothing: Double

    /// Creates the loss, with label smoothing ε (0: none).
    public init(labelSmoothing: Double = 0) {
        self.labelSmoothing = labelSmoothing
    }

    public func evaluate(
        outputs: UnsafePointer<Float>, targets: LossTargets, rows: Int, width: Int,
        gradientScale: Float, gradient: UnsafeMutablePointer<Float>
    ) -> Double {
        Elementwise.softmaxCrossEntropy(
            rows: rows, classes: width, logits: outputs, labels: targets.labels, gradientScale: gradientScale,
            labelSmoothing: Float(labelSmoothing), grad: gradient)
    }
}

/// Binary cross-entropy on logits, as PyTorch's `nn.BCEWithLogitsLoss` (the mean over a
/// batch's samples and outputs; summed over rows here, each row's mean over its `width`
/// outputs, the engine dividing by the global batch). Each output z with target t in [0, 1]
/// (a regression target, or a one-hot class label: independent per-class probabilities) costs
/// max(z, 0) - z t + log(1 + e^-|z|), stable for any z; its gradient is σ(z) - t.
public struct BinaryCrossEntropyWithLogits: Loss {
    /// Creates the loss.
    public init() {}

    public func evaluate(
        outputs: UnsafePointer<Float>, targets: LossTargets, rows: Int, width: Int,
        gradientScale: Float, gradient: UnsafeMutablePointer<Float>
    ) -> Double {
        var total = 0.0
        let factor = Double(gradientScale) / Double(width)
        for r in 0..<rows {
            var row = 0.0
            for j in 0..<width {
                let k = r * width + j
                let z = Double(outputs[k]), t = Double(targets.target(row: r, output: j, width: width))
                row += max(z, 0) - z * t + StepMath.log(1 + StepMath.exp(-abs(z)))
                gradient[k] = Float((ActivationMath.sigmoid(z) - t) * factor)
            }
            total += row / Double(width)
        }
        return total
    }
}

/// Mean squared error over each row's `width` targets, as PyTorch's `nn.MSELoss` (the mean
/// over a batch's samples and targets; summed over rows here, the engine dividing by the
/// global batch). Sums run in row order in double precision.
public struct MeanSquaredError: Loss {
    /// Creates the loss.
    public init() {}

    public func evaluate(
        outputs: UnsafePointer<Float>, targets: LossTargets, rows: Int, width: Int,
        gradientScale: Float, gradient: UnsafeMutablePointer<Float>
    ) -> Double {
        var total = 0.0
        let factor = 2 * gradientScale / Float(width)
        for r in 0..<rows {
            var row = 0.0
            for j in 0..<width {
                let k = r * width + j
                let d = outputs[k] - targets.values[k]
                row += Double(d) * Double(d)
                gradient[k] = factor * d
            }
            total += row / Double(width)
        }
        return total
    }
}
