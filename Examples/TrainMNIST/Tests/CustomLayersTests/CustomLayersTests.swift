import CustomLayers
import Foundation
import Shardwise
import XCTest

/// The example's own layers meet the checks the built-in layers meet: finite-difference
/// gradients against an independent Double forward pass, and the worker-count contract.
final class CustomLayersTests: XCTestCase {
    let rows = 4, inputs = 6, hidden = 5, classes = 3

    /// Softmax cross-entropy of Linear -> Swish -> Linear in Double, divided by `divisor`.
    func oracleLoss(_ theta: [Double], _ layout: ParameterLayout, input: [Double], labels: [Int32], divisor: Int) -> Double {
        func linear(_ k: Int, _ x: [Double], _ i: Int, _ o: Int) -> [Double] {
            let w = layout.tensor(named: "layers.\(k).weight")!, b = layout.tensor(named: "layers.\(k).bias")!
            return (0..<rows * o).map { e in
                let n = e / o, u = e % o
                return (0..<i).reduce(theta[b.offset + u]) { $0 + x[n * i + $1] * theta[w.offset + u * i + $1] }
            }
        }
        let h = linear(0, input, inputs, hidden).map { $0 / (1 + exp(-$0)) }
        let z = linear(1, h, hidden, classes)
        var loss = 0.0
        for n in 0..<rows {
            let row = z[n * classes..<(n + 1) * classes]
            let m = row.max()!
            loss += m + log(row.reduce(0) { $0 + exp($1 - m) }) - z[n * classes + Int(labels[n])]
        }
        return loss / Double(divisor)
    }

    func testSwishGradientsMatchFiniteDifferences() throws {
        _ = try BLAS.load()
        let network = try Network(Sequential { Linear(inputs, hidden); Swish(); Linear(hidden, classes) }, inputWidth: inputs)
        for seed in UInt64(1)...3 {
            let parameters = FloatBuffer(count: network.layout.count)
            network.initialize(parameters: parameters, seed: seed)
            let ws = Workspace(network: network, capacity: rows)
            let stream = RandomAddress(seed: seed, purpose: .synthetic)
            for i in 0..<rows * inputs { ws.input[i] = 2 * stream.uniform(i) - 1 }
            let labels = (0..<rows).map { Int32($0 % classes) }
            for n in 0..<rows { ws.labels[n] = labels[n] }
            let divisor = 2 * rows
            network.forward(parameters: parameters.pointer, workspace: ws, rows: rows, random: nil)
            let gradient = FloatBuffer(count: network.layout.count)
            let lossSum = network.backward(parameters: parameters.pointer, workspace: ws, rows: rows, lossDivisor: divisor, gradient: gradient.pointer)
            var theta = (0..<network.layout.count).map { Double(parameters[$0]) }
            let input = (0..<rows * inputs).map { Double(ws.input[$0]) }
            let loss = { (t: [Double]) in self.oracleLoss(t, network.layout, input: input, labels: labels, divisor: divisor) }
            XCTAssertEqual(lossSum / Double(divisor), loss(theta), accuracy: 1e-5)
            let h = 1e-6
            for tensor in network.layout.tensors {
                for e in 0..<tensor.count {
                    let i = tensor.offset + e, saved = theta[i]
                    theta[i] = saved + h
                    let plus = loss(theta)
                    theta[i] = saved - h
                    let minus = loss(theta)
                    theta[i] = saved
                    let numeric = (plus - minus) / (2 * h)
                    XCTAssertEqual(Double(gradient[i]), numeric, accuracy: 1e-4 + 1e-3 * abs(numeric), "seed \(seed) \(tensor.name)[\(e)]")
                }
            }
        }
    }

