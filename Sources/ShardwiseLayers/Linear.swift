import ShardwiseKernels

/// `y = x Wᵀ + b`, as PyTorch's `nn.Linear`: W (O, I), b (O), named `weight` and `bias`.
///
/// With `dropConnect` p > 0, training uses `W ∘ M / (1-p)` with M a Bernoulli(1-p) mask per
/// weight (Wan et al. 2013), one mask per step for all of the step's samples, drawn from the
/// stream (seed, dropConnect, step, this layer's index among the model's Linear layers).
/// Weights start He-uniform, biases at zero. With `tied`, the weight is the token table of the
/// nearest ``TokenEmbedding`` before it (a GPT's output head, `lm_head.weight = wte.weight`):
/// O is then the vocabulary and I the embedding width, and the layer has a bias alone.
public struct Linear: Layer {
    /// I: the width of the rows it takes.
    public let inputs: Int
    /// O: the width of the rows it gives.
    public let outputs: Int
    /// The probability of zeroing each weight in training (0: plain `Linear`).
    public let dropConnect: Double
    /// Whether the weight is the token table of the nearest earlier ``TokenEmbedding``.
    public let tied: Bool

    /// A layer from `inputs` to `outputs` units, with DropConnect rate `dropConnect`; with
    /// `tied`, its weight the token table of the nearest earlier ``TokenEmbedding``.
    public init(_ inputs: Int, _ outputs: Int, dropConnect: Double = 0, tied: Bool = false) {
        self.inputs = inputs
        self.outputs = outputs
        self.dropConnect = dropConnect
        self.tied = tied
    }

    public func outputWidth(inputWidth: Int) throws(ModelError) -> Int {
        guard inputs > 0, outputs > 0 else { throw ModelError("Linear(\(inputs), \(outputs)): sizes must be positive") }
        guard (0..<1).contains(dropConnect) else { throw ModelError("Linear: dropConnect \(dropConnect), expected a probability in [0, 1)") }
        guard !tied || dropConnect == 0 else { throw ModelError("Linear: a tied weight takes no DropConnect (it would mask the embedding's table too)") }
        guard inputWidth == inputs else {
            throw ModelError("Linear(\(inputs), \(outputs)) receives rows of \(inputWidth) values, expected \(inputs)")
        }
        return outputs
    }

    /// Flat rows, or sequences of T tokens (T, I), each token mapped alone to (T, O) as PyTorch's
    /// `nn.Linear` does on its last dimension. Images are refused: on (C, H, W) samples PyTorch's
    /// layer would act on the rows of pixels, rarely what was meant.
    public func outputShape(inputShape: [Int]) throws(ModelError) -> [Int] {
        switch inputShape.count {
        case 1: return [try outputWidth(inputWidth: inputShape[0])]
        case 2:
            guard inputShape[1] == inputs else {
                throw ModelError("Linear(\(inputs), \(outputs)) receives tokens of \(inputShape[1]) values (samples of shape \(Network.describe(inputShape))), expected \(inputs)")
            }
            _ = try outputWidth(inputWidth: inputs)
            try ModelSize.product("Linear(\(inputs), \(outputs))'s output", [inputShape[0], outputs])
            return [inputShape[0], outputs]
        default:
            throw ModelError("Linear(\(inputs), \(outputs)) takes flat rows or (tokens, values) sequences, got samples of shape \(Network.describe(inputShape)); add Flatten() before it")
        }
    }

    /// Rows of I values a sample holds: 1, or its T tokens.
    @inline(__always)
    func tokens(_ inputWidth: Int) -> Int { inputWidth / inputs }

    public func parameters(inputWidth: Int) -> [ParameterSpec] {
        [
            ParameterSpec(
                name: "weight", shape: [outputs, inputs], initializer: .heUniform(fanIn: inputs), role: .weight,
                tiedTo: tied ? ParameterTie(TokenEmbedding.self, tensor: "token.weight") : nil),
            ParameterSpec(name: "bias", shape: [outputs], initializer: .zeros, role: .bias),
        ]
    }

    /// I·O per sample (per token of a sequence).
    public func multiplyAdds(inputShape: [Int]) -> Int { inputs * outputs * (inputShape.count == 2 ? inputShape[0] : 1) }

    /// DropConnect keeps the step's mask and the masked weights: 2 (O, I) matrices.
    public func scratchCount(inputWidth: Int, rows: Int) -> Int {
        dropConnect > 0 ? 2 * inputs * outputs : 0
    }

    public func forward(_ pass: ForwardPass) {
        var weights = pass.parameters[0]
        if dropConnect > 0, let random = pass.random {
            let mask = pass.scratch, masked = pass.scratch + inputs * outputs
            DropoutKernel.fillMask(
                rows: outputs, columns: inputs, address: random.address(.dropConnect),
                firstPosition: 0, dropProbability: dropConnect, mask: mask)
            Elementwise.multiply(count: outputs * inputs, a: weights, b: mask, out: masked)
            weights = UnsafePointer(masked)
        }
        // y (N, O) = x (N, I) · Wᵀ, W: (O, I); a sequence's N T rows of tokens alike.
        let rows = pass.rows * tokens(pass.inputWidth)
        BLAS.gemm(
            transposeA: false, transposeB: true, m: rows, n: outputs, k: inputs,
            a: pass.input, lda: inputs, b: weights, ldb: inputs, beta: 0, c: pass.output, ldc: outputs)
        Elementwise.addBias(rows: rows, columns: outputs, y: pass.output, bias: pass.parameters[1])
    }

    public func backward(_ pass: BackwardPass) {
        let n = pass.rows * tokens(pass.inputWidth), dy = pass.outputGradient, dW = pass.parameterGradients[0]
        // dW (O, I) = dYᵀ (O, N) · X (N, I)
        BLAS.gemm(
            transposeA: true, transposeB: false, m: outputs, n: inputs, k: n,
            a: dy, lda: outputs, b: pass.input, ldb: inputs, beta: 0, c: dW, ldc: inputs)
        // DropConnect: the forward used W ∘ M, so dW = (dYᵀ X) ∘ M.
        if dropConnect > 0 { Elementwise.multiply(count: outputs * inputs, a: dW, b: pass.scratch, out: dW) }
        Elementwise.columnSums(rows: n, columns: outputs, dy: dy, sums: pass.parameterGradients[1])
        guard let dx = pass.inputGradient else { return }
        // dX (N, I) = dY (N, O) · W (O, I), with the weights the forward used
        let weights = dropConnect > 0 ? UnsafePointer(pass.scratch + inputs * outputs) : pass.parameters[0]
        BLAS.gemm(
            transposeA: false, transposeB: false, m: n, n: inputs, k: outputs,
            a: dy, lda: outputs, b: weights, ldb: inputs, beta: 0, c: dx, ldc: inputs)
    }
}
