import ShardwiseKernels

/// Causal multi-head self-attention over samples of T tokens of C values, as nanoGPT's
/// `CausalSelfAttention`: one fused projection to queries, keys and values (`qkv.weight`
/// (3C, C) and `qkv.bias`, PyTorch's `c_attn`), H heads of C / H values attending to their
/// own and earlier tokens with softmax(q kᵀ / √(C / H)), and the output projection
/// (`proj.weight` (C, C) and `proj.bias`, `c_proj`).
///
/// With `dropout` p > 0, training drops attention probabilities (after the softmax) with
/// masks drawn from the stream (seed, attention dropout, step, this layer's index among the
/// model's attention layers) at the sample's position in the global batch, element
/// (head, query, key): the same masks however the batch is cut into shards.
///
/// Memory grows linearly in T: the T x T score matrix is never formed. Queries are taken in
/// blocks of 32 rows; a block's scores against the keys up to its last row (the causal half)
/// are one tile, turned into probabilities in place and multiplied by the values; the
/// backward pass recomputes the tile from the row maxima and sums kept from the forward pass.
/// Every product is a matrix kernel over k in increasing order and every sum runs in one
/// fixed order, so the results are the same for any shard size and worker count.
public struct CausalSelfAttention: Layer {
    /// C: the values per token.
    public let width: Int
    /// H: the heads; C / H values each.
    public let heads: Int
    /// The probability of dropping an attention probability in training.
    public let dropout: Double

    /// Attention over tokens of `width` values with `heads` heads and attention dropout `dropout`.
    public init(width: Int, heads: Int, dropout: Double = 0) {
        self.width = width
        self.heads = heads
        self.dropout = dropout
    }

    /// Query rows per tile.
    static let block = 32

    public func outputWidth(inputWidth: Int) throws(ModelError) -> Int {
        guard width > 0, inputWidth % width == 0 else {
            throw ModelError("CausalSelfAttention(\(width)) receives rows of \(inputWidth) values, expected tokens of \(width)")
        }
        return try outputShape(inputShape: [inputWidth / width, width]).reduce(1, *)
    }

    public func outputShape(inputShape: [Int]) throws(ModelError) -> [Int] {
        guard width > 0, heads > 0, width % heads == 0 else {
            throw ModelError("CausalSelfAttention(\(width), heads: \(heads)): the width must be a positive multiple of the heads")
        }
        guard (0..<1).contains(dropout) else {
            throw ModelError("CausalSelfAttention: dropout \(dropout), expected a probability in [0, 1)")
        }
        guard inputShape.count == 2, inputShape[1] == width, inputShape[0] > 0 else {
            throw ModelError("CausalSelfAttention(\(width)) takes samples of (tokens, \(width)), got \(Network.describe(inputShape))")
        }
        let tokens = inputShape[0]
        try ModelSize.arguments("CausalSelfAttention", [width, heads, tokens])
        // The dropout masks' (head, query, key) elements are counted by one 32-bit counter word.
        try ModelSize.product("CausalSelfAttention's (head, query, key) mask", [heads, tokens, Self.padded(tokens)])
        try ModelSize.product("CausalSelfAttention's queries, keys and values", [tokens, 3, width])
        return inputShape
    }

    public func parameters(inputShape: [Int]) -> [ParameterSpec] {
        let bound = Float(1 / Double(width).squareRoot())
        return [
            ParameterSpec(name: "qkv.weight", shape: [3 * width, width], initializer: .uniform(bound: bound), role: .weight),
            ParameterSpec(name: "qkv.bias", shape: [3 * width], initializer: .zeros, role: .bias),
            ParameterSpec(name: "proj.weight", shape: [width, width], initializer: .uniform(bound: bound), role: .weight),
            ParameterSpec(name: "proj.bias", shape: [width], initializer: .zeros, role: .bias),
        ]
    }

    /// The projections' 4 C² a token, and the causal half of q kᵀ and of the probabilities times v.
    public func multiplyAdds(inputShape: [Int]) -> Int {
        let tokens = inputShape.first ?? 0
        return tokens * 4 * width * width + tokens * (tokens + 1) * width
    }

    public func scratchCount(inputShape: [Int], rows: Int) -> Int {
        Buffers(tokens: inputShape.first ?? 0, width: width, heads: heads, rows: rows, base: nil).count
    }

    static func padded(_ tokens: Int) -> Int { (tokens + 31) / 32 * 32 }

    /// Where each buffer lies in the scratch memory of `rows` samples.
    struct Buffers {
        let count: Int
        let header, qkv, y, maxima, sums, dy, dqkv, scores, mask, grad, tmp: UnsafeMutablePointer<Float>

