import ShardwiseKernels

// Shape key for this module: N rows (the samples of one shard), I a layer's input
// width, O its output width. Every buffer is row-major: a shard's activations are (N, I).
// A sample may also have a shape, e.g. (C, H, W) for images: its I values are then that
// tensor in row-major order (NCHW over the shard, as PyTorch's default memory format).

/// One step of a feed-forward model, written against memory the engine provides.
///
/// A layer is a value that describes a computation: it never holds its parameters
/// (they live in the model's flat parameter vector, see ``ParameterLayout``), its
/// activations, or any per-shard state (see ``Workspace``). One model therefore serves
/// every shard of a step at once, each shard on its own worker with its own workspace,
/// and a layer needs no knowledge of threads.
///
/// To write a layer outside Shardwise, conform a `Sendable` struct:
/// - ``outputWidth(inputWidth:)`` checks the input width and gives the output width;
/// - ``parameters(inputWidth:)`` declares the parameter tensors (name, shape, initialiser);
/// - ``scratchCount(inputWidth:rows:)`` asks for per-shard memory kept from the forward
///   to the backward pass (masks, say);
/// - layers that need more than a width (convolutions, pooling) implement the shape forms,
///   ``outputShape(inputShape:)``, ``parameters(inputShape:)`` and ``scratchCount(inputShape:rows:)``,
///   and read ``ForwardPass/inputShape``;
/// - ``forward(_:)`` writes every element of the output rows;
/// - ``backward(_:)`` overwrites every element of its parameter gradients and, when asked,
///   of the input gradient.
///
/// Determinism: a stochastic layer draws only from ``ForwardPass/random``, whose streams
/// are addressed by (seed, step, sample position, layer, purpose) and never by worker, so
/// its draws, and the trained weights, do not depend on how shards are spread over workers.
public protocol Layer: Sendable {
    /// The width of the output rows for input rows of `inputWidth`.
    /// Throws ``ModelError`` when the layer cannot take that width.
    func outputWidth(inputWidth: Int) throws(ModelError) -> Int

    /// The layer's parameter tensors, in a fixed order. Default: none.
    func parameters(inputWidth: Int) -> [ParameterSpec]

    /// Floats of per-shard scratch memory for `rows` rows, kept from ``forward(_:)`` to
    /// ``backward(_:)`` of the same shard. Default: 0.
    func scratchCount(inputWidth: Int, rows: Int) -> Int

    /// The shape of one output sample for input samples of `inputShape` (sizes whose product is I).
    /// Default: the input shape when ``outputWidth(inputWidth:)`` keeps the width (elementwise
    /// layers keep an image's shape), else one dimension of the output width.
    func outputShape(inputShape: [Int]) throws(ModelError) -> [Int]

    /// The parameter tensors for input samples of `inputShape`. Default: ``parameters(inputWidth:)``.
    func parameters(inputShape: [Int]) -> [ParameterSpec]

    /// Per-shard scratch floats for input samples of `inputShape`. Default: ``scratchCount(inputWidth:rows:)``.
    func scratchCount(inputShape: [Int], rows: Int) -> Int

    /// Multiply-adds per sample in the forward pass's matrix products (what FLOP rates count:
    /// a linear layer's I·O, a convolution's O·C·kH·kW·P). Default: 0.
    func multiplyAdds(inputShape: [Int]) -> Int

    /// The standard ONNX operators computing the layer at inference on the value `input` (samples
    /// of `inputShape`), its tensors being the constants `parameters` (declaration order, buffers
    /// too), added to `graph` under names starting with `name`; returns the output value's name.
    /// Default: nil, no ONNX form (`shardwise export --onnx` then refuses, naming the layer).
    func lowerToONNX<G: ONNXGraphBuilder>(_ graph: inout G, input: String, inputShape: [Int], parameters: [String], name: String) -> String?

