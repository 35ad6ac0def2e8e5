import Foundation
import ShardwiseKernels
import XCTest

@testable import ShardwiseLayers

/// Causal self-attention against a direct Double implementation (the full T x T softmax,
/// masked), its gradients against central differences of that oracle, and the dropout
/// masks' addressing: by (sample position, head, query, key), never by shard.
final class AttentionTests: XCTestCase {
    /// The oracle's outputs: (N, T, C) from `x` and the four tensors, `keep(n, h, i, j)` the
    /// dropout multiplier of probability (i, j) of head h in sample n (1 without dropout).
    func oracle(_ a: CausalSelfAttention, tokens t: Int, rows: Int, x: [Double], p: [[Double]], keep: (Int, Int, Int, Int) -> Double) -> [Double] {
        let c = a.width, d = c / a.heads
        var out = [Double](repeating: 0, count: rows * t * c)
        for n in 0..<rows {
            // qkv[i][o] = Σ_e x[i][e] W[o][e] + b[o]
            var qkv = [[Double]](repeating: [Double](repeating: 0, count: 3 * c), count: t)
            for i in 0..<t {
                for o in 0..<3 * c {
                    var sum = p[1][o]
                    for e in 0..<c { sum += x[(n * t + i) * c + e] * p[0][o * c + e] }
                    qkv[i][o] = sum
                }
            }
            var y = [[Double]](repeating: [Double](repeating: 0, count: c), count: t)
            for h in 0..<a.heads {
                for i in 0..<t {
                    var scores = [Double](repeating: 0, count: i + 1)
                    for j in 0...i {
                        var dot = 0.0
                        for e in 0..<d { dot += qkv[i][h * d + e] * qkv[j][c + h * d + e] }
                        scores[j] = dot / Double(d).squareRoot()
                    }
                    let top = scores.max()!
                    let weights = scores.map { Foundation.exp($0 - top) }
                    let total = weights.reduce(0, +)
                    for j in 0...i {
                        let probability = weights[j] / total * keep(n, h, i, j)
                        for e in 0..<d { y[i][h * d + e] += probability * qkv[j][2 * c + h * d + e] }
                    }
                }
            }
            for i in 0..<t {
                for o in 0..<c {
                    var sum = p[3][o]
                    for e in 0..<c { sum += y[i][e] * p[2][o * c + e] }
                    out[(n * t + i) * c + o] = sum
                }
            }
        }
        return out
    }

    /// The dropout multipliers the layer should use, from the reference mask generator.
    func referenceKeep(_ a: CausalSelfAttention, tokens t: Int, rows: Int = 4, random: LayerRandomness?) -> (Int, Int, Int, Int) -> Double {
        guard let random, a.dropout > 0 else { return { _, _, _, _ in 1 } }
        let padded = (t + 31) / 32 * 32
        var masks = [Float](repeating: 0, count: rows * a.heads * t * t)
        for n in 0..<rows {
            for h in 0..<a.heads {
                for i in 0..<t {
                    DropoutKernel.fillMaskReference(
                        rows: 1, columns: t, address: random.address(.attentionDropout), firstPosition: random.firstPosition + n,
                        dropProbability: a.dropout, mask: &masks[((n * a.heads + h) * t + i) * t], firstBlock: (h * t + i) * padded / 32)
                }
            }
        }
        return { n, h, i, j in Double(masks[((n * a.heads + h) * t + i) * t + j]) }
    }

