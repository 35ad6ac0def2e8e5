import ShardwiseKernels
import ShardwiseLayers
import XCTest

/// Finite-difference gradient checks: the Float backward pass against central
/// differences of an independent Double forward pass (the oracle), per layer kind.
final class GradientCheckTests: XCTestCase {
    let rows = 4

    /// Mean-over-divisor softmax cross-entropy of `network` in Double, using the
    /// dropout masks the Float forward drew (so the mask is fixed).
    func oracleLoss(_ network: Network, parameters: [Double], input: [Double], labels: [Int32], masks: [FloatBuffer?], divisor: Int) -> Double {
        var x = input
        var width = network.widths[0]
        for (k, layer) in network.layers.enumerated() {
            if let linear = layer as? Linear {
                let (inputs, outputs) = (linear.inputs, linear.outputs)
                let w = network.layout.tensors.first { $0.name == "layers.\(parameterIndex(network, k)).weight" }!
                let b = network.layout.tensors.first { $0.name == "layers.\(parameterIndex(network, k)).bias" }!
                var y = [Double](repeating: 0, count: rows * outputs)
                for n in 0..<rows {
                    for o in 0..<outputs {
                        var s = parameters[b.offset + o]
                        for i in 0..<inputs {
                            // DropConnect: the step's weight mask (already scaled by 1/(1-p)), the first half of its scratch.
                            let m = linear.dropConnect > 0 ? Double(masks[k]![o * inputs + i]) : 1
                            s += x[n * inputs + i] * parameters[w.offset + o * inputs + i] * m
                        }
                        y[n * outputs + o] = s
                    }
                }
                x = y
                width = outputs
            } else if layer is ReLU {
                x = x.map { max($0, 0) }
            } else if layer is Dropout || layer is GaussianDropout {
                let mask = masks[k]!
                for i in 0..<rows * width { x[i] *= Double(mask[i]) }
            } else {
                XCTFail("no oracle for \(type(of: layer))")
            }
        }
        var loss = 0.0
        for n in 0..<rows {
            let z = x[n * width..<(n + 1) * width]
            let m = z.max()!
            let logSum = m + log(z.reduce(0) { $0 + exp($1 - m) })
            loss += logSum - z[n * width + Int(labels[n])]
        }
        return loss / Double(divisor)
    }

    /// The index of layer k among the layers that have parameters (its `layers.<i>` prefix).
    func parameterIndex(_ network: Network, _ k: Int) -> Int {
        network.layers[..<k].filter { !$0.parameters(inputWidth: 1).isEmpty }.count
    }

    func check(_ configuration: NetworkConfiguration, seed: UInt64, file: StaticString = #filePath, line: UInt = #line) throws {
        _ = try BLAS.load()
        let network = try Network(configuration)
        let parameters = FloatBuffer(count: network.layout.count)
        network.initialize(parameters: parameters, seed: seed)
        // Biases away from zero: a unit whose inputs are all dropped then sits off the ReLU kink at 0.
        for t in network.layout.tensors where t.name.hasSuffix("bias") {
            for i in 0..<t.count { parameters[t.offset + i] = 0.1 * Float(i % 3) - 0.05 }
        }
        let ws = Workspace(network: network, capacity: rows)
        let stream = RandomAddress(seed: seed, purpose: .synthetic)
        for i in 0..<rows * configuration.inputSize { ws.input[i] = stream.uniform(i) }
        var labels: [Int32] = []
        for n in 0..<rows {
            ws.labels[n] = Int32(n % configuration.outputSize)
            labels.append(ws.labels[n])
        }
        let input = (0..<rows * configuration.inputSize).map { Double(ws.input[$0]) }
        let divisor = 2 * rows  // as if this shard were half of the global batch
        network.forward(parameters: parameters.pointer, workspace: ws, rows: rows, random: RandomContext(seed: seed, step: 3, firstPosition: 8))
        let gradient = FloatBuffer(count: network.layout.count)
        let lossSum = network.backward(parameters: parameters.pointer, workspace: ws, rows: rows, lossDivisor: divisor, gradient: gradient.pointer)

        var theta = (0..<network.layout.count).map { Double(parameters[$0]) }
        let base = oracleLoss(network, parameters: theta, input: input, labels: labels, masks: ws.scratch, divisor: divisor)
        XCTAssertEqual(lossSum / Double(divisor), base, accuracy: 1e-5, "loss", file: file, line: line)
        let h = 1e-6
        var checked = 0
        for tensor in network.layout.tensors {
            for e in 0..<tensor.count {
                let i = tensor.offset + e
                let saved = theta[i]
                theta[i] = saved + h
                let plus = oracleLoss(network, parameters: theta, input: input, labels: labels, masks: ws.scratch, divisor: divisor)
                theta[i] = saved - h
                let minus = oracleLoss(network, parameters: theta, input: input, labels: labels, masks: ws.scratch, divisor: divisor)
                theta[i] = saved
                let numeric = (plus - minus) / (2 * h)
                let analytic = Double(gradient[i])
                XCTAssertEqual(analytic, numeric, accuracy: 1e-4 + 1e-3 * abs(numeric), "\(tensor.name)[\(e)]", file: file, line: line)
                checked += 1
            }
        }
        XCTAssertEqual(checked, network.layout.parameterCount)
    }

