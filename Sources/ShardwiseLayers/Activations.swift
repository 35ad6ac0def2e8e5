import ShardwiseKernels

/// `y = max(x, 0)`, elementwise; any width.
public struct ReLU: Layer {
    /// Creates the layer.
    public init() {}

    public func outputWidth(inputWidth: Int) throws(ModelError) -> Int { inputWidth }

    public func forward(_ pass: ForwardPass) {
        Elementwise.relu(count: pass.rows * pass.inputWidth, x: pass.input, y: pass.output)
    }

    /// dx = dy where y > 0, else 0.
    public func backward(_ pass: BackwardPass) {
        guard let dx = pass.inputGradient else { return }
        Elementwise.reluBackward(count: pass.rows * pass.inputWidth, y: pass.output, dy: pass.outputGradient, dx: dx)
    }
}
