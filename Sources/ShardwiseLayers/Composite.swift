import ShardwiseData

/// One value in a model's computation: the output of a layer or of a combination (or the
/// model's input), with the shape of one sample. Composites pass values to ``ModelGraph``.
public struct ModelValue: Sendable, Equatable {
    /// Its index among the graph's values (0: the model's input).
    public let id: Int
    /// One sample's shape, e.g. [C, H, W] or [features].
    public let shape: [Int]
}

/// How a combination node joins its inputs.
public enum Combination: Sendable, Equatable {
    /// The elementwise sum of inputs of one shape, added in the order given (`Add` in ONNX).
    case add
    /// The inputs one after another along the first dimension: channels of (C, H, W) samples,
    /// features of flat rows; the other dimensions must agree (`torch.cat(dim=1)`, ONNX `Concat`).
    case concatenate
    /// `a * b`, elementwise; `b` may also hold one value per channel of `a` (shape [C] or
    /// [C, 1, 1] against [C, H, W]), broadcast over the positions (gates, squeeze-and-excitation).
    case multiply
}

/// A layer made of other layers: residual blocks, parallel branches, nested sequences,
/// gates. It describes how its children connect by calling ``ModelGraph``; the engine then
/// manages every child's parameters, scratch memory, activations and gradients, so a
/// composite has no forward or backward pass of its own and never touches memory.
///
/// ```swift
/// /// x + sigmoid(gate(x)) * body(x): a gated residual block.
/// struct GatedResidual: CompositeLayer {
///     var body: Sequential
///     var gate: Sequential
///     func build(_ x: ModelValue, in graph: inout ModelGraph) throws(ModelError) -> ModelValue {
///         let b = try graph.apply(body, named: "body", to: x)
///         let g = try graph.apply(gate, named: "gate", to: x)
///         return try graph.combine(.add, [x, try graph.combine(.multiply, [b, g])])
///     }
/// }
/// ```
///
/// Children's parameters are named by the path of child names from the model's root
/// (`layers.2.body.0.weight`), as PyTorch's `state_dict` names a module tree.
public protocol CompositeLayer: Layer {
    /// Adds the block's computation on `input` to `graph` and returns its output value.
    func build(_ input: ModelValue, in graph: inout ModelGraph) throws(ModelError) -> ModelValue
}

extension CompositeLayer {
    /// The output shape of the block's graph on `inputShape`.
    public func outputShape(inputShape: [Int]) throws(ModelError) -> [Int] {
        var graph = ModelGraph(inputShape: inputShape)
        return try build(graph.input, in: &graph).shape
    }

    public func outputWidth(inputWidth: Int) throws(ModelError) -> Int {
        try outputShape(inputShape: [inputWidth]).reduce(1, *)
    }

    /// A composite's parameters are its children's, laid out by ``Network``.
    public func parameters(inputShape: [Int]) -> [ParameterSpec] { [] }

    /// Never called: ``Network`` compiles a composite into its children's passes.
    public func forward(_ pass: ForwardPass) {
        preconditionFailure("\(Self.self) is a composite layer: a Network runs its children, it has no forward pass of its own")
    }

    /// Never called: ``Network`` compiles a composite into its children's passes.
    public func backward(_ pass: BackwardPass) {
        preconditionFailure("\(Self.self) is a composite layer: a Network runs its children, it has no backward pass of its own")
    }
}

/// The computation graph of a model under construction: the leaf layers and combinations in
/// the order the forward pass runs them. ``Network`` builds it from the model's tree; each
/// ``CompositeLayer`` adds its part through ``apply(_:named:to:)`` and ``combine(_:_:)``.
public struct ModelGraph: Sendable {
    /// One step of the forward pass.
    public struct Node: Sendable {
        /// What the node computes.
        public enum Operation: Sendable {
            /// A leaf layer on the node's one input.
            case layer(any Layer)
            /// A combination of the node's inputs.
            case combine(Combination)
        }
        /// What the node computes.
        public let operation: Operation
        /// The values it reads (ids), in order.
        public let inputs: [Int]
        /// The value it writes (id).
        public let output: Int
        /// Where it sits in the model's tree: child names from the root, e.g. ["layers", "2", "body", "0"].
        public var path: [String]

