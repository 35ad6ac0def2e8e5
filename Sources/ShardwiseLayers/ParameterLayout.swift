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
        /// Rows: the first dimension; columns: the product of the others, or 1.
        public var rows: Int { shape[0] }
        /// The product of the dimensions after the first (1 for a vector): a row's length.
        public var columns: Int { shape.dropFirst().reduce(1, *) }
        /// Its number of values.
        public var count: Int { rows * columns }
    }

    /// The tensors, in model order (each layer's in declaration order).
    public private(set) var tensors: [Tensor] = []
    /// Total floats, padding included.
    public private(set) var count = 0

    /// An empty layout.
    public init() {}

    /// Appends a tensor and returns its offset.
    mutating func append(name: String, shape: [Int], maxNormApplies: Bool) -> Int {
        let offset = count
        let tensor = Tensor(name: name, shape: shape, offset: offset, maxNormApplies: maxNormApplies)
        tensors.append(tensor)
        count = roundUpToCacheLine(offset + tensor.count)
        return offset
    }

    /// Number of trainable values (padding excluded).
    public var parameterCount: Int { tensors.reduce(0) { $0 + $1.count } }

    /// The tensor named `name`.
    public func tensor(named name: String) -> Tensor? { tensors.first { $0.name == name } }
}
