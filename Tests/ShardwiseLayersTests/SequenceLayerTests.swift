import Foundation
import ShardwiseKernels
import XCTest

@testable import ShardwiseLayers

/// The layers of a language model besides attention: a linear layer over (T, I) sequences
/// (each token alone, as `nn.Linear` on the last dimension) and the token-and-position embedding.
final class SequenceLayerTests: XCTestCase {
    override func setUpWithError() throws {
        previous = MatrixKernels.current
        try MatrixKernels.select(.portable)
    }

    override func tearDown() { try? MatrixKernels.select(previous) }

    var previous = MatrixKernels.portable

    /// A (T, I) sample through Linear is its T tokens as T flat rows: the same outputs, input
    /// gradient and parameter gradients, bit for bit (the portable kernels' sums run over the
    /// same rows in the same order).
    func testLinearOverTokensIsLinearOverEachToken() throws {
        let t = 5, i = 6, o = 4, rows = 3
        var sequence = try LayerRun(Linear(i, o), inputShape: [t, i], rows: rows, seed: 1)
        XCTAssertEqual(sequence.outputShape, [t, o])
        sequence.run()
        var flat = try LayerRun(Linear(i, o), inputShape: [i], rows: rows * t, seed: 1, input: sequence.input)
        flat.parameters = sequence.parameters
        flat.projection = sequence.projection
        flat.run()
        XCTAssertEqual(sequence.output, flat.output)
        XCTAssertEqual(sequence.inputGradient, flat.inputGradient)
        XCTAssertEqual(sequence.parameterGradients, flat.parameterGradients)
        // Against a direct sum for one output.
        var direct = Double(sequence.parameters[1][2])
        for e in 0..<i { direct += Double(sequence.input[(1 * t + 3) * i + e]) * Double(sequence.parameters[0][2 * i + e]) }
        XCTAssertEqual(Double(sequence.output[(1 * t + 3) * o + 2]), direct, accuracy: 1e-5)
        XCTAssertEqual(Linear(i, o).multiplyAdds(inputShape: [t, i]), t * i * o)
        XCTAssertThrowsError(try Linear(7, o).outputShape(inputShape: [t, i])) {
            XCTAssert("\($0)".contains("receives tokens of 6 values"), "\($0)")
        }
        XCTAssertThrowsError(try Linear(i, o).outputShape(inputShape: [2, 3, i])) {
            XCTAssert("\($0)".contains("add Flatten() before it"), "\($0)")
        }
    }

    /// Outputs are the token's vector plus the position's; gradients add each token's output
    /// gradient onto its id's row and its position's row; an id out of range gives NaN.
    func testTokenEmbedding() throws {
        let layer = TokenEmbedding(vocabulary: 5, width: 3), ids: [Float] = [4, 0, 4, 2, 1, 1, 3, 0]
        var run = try LayerRun(layer, inputShape: [4], rows: 2, seed: 2, input: ids)
        XCTAssertEqual(run.outputShape, [4, 3])
        XCTAssertEqual(run.specs.map(\.name), ["token.weight", "position.weight"])
        XCTAssertEqual(run.specs.map(\.shape), [[5, 3], [4, 3]])
        run.run()
        var expectedTable = [Double](repeating: 0, count: 15), expectedPositions = [Double](repeating: 0, count: 12)
        for r in 0..<2 {
            for p in 0..<4 {
                let token = Int(ids[r * 4 + p])
                for e in 0..<3 {
                    let k = (r * 4 + p) * 3 + e
                    XCTAssertEqual(run.output[k], run.parameters[0][token * 3 + e] + run.parameters[1][p * 3 + e])
                    expectedTable[token * 3 + e] += Double(run.projection[k])
                    expectedPositions[p * 3 + e] += Double(run.projection[k])
                }
            }
        }
        for (got, expected) in zip(run.parameterGradients[0], expectedTable) { XCTAssertEqual(Double(got), expected, accuracy: 1e-6) }
        for (got, expected) in zip(run.parameterGradients[1], expectedPositions) { XCTAssertEqual(Double(got), expected, accuracy: 1e-6) }
        XCTAssertEqual(run.inputGradient, [Float](repeating: 0, count: 8))
        var bad = try LayerRun(layer, inputShape: [2], rows: 1, seed: 2, input: [5, 1.5])
        bad.run()
        XCTAssert(bad.output.allSatisfy(\.isNaN))
        XCTAssertThrowsError(try layer.outputShape(inputShape: [2, 3])) {
            XCTAssert("\($0)".contains("takes samples of T token ids"), "\($0)")
        }
    }

