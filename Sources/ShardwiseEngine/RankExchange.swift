import CShardwiseMPI
import ShardwiseKernels
import ShardwiseLayers

/// How the ranks of an MPI job share a step; every MPI type stays behind this type and ``Cluster``.
///
/// Rank r computes a contiguous block of the shards and owns a contiguous block of the
/// parameter chunks. In ordered mode a step then runs:
///  1. each rank computes its shards;
///  2. an exchange (a reduce-scatter that does not add): every rank sends each of its
///     shard gradients' slice in rank q's chunk block to rank q, so each rank holds
///     every shard's gradient for its own chunks;
///  3. each rank sums, in shard order, and updates its chunks;
///  4. an allgather of the updated parameters.
/// The sums are the single-process sums, element for element, so the weights are
/// bit-identical for any rank count. In fast mode a rank instead adds its own shards,
/// `MPI_Allreduce` adds the ranks' sums (in an order MPI chooses), and every rank updates
/// all parameters: less data moved, not reproducible across rank counts.
final class RankExchange: @unchecked Sendable {
    let cluster: Cluster
    let fast: Bool
    /// The chunks this rank updates.
    let localChunks: Range<Int>
    /// This rank's transfers of one step, and each rank's parameter range (allgather).
    let transfers: UnsafeMutablePointer<sw_mpi_transfer>
    let transferCount: Int
    let rankCounts: UnsafeMutablePointer<Int32>
    let rankOffsets: UnsafeMutablePointer<Int32>

    init(cluster: Cluster, fast: Bool, shards: Int, chunks: [SGDOptimizer.Chunk], shardGradients: [FloatBuffer]) {
        self.cluster = cluster
        self.fast = fast
        let ranks = cluster.size, me = cluster.rank
        let chunkBlocks = (0..<ranks).map { r in fast ? 0..<chunks.count : Cluster.block(r, of: chunks.count, parts: ranks) }
        let elementRanges = chunkBlocks.map { b in
            b.isEmpty ? 0..<0 : chunks[b.lowerBound].range.lowerBound..<chunks[b.upperBound - 1].range.upperBound
        }
        localChunks = chunkBlocks[me]
        rankCounts = .allocate(capacity: ranks)
        rankOffsets = .allocate(capacity: ranks)
        for r in 0..<ranks {
            rankCounts[r] = Int32(elementRanges[r].count)
            rankOffsets[r] = Int32(elementRanges[r].lowerBound)
        }
        var plan: [sw_mpi_transfer] = []
        for q in 0..<ranks where q != me && !fast {
            let theirs = elementRanges[q], mine = elementRanges[me]
            for s in cluster.block(of: shards) where !theirs.isEmpty {
                plan.append(sw_mpi_transfer(peer: Int32(q), send: 1, tag: Int32(s), buffer: shardGradients[s].pointer + theirs.lowerBound, count: theirs.count))
            }
            for s in cluster.block(of: shards, rank: q) where !mine.isEmpty {
                plan.append(sw_mpi_transfer(peer: Int32(q), send: 0, tag: Int32(s), buffer: shardGradients[s].pointer + mine.lowerBound, count: mine.count))
            }
        }
        transferCount = plan.count
        transfers = .allocate(capacity: max(1, plan.count))
        transfers.initialize(from: plan, count: plan.count)
    }

    /// What this rank sends and receives in one step: its shards' gradient slices and its
    /// part of the parameters (as if sent to each other rank directly; the allgather's algorithm
    /// is MPI's); in fast mode, what a ring all-reduce of the gradient moves.
    var traffic: Traffic {
        let ranks = cluster.size
        let total = (0..<ranks).reduce(0) { $0 + Int(rankCounts[$1]) }
        let ring = Traffic.ringAllreduceBytes(floats: fast ? Int(rankCounts[0]) : total, ranks: ranks)
        if fast { return Traffic(sentBytes: ring, receivedBytes: ring, ringAllreduceBytes: ring) }
        var sent = 0, received = 0
        for t in UnsafeBufferPointer(start: transfers, count: transferCount) {
            if t.send != 0 { sent += t.count * 4 } else { received += t.count * 4 }
        }
        let mine = Int(rankCounts[cluster.rank])
        sent += mine * (ranks - 1) * 4
        received += (total - mine) * 4
        return Traffic(sentBytes: sent, receivedBytes: received, ringAllreduceBytes: ring)
    }

    deinit {
        transfers.deallocate()
        rankCounts.deallocate()
        rankOffsets.deallocate()
    }

    /// Between computing and reducing: gives this rank what its chunks need from the other
    /// ranks' shards (ordered), or the sum over all ranks in its first shard's buffer (fast).
    func combine(shardGradients: [FloatBuffer], localShards: Range<Int>) throws(ClusterError) {
        if fast {
            // This rank's shards, added in shard order into its first shard's buffer.
            let sum = shardGradients[localShards.lowerBound]
            for s in localShards.dropFirst() { Elementwise.add(count: sum.count, x: shardGradients[s].pointer, y: sum.pointer) }
            try cluster.allreduceSum(sum.pointer, count: sum.count)
        } else {
            try cluster.exchange(transfers, count: transferCount)
        }
    }

    /// Every rank gets the parameters the others updated (ordered mode; in fast mode all updated all).
    func gatherParameters(_ parameters: UnsafeMutablePointer<Float>) throws(ClusterError) {
        guard !fast else { return }
        try cluster.allgather(parameters, counts: rankCounts, displacements: rankOffsets, "gathering parameters")
    }

    /// Gives this rank the full optimizer state (each rank updates only its own chunks).
    func gatherOptimizerState(_ velocity: UnsafeMutablePointer<Float>) throws(ClusterError) {
        guard !fast else { return }
        try cluster.allgather(velocity, counts: rankCounts, displacements: rankOffsets, "gathering the optimizer state")
    }
}

/// Bytes one rank moves per step, beside a ring all-reduce of the same gradient.
public struct Traffic: Codable, Sendable, Equatable {
    public var sentBytes: Int
    public var receivedBytes: Int
    /// What each rank sends (and receives) in a ring all-reduce: 2 (R - 1) / R of the gradient.
    public var ringAllreduceBytes: Int

    static func ringAllreduceBytes(floats: Int, ranks: Int) -> Int { 2 * (ranks - 1) * floats * 4 / ranks }
}