        init(tokens t: Int, width c: Int, heads h: Int, rows n: Int, base: UnsafeMutablePointer<Float>?) {
            // Offsets by running sums (no array: this runs in every step's passes).
            let p = base ?? UnsafeMutablePointer(bitPattern: 64)!
            var at = 0
            func next(_ size: Int) -> UnsafeMutablePointer<Float> {
                defer { at += size }
                return p + at
            }
            header = next(8)
            qkv = next(n * t * 3 * c)
            y = next(n * t * c)
            maxima = next(n * h * t)
            sums = next(n * h * t)
            dy = next(n * t * c)
            dqkv = next(n * t * 3 * c)
            scores = next(block * t)
            mask = next(block * t)
            grad = next(block * t)
            tmp = next(t * (c / max(h, 1)))
            count = at
        }

        /// Training with dropout: the stream the forward pass drew its masks from, kept for the
        /// backward pass (which regenerates them) as the bit patterns of five words.
        func keep(_ random: LayerRandomness?) {
            guard let random else { return header[0] = 0 }
            header[0] = Float(bitPattern: 1)
            header[1] = Float(bitPattern: UInt32(truncatingIfNeeded: random.seed))
            header[2] = Float(bitPattern: UInt32(truncatingIfNeeded: random.seed >> 32))
            header[3] = Float(bitPattern: random.step)
            header[4] = Float(bitPattern: UInt32(truncatingIfNeeded: random.firstPosition))
            header[5] = Float(bitPattern: random.layer)
        }

        /// The stream `keep` stored, or nil (evaluation, or no dropout).
        var kept: LayerRandomness? {
            guard header[0].bitPattern == 1 else { return nil }
            let seed = UInt64(header[2].bitPattern) << 32 | UInt64(header[1].bitPattern)
            return LayerRandomness(seed: seed, step: header[3].bitPattern, firstPosition: Int(header[4].bitPattern), layer: header[5].bitPattern)
        }
    }

    public func forward(_ pass: ForwardPass) {
        let t = pass.inputShape[0], c = width, n = pass.rows
        let b = Buffers(tokens: t, width: c, heads: heads, rows: n, base: pass.scratch)
        // qkv (N T, 3C) = x Wᵀ + b
        BLAS.gemm(
            transposeA: false, transposeB: true, m: n * t, n: 3 * c, k: c,
            a: pass.input, lda: c, b: pass.parameters[0], ldb: c, beta: 0, c: b.qkv, ldc: 3 * c)
        Elementwise.addBias(rows: n * t, columns: 3 * c, y: b.qkv, bias: pass.parameters[1])
        b.keep(dropout > 0 ? pass.random : nil)
        for sample in 0..<n {
            for head in 0..<heads { attend(sample: sample, head: head, tokens: t, buffers: b, random: pass.random) }
        }
        // out (N T, C) = y Wpᵀ + bp
        BLAS.gemm(
            transposeA: false, transposeB: true, m: n * t, n: c, k: c,
            a: b.y, lda: c, b: pass.parameters[2], ldb: c, beta: 0, c: pass.output, ldc: c)
        Elementwise.addBias(rows: n * t, columns: c, y: pass.output, bias: pass.parameters[3])
    }

    /// One head of one sample: y's head columns from its queries, keys and values.
    func attend(sample: Int, head: Int, tokens t: Int, buffers b: Buffers, random: LayerRandomness?) {
        let c = width, d = c / heads, stride = 3 * c
        let q = b.qkv + sample * t * stride + head * d, k = q + c, v = q + 2 * c
        let out = b.y + sample * t * c + head * d
        let stats = (sample * heads + head) * t
        var i0 = 0
        while i0 < t {
            let i1 = min(i0 + Self.block, t), rows = i1 - i0
            scores(q, k, from: i0, to: i1, d: d, stride: stride, into: b.scores)
            for r in 0..<rows {
                let i = i0 + r, row = b.scores + r * i1
                let (maximum, sum) = softmaxRow(row, query: i, keys: i1, scale: scale(d))
                b.maxima[stats + i] = maximum
                b.sums[stats + i] = sum
                if dropout > 0, let random {
                    let mask = b.mask + r * i1
                    fillMask(mask, sample: sample, head: head, query: i, tokens: t, keys: i1, random: random)
                    Elementwise.multiply(count: i1, a: row, b: mask, out: row)
                }
            }
            // O (rows, d) = P V[0..<i1]
            BLAS.gemm(
                transposeA: false, transposeB: false, m: rows, n: d, k: i1,
                a: b.scores, lda: i1, b: v, ldb: stride, beta: 0, c: out + i0 * c, ldc: c)
            i0 = i1
        }
    }

