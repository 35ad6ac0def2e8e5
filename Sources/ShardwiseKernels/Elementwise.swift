/// Elementwise kernels on row-major float tensors.
///
/// Shape key: N rows (samples), C columns (units or classes), O output units, I inputs.
/// Each fast kernel works 16 floats at a time with Swift SIMD types and has a
/// plain-loop `…Reference` twin below it; tests compare the two. The package is
/// compiled for baseline x86-64 (no unsafeFlags), so these kernels use only
/// operations that map to SSE2 instructions (add, multiply, compare, select),
/// never `addingProduct`, which would become a per-lane library call. They are
/// memory-bound: on the reference network they read and write activations
/// that sit in L2, beside GEMMs that do ~1000x more arithmetic.
///
/// No kernel allocates. The fast and reference kernels evaluate the same
/// expressions in the same order, so where a test says "bit-identical" it is.
public typealias Vector16 = SIMD16<Float>

@inline(__always)
@usableFromInline
func load16(_ p: UnsafePointer<Float>) -> Vector16 {
    UnsafeRawPointer(p).loadUnaligned(as: Vector16.self)
}

@inline(__always)
@usableFromInline
func store16(_ v: Vector16, _ p: UnsafeMutablePointer<Float>) {
    UnsafeMutableRawPointer(p).storeBytes(of: v, as: Vector16.self)
}

/// Vectorised elementwise kernels over row-major float buffers; each has a plain-loop reference the tests compare against, bit for bit.
public enum Elementwise {
    // MARK: Bias

    /// `y[n, c] += bias[c]`. y: (N, C), bias: (C).
    public static func addBias(rows: Int, columns: Int, y: UnsafeMutablePointer<Float>, bias: UnsafePointer<Float>) {
        let vectorEnd = columns & ~15
        for n in 0..<rows {
            let row = y + n * columns
            var c = 0
            while c < vectorEnd {
                store16(load16(row + c) + load16(bias + c), row + c)
                c += 16
            }
            while c < columns { row[c] += bias[c]; c += 1 }
        }
    }

    package static func addBiasReference(rows: Int, columns: Int, y: UnsafeMutablePointer<Float>, bias: UnsafePointer<Float>) {
        for n in 0..<rows { for c in 0..<columns { y[n * columns + c] += bias[c] } }
    }

    /// `sums[c] = Σ_n dy[n, c]`, summed over n in increasing order. dy: (N, C), sums: (C).
    public static func columnSums(rows: Int, columns: Int, dy: UnsafePointer<Float>, sums: UnsafeMutablePointer<Float>) {
        sums.update(repeating: 0, count: columns)
        let vectorEnd = columns & ~15
        for n in 0..<rows {
            let row = dy + n * columns
            var c = 0
            while c < vectorEnd {
                store16(load16(sums + c) + load16(row + c), sums + c)
                c += 16
            }
            while c < columns { sums[c] += row[c]; c += 1 }
        }
    }

    package static func columnSumsReference(rows: Int, columns: Int, dy: UnsafePointer<Float>, sums: UnsafeMutablePointer<Float>) {
        for c in 0..<columns {
            var s: Float = 0
            for n in 0..<rows { s += dy[n * columns + c] }
            sums[c] = s
        }
    }

    // MARK: ReLU

    /// `y = max(x, 0)`, over `count` elements. y may alias x.
    public static func relu(count: Int, x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>) {
        let zero = Vector16(repeating: 0)
        var i = 0
        while i + 16 <= count {
            let v = load16(x + i)
            store16(v.replacing(with: zero, where: v .< zero), y + i)
            i += 16
        }
        while i < count { y[i] = x[i] < 0 ? 0 : x[i]; i += 1 }
    }

    package static func reluReference(count: Int, x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>) {
        for i in 0..<count { y[i] = x[i] < 0 ? 0 : x[i] }
    }

    /// `dx = y > 0 ? dy : 0`, from ReLU's output y. dx may alias dy.
    public static func reluBackward(count: Int, y: UnsafePointer<Float>, dy: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>) {
        let zero = Vector16(repeating: 0)
        var i = 0
        while i + 16 <= count {
            let g = load16(dy + i)
            store16(zero.replacing(with: g, where: load16(y + i) .> zero), dx + i)
            i += 16
        }
        while i < count { dx[i] = y[i] > 0 ? dy[i] : 0; i += 1 }
    }

    package static func reluBackwardReference(count: Int, y: UnsafePointer<Float>, dy: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>) {
        for i in 0..<count { dx[i] = y[i] > 0 ? dy[i] : 0 }
    }

    /// `y += x`, elementwise.
    public static func add(count: Int, x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>) {
        var i = 0
        while i + 16 <= count {
            store16(load16(y + i) + load16(x + i), y + i)
            i += 16
        }
        while i < count { y[i] += x[i]; i += 1 }
    }

    package static func addReference(count: Int, x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>) {
        for i in 0..<count { y[i] += x[i] }
    }

    /// `out = a * b`, elementwise. out may alias a or b.
    public static func multiply(count: Int, a: UnsafePointer<Float>, b: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>) {
        var i = 0
        while i + 16 <= count {
            store16(load16(a + i) * load16(b + i), out + i)
            i += 16
        }
        while i < count { out[i] = a[i] * b[i]; i += 1 }
    }

