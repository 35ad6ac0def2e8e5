import ShardwiseData
import ShardwiseLayers

/// What a trainer will allocate, by part, computed with overflow checks before it allocates.
public struct MemoryEstimate: Sendable {
    /// Parameters and the optimizer's state (two copies of the flat vector).
    public var parameters: Int
    /// One gradient buffer per shard of the batch.
    public var shardGradients: Int
    /// One workspace (activations, scratch, gradients) per local shard.
    public var workspaces: Int
    /// The trainer's per-sample bookkeeping: the epoch's sample order and a split's row list
    /// (4 bytes a sample each). The data's values are not copied: a shard converts its rows
    /// from where they are stored (memory, or a mapped file's page cache).
    public var data: Int
    /// The sum, or nil when it overflows.
    public var total: Int? { CheckedSize.sum([parameters, shardGradients, workspaces, data]) }

    /// The estimate for `network` trained in `shards` shards of `shardSize` rows, `localShards` of
    /// them computed here, on `samples` rows; nil when a product overflows.
    public init?(network: Network, shards: Int, localShards: Int, shardSize: Int, samples: Int) {
        let p = network.layout.count
        guard let gradientFloats = CheckedSize.product([network.gradientBufferCount, network.widths.max() ?? 0]) else { return nil }
        let widths = CheckedSize.sum(network.widths + [gradientFloats])
        var scratch = 0
        for node in network.nodes {
            guard let s = CheckedSize.sum([scratch, node.layer?.scratchCount(inputShape: network.shapes[node.inputs[0]], rows: shardSize) ?? 0]) else { return nil }
            scratch = s
        }
        guard let widths, let perShardFloats = CheckedSize.sum([CheckedSize.product([shardSize, widths]) ?? -1, scratch]),
              let parameters = CheckedSize.product([2, 4, p]), let gradients = CheckedSize.product([shards, 4, p]),
              let workspaces = CheckedSize.product([localShards, 4, perShardFloats]),
              let data = CheckedSize.product([2, 4, samples])
        else { return nil }
        self.parameters = parameters
        self.shardGradients = gradients
        self.workspaces = workspaces
        self.data = data
    }

    /// Why running `network` forward over batches of `rows` (evaluation, prediction, benchmarks)
    /// cannot fit in this process's ``MemoryBudget``, or nil when it fits: checked before any
    /// parameter or workspace is allocated.
    public static func inferenceProblem(network: Network, rows: Int) -> String? {
        let budget = MemoryBudget.current()
        let estimate = MemoryEstimate(network: network, shards: 1, localShards: 1, shardSize: rows, samples: 0)
        if let total = estimate?.total, total <= budget.bytes { return nil }
        let needed = estimate?.total.map(MemoryBudget.format) ?? "more than can be addressed"
        return "the model needs about \(needed) for batches of \(rows) samples (\(network.layout.parameterCount) parameters, samples of up to \(network.widths.max() ?? 0) values), more than the \(budget) available"
    }
}
