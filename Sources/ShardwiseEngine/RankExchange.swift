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
/// bit-identical for any rank count.
///
/// That scatter sends every local shard's slice: with k shards a rank, k times what a ring
/// all-reduce sends. With more shards than ranks the ordered mode runs as a **chain** instead,
/// which sends one partial sum a rank whatever k is, and adds in the same order:
///  1. rank 0 adds its shards, `(g₀ + g₁) + …`, and sends that partial sum to rank 1;
///  2. rank r adds its shards onto the partial sum it received, in shard order, and passes it on;
///  3. the last rank's reduction starts from the partial sum and adds its own shards (the fused
///     update), so every element is the single-process left fold, and it updates all parameters;
///  4. the new parameters go back along the ranks (last, 0, 1, …), each forwarding them.
/// The last rank then holds the whole momentum buffer; a checkpoint gathers it from there.
///
/// In fast mode a rank instead adds its own shards,
/// `MPI_Allreduce` adds the ranks' sums (in an order MPI chooses), and every rank updates
/// all parameters: less data moved, not reproducible across rank counts.
final class RankExchange: @unchecked Sendable {
    /// How the ranks combine their gradients.
    enum Pattern: String { case scatter, chain, allreduce }

    let cluster: Cluster
    let fast: Bool
    let pattern: Pattern
    /// What this rank adds before or while reducing, in shard order: the buffer the sum goes
    /// into (fast and a chain's rank 0: its first shard's; a chain's other ranks: the buffer of
    /// the shard before their first, which receives the partial sum), then its other shards. The fused
    /// update reads the same list on a chain's last rank (fast: its first entry alone).
    let sumSources: UnsafeMutablePointer<UnsafeMutablePointer<Float>>
    let sumSourceCount: Int
    /// Floats in each gradient buffer.
    let gradientCount: Int
    /// The chunks this rank updates.
    let localChunks: Range<Int>
    /// This rank's transfers of one step, and each rank's parameter range (allgather).
    let transfers: UnsafeMutablePointer<sw_mpi_transfer>
    let transferCount: Int
    let rankCounts: UnsafeMutablePointer<Int32>
    let rankOffsets: UnsafeMutablePointer<Int32>

    /// `largestLayer`: the most parameters one layer holds (a chain passes each layer's partial
    /// sum along every rank before the next rank can finish it).
    init(
        cluster: Cluster, fast: Bool, preferred: ExchangePattern, overlap: Bool, shards: Int, chunks: [ChunkedOptimizer.Chunk],
        largestLayer: Int, shardGradients: [FloatBuffer]
    ) {
        self.cluster = cluster
        self.fast = fast
        let ranks = cluster.size, me = cluster.rank
        let pattern: Pattern
        switch preferred {
        case _ where fast: pattern = .allreduce
        case .scatter: pattern = .scatter
        case .chain: pattern = .chain
        case .auto:
            let n = chunks.last.map { $0.range.upperBound } ?? 0
            pattern = Self.faster(
                ranks: ranks, shardsOnBusiestRank: Cluster.block(0, of: shards, parts: ranks).count,
                largestLayerFraction: Double(largestLayer) / Double(max(n, 1)), overlap: overlap)
        }
        self.pattern = pattern
        let local = cluster.block(of: shards)
        let sumBase = pattern == .chain && me > 0 ? local.lowerBound - 1 : local.lowerBound
        sumSourceCount = local.upperBound - sumBase
        sumSources = .allocate(capacity: sumSourceCount)
        for (i, s) in (sumBase..<local.upperBound).enumerated() { sumSources[i] = shardGradients[s].pointer }
        gradientCount = shardGradients[0].count
        let chunkBlocks = (0..<ranks).map { r in
            switch pattern {
            case .allreduce: 0..<chunks.count
            case .chain: r == ranks - 1 ? 0..<chunks.count : 0..<0
            case .scatter: Cluster.block(r, of: chunks.count, parts: ranks)
            }
        }
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
        for q in 0..<ranks where q != me && pattern == .scatter {
            let theirs = elementRanges[q], mine = elementRanges[me]
            for s in cluster.block(of: shards) where !theirs.isEmpty {
                plan.append(sw_mpi_transfer(peer: Int32(q), send: 1, tag: Int32(s), buffer: shardGradients[s].pointer + theirs.lowerBound, count: theirs.count))
            }
            for s in cluster.block(of: shards, rank: q) where !mine.isEmpty {
                plan.append(sw_mpi_transfer(peer: Int32(q), send: 0, tag: Int32(s), buffer: shardGradients[s].pointer + mine.lowerBound, count: mine.count))
            }
        }
        if pattern == .chain {
            // The partial sum of every chunk, received from the rank before and sent to the rank after.
            let whole = elementRanges[ranks - 1]
            let partial = sumSources[0] + whole.lowerBound
            if me > 0 { plan.append(sw_mpi_transfer(peer: Int32(me - 1), send: 0, tag: 0, buffer: partial, count: whole.count)) }
            if me < ranks - 1 { plan.append(sw_mpi_transfer(peer: Int32(me + 1), send: 1, tag: 0, buffer: partial, count: whole.count)) }
        }
        transferCount = plan.count
        transfers = .allocate(capacity: max(1, plan.count))
        transfers.initialize(from: plan, count: plan.count)
    }

