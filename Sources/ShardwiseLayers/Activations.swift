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

/// `y = tanh x`, elementwise, as PyTorch's `nn.Tanh`.
public struct Tanh: Layer {
    public init() {}
    public func outputWidth(inputWidth: Int) throws(ModelError) -> Int { inputWidth }
    public func forward(_ pass: ForwardPass) { ActivationMath.tanh(count: pass.rows * pass.inputWidth, x: pass.input, y: pass.output) }
    public func backward(_ pass: BackwardPass) {
        guard let dx = pass.inputGradient else { return }
        ActivationMath.tanhBackward(count: pass.rows * pass.inputWidth, y: pass.output, dy: pass.outputGradient, dx: dx)
    }
}

/// `y = 1 / (1 + e^-x)`, elementwise, as PyTorch's `nn.Sigmoid`.
public struct Sigmoid: Layer {
    public init() {}
    public func outputWidth(inputWidth: Int) throws(ModelError) -> Int { inputWidth }
    public func forward(_ pass: ForwardPass) { ActivationMath.sigmoid(count: pass.rows * pass.inputWidth, x: pass.input, y: pass.output) }
    public func backward(_ pass: BackwardPass) {
        guard let dx = pass.inputGradient else { return }
        ActivationMath.sigmoidBackward(count: pass.rows * pass.inputWidth, y: pass.output, dy: pass.outputGradient, dx: dx)
    }
}

/// `y = x` for x > 0, `slope · x` otherwise, as PyTorch's `nn.LeakyReLU(negative_slope)` (default 0.01).
public struct LeakyReLU: Layer {
    public let slope: Float
    public init(_ slope: Float = 0.01) { self.slope = slope }
    public func outputWidth(inputWidth: Int) throws(ModelError) -> Int {
        guard slope.isFinite else { throw ModelError("LeakyReLU(\(slope)): expected a finite slope") }
        return inputWidth
    }
    public func forward(_ pass: ForwardPass) {
        ActivationMath.leakyReLU(count: pass.rows * pass.inputWidth, slope: slope, x: pass.input, y: pass.output)
    }
    public func backward(_ pass: BackwardPass) {
        guard let dx = pass.inputGradient else { return }
        ActivationMath.leakyReLUBackward(count: pass.rows * pass.inputWidth, slope: slope, x: pass.input, dy: pass.outputGradient, dx: dx)
    }
}

/// The Gaussian error linear unit, as PyTorch's `nn.GELU(approximate=...)`: `x Φ(x)` exactly
/// (`.none`, Φ from erf) or with the tanh approximation (`.tanh`).
public struct GELU: Layer {
    /// PyTorch's `approximate` argument.
    public enum Approximation: String, Sendable, Codable { case none, tanh }
    public let approximate: Approximation
    public init(approximate: Approximation = .none) { self.approximate = approximate }
    public func outputWidth(inputWidth: Int) throws(ModelError) -> Int { inputWidth }
    public func forward(_ pass: ForwardPass) {
        ActivationMath.gelu(count: pass.rows * pass.inputWidth, approximate: approximate == .tanh, x: pass.input, y: pass.output)
    }
    public func backward(_ pass: BackwardPass) {
        guard let dx = pass.inputGradient else { return }
        ActivationMath.geluBackward(count: pass.rows * pass.inputWidth, approximate: approximate == .tanh, x: pass.input, dy: pass.outputGradient, dx: dx)
    }
}
