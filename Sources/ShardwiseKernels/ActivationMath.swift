/// Smooth activations and their derivatives, elementwise over float buffers.
///
/// Each value is computed in Double from ``StepMath/exp(_:)`` and rounded once to Float:
/// with the portable kernels (the default) that exponential is ``PortableMath``'s, so these
/// layers give the same bits on any CPU, as the rest of the portable training step does.
/// Scalar loops: the smooth activations cost one exponential an element, far below the
/// matrix products beside them.
public enum ActivationMath {
    static let sqrt2OverPi = 0.7978845608028654  // √(2/π)
    static let inverseSqrt2 = 0.7071067811865476  // 1/√2
    static let inverseSqrt2Pi = 0.3989422804014327  // 1/√(2π)
    static let inverseSqrtPi = 0.5641895835477563  // 1/√π

    /// tanh x.
    public static func tanh(_ x: Double) -> Double {
        let a = abs(x)
        if a < 4e-4 { return x * (1 - x * x / 3) }  // the next term, 2x⁵/15, is below 2^-53 x
        if a > 20 { return x < 0 ? -1 : 1 }
        let e = StepMath.exp(2 * a)
        let t = (e - 1) / (e + 1)
        return x < 0 ? -t : t
    }

    /// 1 / (1 + e^-x).
    public static func sigmoid(_ x: Double) -> Double {
        if x >= 0 { return 1 / (1 + StepMath.exp(-x)) }
        let e = StepMath.exp(x)  // e^x / (1 + e^x): no overflow for large -x
        return e / (1 + e)
    }

    /// The error function, to double precision: the series e^-x² Σ (2x²)ⁿ x / (2n+1)!! (all
    /// terms positive) below |x| = 3, the continued fraction of erfc above.
    public static func erf(_ x: Double) -> Double {
        let a = abs(x)
        let value: Double
        if a < 3 {
            var term = a, sum = a, n = 0.0
            let twoX2 = 2 * a * a
            while term > sum * 1e-17 {
                n += 1
                term *= twoX2 / (2 * n + 1)
                sum += term
            }
            value = 2 * inverseSqrtPi * StepMath.exp(-a * a) * sum
        } else if a < 6 {
            // erfc a = e^-a² / √π · 1 / (a + (1/2) / (a + 1 / (a + (3/2) / (a + …)))), from depth 60.
            var f = a
            for k in stride(from: 60.0, through: 1, by: -1) { f = a + (k / 2) / f }
            value = 1 - inverseSqrtPi * StepMath.exp(-a * a) / f
        } else {
            value = 1
        }
        return x < 0 ? -value : value
    }

    /// y = tanh x.
    public static func tanh(count: Int, x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>) {
        for i in 0..<count { y[i] = Float(tanh(Double(x[i]))) }
    }

    /// dx = dy (1 - y²), from the output y.
    public static func tanhBackward(count: Int, y: UnsafePointer<Float>, dy: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>) {
        for i in 0..<count { dx[i] = dy[i] * (1 - y[i] * y[i]) }
    }

    /// y = 1 / (1 + e^-x).
    public static func sigmoid(count: Int, x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>) {
        for i in 0..<count { y[i] = Float(sigmoid(Double(x[i]))) }
    }

    /// dx = dy y (1 - y), from the output y.
    public static func sigmoidBackward(count: Int, y: UnsafePointer<Float>, dy: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>) {
        for i in 0..<count { dx[i] = dy[i] * (y[i] * (1 - y[i])) }
    }

    /// y = x for x > 0, slope · x otherwise.
    public static func leakyReLU(count: Int, slope: Float, x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>) {
        for i in 0..<count { y[i] = x[i] > 0 ? x[i] : slope * x[i] }
    }

    /// dx = dy for x > 0, slope · dy otherwise, from the input x.
    public static func leakyReLUBackward(count: Int, slope: Float, x: UnsafePointer<Float>, dy: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>) {
        for i in 0..<count { dx[i] = x[i] > 0 ? dy[i] : slope * dy[i] }
    }

    /// GELU: x Φ(x), exactly (`approximate: false`, Φ from erf) or with PyTorch's tanh form
    /// 0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³))).
    public static func gelu(count: Int, approximate: Bool, x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>) {
        for i in 0..<count {
            let v = Double(x[i])
            y[i] = Float(approximate ? 0.5 * v * (1 + tanh(sqrt2OverPi * (v + 0.044715 * v * v * v))) : 0.5 * v * (1 + erf(v * inverseSqrt2)))
        }
    }

    /// dx = dy · GELU'(x), from the input x.
    public static func geluBackward(count: Int, approximate: Bool, x: UnsafePointer<Float>, dy: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>) {
        for i in 0..<count {
            let v = Double(x[i])
            let derivative: Double
            if approximate {
                let t = tanh(sqrt2OverPi * (v + 0.044715 * v * v * v))
                derivative = 0.5 * (1 + t) + 0.5 * v * (1 - t * t) * sqrt2OverPi * (1 + 3 * 0.044715 * v * v)
            } else {
                derivative = 0.5 * (1 + erf(v * inverseSqrt2)) + v * inverseSqrt2Pi * StepMath.exp(-0.5 * v * v)
            }
            dx[i] = Float(Double(dy[i]) * derivative)
        }
    }
}
