import Foundation
import ShardwiseKernels
import XCTest

@testable import ShardwiseLayers

/// `x * sigmoid(linear(flatten(x)))`, one factor per channel: a gate written outside the
/// built-in composites, as a user would (squeeze-and-excitation's shape).
struct ChannelGate: CompositeLayer {
    func build(_ x: ModelValue, in graph: inout ModelGraph) throws(ModelError) -> ModelValue {
        let width = x.shape.reduce(1, *)
        let factors = try graph.apply(Sequential([Flatten(), Linear(width, x.shape[0]), Sigmoid()]), named: "excite", to: x)
        return try graph.combine(.multiply, [x, factors])
    }
}

/// Models as trees: names, random streams, the compiled nodes, and the backward pass through
/// additions, concatenations and products against finite differences of a Double oracle.
final class CompositeTests: XCTestCase {
    /// Every kind of node: a residual with the identity shortcut, branches concatenated along
    /// channels, a user's gate (a value read twice, a per-channel product), a residual with a
    /// shortcut layer, branches added; the three normalizations.
    func treeModel() -> Sequential {
        Sequential {
            Residual { GroupNorm(2); Tanh() }
            Parallel(.concatenate) {
                Sequential { LayerNorm(dimensions: 2); Tanh() }
                RMSNorm()
            }
            ChannelGate()
            Flatten()
            Residual(shortcut: Sequential([Linear(48, 6)])) { Linear(48, 6); Tanh() }
            Parallel(.add) {
                Linear(6, 5)
                Sequential { Tanh(); Linear(6, 5) }
            }
        }
    }

    func testNamesFollowTheTreeAndFlatModelsKeepTheirs() throws {
        let network = try Network(treeModel(), inputShape: [4, 2, 3])
        XCTAssertEqual(network.layout.tensors.map(\.name), [
            "layers.0.body.0.weight", "layers.0.body.0.bias",
            "layers.1.branches.0.0.weight", "layers.1.branches.0.0.bias", "layers.1.branches.1.0.weight",
            "layers.2.excite.1.weight", "layers.2.excite.1.bias",
            "layers.3.body.0.weight", "layers.3.body.0.bias", "layers.3.shortcut.0.weight", "layers.3.shortcut.0.bias",
            "layers.4.branches.0.0.weight", "layers.4.branches.0.0.bias", "layers.4.branches.1.1.weight", "layers.4.branches.1.1.bias",
        ])
        XCTAssertEqual(network.shapes.last, [5])
        XCTAssertEqual(network.layout.tensors.first { $0.name == "layers.2.excite.1.weight" }?.shape, [8, 48])
        // Max-norm: only `.weight`-role tensors of leaves before the last one with parameters.
        XCTAssertEqual(network.layout.tensors.filter(\.maxNormApplies).map(\.name), [
            "layers.2.excite.1.weight", "layers.3.body.0.weight", "layers.3.shortcut.0.weight", "layers.4.branches.0.0.weight",
        ])
        XCTAssertEqual(network.multiplyAddsPerSample, 48 * 8 + 2 * 48 * 6 + 2 * 6 * 5)
        // A flat model: one node per layer, names counting layers with parameters, streams by type.
        let flat = try Network(Sequential { Dropout(0.2); Linear(6, 4); ReLU(); Dropout(0.5); Linear(4, 3) }, inputWidth: 6)
        XCTAssertEqual(flat.nodes.count, 5)
        XCTAssertEqual(flat.layout.tensors.map(\.name), ["layers.0.weight", "layers.0.bias", "layers.1.weight", "layers.1.bias"])
        XCTAssertEqual(flat.typeIndex, [0, 0, 0, 1, 1])
        XCTAssertEqual(flat.gradientBufferCount, 2, "a chain uses two gradient buffers in turn")
        // A dropout inside a composite gets its own stream: the model's second Dropout.
        let nested = try Network(Sequential { Dropout(0.2); Residual { Linear(6, 6); Dropout(0.5) }; Linear(6, 3) }, inputWidth: 6)
        XCTAssertEqual(nested.nodes.compactMap { node in node.layer is Dropout ? nested.typeIndex[nested.nodes.firstIndex { $0.path == node.path && $0.output == node.output }!] : nil }, [0, 1])
    }

    func testResidualIsBodyPlusInputBitForBit() throws {
        _ = try BLAS.load()
        let rows = 5, width = 6
        let body = Sequential { Linear(width, width); Tanh(); LayerNorm() }
        let alone = try Network(Sequential([Linear(width, width), Tanh(), LayerNorm()]), inputWidth: width)
        let residual = try Network(Sequential { Residual { body.layers[0]; body.layers[1]; body.layers[2] } }, inputWidth: width)
        XCTAssertEqual(alone.layout.tensors.map(\.offset), residual.layout.tensors.map(\.offset))
        let parameters = FloatBuffer(count: alone.layout.count)
        alone.initialize(parameters: parameters, seed: 3)
        let a = Workspace(network: alone, capacity: rows), b = Workspace(network: residual, capacity: rows)
        let stream = RandomAddress(seed: 4, purpose: .synthetic)
        for i in 0..<rows * width { a.input[i] = 2 * stream.uniform(i) - 1; b.input[i] = a.input[i] }
        alone.forward(parameters: parameters.pointer, workspace: a, rows: rows, random: nil)
        residual.forward(parameters: parameters.pointer, workspace: b, rows: rows, random: nil)
        for i in 0..<rows * width { XCTAssertEqual(b.output[i], a.output[i] + a.input[i], "output \(i)") }
    }

