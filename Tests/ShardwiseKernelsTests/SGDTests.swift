import ShardwiseKernels
import XCTest

final class SGDTests: XCTestCase {
    func run(_ h: SGDHyperparameters, weight: Float, gradients: [Float]) -> [Float] {
        let w = FloatBuffer(count: 1), g = FloatBuffer(count: 1), v = FloatBuffer(count: 1)
        w[0] = weight
        var trace: [Float] = []
        for (step, gradient) in gradients.enumerated() {
            g[0] = gradient
            SGDKernel.update(count: 1, weights: w.pointer, gradient: g.pointer, velocity: v.pointer, hyper: h, firstStep: step == 0)
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

    /// The vectorised update equals the reference bit for bit, for every option.
    func testFastMatchesReference() {
        let n = 100
        for momentum: Float in [0, 0.9] {
            for nesterov in [false, true] where !nesterov || momentum > 0 {
                for decay: Float in [0, 1e-3] {
                    let h = SGDHyperparameters(learningRate: 0.05, momentum: momentum, weightDecay: decay, nesterov: nesterov)
                    let w = randomBuffer(n, seed: 1), wRef = FloatBuffer(count: n)
                    wRef.copy(from: w)
                    let v = FloatBuffer(count: n), vRef = FloatBuffer(count: n)
                    for step in 0..<3 {
                        let g = randomBuffer(n, seed: UInt64(10 + step))
                        SGDKernel.update(count: n, weights: w.pointer, gradient: g.pointer, velocity: v.pointer, hyper: h, firstStep: step == 0)
                        SGDKernel.updateReference(count: n, weights: wRef.pointer, gradient: g.pointer, velocity: vRef.pointer, hyper: h, firstStep: step == 0)
                    }
                    XCTAssertEqual(w.array, wRef.array)
                    XCTAssertEqual(v.array, vRef.array)
                }
            }
        }
    }
}
