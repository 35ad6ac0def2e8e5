import ShardwiseKernels

/// A shard's targets, as a loss reads them: class labels (classification) or values (regression).
public struct LossTargets {
    /// (N): class indices in `0..<width`.
    public var labels: UnsafePointer<Int32>
    /// (N, width): target values.
    public var values: UnsafePointer<Float>

    /// The targets at these pointers.
    public init(labels: UnsafePointer<Int32>, values: UnsafePointer<Float>) {
        self.labels = labels
        self.values = values
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

/// Softmax cross-entropy on logits, as PyTorch's `nn.CrossEntropyLoss` (summed here;
/// the engine scales by 1 / global batch, which makes it the batch mean).
public struct SoftmaxCrossEntropy: Loss {
    /// Creates the loss.
    public init() {}

    public func evaluate(
        outputs: UnsafePointer<Float>, targets: LossTargets, rows: Int, width: Int,
        gradientScale: Float, gradient: UnsafeMutablePointer<Float>
    ) -> Double {
        Elementwise.softmaxCrossEntropy(
            rows: rows, classes: width, logits: outputs, labels: targets.labels, gradientScale: gradientScale, grad: gradient)
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
