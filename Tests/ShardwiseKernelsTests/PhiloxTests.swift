import ShardwiseKernels
import XCTest

final class PhiloxTests: XCTestCase {
    /// Random123's known-answer vectors for philox4x32-10 (kat_vectors).
    func testKnownAnswers() {
        let cases: [(counter: SIMD4<UInt32>, key: SIMD2<UInt32>, expected: SIMD4<UInt32>)] = [
            (SIMD4(0, 0, 0, 0), SIMD2(0, 0), SIMD4(0x6627_e8d5, 0xe169_c58d, 0xbc57_ac4c, 0x9b00_dbd8)),
            (SIMD4(repeating: 0xffff_ffff), SIMD2(repeating: 0xffff_ffff),
             SIMD4(0x408f_276d, 0x41c8_3b0e, 0xa20b_c7c6, 0x6d54_51fd)),
            (SIMD4(0x243f_6a88, 0x85a3_08d3, 0x1319_8a2e, 0x0370_7344), SIMD2(0xa409_3822, 0x299f_31d0),
             SIMD4(0xd16c_fe09, 0x94fd_cceb, 0x5001_e420, 0x2412_6ea1)),
        ]
        for c in cases {
            XCTAssertEqual(Philox.block(counter: c.counter, key: c.key), c.expected)
        }
    }

    /// The 8-lane generator agrees with the scalar one on every lane, including across the 2^32 wrap.
    func testEightLanesMatchScalar() {
        for seed in 0..<50 {
            let first = UInt32(truncatingIfNeeded: seed &* 0x9E37_79B9) | (seed == 7 ? 0xffff_fffc : 0)
            let key = SIMD2<UInt32>(UInt32(seed), UInt32(seed * 31))
            let (w0, w1, w2, w3) = Philox.block8(first: first, c1: 5, c2: UInt32(seed), c3: 0x0300_0002, key: key)
            for lane in 0..<8 {
                let expected = Philox.block(
                    counter: SIMD4(first &+ UInt32(lane), 5, UInt32(seed), 0x0300_0002), key: key)
                XCTAssertEqual(SIMD4(w0[lane], w1[lane], w2[lane], w3[lane]), expected, "seed \(seed) lane \(lane)")
            }
        }
    }

    func testAddressesSeparatePurposesAndSeeds() {
        let a = RandomAddress(seed: 1, purpose: .dropout, step: 3, position: 4, layer: 2)
        XCTAssertNotEqual(a.block(0), RandomAddress(seed: 2, purpose: .dropout, step: 3, position: 4, layer: 2).block(0))
        XCTAssertNotEqual(a.block(0), RandomAddress(seed: 1, purpose: .shuffle, step: 3, position: 4, layer: 2).block(0))
        XCTAssertNotEqual(a.block(0), RandomAddress(seed: 1, purpose: .dropout, step: 3, position: 4, layer: 1).block(0))
        XCTAssertEqual(a.block(9), RandomAddress(seed: 1, purpose: .dropout, step: 3, position: 4, layer: 2).block(9))
    }

    func testUniformAndIntegerRanges() {
        let stream = RandomAddress(seed: 42, purpose: .synthetic)
        var sum = 0.0
        let n = 40_000
        var counts = [Int](repeating: 0, count: 7)
        for i in 0..<n {
            let u = stream.uniform(i)
            XCTAssert(u >= 0 && u < 1)
            sum += Double(u)
            counts[stream.integer(i, below: 7)] += 1
        }
        XCTAssertEqual(sum / Double(n), 0.5, accuracy: 0.01)
        for count in counts { XCTAssertEqual(Double(count) / Double(n), 1.0 / 7, accuracy: 0.01) }
    }
}