    // MARK: - The whole tree against a Double oracle

    /// The model's forward pass in Double, walking the compiled nodes with each leaf's definition.
    func oracleLogits(_ network: Network, parameters p: [Double], input: [Double], rows: Int) -> [Double] {
        var values = [[Double]](repeating: [], count: network.shapes.count)
        values[0] = input
        func tensor(_ n: Int, _ t: Int) -> ArraySlice<Double> {
            let offset = network.parameterOffsets[n][t], count = network.layout.tensors.first { $0.offset == offset }!.count
            return p[offset..<offset + count]
        }
        for (n, node) in network.nodes.enumerated() {
            let inWidth = network.widths[node.inputs.first!], outWidth = network.widths[node.output]
            let x = values[node.inputs[0]]
            var y = [Double](repeating: 0, count: rows * outWidth)
            switch node.layer {
            case let linear as Linear:
                let w = Array(tensor(n, 0)), b = Array(tensor(n, 1))
                for r in 0..<rows { for o in 0..<linear.outputs {
                    y[r * outWidth + o] = b[o] + (0..<linear.inputs).reduce(0) { $0 + w[o * linear.inputs + $1] * x[r * inWidth + $1] }
                } }
            case is Tanh: y = x.map { Foundation.tanh($0) }
            case is Sigmoid: y = x.map { 1 / (1 + Foundation.exp(-$0)) }
            case is Flatten: y = x
            case let norm as LayerNorm:
                let size = network.shapes[node.inputs[0]].suffix(norm.dimensions ?? 3).reduce(1, *)
                let w = Array(tensor(n, 0)), b = Array(tensor(n, 1))
                y = normalized(x, groupSize: size, centred: true, epsilon: norm.epsilon) { e in (w[e % size], b[e % size]) }
            case let norm as RMSNorm:
                let w = Array(tensor(n, 0)), size = w.count
                y = normalized(x, groupSize: size, centred: false, epsilon: norm.epsilon) { e in (w[e % size], 0) }
            case let norm as GroupNorm:
                let w = Array(tensor(n, 0)), b = Array(tensor(n, 1)), plane = inWidth / w.count
                y = normalized(x, groupSize: inWidth / norm.groups, centred: true, epsilon: norm.epsilon) { e in (w[(e % inWidth) / plane], b[(e % inWidth) / plane]) }
            case nil:
                guard case .combine(let combination) = node.operation else { XCTFail(); return [] }
                switch combination {
                case .add: y = node.inputs.dropFirst().reduce(x) { sum, v in zip(sum, values[v]).map(+) }
                case .concatenate:
                    y = []
                    for r in 0..<rows { for v in node.inputs { let w = network.widths[v]; y += values[v][r * w..<(r + 1) * w] } }
                case .multiply:
                    let g = values[node.inputs[1]], gw = network.widths[node.inputs[1]], plane = outWidth / gw
                    for i in 0..<rows * outWidth { y[i] = x[i] * g[(i / outWidth) * gw + (i % outWidth) / plane] }
                }
            default: XCTFail("no oracle for \(String(describing: node.layer))")
            }
            values[node.output] = y
        }
        return values.last!
    }

