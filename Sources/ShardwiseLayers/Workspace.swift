import ShardwiseKernels

/// Everything one shard's forward and backward pass writes, allocated once.
///
/// Holds up to `capacity` rows. activations[k] is the input of layer k
/// (activations[0] is the shard's input, filled by the caller), masks hold
/// dropout multipliers, and two scratch buffers carry gradients backwards.
public final class Workspace: @unchecked Sendable {
    public let capacity: Int
    public let activations: [FloatBuffer]
    /// Multipliers of the last training forward, by layer position: dropout masks (N, width),
    /// and DropConnect weight masks (O, I), scaled by 1/(1-p); nil for other layers.
    public let masks: [FloatBuffer?]
    /// DropConnect layers' `W ∘ mask` of the last training forward.
    let maskedWeights: [FloatBuffer?]
    let gradientA: FloatBuffer
    let gradientB: FloatBuffer
    /// Labels of the shard's rows.
    public let labels: UnsafeMutablePointer<Int32>

    /// - Parameter allocator: where the buffers' memory comes from (the computing worker's NUMA node).
    public init(network: Network, capacity: Int, allocator: MemoryAllocator? = nil) {
        precondition(capacity > 0, "workspace capacity must be positive")
        self.capacity = capacity
        activations = network.widths.map { FloatBuffer(count: capacity * $0, allocator: allocator) }
        masks = network.layers.map { layer in
            if case .dropout(let width, _, _, _) = layer { return FloatBuffer(count: capacity * width, allocator: allocator) }
            if case .linear(let i, let o, _, let p) = layer, p > 0 { return FloatBuffer(count: i * o, allocator: allocator) }
            return nil
        }
        maskedWeights = network.layers.map { layer in
            if case .linear(let i, let o, _, let p) = layer, p > 0 { return FloatBuffer(count: i * o, allocator: allocator) }
            return nil
        }
        let widest = network.widths.max()!
        gradientA = FloatBuffer(count: capacity * widest, allocator: allocator)
        gradientB = FloatBuffer(count: capacity * widest, allocator: allocator)
        labels = .allocate(capacity: capacity)
        labels.initialize(repeating: 0, count: capacity)
    }

    deinit { labels.deallocate() }

    /// The shard's input rows: (capacity, inputSize).
    public var input: UnsafeMutablePointer<Float> { activations[0].pointer }
    /// The network's output rows (logits) after `forward`: (capacity, outputSize).
    public var output: UnsafeMutablePointer<Float> { activations[activations.count - 1].pointer }
}

/// Where a shard's dropout draws come from.
public struct DropoutContext: Sendable {
    public var seed: UInt64
    /// The global optimisation step (counts across epochs).
    public var step: UInt32
    /// Global-batch position of the shard's first row.
    public var firstPosition: Int

    public init(seed: UInt64, step: UInt32, firstPosition: Int) {
        self.seed = seed
        self.step = step
        self.firstPosition = firstPosition
    }
}
