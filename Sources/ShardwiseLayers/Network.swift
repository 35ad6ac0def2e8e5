import ShardwiseKernels

/// The architecture of a multi-layer perceptron with ReLU and dropout, as the CLI describes it.
public struct NetworkConfiguration: Sendable, Codable, Equatable {
    public var inputSize: Int
    public var hiddenSizes: [Int]
    public var outputSize: Int
    /// Probability of zeroing an input unit.
    public var dropoutInput: Double
    /// Probability of zeroing a hidden unit.
    public var dropoutHidden: Double

    public init(inputSize: Int = 784, hiddenSizes: [Int], outputSize: Int = 10, dropoutInput: Double, dropoutHidden: Double) {
        self.inputSize = inputSize
        self.hiddenSizes = hiddenSizes
        self.outputSize = outputSize
        self.dropoutInput = dropoutInput
        self.dropoutHidden = dropoutHidden
    }
}

/// A feed-forward network: layers, their parameter layout, and the forward and
/// backward pass over one shard. Knows nothing of threads: any number of shards
/// may run `forward`/`backward` at once, each with its own `Workspace` and
/// gradient buffer, reading the same parameters.
public struct Network: Sendable {
    public let configuration: NetworkConfiguration
    public let layers: [Layer]
    public let layout: ParameterLayout
    /// widths[k] is the width of layer k's input; widths.last is the output width.
    public let widths: [Int]
    /// Parameter offsets (weight, bias) of each linear layer, by layer position.
    let parameterOffsets: [(weight: Int, bias: Int)?]
    /// Whether backward must compute the gradient of layer k's input.
    let needsInputGradient: [Bool]

    public init(_ configuration: NetworkConfiguration) {
        self.configuration = configuration
        var layers: [Layer] = []
        var dropoutIndex = 0
        func addDropout(width: Int, probability: Double) {
            guard probability > 0 else { return }
            layers.append(.dropout(width: width, probability: probability, index: dropoutIndex))
            dropoutIndex += 1
        }
        addDropout(width: configuration.inputSize, probability: configuration.dropoutInput)
        var width = configuration.inputSize
        for (index, hidden) in configuration.hiddenSizes.enumerated() {
            layers.append(.linear(inputs: width, outputs: hidden, index: index))
            layers.append(.relu(width: hidden))
            addDropout(width: hidden, probability: configuration.dropoutHidden)
            width = hidden
        }
        layers.append(.linear(inputs: width, outputs: configuration.outputSize, index: configuration.hiddenSizes.count))
        self.layers = layers

        var layout = ParameterLayout()
        var offsets: [(weight: Int, bias: Int)?] = []
        var needs: [Bool] = []
        var seenParameters = false
        for layer in layers {
            needs.append(seenParameters)
            if case .linear(let inputs, let outputs, let index) = layer {
                let w = layout.append(name: "layers.\(index).weight", rows: outputs, columns: inputs)
                let b = layout.append(name: "layers.\(index).bias", rows: outputs, columns: 1)
                offsets.append((w, b))
                seenParameters = true
            } else {
                offsets.append(nil)
            }
        }
        self.layout = layout
        self.parameterOffsets = offsets
        self.needsInputGradient = needs
        self.widths = [configuration.inputSize] + layers.map(\.outputWidth)
    }

    /// Multiply-adds per sample in the linear layers' forward pass; forward plus
    /// backward costs 3x that in multiply-adds, i.e. about 6 x parameters FLOPs.
    public var multiplyAddsPerSample: Int {
        layers.reduce(0) { sum, layer in
            if case .linear(let i, let o, _) = layer { return sum + i * o }
            return sum
        }
    }

    /// Hidden linear layers' weight tensors: the ones max-norm constrains.
    public var hiddenWeightTensors: [ParameterLayout.Tensor] {
        layout.tensors.filter { $0.name.hasSuffix(".weight") && $0.name != "layers.\(configuration.hiddenSizes.count).weight" }
    }

    /// He (Kaiming) uniform initialisation for weights, `U(-√(6/I), √(6/I))`, zero biases.
    /// Element e of linear layer l draws word e of the stream (seed, initialization, layer l).
    public func initialize(parameters: FloatBuffer, seed: UInt64) {
        precondition(parameters.count == layout.count)
        parameters.fill(0)
        for case .linear(let inputs, _, let index) in layers {
            let tensor = layout.tensors.first { $0.name == "layers.\(index).weight" }!
            let bound = Float((6.0 / Double(inputs)).squareRoot())
            let stream = RandomAddress(seed: seed, purpose: .initialization, layer: UInt32(index))
            let w = parameters.pointer + tensor.offset
            for e in 0..<tensor.count {
                w[e] = (2 * stream.uniform(e) - 1) * bound
            }
        }
    }
}