    /// Computes `output` (N, O) from `input` (N, I). Must not write the parameters.
    func forward(_ pass: ForwardPass)

    /// From the output gradient (N, O), overwrites every element of each parameter
    /// gradient and, when ``BackwardPass/inputGradient`` is non-nil, of the input gradient (N, I).
    func backward(_ pass: BackwardPass)
}

extension Layer {
    public func parameters(inputWidth: Int) -> [ParameterSpec] { [] }
    public func scratchCount(inputWidth: Int, rows: Int) -> Int { 0 }

    public func outputShape(inputShape: [Int]) throws(ModelError) -> [Int] {
        let width = inputShape.reduce(1, *)
        let output = try outputWidth(inputWidth: width)
        return output == width ? inputShape : [output]
    }

    public func parameters(inputShape: [Int]) -> [ParameterSpec] { parameters(inputWidth: inputShape.reduce(1, *)) }

    public func scratchCount(inputShape: [Int], rows: Int) -> Int { scratchCount(inputWidth: inputShape.reduce(1, *), rows: rows) }

    public func multiplyAdds(inputShape: [Int]) -> Int { 0 }

    public func lowerToONNX<G: ONNXGraphBuilder>(_ graph: inout G, input: String, inputShape: [Int], parameters: [String], name: String) -> String? { nil }
}

/// A model that cannot be built: which layer (its position in the model) and why.
public struct ModelError: Error, CustomStringConvertible, Equatable {
    /// Position of the layer in the model, from 0; nil for the model as a whole.
    public var layer: Int?
    /// What was found and what was expected.
    public var problem: String

    /// A problem with the layer at position `layer` (nil: the whole model).
    public init(layer: Int? = nil, _ problem: String) {
        self.layer = layer
        // One line, whatever the description's text echoed in it spans.
        self.problem = problem.contains(where: \.isNewline) ? problem.split(whereSeparator: \.isNewline).joined(separator: " ") : problem
    }

    public var description: String { layer.map { "layer \($0): \(problem)" } ?? problem }
}

/// One parameter tensor a layer declares.
public struct ParameterSpec: Sendable {
    /// How the optimizer treats a tensor.
    public enum Role: Sendable, Equatable {
        /// Row r holds the incoming weights of output unit r: max-norm constrains each row
        /// (hidden layers only; the model's last parameterised layer is left free).
        case weight
        /// Per-unit offsets.
        case bias
        /// Anything else: only the update applies.
        case other
        /// Not trained: state the layer keeps across steps (BatchNorm's running statistics),
        /// saved, loaded and exported with the parameters; the optimizer never touches it.
        case buffer
    }

    /// The name within the layer, e.g. "weight"; the model prefixes "layers.<k>.".
    public var name: String
    /// One to four dimensions, as PyTorch's: a linear weight (O, I), a convolution's (O, C, kH, kW), a bias (O).
    public var shape: [Int]
    /// How the tensor's values start.
    public var initializer: ParameterInitializer
    /// How the optimizer treats the tensor (max-norm applies to hidden layers' `.weight` rows).
    public var role: Role
    /// Not a tensor of its own: the same values as a tensor an earlier layer declares (weight
    /// tying, see ``ParameterTie``). Its initializer and role are then the other tensor's.
    public var tiedTo: ParameterTie?

    /// A tensor named `name` of `shape` (one to four positive sizes).
    public init(name: String, shape: [Int], initializer: ParameterInitializer, role: Role = .other, tiedTo: ParameterTie? = nil) {
        self.name = name
        self.shape = shape
        self.initializer = initializer
        self.role = role
        self.tiedTo = tiedTo
    }
}

