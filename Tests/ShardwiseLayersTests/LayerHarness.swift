import Foundation
import ShardwiseKernels
import XCTest

@testable import ShardwiseLayers

/// One layer run on its own, forward and backward, on `rows` samples: the projection loss
/// L = Σ r ⊙ y with fixed random r gives dL/dy = r, so the backward pass yields the input
/// gradient and the parameter gradients of L. Everything is kept as arrays for comparing
/// against an oracle or against PyTorch.
struct LayerRun {
    let layer: any Layer
    let rows: Int
    let inputShape: [Int], outputShape: [Int]
    let specs: [ParameterSpec]
    var input: [Float]
    var parameters: [[Float]]
    var projection: [Float] = []
    var output: [Float] = []
    var inputGradient: [Float] = []
    var parameterGradients: [[Float]] = []
    /// The scratch memory after the forward pass (dropout masks, say).
    var scratch: [Float] = []

    var inputWidth: Int { inputShape.reduce(1, *) }
    var outputWidth: Int { outputShape.reduce(1, *) }

    /// Random inputs in [-2, 2) (or `input`), parameters from the layer's initialisers (biases
    /// and anything constant made random, so every element matters), projection in [-1, 1).
    init(_ layer: any Layer, inputShape: [Int], rows: Int, seed: UInt64, input: [Float]? = nil) throws {
        _ = try BLAS.load()
        self.layer = layer
        self.rows = rows
        self.inputShape = inputShape
        outputShape = try layer.outputShape(inputShape: inputShape)
        specs = layer.parameters(inputShape: inputShape)
        let width = inputShape.reduce(1, *)
        let stream = RandomAddress(seed: seed, purpose: .synthetic)
        self.input = input ?? (0..<rows * width).map { 4 * stream.uniform($0) - 2 }
        parameters = specs.enumerated().map { t, spec in
            let count = spec.shape.reduce(1, *)
            let s = RandomAddress(seed: seed, purpose: .synthetic, position: UInt32(t + 1))
            return (0..<count).map { 2 * s.uniform($0) - 1 }
        }
        let r = RandomAddress(seed: seed, purpose: .synthetic, position: 99)
        projection = (0..<rows * outputShape.reduce(1, *)).map { 2 * r.uniform($0) - 1 }
    }

    /// Runs forward (training when `random` is given) and backward with the projection loss.
    mutating func run(random: LayerRandomness? = nil) {
        let offsets = Array(parameters.scan(0) { $0 + $1.count }.dropLast())
        let flat: [Float] = parameters.flatMap { $0 } + [0]  // never empty: a base address even without parameters
        var scratch = [Float](repeating: 0, count: max(16, layer.scratchCount(inputShape: inputShape, rows: rows)))
        var output = [Float](repeating: .nan, count: rows * outputWidth)
        var dx = [Float](repeating: .nan, count: rows * inputWidth)
        var dp = [Float](repeating: .nan, count: max(flat.count, 1))
        var dy = projection
        offsets.withUnsafeBufferPointer { off in
            flat.withUnsafeBufferPointer { p in
                let values = ParameterValues(base: p.baseAddress!, offsets: off)
                input.withUnsafeBufferPointer { x in
                    scratch.withUnsafeMutableBufferPointer { s in
                        output.withUnsafeMutableBufferPointer { y in
                            layer.forward(ForwardPass(
                                rows: rows, inputWidth: inputWidth, outputWidth: outputWidth, inputShape: inputShape, outputShape: outputShape,
                                input: x.baseAddress!, output: y.baseAddress!, parameters: values, scratch: s.baseAddress!, random: random))
                        }
                        dy.withUnsafeMutableBufferPointer { g in
                            dx.withUnsafeMutableBufferPointer { d in
                                dp.withUnsafeMutableBufferPointer { pg in
                                    output.withUnsafeBufferPointer { y in
                                        layer.backward(BackwardPass(
                                            rows: rows, inputWidth: inputWidth, outputWidth: outputWidth, inputShape: inputShape, outputShape: outputShape,
                                            input: x.baseAddress!, output: y.baseAddress!, outputGradient: g.baseAddress!, inputGradient: d.baseAddress!,
                                            parameters: values, parameterGradients: ParameterGradients(base: pg.baseAddress!, offsets: off),
                                            scratch: s.baseAddress!))
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        self.output = output
        self.scratch = scratch
        inputGradient = dx
        parameterGradients = zip(offsets, parameters).map { o, p in Array(dp[o..<o + p.count]) }
    }
}

extension Array {
    /// Running results of `next`, starting with `initial`: [initial, f(initial, a0), ...].
    func scan<T>(_ initial: T, _ next: (T, Element) -> T) -> [T] {
        var result = [initial]
        for e in self { result.append(next(result.last!, e)) }
        return result
    }
}
