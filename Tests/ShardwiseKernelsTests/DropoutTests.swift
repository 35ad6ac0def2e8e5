import ShardwiseKernels
import XCTest

final class DropoutTests: XCTestCase {
    func testFastMaskMatchesReference() {
        for columns in [1, 10, 31, 32, 33, 100, 784, 1024] {
            for p in [0.0, 0.2, 0.5, 0.9] {
                let rows = 3
                let address = RandomAddress(seed: 9, purpose: .dropout, step: 4, layer: 1)
                let fast = FloatBuffer(count: rows * columns), reference = FloatBuffer(count: rows * columns)
                DropoutKernel.fillMask(rows: rows, columns: columns, address: address, firstPosition: 5, dropProbability: p, mask: fast.pointer)
                DropoutKernel.fillMaskReference(rows: rows, columns: columns, address: address, firstPosition: 5, dropProbability: p, mask: reference.pointer)
                XCTAssertEqual(fast.array, reference.array, "columns \(columns) p \(p)")
            }
        }
    }

    /// Over many seeds: the kept fraction is 1 - p, survivors are scaled by exactly
    /// 1/(1-p), so the mask's mean is 1 (inverted dropout keeps expectations).
    func testKeepRateAndScaleOverSeeds() {
        for p in [0.2, 0.5, 0.8] {
            var kept = 0, total = 0
            var sum = 0.0
            let rows = 16, columns = 256
            let mask = FloatBuffer(count: rows * columns)
            withEverySeed(40) { seed in
                DropoutKernel.fillMask(
                    rows: rows, columns: columns, address: RandomAddress(seed: seed, purpose: .dropout, step: 0, layer: 0),
                    firstPosition: 0, dropProbability: p, mask: mask.pointer)
                for v in mask.array {
                    XCTAssert(v == 0 || v == Float(1 / (1 - p)), "mask value \(v)")
                    if v != 0 { kept += 1 }
                    sum += Double(v)
                    total += 1
                }
            }
            let keepRate = Double(kept) / Double(total)
            // n = 163,840 draws: the standard error of the keep rate is below 0.0013.
            XCTAssertEqual(keepRate, 1 - p, accuracy: 0.006, "p = \(p)")
            XCTAssertEqual(sum / Double(total), 1, accuracy: 0.03, "p = \(p)")
        }
    }

    /// A row's mask depends on its global position, not on how rows are split into shards.
    func testMaskIndependentOfShardSplit() {
        let columns = 100
        let address = RandomAddress(seed: 3, purpose: .dropout, step: 11, layer: 2)
        let whole = FloatBuffer(count: 8 * columns)
        DropoutKernel.fillMask(rows: 8, columns: columns, address: address, firstPosition: 0, dropProbability: 0.5, mask: whole.pointer)
        let half = FloatBuffer(count: 3 * columns)
        DropoutKernel.fillMask(rows: 3, columns: columns, address: address, firstPosition: 5, dropProbability: 0.5, mask: half.pointer)
        XCTAssertEqual(half.array, Array(whole.array[5 * columns..<8 * columns]))
        // Different steps give different masks.
        let other = FloatBuffer(count: 8 * columns)
        DropoutKernel.fillMask(
            rows: 8, columns: columns, address: RandomAddress(seed: 3, purpose: .dropout, step: 12, layer: 2),
            firstPosition: 0, dropProbability: 0.5, mask: other.pointer)
        XCTAssertNotEqual(other.array, whole.array)
    }

    func testThresholdEdges() {
        XCTAssertEqual(DropoutKernel.threshold(dropProbability: 0), 0)
        XCTAssertEqual(DropoutKernel.threshold(dropProbability: 0.5), 1 << 31)
        XCTAssertEqual(DropoutKernel.threshold(dropProbability: 0.999_999_999_9), 4_294_967_295)
    }
}

final class DropoutVariantTests: XCTestCase {
    /// Gaussian dropout over many seeds: mean 1 and variance p/(1-p), Bernoulli dropout's own.
    func testGaussianMeanAndVariance() {
        for p in [0.2, 0.5] {
            var sum = 0.0, squares = 0.0, count = 0
            let rows = 16, columns = 255
            let mask = FloatBuffer(count: rows * columns)
            withEverySeed(20) { seed in
                DropoutKernel.fillGaussianMask(
                    rows: rows, columns: columns, address: RandomAddress(seed: seed, purpose: .dropout, step: 3, layer: 1),
                    firstPosition: 0, dropProbability: p, mask: mask.pointer)
                for v in mask.array {
                    XCTAssert(v.isFinite)
                    sum += Double(v)
                    squares += Double(v) * Double(v)
                    count += 1
                }
            }
            let mean = sum / Double(count), variance = squares / Double(count) - mean * mean
            // n = 81,600: the standard error of the mean is below 0.0036 for p = 0.5.
            XCTAssertEqual(mean, 1, accuracy: 0.015, "p = \(p)")
            XCTAssertEqual(variance, p / (1 - p), accuracy: 0.03 * p / (1 - p) + 0.01, "p = \(p)")
        }
    }

    /// Like Bernoulli masks, Gaussian masks depend on a row's global position, not on the shard split.
    func testGaussianIndependentOfShardSplit() {
        let columns = 37
        let address = RandomAddress(seed: 3, purpose: .dropout, step: 11, layer: 2)
        let whole = FloatBuffer(count: 6 * columns), part = FloatBuffer(count: 2 * columns)
        DropoutKernel.fillGaussianMask(rows: 6, columns: columns, address: address, firstPosition: 0, dropProbability: 0.5, mask: whole.pointer)
        DropoutKernel.fillGaussianMask(rows: 2, columns: columns, address: address, firstPosition: 4, dropProbability: 0.5, mask: part.pointer)
        XCTAssertEqual(part.array, Array(whole.array[4 * columns..<6 * columns]))
    }

    /// DropConnect weight masks (the Bernoulli kernel over (O, I)): keep rate 1 - p over seeds and steps.
    func testDropConnectMaskKeepRate() {
        let (o, i) = (64, 100)
        let mask = FloatBuffer(count: o * i)
        var kept = 0, total = 0
        for step in UInt32(0)..<20 {
            DropoutKernel.fillMask(
                rows: o, columns: i, address: RandomAddress(seed: 5, purpose: .dropConnect, step: step, layer: 0),
                firstPosition: 0, dropProbability: 0.3, mask: mask.pointer)
            kept += mask.array.filter { $0 != 0 }.count
            total += o * i
        }
        XCTAssertEqual(Double(kept) / Double(total), 0.7, accuracy: 0.01)
    }
}
