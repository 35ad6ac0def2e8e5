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
