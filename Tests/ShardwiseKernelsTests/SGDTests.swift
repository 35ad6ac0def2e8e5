import ShardwiseKernels
import XCTest

final class SGDTests: XCTestCase {
    func run(_ h: UpdateHyperparameters, weight: Float, gradients: [Float]) -> [Float] {
        let w = FloatBuffer(count: 1), g = FloatBuffer(count: 1), v = FloatBuffer(count: 1)
        w[0] = weight
        var trace: [Float] = []
        for (step, gradient) in gradients.enumerated() {
            g[0] = gradient
            var shards = [g.pointer]
            SGDKernel.update(range: 0..<1, weights: w.pointer, gradients: &shards, shardCount: 1, velocity: v.pointer, hyper: h, firstStep: step == 0)
            trace.append(w[0])
        }
        return trace
    }

    /// Steps computed by hand from PyTorch's torch.optim.SGD formulas.
    func testHandComputedSteps() {
        // Plain SGD: w = 1 - 0.1 * 0.5.
        XCTAssertEqual(run(.init(learningRate: 0.1), weight: 1, gradients: [0.5]), [0.95])
        // Momentum 0.9: buf = 0.5, w = 0.95; then buf = 0.9 * 0.5 + 0.5 = 0.95, w = 0.95 - 0.095 = 0.855.
        let momentum = run(.init(learningRate: 0.1, momentum: 0.9), weight: 1, gradients: [0.5, 0.5])
        XCTAssertEqual(momentum[0], 0.95, accuracy: 1e-7)
        XCTAssertEqual(momentum[1], 0.855, accuracy: 1e-6)
        // Nesterov: buf = 0.5, direction = 0.5 + 0.9 * 0.5 = 0.95, w = 1 - 0.095 = 0.905;
        // then buf = 0.95, direction = 0.5 + 0.855 = 1.355, w = 0.905 - 0.1355 = 0.7695.
        let nesterov = run(.init(learningRate: 0.1, momentum: 0.9, nesterov: true), weight: 1, gradients: [0.5, 0.5])
        XCTAssertEqual(nesterov[0], 0.905, accuracy: 1e-6)
        XCTAssertEqual(nesterov[1], 0.7695, accuracy: 1e-6)
        // Weight decay 0.1 adds 0.1 * w to the gradient: 1 - 0.1 * (0.5 + 0.1) = 0.94.
        XCTAssertEqual(run(.init(learningRate: 0.1, weightDecay: 0.1), weight: 1, gradients: [0.5])[0], 0.94, accuracy: 1e-7)
    }

    /// The vectorised update equals the reference bit for bit, for every option and shard count.
    func testFastMatchesReference() {
        let n = 100
        for shardCount in [1, 2, 3, 5] {
        for momentum: Float in [0, 0.9] {
            for nesterov in [false, true] where !nesterov || momentum > 0 {
                for decay: Float in [0, 1e-3] {
                    let h = UpdateHyperparameters(learningRate: 0.05, momentum: momentum, weightDecay: decay, nesterov: nesterov)
                    let w = randomBuffer(n, seed: 1), wRef = FloatBuffer(count: n)
                    wRef.copy(from: w)
                    let v = FloatBuffer(count: n), vRef = FloatBuffer(count: n)
                    for step in 0..<3 {
                        let buffers = (0..<shardCount).map { randomBuffer(n, seed: UInt64(10 * step + $0)) }
                        var shards = buffers.map(\.pointer)
                        SGDKernel.update(range: 0..<n, weights: w.pointer, gradients: &shards, shardCount: shardCount, velocity: v.pointer, hyper: h, firstStep: step == 0)
                        SGDKernel.updateReference(range: 0..<n, weights: wRef.pointer, gradients: &shards, shardCount: shardCount, velocity: vRef.pointer, hyper: h, firstStep: step == 0)
                    }
                    XCTAssertEqual(w.array, wRef.array)
                    XCTAssertEqual(v.array, vRef.array)
                    // A sub-range touches only its elements.
                    let before = w.array
                    var shards = [randomBuffer(n, seed: 99).pointer]
                    SGDKernel.update(range: 5..<40, weights: w.pointer, gradients: &shards, shardCount: 1, velocity: v.pointer, hyper: h, firstStep: false)
                    XCTAssertEqual(Array(w.array[0..<5]) + Array(w.array[40...]), Array(before[0..<5]) + Array(before[40...]))
                }
            }
        }
        }
    }

    /// The fused shard sum is the left fold g₀ + g₁ + g₂ in that order: with plain SGD and lr 1,
    /// w - Σg reproduces it exactly.
    func testShardSumOrder() {
        let n = 33
        let buffers = (0..<3).map { randomBuffer(n, seed: UInt64(20 + $0), lo: -1e3, hi: 1e3) }
        var shards = buffers.map(\.pointer)
        let w = FloatBuffer(count: n), v = FloatBuffer(count: n)
        SGDKernel.update(range: 0..<n, weights: w.pointer, gradients: &shards, shardCount: 3, velocity: v.pointer, hyper: .init(learningRate: 1), firstStep: true)
        for i in 0..<n { XCTAssertEqual(w[i], 0 - ((buffers[0][i] + buffers[1][i]) + buffers[2][i])) }
    }
}