    /// The gated residual block: Linear -> GatedResidual(Linear, Swish) -> Linear against central
    /// differences of the same computation in Double, every parameter.
    func testGatedResidualGradientsMatchFiniteDifferences() throws {
        _ = try BLAS.load()
        let network = try Network(Sequential {
            Linear(inputs, hidden)
            GatedResidual(width: hidden) { Linear(hidden, hidden); Swish() }
            Linear(hidden, classes)
        }, inputWidth: inputs)
        XCTAssertEqual(network.layout.tensors.map(\.name), [
            "layers.0.weight", "layers.0.bias", "layers.1.body.0.weight", "layers.1.body.0.bias",
            "layers.1.gate.0.weight", "layers.1.gate.0.bias", "layers.2.weight", "layers.2.bias",
        ])
        let parameters = FloatBuffer(count: network.layout.count)
        network.initialize(parameters: parameters, seed: 4)
        let ws = Workspace(network: network, capacity: rows)
        let stream = RandomAddress(seed: 4, purpose: .synthetic)
        for i in 0..<rows * inputs { ws.input[i] = 2 * stream.uniform(i) - 1 }
        let labels = (0..<rows).map { Int32($0 % classes) }
        for n in 0..<rows { ws.labels[n] = labels[n] }
        network.forward(parameters: parameters.pointer, workspace: ws, rows: rows, random: nil)
        let gradient = FloatBuffer(count: network.layout.count)
        let lossSum = network.backward(parameters: parameters.pointer, workspace: ws, rows: rows, lossDivisor: rows, gradient: gradient.pointer)
        var theta = (0..<network.layout.count).map { Double(parameters[$0]) }
        let input = (0..<rows * inputs).map { Double(ws.input[$0]) }
        func linear(_ name: String, _ x: [Double], _ i: Int, _ o: Int, _ t: [Double]) -> [Double] {
            let w = network.layout.tensor(named: "\(name).weight")!, b = network.layout.tensor(named: "\(name).bias")!
            return (0..<rows * o).map { e in (0..<i).reduce(t[b.offset + e % o]) { $0 + x[(e / o) * i + $1] * t[w.offset + (e % o) * i + $1] } }
        }
        func loss(_ t: [Double]) -> Double {
            let x = linear("layers.0", input, inputs, hidden, t)
            let body = linear("layers.1.body.0", x, hidden, hidden, t).map { $0 / (1 + exp(-$0)) }
            let gate = linear("layers.1.gate.0", x, hidden, hidden, t).map { 1 / (1 + exp(-$0)) }
            let y = (0..<x.count).map { x[$0] + gate[$0] * body[$0] }
            let z = linear("layers.2", y, hidden, classes, t)
            return (0..<rows).reduce(0.0) { sum, n in
                let row = z[n * classes..<(n + 1) * classes], m = row.max()!
                return sum + m + log(row.reduce(0) { $0 + exp($1 - m) }) - z[n * classes + Int(labels[n])]
            } / Double(rows)
        }
        XCTAssertEqual(lossSum / Double(rows), loss(theta), accuracy: 1e-5)
        for i in 0..<network.layout.count where network.layout.tensors.contains(where: { $0.offset <= i && i < $0.offset + $0.count }) {
            let saved = theta[i]
            theta[i] = saved + 1e-6
            let plus = loss(theta)
            theta[i] = saved - 1e-6
            let minus = loss(theta)
            theta[i] = saved
            let numeric = (plus - minus) / 2e-6
            XCTAssertEqual(Double(gradient[i]), numeric, accuracy: 1e-4 + 1e-3 * abs(numeric), "parameter \(i)")
        }
    }

    /// Registered by name, the example's layers are written in the layer language: the
    /// described model trains to the same bits as the one built in Swift, and bad uses are
    /// refused naming the layer.
    func testRegisteredLayersInTheLayerLanguage() async throws {
        try ModelDescription.register(Swish.self)
        try ModelDescription.register(UniformNoise.self)
        try ModelDescription.register(Swish.self)  // again: nothing changes
        XCTAssertThrowsError(try ModelDescription.register(Renamed.self)) { XCTAssertTrue("\($0)".contains("taken by Swish"), "\($0)") }
        XCTAssertThrowsError(try ModelDescription.register(BuiltInName.self)) { XCTAssertTrue("\($0)".contains("built-in"), "\($0)") }
        XCTAssertThrowsError(try ModelDescription.layers("linear(8) swish(2)", inputShape: [6])) { XCTAssertTrue("\($0)".contains("layer 1: swish(2): unexpected argument '2'"), "\($0)") }
        XCTAssertThrowsError(try ModelDescription.layers("uniform_noise(-1) linear(3)", inputShape: [6])) { XCTAssertTrue("\($0)".contains("amplitude -1.0, expected at least 0"), "\($0)") }
        XCTAssertThrowsError(try ModelDescription.layers("swishy", inputShape: [6])) { XCTAssertTrue("\($0)".contains("swish, uniform_noise"), "\($0)") }

        let (data, configuration) = syntheticProblem()
        let described = NetworkConfiguration(
            layers: "uniform_noise(0.1) linear(32) swish dropout(0.3) residual(linear(32) swish) linear(10)", inputShape: [20], outputSize: 10)
        let swift = Sequential {
            UniformNoise(amplitude: 0.1)
            Linear(20, 32); Swish(); Dropout(0.3)
            Residual { Linear(32, 32); Swish() }
            Linear(32, 10)
        }
        var hashes: [String] = []
        for workers in [1, 2] {
            let pool = try WorkerPool.onThisMachine(workers: workers, oversubscribe: true)
            let trainers = [
                try Trainer(network: described, data: data, configuration: configuration, workers: pool),
                try Trainer(model: swift, data: data, configuration: configuration, workers: pool),
            ]
            for trainer in trainers {
                for try await _ in trainer.fit(test: data) {}
                hashes.append(trainer.weightsSHA256)
            }
            pool.shutdown()
        }
        XCTAssertEqual(Set(hashes).count, 1, "described and Swift-built, 1 and 2 workers: \(hashes)")
    }

