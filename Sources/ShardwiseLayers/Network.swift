import ShardwiseData
import ShardwiseKernels

/// A model compiled for an input shape: the tree of layers flattened into the nodes of its
/// forward pass (leaf layers and combinations, see ``ModelGraph``), the shape of every value,
/// the parameter layout, and the forward and backward pass over one shard.
///
/// Knows nothing of threads: any number of shards may run ``forward(parameters:workspace:rows:random:)``
/// and ``backward(parameters:workspace:rows:lossDivisor:gradient:finished:)`` at once, each with its
/// own ``Workspace`` and gradient buffer, reading the same parameters.
///
/// Names and random streams follow the tree, and a flat model keeps the names and streams
/// it always had: the k-th top-level layer with parameters is `layers.<k>`; inside a composite,
/// children are named by the composite (`layers.2.body.0.weight`). A stochastic leaf draws from
/// streams addressed by its index among the model's leaves of its type in forward order, and
/// the parameters of the t-th leaf with parameters from the initialisation stream of index t.
public struct Network: Sendable {
    /// The layers, as given.
    public let model: Sequential
    /// What `backward` differentiates.
    public let loss: any Loss
    /// The forward pass's steps, in order: leaf layers and combinations.
    public let nodes: [ModelGraph.Node]
    /// widths[v] is the number of values in one sample of value v; widths[0] the input's, widths.last the output's.
    /// For a flat model value k is layer k's input.
    public let widths: [Int]
    /// shapes[v] is the shape of one sample of value v (product widths[v]), e.g. [1, 28, 28].
    public let shapes: [[Int]]
    /// Where each parameter tensor sits in the flat parameter vector.
    public let layout: ParameterLayout
    /// Per node: the offsets of its tensors in the flat vector, in declaration order (buffers too).
    let parameterOffsets: [[Int]]
    /// Per node: the offsets of its trained tensors (buffers and tied tensors excluded).
    let trainedOffsets: [[Int]]
    /// Per node: where its backward pass writes each tensor's gradient, in declaration order:
    /// the tensor's offset, or for a tied tensor its reserved gradient space.
    let gradientOffsets: [[Int]]
    /// The tied tensors (``ParameterTie``), in forward order of their users.
    let ties: [Tie]
    /// Per node: a leaf's index among the model's leaves of the same type (addresses its random streams).
    let typeIndex: [UInt32]
    /// Per node: whether its backward pass runs (it has parameters, or an input needs a gradient).
    let runsBackward: [Bool]
    /// Per node and input: whether the gradient of that input is needed, and whether it is the
    /// first contribution to it in backward order (written) or a later one (added, in backward order).
    let contributions: [[Contribution]]
    /// Per value: the gradient buffer of the workspace holding its gradient in the backward pass (-1: none).
    let gradientSlot: [Int]
    /// How many gradient buffers a workspace holds, and whether it needs one more for contributions that add.
    let gradientBuffers: Int
    let needsAccumulation: Bool

    /// The nodes of batch-statistics layers (BatchNorm), in forward order.
    public let statisticsNodes: [Int]
    /// Those whose training shares statistics across the batch: each splits the training pass (see ``trainingPhases``).
    public let meetingNodes: [Int]
    /// A statistics node's position in ``statisticsNodes``.
    let statisticsIndex: [Int: Int]

    enum Contribution: Sendable { case none, write, add }

    /// A tied tensor: node `user`'s tensor `tensor` is node `owner`'s tensor at `offset`
    /// (`count` values); the user's gradient of it is written at `gradient`.
    struct Tie: Sendable {
        var user: Int, tensor: Int, owner: Int, offset: Int, count: Int, gradient: Int
    }

