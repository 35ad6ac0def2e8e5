import Shardwise

/// Swish (SiLU), `y = x σ(x)` with σ the logistic function, elementwise (PyTorch's `nn.SiLU`):
/// a layer Shardwise does not ship, written outside it.
public struct Swish: Layer {
    public init() {}

    public func outputWidth(inputWidth: Int) throws(ModelError) -> Int { inputWidth }

    public func forward(_ pass: ForwardPass) {
        for i in 0..<pass.rows * pass.inputWidth {
            let x = pass.input[i]
            pass.output[i] = x / (1 + Float(StepMath.exp(Double(-x))))
        }
    }

    /// dy/dx = σ(x) + x σ(x)(1 - σ(x)).
    public func backward(_ pass: BackwardPass) {
        guard let dx = pass.inputGradient else { return }
        for i in 0..<pass.rows * pass.inputWidth {
            let x = pass.input[i], s = 1 / (1 + Float(StepMath.exp(Double(-x))))
            dx[i] = pass.outputGradient[i] * (s + x * s * (1 - s))
        }
    }
}

/// Adds uniform noise in [-amplitude, amplitude) to every unit in training; the identity in
/// evaluation. A stochastic layer of the user's own: it draws from the stream the engine
/// gives it, addressed by each row's position in the global batch, so the noise, and the
/// trained weights, are the same for any number of workers.
public struct UniformNoise: Layer {
    public var amplitude: Float

    public init(amplitude: Float) { self.amplitude = amplitude }

    public func outputWidth(inputWidth: Int) throws(ModelError) -> Int { inputWidth }

    public func forward(_ pass: ForwardPass) {
        let width = pass.inputWidth
        guard let random = pass.random else {
            pass.output.update(from: pass.input, count: pass.rows * width)
            return
        }
        let stream = random.address(.user(1))
        for r in 0..<pass.rows {
            let sample = random.firstPosition + r
            for u in 0..<width {
                pass.output[r * width + u] = pass.input[r * width + u] + amplitude * (2 * stream.uniform(sample * width + u) - 1)
            }
        }
    }

    /// The noise is added, so dx = dy.
    public func backward(_ pass: BackwardPass) {
        pass.inputGradient?.update(from: pass.outputGradient, count: pass.rows * pass.inputWidth)
    }
}

// Named in the layer language: after `ModelDescription.register(Swish.self)` and
// `register(UniformNoise.self)`, model files and descriptions write `swish` and `uniform_noise(0.1)`.

extension Swish: NamedLayer {
    public static var languageName: String { "swish" }
    public init(arguments: inout LayerArguments, inputShape: [Int]) throws(ModelError) { self.init() }

    /// ONNX: x · Sigmoid(x).
    public func lowerToONNX<G: ONNXGraphBuilder>(_ graph: inout G, input x: String, inputShape: [Int], parameters: [String], name: String) -> String? {
        graph.node("Mul", [x, graph.node("Sigmoid", [x], "\(name).gate")], "\(name).output")
    }
}

extension UniformNoise: NamedLayer {
    public static var languageName: String { "uniform_noise" }
    /// `uniform_noise(amplitude)`.
    public init(arguments: inout LayerArguments, inputShape: [Int]) throws(ModelError) {
        let amplitude = try arguments.double(0, "amplitude")
        guard amplitude >= 0 else { throw ModelError("amplitude \(amplitude), expected at least 0") }
        self.init(amplitude: Float(amplitude))
    }
}
