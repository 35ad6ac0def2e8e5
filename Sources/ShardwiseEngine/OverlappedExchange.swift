import CShardwiseMPI
import ShardwiseKernels
import ShardwiseLayers

#if canImport(Glibc)
import Glibc
#endif

/// The cross-rank exchange overlapped with the backward pass: the same transfers and the
/// same sums as ``RankExchange``, started as soon as their data exists.
///
/// The parameters are cut into segments, one per layer with parameters, in backward order
/// (last layer first). A step then runs, with no barrier between its phases:
///  - each local shard's backward pass announces every finished segment; the communication
///    thread (``WorkerPool/communicationWorker()``) sends that segment's slices to the ranks
///    that own them at once (scatter), while the earlier layers' backward goes on;
///  - a segment is *ready* on this rank when every local shard finished it and the other
///    ranks' data for it arrived: their slices (scatter), the partial sum from the rank
///    before (chain), or its all-reduce (fast);
///  - the workers, done with their shards, reduce this rank's chunks last segment first,
///    each chunk as soon as its segment is ready: shard order as always, so the same bits.
///    A chain's ranks before the last add their shards onto the partial sum instead (rank 0
///    as soon as its shards finished the layer, in the backward pass), then pass it on;
///  - once this rank has updated its chunks of a segment, it sends them on (the allgather
///    per segment; a chain passes the parameters back along the ranks), and receives the rest.
/// Only the communication thread calls MPI during a step; workers and it meet through
/// atomic counters (acquire/release), never a lock.
final class OverlappedExchange: @unchecked Sendable {
    enum Kind { case gradientSend, gradientReceive, parameterSend, parameterReceive, allreduce }

    let exchange: RankExchange
    let cluster: Cluster
    let fast: Bool
    /// Where each layer with parameters sits in the flat vector, in backward order: segments[0] is the last layer.
    let segments: [Range<Int>]
    let localShards: Range<Int>
    /// True when this rank's reduction only adds its shards onto the partial sums (a chain's
    /// ranks before the last): the workers fold instead of updating.
    let folds: Bool
    /// True on a chain's rank 0: the last local shard to finish a layer adds the layer's shards.
    let foldsEarly: Bool
    /// Per segment: local shards that finished it this step.
    let segmentFinished: [PaddedCounter]
    /// Chunks this rank reduces, in the order the workers claim them (last segment first).
    let reductionOrder: [Int]
    /// The segment of each chunk (by chunk index).
    let segmentOfChunk: [Int]
    /// How many of this rank's chunks lie in each segment.
    let localChunksPerSegment: [Int]

    /// Every transfer of a step; slot i of MPI's request table is transfer i (all-reduces after them).
    let transfers: [sw_mpi_transfer]
    let kinds: [Kind]
    let slotSegment: [Int]
    /// gradientSends[local shard][segment]: the transfers that send it.
    let gradientSends: [[Range<Int>]]
    /// Per segment: what this rank sends once it reduced its chunks of the segment (its updated
    /// parameters; in a chain, the partial sum or, from the last rank, the parameters), and
    /// what it sends once the segment's parameters arrived (a chain passing them on).
    let afterReduction: [Range<Int>]
    let afterParameters: [Range<Int>]
    let pattern: RankExchange.Pattern
    /// Per segment: the receives of gradient slices (or its one all-reduce), then of parameter slices.
    let receivesPerSegment: [Int]
    let parameterReceivesPerSegment: [Int]
    let slotCount: Int

    // Shared with the workers (each counter on its own cache line).
    /// Segments finished by each local shard this step.
    let shardProgress: [PaddedCounter]
    /// 1 when the segment may be reduced.
    let segmentReady: [PaddedCounter]
    /// This rank's chunks of the segment reduced so far.
    let segmentReduced: [PaddedCounter]
    /// Workers still computing their shards this step.
    let computing = PaddedCounter()
    /// Nonzero when the communication failed: waiting workers give up.
    let failed = PaddedCounter()
    /// Set by the communication thread when it fails (read after the step's task group).
    var failure: ClusterError?

    // The communication thread's own state, allocated once.
    let pending: UnsafeMutablePointer<Int>  // per segment: gradient receives (or the all-reduce) not yet complete; then parameter receives
    let sent: UnsafeMutablePointer<Int>  // per local shard: segments sent
    let flags: UnsafeMutablePointer<UInt8>  // per segment: bit 0 ready published, 1 sent after reduction, 2 all-reduce posted, 3 sent after parameters
    let completed: UnsafeMutablePointer<Int32>
    private let error = UnsafeMutablePointer<CChar>.allocate(capacity: 512)

    /// Microseconds the communication thread naps when nothing moved (SHARDWISE_POLL_MICROSECONDS).
    let napMicroseconds: Int

