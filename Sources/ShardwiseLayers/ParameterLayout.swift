import ShardwiseKernels

/// Where each parameter tensor sits in the model's flat parameter vector.
///
/// Every tensor starts on a cache line, so chunks of the vector that the
/// reduction hands to different workers never share a line inside a tensor's start.
public struct ParameterLayout: Sendable, Equatable {
    /// One tensor of the layout.
    public struct Tensor: Sendable, Equatable {
        /// The full name, e.g. `layers.0.weight`.
        public var name: String
        /// One to four dimensions, as declared (``ParameterSpec/shape``).
        public var shape: [Int]
        /// Its first element in the flat vector (a multiple of 16 floats).
        public var offset: Int
        /// Whether max-norm constrains its rows (a hidden layer's weights).
        public var maxNormApplies: Bool
        /// Whether it is a layer's weight matrix (``ParameterSpec/Role/weight``): what weight decay
        /// restricted to matrices decays (not biases, normalizations or embeddings).
        public var isWeight = false
        /// A buffer (BatchNorm's running statistics): saved and loaded with the parameters, never
        /// trained. Buffers follow every trained tensor in the layout (see ``trainedCount``).
        public var isBuffer = false
        /// Rows: the first dimension; columns: the product of the others, or 1.
        public var rows: Int { shape[0] }
        /// The product of the dimensions after the first (1 for a vector): a row's length.
        public var columns: Int { shape.dropFirst().reduce(1, *) }
        /// Its number of values.
        public var count: Int { rows * columns }
    }

    /// The tensors, in model order (each layer's in declaration order).
    public private(set) var tensors: [Tensor] = []
    /// Total floats, padding and reserved gradient space included (the size of every per-model vector).
    public private(set) var count = 0
    /// Floats of the trained tensors, padding included: the part the optimizer, the reduction and
    /// the exchange cover. The buffers lie after it.
    public private(set) var trainedCount = 0

    /// An empty layout.
    public init() {}

    /// Appends a tensor and returns its offset.
    mutating func append(name: String, shape: [Int], maxNormApplies: Bool, isBuffer: Bool = false, isWeight: Bool = false) -> Int {
        let offset = count
        var tensor = Tensor(name: name, shape: shape, offset: offset, maxNormApplies: maxNormApplies)
        tensor.isBuffer = isBuffer
        tensor.isWeight = isWeight
        tensors.append(tensor)
        count = roundUpToCacheLine(offset + tensor.count)
        if !isBuffer { trainedCount = count }
        return offset
    }

    /// Reserves `floats` at the end of the vector that belong to no tensor: gradient space
    /// (a tied tensor's second use) that the parameters, the optimizer, the reduction and
    /// checkpoints never read. Returns its offset.
    mutating func reserveGradientSpace(_ floats: Int) -> Int {
        let offset = count
        count = roundUpToCacheLine(offset + floats)
        return offset
    }

    /// Number of values, buffers included (padding excluded).
    public var parameterCount: Int { tensors.reduce(0) { $0 + $1.count } }
    /// Number of trained values (padding and buffers excluded).
    public var trainedParameterCount: Int { tensors.reduce(0) { $0 + ($1.isBuffer ? 0 : $1.count) } }

    /// The tensor named `name`.
    public func tensor(named name: String) -> Tensor? { tensors.first { $0.name == name } }
}
