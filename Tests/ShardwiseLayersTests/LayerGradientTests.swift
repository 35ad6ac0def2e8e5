import Foundation
import ShardwiseKernels
import XCTest

@testable import ShardwiseLayers

/// Each new layer's forward pass against an independent Double implementation (direct
/// loops, Foundation's tanh and erf: the oracle), and its backward pass (input and parameter
/// gradients) against central differences of that oracle in Double.
final class LayerGradientTests: XCTestCase {
    /// The oracle's outputs for samples `x` and parameters `p`; `mask` is a dropout layer's drawn mask.
    func oracle(_ run: LayerRun, x: [Double], p: [[Double]], mask: [Float]) -> [Double] {
        let n = run.rows, iw = run.inputWidth, ow = run.outputWidth
        var y = [Double](repeating: 0, count: n * ow)
        switch run.layer {
        case let conv as Conv2D:
            let (c, h, w) = (run.inputShape[0], run.inputShape[1], run.inputShape[2])
            let (o, ho, wo) = (run.outputShape[0], run.outputShape[1], run.outputShape[2])
            let (kh, kw) = (conv.kernel.height, conv.kernel.width)
            for s in 0..<n { for oc in 0..<o { for oy in 0..<ho { for ox in 0..<wo {
                var sum = p[1][oc]
                for ic in 0..<c { for i in 0..<kh { for j in 0..<kw {
                    let iy = oy * conv.stride.height - conv.padding.height + i * conv.dilation.height
                    let ix = ox * conv.stride.width - conv.padding.width + j * conv.dilation.width
                    guard iy >= 0, iy < h, ix >= 0, ix < w else { continue }
                    sum += p[0][((oc * c + ic) * kh + i) * kw + j] * x[s * iw + (ic * h + iy) * w + ix]
                } } }
                y[s * ow + (oc * ho + oy) * wo + ox] = sum
            } } } }
        case is MaxPool2D, is AvgPool2D:
            let (kernel, stride, padding) = (run.layer as? MaxPool2D).map { ($0.kernel, $0.stride, $0.padding) }
                ?? { let a = run.layer as! AvgPool2D; return (a.kernel, a.stride, a.padding) }()
            let (c, h, w) = (run.inputShape[0], run.inputShape[1], run.inputShape[2])
            let (ho, wo) = (run.outputShape[1], run.outputShape[2])
            for s in 0..<n { for ch in 0..<c { for oy in 0..<ho { for ox in 0..<wo {
                var values: [Double] = []
                for i in 0..<kernel.height { for j in 0..<kernel.width {
                    let iy = oy * stride.height - padding.height + i, ix = ox * stride.width - padding.width + j
                    if iy >= 0, iy < h, ix >= 0, ix < w { values.append(x[s * iw + (ch * h + iy) * w + ix]) }
                } }
                y[s * ow + (ch * ho + oy) * wo + ox] = run.layer is MaxPool2D
                    ? values.max()! : values.reduce(0, +) / Double(kernel.height * kernel.width)
            } } } }
        case is Flatten:
            y = x
        case is Tanh:
            y = x.map { Foundation.tanh($0) }
        case is Sigmoid:
            y = x.map { 1 / (1 + Foundation.exp(-$0)) }
        case let leaky as LeakyReLU:
            y = x.map { $0 > 0 ? $0 : Double(leaky.slope) * $0 }
        case let gelu as GELU:
            y = x.map { v in
                gelu.approximate == .tanh
                    ? 0.5 * v * (1 + Foundation.tanh((2 / Double.pi).squareRoot() * (v + 0.044715 * v * v * v)))
                    : 0.5 * v * (1 + Foundation.erf(v / 2.0.squareRoot()))
            }
        case let embedding as Embedding:
            for s in 0..<n {
                for i in 1..<iw { y[s * ow + i - 1] = x[s * iw + i] }
                let category = Int(x[s * iw])
                for d in 0..<embedding.dimension { y[s * ow + iw - 1 + d] = p[0][category * embedding.dimension + d] }
            }
        case is Dropout2d:
            let c = run.inputShape[0], plane = iw / c
            for k in 0..<n * iw { y[k] = x[k] * Double(mask[k / plane]) }
        case let norm as LayerNorm:
            let size = run.inputShape.suffix(norm.dimensions ?? run.inputShape.count).reduce(1, *)
            y = normalized(x, groupSize: size, centred: true, epsilon: norm.epsilon) { e in (p[0][e % size], p[1][e % size]) }
        case let norm as RMSNorm:
            let size = run.inputShape.suffix(norm.dimensions ?? run.inputShape.count).reduce(1, *)
            y = normalized(x, groupSize: size, centred: false, epsilon: norm.epsilon) { e in (p[0][e % size], 0) }
        case let norm as GroupNorm:
            let c = run.inputShape[0], plane = iw / c
            y = normalized(x, groupSize: iw / norm.groups, centred: true, epsilon: norm.epsilon) { e in (p[0][(e % iw) / plane], p[1][(e % iw) / plane]) }
        default:
            XCTFail("no oracle for \(type(of: run.layer))")
        }
        return y
    }