    init(
        exchange: RankExchange, network: Network, chunks: [ChunkedOptimizer.Chunk], shards: Int, localShards: Range<Int>,
        shardGradients: [FloatBuffer], parameters: UnsafeMutablePointer<Float>
    ) throws(ClusterError) {
        self.localShards = localShards
        let cluster = exchange.cluster, fast = exchange.fast
        let ranks = cluster.size, me = cluster.rank
        let segments = network.parameterSegments
        self.segments = segments
        let segmentOfChunk = chunks.map { chunk in segments.firstIndex { $0.contains(chunk.range.lowerBound) }! }
        self.segmentOfChunk = segmentOfChunk
        // In a chain every rank adds its shards onto every chunk's partial sum (the last rank's
        // addition is the update); otherwise a rank reduces its own chunks.
        // Rank 0 of a chain adds its shards as soon as they all finished a layer (no partial sum to
        // wait for), in the backward pass of the last of them: its workers have no reduction phase.
        let reduced = exchange.pattern == .chain ? 0..<chunks.count : exchange.localChunks
        localChunksPerSegment = segments.indices.map { g in reduced.filter { segmentOfChunk[$0] == g }.count }
        folds = exchange.pattern == .chain && me < ranks - 1
        foldsEarly = folds && me == 0
        reductionOrder = foldsEarly ? [] : Array(reduced.reversed())
        let owned = (0..<ranks).map { r in
            (Int(exchange.rankOffsets[r])..<Int(exchange.rankOffsets[r] + exchange.rankCounts[r]))
        }
        func slice(_ g: Int, _ r: Int) -> Range<Int> { segments[g].clamped(to: owned[r]) }
        var transfers: [sw_mpi_transfer] = [], kinds: [Kind] = [], slotSegment: [Int] = []
        var receives = [Int](repeating: 0, count: segments.count), parameterReceives = receives
        func add(_ kind: Kind, _ g: Int, peer: Int, send: Bool, tag: Int, buffer: UnsafeMutablePointer<Float>, range: Range<Int>) {
            transfers.append(sw_mpi_transfer(peer: Int32(peer), send: send ? 1 : 0, tag: Int32(tag), buffer: buffer + range.lowerBound, count: range.count))
            kinds.append(kind)
            slotSegment.append(g)
            if kind == .gradientReceive { receives[g] += 1 }
            if kind == .parameterReceive { parameterReceives[g] += 1 }
        }
        // Tags: a gradient slice is (shard, segment); a parameter slice (segment), above every gradient tag.
        let parameterTag = shards * segments.count
        var gradientSends: [[Range<Int>]] = [], afterReduction: [Range<Int>] = [], afterParameters: [Range<Int>] = []
        func group(_ body: () -> Void) -> Range<Int> {
            let first = transfers.count
            body()
            return first..<transfers.count
        }
        if exchange.pattern == .chain {
            // Partial sums down the ranks (tag: segment), parameters back from the last rank to rank 0,
            // then on to 1, 2, ... (tag: above every segment).
            let partial = exchange.sumSources[0], last = ranks - 1
            for g in segments.indices where me > 0 {
                add(.gradientReceive, g, peer: me - 1, send: false, tag: g, buffer: partial, range: segments[g])
            }
            for g in segments.indices where me != last {
                add(.parameterReceive, g, peer: me == 0 ? last : me - 1, send: false, tag: parameterTag + g, buffer: parameters, range: segments[g])
            }
            for g in segments.indices {
                afterReduction.append(group {
                    if me < last { add(.gradientSend, g, peer: me + 1, send: true, tag: g, buffer: partial, range: segments[g]) }
                    if me == last { add(.parameterSend, g, peer: 0, send: true, tag: parameterTag + g, buffer: parameters, range: segments[g]) }
                })
                afterParameters.append(group {
                    if me < last - 1 { add(.parameterSend, g, peer: me + 1, send: true, tag: parameterTag + g, buffer: parameters, range: segments[g]) }
                })
            }
        } else if !fast {
            for s in localShards {
                gradientSends.append(segments.indices.map { g in
                    let first = transfers.count
                    for q in 0..<ranks where q != me && !slice(g, q).isEmpty {
                        add(.gradientSend, g, peer: q, send: true, tag: s * segments.count + g, buffer: shardGradients[s].pointer, range: slice(g, q))
                    }
                    return first..<transfers.count
                })
            }
            for g in segments.indices {
                afterReduction.append(group {
                    for q in 0..<ranks where q != me && !slice(g, me).isEmpty {
                        add(.parameterSend, g, peer: q, send: true, tag: parameterTag + g, buffer: parameters, range: slice(g, me))
                    }
                })
            }
            for g in segments.indices where !slice(g, me).isEmpty {
                for q in 0..<ranks where q != me {
                    for s in cluster.block(of: shards, rank: q) {
                        add(.gradientReceive, g, peer: q, send: false, tag: s * segments.count + g, buffer: shardGradients[s].pointer, range: slice(g, me))
                    }
                }
            }
            for g in segments.indices {
                for q in 0..<ranks where q != me && !slice(g, q).isEmpty {
                    add(.parameterReceive, g, peer: q, send: false, tag: parameterTag + g, buffer: parameters, range: slice(g, q))
                }
            }
        }
        self.exchange = exchange
        self.cluster = cluster
        self.fast = fast
        self.transfers = transfers
        self.kinds = kinds + (fast ? segments.map { _ in .allreduce } : [])
        self.slotSegment = slotSegment + (fast ? Array(segments.indices) : [])
        self.gradientSends = gradientSends
        self.afterReduction = afterReduction
        self.afterParameters = afterParameters.isEmpty ? segments.map { _ in 0..<0 } : afterParameters
        self.pattern = exchange.pattern
        receivesPerSegment = fast ? segments.map { _ in 1 } : receives
        parameterReceivesPerSegment = parameterReceives
        slotCount = self.kinds.count
        shardProgress = localShards.map { _ in PaddedCounter() }
        segmentReady = segments.map { _ in PaddedCounter() }
        segmentReduced = segments.map { _ in PaddedCounter() }
        segmentFinished = segments.map { _ in PaddedCounter() }
        pending = .allocate(capacity: 2 * segments.count)
        sent = .allocate(capacity: localShards.count)
        flags = .allocate(capacity: segments.count)
        completed = .allocate(capacity: max(1, slotCount))
        error.initialize(repeating: 0, count: 512)
        napMicroseconds = Int(getenv("SHARDWISE_POLL_MICROSECONDS").map { String(cString: $0) } ?? "") ?? 1000
        try cluster.check(sw_mpi_reserve_requests(Int32(max(1, slotCount)), error, 512), "preparing the overlapped exchange")
    }

