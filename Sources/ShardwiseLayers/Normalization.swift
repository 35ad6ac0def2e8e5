import ShardwiseKernels

/// Per-sample normalization, shared by ``LayerNorm``, ``RMSNorm`` and ``GroupNorm``: each
/// sample's values fall into groups of `groupSize` consecutive values; each group is normalized
/// by its own statistics (mean and biased variance, or the mean square without centring), then
/// scaled and shifted per parameter index `(e / stride) % period` of element e of the sample.
///
/// Statistics and sums are formed in Double in element order and rounded once, so the bits
/// depend only on the sample: not on the shard, the worker or the CPU. The backward pass
/// recomputes the statistics from the input rather than keeping them.
struct SampleNormalization {
    var groupSize: Int
    var centred: Bool
    var epsilon: Double
    var stride: Int
    var period: Int
    var hasBias: Bool

    /// Parameter index of element e of a sample.
    @inline(__always) func index(_ e: Int) -> Int { (e / stride) % period }

    /// Whether element i of every group has parameter i (LayerNorm, RMSNorm): no division an element.
    var parameterPerElement: Bool { stride == 1 && period == groupSize }

    /// Mean (0 without centring) and 1 / √(variance + ε) of `count` values at `x`.
    @inline(__always) func statistics(_ x: UnsafePointer<Float>) -> (mean: Double, rstd: Double) {
        var mean = 0.0
        if centred {
            for i in 0..<groupSize { mean += Double(x[i]) }
            mean /= Double(groupSize)
        }
        var squares = 0.0
        for i in 0..<groupSize {
            let d = Double(x[i]) - mean
            squares += d * d
        }
        return (mean, 1 / (squares / Double(groupSize) + epsilon).squareRoot())
    }

    /// ``statistics(_:)`` of four consecutive groups at once, lane g the g-th group's: each
    /// lane the same operations in the same order (four sums in flight instead of one).
    @inline(__always) func statistics4(_ x: UnsafePointer<Float>) -> (mean: SIMD4<Double>, rstd: SIMD4<Double>) {
        let n = groupSize
        var mean = SIMD4<Double>()
        if centred {
            for i in 0..<n { mean += values4(x, i) }
            mean /= SIMD4(repeating: Double(n))
        }
        var squares = SIMD4<Double>()
        for i in 0..<n {
            let d = values4(x, i) - mean
            squares += d * d
        }
        return (mean, 1 / (squares / SIMD4(repeating: Double(n)) + SIMD4(repeating: epsilon)).squareRoot())
    }

    /// Element i of four consecutive groups at `x`.
    @inline(__always) func values4(_ x: UnsafePointer<Float>, _ i: Int) -> SIMD4<Double> {
        let n = groupSize
        return SIMD4(Double(x[i]), Double(x[n + i]), Double(x[2 * n + i]), Double(x[3 * n + i]))
    }

    func forward(_ pass: ForwardPass) {
        let width = pass.inputWidth, gamma = pass.parameters[0], beta: UnsafePointer<Float>? = hasBias ? pass.parameters[1] : nil
        // One parameter an element (LayerNorm, RMSNorm): the shard's groups four at a time, then the rest below.
        var first = 0
        if parameterPerElement {
            let groups = pass.rows * width / groupSize
            while first + 4 <= groups {
                let x = pass.input + first * groupSize, y = pass.output + first * groupSize
                let (mean, rstd) = statistics4(x)
                for g in 0..<4 {
                    let x = x + g * groupSize, y = y + g * groupSize, mean = mean[g], rstd = rstd[g]
                    if let beta {
                        for i in 0..<groupSize { y[i] = Float((Double(x[i]) - mean) * rstd * Double(gamma[i]) + Double(beta[i])) }
                    } else {
                        for i in 0..<groupSize { y[i] = Float((Double(x[i]) - mean) * rstd * Double(gamma[i])) }
                    }
                }
                first += 4
            }
        }
        for r in 0..<pass.rows where (r + 1) * width > first * groupSize {
            for start in Swift.stride(from: 0, to: width, by: groupSize) where r * width + start >= first * groupSize {
                let x = pass.input + r * width + start, y = pass.output + r * width + start
                let (mean, rstd) = statistics(x)
                if parameterPerElement {
                    if let beta {
                        for i in 0..<groupSize { y[i] = Float((Double(x[i]) - mean) * rstd * Double(gamma[i]) + Double(beta[i])) }
                    } else {
                        for i in 0..<groupSize { y[i] = Float((Double(x[i]) - mean) * rstd * Double(gamma[i])) }
                    }
                    continue
                }
                for i in 0..<groupSize {
                    let p = index(start + i)
                    let normalized = (Double(x[i]) - mean) * rstd * Double(gamma[p])
                    y[i] = Float(beta.map { normalized + Double($0[p]) } ?? normalized)
                }
            }
        }
    }