    func scale(_ d: Int) -> Float { Float(1 / Double(d).squareRoot()) }

    /// A block's score tile, S (i1 - i0, i1) = Q[i0..<i1] K[0..<i1]ᵀ: the keys up to its last
    /// query (the forward pass's and, recomputed, the backward pass's).
    @inline(__always)
    func scores(_ q: UnsafePointer<Float>, _ k: UnsafePointer<Float>, from i0: Int, to i1: Int, d: Int, stride: Int, into tile: UnsafeMutablePointer<Float>) {
        BLAS.gemm(
            transposeA: false, transposeB: true, m: i1 - i0, n: i1, k: d,
            a: q + i0 * stride, lda: stride, b: k, ldb: stride, beta: 0, c: tile, ldc: i1)
    }

    /// Row `query` of a score tile into probabilities: keys after the query are 0, the others
    /// e^(s·scale - max) / sum; returns the maximum and the sum (the backward pass's recomputation).
    @inline(__always)
    func softmaxRow(_ row: UnsafeMutablePointer<Float>, query i: Int, keys: Int, scale: Float) -> (Float, Float) {
        var maximum = -Float.infinity
        for j in 0...i { maximum = max(maximum, row[j] * scale) }
        PortableMath.expShifted(count: i + 1, row, scale: scale, maximum: maximum, into: row)
        var sum: Float = 0
        for j in 0...i { sum += row[j] }
        for j in 0...i { row[j] /= sum }
        for j in (i + 1)..<max(keys, i + 1) { row[j] = 0 }
        return (maximum, sum)
    }

    /// The probabilities of row `query` again, from the scores and the forward pass's maximum and sum.
    @inline(__always)
    func recomputeRow(_ row: UnsafeMutablePointer<Float>, query i: Int, keys: Int, scale: Float, maximum: Float, sum: Float) {
        PortableMath.expShifted(count: i + 1, row, scale: scale, maximum: maximum, into: row)
        for j in 0...i { row[j] /= sum }
        for j in (i + 1)..<max(keys, i + 1) { row[j] = 0 }
    }

    /// The dropout multipliers (0 or 1 / (1 - p)) of keys `0..<keys` for (head, query): units of
    /// one padded row per (head, query) at the sample's position in the global batch.
    @inline(__always)
    func fillMask(_ mask: UnsafeMutablePointer<Float>, sample: Int, head: Int, query: Int, tokens t: Int, keys: Int, random: LayerRandomness) {
        DropoutKernel.fillMask(
            rows: 1, columns: keys, address: random.address(.attentionDropout), firstPosition: random.firstPosition + sample,
            dropProbability: dropout, mask: mask, firstBlock: (head * t + query) * (Self.padded(t) / 32))
    }

    public func backward(_ pass: BackwardPass) {
        let t = pass.inputShape[0], c = width, n = pass.rows
        let b = Buffers(tokens: t, width: c, heads: heads, rows: n, base: pass.scratch)
        let dOut = pass.outputGradient, grads = pass.parameterGradients
        // The output projection: dWp = dOutᵀ y, dbp = column sums, dy = dOut Wp.
        BLAS.gemm(
            transposeA: true, transposeB: false, m: c, n: c, k: n * t,
            a: dOut, lda: c, b: b.y, ldb: c, beta: 0, c: grads[2], ldc: c)
        Elementwise.columnSums(rows: n * t, columns: c, dy: dOut, sums: grads[3])
        BLAS.gemm(
            transposeA: false, transposeB: false, m: n * t, n: c, k: c,
            a: dOut, lda: c, b: pass.parameters[2], ldb: c, beta: 0, c: b.dy, ldc: c)
        let random = b.kept
        for sample in 0..<n {
            for head in 0..<heads { attendBackward(sample: sample, head: head, tokens: t, buffers: b, random: random) }
        }
        // The fused projection: dW = dqkvᵀ x, db = column sums, dx = dqkv W.
        BLAS.gemm(
            transposeA: true, transposeB: false, m: 3 * c, n: c, k: n * t,
            a: b.dqkv, lda: 3 * c, b: pass.input, ldb: c, beta: 0, c: grads[0], ldc: c)
        Elementwise.columnSums(rows: n * t, columns: 3 * c, dy: b.dqkv, sums: grads[1])
        guard let dx = pass.inputGradient else { return }
        BLAS.gemm(
            transposeA: false, transposeB: false, m: n * t, n: c, k: 3 * c,
            a: b.dqkv, lda: 3 * c, b: pass.parameters[0], ldb: c, beta: 0, c: dx, ldc: c)
    }