    deinit {
        pending.deallocate()
        sent.deallocate()
        flags.deallocate()
        completed.deallocate()
        error.deallocate()
    }

    /// Before a step's tasks start (by the training loop, with no task of the step running).
    func reset(workers: Int) {
        for c in shardProgress { c.value.store(0, ordering: .relaxed) }
        for c in segmentReady { c.value.store(0, ordering: .relaxed) }
        for c in segmentReduced { c.value.store(0, ordering: .relaxed) }
        for c in segmentFinished { c.value.store(0, ordering: .relaxed) }
        failed.value.store(0, ordering: .relaxed)
        computing.value.store(workers, ordering: .relaxed)
        failure = nil
    }

    /// A worker: local shard `local` finished the next segment of its backward pass. Returns
    /// true when the caller must add the segment's shards now (``foldsEarly``, the last local
    /// shard to finish it), then call ``reduced(segment:count:)`` with the segment's chunk count.
    @inline(__always)
    func finishedSegment(localShard local: Int) -> (segment: Int, foldNow: Bool) {
        // Releasing: publishes the segment's gradient to the communication thread.
        let g = shardProgress[local].value.add(1, ordering: .releasing).oldValue
        guard foldsEarly else { return (g, false) }
        // Acquiring and releasing: the last to finish sees every other shard's gradient of the segment.
        let before = segmentFinished[g].value.add(1, ordering: .acquiringAndReleasing).oldValue
        return (g, before == localShards.count - 1)
    }

    /// A worker: waits until chunk's segment may be reduced; false when the exchange failed.
    func waitUntilReady(segment g: Int) -> Bool {
        var spins = 0
        // Acquiring: pairs with the communication thread's releasing store, which follows the
        // local shards' releasing progress and the arrival of the other ranks' slices.
        while segmentReady[g].value.load(ordering: .acquiring) == 0 {
            if failed.value.load(ordering: .relaxed) != 0 { return false }
            spins += 1
            // The communication thread may share this core: leave it the core soon.
            if spins > 200 { usleep(20) } else if spins > 50 { sched_yield() }
        }
        return true
    }

    /// A worker: one more of this rank's chunks of segment `g` is updated.
    @inline(__always)
    func reduced(segment g: Int, count: Int = 1) {
        segmentReduced[g].value.add(count, ordering: .releasing)
    }

