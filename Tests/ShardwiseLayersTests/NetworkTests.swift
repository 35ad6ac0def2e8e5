import ShardwiseKernels
import ShardwiseLayers
import XCTest

final class NetworkTests: XCTestCase {
    func testReferenceArchitecture() throws {
        let network = try Network(NetworkConfiguration(hiddenSizes: [1024, 1024, 1024], dropoutInput: 0.2, dropoutHidden: 0.5))
        XCTAssertEqual(network.layout.parameterCount, 784 * 1024 + 1024 + 2 * (1024 * 1024 + 1024) + 1024 * 10 + 10)
        XCTAssertEqual(network.layout.tensors.map(\.name), [
            "layers.0.weight", "layers.0.bias", "layers.1.weight", "layers.1.bias",
            "layers.2.weight", "layers.2.bias", "layers.3.weight", "layers.3.bias",
        ])
        XCTAssertEqual(network.layout.tensors[0].shape, [1024, 784])  // (out, in), as nn.Linear
        XCTAssertEqual(network.layout.tensors.filter(\.maxNormApplies).count, 3)
        XCTAssert(network.layout.tensors.allSatisfy { $0.offset % 16 == 0 })
        // dropout(0.2), then 3 x (linear, relu, dropout(0.5)), then the output linear.
        XCTAssertEqual(network.layers.count, 1 + 3 * 3 + 1)
    }

    /// He uniform: weights within ±√(6/fan_in) with variance 2/fan_in; biases zero; the seed decides.
    func testHeInitialization() throws {
        let network = try Network(NetworkConfiguration(inputSize: 400, hiddenSizes: [300], outputSize: 10, dropoutInput: 0, dropoutHidden: 0))
        let p = FloatBuffer(count: network.layout.count)
        network.initialize(parameters: p, seed: 7)
        let w = network.layout.tensors[0]
        let values = (0..<w.count).map { Double(p[w.offset + $0]) }
        let bound = (6.0 / 400).squareRoot()
        XCTAssert(values.allSatisfy { abs($0) <= bound })
        let variance = values.reduce(0) { $0 + $1 * $1 } / Double(values.count)
        XCTAssertEqual(variance, 2.0 / 400, accuracy: 0.05 * 2.0 / 400)
        let b = network.layout.tensors[1]
        XCTAssert((0..<b.count).allSatisfy { p[b.offset + $0] == 0 })
        let q = FloatBuffer(count: network.layout.count)
        network.initialize(parameters: q, seed: 7)
        XCTAssertEqual(p.array, q.array)
        network.initialize(parameters: q, seed: 8)
        XCTAssertNotEqual(p.array, q.array)
    }

    /// PyTorch's initialisation: conv and linear weights and biases uniform in ±1/√fan-in
    /// (variance 1/(3 fan-in)), BatchNorm's affine parameters as with He (ones and zeros).
    func testPyTorchInitialization() throws {
        var description = NetworkConfiguration(layers: "conv(8, 3) batchnorm2d relu flatten linear(300) relu linear(10)", inputShape: [2, 10, 10], outputSize: 10)
        description.initialization = .pytorch
        let network = try Network(description)
        let p = FloatBuffer(count: network.layout.count)
        network.initialize(parameters: p, seed: 7, scheme: .pytorch)
        let fanIns = ["layers.0.weight": 18, "layers.0.bias": 18, "layers.2.weight": 512, "layers.2.bias": 512, "layers.3.weight": 300, "layers.3.bias": 300]
        for tensor in network.layout.tensors {
            let values = (0..<tensor.count).map { Double(p[tensor.offset + $0]) }
            if let fanIn = fanIns[tensor.name] {
                let bound = 1 / Double(fanIn).squareRoot()
                XCTAssert(values.allSatisfy { abs($0) <= bound }, tensor.name)
                if tensor.count >= 100 { XCTAssertGreaterThan(values.map(abs).max()!, 0.9 * bound, tensor.name) }
                if tensor.count >= 1000 {
                    let variance = values.reduce(0) { $0 + $1 * $1 } / Double(values.count)
                    XCTAssertEqual(variance, bound * bound / 3, accuracy: 0.05 * bound * bound / 3, tensor.name)
                }
            } else if tensor.name == "layers.1.weight" || tensor.name == "layers.1.running_var" {
                XCTAssert(values.allSatisfy { $0 == 1 }, tensor.name)
            } else {
                XCTAssert(values.allSatisfy { $0 == 0 }, tensor.name)
            }
        }
        XCTAssertEqual(Set(network.layout.tensors.map(\.name)).intersection(fanIns.keys).count, fanIns.count)
        // The He default differs: larger weights, zero biases.
        let he = FloatBuffer(count: network.layout.count)
        network.initialize(parameters: he, seed: 7)
        XCTAssertNotEqual(p.array, he.array)
        XCTAssertEqual(he[network.layout.tensors.first { $0.name == "layers.0.bias" }!.offset], 0)
    }

