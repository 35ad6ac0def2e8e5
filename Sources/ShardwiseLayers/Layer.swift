import ShardwiseKernels

/// One step of a feed-forward network. Shape key: N rows (samples in a shard),
/// I inputs, O outputs.
///
/// Layers are values: they hold their shape and settings, never their
/// parameters (those live in one flat buffer, see `ParameterLayout`) or their
/// activations (see `Workspace`), so one `Network` serves every shard at once.
public enum Layer: Sendable, Equatable {
    /// `y = x Wᵀ + b`; W: (O, I) stored like PyTorch's `nn.Linear`, b: (O).
    /// `index` counts linear layers from 0 and names the parameters `layers.<index>.*`.
    /// With `dropConnect` p > 0, training uses `W ∘ M / (1-p)`, M a Bernoulli(1-p) mask per weight, per step.
    case linear(inputs: Int, outputs: Int, index: Int, dropConnect: Double = 0)
    /// `y = max(x, 0)`.
    case relu(width: Int)
    /// Inverted dropout (Bernoulli or Gaussian noise of the same variance); identity in evaluation.
    /// `index` counts dropout layers from 0 and addresses their random streams.
    case dropout(width: Int, probability: Double, index: Int, kind: DropoutKind = .bernoulli)

    public var outputWidth: Int {
        switch self {
        case .linear(_, let outputs, _, _): outputs
        case .relu(let width), .dropout(let width, _, _, _): width
        }
    }
}

/// Where each parameter tensor sits in the flat parameter vector.
///
/// Every tensor starts on a cache line, so chunks of the vector that the
/// reduction hands to different workers never share a line inside a tensor's start.
public struct ParameterLayout: Sendable, Equatable {
    public struct Tensor: Sendable, Equatable {
        public var name: String
        /// (rows, columns); a bias is (O, 1).
        public var rows: Int
        public var columns: Int
        public var offset: Int
        public var count: Int { rows * columns }
        public var shape: [Int] { columns == 1 ? [rows] : [rows, columns] }
    }

    public private(set) var tensors: [Tensor] = []
    /// Total floats, padding included.
    public private(set) var count = 0

    mutating func append(name: String, rows: Int, columns: Int) -> Int {
        let offset = count
        tensors.append(Tensor(name: name, rows: rows, columns: columns, offset: offset))
        count = roundUpToCacheLine(offset + rows * columns)
        return offset
    }

    /// Number of trainable values (padding excluded).
    public var parameterCount: Int { tensors.reduce(0) { $0 + $1.count } }
}