    /// Scratch: two Double accumulators per parameter index (the weight's and the bias's gradient).
    var scratchCount: Int { 4 * period }

    func backward(_ pass: BackwardPass) {
        let width = pass.inputWidth, gamma = pass.parameters[0], dy = pass.outputGradient
        let sums = UnsafeMutableRawPointer(pass.scratch).bindMemory(to: Double.self, capacity: 2 * period)
        let dGamma = sums, dBeta = sums + period
        dGamma.update(repeating: 0, count: 2 * period)
        let m = Double(groupSize)
        // One parameter an element: four groups at a time, each lane a group's sums in its order;
        // the parameters' sums take the four groups' terms in group order, as the loop below does.
        var first = 0
        if parameterPerElement {
            let groups = pass.rows * width / groupSize, n = groupSize
            while first + 4 <= groups {
                let x = pass.input + first * n, g = dy + first * n
                let (mean, rstd) = statistics4(x)
                var sumD = SIMD4<Double>(), sumDX = SIMD4<Double>()
                for i in 0..<n {
                    let xhat = (values4(x, i) - mean) * rstd, d = values4(g, i), product = d * xhat
                    dGamma[i] += product[0]
                    dGamma[i] += product[1]
                    dGamma[i] += product[2]
                    dGamma[i] += product[3]
                    dBeta[i] += d[0]
                    dBeta[i] += d[1]
                    dBeta[i] += d[2]
                    dBeta[i] += d[3]
                    let dxhat = d * SIMD4(repeating: Double(gamma[i]))
                    sumD += dxhat
                    sumDX += dxhat * xhat
                }
                if let dx = pass.inputGradient.map({ $0 + first * n }) {
                    let meanD = centred ? sumD / SIMD4(repeating: m) : SIMD4(), meanDX = sumDX / SIMD4(repeating: m)
                    for l in 0..<4 {
                        let x = x + l * n, g = g + l * n, dx = dx + l * n, mean = mean[l], rstd = rstd[l], meanD = meanD[l], meanDX = meanDX[l]
                        for i in 0..<n {
                            let xhat = (Double(x[i]) - mean) * rstd
                            dx[i] = Float(rstd * (Double(g[i]) * Double(gamma[i]) - meanD - xhat * meanDX))
                        }
                    }
                }
                first += 4
            }
        }
        for r in 0..<pass.rows where (r + 1) * width > first * groupSize {
            for start in Swift.stride(from: 0, to: width, by: groupSize) where r * width + start >= first * groupSize {
                let x = pass.input + r * width + start, g = dy + r * width + start
                let (mean, rstd) = statistics(x)
                var sumD = 0.0, sumDX = 0.0
                let direct = parameterPerElement
                for i in 0..<groupSize {
                    let p = direct ? i : index(start + i), xhat = (Double(x[i]) - mean) * rstd, d = Double(g[i])
                    dGamma[p] += d * xhat
                    dBeta[p] += d
                    let dxhat = d * Double(gamma[p])
                    sumD += dxhat
                    sumDX += dxhat * xhat
                }
                guard let dx = pass.inputGradient.map({ $0 + r * width + start }) else { continue }
                let meanD = centred ? sumD / m : 0, meanDX = sumDX / m
                for i in 0..<groupSize {
                    let p = direct ? i : index(start + i), xhat = (Double(x[i]) - mean) * rstd
                    dx[i] = Float(rstd * (Double(g[i]) * Double(gamma[p]) - meanD - xhat * meanDX))
                }
            }
        }
        for p in 0..<period { pass.parameterGradients[0][p] = Float(dGamma[p]) }
        if hasBias { for p in 0..<period { pass.parameterGradients[1][p] = Float(dBeta[p]) } }
    }
}

