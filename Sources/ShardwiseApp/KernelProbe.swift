import Shardwise

/// Measurements of the machine's own limits, against which throughput is judged.
public enum KernelProbe {
    /// The matrix products one shard's forward and backward pass makes, on scratch buffers.
    public final class TrainingGEMMs: @unchecked Sendable {
        struct Product {
            var transposeA: Bool, transposeB: Bool, m: Int, n: Int, k: Int
        }
        let products: [Product]
        let a: FloatBuffer, b: FloatBuffer, c: FloatBuffer
        /// Floating-point operations of one `run()`.
        public let flops: Double

        /// The products of `network` for `rows` rows: per linear layer, forward
        /// `(N,I)·(O,I)ᵀ`, weight gradient `(N,O)ᵀ·(N,I)` and, past the first layer,
        /// input gradient `(N,O)·(O,I)` — exactly the calls `Linear.backward` makes.
        public init(network: Network, rows: Int) throws(BLASError) {
            if MatrixKernels.current == .blas { _ = try BLAS.load() }
            var products: [Product] = []
            var first = true
            for linear in network.nodes.compactMap({ $0.layer as? Linear }) {
                let i = linear.inputs, o = linear.outputs
                products.append(Product(transposeA: false, transposeB: true, m: rows, n: o, k: i))
                products.append(Product(transposeA: true, transposeB: false, m: o, n: i, k: rows))
                if !first { products.append(Product(transposeA: false, transposeB: false, m: rows, n: i, k: o)) }
                first = false
            }
            self.products = products
            let largest = products.map { max($0.m * $0.k, $0.k * $0.n, $0.m * $0.n) }.max()!
            a = FloatBuffer(count: largest)
            b = FloatBuffer(count: largest)
            c = FloatBuffer(count: largest)
            for i in 0..<largest {
                a[i] = Float(i % 7) * 0.01
                b[i] = Float(i % 5) * 0.01
            }
            flops = products.reduce(0) { $0 + 2 * Double($1.m * $1.n * $1.k) }
        }

        public func run() {
            for p in products { product(p) }
        }

        /// GFLOP/s on the calling thread, timed over about `seconds` after one warm-up run.
        public func gflops(seconds: Double) -> Double {
            let (repetitions, elapsed) = measureRepeatedly(seconds: seconds, run)
            return flops * Double(repetitions) / elapsed * 1e-9
        }

        /// Each product alone: its shape ("NT 64x1024x784") and GFLOP/s with the BLAS and with
        /// the portable kernels, measured alternately in this call (`seconds` each, 3 rounds, best kept).
        public func comparison(seconds: Double) throws(KernelError) -> [(shape: String, blas: Double, portable: Double)] {
            defer { try? MatrixKernels.select(.blas) }
            return try products.map { (p) throws(KernelError) in
                let one = { self.product(p) }
                var best = (blas: 0.0, portable: 0.0)
                for _ in 0..<3 {
                    for kernels in [MatrixKernels.blas, .portable] {
                        try MatrixKernels.select(kernels)
                        let (repetitions, elapsed) = measureRepeatedly(seconds: seconds, one)
                        let rate = 2 * Double(p.m * p.n * p.k) * Double(repetitions) / elapsed * 1e-9
                        if kernels == .blas { best.blas = max(best.blas, rate) } else { best.portable = max(best.portable, rate) }
                    }
                }
                return ("\(p.transposeA ? "T" : "N")\(p.transposeB ? "T" : "N") \(p.m)x\(p.n)x\(p.k)", best.blas, best.portable)
            }
        }

        func product(_ p: Product) {
            BLAS.gemm(
                transposeA: p.transposeA, transposeB: p.transposeB, m: p.m, n: p.n, k: p.k,
                a: a.pointer, lda: p.transposeA ? p.m : p.k, b: b.pointer, ldb: p.transposeB ? p.k : p.n,
                beta: 0, c: c.pointer, ldc: p.n)
        }
    }

    /// FLOPs of one training step: forward plus backward is 3 products per
    /// layer of 2·I·O FLOPs per sample, i.e. about 6 x parameters per sample.
    public static func trainingFLOPs(network: Network, samples: Int) -> Double {
        6 * Double(network.multiplyAddsPerSample) * Double(samples)
    }
}
