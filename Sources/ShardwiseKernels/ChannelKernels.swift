/// Per-channel kernels of batch normalization over `rows` segments of `count` floats, segment r
/// at `x + r * stride` (one channel's positions in each sample of a shard).
///
/// Sums are formed in Double: eight lanes take the elements at offsets 0...7 of each block of
/// eight, a ninth accumulator takes each segment's tail, and the lanes are added in lane order at
/// the end. The order depends only on (rows, count), so the bits are the same on any CPU. The
/// elementwise maps evaluate `x · a + b` in Float with a separate multiply and add (no fused
/// multiply-add), 8 floats at a time, as the plain loop would.
public enum ChannelKernels {
    /// (Σ a, Σ a · b) over the segments; `b` nil: (Σ a, Σ a²).
    public static func sums(
        rows: Int, count: Int, stride: Int, _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>? = nil
    ) -> (Double, Double) {
        var s = SIMD8<Double>(), q = SIMD8<Double>(), tailS = 0.0, tailQ = 0.0
        let blocks = count / 8 * 8
        for r in 0..<rows {
            let x = a + r * stride, y = b.map { $0 + r * stride } ?? x
            var i = 0
            while i < blocks {
                let u = SIMD8<Double>(UnsafeRawPointer(x + i).loadUnaligned(as: SIMD8<Float>.self))
                let v = SIMD8<Double>(UnsafeRawPointer(y + i).loadUnaligned(as: SIMD8<Float>.self))
                s += u
                q += u * v
                i += 8
            }
            while i < count {
                let u = Double(x[i]), v = Double(y[i])
                tailS += u
                tailQ += u * v
                i += 1
            }
        }
        var totalS = tailS, totalQ = tailQ
        for lane in 0..<8 {
            totalS += s[lane]
            totalQ += q[lane]
        }
        return (totalS, totalQ)
    }

    /// `out = x · a + b` over the segments (out may be x).
    public static func affine(rows: Int, count: Int, stride: Int, x: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>, a: Float, b: Float) {
        let va = SIMD8<Float>(repeating: a), vb = SIMD8<Float>(repeating: b), blocks = count / 8 * 8
        for r in 0..<rows {
            let p = x + r * stride, o = out + r * stride
            var i = 0
            while i < blocks {
                let v = UnsafeRawPointer(p + i).loadUnaligned(as: SIMD8<Float>.self) * va + vb
                UnsafeMutableRawPointer(o + i).storeBytes(of: v, as: SIMD8<Float>.self)
                i += 8
            }
            while i < count { o[i] = p[i] * a + b; i += 1 }
        }
    }

    /// `out = dy · a + x · b + c` over the segments.
    public static func affine2(
        rows: Int, count: Int, stride: Int, dy: UnsafePointer<Float>, x: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>, a: Float, b: Float, c: Float
    ) {
        let va = SIMD8<Float>(repeating: a), vb = SIMD8<Float>(repeating: b), vc = SIMD8<Float>(repeating: c), blocks = count / 8 * 8
        for r in 0..<rows {
            let g = dy + r * stride, p = x + r * stride, o = out + r * stride
            var i = 0
            while i < blocks {
                let v = UnsafeRawPointer(g + i).loadUnaligned(as: SIMD8<Float>.self) * va
                    + UnsafeRawPointer(p + i).loadUnaligned(as: SIMD8<Float>.self) * vb + vc
                UnsafeMutableRawPointer(o + i).storeBytes(of: v, as: SIMD8<Float>.self)
                i += 8
            }
            while i < count { o[i] = g[i] * a + p[i] * b + c; i += 1 }
        }
    }
}