    func loss(_ run: LayerRun, x: [Double], p: [[Double]]) -> Double {
        zip(oracle(run, x: x, p: p, mask: run.scratch), run.projection).reduce(0) { $0 + $1.0 * Double($1.1) }
    }

    /// Forward against the oracle; input and parameter gradients against central differences.
    func check(
        _ layer: any Layer, _ shape: [Int], rows: Int = 2, seed: UInt64 = 1, input: [Float]? = nil, random: LayerRandomness? = nil,
        skipInputs: Set<Int> = [], file: StaticString = #filePath, line: UInt = #line
    ) throws {
        var run = try LayerRun(layer, inputShape: shape, rows: rows, seed: seed, input: input)
        run.run(random: random)
        var x = run.input.map(Double.init)
        var p = run.parameters.map { $0.map(Double.init) }
        let expected = oracle(run, x: x, p: p, mask: run.scratch)
        for (k, (a, e)) in zip(run.output, expected).enumerated() {
            XCTAssertEqual(Double(a), e, accuracy: 1e-6 + 1e-5 * abs(e), "output[\(k)]", file: file, line: line)
        }
        let h = 1e-6
        func numeric(_ change: (Double) -> Void, _ value: Double) -> Double {
            change(value + h)
            let plus = loss(run, x: x, p: p)
            change(value - h)
            let minus = loss(run, x: x, p: p)
            change(value)
            return (plus - minus) / (2 * h)
        }
        for i in x.indices where !skipInputs.contains(i % run.inputWidth) {
            let d = numeric({ x[i] = $0 }, x[i])
            XCTAssertEqual(Double(run.inputGradient[i]), d, accuracy: 1e-4 + 1e-3 * abs(d), "d input[\(i)]", file: file, line: line)
        }
        for t in p.indices {
            for e in p[t].indices {
                let d = numeric({ p[t][e] = $0 }, p[t][e])
                XCTAssertEqual(Double(run.parameterGradients[t][e]), d, accuracy: 1e-4 + 1e-3 * abs(d), "d \(run.specs[t].name)[\(e)]", file: file, line: line)
            }
        }
    }

    func testConv2D() throws {
        try check(Conv2D(2, 3, kernel: 3), [2, 6, 5])
        try check(Conv2D(2, 3, kernel: Size2D(3, 2), stride: 2, padding: 1), [2, 7, 6], rows: 3, seed: 2)
        try check(Conv2D(1, 2, kernel: 2, stride: Size2D(1, 2), padding: Size2D(0, 1), dilation: 2), [1, 6, 7], seed: 3)
        // Many samples per GEMM group (P = 4 positions: groups of 128): the group loop and its weight-gradient sum.
        try check(Conv2D(2, 2, kernel: 2), [2, 3, 3], rows: 5, seed: 4)
    }

    func testPooling() throws {
        try check(MaxPool2D(2), [2, 6, 4])
        try check(MaxPool2D(3, stride: 2, padding: 1), [2, 7, 6], rows: 3, seed: 2)
        try check(AvgPool2D(2), [2, 6, 4])
        try check(AvgPool2D(3, stride: 2, padding: 1), [2, 7, 6], rows: 3, seed: 2)
        try check(Flatten(), [2, 3, 4])
    }

