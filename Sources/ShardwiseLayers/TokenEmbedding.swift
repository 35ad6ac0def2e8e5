import ShardwiseKernels

/// A language model's input: samples of T token ids become (T, C) rows, token t's vector
/// `token.weight[id]` plus its position's `position.weight[t]` (GPT-2's and nanoGPT's `wte`
/// and `wpe`, two `nn.Embedding`s added).
///
/// The ids are the sample's values (integers in `0..<vocabulary`, as token data holds them); an
/// id outside gives NaN outputs, never another token's vector. The gradients are written
/// densely by each shard: both tables zeroed, then each token's output gradient added onto its
/// id's row and its position's row, in (sample, position) order. Vectors start uniform with
/// standard deviation 0.02 (nanoGPT's normal(0, 0.02) scale).
public struct TokenEmbedding: Layer {
    /// V: the token ids `0..<vocabulary`.
    public let vocabulary: Int
    /// C: values per token.
    public let width: Int

    /// Vectors of `width` values for `vocabulary` token ids, and one per position.
    public init(vocabulary: Int, width: Int) {
        self.vocabulary = vocabulary
        self.width = width
    }

    public func outputWidth(inputWidth: Int) throws(ModelError) -> Int {
        try outputShape(inputShape: [inputWidth]).reduce(1, *)
    }

    public func outputShape(inputShape: [Int]) throws(ModelError) -> [Int] {
        guard vocabulary > 0, width > 0 else { throw ModelError("TokenEmbedding(\(vocabulary), \(width)): sizes must be positive") }
        guard vocabulary <= 1 << 24 else { throw ModelError("TokenEmbedding(\(vocabulary), \(width)): at most 2^24 token ids (each is read from a float)") }
        guard inputShape.count == 1, inputShape[0] > 0 else {
            throw ModelError("TokenEmbedding takes samples of T token ids, got samples of shape \(Network.describe(inputShape))")
        }
        try ModelSize.product("TokenEmbedding(\(vocabulary), \(width))'s table", [vocabulary, width])
        try ModelSize.product("TokenEmbedding(\(vocabulary), \(width))'s output", [inputShape[0], width])
        return [inputShape[0], width]
    }

    public func parameters(inputShape: [Int]) -> [ParameterSpec] {
        let bound = Float(0.02 * 3.0.squareRoot())
        return [
            ParameterSpec(name: "token.weight", shape: [vocabulary, width], initializer: .uniform(bound: bound), role: .other),
            ParameterSpec(name: "position.weight", shape: [inputShape.first ?? 1, width], initializer: .uniform(bound: bound), role: .other),
        ]
    }

    /// The id a value holds, or nil when it is not one.
    @inline(__always)
    func id(_ value: Float) -> Int? {
        guard value >= 0, value < Float(vocabulary), value.rounded(.towardZero) == value else { return nil }
        return Int(value)
    }

    public func forward(_ pass: ForwardPass) {
        let t = pass.inputWidth, c = width, table = pass.parameters[0], positions = pass.parameters[1]
        for r in 0..<pass.rows {
            for p in 0..<t {
                let y = pass.output + (r * t + p) * c
                guard let token = id(pass.input[r * t + p]) else {
                    y.update(repeating: .nan, count: c)
                    continue
                }
                let v = table + token * c, w = positions + p * c
                for e in 0..<c { y[e] = v[e] + w[e] }
            }
        }
    }

    public func backward(_ pass: BackwardPass) {
        let t = pass.inputWidth, c = width, dTable = pass.parameterGradients[0], dPositions = pass.parameterGradients[1]
        dTable.update(repeating: 0, count: vocabulary * c)
        dPositions.update(repeating: 0, count: t * c)
        for r in 0..<pass.rows {
            for p in 0..<t {
                let dy = pass.outputGradient + (r * t + p) * c, w = dPositions + p * c
                for e in 0..<c { w[e] += dy[e] }
                guard let token = id(pass.input[r * t + p]) else { continue }
                let v = dTable + token * c
                for e in 0..<c { v[e] += dy[e] }
            }
        }
        // The ids have no gradient.
        pass.inputGradient?.update(repeating: 0, count: pass.rows * t)
    }
}