    /// The layer language: a small GPT block reads as the layers it names.
    func testLanguageModelInTheLayerLanguage() throws {
        let layers = try ModelDescription.layers(
            "tokens(65, 32) residual(layernorm(dims: 1) attention(4, dropout: 0.1)) residual(layernorm(dims: 1) linear(128) gelu linear(32)) layernorm(dims: 1) linear(65)",
            inputShape: [16])
        let network = try Network(Sequential(layers), inputShape: [16])
        XCTAssertEqual(network.shapes.last, [16, 65])
        XCTAssertEqual(network.layout.tensors.map(\.name).prefix(8), [
            "layers.0.token.weight", "layers.0.position.weight", "layers.1.body.0.weight", "layers.1.body.0.bias",
            "layers.1.body.1.qkv.weight", "layers.1.body.1.qkv.bias", "layers.1.body.1.proj.weight", "layers.1.body.1.proj.bias",
        ])
        XCTAssertThrowsError(try ModelDescription.layers("attention(2)", inputShape: [16])) {
            XCTAssert("\($0)".contains("takes (tokens, values) samples, got (16)"), "\($0)")
        }
    }

    /// `linear(V, tied: tokens)`: the head reads the token table (no tensor of its own, no second
    /// initialisation), and the table's gradient is the sum of its two uses: bit for bit the
    /// embedding's gradient plus the head's of the same model untied with the table copied into
    /// its weight, and close to central differences of the loss.
    func testTiedHeadReadsTheTableAndSumsBothGradients() throws {
        let body = "tokens(13, 8) residual(layernorm(dims: 1) attention(2)) layernorm(dims: 1) "
        let tied = try Network(Sequential(try ModelDescription.layers(body + "linear(13, tied: tokens)", inputShape: [6])), inputShape: [6])
        let untied = try Network(Sequential(try ModelDescription.layers(body + "linear(13)", inputShape: [6])), inputShape: [6])
        XCTAssertEqual(tied.layout.tensors.map(\.name), untied.layout.tensors.map(\.name).filter { $0 != "layers.3.weight" })
        XCTAssertEqual(tied.layout.trainedParameterCount, untied.layout.trainedParameterCount - 13 * 8)
        let p = FloatBuffer(count: tied.layout.count), q = FloatBuffer(count: untied.layout.count)
        tied.initialize(parameters: p, seed: 3)
        untied.initialize(parameters: q, seed: 3)
        let table = try XCTUnwrap(tied.layout.tensor(named: "layers.0.token.weight")), head = try XCTUnwrap(untied.layout.tensor(named: "layers.3.weight"))
        for t in tied.layout.tensors {
            let u = try XCTUnwrap(untied.layout.tensor(named: t.name))
            for e in 0..<t.count { XCTAssertEqual(p[t.offset + e], q[u.offset + e], "\(t.name)[\(e)]: the tie initialises nothing else") }
        }
        for e in 0..<table.count { q[head.offset + e] = q[table.offset + e] }
        let rows = 2, ids: [Float] = [3, 0, 12, 7, 7, 1, 5, 9, 2, 11, 4, 6]
        let labels: [Int32] = [0, 12, 7, 7, 1, 5, 9, 2, 11, 4, 6, 8]
        func pass(_ network: Network, _ parameters: FloatBuffer) -> (loss: Double, gradient: FloatBuffer, logits: [Float]) {
            let ws = Workspace(network: network, capacity: rows), gradient = FloatBuffer(count: network.layout.count)
            for i in ids.indices { ws.input[i] = ids[i] }
            for i in labels.indices { ws.labels[i] = labels[i] }
            network.forward(parameters: parameters.pointer, workspace: ws, rows: rows, random: nil)
            let logits = Array(UnsafeBufferPointer(start: ws.output, count: rows * 6 * 13))
            let loss = network.backward(parameters: parameters.pointer, workspace: ws, rows: rows, lossDivisor: rows, gradient: gradient.pointer)
            return (loss, gradient, logits)
        }
        let a = pass(tied, p), b = pass(untied, q)
        XCTAssertEqual(a.logits, b.logits, "the head reads the token table")
        XCTAssertEqual(a.loss, b.loss)
        let untiedTable = try XCTUnwrap(untied.layout.tensor(named: "layers.0.token.weight"))
        for e in 0..<table.count {
            XCTAssertEqual(a.gradient[table.offset + e], b.gradient[untiedTable.offset + e] + b.gradient[head.offset + e], "d token.weight[\(e)]")
        }
        for t in tied.layout.tensors where t.name != table.name {
            let u = try XCTUnwrap(untied.layout.tensor(named: t.name))
            for e in 0..<t.count { XCTAssertEqual(a.gradient[t.offset + e], b.gradient[u.offset + e], "d \(t.name)[\(e)]") }
        }
        // Central differences of the (Float) loss at a few table entries, rows used by both ends.
        let h: Float = 1e-2
        for e in [3 * 8, 3 * 8 + 5, 7 * 8 + 2, 12 * 8 + 7, 8 * 8 + 1] {
            let value = p[table.offset + e]
            p[table.offset + e] = value + h
            let plus = pass(tied, p).loss
            p[table.offset + e] = value - h
            let minus = pass(tied, p).loss
            p[table.offset + e] = value
            let d = (plus - minus) / (2 * Double(h)) / Double(rows)
            XCTAssertEqual(Double(a.gradient[table.offset + e]), d, accuracy: 2e-3 + 2e-2 * abs(d), "finite difference at token.weight[\(e)]")
            XCTAssertNotEqual(a.gradient[table.offset + e], b.gradient[untiedTable.offset + e], "both uses contribute at [\(e)]")
        }
        XCTAssertThrowsError(try Network(Sequential(try ModelDescription.layers("tokens(13, 8) linear(12, tied: tokens)", inputShape: [6])), inputShape: [6])) {
            XCTAssert("\($0)".contains("tied to TokenEmbedding's token.weight (layers.0), of shape (13, 8), but has shape (12, 8)"), "\($0)")
        }
        XCTAssertThrowsError(try ModelDescription.layers("linear(8, tied: conv)", inputShape: [6, 4])) {
            XCTAssert("\($0)".contains("tied: conv, expected tokens"), "\($0)")
        }
        XCTAssertThrowsError(try Network(Sequential([Linear(4, 4, tied: true)]), inputShape: [2, 4])) {
            XCTAssert("\($0)".contains("no TokenEmbedding comes before it"), "\($0)")
        }
    }