    func testActivations() throws {
        for layer: any Layer in [Tanh(), Sigmoid(), LeakyReLU(0.1), GELU(), GELU(approximate: .tanh)] {
            try check(layer, [11], rows: 3)
        }
        // Large and tiny inputs: the portable tanh, sigmoid and erf branches.
        let extremes: [Float] = [-30, -9, -5.5, -4.2, -3, -1e-5, 0, 2e-4, 0.5, 3.5, 5, 12]
        for layer: any Layer in [Tanh(), Sigmoid(), GELU(), GELU(approximate: .tanh)] {
            var run = try LayerRun(layer, inputShape: [12], rows: 1, seed: 1, input: extremes)
            run.run()
            let expected = oracle(run, x: extremes.map(Double.init), p: [], mask: [])
            for (a, e) in zip(run.output, expected) { XCTAssertEqual(Double(a), e, accuracy: 1e-7 + 1e-6 * abs(e), "\(type(of: layer))") }
        }
    }

    func testNormalizations() throws {
        try check(LayerNorm(), [7], rows: 3)
        try check(LayerNorm(dimensions: 1, epsilon: 1e-3), [3, 5], rows: 2, seed: 2)
        try check(LayerNorm(), [2, 3, 2], rows: 2, seed: 3)
        try check(RMSNorm(), [6], rows: 3)
        try check(RMSNorm(dimensions: 1), [2, 5], rows: 2, seed: 4)
        try check(GroupNorm(2), [4, 3, 2], rows: 3)
        try check(GroupNorm(1), [3, 2, 2], rows: 2, seed: 5)
        try check(GroupNorm(3, epsilon: 1e-2), [3, 4], rows: 2, seed: 6)
        try check(GroupNorm(2), [6], rows: 3, seed: 7)
        // A sample's output depends on that sample alone: one row run alone gives the same bits.
        var many = try LayerRun(GroupNorm(2), inputShape: [4, 3, 2], rows: 5, seed: 8)
        many.run()
        var one = try LayerRun(GroupNorm(2), inputShape: [4, 3, 2], rows: 1, seed: 8, input: Array(many.input[(3 * 24)..<(4 * 24)]))
        one.parameters = many.parameters
        one.projection = Array(many.projection[(3 * 24)..<(4 * 24)])
        one.run()
        XCTAssertEqual(one.output, Array(many.output[(3 * 24)..<(4 * 24)]))
        XCTAssertEqual(one.inputGradient, Array(many.inputGradient[(3 * 24)..<(4 * 24)]))
        XCTAssertThrowsError(try Network(Sequential([GroupNorm(3)]), inputShape: [4, 2, 2])) { error in
            XCTAssertTrue("\(error)".contains("GroupNorm(3) on 4 channels"), "\(error)")
        }
        XCTAssertThrowsError(try Network(Sequential([LayerNorm(dimensions: 3)]), inputShape: [4, 2])) { error in
            XCTAssertTrue("\(error)".contains("last 3 dimensions") && "\(error)".contains("expected 1...2"), "\(error)")
        }
    }

    func testEmbedding() throws {
        let rows = 4, width = 3
        var input: [Float] = []
        for r in 0..<rows { input += [Float(r * 2 % 5), 0.5 * Float(r) - 1, Float(r) * 0.25] }
        try check(Embedding(5, 2), [width], rows: rows, input: input, skipInputs: [0])
        // The category column has no gradient; two rows of one category add their gradients.
        var run = try LayerRun(Embedding(5, 2), inputShape: [width], rows: rows, seed: 1, input: input)
        run.run()
        XCTAssertEqual((0..<rows).map { run.inputGradient[$0 * width] }, [0, 0, 0, 0])
        // An index out of range gives NaN, never another row's vector.
        var bad = try LayerRun(Embedding(5, 2), inputShape: [width], rows: 1, seed: 1, input: [5, 0, 0])
        bad.run()
        XCTAssertTrue(bad.output[2].isNaN && bad.output[3].isNaN)
    }

