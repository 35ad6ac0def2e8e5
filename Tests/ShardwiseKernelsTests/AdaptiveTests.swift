import ShardwiseKernels
import XCTest

/// Adam, AdamW and RMSprop: the vectorised kernel equals its plain-loop reference bit for bit
/// (so where elements fall in vectors or the tail never changes a weight), and a hand-computed
/// Adam step.
final class AdaptiveTests: XCTestCase {
    func hyper(_ algorithm: OptimizerAlgorithm, decay: Float, momentum: Float = 0, clip: Float = 1, step: Int) -> UpdateHyperparameters {
        var h = UpdateHyperparameters(learningRate: 0.01, momentum: momentum, weightDecay: decay)
        h.algorithm = algorithm
        h.beta2 = algorithm == .rmsprop ? 0.99 : 0.999
        h.beta2Complement = algorithm == .rmsprop ? 0.01 : 0.001
        h.decayFactor = 1 - 0.01 * decay
        let t = Float(step + 1)
        h.stepSize = 0.01 / (1 - powf(0.9, t))
        h.biasCorrection2Root = (1 - powf(0.999, t)).squareRoot()
        h.gradientScale = clip
        return h
    }

    func testFastMatchesReference() {
        let n = 100
        for algorithm in [OptimizerAlgorithm.adam, .adamw, .rmsprop] {
            for shardCount in [1, 3] {
                for (decay, momentum, clip) in [(Float(0), Float(0), Float(1)), (1e-2, 0.5, 0.37)] {
                    let w = randomBuffer(n, seed: 1), wRef = FloatBuffer(count: n)
                    wRef.copy(from: w)
                    let a = FloatBuffer(count: n), b = FloatBuffer(count: n), aRef = FloatBuffer(count: n), bRef = FloatBuffer(count: n)
                    for step in 0..<4 {
                        let buffers = (0..<shardCount).map { randomBuffer(n, seed: UInt64(10 * step + $0)) }
                        var shards = buffers.map(\.pointer)
                        let h = hyper(algorithm, decay: decay, momentum: momentum, clip: clip, step: step)
                        XCTAssertTrue(AdaptiveKernel.update(
                            range: 0..<n, weights: w.pointer, gradients: &shards, shardCount: shardCount, first: a.pointer, second: b.pointer,
                            hyper: h, firstStep: step == 0))
                        AdaptiveKernel.updateReference(
                            range: 0..<n, weights: wRef.pointer, gradients: &shards, shardCount: shardCount, first: aRef.pointer, second: bRef.pointer,
                            hyper: h, firstStep: step == 0)
                    }
                    XCTAssertEqual(w.array, wRef.array, "\(algorithm) \(shardCount) shards")
                    XCTAssertEqual(a.array, aRef.array)
                    XCTAssertEqual(b.array, bRef.array)
                    XCTAssertNotEqual(w.array, randomBuffer(n, seed: 1).array)
                }
            }
        }
    }

    /// Adam's first step moves each weight by about lr in the gradient's sign: m̂ = g, v̂ = g².
    func testFirstAdamStepByHand() {
        let w = FloatBuffer(count: 1), g = FloatBuffer(count: 1), m = FloatBuffer(count: 1), v = FloatBuffer(count: 1)
        w[0] = 1
        g[0] = -0.5
        var shards = [g.pointer]
        AdaptiveKernel.update(range: 0..<1, weights: w.pointer, gradients: &shards, shardCount: 1, first: m.pointer, second: v.pointer,
                              hyper: hyper(.adam, decay: 0, step: 0), firstStep: true)
        XCTAssertEqual(m[0], -0.05, accuracy: 1e-8)
        XCTAssertEqual(v[0], 0.00025, accuracy: 1e-10)
        XCTAssertEqual(w[0], 1.01, accuracy: 1e-6)
        // A NaN gradient is reported.
        g[0] = .nan
        XCTAssertFalse(AdaptiveKernel.update(range: 0..<1, weights: w.pointer, gradients: &shards, shardCount: 1, first: m.pointer, second: v.pointer,
                                             hyper: hyper(.adam, decay: 0, step: 1), firstStep: false))
    }
}