    func testSchedules() {
        XCTAssertEqual(LearningRateSchedule.constant.learningRate(base: 0.1, progress: 7), 0.1)
        XCTAssertEqual(LearningRateSchedule.step(every: 10, gamma: 0.5).learningRate(base: 0.1, progress: 9.9), 0.1)
        XCTAssertEqual(LearningRateSchedule.step(every: 10, gamma: 0.5).learningRate(base: 0.1, progress: 25), 0.025, accuracy: 1e-15)
        XCTAssertEqual(LearningRateSchedule.exponential(gamma: 0.9).learningRate(base: 1, progress: 2), 0.81, accuracy: 1e-15)
        let cosine = LearningRateSchedule.cosine(epochs: 10, floor: 0.1)
        XCTAssertEqual(cosine.learningRate(base: 1, progress: 0), 1, accuracy: 1e-15)
        XCTAssertEqual(cosine.learningRate(base: 1, progress: 5), 0.55, accuracy: 1e-15)
        XCTAssertEqual(cosine.learningRate(base: 1, progress: 10), 0.1, accuracy: 1e-15)
        XCTAssertEqual(cosine.learningRate(base: 1, progress: 12), 0.1, accuracy: 1e-15)
        let ramp = MomentumRamp(start: 0.5, end: 0.99, epochs: 10)
        XCTAssertEqual(ramp.momentum(progress: 0), 0.5)
        XCTAssertEqual(ramp.momentum(progress: 5), 0.745, accuracy: 1e-12)
        XCTAssertEqual(ramp.momentum(progress: 20), 0.99)
        XCTAssertEqual(MomentumRamp(start: 0.5, end: 0.9, epochs: 0).momentum(progress: 0), 0.9)
    }

    /// Max-norm touches hidden layers' weights only, never the output layer's.
    func testMaxNormOnHiddenUnitsOnly() throws {
        let network = try Network(NetworkConfiguration(inputSize: 4, hiddenSizes: [3], outputSize: 2, dropoutInput: 0, dropoutHidden: 0))
        let p = FloatBuffer(count: network.layout.count)
        p.fill(10)
        let zero = FloatBuffer(count: network.layout.count)
        var shards = [zero.pointer]
        let optimizer = ChunkedOptimizer(configuration: OptimizerConfiguration(learningRate: 0.1, maxNorm: 2), layout: network.layout, chunkElements: 8)
        for chunk in optimizer.chunks.indices {
            optimizer.update(chunk: chunk, parameters: p.pointer, shardGradients: &shards, shardCount: 1, hyperparameters: .init(learningRate: 0.1))
        }
        let hidden = network.layout.tensors[0], output = network.layout.tensors[2]
        for i in 0..<hidden.count { XCTAssertEqual(p[hidden.offset + i], 1, accuracy: 1e-6) }  // norm √4·10 = 20 -> 2
        for i in 0..<output.count { XCTAssertEqual(p[output.offset + i], 10) }
    }
}

final class ChunkTests: XCTestCase {
    /// Chunks are whole rows of one tensor, cover every parameter once, and never the padding.
    func testChunksCoverEveryParameterOnce() throws {
        let network = try Network(NetworkConfiguration(inputSize: 30, hiddenSizes: [20, 7], outputSize: 10, dropoutInput: 0, dropoutHidden: 0))
        for target in [1, 16, 100, 1 << 20] {
            let optimizer = ChunkedOptimizer(configuration: OptimizerConfiguration(learningRate: 1), layout: network.layout, chunkElements: target)
            var covered = [Int](repeating: 0, count: network.layout.count)
            for chunk in optimizer.chunks {
                XCTAssertEqual(chunk.range.count % chunk.columns, 0)
                for i in chunk.range { covered[i] += 1 }
            }
            for tensor in network.layout.tensors {
                XCTAssert((tensor.offset..<tensor.offset + tensor.count).allSatisfy { covered[$0] == 1 }, tensor.name)
            }
            XCTAssertEqual(covered.reduce(0, +), network.layout.parameterCount)
            let constrained = optimizer.chunks.filter(\.constrained).reduce(0) { $0 + $1.range.count }
            XCTAssertEqual(constrained, network.layout.tensors.filter(\.maxNormApplies).reduce(0) { $0 + $1.count })
        }
    }
}
