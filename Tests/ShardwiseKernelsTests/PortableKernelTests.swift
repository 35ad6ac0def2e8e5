import CShardwiseBLAS
import Foundation
import XCTest

@testable import ShardwiseKernels

/// The portable kernels: every instruction set this CPU has gives the bits of the fma
/// definition, for every transposition the layers use, at shapes around every block edge and
/// with values of large dynamic range; and the portable math is close to the C library's.
final class PortableKernelTests: XCTestCase {
    override func tearDown() {
        _ = sw_portable_select(MatrixKernels.availableISAs.last!)
    }

    func values(_ count: Int, seed: UInt64) -> [Float] {
        var state = seed
        return (0..<count).map { _ in
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            let mantissa = Float(state >> 40) / Float(1 << 24) * 2 - 1
            return mantissa * Float(sign: .plus, exponent: Int((state >> 20) % 24) - 12, significand: 1)  // 2^-12 .. 2^11
        }
    }

    func testEveryISAGivesTheFMADefinitionsBits() throws {
        let shapes: [(Int, Int, Int)] = [
            (1, 1, 1), (1, 17, 3), (5, 1, 7), (6, 16, 256), (7, 17, 257), (12, 32, 255), (13, 33, 513), (95, 97, 96),
            (96, 2048, 1), (97, 2049, 300), (64, 1024, 784), (33, 10, 1024), (128, 7, 5),
        ]
        var checked = 0
        for (index, (m, n, k)) in shapes.enumerated() {
            for (ta, tb) in [(false, true), (true, false), (false, false), (true, true)] {
                let a = values(m * k, seed: UInt64(index * 4 + 1)), b = values(k * n, seed: UInt64(index * 4 + 2))
                let lda = ta ? m : k, ldb = tb ? k : n
                var reference = [Float](repeating: .nan, count: m * n)
                sw_reference_sgemm(ta ? 1 : 0, tb ? 1 : 0, Int32(m), Int32(n), Int32(k), a, Int32(lda), b, Int32(ldb), &reference, Int32(n))
                for isa in MatrixKernels.availableISAs {
                    XCTAssertEqual(sw_portable_select(isa), 0)
                    var c = [Float](repeating: .nan, count: m * n)
                    sw_portable_sgemm(ta ? 1 : 0, tb ? 1 : 0, Int32(m), Int32(n), Int32(k), a, Int32(lda), b, Int32(ldb), &c, Int32(n))
                    XCTAssertEqual(c.map(\.bitPattern), reference.map(\.bitPattern), "\(isa) \(m)x\(n)x\(k) ta \(ta) tb \(tb)")
                    checked += 1
                }
            }
        }
        print("portable kernels: \(checked) products bit-identical to the definition on \(MatrixKernels.availableISAs)")
        XCTAssertGreaterThanOrEqual(MatrixKernels.availableISAs.count, 1)
    }

    /// B gathered while packed (x at kOffsets[p] + nOffsets[j]): the definition's bits on the
    /// written-out B, for every instruction set, with offsets that run in blocks of 8 along the
    /// columns, along the rows, both, or neither, and shapes around the block edges.
    func testGatheredProductsGiveTheDefinitionsBits() {
        let shapes: [(m: Int, n: Int, k: Int)] = [(1, 1, 1), (7, 17, 9), (8, 32, 8), (13, 40, 257), (64, 512, 800), (9, 2050, 24), (33, 24, 513)]
        let x = values(40_000, seed: 9)
        // 0: consecutive columns (runs of 8 along n), 1: consecutive rows, 2: both, 3: scattered.
        func offsets(_ count: Int, consecutive: Bool, seed: UInt64) -> [Int32] {
            var state = seed
            return (0..<count).map { i in
                state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
                return consecutive ? Int32(i / 8 * 37 + i % 8) : Int32((state >> 33) % 19_000)
            }
        }
        var checked = 0
        for (index, (m, n, k)) in shapes.enumerated() {
            for pattern in 0..<4 {
                let kOffsets = offsets(k, consecutive: pattern == 1 || pattern == 2, seed: UInt64(index * 8 + pattern))
                let nOffsets = offsets(n, consecutive: pattern == 0 || pattern == 2, seed: UInt64(index * 8 + pattern + 4))
                var b = [Float](repeating: 0, count: k * n)
                for p in 0..<k { for j in 0..<n { b[p * n + j] = x[Int(kOffsets[p] + nOffsets[j])] } }
                for ta in [false, true] {
                    let a = values(m * k, seed: UInt64(index * 2 + (ta ? 1 : 0) + 100)), lda = ta ? m : k
                    var reference = [Float](repeating: .nan, count: m * n)
                    sw_reference_sgemm(ta ? 1 : 0, 0, Int32(m), Int32(n), Int32(k), a, Int32(lda), b, Int32(n), &reference, Int32(n))
                    for isa in MatrixKernels.availableISAs {
                        XCTAssertEqual(sw_portable_select(isa), 0)
                        var c = [Float](repeating: .nan, count: m * n)
                        sw_portable_sgemm_gathered(ta ? 1 : 0, Int32(m), Int32(n), Int32(k), a, Int32(lda), x, kOffsets, nOffsets, &c, Int32(n))
                        XCTAssertEqual(c.map(\.bitPattern), reference.map(\.bitPattern), "\(isa) \(m)x\(n)x\(k) pattern \(pattern) ta \(ta)")
                        checked += 1
                    }
                }
            }
        }
        XCTAssertEqual(checked, shapes.count * 4 * 2 * MatrixKernels.availableISAs.count)
    }