    /// The offset of the tensor `tie` names for `spec` of node `n`: the nearest earlier leaf of
    /// the tie's type declaring a tensor of that name and of `spec`'s shape.
    static func resolve(
        _ tie: ParameterTie, of spec: ParameterSpec, at n: Int, nodes: [ModelGraph.Node], specs: [[ParameterSpec]], offsets: [[Int]], layer: Int
    ) throws(ModelError) -> (owner: Int, offset: Int) {
        for m in stride(from: n - 1, through: 0, by: -1) {
            guard let other = nodes[m].layer, ObjectIdentifier(type(of: other)) == tie.layer,
                  let t = specs[m].firstIndex(where: { $0.name == tie.tensor && $0.tiedTo == nil && $0.role != .buffer }) else { continue }
            guard specs[m][t].shape == spec.shape else {
                throw ModelError(layer: layer, "'\(spec.name)' is tied to \(tie.layerName)'s \(tie.tensor) (\(nodes[m].name)), of shape \(describe(specs[m][t].shape)), but has shape \(describe(spec.shape)); expected the same")
            }
            return (m, offsets[m][t])
        }
        throw ModelError(layer: layer, "'\(spec.name)' is tied to a \(tie.layerName)'s \(tie.tensor), but no \(tie.layerName) comes before it")
    }

    /// Checks every layer's widths and lays out the parameters, for flat input rows of `inputWidth`.
    /// Throws ``ModelError`` naming the first layer that cannot take its input.
    public init(_ model: Sequential, inputWidth: Int, loss: any Loss = SoftmaxCrossEntropy()) throws(ModelError) {
        try self.init(model, inputShape: [inputWidth], loss: loss)
    }