    /// One head of one sample: the gradients of its queries, keys and values (dqkv's head
    /// columns) from dy's, block by block as the forward pass went. The keys' and values'
    /// gradients add the blocks' contributions in block order.
    func attendBackward(sample: Int, head: Int, tokens t: Int, buffers b: Buffers, random: LayerRandomness?) {
        let c = width, d = c / heads, stride = 3 * c, s = scale(d)
        let q = b.qkv + sample * t * stride + head * d, k = q + c, v = q + 2 * c
        let o = b.y + sample * t * c + head * d, dO = b.dy + sample * t * c + head * d
        let dq = b.dqkv + sample * t * stride + head * d, dk = dq + c, dv = dq + 2 * c
        let stats = (sample * heads + head) * t
        let dropping = random != nil
        for j in 0..<t {
            for e in 0..<d {
                dk[j * stride + e] = 0
                dv[j * stride + e] = 0
            }
        }
        var i0 = 0
        while i0 < t {
            let i1 = min(i0 + Self.block, t), rows = i1 - i0
            scores(q, k, from: i0, to: i1, d: d, stride: stride, into: b.scores)
            for r in 0..<rows {
                let i = i0 + r
                recomputeRow(b.scores + r * i1, query: i, keys: i1, scale: s, maximum: b.maxima[stats + i], sum: b.sums[stats + i])
                if let random {
                    fillMask(b.mask + r * i1, sample: sample, head: head, query: i, tokens: t, keys: i1, random: random)
                }
            }
            // The probabilities the forward pass used: P ∘ M with dropout.
            var used = UnsafePointer(b.scores)
            if dropping {
                Elementwise.multiply(count: rows * i1, a: b.scores, b: b.mask, out: b.grad)
                used = UnsafePointer(b.grad)
            }
            // dV[0..<i1] += (P ∘ M)ᵀ dO[i0..<i1]
            BLAS.gemm(
                transposeA: true, transposeB: false, m: i1, n: d, k: rows,
                a: used, lda: i1, b: dO + i0 * c, ldb: c, beta: 0, c: b.tmp, ldc: d)
            accumulate(b.tmp, into: dv, rows: i1, columns: d, stride: stride)
            // dP̃ (rows, i1) = dO[i0..<i1] V[0..<i1]ᵀ
            BLAS.gemm(
                transposeA: false, transposeB: true, m: rows, n: i1, k: d,
                a: dO + i0 * c, lda: c, b: v, ldb: stride, beta: 0, c: b.grad, ldc: i1)
            // dS = P ∘ (dP̃ ∘ M - rowsum(dO ∘ O)) · scale, the softmax's and the scaling's gradient.
            for r in 0..<rows {
                let i = i0 + r, p = b.scores + r * i1, g = b.grad + r * i1, m = b.mask + r * i1
                var dot: Float = 0
                for e in 0..<d { dot += dO[i * c + e] * o[i * c + e] }
                for j in 0...i {
                    let dp = dropping ? g[j] * m[j] : g[j]
                    g[j] = p[j] * (dp - dot) * s
                }
                for j in (i + 1)..<max(i1, i + 1) { g[j] = 0 }
            }
            // dQ[i0..<i1] = dS K[0..<i1] (each query block once: written in place)
            BLAS.gemm(
                transposeA: false, transposeB: false, m: rows, n: d, k: i1,
                a: b.grad, lda: i1, b: k, ldb: stride, beta: 0, c: dq + i0 * stride, ldc: stride)
            // dK[0..<i1] += dSᵀ Q[i0..<i1]
            BLAS.gemm(
                transposeA: true, transposeB: false, m: i1, n: d, k: rows,
                a: b.grad, lda: i1, b: q + i0 * stride, ldb: stride, beta: 0, c: b.tmp, ldc: d)
            accumulate(b.tmp, into: dk, rows: i1, columns: d, stride: stride)
            i0 = i1
        }
    }

    /// `target[r * stride + e] += tmp[r * columns + e]`.
    @inline(__always)
    func accumulate(_ tmp: UnsafePointer<Float>, into target: UnsafeMutablePointer<Float>, rows: Int, columns: Int, stride: Int) {
        for r in 0..<rows {
            for e in 0..<columns { target[r * stride + e] += tmp[r * columns + e] }
        }
    }
}
