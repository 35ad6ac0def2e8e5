import ShardwiseKernels

/// Which noise dropout applies.
public enum DropoutKind: String, Sendable, Codable, CaseIterable {
    /// Zero a unit with probability p, scale survivors by 1/(1-p) (Srivastava et al. 2014).
    case bernoulli
    /// Multiply each unit by 1 + sqrt(p/(1-p)) z, z ~ N(0, 1): the same mean and variance
    /// as Bernoulli dropout at rate p (Srivastava et al. 2014, section 10).
    case gaussian
    /// Zero each *weight* of a Linear layer with probability p, scale by 1/(1-p)
    /// (DropConnect, Wan et al. 2013); one mask per step, shared by the step's samples.
    case dropconnect
}

/// The architecture of a multi-layer perceptron with ReLU and dropout, as the CLI describes it.
public struct NetworkConfiguration: Sendable, Codable, Equatable {
    public var inputSize: Int
    public var hiddenSizes: [Int]
    public var outputSize: Int
    /// Probability of zeroing an input unit.
    public var dropoutInput: Double
    /// Probability of zeroing a hidden unit (every hidden layer, unless `dropoutHiddenPerLayer` is set).
    public var dropoutHidden: Double
    /// One rate per hidden layer (`--dropout-hidden 0.5,0.3,0.2`); nil: `dropoutHidden` everywhere.
    public var dropoutHiddenPerLayer: [Double]?
    public var dropoutKind: DropoutKind

    public init(
        inputSize: Int = 784, hiddenSizes: [Int], outputSize: Int = 10, dropoutInput: Double, dropoutHidden: Double,
        dropoutHiddenPerLayer: [Double]? = nil, dropoutKind: DropoutKind = .bernoulli
    ) {
        self.inputSize = inputSize
        self.hiddenSizes = hiddenSizes
        self.outputSize = outputSize
        self.dropoutInput = dropoutInput
        self.dropoutHidden = dropoutHidden
        self.dropoutHiddenPerLayer = dropoutHiddenPerLayer
        self.dropoutKind = dropoutKind
    }

    /// The dropout rate after hidden layer `layer`.
    public func hiddenRate(_ layer: Int) -> Double {
        dropoutHiddenPerLayer?[layer] ?? dropoutHidden
    }

    /// Every rate: the input's, then each hidden layer's.
    public var allRates: [Double] { [dropoutInput] + hiddenSizes.indices.map(hiddenRate) }

    enum CodingKeys: String, CodingKey {
        case inputSize, hiddenSizes, outputSize, dropoutInput, dropoutHidden, dropoutHiddenPerLayer, dropoutKind
    }

    /// Files written before per-layer rates and kinds existed decode as uniform Bernoulli dropout.
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        inputSize = try c.decode(Int.self, forKey: .inputSize)
        hiddenSizes = try c.decode([Int].self, forKey: .hiddenSizes)
        outputSize = try c.decode(Int.self, forKey: .outputSize)
        dropoutInput = try c.decode(Double.self, forKey: .dropoutInput)
        dropoutHidden = try c.decode(Double.self, forKey: .dropoutHidden)
        dropoutHiddenPerLayer = try c.decodeIfPresent([Double].self, forKey: .dropoutHiddenPerLayer)
        dropoutKind = try c.decodeIfPresent(DropoutKind.self, forKey: .dropoutKind) ?? .bernoulli
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
        let kind = configuration.dropoutKind
        let rates = configuration.allRates  // rates[k]: the rate on linear layer k's input units
        func addDropout(width: Int, probability: Double) {
            guard probability > 0, kind != .dropconnect else { return }
            layers.append(.dropout(width: width, probability: probability, index: dropoutIndex, kind: kind))
            dropoutIndex += 1
        }
        // DropConnect applies each layer's rate to the weights fed by those units instead.
        func connect(_ k: Int) -> Double { kind == .dropconnect ? rates[k] : 0 }
        addDropout(width: configuration.inputSize, probability: configuration.dropoutInput)
        var width = configuration.inputSize
        for (index, hidden) in configuration.hiddenSizes.enumerated() {
            layers.append(.linear(inputs: width, outputs: hidden, index: index, dropConnect: connect(index)))
            layers.append(.relu(width: hidden))
            addDropout(width: hidden, probability: configuration.hiddenRate(index))
            width = hidden
        }
        let last = configuration.hiddenSizes.count
        layers.append(.linear(inputs: width, outputs: configuration.outputSize, index: last, dropConnect: connect(last)))
        self.layers = layers

        var layout = ParameterLayout()
        var offsets: [(weight: Int, bias: Int)?] = []
        var needs: [Bool] = []
        var seenParameters = false
        for layer in layers {
            needs.append(seenParameters)
            if case .linear(let inputs, let outputs, let index, _) = layer {
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
            if case .linear(let i, let o, _, _) = layer { return sum + i * o }
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
        for case .linear(let inputs, _, let index, _) in layers {
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