    /// Swish's ONNX lowering, run by a small interpreter of the operators it adds, gives its forward pass.
    func testSwishLowersToONNXOperatorsThatComputeIt() throws {
        struct Recorder: ONNXGraphBuilder {
            var nodes: [(op: String, inputs: [String], output: String)] = []
            mutating func constant(_ name: String, _ dims: [Int], _ values: [Float]) -> String { name }
            mutating func integers(_ name: String, _ values: [Int]) -> String { name }
            mutating func addNode(_ op: String, _ inputs: [String], _ output: String, ints: [(String, Int)], floats: [(String, Float)], lists: [(String, [Int])]) -> String {
                nodes.append((op, inputs, output))
                return output
            }
        }
        var graph = Recorder()
        let output = try XCTUnwrap(Swish().lowerToONNX(&graph, input: "x", inputShape: [5], parameters: [], name: "layers.1"))
        let x: [Float] = [-3, -0.5, 0, 0.7, 4]
        var values = ["x": x]
        for node in graph.nodes {
            let a = try XCTUnwrap(values[node.inputs[0]], "\(node.inputs[0]) is computed before \(node.op) reads it")
            switch node.op {
            case "Sigmoid": values[node.output] = a.map { 1 / (1 + Float(exp(-Double($0)))) }
            case "Mul": values[node.output] = zip(a, try XCTUnwrap(values[node.inputs[1]])).map { $0 * $1 }
            default: XCTFail("unexpected operator \(node.op)")
            }
        }
        var y = [Float](repeating: 0, count: x.count)
        let empty = [Int]()
        try x.withUnsafeBufferPointer { input in
            try empty.withUnsafeBufferPointer { offsets in
                var scratch: Float = 0
                Swish().forward(ForwardPass(
                    rows: 1, inputWidth: 5, outputWidth: 5, inputShape: [5], outputShape: [5], input: try XCTUnwrap(input.baseAddress),
                    output: &y, parameters: ParameterValues(base: &scratch, offsets: offsets), scratch: &scratch, random: nil))
            }
        }
        for (a, b) in zip(try XCTUnwrap(values[output]), y) { XCTAssertEqual(a, b, accuracy: 1e-6) }
    }

    /// Trained weights are the same for 1, 2, 3 and 4 workers, with the example's layers (its own
    /// composite among them) and dropout.
    func testWeightsIndependentOfWorkerCount() async throws {
        let (data, configuration) = syntheticProblem()
        let features = data.features
        var hashes: [String] = []
        var errors: [Double] = []
        for workers in 1...4 {
            let pool = try WorkerPool.onThisMachine(workers: workers, oversubscribe: true)
            let model = Sequential {
                UniformNoise(amplitude: 0.1)
                Linear(features, 32); Swish(); Dropout(0.3)
                GatedResidual(width: 32) { LayerNorm(); Linear(32, 32); Swish(); Dropout(0.2) }
                Linear(32, 10)
            }
            let trainer = try Trainer(model: model, data: data, configuration: configuration, workers: pool)
            var epochs = 0
            for try await event in trainer.fit(test: data) { if case .epoch = event { epochs += 1 } }
            XCTAssertEqual(epochs, 2)
            hashes.append(trainer.weightsSHA256)
            errors.append(try XCTUnwrap(trainer.state.records.last!.testErrorPercent))
            pool.shutdown()
        }
        XCTAssertEqual(Set(hashes).count, 1, "\(hashes)")
        XCTAssertLessThan(errors[0], 20, "the synthetic rule is learnt")
    }

    /// 1,024 samples of 20 features, 10 classes (feature f carries class f mod 10), and 2 epochs
    /// of momentum SGD with max-norm in steps of 64 samples, shards of 8.
    func syntheticProblem() -> (Dataset, TrainingConfiguration) {
        let count = 1024, features = 20
        let stream = RandomAddress(seed: 3, purpose: .synthetic)
        var images = [Float](repeating: 0, count: count * features)
        var labels = [Int32](repeating: 0, count: count)
        for n in 0..<count {
            let label = stream.integer(n, below: 10)
            labels[n] = Int32(label)
            for f in 0..<features { images[n * features + f] = 0.5 * stream.uniform(count + n * features + f) + (f % 10 == label ? 0.6 : 0) }
        }
        let configuration = TrainingConfiguration(
            optimizer: OptimizerConfiguration(learningRate: 0.05, momentum: MomentumRamp(start: 0.9, end: 0.9, epochs: 0), maxNorm: 3),
            epochs: 2, batchSize: 64, shardSize: 8, seed: 5)
        return (Dataset(features: features, classes: 10, images: images, labels: labels), configuration)
    }
}

/// Another type claiming Swish's name.
struct Renamed: NamedLayer {
    static var languageName: String { "swish" }
    init(arguments: inout LayerArguments, inputShape: [Int]) throws(ModelError) {}
    func outputWidth(inputWidth: Int) throws(ModelError) -> Int { inputWidth }
    func forward(_ pass: ForwardPass) {}
    func backward(_ pass: BackwardPass) {}
}

/// A type claiming a built-in layer's name.
struct BuiltInName: NamedLayer {
    static var languageName: String { "relu" }
    init(arguments: inout LayerArguments, inputShape: [Int]) throws(ModelError) {}
    func outputWidth(inputWidth: Int) throws(ModelError) -> Int { inputWidth }
    func forward(_ pass: ForwardPass) {}
    func backward(_ pass: BackwardPass) {}
}