    package static func multiplyReference(count: Int, a: UnsafePointer<Float>, b: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>) {
        for i in 0..<count { out[i] = a[i] * b[i] }
    }

    // MARK: Softmax cross-entropy

    /// Mean-free softmax cross-entropy over N rows of C logits.
    ///
    /// Writes `grad[n, c] = (softmax(logits[n])[c] - [c == label[n]]) * gradientScale`
    /// and returns the sum over rows of `-log softmax(logits[n])[label[n]]`.
    /// Rows are independent; C is small (10 classes), so this stays scalar, with
    /// the log-sum-exp in Double for accuracy. With the portable kernels, `exp` and `log` are
    /// ``PortableMath``'s.
    /// With `labelSmoothing` ε > 0 the target is (1 - ε) one-hot + ε / C, as PyTorch's
    /// `label_smoothing`: the row's loss is (1 - ε)(lse - z_label) + ε (lse - mean z), its gradient p - target.
    /// logits: (N, C), labels: (N), grad: (N, C), may alias logits.
    /// `body(c, e^x(c))` for c in `0..<count` in order, the exponentials (``PortableMath/exp(_:)``'s
    /// bits) formed on the vector lanes in chunks of 64 in a stack buffer (no allocation).
    @inline(__always)
    static func portableExponentials(count: Int, _ x: (Int) -> Double, _ body: (Int, Double) -> Void) {
        withUnsafeTemporaryAllocation(of: Double.self, capacity: 128) { buffer in
            let values = buffer.baseAddress!, e = values + 64
            for start in stride(from: 0, to: count, by: 64) {
                let n = min(64, count - start)
                for c in 0..<n { values[c] = x(start + c) }
                PortableMath.exp(count: n, values, into: e)
                for c in 0..<n { body(start + c, e[c]) }
            }
        }
    }

    public static func softmaxCrossEntropy(
        rows: Int, classes: Int, logits: UnsafePointer<Float>, labels: UnsafePointer<Int32>,
        gradientScale: Float, labelSmoothing: Float = 0, grad: UnsafeMutablePointer<Float>
    ) -> Double {
        var lossSum = 0.0
        let portable = StepMath.portable
        for n in 0..<rows {
            let z = logits + n * classes
            var maximum = z[0]
            for c in 1..<classes where z[c] > maximum { maximum = z[c] }
            var sum = 0.0
            if portable {
                portableExponentials(count: classes, { Double(z[$0] - maximum) }) { _, e in sum += e }
            } else {
                for c in 0..<classes { sum += Double(exp(z[c] - maximum)) }
            }
            let logSum = Double(maximum) + (portable ? PortableMath.log(sum) : log(sum))
            let label = Int(labels[n])
            let g = grad + n * classes
            if labelSmoothing == 0 {
                lossSum += logSum - Double(z[label])
                if portable {
                    portableExponentials(count: classes, { Double(z[$0]) - logSum }) { c, e in g[c] = (Float(e) - (c == label ? 1 : 0)) * gradientScale }
                } else {
                    for c in 0..<classes { g[c] = (Float(exp(Double(z[c]) - logSum)) - (c == label ? 1 : 0)) * gradientScale }
                }
            } else {
                let e = Double(labelSmoothing)
                var mean = 0.0
                for c in 0..<classes { mean += Double(z[c]) }
                mean /= Double(classes)
                lossSum += (1 - e) * (logSum - Double(z[label])) + e * (logSum - mean)
                let share = e / Double(classes)
                for c in 0..<classes {
                    let probability = portable ? PortableMath.exp(Double(z[c]) - logSum) : exp(Double(z[c]) - logSum)
                    let target = (c == label ? 1 - e : 0) + share
                    g[c] = Float(probability - target) * gradientScale
                }
            }
        }
        return lossSum
    }

    // MARK: Max-norm

    /// Rescales each row of w (O, I) whose Euclidean norm exceeds `maxNorm` to norm `maxNorm`.
    public static func clampRowNorms(rows: Int, columns: Int, w: UnsafeMutablePointer<Float>, maxNorm: Float) {
        let vectorEnd = columns & ~15
        for o in 0..<rows {
            let row = w + o * columns
            var acc = Vector16(repeating: 0)
            var c = 0
            while c < vectorEnd {
                let v = load16(row + c)
                acc += v * v
                c += 16
            }
            var squares = acc.sum()
            while c < columns { squares += row[c] * row[c]; c += 1 }
            let norm = squares.squareRoot()
            if norm > maxNorm {
                let scale = maxNorm / norm
                for i in 0..<columns { row[i] *= scale }
            }
        }
    }

    package static func clampRowNormsReference(rows: Int, columns: Int, w: UnsafeMutablePointer<Float>, maxNorm: Float) {
        for o in 0..<rows {
            var squares: Double = 0
            for i in 0..<columns { squares += Double(w[o * columns + i]) * Double(w[o * columns + i]) }
            let norm = Float(squares.squareRoot())
            if norm > maxNorm {
                for i in 0..<columns { w[o * columns + i] *= maxNorm / norm }
            }
        }
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
