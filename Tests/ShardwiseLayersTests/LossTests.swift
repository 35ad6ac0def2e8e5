import ShardwiseKernels
import XCTest

@testable import ShardwiseLayers

/// Mean squared error: its value against PyTorch's definition (the mean over samples and
/// targets) and its gradient against central differences in double precision.
final class LossTests: XCTestCase {
    func testMeanSquaredErrorValueAndGradient() {
        let rows = 5, width = 3
        var state: UInt64 = 3
        func next() -> Float {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return Float(state >> 40) / Float(1 << 24) * 4 - 2
        }
        let outputs = (0..<rows * width).map { _ in next() }
        let targets = (0..<rows * width).map { _ in next() }
        let labels = [Int32](repeating: 0, count: rows)
        var gradient = [Float](repeating: .nan, count: rows * width)
        let scale: Float = 1 / 8  // a global batch of 8: this shard's part of the batch mean
        let loss = outputs.withUnsafeBufferPointer { o in
            targets.withUnsafeBufferPointer { t in
                labels.withUnsafeBufferPointer { l in
                    gradient.withUnsafeMutableBufferPointer { g in
                        MeanSquaredError().evaluate(
                            outputs: o.baseAddress!, targets: LossTargets(labels: l.baseAddress!, values: t.baseAddress!),
                            rows: rows, width: width, gradientScale: scale, gradient: g.baseAddress!)
                    }
                }
            }
        }
        // The sum over rows of each row's mean squared error (PyTorch's MSELoss is this over N).
        func reference(_ o: [Double]) -> Double {
            (0..<rows).reduce(0.0) { sum, r in
                sum + (0..<width).reduce(0.0) { $0 + (o[r * width + $1] - Double(targets[r * width + $1])) * (o[r * width + $1] - Double(targets[r * width + $1])) } / Double(width)
            }
        }
        let o = outputs.map(Double.init)
        XCTAssertEqual(loss, reference(o), accuracy: 1e-9 * abs(loss))
        let h = 1e-6
        for k in 0..<o.count {
            var plus = o, minus = o
            plus[k] += h
            minus[k] -= h
            let numeric = (reference(plus) - reference(minus)) / (2 * h) * Double(scale)
            XCTAssertEqual(Double(gradient[k]), numeric, accuracy: 1e-5 * max(1, abs(numeric)), "element \(k)")
        }
    }

    /// Label-smoothed cross-entropy and BCE with logits: values against Double references
    /// written from PyTorch's definitions, gradients against central differences of them.
    func testSmoothedCrossEntropyAndBinaryCrossEntropy() {
        let rows = 4, width = 5
        let outputs: [Float] = (0..<rows * width).map { Float(($0 * 37) % 23) / 4 - 2.7 }
        let targets: [Float] = (0..<rows * width).map { Float(($0 * 11) % 7) / 6 }
        let labels: [Int32] = [3, 0, 4, 1]
        let e = 0.1
        func smoothed(_ z: [Double]) -> Double {
            (0..<rows).reduce(0.0) { sum, r in
                let row = Array(z[r * width..<(r + 1) * width])
                let lse = log(row.map { exp($0) }.reduce(0, +))
                let nll = lse - row[Int(labels[r])], uniform = lse - row.reduce(0, +) / Double(width)
                return sum + (1 - e) * nll + e * uniform
            }
        }
        func bce(_ z: [Double]) -> Double {
            (0..<rows).reduce(0.0) { sum, r in
                sum + (0..<width).reduce(0.0) { s, j in
                    let x = z[r * width + j], t = Double(targets[r * width + j])
                    return s - (t * log(1 / (1 + exp(-x))) + (1 - t) * log(1 - 1 / (1 + exp(-x))))
                } / Double(width)
            }
        }
        for (loss, reference, areLabels) in [
            (SoftmaxCrossEntropy(labelSmoothing: e) as any Loss, smoothed, true), (BinaryCrossEntropyWithLogits(), bce, false),
        ] {
            var gradient = [Float](repeating: .nan, count: rows * width)
            let value = outputs.withUnsafeBufferPointer { o in
                targets.withUnsafeBufferPointer { t in
                    labels.withUnsafeBufferPointer { l in
                        gradient.withUnsafeMutableBufferPointer { g in
                            loss.evaluate(
                                outputs: o.baseAddress!, targets: LossTargets(labels: l.baseAddress!, values: t.baseAddress!, areLabels: areLabels),
                                rows: rows, width: width, gradientScale: 0.5, gradient: g.baseAddress!)
                        }
                    }
                }
            }
            let z = outputs.map(Double.init)
            XCTAssertEqual(value, reference(z), accuracy: 1e-6 * abs(value), "\(type(of: loss))")
            for k in z.indices {
                var plus = z, minus = z
                plus[k] += 1e-6
                minus[k] -= 1e-6
                let numeric = (reference(plus) - reference(minus)) / 2e-6 * 0.5
                XCTAssertEqual(Double(gradient[k]), numeric, accuracy: 1e-5 * max(1, abs(numeric)), "\(type(of: loss)) element \(k)")
            }
        }
    }
}