    /// The communication thread's part of a step: posts, tests and publishes until every
    /// transfer of the step completed. Returns false (with `failure` set) on an MPI error or
    /// when nothing moved for the cluster's timeout.
    func drive() -> Bool {
        let G = segments.count
        var outstanding = 0
        for g in 0..<G { (pending[g], pending[G + g], flags[g]) = (receivesPerSegment[g], parameterReceivesPerSegment[g], 0) }
        for l in localShards.indices { sent[l - localShards.lowerBound] = 0 }
        func fail(_ status: Int32, _ doing: String) -> Bool {
            do { try cluster.check(status, doing) } catch { failure = error }
            if failure == nil { failure = ClusterError(message: "\(doing): failed") }
            failed.value.store(1, ordering: .releasing)
            return false
        }
        func post(_ slots: Range<Int>) -> Int32 {
            for i in slots {
                let status = transfers.withUnsafeBufferPointer { sw_mpi_post($0.baseAddress! + i, Int32(i), error, 512) }
                if status != SW_MPI_OK { return status }
                outstanding += 1
            }
            return Int32(SW_MPI_OK)
        }
        // Receives first, so the other ranks' sends find their buffers.
        for i in transfers.indices where kinds[i] == .gradientReceive || kinds[i] == .parameterReceive {
            let status = post(i..<i + 1)
            if status != SW_MPI_OK { return fail(status, "posting receives") }
        }
        var lastProgress = monotonicSeconds(), idle = 0
        while true {
            var moved = false
            // Segments every local shard finished (progress is monotonic).
            var allDone = Int.max
            for l in 0..<localShards.count {
                let done = shardProgress[l].value.load(ordering: .acquiring)
                allDone = min(allDone, done)
                if pattern == .scatter {
                    while sent[l] < done {
                        let status = post(gradientSends[l][sent[l]])
                        if status != SW_MPI_OK { return fail(status, "sending shard gradients") }
                        sent[l] += 1
                        moved = true
                    }
                }
            }
            if fast {
                // All-reduces in segment order on every rank (collectives must match).
                for g in 0..<min(allDone, G) where flags[g] & 4 == 0 {
                    let range = segments[g]
                    exchange.addInShardOrder(over: range)
                    let status = sw_mpi_post_allreduce(exchange.sumSources[0] + range.lowerBound, range.count, Int32(transfers.count + g), error, 512)
                    if status != SW_MPI_OK { return fail(status, "posting an all-reduce") }
                    outstanding += 1
                    flags[g] |= 4
                    moved = true
                }
            }
            var count: Int32 = 0
            let status = sw_mpi_test(Int32(slotCount), completed, &count, error, 512)
            if status != SW_MPI_OK { return fail(status, "exchanging shard gradients") }
            for i in 0..<Int(count) {
                let slot = Int(completed[i])
                outstanding -= 1
                switch kinds[slot] {
                case .gradientReceive, .allreduce: pending[slotSegment[slot]] -= 1
                case .parameterReceive: pending[G + slotSegment[slot]] -= 1
                case .gradientSend, .parameterSend: break
                }
                moved = true
            }
            var finished = true
            for g in 0..<G {
                if flags[g] & 1 == 0 {
                    // Ready: every local shard finished it and the other ranks' slices arrived.
                    if g < allDone && pending[g] == 0 {
                        segmentReady[g].value.store(1, ordering: .releasing)
                        flags[g] |= 1
                        moved = true
                    }
                }
                if !fast, flags[g] & 3 == 1, segmentReduced[g].value.load(ordering: .acquiring) == localChunksPerSegment[g] {
                    let status = post(afterReduction[g])
                    if status != SW_MPI_OK { return fail(status, pattern == .chain ? "passing partial sums on" : "sending updated parameters") }
                    flags[g] |= 2
                    moved = true
                }
                if !fast, flags[g] & 8 == 0, pending[G + g] == 0 {
                    let status = post(afterParameters[g])
                    if status != SW_MPI_OK { return fail(status, "passing parameters on") }
                    flags[g] |= 8
                    moved = true
                }
                let done = fast ? flags[g] & 1 != 0 : flags[g] & 3 == 3 && flags[g] & 8 != 0 && pending[G + g] == 0
                if !done { finished = false }
            }
            // Counted after the loop above, which may have posted sends.
            if finished && outstanding == 0 { return true }
            let now = monotonicSeconds()
            if moved {
                lastProgress = now
                idle = 0
                continue
            }
            if now - lastProgress > cluster.timeout {
                let text = "no answer from the other ranks within \(Int(cluster.timeout)) s (\(outstanding) transfers pending)"
                failure = ClusterError(rank: cluster.rank, size: cluster.size, host: cluster.host, doing: "exchanging shard gradients", detail: text, timedOut: true)
                failed.value.store(1, ordering: .releasing)
                return false
            }
            idle += 1
            guard idle > 20 else { continue }
            // While the workers compute, poll seldom: each poll takes the core from a worker (on a
            // host with as many workers as cores), and a poll moves a socket buffer's worth of data.
            // Once they wait for segments, poll at once, yielding the core to them in between.
            if computing.value.load(ordering: .relaxed) > 0 { usleep(UInt32(napMicroseconds)) } else { sched_yield() }
        }
    }
}