    func testLinearAndSoftmaxCrossEntropy() throws {
        try check(NetworkConfiguration(inputSize: 6, hiddenSizes: [], outputSize: 3, dropoutInput: 0, dropoutHidden: 0), seed: 1)
    }

    func testLinearReLUStack() throws {
        for seed in 1...3 {
            try check(NetworkConfiguration(inputSize: 6, hiddenSizes: [5, 4], outputSize: 3, dropoutInput: 0, dropoutHidden: 0), seed: UInt64(seed))
        }
    }

    func testDropoutWithFixedMask() throws {
        for seed in 1...3 {
            try check(NetworkConfiguration(inputSize: 6, hiddenSizes: [5, 4], outputSize: 3, dropoutInput: 0.3, dropoutHidden: 0.5), seed: UInt64(seed))
        }
    }

    func testGaussianDropout() throws {
        for seed in 1...3 {
            try check(NetworkConfiguration(inputSize: 6, hiddenSizes: [5, 4], outputSize: 3, dropoutInput: 0.3, dropoutHidden: 0.5, dropoutKind: .gaussian), seed: UInt64(seed))
        }
    }

    func testDropConnect() throws {
        for seed in 1...3 {
            try check(NetworkConfiguration(inputSize: 6, hiddenSizes: [5, 4], outputSize: 3, dropoutInput: 0.3, dropoutHidden: 0.5, dropoutHiddenPerLayer: [0.5, 0.25], dropoutKind: .dropconnect), seed: UInt64(seed))
        }
    }

    /// In evaluation, dropout is the identity: logits equal those of the same weights without dropout layers.
    func testDropoutIsIdentityInEvaluation() throws {
        _ = try BLAS.load()
        let with = try Network(NetworkConfiguration(inputSize: 6, hiddenSizes: [5, 4], outputSize: 3, dropoutInput: 0.2, dropoutHidden: 0.5))
        let without = try Network(NetworkConfiguration(inputSize: 6, hiddenSizes: [5, 4], outputSize: 3, dropoutInput: 0, dropoutHidden: 0))
        XCTAssertEqual(with.layout, without.layout)
        let parameters = FloatBuffer(count: with.layout.count)
        with.initialize(parameters: parameters, seed: 5)
        let a = Workspace(network: with, capacity: rows), b = Workspace(network: without, capacity: rows)
        for i in 0..<rows * 6 { a.input[i] = Float(i % 5) * 0.2; b.input[i] = a.input[i] }
        with.forward(parameters: parameters.pointer, workspace: a, rows: rows, random: nil)
        without.forward(parameters: parameters.pointer, workspace: b, rows: rows, random: nil)
        XCTAssertEqual((0..<rows * 3).map { a.output[$0] }, (0..<rows * 3).map { b.output[$0] })
    }
}

#if canImport(Glibc)
import Glibc
#endif
