import CShardwiseBLAS
import ShardwiseKernels
import XCTest

@testable import ShardwiseLayers

/// With the portable kernels, `Conv2D` never writes its lowered matrix out: the GEMM gathers
/// it from the (padded) samples as it packs its panels. That must change no bit: here the layer
/// runs on every instruction set this CPU has, against the written-out lowering (im2col,
/// col2im) computed with the fma definition's products in the layer's group order.
final class ConvolutionLoweringTests: XCTestCase {
    override func tearDown() {
        try? MatrixKernels.select(.blas, isa: MatrixKernels.availableISAs.last!)
    }

    /// Output, input gradient, weight and bias gradients of `conv` on `run`'s input, weights and
    /// output gradient (its projection), by the written-out lowering and the definition's products.
    func writtenOut(_ conv: Conv2D, _ run: LayerRun) -> (output: [Float], dx: [Float], dW: [Float], db: [Float]) {
        let g = conv.geometry(run.inputShape), p = g.positions, o = conv.outChannels, k = g.windowValues
        let group = conv.groupSize(g, rows: run.rows)
        let (w, bias) = (run.parameters[0], run.parameters[1])
        var output = [Float](repeating: 0, count: run.rows * o * p), dx = [Float](repeating: 0, count: run.rows * run.inputWidth)
        var dW = [Float](repeating: 0, count: o * k)
        let db = (0..<o).map { c in
            Float((0..<run.rows).reduce(0.0) { sum, s in (0..<p).reduce(sum) { $0 + Double(run.projection[(s * o + c) * p + $1]) } })
        }
        var first = 0
        while first < run.rows {
            let count = min(group, run.rows - first), columns = count * p
            var cols = [Float](repeating: .nan, count: k * columns)
            for j in 0..<count {
                run.input.withUnsafeBufferPointer { x in
                    ConvolutionKernel.im2col(g, x: x.baseAddress! + (first + j) * run.inputWidth, cols: &cols, ld: columns, column: j * p)
                }
            }
            var block = [Float](repeating: .nan, count: o * columns)
            sw_reference_sgemm(0, 0, Int32(o), Int32(columns), Int32(k), w, Int32(k), cols, Int32(columns), &block, Int32(columns))
            for j in 0..<count {
                for c in 0..<o {
                    for q in 0..<p { output[((first + j) * o + c) * p + q] = block[c * columns + j * p + q] + bias[c] }
                }
            }
            // The output gradient as (O, count P), then dW's share and the lowered input gradient.
            for j in 0..<count {
                for c in 0..<o {
                    for q in 0..<p { block[c * columns + j * p + q] = run.projection[((first + j) * o + c) * p + q] }
                }
            }
            var share = [Float](repeating: .nan, count: o * k)
            sw_reference_sgemm(0, 1, Int32(o), Int32(k), Int32(columns), block, Int32(columns), cols, Int32(columns), &share, Int32(k))
            for e in 0..<o * k { dW[e] = first == 0 ? share[e] : dW[e] + share[e] }
            var dcols = [Float](repeating: .nan, count: k * columns)
            sw_reference_sgemm(1, 0, Int32(k), Int32(columns), Int32(o), w, Int32(k), block, Int32(columns), &dcols, Int32(columns))
            for j in 0..<count {
                dx.withUnsafeMutableBufferPointer { d in
                    ConvolutionKernel.col2im(g, cols: dcols, ld: columns, column: j * p, dx: d.baseAddress! + (first + j) * run.inputWidth)
                }
            }
            first += count
        }
        return (output, dx, dW, db)
    }

    func testGatheredLoweringGivesTheWrittenOutBits() throws {
        let cases: [(conv: Conv2D, shape: [Int], rows: Int)] = [
            (Conv2D(3, 4, kernel: 3), [3, 8, 8], 19),  // 36 positions: groups of 15, 15 and 4
            (Conv2D(2, 5, kernel: Size2D(3, 2), stride: 2, padding: 1), [2, 9, 7], 7),
            (Conv2D(4, 3, kernel: 2, stride: Size2D(1, 2), padding: Size2D(0, 1), dilation: 2), [4, 7, 9], 6),
            (Conv2D(8, 16, kernel: 5), [8, 12, 12], 20),  // rows of 8 positions: vector copies and transposed tiles
            (Conv2D(1, 6, kernel: 5, padding: 2), [1, 28, 28], 3),  // 784 positions: one sample a group
            (Conv2D(5, 7, kernel: 1, stride: 3, padding: 2), [5, 10, 11], 9),
        ]
        for isa in MatrixKernels.availableISAs {
            try MatrixKernels.select(.portable, isa: isa)
            for (n, c) in cases.enumerated() {
                var run = try LayerRun(c.conv, inputShape: c.shape, rows: c.rows, seed: UInt64(n + 1))
                run.run()
                let expected = writtenOut(c.conv, run)
                let what = "\(isa), case \(n) (\(c.shape), \(c.rows) rows)"
                XCTAssertEqual(run.output.map(\.bitPattern), expected.output.map(\.bitPattern), "output, \(what)")
                XCTAssertEqual(run.inputGradient.map(\.bitPattern), expected.dx.map(\.bitPattern), "input gradient, \(what)")
                XCTAssertEqual(run.parameterGradients[0].map(\.bitPattern), expected.dW.map(\.bitPattern), "weight gradient, \(what)")
                XCTAssertEqual(run.parameterGradients[1].map(\.bitPattern), expected.db.map(\.bitPattern), "bias gradient, \(what)")
                // The scratch's first region, where the BLAS path writes the lowered matrix, stayed as it was (zero).
                let g = c.conv.geometry(c.shape)
                let lowered = g.windowValues * c.conv.groupSize(g, rows: c.rows) * g.positions
                XCTAssertTrue(run.scratch.prefix(lowered).allSatisfy { $0 == 0 }, "the lowered matrix was written out, \(what)")
            }
        }
    }
}