    func testTreeGradientsAgreeWithFiniteDifferences() throws {
        _ = try BLAS.load()
        let rows = 3, divisor = 4
        let network = try Network(treeModel(), inputShape: [4, 2, 3])
        let parameters = FloatBuffer(count: network.layout.count)
        let pstream = RandomAddress(seed: 21, purpose: .synthetic, position: 1)
        for t in network.layout.tensors { for e in 0..<t.count { parameters[t.offset + e] = pstream.uniform(t.offset + e) - 0.5 } }
        let ws = Workspace(network: network, capacity: rows)
        let stream = RandomAddress(seed: 22, purpose: .synthetic)
        for i in 0..<rows * 24 { ws.input[i] = 4 * stream.uniform(i) - 2 }
        let labels: [Int32] = [1, 4, 0]
        for r in 0..<rows { ws.labels[r] = labels[r] }
        network.forward(parameters: parameters.pointer, workspace: ws, rows: rows, random: nil)
        let gradient = FloatBuffer(count: network.layout.count)
        gradient.fill(.nan)
        let lossSum = network.backward(parameters: parameters.pointer, workspace: ws, rows: rows, lossDivisor: divisor, gradient: gradient.pointer)

        var p = (0..<network.layout.count).map { Double(parameters[$0]) }
        let input = (0..<rows * 24).map { Double(ws.input[$0]) }
        func loss() -> Double {
            let z = oracleLogits(network, parameters: p, input: input, rows: rows)
            var sum = 0.0
            for r in 0..<rows {
                let row = z[r * 5..<(r + 1) * 5], m = row.max()!
                sum += m + log(row.reduce(0) { $0 + exp($1 - m) }) - z[r * 5 + Int(labels[r])]
            }
            return sum / Double(divisor)
        }
        let logits = oracleLogits(network, parameters: p, input: input, rows: rows)
        for i in 0..<rows * 5 { XCTAssertEqual(Double(ws.output[i]), logits[i], accuracy: 1e-5, "logit \(i)") }
        XCTAssertEqual(lossSum / Double(divisor), loss(), accuracy: 1e-5)
        let h = 1e-6
        for t in network.layout.tensors {
            for e in t.offset..<t.offset + t.count {
                let value = p[e]
                p[e] = value + h
                let plus = loss()
                p[e] = value - h
                let minus = loss()
                p[e] = value
                let d = (plus - minus) / (2 * h)
                XCTAssertEqual(Double(gradient[e]), d, accuracy: 1e-4 + 1e-3 * abs(d), "d \(t.name)[\(e - t.offset)]")
            }
        }
    }

    // MARK: - The layer language

    func testCompositesInTheLayerLanguage() throws {
        let layers = try ModelDescription.layers(
            "conv(4, 3, pad: 1) residual(conv(4, 3, pad: 1) groupnorm(2) relu conv(4, 3, pad=1) layernorm, shortcut: conv(4, 1)) relu "
                + "parallel(conv(2, 1) | maxpool(3, stride: 1, pad: 1) conv(3, 1), combine: concat) rmsnorm flatten linear(3)",
            inputShape: [1, 5, 5])
        let network = try Network(Sequential(layers), inputShape: [1, 5, 5])
        XCTAssertEqual(network.shapes.last, [3])
        let residual = try XCTUnwrap(layers[1] as? Residual)
        XCTAssertEqual(residual.body.layers.count, 5)
        XCTAssertEqual(residual.shortcut?.layers.count, 1)
        XCTAssertTrue(residual.body.layers[1] is GroupNorm)
        XCTAssertEqual(try layers[3].outputShape(inputShape: [4, 5, 5]), [5, 5, 5], "concatenated channels: 2 + 3")
        XCTAssertTrue(network.layout.tensors.contains { $0.name == "layers.1.body.3.weight" })
        XCTAssertTrue(network.layout.tensors.contains { $0.name == "layers.2.branches.1.1.weight" })
        let added = try ModelDescription.layers("parallel(linear(4) | linear(4) tanh, combine: add)", inputShape: [3])
        XCTAssertEqual((added[0] as? Parallel)?.combination, .add)

        func failure(_ text: String, _ shape: [Int] = [1, 5, 5]) -> String {
            do { _ = try ModelDescription.layers(text, inputShape: shape); return "no error" } catch { return error.description }
        }
        XCTAssertEqual(
            failure("conv(2, 3) residual(conv(4, 3, pad: 1))"),
            "layer 1: residual(conv(4, 3, pad: 1)) on input (2, 3, 3): residual: the body gives (4, 3, 3), the shortcut (2, 3, 3); they must agree (give a shortcut such as conv(C, 1, stride: S))")
        XCTAssertEqual(failure("residual(relu linear(3))"), "layer 0: residual(relu linear(3)): body: layer 1: linear(3): takes flat rows, got samples of shape (1, 5, 5); add flatten before it")
        XCTAssertEqual(failure("parallel(relu)"), "layer 0: parallel(relu): expected at least two branches separated by |, got 1")
        XCTAssertEqual(failure("parallel(relu | tanh, combine: max)"), "layer 0: parallel(relu | tanh, combine: max): combine: max, expected concat or add")
        XCTAssertEqual(failure("residual(relu, gate: relu)"), "layer 0: residual(relu, gate: relu): unknown argument 'gate', expected shortcut")
        XCTAssertEqual(failure("parallel(conv(2, 3) | conv(2, 1))"), "layer 0: parallel(conv(2, 3) | conv(2, 1)) on input (1, 5, 5): concatenate takes values that differ in their first dimension alone, got (2, 3, 3) and (2, 5, 5)")
        XCTAssertEqual(failure("groupnorm(3)", [4, 2, 2]), "layer 0: groupnorm(3) on input (4, 2, 2): GroupNorm(3) on 4 channels, expected a positive number of groups that divides the channels")
        XCTAssertEqual(failure("residual(relu"), "residual( at character 1 of the layers has no closing parenthesis")
        let deep = String(repeating: "residual(", count: 70) + "relu" + String(repeating: ")", count: 70)
        XCTAssertTrue(failure(deep).contains("nested deeper than 64"), failure(deep))
    }
}