/// The trailing dimensions a per-sample norm normalizes over: all (nil) or the last `count`.
private func normalizedShape(_ inputShape: [Int], _ dimensions: Int?, _ name: String) throws(ModelError) -> [Int] {
    guard let dimensions else { return inputShape }
    guard (1...inputShape.count).contains(dimensions) else {
        throw ModelError("\(name) over the last \(dimensions) dimensions of samples of shape \(Network.describe(inputShape)), expected 1...\(inputShape.count)")
    }
    return Array(inputShape.suffix(dimensions))
}

private func checkEpsilon(_ epsilon: Double, _ name: String) throws(ModelError) {
    guard epsilon.isFinite, epsilon > 0 else { throw ModelError("\(name): epsilon \(epsilon), expected a positive number") }
}

/// `torch.nn.LayerNorm`: each sample normalized over its last `dimensions` dimensions (all of
/// them by default) with their mean and biased variance, then `weight` and `bias` of that
/// trailing shape (starting at 1 and 0). No statistics cross samples, so it behaves the same in
/// training and evaluation and for any shard size.
public struct LayerNorm: Layer {
    /// How many trailing dimensions are normalized together (nil: the whole sample).
    public let dimensions: Int?
    /// ε added to the variance (PyTorch's default 1e-5).
    public let epsilon: Double

    /// Normalizes over the last `dimensions` dimensions (nil: all) with `epsilon`.
    public init(dimensions: Int? = nil, epsilon: Double = 1e-5) {
        self.dimensions = dimensions
        self.epsilon = epsilon
    }

    public func outputWidth(inputWidth: Int) throws(ModelError) -> Int { inputWidth }

    public func outputShape(inputShape: [Int]) throws(ModelError) -> [Int] {
        try checkEpsilon(epsilon, "LayerNorm")
        _ = try normalizedShape(inputShape, dimensions, "LayerNorm")
        return inputShape
    }

    public func parameters(inputShape: [Int]) -> [ParameterSpec] {
        let shape = (try? normalizedShape(inputShape, dimensions, "LayerNorm")) ?? inputShape
        return [
            ParameterSpec(name: "weight", shape: shape, initializer: .constant(1)),
            ParameterSpec(name: "bias", shape: shape, initializer: .zeros, role: .bias),
        ]
    }

    func kernel(_ inputShape: [Int]) -> SampleNormalization {
        let size = ((try? normalizedShape(inputShape, dimensions, "LayerNorm")) ?? inputShape).reduce(1, *)
        return SampleNormalization(groupSize: size, centred: true, epsilon: epsilon, stride: 1, period: size, hasBias: true)
    }

    public func scratchCount(inputShape: [Int], rows: Int) -> Int { kernel(inputShape).scratchCount }
    public func forward(_ pass: ForwardPass) { kernel(pass.inputShape).forward(pass) }
    public func backward(_ pass: BackwardPass) { kernel(pass.inputShape).backward(pass) }
}

/// `torch.nn.RMSNorm`: each sample's last `dimensions` dimensions (all by default) divided by
/// their root mean square (no centring), then scaled by `weight` (starting at 1); ε defaults to
/// PyTorch's, the Float machine epsilon.
public struct RMSNorm: Layer {
    /// How many trailing dimensions are normalized together (nil: the whole sample).
    public let dimensions: Int?
    /// ε added to the mean square.
    public let epsilon: Double