    func testDropout2dZeroesWholeChannels() throws {
        let random = LayerRandomness(seed: 7, step: 3, firstPosition: 16, layer: 0)
        try check(Dropout2d(0.5), [6, 3, 2], rows: 4, random: random)
        var run = try LayerRun(Dropout2d(0.5), inputShape: [6, 3, 2], rows: 40, seed: 1)
        run.run(random: random)
        var kept = 0
        for m in 0..<40 * 6 {
            let values = run.output[(m * 6)..<(m * 6 + 6)], inputs = run.input[(m * 6)..<(m * 6 + 6)]
            if values.allSatisfy({ $0 == 0 }) { continue }
            kept += 1
            for (y, x) in zip(values, inputs) { XCTAssertEqual(y, 2 * x) }
        }
        XCTAssertTrue((80...160).contains(kept), "\(kept) of 240 channels kept at p = 0.5")
        // The mask of sample s depends on its global position only: a shard starting 8 later sees rows 8... of this one.
        var later = try LayerRun(Dropout2d(0.5), inputShape: [6, 3, 2], rows: 32, seed: 1, input: Array(run.input[(8 * 36)...]))
        later.run(random: LayerRandomness(seed: 7, step: 3, firstPosition: 24, layer: 0))
        XCTAssertEqual(later.output, Array(run.output[(8 * 36)...]))
        // Evaluation: the identity.
        var evaluation = try LayerRun(Dropout2d(0.5), inputShape: [6, 3, 2], rows: 2, seed: 1)
        evaluation.run()
        XCTAssertEqual(evaluation.output, evaluation.input)
    }

    func testShapeErrorsNameTheLayerAndShapes() throws {
        XCTAssertThrowsError(try Network(Sequential([Conv2D(1, 4, kernel: 3)]), inputShape: [784])) { error in
            XCTAssertTrue("\(error)".contains("layer 0") && "\(error)".contains("(C, H, W)"), "\(error)")
        }
        XCTAssertThrowsError(try Network(Sequential([Conv2D(3, 4, kernel: 3)]), inputShape: [1, 28, 28])) { error in
            XCTAssertTrue("\(error)".contains("receives 1 channels, expected 3"), "\(error)")
        }
        XCTAssertThrowsError(try Network(Sequential([Conv2D(1, 4, kernel: 3), Linear(2704, 10)]), inputShape: [1, 28, 28])) { error in
            XCTAssertTrue("\(error)".contains("layer 1") && "\(error)".contains("Flatten"), "\(error)")
        }
        XCTAssertThrowsError(try Network(Sequential([MaxPool2D(5)]), inputShape: [1, 4, 4])) { error in
            XCTAssertTrue("\(error)".contains("does not fit in 4x4"), "\(error)")
        }
        let network = try Network(Sequential([Conv2D(1, 4, kernel: 5, padding: 2), ReLU(), MaxPool2D(2), Flatten(), Linear(784, 10)]), inputShape: [1, 28, 28])
        XCTAssertEqual(network.shapes, [[1, 28, 28], [4, 28, 28], [4, 28, 28], [4, 14, 14], [784], [10]])
        XCTAssertEqual(network.layout.tensors.map(\.name), ["layers.0.weight", "layers.0.bias", "layers.1.weight", "layers.1.bias"])
        XCTAssertEqual(network.layout.tensors[0].shape, [4, 1, 5, 5])
        XCTAssertEqual(network.multiplyAddsPerSample, 4 * 25 * 784 + 784 * 10)
    }