    /// Checks every layer's shapes and lays out the parameters, for input samples of
    /// `inputShape` (e.g. [1, 28, 28] for MNIST images, [784] for flat rows).
    /// Throws ``ModelError`` naming the first layer that cannot take its input and the shapes.
    public init(_ model: Sequential, inputShape: [Int], loss: any Loss = SoftmaxCrossEntropy()) throws(ModelError) {
        _ = try ModelSize.sampleWidth(inputShape, "the input")
        guard !model.layers.isEmpty else { throw ModelError("the model has no layers") }
        // The tree into nodes; the top level names its k-th layer with parameters `layers.<k>`.
        var graph = ModelGraph(inputShape: inputShape)
        var x = graph.input
        var parameterisedTop = 0, topLevel: [Int] = []
        for (k, layer) in model.layers.enumerated() {
            let start = graph.nodes.count
            graph.path = ["layers"]
            do { x = try graph.apply(layer, named: "\(parameterisedTop)", to: x) } catch {
                throw ModelError(layer: k, error.problem)
            }
            let hasParameters = graph.nodes[start...].contains { node in node.layer.map { !$0.parameters(inputShape: graph.shapes[node.inputs[0]]).isEmpty } ?? false }
            if hasParameters { parameterisedTop += 1 }
            topLevel += Array(repeating: k, count: graph.nodes.count - start)
        }
        let nodes = graph.nodes, shapes = graph.shapes
        var specs: [[ParameterSpec]] = []
        for (n, node) in nodes.enumerated() {
            guard let layer = node.layer else { specs.append([]); continue }
            let declared = layer.parameters(inputShape: shapes[node.inputs[0]])
            let top = topLevel[n]
            for spec in declared where !(1...4).contains(spec.shape.count) || spec.shape.contains(where: { $0 <= 0 }) {
                throw ModelError(layer: top, "\(type(of: layer)): parameter '\(spec.name)' has shape \(spec.shape), expected one to four positive sizes")
            }
            for spec in declared where (CheckedSize.product(spec.shape) ?? .max) > Self.maximumWidth {
                throw ModelError(layer: top, "\(type(of: layer)): parameter '\(spec.name)' of shape \(spec.shape) has more than \(Self.maximumWidth) values (2^31 - 1, the most one BLAS call and one random stream address)")
            }
            specs.append(declared)
        }
        // Max-norm constrains hidden layers: every weight but the output layer's (the last leaf with parameters).
        let lastParameterised = specs.lastIndex { $0.contains { $0.role != .buffer } }
        var layout = ParameterLayout()
        var offsets: [[Int]] = [], typeIndex: [UInt32] = [], ties: [Tie] = []
        var seenOfType: [ObjectIdentifier: UInt32] = [:]
        for (n, node) in nodes.enumerated() {
            if let layer = node.layer {
                let type = ObjectIdentifier(Swift.type(of: layer))
                typeIndex.append(seenOfType[type, default: 0])
                seenOfType[type, default: 0] += 1
            } else {
                typeIndex.append(0)
            }
            var own: [Int] = []
            for spec in specs[n] {
                if let tie = spec.tiedTo {
                    let (owner, offset) = try Self.resolve(tie, of: spec, at: n, nodes: nodes, specs: specs, offsets: offsets, layer: topLevel[n])
                    ties.append(Tie(user: n, tensor: own.count, owner: owner, offset: offset, count: spec.shape.reduce(1, *), gradient: -1))
                    own.append(offset)
                    continue
                }
                guard spec.role != .buffer else { own.append(-1); continue }
                own.append(layout.append(
                    name: node.name + "." + spec.name, shape: spec.shape, maxNormApplies: spec.role == .weight && n != lastParameterised, isWeight: spec.role == .weight))
            }
            offsets.append(own)
        }
        // Buffers after every trained tensor: the optimizer, the reduction and the exchange cover the trained part alone.
        let trainedOffsets = offsets.enumerated().map { n, own in
            own.enumerated().filter { t, offset in offset >= 0 && specs[n][t].tiedTo == nil }.map(\.element)
        }
        for (n, node) in nodes.enumerated() {
            for (t, spec) in specs[n].enumerated() where spec.role == .buffer && spec.tiedTo == nil {
                offsets[n][t] = layout.append(name: node.name + "." + spec.name, shape: spec.shape, maxNormApplies: false, isBuffer: true)
            }
        }
        // A tied tensor's second use writes its gradient into space of its own, added to the
        // owner's after the owner's backward pass.
        var gradientOffsets = offsets
        for i in ties.indices {
            ties[i].gradient = layout.reserveGradientSpace(ties[i].count)
            gradientOffsets[ties[i].user][ties[i].tensor] = ties[i].gradient
        }
        guard Set(layout.tensors.map(\.name)).count == layout.tensors.count else {
            throw ModelError("two parameter tensors of the model have one name; give a composite's children distinct names")
        }
        // Which values need a gradient: those downstream of a layer with parameters.
        var needs = [Bool](repeating: false, count: shapes.count)
        var runs: [Bool] = []
        for (n, node) in nodes.enumerated() {
            let run = !specs[n].isEmpty || node.inputs.contains { needs[$0] }
            runs.append(run)
            needs[node.output] = run
        }
        // The backward pass's gradient buffers: a value's is taken when its first contribution
        // is written (its last reader in forward order) and given back once its producer has read
        // it; for a chain this is two buffers used in turn.
        var slot = [Int](repeating: -1, count: shapes.count)
        var free: [Int] = [], count = 0
        func take() -> Int {
            if let s = free.popLast() { return s }
            count += 1
            return count - 1
        }
        slot[shapes.count - 1] = take()
        var contributions = [[Contribution]](repeating: [], count: nodes.count)
        var accumulation = false
        for n in nodes.indices.reversed() {
            let node = nodes[n]
            contributions[n] = node.inputs.map { v in
                guard runs[n], needs[v] else { return .none }
                if slot[v] >= 0 { accumulation = true; return .add }
                slot[v] = take()
                return .write
            }
            if runs[n], slot[node.output] >= 0 { free.insert(slot[node.output], at: 0) }
        }
        self.model = model
        self.loss = loss
        self.nodes = nodes
        self.widths = shapes.map { $0.reduce(1, *) }
        self.shapes = shapes
        self.layout = layout
        self.parameterOffsets = offsets
        self.gradientOffsets = gradientOffsets
        self.ties = ties
        self.trainedOffsets = trainedOffsets
        self.typeIndex = typeIndex
        self.runsBackward = runs
        self.contributions = contributions
        self.gradientSlot = slot
        self.gradientBuffers = count
        self.needsAccumulation = accumulation
        statisticsNodes = nodes.indices.filter { nodes[$0].layer is any BatchStatisticsLayer }
        meetingNodes = statisticsNodes.filter { (nodes[$0].layer as! any BatchStatisticsLayer).sharesStatistics }
        statisticsIndex = Dictionary(uniqueKeysWithValues: statisticsNodes.enumerated().map { ($1, $0) })
    }