    /// The pattern whose exchange should take less time on full-duplex links, each rank's link
    /// the bottleneck, in units of one gradient's transfer time. A scatter sends (k + 1)(R - 1)/R
    /// gradients out of each rank while as much comes in, gradients then parameters. A chain
    /// sends one partial sum down the ranks and the parameters back: without overlap one after
    /// the other, hop by hop, 2(R - 1); overlapped, the two directions at once and pipelined by
    /// layer, about 1 plus a largest layer per hop each way.
    package static func faster(ranks: Int, shardsOnBusiestRank k: Int, largestLayerFraction: Double, overlap: Bool) -> Pattern {
        let r = Double(ranks)
        let scatter = Double(k + 1) * (r - 1) / r
        let chain = overlap ? 1 + 2 * (r - 1) * largestLayerFraction : 2 * (r - 1)
        return chain < scatter ? .chain : .scatter
    }

    /// What this rank sends and receives in one step: its shards' gradient slices and its
    /// part of the parameters (as if sent to each other rank directly; the allgather's algorithm
    /// is MPI's); in fast mode, what a ring all-reduce of the gradient moves.
    var traffic: Traffic {
        let ranks = cluster.size
        let total = (0..<ranks).reduce(0) { $0 + Int(rankCounts[$1]) }
        let ring = Traffic.ringAllreduceBytes(floats: fast ? Int(rankCounts[0]) : total, ranks: ranks)
        if fast { return Traffic(pattern: pattern.rawValue, sentBytes: ring, receivedBytes: ring, ringAllreduceBytes: ring) }
        if pattern == .chain {
            // The partial sum in and out, and the parameters passed along (last, 0, 1, ...).
            let whole = Int(rankCounts[ranks - 1]) * 4, me = cluster.rank
            let sent = (me < ranks - 1 ? whole : 0) + (me == ranks - 1 || me < ranks - 2 ? whole : 0)
            let received = (me > 0 ? whole : 0) + (me < ranks - 1 ? whole : 0)
            return Traffic(pattern: pattern.rawValue, sentBytes: sent, receivedBytes: received, ringAllreduceBytes: ring)
        }
        var sent = 0, received = 0
        for t in UnsafeBufferPointer(start: transfers, count: transferCount) {
            if t.send != 0 { sent += t.count * 4 } else { received += t.count * 4 }
        }
        let mine = Int(rankCounts[cluster.rank])
        sent += mine * (ranks - 1) * 4
        received += (total - mine) * 4
        return Traffic(pattern: pattern.rawValue, sentBytes: sent, receivedBytes: received, ringAllreduceBytes: ring)
    }

    deinit {
        transfers.deallocate()
        sumSources.deallocate()
        rankCounts.deallocate()
        rankOffsets.deallocate()
    }

    /// Between computing and reducing: gives this rank what its chunks need from the other
    /// ranks' shards (ordered), or the sum over all ranks in its first shard's buffer (fast).
    func combine() throws(ClusterError) {
        if fast {
            // This rank's shards, added in shard order into its first shard's buffer.
            addInShardOrder(over: 0..<gradientCount)
            try cluster.allreduceSum(sumSources[0], count: gradientCount)
        } else if pattern == .chain {
            // Receive the partial sum, add this rank's shards onto it in shard order, pass it on;
            // the last rank's reduction adds its own (the fused update reads `sumSources`).
            let me = cluster.rank, last = cluster.size - 1
            if me > 0 { try cluster.exchange(transfers, count: 1) }
            if me < last {
                addInShardOrder(over: 0..<gradientCount)
                try cluster.exchange(transfers + (me > 0 ? 1 : 0), count: 1)
            }
        } else {
            try cluster.exchange(transfers, count: transferCount)
        }
    }

    /// `sumSources[0] += sumSources[1]`, then `+= sumSources[2]`, ... over `range`: this rank's
    /// shards added onto the sum in shard order, `((p + gₖ) + gₖ₊₁) + …` for every element.
    func addInShardOrder(over range: Range<Int>) {
        for s in 1..<sumSourceCount {
            Elementwise.add(count: range.count, x: sumSources[s] + range.lowerBound, y: sumSources[0] + range.lowerBound)
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

/// How the ranks of an ordered (bit-reproducible) job combine their gradients: `auto` picks the
/// one that moves fewer bytes through the busiest rank (see ``Traffic``); both give the same weights.
public enum ExchangePattern: String, Sendable, CaseIterable {
    /// A scatter when each rank has one shard, a chain when ranks have several (in the main).
    case auto
    /// Every shard's slice goes to the rank that updates it: a ring all-reduce's bytes with one shard a rank.
    case scatter
    /// One partial sum a rank, passed along the ranks in shard order: the bytes do not grow with the shards.
    case chain
}

/// Bytes one rank moves per step, beside a ring all-reduce of the same gradient.
public struct Traffic: Codable, Sendable, Equatable {
    /// How the ranks combined their gradients: "scatter" (each shard's slice to the rank that
    /// owns it), "chain" (one partial sum passed along the ranks) or "allreduce" (fast mode).
    public var pattern: String
    public var sentBytes: Int
    public var receivedBytes: Int
    /// What each rank sends (and receives) in a ring all-reduce: 2 (R - 1) / R of the gradient.
    public var ringAllreduceBytes: Int

    static func ringAllreduceBytes(floats: Int, ranks: Int) -> Int { 2 * (ranks - 1) * floats * 4 / ranks }
}
