import ShardwiseData
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

/// The networks the command line trains, and the description checkpoints carry so that
/// `shardwise eval` can rebuild them: a multi-layer perceptron with ReLU and dropout described
/// by its sizes and rates, or, when ``layers`` is set (`--model FILE`), any model in the layer
/// language of ``ModelDescription`` with an input shape and a loss. ``model()`` gives the
/// equivalent ``Sequential``.
public struct NetworkConfiguration: Sendable, Codable, Equatable {
    /// Values per input row (784 for MNIST).
    public var inputSize: Int
    /// The width of each hidden layer, input side first.
    public var hiddenSizes: [Int]
    /// Classes: the width of the output layer.
    public var outputSize: Int
    /// Probability of zeroing an input unit.
    public var dropoutInput: Double
    /// Probability of zeroing a hidden unit (every hidden layer, unless `dropoutHiddenPerLayer` is set).
    public var dropoutHidden: Double
    /// One rate per hidden layer (`--dropout-hidden 0.5,0.3,0.2`); nil: `dropoutHidden` everywhere.
    public var dropoutHiddenPerLayer: [Double]?
    /// Which noise the rates drive.
    public var dropoutKind: DropoutKind
    /// A model in the layer language (``ModelDescription``); nil: the perceptron the sizes describe.
    public var layers: String?
    /// The shape of one input sample, e.g. [1, 28, 28] (product `inputSize`); nil: flat rows.
    public var inputShape: [Int]?
    /// The loss in the layer language's form (`cross_entropy(label_smoothing: 0.1)`,
    /// `bce_with_logits`, `mse`); nil: cross-entropy for classification, MSE for regression.
    public var loss: String?
    /// How linear layers and convolutions start; nil: ``InitializationScheme/he``.
    public var initialization: InitializationScheme?

    /// A model described in the layer language, for samples of `inputShape`, with `outputSize`
    /// outputs (the data's classes or targets) and optionally a loss.
    public init(layers: String, inputShape: [Int], outputSize: Int, loss: String? = nil) {
        self.init(inputShape: inputShape, outputSize: outputSize)
        self.layers = layers
        self.loss = loss
    }

    private init(inputShape: [Int], outputSize: Int) {
        // Saturates where the product overflows: validate() and Network refuse the shape, naming it.
        inputSize = CheckedSize.product(inputShape) ?? .max
        hiddenSizes = []
        self.outputSize = outputSize
        dropoutInput = 0
        dropoutHidden = 0
        dropoutKind = .bernoulli
        self.inputShape = inputShape
    }

    /// A perceptron with these widths and dropout rates (probabilities of zeroing); MNIST-shaped by default.
    public init(
        inputSize: Int = MNIST.features, hiddenSizes: [Int], outputSize: Int = MNIST.classes, dropoutInput: Double, dropoutHidden: Double,
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
        case inputSize, hiddenSizes, outputSize, dropoutInput, dropoutHidden, dropoutHiddenPerLayer, dropoutKind, layers, inputShape, loss, initialization
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
        layers = try c.decodeIfPresent(String.self, forKey: .layers)
        inputShape = try c.decodeIfPresent([Int].self, forKey: .inputShape)
        loss = try c.decodeIfPresent(String.self, forKey: .loss)
        initialization = try c.decodeIfPresent(InitializationScheme.self, forKey: .initialization)
    }

    /// The shape of one sample: ``inputShape``, or flat rows of ``inputSize``.
    public var sampleShape: [Int] { inputShape ?? [inputSize] }

    /// The loss ``loss`` names, or nil for the task's default.
    public func lossFunction() throws(ModelError) -> (any Loss)? {
        try loss.map { (text) throws(ModelError) in try ModelDescription.loss(text) }
    }

    /// The model: ``layers`` parsed for ``sampleShape`` when set; otherwise [dropout] (Linear,
    /// ReLU, [dropout]) per hidden layer, Linear. A rate of 0 adds no dropout layer;
    /// DropConnect moves each rate onto the weights of the Linear layer its units feed.
    /// Throws when the layers do not parse or do not fit the shapes.
    public func model() throws(ModelError) -> Sequential {
        if let layers { return Sequential(try ModelDescription.layers(layers, inputShape: sampleShape)) }
        let rates = allRates  // rates[k]: the rate on linear layer k's input units
        let connect = dropoutKind == .dropconnect
        func dropout(_ p: Double) -> [any Layer] {
            guard p > 0, !connect else { return [] }
            return [dropoutKind == .gaussian ? GaussianDropout(p) : Dropout(p)]
        }
        var layers = dropout(dropoutInput)
        var width = inputSize
        for (k, hidden) in hiddenSizes.enumerated() {
            layers += [Linear(width, hidden, dropConnect: connect ? rates[k] : 0), ReLU()] + dropout(hiddenRate(k))
            width = hidden
        }
        layers.append(Linear(width, outputSize, dropConnect: connect ? rates[hiddenSizes.count] : 0))
        return Sequential(layers)
    }
}

extension Network {
    /// The network a ``NetworkConfiguration`` describes, with its loss (softmax cross-entropy
    /// unless it names another). Throws when a size is not positive or a rate not in [0, 1),
    /// or its layers do not parse or fit.
    public init(_ configuration: NetworkConfiguration) throws(ModelError) {
        try self.init(configuration.model(), inputShape: configuration.sampleShape, loss: configuration.lossFunction() ?? SoftmaxCrossEntropy())
    }
}