/// Which earlier tensor a tied parameter is: tensor `tensor` of the nearest leaf of type
/// `layer` before it in forward order (a GPT's output head and its token embedding, Press and
/// Wolf 2017). The network keeps one tensor, read by both layers; its gradient is the sum of
/// both uses, the later layer's added to the earlier's own in backward order, in each shard.
public struct ParameterTie: Sendable {
    /// The layer type that declares the tensor.
    public let layer: ObjectIdentifier
    /// That type's name, for errors.
    public let layerName: String
    /// The tensor's name within that layer, e.g. "token.weight".
    public let tensor: String

    /// Tensor `tensor` of the nearest earlier leaf of type `layer`.
    public init(_ layer: any Layer.Type, tensor: String) {
        self.layer = ObjectIdentifier(layer)
        self.layerName = String(describing: layer)
        self.tensor = tensor
    }
}

/// How a parameter tensor starts. Random initialisers draw element e from word e of the
/// stream (seed, initialization, layer k, position t) for tensor t of the k-th
/// parameterised layer: the same values for a seed on any machine and worker count.
public enum ParameterInitializer: Sendable {
    /// Every value 0.
    case zeros
    /// Every value the given constant.
    case constant(Float)
    /// Uniform in [-bound, bound).
    case uniform(bound: Float)
    /// He (Kaiming) uniform for ReLU layers: uniform with bound √(6 / fanIn).
    case heUniform(fanIn: Int)

    /// Fills `values` from `stream`.
    public func fill(_ values: UnsafeMutableBufferPointer<Float>, stream: RandomAddress) {
        switch self {
        case .zeros:
            values.update(repeating: 0)
        case .constant(let value):
            values.update(repeating: value)
        case .uniform(let bound):
            for e in values.indices { values[e] = (2 * stream.uniform(e) - 1) * bound }
        case .heUniform(let fanIn):
            ParameterInitializer.uniform(bound: Float((6.0 / Double(fanIn)).squareRoot())).fill(values, stream: stream)
        }
    }
}

/// Where a layer's draws come from in one shard's training pass.
public struct LayerRandomness: Sendable {
    /// The run's seed (the Philox key).
    public var seed: UInt64
    /// The global optimisation step.
    public var step: UInt32
    /// Global-batch position of the shard's first row: row r of the shard is sample `firstPosition + r`.
    public var firstPosition: Int
    /// The layer's index among the model's layers of the same type (the second `Dropout` is 1).
    public var layer: UInt32

    /// The stream for `purpose`: (seed, purpose, step, layer). Draws for row r of a shard
    /// should use position `firstPosition + r`, as the built-in dropout does, so they do
    /// not depend on how the batch is cut into shards.
    public func address(_ purpose: RandomPurpose) -> RandomAddress {
        RandomAddress(seed: seed, purpose: purpose, step: step, layer: layer)
    }
}

/// A layer's parameter tensors, in the order it declared them, read-only.
public struct ParameterValues {
    let base: UnsafePointer<Float>
    let offsets: UnsafeBufferPointer<Int>

    /// Tensor `i` (declaration order), laid out as its shape, row-major.
    public subscript(i: Int) -> UnsafePointer<Float> { base + offsets[i] }

    /// Tensors at `base + offsets[i]` (for running a layer outside a ``Network``: tests, benchmarks).
    public init(base: UnsafePointer<Float>, offsets: UnsafeBufferPointer<Int>) {
        self.base = base
        self.offsets = offsets
    }
}

/// A layer's parameter gradients, in declaration order: every element must be written.
public struct ParameterGradients {
    let base: UnsafeMutablePointer<Float>
    let offsets: UnsafeBufferPointer<Int>

    /// The gradient of tensor `i` (declaration order), laid out as its shape, row-major.
    public subscript(i: Int) -> UnsafeMutablePointer<Float> { base + offsets[i] }

    /// Gradients at `base + offsets[i]`.
    public init(base: UnsafeMutablePointer<Float>, offsets: UnsafeBufferPointer<Int>) {
        self.base = base
        self.offsets = offsets
    }
}