    /// Normalizes over the last `dimensions` dimensions (nil: all) with `epsilon`.
    public init(dimensions: Int? = nil, epsilon: Double = Double(Float.ulpOfOne)) {
        self.dimensions = dimensions
        self.epsilon = epsilon
    }

    public func outputWidth(inputWidth: Int) throws(ModelError) -> Int { inputWidth }

    public func outputShape(inputShape: [Int]) throws(ModelError) -> [Int] {
        try checkEpsilon(epsilon, "RMSNorm")
        _ = try normalizedShape(inputShape, dimensions, "RMSNorm")
        return inputShape
    }

    public func parameters(inputShape: [Int]) -> [ParameterSpec] {
        [ParameterSpec(name: "weight", shape: (try? normalizedShape(inputShape, dimensions, "RMSNorm")) ?? inputShape, initializer: .constant(1))]
    }

    func kernel(_ inputShape: [Int]) -> SampleNormalization {
        let size = ((try? normalizedShape(inputShape, dimensions, "RMSNorm")) ?? inputShape).reduce(1, *)
        return SampleNormalization(groupSize: size, centred: false, epsilon: epsilon, stride: 1, period: size, hasBias: false)
    }

    public func scratchCount(inputShape: [Int], rows: Int) -> Int { kernel(inputShape).scratchCount }
    public func forward(_ pass: ForwardPass) { kernel(pass.inputShape).forward(pass) }
    public func backward(_ pass: BackwardPass) { kernel(pass.inputShape).backward(pass) }
}

/// `torch.nn.GroupNorm(groups, C)`: the channels of each (C, ...) sample (the features of a
/// flat one) in `groups` groups, each normalized over its channels and positions, then a
/// per-channel `weight` and `bias` (starting at 1 and 0). `GroupNorm(1)` normalizes the whole
/// sample with per-channel affine; `GroupNorm(C)` is instance normalization.
public struct GroupNorm: Layer {
    /// G: groups of channels.
    public let groups: Int
    /// ε added to the variance (PyTorch's default 1e-5).
    public let epsilon: Double

    /// `groups` groups of channels, with `epsilon`.
    public init(_ groups: Int, epsilon: Double = 1e-5) {
        self.groups = groups
        self.epsilon = epsilon
    }

    public func outputWidth(inputWidth: Int) throws(ModelError) -> Int { try outputShape(inputShape: [inputWidth]).reduce(1, *) }

    public func outputShape(inputShape: [Int]) throws(ModelError) -> [Int] {
        try checkEpsilon(epsilon, "GroupNorm")
        guard groups > 0, inputShape[0] % groups == 0 else {
            throw ModelError("GroupNorm(\(groups)) on \(inputShape[0]) channels, expected a positive number of groups that divides the channels")
        }
        return inputShape
    }

    public func parameters(inputShape: [Int]) -> [ParameterSpec] {
        [
            ParameterSpec(name: "weight", shape: [inputShape[0]], initializer: .constant(1)),
            ParameterSpec(name: "bias", shape: [inputShape[0]], initializer: .zeros, role: .bias),
        ]
    }

    func kernel(_ inputShape: [Int]) -> SampleNormalization {
        let width = inputShape.reduce(1, *), channels = inputShape[0]
        return SampleNormalization(groupSize: width / groups, centred: true, epsilon: epsilon, stride: width / channels, period: channels, hasBias: true)
    }

    public func scratchCount(inputShape: [Int], rows: Int) -> Int { kernel(inputShape).scratchCount }
    public func forward(_ pass: ForwardPass) { kernel(pass.inputShape).forward(pass) }
    public func backward(_ pass: BackwardPass) { kernel(pass.inputShape).backward(pass) }
}