    /// Forward against the oracle; every input and parameter gradient against central differences.
    func check(_ a: CausalSelfAttention, tokens t: Int, rows: Int, seed: UInt64, random: LayerRandomness? = nil, file: StaticString = #filePath, line: UInt = #line) throws {
        var run = try LayerRun(a, inputShape: [t, a.width], rows: rows, seed: seed)
        // Weights at the scale of the initialiser's: the softmax neither saturates nor is flat.
        run.parameters = run.parameters.map { $0.map { $0 * 0.6 } }
        run.run(random: random)
        var x = run.input.map(Double.init)
        var p = run.parameters.map { $0.map(Double.init) }
        let keep = referenceKeep(a, tokens: t, rows: rows, random: random)
        let expected = oracle(a, tokens: t, rows: rows, x: x, p: p, keep: keep)
        for (k, (got, e)) in zip(run.output, expected).enumerated() {
            XCTAssertEqual(Double(got), e, accuracy: 1e-5 + 1e-5 * abs(e), "output[\(k)]", file: file, line: line)
        }
        func loss() -> Double { zip(oracle(a, tokens: t, rows: rows, x: x, p: p, keep: keep), run.projection).reduce(0) { $0 + $1.0 * Double($1.1) } }
        let h = 1e-6
        func numeric(_ change: (Double) -> Void, _ value: Double) -> Double {
            change(value + h)
            let plus = loss()
            change(value - h)
            let minus = loss()
            change(value)
            return (plus - minus) / (2 * h)
        }
        for i in x.indices {
            let d = numeric({ x[i] = $0 }, x[i])
            XCTAssertEqual(Double(run.inputGradient[i]), d, accuracy: 1e-4 + 1e-3 * abs(d), "d input[\(i)]", file: file, line: line)
        }
        for tensor in p.indices {
            // Every element of the small tensors; a stride through the large ones.
            for e in stride(from: 0, to: p[tensor].count, by: p[tensor].count > 200 ? 7 : 1) {
                let d = numeric({ p[tensor][e] = $0 }, p[tensor][e])
                XCTAssertEqual(Double(run.parameterGradients[tensor][e]), d, accuracy: 1e-4 + 1e-3 * abs(d), "d \(run.specs[tensor].name)[\(e)]", file: file, line: line)
            }
        }
    }

    func testAgainstTheOracleAndFiniteDifferences() throws {
        try check(CausalSelfAttention(width: 8, heads: 2), tokens: 5, rows: 2, seed: 1)
        // Over one block of 32 queries: the second block's tile and the keys' sums over blocks.
        try check(CausalSelfAttention(width: 6, heads: 3), tokens: 37, rows: 1, seed: 2)
        try check(CausalSelfAttention(width: 4, heads: 1), tokens: 1, rows: 3, seed: 3)
        // Dropout: the masks the reference generator gives for (position, head, query, key).
        try check(CausalSelfAttention(width: 8, heads: 2, dropout: 0.3), tokens: 35, rows: 2, seed: 4,
                  random: LayerRandomness(seed: 9, step: 4, firstPosition: 6, layer: 1))
    }

    /// A token's output depends on it and the tokens before it only.
    func testCausality() throws {
        let a = CausalSelfAttention(width: 8, heads: 2)
        var run = try LayerRun(a, inputShape: [40, 8], rows: 1, seed: 5)
        run.run()
        var changed = run
        for e in (33 * 8)..<(34 * 8) { changed.input[e] += 1 }
        changed.run()
        XCTAssertEqual(Array(changed.output[..<(33 * 8)]), Array(run.output[..<(33 * 8)]))
        XCTAssertNotEqual(Array(changed.output[(33 * 8)..<(34 * 8)]), Array(run.output[(33 * 8)..<(34 * 8)]))
    }

    /// A sample's masks follow its position in the global batch: a shard of the last two
    /// samples, starting two positions later, gives those samples' bits; the kept fraction is 1 - p;
    /// evaluation (no stream) and p = 0 are the plain layer.
    func testDropoutFollowsTheSamplePosition() throws {
        // The portable kernels: the BLAS's sums may depend on how many rows a product has.
        let previous = MatrixKernels.current
        try MatrixKernels.select(.portable)
        defer { try? MatrixKernels.select(previous) }
        let a = CausalSelfAttention(width: 8, heads: 2, dropout: 0.25), t = 20, width = t * 8
        let random = LayerRandomness(seed: 3, step: 11, firstPosition: 40, layer: 0)
        var all = try LayerRun(a, inputShape: [t, 8], rows: 4, seed: 6)
        all.run(random: random)
        var last = try LayerRun(a, inputShape: [t, 8], rows: 2, seed: 6, input: Array(all.input[(2 * width)...]))
        last.parameters = all.parameters
        last.projection = Array(all.projection[(2 * width)...])
        last.run(random: LayerRandomness(seed: 3, step: 11, firstPosition: 42, layer: 0))
        XCTAssertEqual(last.output, Array(all.output[(2 * width)...]))
        XCTAssertEqual(last.inputGradient, Array(all.inputGradient[(2 * width)...]))
        let keep = referenceKeep(a, tokens: t, random: random)
        var kept = 0, total = 0
        for n in 0..<4 { for h in 0..<2 { for i in 0..<t { for j in 0...i {
            total += 1
            if keep(n, h, i, j) > 0 { kept += 1 }
        } } } }
        XCTAssertEqual(Double(kept) / Double(total), 0.75, accuracy: 0.04)
        var evaluation = try LayerRun(a, inputShape: [t, 8], rows: 4, seed: 6)
        evaluation.run()
        var plain = try LayerRun(CausalSelfAttention(width: 8, heads: 2), inputShape: [t, 8], rows: 4, seed: 6)
        plain.run(random: random)
        XCTAssertEqual(evaluation.output, plain.output)
        XCTAssertNotEqual(all.output, plain.output)
    }