    /// The widest row and the largest tensor a network may have: ``ModelSize/maximum``, 2^31 - 1.
    public static let maximumWidth = ModelSize.maximum

    /// The model's top-level layers.
    public var layers: [any Layer] { model.layers }

    /// A sample shape as PyTorch prints it: (1, 28, 28).
    public static func describe(_ shape: [Int]) -> String { "(" + shape.map(String.init).joined(separator: ", ") + ")" }

    /// Multiply-adds per sample in the forward pass of the leaves that declare them
    /// (``Layer/multiplyAdds(inputShape:)``: matrix products); forward plus backward costs about 3x that.
    public var multiplyAddsPerSample: Int {
        nodes.reduce(0) { sum, node in sum + (node.layer?.multiplyAdds(inputShape: shapes[node.inputs[0]]) ?? 0) }
    }

    /// Fills the parameters with each tensor's initialiser: tensor t of the k-th leaf with
    /// parameters draws from the stream (seed, initialization, layer k, position t).
    /// With `scheme` ``InitializationScheme/pytorch``, a layer whose weights start He-uniform
    /// (linear layers, convolutions) starts as PyTorch's does instead: weights and biases uniform
    /// in ±1/√fan-in (`kaiming_uniform_(a=√5)` and its bias rule), from the same streams.
    public func initialize(parameters: FloatBuffer, seed: UInt64, scheme: InitializationScheme = .he) {
        precondition(parameters.count == layout.count, "\(parameters.count) parameters for a layout of \(layout.count)")
        parameters.fill(0)
        var parameterised = 0
        for (n, node) in nodes.enumerated() where !parameterOffsets[n].isEmpty {
            let specs = node.layer!.parameters(inputShape: shapes[node.inputs[0]])
            let fanIn = specs.lazy.compactMap { spec -> Int? in if case .heUniform(let f) = spec.initializer { return f } else { return nil } }.first
            // A tied tensor starts as its owner's: it is the owner's.
            for (t, spec) in specs.enumerated() where spec.tiedTo == nil {
                let tensor = layout.tensors.first { $0.offset == parameterOffsets[n][t] }!
                let stream = RandomAddress(seed: seed, purpose: .initialization, position: UInt32(t), layer: UInt32(parameterised))
                var initializer = spec.initializer
                if scheme == .pytorch, let fanIn, spec.role == .weight || spec.role == .bias {
                    initializer = .uniform(bound: Float(1 / Double(fanIn).squareRoot()))
                }
                initializer.fill(UnsafeMutableBufferPointer(start: parameters.pointer + tensor.offset, count: tensor.count), stream: stream)
            }
            parameterised += 1
        }
    }
}

/// How a model's linear layers and convolutions start.
public enum InitializationScheme: String, Sendable, Codable {
    /// He (Kaiming) uniform weights, √(6 / fan-in), zero biases: Shardwise's default, suited to
    /// ReLU networks (the dropout paper's recipe and He et al. 2015).
    case he
    /// PyTorch's defaults: weights and biases uniform in ±1/√fan-in.
    case pytorch
}
