import ShardwiseKernels

/// What training minimises, from a shard's model outputs and labels.
public protocol Loss: Sendable {
    /// Returns the sum over the `rows` rows of the per-row loss, and overwrites `gradient`
    /// (N, width) with `gradientScale` x d(sum)/d(outputs).
    ///
    /// - Parameters:
    ///   - outputs: (N, width), the model's last layer's output.
    ///   - labels: (N), class indices in `0..<width`.
    ///   - rows: N, the shard's rows.
    ///   - width: the model's output width.
    ///   - gradientScale: the factor on the gradient (1 / global batch size: the shards' gradients then add up to the batch mean's).
    ///   - gradient: (N, width), overwritten.
    func evaluate(
        outputs: UnsafePointer<Float>, labels: UnsafePointer<Int32>, rows: Int, width: Int,
        gradientScale: Float, gradient: UnsafeMutablePointer<Float>
    ) -> Double
}

/// Softmax cross-entropy on logits, as PyTorch's `nn.CrossEntropyLoss` (summed here;
/// the engine scales by 1 / global batch, which makes it the batch mean).
public struct SoftmaxCrossEntropy: Loss {
    /// Creates the loss.
    public init() {}

    public func evaluate(
        outputs: UnsafePointer<Float>, labels: UnsafePointer<Int32>, rows: Int, width: Int,
        gradientScale: Float, gradient: UnsafeMutablePointer<Float>
    ) -> Double {
        Elementwise.softmaxCrossEntropy(
            rows: rows, classes: width, logits: outputs, labels: labels, gradientScale: gradientScale, grad: gradient)
    }
}
