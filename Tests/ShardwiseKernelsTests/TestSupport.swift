import ShardwiseKernels

/// Deterministic test data from Philox: `count` floats uniform in [lo, hi).
func randomBuffer(_ count: Int, seed: UInt64, lo: Float = -1, hi: Float = 1) -> FloatBuffer {
    let buffer = FloatBuffer(count: count)
    let stream = RandomAddress(seed: seed, purpose: .synthetic)
    for i in 0..<count { buffer[i] = lo + (hi - lo) * stream.uniform(i) }
    return buffer
}

/// Runs `body` for every seed in 0..<count (swift-numerics' `withEvery(seed in:)` habit).
func withEverySeed(_ count: Int, _ body: (UInt64) throws -> Void) rethrows {
    for seed in 0..<UInt64(count) { try body(seed) }
}
