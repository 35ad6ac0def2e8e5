import Foundation
import ShardwiseKernels
import XCTest

@testable import ShardwiseLayers

/// One training step of `network` on `rows` samples cut into shards of `shardSize`, as the
/// engine runs it (one workspace per shard, the phases in turn with the shards' sums totalled
/// in shard order between them), with the shards' gradients added in shard order and the
/// buffers updated: returns the summed gradient and the loss sum; `parameters` gets the new buffers.
struct ShardedStep {
    let network: Network
    let shardSize: Int
    var gradient: [Float] = []
    var loss = 0.0
    var outputs: [Float] = []

    init(_ network: Network, parameters: FloatBuffer, input: [Float], labels: [Int32], shardSize: Int, seed: UInt64 = 5) {
        self.network = network
        self.shardSize = shardSize
        let rows = labels.count, shards = rows / shardSize, width = network.widths[0], classes = network.widths.last!
        let counts = network.statisticsCounts
        let slots = counts.map { count -> UnsafeMutablePointer<Double> in
            let slot = UnsafeMutablePointer<Double>.allocate(capacity: (shards + 1) * count)
            slot.initialize(repeating: .nan, count: (shards + 1) * count)
            return slot
        }
        defer { for slot in slots { slot.deallocate() } }
        let workspaces = (0..<shards).map { _ in Workspace(network: network, capacity: shardSize) }
        let gradients = (0..<shards).map { _ in FloatBuffer(count: network.layout.count) }
        for s in 0..<shards {
            for i in 0..<shardSize * width { workspaces[s].input[i] = input[s * shardSize * width + i] }
            for r in 0..<shardSize { workspaces[s].labels[r] = labels[s * shardSize + r] }
        }
        func sums(_ s: Int) -> BatchSums { BatchSums(slots: slots, counts: counts, shard: s, shards: shards, batchRows: rows) }
        for phase in 0..<network.trainingPhases {
            for s in 0..<shards {
                loss += network.trainingPhase(
                    phase, parameters: parameters.pointer, workspace: workspaces[s], rows: shardSize,
                    random: RandomContext(seed: seed, step: 0, firstPosition: s * shardSize), lossDivisor: rows,
                    gradient: gradients[s].pointer, sums: sums(s))
            }
            if phase < network.trainingPhases - 1 { sums(0).addShards(network.meetingSlot(afterPhase: phase)) }
        }
        gradient = [Float](repeating: 0, count: network.layout.trainedCount)
        for s in 0..<shards { for i in gradient.indices { gradient[i] += gradients[s][i] } }
        outputs = workspaces.flatMap { ws in (0..<shardSize * classes).map { ws.output[$0] } }
        if !counts.isEmpty { network.updateBuffers(parameters.pointer, sums: sums(0)) }
    }
}

/// BatchNorm: training statistics of the whole global batch (the shards meet), ghost
/// statistics per shard, running averages, evaluation with them, and its gradients against
/// finite differences of a Double oracle over the whole batch.
final class BatchNormTests: XCTestCase {
    let text = "conv(4, 3, pad: 1) batchnorm2d relu residual(conv(4, 3, pad: 1) batchnorm2d(momentum: 0.2)) flatten linear(8) batchnorm1d tanh linear(3)"

    func setUp(_ text: String, shape: [Int] = [1, 4, 4], rows: Int, seed: UInt64) throws -> (Network, FloatBuffer, [Float], [Int32]) {
        _ = try BLAS.load()
        let network = try Network(Sequential(try ModelDescription.layers(text, inputShape: shape)), inputShape: shape)
        let parameters = FloatBuffer(count: network.layout.count)
        network.initialize(parameters: parameters, seed: seed)
        let stream = RandomAddress(seed: seed, purpose: .synthetic)
        for t in network.layout.tensors where !t.isBuffer {
            for e in 0..<t.count { parameters[t.offset + e] += 0.2 * (stream.uniform(t.offset + e) - 0.5) }
        }
        let width = network.widths[0]
        let input = (0..<rows * width).map { 3 * stream.uniform(1_000_000 + $0) - 1 }
        let labels = (0..<rows).map { Int32(stream.integer(2_000_000 + $0, below: 3)) }
        return (network, parameters, input, labels)
    }

    func buffers(_ network: Network, _ parameters: FloatBuffer) -> [String: [Float]] {
        Dictionary(uniqueKeysWithValues: network.layout.tensors.filter(\.isBuffer).map { t in (t.name, (0..<t.count).map { parameters[t.offset + $0] }) })
    }

