import ShardwiseData
import ShardwiseKernels

/// A ``Sequential`` model compiled for an input width: its widths, its parameter
/// layout, and the forward and backward pass over one shard.
///
/// Knows nothing of threads: any number of shards may run ``forward(parameters:workspace:rows:random:)``
/// and ``backward(parameters:workspace:rows:lossDivisor:gradient:)`` at once, each with its
/// own ``Workspace`` and gradient buffer, reading the same parameters.
public struct Network: Sendable {
    /// The layers, as given.
    public let model: Sequential
    /// What `backward` differentiates.
    public let loss: any Loss
    /// widths[k] is the width of layer k's input; widths.last is the model's output width.
    public let widths: [Int]
    /// shapes[k] is the shape of one sample of layer k's input (product widths[k]), e.g. [1, 28, 28].
    public let shapes: [[Int]]
    /// Where each parameter tensor sits in the flat parameter vector.
    public let layout: ParameterLayout
    /// Per layer: the offsets of its tensors in the flat vector, in declaration order.
    let parameterOffsets: [[Int]]
    /// Per layer: its index among the model's layers of the same type (addresses its random streams).
    let typeIndex: [UInt32]
    /// Per layer: whether backward must compute the gradient of its input.
    let needsInputGradient: [Bool]

    /// Checks every layer's widths and lays out the parameters, for flat input rows of `inputWidth`.
    /// Throws ``ModelError`` naming the first layer that cannot take its input.
    public init(_ model: Sequential, inputWidth: Int, loss: any Loss = SoftmaxCrossEntropy()) throws(ModelError) {
        try self.init(model, inputShape: [inputWidth], loss: loss)
    }

    /// Checks every layer's shapes and lays out the parameters, for input samples of
    /// `inputShape` (e.g. [1, 28, 28] for MNIST images, [784] for flat rows).
    /// Throws ``ModelError`` naming the first layer that cannot take its input and the shapes.
    public init(_ model: Sequential, inputShape: [Int], loss: any Loss = SoftmaxCrossEntropy()) throws(ModelError) {
        guard !inputShape.isEmpty, inputShape.allSatisfy({ $0 > 0 }), let inputWidth = CheckedSize.product(inputShape), inputWidth <= Self.maximumWidth else {
            throw ModelError("input shape \(inputShape), expected positive sizes of at most \(Self.maximumWidth) values in all")
        }
        guard !model.layers.isEmpty else { throw ModelError("the model has no layers") }
        var widths = [inputWidth], shapes = [inputShape]
        var specs: [[ParameterSpec]] = []
        for (k, layer) in model.layers.enumerated() {
            let shape: [Int]
            do { shape = try layer.outputShape(inputShape: shapes[k]) } catch {
                throw ModelError(layer: k, "\(type(of: layer)) on input \(Self.describe(shapes[k])): \(error.problem)")
            }
            guard !shape.isEmpty, shape.allSatisfy({ $0 > 0 }), let width = CheckedSize.product(shape), width <= Self.maximumWidth else {
                throw ModelError(layer: k, "\(type(of: layer)) gives samples of shape \(shape), expected positive sizes of 1...\(Self.maximumWidth) values in all")
            }
            widths.append(width)
            shapes.append(shape)
            let declared = layer.parameters(inputShape: shapes[k])
            for spec in declared where !(1...4).contains(spec.shape.count) || spec.shape.contains(where: { $0 <= 0 }) {
                throw ModelError(layer: k, "\(type(of: layer)): parameter '\(spec.name)' has shape \(spec.shape), expected one to four positive sizes")
            }
            for spec in declared where (CheckedSize.product(spec.shape) ?? .max) > Self.maximumWidth {
                throw ModelError(layer: k, "\(type(of: layer)): parameter '\(spec.name)' of shape \(spec.shape) has more than \(Self.maximumWidth) values (2^31 - 1, the most one BLAS call and one random stream address)")
            }
            specs.append(declared)
        }
        // Max-norm constrains hidden layers: every weight but the output layer's.
        let lastParameterised = specs.lastIndex { !$0.isEmpty }
        var layout = ParameterLayout()
        var offsets: [[Int]] = [], typeIndex: [UInt32] = [], needs: [Bool] = []
        var seenOfType: [ObjectIdentifier: UInt32] = [:]
        var parameterised = 0
        for (k, layer) in model.layers.enumerated() {
            let type = ObjectIdentifier(Swift.type(of: layer))
            typeIndex.append(seenOfType[type, default: 0])
            seenOfType[type, default: 0] += 1
            needs.append(parameterised > 0)
            offsets.append(specs[k].map { spec in
                layout.append(
                    name: "layers.\(parameterised).\(spec.name)", shape: spec.shape,
                    maxNormApplies: spec.role == .weight && k != lastParameterised)
            })
            if !specs[k].isEmpty { parameterised += 1 }
        }
        self.model = model
        self.loss = loss
        self.widths = widths
        self.shapes = shapes
        self.layout = layout
        self.parameterOffsets = offsets
        self.typeIndex = typeIndex
        self.needsInputGradient = needs
    }

    /// The widest row and the largest tensor a network may have: 2^31 - 1, BLAS's `int`
    /// dimensions (and sizes whose products stay far from `Int`'s overflow).
    public static let maximumWidth = Int(Int32.max)

    /// The model's layers.
    public var layers: [any Layer] { model.layers }

    /// A sample shape as PyTorch prints it: (1, 28, 28).
    public static func describe(_ shape: [Int]) -> String { "(" + shape.map(String.init).joined(separator: ", ") + ")" }

    /// Multiply-adds per sample in the forward pass of the ``Linear`` and ``Conv2D`` layers;
    /// forward plus backward costs about 3x that (6 FLOPs per weight and sample).
    public var multiplyAddsPerSample: Int {
        layers.indices.reduce(0) { sum, k in
            if let linear = layers[k] as? Linear { return sum + linear.inputs * linear.outputs }
            if let conv = layers[k] as? Conv2D { return sum + conv.multiplyAdds(inputShape: shapes[k]) }
            return sum
        }
    }

    /// Fills the parameters with each tensor's initialiser: tensor t of the k-th
    /// parameterised layer draws from the stream (seed, initialization, layer k, position t).
    public func initialize(parameters: FloatBuffer, seed: UInt64) {
        precondition(parameters.count == layout.count, "\(parameters.count) parameters for a layout of \(layout.count)")
        parameters.fill(0)
        var parameterised = 0
        for (k, layer) in layers.enumerated() where !parameterOffsets[k].isEmpty {
            for (t, spec) in layer.parameters(inputShape: shapes[k]).enumerated() {
                let tensor = layout.tensors.first { $0.offset == parameterOffsets[k][t] }!
                let stream = RandomAddress(seed: seed, purpose: .initialization, position: UInt32(t), layer: UInt32(parameterised))
                spec.initializer.fill(UnsafeMutableBufferPointer(start: parameters.pointer + tensor.offset, count: tensor.count), stream: stream)
            }
            parameterised += 1
        }
    }
}
