import ShardwiseKernels

/// Quick measurements of the machine's limits, for `doctor` and reports.
public enum KernelProbe {
    /// GFLOP/s of `C (m, n) = A (m, k) · Bᵀ` on the calling thread, timed over about `seconds`.
    public static func gemmGFLOPS(m: Int, n: Int, k: Int, seconds: Double) -> Double {
        let a = FloatBuffer(count: m * k), b = FloatBuffer(count: n * k), c = FloatBuffer(count: m * n)
        for i in 0..<a.count { a[i] = Float(i % 7) * 0.1 }
        for i in 0..<b.count { b[i] = Float(i % 5) * 0.1 }
        func once() {
            BLAS.gemm(
                transposeA: false, transposeB: true, m: m, n: n, k: k, a: a.pointer, lda: k,
                b: b.pointer, ldb: k, beta: 0, c: c.pointer, ldc: n)
        }
        once()
        var repetitions = 0
        let start = monotonicSeconds()
        var elapsed = 0.0
        repeat {
            once()
            repetitions += 1
            elapsed = monotonicSeconds() - start
        } while elapsed < seconds
        return 2 * Double(m * n * k) * Double(repetitions) / elapsed * 1e-9
    }
}