    /// LayerNorm over tokens takes a shard's groups four at a time and the rest one by one: each
    /// group's outputs and input gradient, and the parameters' gradients summed over the groups
    /// in order, have the bits of the one-group formula (15 groups: 12 in lanes, 3 after).
    func testLayerNormGroupsInLanesGiveTheOneGroupBits() throws {
        let n = 8, groups = 15, epsilon = 1e-5
        var run = try LayerRun(LayerNorm(dimensions: 1, epsilon: epsilon), inputShape: [5, n], rows: 3, seed: 4)
        run.run()
        var dGamma = [Double](repeating: 0, count: n), dBeta = dGamma
        for group in 0..<groups {
            let x = (0..<n).map { Double(run.input[group * n + $0]) }, g = (0..<n).map { Double(run.projection[group * n + $0]) }
            var mean = 0.0
            for v in x { mean += v }
            mean /= Double(n)
            var squares = 0.0
            for v in x { squares += (v - mean) * (v - mean) }
            let rstd = 1 / (squares / Double(n) + epsilon).squareRoot()
            var sumD = 0.0, sumDX = 0.0
            for i in 0..<n {
                let xhat = (x[i] - mean) * rstd, gamma = Double(run.parameters[0][i])
                XCTAssertEqual(run.output[group * n + i].bitPattern, Float(xhat * gamma + Double(run.parameters[1][i])).bitPattern, "y, group \(group)")
                dGamma[i] += g[i] * xhat
                dBeta[i] += g[i]
                sumD += g[i] * gamma
                sumDX += g[i] * gamma * xhat
            }
            for i in 0..<n {
                let xhat = (x[i] - mean) * rstd
                let expected = Float(rstd * (g[i] * Double(run.parameters[0][i]) - sumD / Double(n) - xhat * (sumDX / Double(n))))
                XCTAssertEqual(run.inputGradient[group * n + i].bitPattern, expected.bitPattern, "dx, group \(group)")
            }
        }
        XCTAssertEqual(run.parameterGradients[0].map(\.bitPattern), dGamma.map { Float($0).bitPattern })
        XCTAssertEqual(run.parameterGradients[1].map(\.bitPattern), dBeta.map { Float($0).bitPattern })
    }
}