    func testLayerLanguage() throws {
        let layers = try ModelDescription.layers(
            "conv(32, 5, pad: 2) relu maxpool(2)\nconv(64, 5, pad: 2), relu, maxpool(2) # two blocks\nflatten dropout(0.5) linear(1024) relu dropout(0.5) linear(10)",
            inputShape: [1, 28, 28])
        let network = try Network(Sequential(layers), inputShape: [1, 28, 28])
        XCTAssertEqual(network.shapes.last, [10])
        XCTAssertEqual(network.shapes[6], [64, 7, 7])
        XCTAssertEqual((layers[3] as! Conv2D).inChannels, 32)
        XCTAssertEqual((layers[8] as! Linear).inputs, 3136)
        for (text, expected) in [
            ("conv(32, 5) relu linear(10)", "layer 2: linear(10): takes flat rows, got samples of shape (32, 24, 24); add flatten"),
            ("flatten linear(10) frobnicate", "unknown layer 'frobnicate'"),
            ("conv(32, kernel: 5, 3)", "positional argument '3' after a named one"),
            ("conv(32)", "missing kernel"),
            ("maxpool(2, strde: 2)", "unknown argument 'strde'"),
            ("conv(32, 5", "no closing parenthesis"),
            ("dropout(1.5)", "expected a probability in [0, 1)"),
            ("gelu(approximate: fast)", "expected none or tanh"),
            ("maxpool(40)", "does not fit in 28x28"),
        ] {
            XCTAssertThrowsError(try Network(Sequential(try ModelDescription.layers(text, inputShape: [1, 28, 28])), inputShape: [1, 28, 28]), text) { error in
                XCTAssertTrue("\(error)".contains(expected), "\(text): \(error)")
            }
        }
        XCTAssertTrue(try ModelDescription.loss("cross_entropy(label_smoothing: 0.1)") is SoftmaxCrossEntropy)
        XCTAssertThrowsError(try ModelDescription.loss("hinge")) {
            XCTAssertEqual("\($0)", "loss 'hinge', expected one of cross_entropy, bce_with_logits, mse")
        }
    }

    /// A sweep's rates in a described model: the input rate before the first layer with
    /// parameters, the hidden rate after it; the other layers as written.
    func testDropoutRatesGoIntoTheDescription() throws {
        let text = "dropout(p: 0.2) # the pixels\nconv(8, 3, pad: 1) relu dropout2d(0.1), flatten, gaussian_dropout(0.4) linear(10)"
        XCTAssertEqual(
            try ModelDescription.withDropoutRates(text, input: 0.1, hidden: 0.5),
            "dropout(0.1) conv(8, 3, pad: 1) relu dropout2d(0.5) flatten gaussian_dropout(0.5) linear(10)")
        let rewritten = try ModelDescription.layers(try ModelDescription.withDropoutRates(text, input: 0, hidden: 0.3), inputShape: [1, 6, 6])
        XCTAssertEqual((rewritten[3] as! Dropout2d).probability, 0.3)
        for (text, input, hidden, expected) in [
            ("flatten linear(10)", 0.0, 0.5, "no dropout, dropout2d or gaussian_dropout layer"),
            ("flatten linear(10) dropout(0.5)", 0.2, 0.5, "no dropout layer before its first layer with parameters"),
            ("dropout(0.5) flatten linear(10)", 0.0, 0.5, "no dropout layer after a layer with parameters"),
            ("flatten linear(4) dropout(0.5, p: 0.2)", 0.0, 0.5, "expected one rate"),
        ] {
            XCTAssertThrowsError(try ModelDescription.withDropoutRates(text, input: input, hidden: hidden), text) { error in
                XCTAssertTrue("\(error)".contains(expected), "\(text): \(error)")
            }
        }
    }
}

/// Groups of `groupSize` consecutive values, each minus its mean (when `centred`) over the
/// root of its mean square plus ε, then times a and plus b of `affine(element)`: the textbook definitions.
func normalized(_ x: [Double], groupSize: Int, centred: Bool, epsilon: Double, affine: (Int) -> (Double, Double)) -> [Double] {
    var y = x
    for start in stride(from: 0, to: x.count, by: groupSize) {
        let group = x[start..<start + groupSize]
        let mean = centred ? group.reduce(0, +) / Double(groupSize) : 0
        let variance = group.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(groupSize)
        for e in group.indices {
            let (a, b) = affine(e)
            y[e] = (x[e] - mean) / (variance + epsilon).squareRoot() * a + b
        }
    }
    return y
}