    /// The layer's memory grows linearly in the context, never with T x T: the scratch of
    /// 2T tokens adds twice what T adds (measured whole runs: peak RSS 81, 115 and 182 MB at
    /// contexts 256, 512 and 1,024 for a two-block GPT of width 128, batch 4).
    func testMemoryIsLinearInTheContext() {
        let a = CausalSelfAttention(width: 128, heads: 4, dropout: 0.1)
        func floats(_ t: Int) -> Int { a.scratchCount(inputShape: [t, 128], rows: 6) }
        XCTAssertEqual(floats(1024) - floats(512), 2 * (floats(512) - floats(256)))
        XCTAssertEqual(floats(4096) - floats(2048), 2 * (floats(2048) - floats(1024)))
        // Per token: q, k, v, y, dy, dq, dk, dv for 6 samples, 2 statistics a head, three 32-row tiles and a head's values.
        XCTAssertEqual(floats(1024) - floats(512), 512 * (6 * (3 + 1 + 1 + 3) * 128 + 6 * 2 * 4 + 3 * 32 + 32))
    }

    /// Inverted attention dropout keeps the expectation: the mean output over many steps' masks
    /// is the output without dropout, to within the sampling error.
    func testDropoutKeepsTheExpectation() throws {
        let a = CausalSelfAttention(width: 8, heads: 2, dropout: 0.3)
        var plain = try LayerRun(a, inputShape: [12, 8], rows: 1, seed: 8)
        plain.run()
        var mean = [Double](repeating: 0, count: plain.output.count)
        let steps = 2000
        for step in 0..<steps {
            var run = try LayerRun(a, inputShape: [12, 8], rows: 1, seed: 8)
            run.run(random: LayerRandomness(seed: 4, step: UInt32(step), firstPosition: 0, layer: 0))
            for (k, y) in run.output.enumerated() { mean[k] += Double(y) / Double(steps) }
        }
        let scale = plain.output.map { abs(Double($0)) }.max()!
        let worst = zip(mean, plain.output).map { abs($0 - Double($1)) }.max()!
        XCTAssertLessThan(worst / scale, 0.03, "the mean of \(steps) dropout passes against the plain output")
        XCTAssertGreaterThan(worst / scale, 0, "dropout should have changed single passes")
    }

    func testBadShapesAreRefused() {
        for (layer, shape, expected) in [
            (CausalSelfAttention(width: 6, heads: 4), [3, 6], "the width must be a positive multiple of the heads"),
            (CausalSelfAttention(width: 8, heads: 2), [64], "takes samples of (tokens, 8), got (64)"),
            (CausalSelfAttention(width: 8, heads: 2), [4, 6], "takes samples of (tokens, 8), got (4, 6)"),
            (CausalSelfAttention(width: 8, heads: 2, dropout: 1), [4, 8], "dropout 1.0, expected a probability in [0, 1)"),
            (CausalSelfAttention(width: 64, heads: 64), [1 << 16, 64], "expected at most 2147483647"),
        ] {
            XCTAssertThrowsError(try layer.outputShape(inputShape: shape)) { XCTAssert("\($0)".contains(expected), "\($0)") }
        }
    }
}