        /// The leaf layer, nil for a combination.
        public var layer: (any Layer)? {
            if case .layer(let layer) = operation { return layer }
            return nil
        }
        /// The path joined by dots, the prefix of its parameters' names: `layers.2.body.0`.
        public var name: String { path.joined(separator: ".") }
    }

    /// The most nodes a model may have, and the deepest nesting: bounds on what a description can expand to.
    public static let maximumNodes = 100_000
    public static let maximumDepth = 64

    /// Every value's sample shape, by id; 0 is the model's input.
    public private(set) var shapes: [[Int]]
    /// The nodes, in forward order.
    public private(set) var nodes: [Node] = []
    /// The path of the composite being built.
    var path: [String] = []

    /// A graph whose input samples have `inputShape`.
    public init(inputShape: [Int]) {
        shapes = [inputShape]
    }

    /// The model's input.
    public var input: ModelValue { ModelValue(id: 0, shape: shapes[0]) }

    /// Adds `layer` applied to `x` as the child `name` of the composite being built: a leaf
    /// layer becomes one node; a composite adds its own nodes under that name.
    /// Throws when the layer cannot take `x`, naming the child's path.
    public mutating func apply(_ layer: any Layer, named name: String, to x: ModelValue) throws(ModelError) -> ModelValue {
        try check(x)
        guard path.count < Self.maximumDepth else { throw ModelError("\(where_(name)): composites nested deeper than \(Self.maximumDepth)") }
        path.append(name)
        defer { path.removeLast() }
        if let composite = layer as? any CompositeLayer { return try composite.build(x, in: &self) }
        let shape: [Int]
        do { shape = try layer.outputShape(inputShape: x.shape) } catch {
            throw ModelError("\(location)\(type(of: layer)) on input \(Network.describe(x.shape)): \(error.problem)")
        }
        return try append(.layer(layer), inputs: [x.id], shape: shape, what: "\(type(of: layer))")
    }

    /// Adds a combination of `values` (see ``Combination``); throws when their shapes do not fit it.
    public mutating func combine(_ combination: Combination, _ values: [ModelValue]) throws(ModelError) -> ModelValue {
        for value in values { try check(value) }
        guard let first = values.first, values.count >= 2 else { throw ModelError("\(location)\(combination) needs at least two values, got \(values.count)") }
        let shapes = values.map { Network.describe($0.shape) }.joined(separator: " and ")
        let shape: [Int]
        switch combination {
        case .add:
            guard values.allSatisfy({ $0.shape == first.shape }) else { throw ModelError("\(location)add takes values of one shape, got \(shapes)") }
            shape = first.shape
        case .concatenate:
            guard values.allSatisfy({ $0.shape.count == first.shape.count && $0.shape.dropFirst() == first.shape.dropFirst() }) else {
                throw ModelError("\(location)concatenate takes values that differ in their first dimension alone, got \(shapes)")
            }
            guard let total = CheckedSize.sum(values.map { $0.shape[0] }) else { throw ModelError("\(location)concatenate: the sizes overflow") }
            shape = [total] + first.shape.dropFirst()
        case .multiply:
            let b = values[1].shape, channelwise = b == [first.shape[0]] || b == [first.shape[0]] + Array(repeating: 1, count: first.shape.count - 1)
            guard values.count == 2, b == first.shape || channelwise else {
                throw ModelError("\(location)multiply takes two values of one shape, or a second of one value per channel of the first, got \(shapes)")
            }
            shape = first.shape
        }
        return try append(.combine(combination), inputs: values.map(\.id), shape: shape, what: "\(combination)")
    }

    private mutating func append(_ operation: Node.Operation, inputs: [Int], shape: [Int], what: String) throws(ModelError) -> ModelValue {
        _ = try ModelSize.sampleWidth(shape, "\(location)\(what)")
        guard nodes.count < Self.maximumNodes else { throw ModelError("the model expands to more than \(Self.maximumNodes) layers") }
        shapes.append(shape)
        nodes.append(Node(operation: operation, inputs: inputs, output: shapes.count - 1, path: path))
        return ModelValue(id: shapes.count - 1, shape: shape)
    }

    private func check(_ value: ModelValue) throws(ModelError) {
        guard value.id >= 0, value.id < shapes.count, shapes[value.id] == value.shape else {
            throw ModelError("\(location)a value that is not of this graph")
        }
    }

    /// "at body.0: ", the path inside the top-level layer (empty at the top).
    var location: String { path.count > 2 ? "at \(path.dropFirst(2).joined(separator: ".")): " : "" }
    private func where_(_ name: String) -> String { (path + [name]).joined(separator: ".") }
}

