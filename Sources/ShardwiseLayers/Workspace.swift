import ShardwiseData
import ShardwiseKernels

/// Everything one shard's forward and backward pass writes, allocated once.
///
/// Holds up to `capacity` rows. activations[v] holds value v of the network (for a flat
/// model the input of layer v; activations[0] is the shard's input, filled by the caller);
/// each leaf's scratch memory lives from its forward to its backward; a few buffers carry
/// gradients backwards (two for a chain of layers, see ``Network``).
public final class Workspace: @unchecked Sendable {
    /// The most rows one pass takes.
    public let capacity: Int
    /// activations[v]: value v, (capacity, its width); the last is the model's output.
    public let activations: [FloatBuffer]
    /// Per node: its scratch memory (masks, say), nil when it asked for none or is a combination.
    public let scratch: [FloatBuffer?]
    /// The backward pass's gradient buffers, (capacity, the widest value) each.
    let gradients: [FloatBuffer]
    /// Where a gradient that is added to another is formed first (nil when the model has none).
    let accumulationBuffer: FloatBuffer?
    /// Labels of the shard's rows (classification): one a row, or one a position of a sequence model's rows.
    public let labels: UnsafeMutablePointer<Int32>
    /// Target values of the shard's rows, (capacity, output width) (regression).
    public let targets: UnsafeMutablePointer<Float>
    /// Whether the last loaded rows were labelled (classification) rather than given target values.
    public private(set) var holdsLabels = true
    /// Handed to layers that asked for no scratch memory.
    private let empty = FloatBuffer(count: 16)

    /// - Parameters:
    ///   - network: the compiled model whose activations, scratch and gradients it holds.
    ///   - capacity: the most rows one pass takes (the shard size).
    ///   - allocator: where the buffers' memory comes from (the computing worker's NUMA node).
    public init(network: Network, capacity: Int, allocator: MemoryAllocator? = nil) {
        precondition(capacity > 0, "workspace capacity must be positive")
        self.capacity = capacity
        activations = network.widths.map { FloatBuffer(count: capacity * $0, allocator: allocator) }
        scratch = network.nodes.map { node in
            let count = node.layer?.scratchCount(inputShape: network.shapes[node.inputs[0]], rows: capacity) ?? 0
            return count > 0 ? FloatBuffer(count: count, allocator: allocator) : nil
        }
        let widest = network.widths.max()!
        gradients = (0..<network.gradientBuffers).map { _ in FloatBuffer(count: capacity * widest, allocator: allocator) }
        accumulationBuffer = network.needsAccumulation ? FloatBuffer(count: capacity * widest, allocator: allocator) : nil
        labels = .allocate(capacity: capacity * network.labelPositions)
        labels.initialize(repeating: 0, count: capacity * network.labelPositions)
        targets = .allocate(capacity: capacity * network.widths.last!)
        targets.initialize(repeating: 0, count: capacity * network.widths.last!)
    }

    deinit {
        labels.deallocate()
        targets.deallocate()
    }

    /// Loads sample `i` of `data` as row `r`: its inputs and its label or targets.
    @inline(__always)
    public func load(_ data: Dataset, sample i: Int, row r: Int) {
        data.copyInputs(i, into: input + r * data.features)
        guard data.targets != nil else { return }
        holdsLabels = data.task == .classification
        if holdsLabels {
            if data.targetWidth == 1 { labels[r] = data.label(i) } else { data.copyLabels(i, into: labels + r * data.targetWidth) }
        } else {
            data.copyTargets(i, into: targets + r * data.targetWidth)
        }
    }

    /// The shard's input rows: (capacity, input width).
    public var input: UnsafeMutablePointer<Float> { activations[0].pointer }
    /// The model's output rows after `forward`: (capacity, output width).
    public var output: UnsafeMutablePointer<Float> { activations[activations.count - 1].pointer }

    func scratch(_ k: Int) -> UnsafeMutablePointer<Float> { (scratch[k] ?? empty).pointer }
    func gradient(_ slot: Int) -> UnsafeMutablePointer<Float> { gradients[slot].pointer }
    var accumulation: UnsafeMutablePointer<Float> { accumulationBuffer!.pointer }
}