    func testStatisticsAreTheGlobalBatchsForAnyShardSize() throws {
        let (network, start, input, labels) = try setUp(text, rows: 128, seed: 1)
        XCTAssertEqual(network.trainingPhases, 7, "three BatchNorms sharing statistics: two meetings each")
        XCTAssertEqual(network.layout.tensors.filter(\.isBuffer).map(\.name), [
            "layers.1.running_mean", "layers.1.running_var", "layers.1.num_batches_tracked",
            "layers.2.body.1.running_mean", "layers.2.body.1.running_var", "layers.2.body.1.num_batches_tracked",
            "layers.4.running_mean", "layers.4.running_var", "layers.4.num_batches_tracked",
        ])
        var results: [(gradient: [Float], buffers: [String: [Float]], outputs: [Float])] = []
        for shardSize in [32, 64, 128] {
            let parameters = FloatBuffer(count: network.layout.count)
            parameters.pointer.update(from: start.pointer, count: network.layout.count)
            let step = ShardedStep(network, parameters: parameters, input: input, labels: labels, shardSize: shardSize)
            results.append((step.gradient, buffers(network, parameters), step.outputs))
        }
        for (i, other) in results.enumerated().dropFirst() {
            for (name, values) in results[0].buffers {
                for (a, b) in zip(values, other.buffers[name]!) { XCTAssertEqual(a, b, accuracy: 1e-5 * max(1, abs(a)), "\(name), shard size \(i == 1 ? 64 : 128)") }
            }
            for (a, b) in zip(results[0].outputs, other.outputs) { XCTAssertEqual(a, b, accuracy: 1e-5 * max(1, abs(a))) }
            let scale = results[0].gradient.map(abs).max()!
            for (a, b) in zip(results[0].gradient, other.gradient) { XCTAssertEqual(a, b, accuracy: 1e-5 * scale) }
        }
        XCTAssertEqual(results[0].buffers["layers.1.num_batches_tracked"], [1])
        // The running mean moved from 0 by momentum · the batch mean; the variance from 1.
        XCTAssertTrue(results[0].buffers["layers.1.running_mean"]!.allSatisfy { $0 != 0 })
        XCTAssertTrue(results[0].buffers["layers.2.body.1.running_var"]!.allSatisfy { $0 != 1 })
    }

    func testShardStatisticsDifferAsDocumented() throws {
        let ghost = text.replacingOccurrences(of: "batchnorm2d relu", with: "batchnorm2d(stats: shard) relu")
        let (network, start, input, labels) = try setUp(ghost, rows: 64, seed: 2)
        XCTAssertEqual(network.trainingPhases, 5, "the ghost BatchNorm does not meet")
        let (shared, _, _, _) = try setUp(text, rows: 64, seed: 2)
        var running: [[Float]] = []
        for (net, size) in [(network, 16), (network, 64), (shared, 16)] {
            let parameters = FloatBuffer(count: net.layout.count)
            parameters.pointer.update(from: start.pointer, count: net.layout.count)
            _ = ShardedStep(net, parameters: parameters, input: input, labels: labels, shardSize: size)
            running.append(buffers(net, parameters)["layers.1.running_mean"]! + buffers(net, parameters)["layers.1.running_var"]!)
        }
        // One shard of the whole batch: ghost = shared statistics; shards of 16: the same mean (equal
        // shard sizes), a variance that is the mean of the shards' variances, not the batch's.
        for (a, b) in zip(running[1], running[2]) { XCTAssertEqual(a, b, accuracy: 1e-5) }
        for c in 0..<4 { XCTAssertEqual(running[0][c], running[2][c], accuracy: 1e-5, "running mean") }
        XCTAssertTrue((4..<8).contains { abs(running[0][$0] - running[2][$0]) > 1e-4 }, "ghost variance: \(running[0]) vs \(running[2])")
    }

    func testStatisticsRewriteReachesEveryBatchNorm() throws {
        let model = "conv(4, 3) BatchNorm2d(eps: 0.001, stats: batch) relu "
            + "residual(conv(4, 3, pad: 1) batch_norm relu, shortcut: batchnorm2d(momentum: 0.2)) "
            + "flatten parallel(linear(3) batchnorm1d | linear(3) layernorm, combine: add)"
        let ghost = ModelDescription.withBatchNormStatistics(model, .shard)
        XCTAssertEqual(ghost, "conv(4, 3) BatchNorm2d(eps: 0.001, stats: shard) relu "
            + "residual(conv(4, 3, pad: 1) batch_norm(stats: shard) relu, shortcut: batchnorm2d(momentum: 0.2, stats: shard)) "
            + "flatten parallel(linear(3) batchnorm1d(stats: shard) | linear(3) layernorm, combine: add)")
        XCTAssertEqual(ModelDescription.withBatchNormStatistics(ghost, .batch), ghost.replacingOccurrences(of: "stats: shard", with: "stats: batch"))
        let shape = [1, 6, 6]
        let parsed = try Network(Sequential(try ModelDescription.layers(ghost, inputShape: shape)), inputShape: shape)
        let shared = try Network(Sequential(try ModelDescription.layers(model, inputShape: shape)), inputShape: shape)
        XCTAssertGreaterThan(shared.trainingPhases, parsed.trainingPhases, "the rewritten model's BatchNorms do not meet")
        XCTAssertEqual(parsed.layout.count, shared.layout.count)
    }