    /// The definition is not what a plain sum gives: the test would catch a kernel that reassociates.
    func testTheDefinitionDiffersFromPairwiseSums() {
        let k = 1024
        let a = values(k, seed: 5), b = values(k, seed: 6)
        var c: Float = 0
        sw_reference_sgemm(0, 0, 1, 1, Int32(k), a, Int32(k), b, 1, &c, 1)
        var partial = [Float](repeating: 0, count: 8)
        for p in 0..<k { partial[p % 8] = fmaf(a[p], b[p], partial[p % 8]) }
        XCTAssertNotEqual(c, partial.reduce(0, +), "eight partial sums happen to round like one chain")
    }

    func testPortableMathIsCloseToTheCLibrarys() {
        var state: UInt64 = 3
        func next() -> Double {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return Double(state >> 11) / Double(1 << 53)
        }
        var worst = (exp: 0.0, log: 0.0, cos: 0.0)
        for _ in 0..<100_000 {
            let x = next() * 1400 - 700, y = Foundation.exp(next() * 1400 - 700), z = next() * 200 - 100
            worst.exp = max(worst.exp, abs(PortableMath.exp(x) - Foundation.exp(x)) / Foundation.exp(x))
            worst.log = max(worst.log, abs(PortableMath.log(y) - Foundation.log(y)) / max(abs(Foundation.log(y)), 1e-300))
            worst.cos = max(worst.cos, abs(PortableMath.cos(z) - Foundation.cos(z)))
        }
        XCTAssertLessThan(worst.exp, 1e-15)
        XCTAssertLessThan(worst.log, 1e-15)
        XCTAssertLessThan(worst.cos, 1e-15)
        XCTAssertEqual(PortableMath.exp(0), 1)
        XCTAssertEqual(PortableMath.log(1), 0)
        XCTAssertEqual(PortableMath.cos(0), 1)
        XCTAssertEqual(PortableMath.exp(1000), .infinity)
        XCTAssertEqual(PortableMath.log(0), -.infinity)
        print("portable math, worst relative error against glibc: exp \(worst.exp), log \(worst.log), cos (absolute) \(worst.cos)")
    }

    /// GELU's eight-lane loops give each element the bits of the reference formula from the
    /// one-element erfAndGaussian, whatever the portable kernels' instruction set and wherever
    /// the vector part ends (buffers of 1003, 13 and 5; edges, NaN and infinities included).
    func testGELUGivesTheReferenceBitsOnEveryInstructionSet() throws {
        var state: UInt64 = 5
        var x: [Float] = (0..<1003).map { _ in
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return Float(state >> 40) / Float(1 << 24) * 16 - 8
        }
        x.replaceSubrange(0..<9, with: [0, -0, .nan, .infinity, -.infinity, Float(6 * 2.0.squareRoot()), -8.48528, 0.3535534, 1e-30])
        let dy = x.indices.map { Float($0 % 7) - 3 }
        func reference(_ x: Float, _ dy: Float) -> (Float, Float) {
            let v = Double(x), (erf, gaussian) = ActivationMath.erfAndGaussian(v * 0.7071067811865476)
            return (Float(0.5 * v * (1 + erf)), Float(Double(dy) * (0.5 * (1 + erf) + v * 0.3989422804014327 * gaussian)))
        }
        let previous = MatrixKernels.current
        defer { try? MatrixKernels.select(previous) }
        for isa in MatrixKernels.availableISAs {
            try MatrixKernels.select(.portable, isa: isa)
            for count in [x.count, 13, 5] {
                var y = [Float](repeating: 0, count: count), dx = y
                ActivationMath.gelu(count: count, approximate: false, x: x, y: &y)
                ActivationMath.geluBackward(count: count, approximate: false, x: x, dy: dy, dx: &dx)
                for i in 0..<count {
                    let (value, derivative) = reference(x[i], dy[i])
                    XCTAssertEqual(y[i].bitPattern, value.bitPattern, "\(isa): gelu(\(x[i]))")
                    XCTAssertEqual(dx[i].bitPattern, derivative.bitPattern, "\(isa): gelu'(\(x[i]))")
                }
                XCTAssert(y[2].isNaN)
                XCTAssertEqual(y[3], .infinity)
            }
        }
    }

