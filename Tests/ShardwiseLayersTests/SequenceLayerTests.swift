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
}