    func testEvaluationUsesTheRunningStatistics() throws {
        let (network, parameters, input, _) = try setUp("batchnorm2d(eps: 0.01) flatten linear(3)", shape: [2, 2, 2], rows: 3, seed: 3)
        let t = network.layout.tensors
        let mean = t.first { $0.name == "layers.0.running_mean" }!.offset, variance = t.first { $0.name == "layers.0.running_var" }!.offset
        let weight = t.first { $0.name == "layers.0.weight" }!.offset, bias = t.first { $0.name == "layers.0.bias" }!.offset
        (parameters[mean], parameters[mean + 1], parameters[variance], parameters[variance + 1]) = (0.5, -1, 4, 0.25)
        let ws = Workspace(network: network, capacity: 3)
        for i in 0..<24 { ws.input[i] = input[i] }
        network.forward(parameters: parameters.pointer, workspace: ws, rows: 3, random: RandomContext(seed: 1, step: 0, firstPosition: 0))
        let normalized = ws.activations[1]
        for i in 0..<24 {
            let c = (i % 8) / 4
            let expected = (Double(input[i]) - Double(parameters[mean + c])) / (Double(parameters[variance + c]) + 0.01).squareRoot()
                * Double(parameters[weight + c]) + Double(parameters[bias + c])
            XCTAssertEqual(Double(normalized[i]), expected, accuracy: 1e-6)
        }
    }

    /// The summed gradient of a step in shards of 4 against central differences of the batch's
    /// loss in Double, BatchNorm normalizing with the whole batch's mean and biased variance.
    func testTrainingGradientsAgreeWithFiniteDifferences() throws {
        let rows = 8, shape = [2, 2, 2]
        let (network, parameters, input, labels) = try setUp("batchnorm2d linear_flat", shape: shape, rows: rows, seed: 4, replacing: true)
        let step = ShardedStep(network, parameters: parameters, input: input, labels: labels, shardSize: 4)
        let t = network.layout.tensors.filter { !$0.isBuffer }
        var p = (0..<network.layout.count).map { Double(parameters[$0]) }
        let x = input.map(Double.init)
        func loss() -> Double {
            // batchnorm over the batch, then flatten and linear(3), then mean cross-entropy.
            var y = x
            for c in 0..<2 {
                let values = (0..<rows).flatMap { r in (0..<4).map { x[r * 8 + c * 4 + $0] } }
                let mean = values.reduce(0, +) / Double(values.count)
                let variance = values.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(values.count)
                for r in 0..<rows { for i in 0..<4 {
                    y[r * 8 + c * 4 + i] = (x[r * 8 + c * 4 + i] - mean) / (variance + 1e-5).squareRoot() * p[t[0].offset + c] + p[t[1].offset + c]
                } }
            }
            var sum = 0.0
            for r in 0..<rows {
                let z = (0..<3).map { o in p[t[3].offset + o] + (0..<8).reduce(0) { $0 + p[t[2].offset + o * 8 + $1] * y[r * 8 + $1] } }
                let m = z.max()!
                sum += m + log(z.reduce(0) { $0 + exp($1 - m) }) - z[Int(labels[r])]
            }
            return sum / Double(rows)
        }
        XCTAssertEqual(step.loss / Double(rows), loss(), accuracy: 1e-5)
        for tensor in t {
            for e in tensor.offset..<tensor.offset + tensor.count {
                let value = p[e]
                p[e] = value + 1e-6
                let plus = loss()
                p[e] = value - 1e-6
                let minus = loss()
                p[e] = value
                let d = (plus - minus) / 2e-6
                XCTAssertEqual(Double(step.gradient[e]), d, accuracy: 1e-4 + 1e-3 * abs(d), "d \(tensor.name)[\(e - tensor.offset)]")
            }
        }
        // The input gradient matters too: a layer before the BatchNorm gets it (the batch's sums of dy and dy · x̂).
        let (deeper, start, input2, labels2) = try setUp("conv(2, 1) batchnorm2d flatten linear(3)", shape: shape, rows: rows, seed: 6)
        let whole = FloatBuffer(count: deeper.layout.count), split = FloatBuffer(count: deeper.layout.count)
        whole.pointer.update(from: start.pointer, count: deeper.layout.count)
        split.pointer.update(from: start.pointer, count: deeper.layout.count)
        let a = ShardedStep(deeper, parameters: whole, input: input2, labels: labels2, shardSize: 8)
        let b = ShardedStep(deeper, parameters: split, input: input2, labels: labels2, shardSize: 2)
        let scale = a.gradient.map(abs).max()!
        for (u, v) in zip(a.gradient, b.gradient) { XCTAssertEqual(u, v, accuracy: 1e-5 * scale, "the conv's gradient through the shared statistics") }
    }

    func setUp(_ text: String, shape: [Int], rows: Int, seed: UInt64, replacing: Bool) throws -> (Network, FloatBuffer, [Float], [Int32]) {
        try setUp(text.replacingOccurrences(of: "linear_flat", with: "flatten linear(3)"), shape: shape, rows: rows, seed: seed)
    }
}