    /// Attention's softmax exponentials (`expShifted`) give expNonPositive's bits on every
    /// instruction set, in the vector lanes and in the groups they leave to it (a NaN, a
    /// positive value, values below -708 where e^x is subnormal or 0), whatever the length.
    func testShiftedExponentialsGiveTheReferenceBitsOnEveryInstructionSet() throws {
        var state: UInt64 = 11
        var row: [Float] = (0..<517).map { _ in
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return -Float(state >> 40) / Float(1 << 24) * 40
        }
        row.replaceSubrange(100..<108, with: [0, -0, -1e-30, -707.9, -708.1, -744, -746, -80])
        row[203] = .nan
        row[310] = 3
        row[411] = -.infinity
        let scale: Float = 0.37, maximum: Float = 1.5
        let previous = MatrixKernels.current
        defer { try? MatrixKernels.select(previous) }
        for isa in MatrixKernels.availableISAs {
            try MatrixKernels.select(.portable, isa: isa)
            for count in [row.count, 13, 3] {
                var out = [Float](repeating: 7, count: count)
                PortableMath.expShifted(count: count, row, scale: scale, maximum: maximum, into: &out)
                for j in 0..<count {
                    let expected = Float(PortableMath.expNonPositive(Double(row[j] * scale - maximum)))
                    XCTAssertEqual(out[j].bitPattern, expected.bitPattern, "\(isa): e^(\(row[j]) * \(scale) - \(maximum))")
                }
            }
            var inPlace = Array(row.prefix(40))
            inPlace.withUnsafeMutableBufferPointer { PortableMath.expShifted(count: 40, $0.baseAddress!, scale: 2, maximum: 0, into: $0.baseAddress!) }
            XCTAssertEqual(inPlace.map(\.bitPattern), row.prefix(40).map { Float(PortableMath.expNonPositive(Double($0 * 2))).bitPattern }, "\(isa): in place")
        }
    }

    /// The softmax cross-entropy's exponentials (`PortableMath.exp(count:)`) give exp's bits on
    /// every instruction set, the values its lanes leave to it too (NaN, ±infinity, beyond ±708).
    func testExponentialsGiveTheReferenceBitsOnEveryInstructionSet() throws {
        var state: UInt64 = 3
        var x: [Double] = (0..<301).map { _ in
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return Double(state >> 11) / Double(1 << 53) * 80 - 60
        }
        x.replaceSubrange(50..<60, with: [0, -0, 708, 709, 709.5, 710, -708, -708.5, -745, -746])
        x[120] = .nan
        x[121] = .infinity
        x[122] = -.infinity
        let previous = MatrixKernels.current
        defer { try? MatrixKernels.select(previous) }
        for isa in MatrixKernels.availableISAs {
            try MatrixKernels.select(.portable, isa: isa)
            for count in [x.count, 11, 2] {
                var out = [Double](repeating: 7, count: count)
                PortableMath.exp(count: count, x, into: &out)
                for j in 0..<count { XCTAssertEqual(out[j].bitPattern, PortableMath.exp(x[j]).bitPattern, "\(isa): e^\(x[j])") }
            }
        }
    }

    /// The softmax's exponential of non-positive values and GELU's erf and Gaussian, from
    /// plain multiplies and adds, against the C library: every piece of [0, 6], its edges, and beyond.
    func testPlainPolynomialsAreCloseToTheCLibrarys() {
        var worst = (exp: 0.0, erf: 0.0, gaussian: 0.0)
        for i in 0...120_000 {
            let a = Double(i) * 0.00005 * (i % 7 == 0 ? 1 : 1.0000001)  // 0 ... 6, on and off the pieces' edges
            for x in [a, -a] {
                let (e, g) = ActivationMath.erfAndGaussian(x)
                worst.erf = max(worst.erf, abs(e - Foundation.erf(x)))
                worst.gaussian = max(worst.gaussian, abs(g - Foundation.exp(-x * x)))
            }
            let y = -a * 116  // down to -696: normal results (subnormal ones keep fewer bits)
            worst.exp = max(worst.exp, abs(PortableMath.expNonPositive(y) - Foundation.exp(y)) / Foundation.exp(y))
        }
        XCTAssertLessThan(worst.erf, 1e-10)
        XCTAssertLessThan(worst.gaussian, 1e-10)
        XCTAssertLessThan(worst.exp, 1e-14)
        XCTAssertEqual(ActivationMath.erfAndGaussian(7).erf, 1)
        XCTAssertEqual(ActivationMath.erfAndGaussian(-7).erf, -1)
        XCTAssertEqual(ActivationMath.erfAndGaussian(7).gaussian, 0)
        XCTAssertEqual(PortableMath.expNonPositive(0), 1)
        XCTAssertEqual(PortableMath.expNonPositive(-800), 0)
        XCTAssert(PortableMath.expNonPositive(.nan).isNaN)
        XCTAssertEqual(PortableMath.expNonPositive(-.infinity), 0)
    }
}