extension Sequential: CompositeLayer {
    /// Children in order, named by their index among all children (`0`, `1`, ...), as
    /// `torch.nn.Sequential` names them. (The model's top level keeps Shardwise's names, `layers.<k>`
    /// counting only layers with parameters; see ``Network``.)
    public func build(_ input: ModelValue, in graph: inout ModelGraph) throws(ModelError) -> ModelValue {
        guard !layers.isEmpty else { throw ModelError("\(graph.location)an empty sequence of layers") }
        var x = input
        for (i, layer) in layers.enumerated() { x = try graph.apply(layer, named: "\(i)", to: x) }
        return x
    }
}

/// `shortcut(x) + body(x)`: the residual block of ResNets and transformers. The shortcut is
/// the identity unless given (a 1x1 convolution with stride where the body changes the shape).
/// Parameters: `body.<i>.…` and `shortcut.<i>.…`, as a `torch.nn` module with `body` and
/// `shortcut` `Sequential`s names them.
public struct Residual: CompositeLayer {
    /// The residual branch.
    public var body: Sequential
    /// The shortcut; nil: the identity.
    public var shortcut: Sequential?

    /// `x + body(x)`, or `shortcut(x) + body(x)`.
    public init(shortcut: Sequential? = nil, @LayerBuilder _ body: () -> [any Layer]) {
        self.body = Sequential(body())
        self.shortcut = shortcut
    }

    /// `x + body(x)`, or `shortcut(x) + body(x)`, from layer lists.
    public init(body: [any Layer], shortcut: [any Layer]? = nil) {
        self.body = Sequential(body)
        self.shortcut = shortcut.map(Sequential.init)
    }

    public func build(_ input: ModelValue, in graph: inout ModelGraph) throws(ModelError) -> ModelValue {
        let b = try graph.apply(body, named: "body", to: input)
        let s = try shortcut.map { (shortcut) throws(ModelError) in try graph.apply(shortcut, named: "shortcut", to: input) } ?? input
        guard b.shape == s.shape else {
            throw ModelError(
                "\(graph.location)residual: the body gives \(Network.describe(b.shape)), the shortcut \(Network.describe(s.shape)); they must agree (give a shortcut such as conv(C, 1, stride: S))")
        }
        return try graph.combine(.add, [b, s])
    }
}

/// Branches on the same input, their outputs concatenated along channels (Inception-style) or
/// summed. Parameters: `branches.<i>.<j>.…`.
public struct Parallel: CompositeLayer {
    /// The branches, each a sequence.
    public var branches: [Sequential]
    /// How their outputs join: ``Combination/concatenate`` or ``Combination/add``.
    public var combination: Combination

    /// Branches joined by `combination` (`.concatenate` or `.add`).
    public init(_ combination: Combination = .concatenate, branches: [Sequential]) {
        self.branches = branches
        self.combination = combination
    }

    /// Branches joined by `combination`; each statement of the builder is one branch.
    public init(_ combination: Combination = .concatenate, @BranchBuilder _ branches: () -> [Sequential]) {
        self.init(combination, branches: branches())
    }

    public func build(_ input: ModelValue, in graph: inout ModelGraph) throws(ModelError) -> ModelValue {
        guard combination != .multiply else { throw ModelError("\(graph.location)parallel branches join by concatenate or add, not multiply") }
        guard branches.count >= 2 else { throw ModelError("\(graph.location)parallel needs at least two branches, got \(branches.count)") }
        var outputs: [ModelValue] = []
        for (i, branch) in branches.enumerated() { outputs.append(try graph.apply(branch, named: "branches.\(i)", to: input)) }
        return try graph.combine(combination, outputs)
    }
}

/// Builds ``Parallel``'s branches: each statement is one branch (a layer, or a ``Sequential`` kept whole).
@resultBuilder
public enum BranchBuilder {
    public static func buildExpression(_ layer: any Layer) -> [Sequential] { [Sequential([layer])] }
    public static func buildExpression(_ model: Sequential) -> [Sequential] { [model] }
    public static func buildBlock(_ parts: [Sequential]...) -> [Sequential] { parts.flatMap { $0 } }
    public static func buildArray(_ parts: [[Sequential]]) -> [Sequential] { parts.flatMap { $0 } }
}
