import ShardwiseKernels
import XCTest

/// Every fast kernel against its plain-loop reference, bit for bit, on odd sizes too.
final class ElementwiseTests: XCTestCase {
    let shapes = [(1, 1), (3, 17), (5, 33), (4, 784), (2, 1024), (7, 10)]

    func testBiasAndColumnSums() {
        withEverySeed(5) { seed in
            for (rows, columns) in shapes {
                let y = randomBuffer(rows * columns, seed: seed), yRef = FloatBuffer(count: rows * columns)
                yRef.copy(from: y)
                let bias = randomBuffer(columns, seed: seed + 100)
                Elementwise.addBias(rows: rows, columns: columns, y: y.pointer, bias: bias.pointer)
                Elementwise.addBiasReference(rows: rows, columns: columns, y: yRef.pointer, bias: bias.pointer)
                XCTAssertEqual(y.array, yRef.array)
                let sums = FloatBuffer(count: columns), sumsRef = FloatBuffer(count: columns)
                Elementwise.columnSums(rows: rows, columns: columns, dy: y.pointer, sums: sums.pointer)
                Elementwise.columnSumsReference(rows: rows, columns: columns, dy: y.pointer, sums: sumsRef.pointer)
                XCTAssertEqual(sums.array, sumsRef.array, "\(rows)x\(columns)")
            }
        }
    }

    func testReluForwardBackwardMultiply() {
        withEverySeed(5) { seed in
            for (rows, columns) in shapes {
                let n = rows * columns
                let x = randomBuffer(n, seed: seed), dy = randomBuffer(n, seed: seed + 7)
                let y = FloatBuffer(count: n), yRef = FloatBuffer(count: n)
                Elementwise.relu(count: n, x: x.pointer, y: y.pointer)
                Elementwise.reluReference(count: n, x: x.pointer, y: yRef.pointer)
                XCTAssertEqual(y.array, yRef.array)
                XCTAssert(y.array.allSatisfy { $0 >= 0 })
                let dx = FloatBuffer(count: n), dxRef = FloatBuffer(count: n)
                Elementwise.reluBackward(count: n, y: y.pointer, dy: dy.pointer, dx: dx.pointer)
                Elementwise.reluBackwardReference(count: n, y: y.pointer, dy: dy.pointer, dx: dxRef.pointer)
                XCTAssertEqual(dx.array, dxRef.array)
                for i in 0..<n { XCTAssertEqual(dx[i], x[i] > 0 ? dy[i] : 0) }
                Elementwise.multiply(count: n, a: x.pointer, b: dy.pointer, out: y.pointer)
                Elementwise.multiplyReference(count: n, a: x.pointer, b: dy.pointer, out: yRef.pointer)
                XCTAssertEqual(y.array, yRef.array)
                let sum = randomBuffer(n, seed: seed + 9), sumRef = FloatBuffer(count: n)
                sumRef.copy(from: sum)
                Elementwise.add(count: n, x: dy.pointer, y: sum.pointer)
                Elementwise.addReference(count: n, x: dy.pointer, y: sumRef.pointer)
                XCTAssertEqual(sum.array, sumRef.array)
            }
        }
    }

    func testClampRowNorms() {
        withEverySeed(5) { seed in
            for (rows, columns) in shapes {
                let w = randomBuffer(rows * columns, seed: seed, lo: -2, hi: 2), wRef = FloatBuffer(count: rows * columns)
                wRef.copy(from: w)
                Elementwise.clampRowNorms(rows: rows, columns: columns, w: w.pointer, maxNorm: 1.5)
                Elementwise.clampRowNormsReference(rows: rows, columns: columns, w: wRef.pointer, maxNorm: 1.5)
                for i in 0..<w.count { XCTAssertEqual(w[i], wRef[i], accuracy: 1e-5) }
                for r in 0..<rows {
                    let norm = (0..<columns).reduce(Float(0)) { $0 + w[r * columns + $1] * w[r * columns + $1] }.squareRoot()
                    XCTAssertLessThanOrEqual(norm, 1.5 * (1 + 1e-5))
                }
            }
        }
    }

    /// A row of norm 5 is scaled to the bound exactly; a row under the bound is untouched.
    func testClampRowNormsByHand() {
        let w = FloatBuffer(count: 4)
        for (i, v) in [3, 4, 0.3, 0.4].enumerated() { w[i] = Float(v) }
        Elementwise.clampRowNorms(rows: 2, columns: 2, w: w.pointer, maxNorm: 2.5)
        XCTAssertEqual(w.array, [1.5, 2, 0.3, 0.4])
    }

    func testSoftmaxCrossEntropyByHand() {
        let logits = FloatBuffer(count: 3)
        logits[0] = 1; logits[1] = 2; logits[2] = 3
        var label: Int32 = 2
        let grad = FloatBuffer(count: 3)
        let loss = Elementwise.softmaxCrossEntropy(
            rows: 1, classes: 3, logits: logits.pointer, labels: &label, gradientScale: 0.5, grad: grad.pointer)
        let z = [1.0, 2, 3].map { exp($0) }, total = z.reduce(0, +)
        XCTAssertEqual(loss, -log(z[2] / total), accuracy: 1e-6)
        for c in 0..<3 {
            XCTAssertEqual(Double(grad[c]), (z[c] / total - (c == 2 ? 1 : 0)) * 0.5, accuracy: 1e-7)
        }
    }

    func testBLASMatchesNaiveProduct() throws {
        _ = try BLAS.load()
        let (m, n, k) = (5, 7, 9)
        let a = randomBuffer(m * k, seed: 1), b = randomBuffer(n * k, seed: 2), c = FloatBuffer(count: m * n)
        BLAS.gemm(transposeA: false, transposeB: true, m: m, n: n, k: k, a: a.pointer, lda: k, b: b.pointer, ldb: k, beta: 0, c: c.pointer, ldc: n)
        for i in 0..<m {
            for j in 0..<n {
                let expected = (0..<k).reduce(0.0) { $0 + Double(a[i * k + $1]) * Double(b[j * k + $1]) }
                XCTAssertEqual(Double(c[i * n + j]), expected, accuracy: 1e-5)
            }
        }
    }
}

#if canImport(Glibc)
import Glibc
#endif