/// What ``Layer/forward(_:)`` reads and writes for one shard.
public struct ForwardPass {
    /// N: the shard's rows in this pass (at most the shard size).
    public let rows: Int
    /// I: values per input row.
    public let inputWidth: Int
    /// O: values per output row, as `outputWidth(inputWidth:)` gave.
    public let outputWidth: Int
    /// One input sample's shape (product I), e.g. [C, H, W].
    public let inputShape: [Int]
    /// One output sample's shape (product O), as ``Layer/outputShape(inputShape:)`` gave.
    public let outputShape: [Int]
    /// (N, I).
    public let input: UnsafePointer<Float>
    /// (N, O): write every element.
    public let output: UnsafeMutablePointer<Float>
    /// The layer's parameter tensors, read-only: shared by every shard of the step.
    public let parameters: ParameterValues
    /// ``Layer/scratchCount(inputWidth:rows:)`` floats, this shard's own.
    public let scratch: UnsafeMutablePointer<Float>
    /// Training: where random draws come from. nil in evaluation (dropout is then the identity).
    public let random: LayerRandomness?

    /// A pass over `rows` samples (for running a layer outside a ``Network``: tests, benchmarks).
    public init(
        rows: Int, inputWidth: Int, outputWidth: Int, inputShape: [Int], outputShape: [Int], input: UnsafePointer<Float>,
        output: UnsafeMutablePointer<Float>, parameters: ParameterValues, scratch: UnsafeMutablePointer<Float>, random: LayerRandomness?
    ) {
        (self.rows, self.inputWidth, self.outputWidth, self.inputShape, self.outputShape) = (rows, inputWidth, outputWidth, inputShape, outputShape)
        (self.input, self.output, self.parameters, self.scratch, self.random) = (input, output, parameters, scratch, random)
    }
}

/// What ``Layer/backward(_:)`` reads and writes for one shard, after its forward pass.
public struct BackwardPass {
    /// N, as in the forward pass.
    public let rows: Int
    /// I, as in the forward pass.
    public let inputWidth: Int
    /// O, as in the forward pass.
    public let outputWidth: Int
    /// One input sample's shape, as in the forward pass.
    public let inputShape: [Int]
    /// One output sample's shape, as in the forward pass.
    public let outputShape: [Int]
    /// The forward pass's input (N, I) and output (N, O).
    public let input: UnsafePointer<Float>
    /// The forward pass's output (N, O).
    public let output: UnsafePointer<Float>
    /// dL/d(output), (N, O). The layer may overwrite it.
    public let outputGradient: UnsafeMutablePointer<Float>
    /// dL/d(input), (N, I), to be overwritten; nil when no earlier layer needs it.
    public let inputGradient: UnsafeMutablePointer<Float>?
    /// The layer's parameter tensors, as the forward pass read them.
    public let parameters: ParameterValues
    /// This shard's gradient of each parameter tensor: overwrite every element.
    public let parameterGradients: ParameterGradients
    /// The same scratch memory the forward pass had.
    public let scratch: UnsafeMutablePointer<Float>

    /// The backward pass matching a forward pass (for running a layer outside a ``Network``).
    public init(
        rows: Int, inputWidth: Int, outputWidth: Int, inputShape: [Int], outputShape: [Int], input: UnsafePointer<Float>,
        output: UnsafePointer<Float>, outputGradient: UnsafeMutablePointer<Float>, inputGradient: UnsafeMutablePointer<Float>?,
        parameters: ParameterValues, parameterGradients: ParameterGradients, scratch: UnsafeMutablePointer<Float>
    ) {
        (self.rows, self.inputWidth, self.outputWidth, self.inputShape, self.outputShape) = (rows, inputWidth, outputWidth, inputShape, outputShape)
        (self.input, self.output, self.outputGradient, self.inputGradient) = (input, output, outputGradient, inputGradient)
        (self.parameters, self.parameterGradients, self.scratch) = (parameters, parameterGradients, scratch)
    }
}
