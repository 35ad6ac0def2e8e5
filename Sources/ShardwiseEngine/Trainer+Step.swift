import ShardwiseKernels
import ShardwiseLayers

#if canImport(Glibc)
import Glibc
#endif

extension Trainer {
    /// Runs one optimisation step on batch `stepInEpoch` of `epoch` (in the order of the
    /// last ``shuffle(epoch:)``) and returns the batch's loss sum.
    /// Throws for a failed cross-rank exchange under MPI, and `.cancelled` when the calling
    /// task is cancelled before every shard ran (single process): the step is then abandoned
    /// before its update, leaving parameters, optimizer and counters as they were.
    public func step(epoch: Int, stepInEpoch: Int) async throws(TrainingError) -> Double {
        let progress = Double(epoch) + Double(stepInEpoch) / Double(stepsPerEpoch)
        var hyper = configuration.optimizer.hyperparameters(progress: progress, step: optimizer.stepsTaken)
        let clipping = configuration.optimizer.clipNorm != nil
        shardsDone.value.store(0, ordering: .relaxed)
        nextChunk.value.store(localChunks.lowerBound, ordering: .relaxed)
        badChunk.value.store(Int.max, ordering: .relaxed)
        let start = monotonicSeconds()
        defer { stepSeconds += monotonicSeconds() - start }
        // BatchNorm sharing its statistics: the shards' passes up to each meeting, the sums combined between them.
        for phase in 0..<network.trainingPhases - 1 {
            await withTaskGroup(of: Void.self) { group in
                for worker in pool.workers {
                    group.addTask(executorPreference: worker) {
                        for shard in self.shards(of: worker.index) { self.computeShard(shard, stepInEpoch: stepInEpoch, phase: phase) }
                    }
                }
            }
            do { try meet(slot: network.meetingSlot(afterPhase: phase)) } catch { throw .cluster(error) }
        }
        if let exchange, let overlapped {
            // Compute, exchange and reduce at once; then agree (the parameters are gathered per layer).
            overlapped.reset(workers: pool.workers.count)
            nextChunk.value.store(0, ordering: .relaxed)
            let busy = timing.busySeconds()
            await runOverlapped(overlapped, stepInEpoch: stepInEpoch, hyper: hyper)
            if let failure = overlapped.failure { throw .cluster(failure) }
            do { try agree(exchange, gather: false) } catch { throw .cluster(error) }
            // What the step spent beyond computing and reducing: the communication left exposed.
            communicationSeconds += (monotonicSeconds() - start) - (timing.busySeconds() - busy) / Double(pool.workers.count)
        } else if let exchange {
            // Compute, combine across ranks, reduce: the workers run twice, around the exchange.
            await runWorkers(stepInEpoch: stepInEpoch, hyper: hyper, reduce: .none)
            do {
                let t0 = monotonicSeconds()
                try exchange.combine()
                shardsDone.value.store(Int.max / 2, ordering: .relaxed)  // every shard is in place
                let t1 = monotonicSeconds()
                if clipping {
                    // Each rank sums its own chunks; the others' entries stay 0 (x + 0 is exact), not last step's sums.
                    chunkSquares.update(repeating: 0, count: optimizer.chunks.count)
                    await runWorkers(stepInEpoch: nil, hyper: hyper, reduce: .sumSquares)
                    if !exchange.fast { try exchange.cluster.allreduceSum(chunkSquares, count: optimizer.chunks.count, "summing gradient norms") }
                    hyper.gradientScale = clippingFactor()
                    nextChunk.value.store(localChunks.lowerBound, ordering: .relaxed)
                }
                await runWorkers(stepInEpoch: nil, hyper: hyper, reduce: .update(shardCount: clipping ? 1 : reductionShardCount))
                let t2 = monotonicSeconds()
                try agree(exchange)
                communicationSeconds += (t1 - t0) + (monotonicSeconds() - t2)
            } catch { throw .cluster(error) }
        } else {
            abandoned.value.store(0, ordering: .relaxed)
            await runWorkers(stepInEpoch: stepInEpoch, hyper: hyper, reduce: clipping ? .sumSquares : .update(shardCount: reductionShardCount))
            // Cancelled before every shard ran: nothing was updated, the step never happened.
            if abandoned.value.load(ordering: .relaxed) != 0 { throw .cancelled(completedSteps: state.globalStep) }
            if clipping {
                // The norm of the summed gradient, then the update from the sums, scaled.
                hyper.gradientScale = clippingFactor()
                nextChunk.value.store(localChunks.lowerBound, ordering: .relaxed)
                await runWorkers(stepInEpoch: nil, hyper: hyper, reduce: .update(shardCount: 1))
            }
        }
        if !statisticsSlots.isEmpty, let sums = batchSums(shard: 0) {
            // The running statistics from every shard's forward sums (ghost statistics' slots gathered now).
            if exchange != nil {
                for (j, node) in network.statisticsNodes.enumerated() where !network.meetingNodes.contains(node) {
                    do { try meet(slot: j) } catch { throw .cluster(error) }
                }
            }
            network.updateBuffers(parameters.pointer, sums: sums)
        }
        optimizer.stepsTaken += 1
        state.globalStep += 1
        var loss = 0.0
        for s in 0..<configuration.shardsPerBatch { loss += shardLoss[s] }
        return loss
    }

    /// Gradient clipping's factor from the chunks' sums of squares (all chunks, in chunk order).
    func clippingFactor() -> Float {
        ChunkedOptimizer.clippingFactor(chunkSquares: chunkSquares, count: optimizer.chunks.count, maxNorm: configuration.optimizer.clipNorm ?? .infinity)
    }

    /// What the workers do after computing their shards.
    enum ReducePhase {
        /// Nothing (an exchange comes next).
        case none
        /// Update every local chunk from the first `shardCount` reduction buffers.
        case update(shardCount: Int)
        /// Gradient clipping's first pass: each local chunk's shard sum into the first buffer, and its sum of squares.
        case sumSquares
    }

    /// One child task per worker, each pinned to its worker.
    func runWorkers(stepInEpoch: Int?, hyper: UpdateHyperparameters, reduce: ReducePhase) async {
        await withTaskGroup(of: Void.self) { group in
            for worker in pool.workers {
                group.addTask(executorPreference: worker) {
                    self.work(worker: worker.index, stepInEpoch: stepInEpoch, hyper: hyper, reduce: reduce)
                }
            }
        }
    }

    /// The workers (computing, then reducing as segments become ready) and the communication
    /// thread driving the transfers, as children of one task group.
    func runOverlapped(_ overlapped: OverlappedExchange, stepInEpoch: Int, hyper: UpdateHyperparameters) async {
        await withTaskGroup(of: Void.self) { group in
            if let communicator {
                group.addTask(executorPreference: communicator) { _ = overlapped.drive() }
            }
            for worker in pool.workers {
                group.addTask(executorPreference: worker) {
                    self.workOverlapped(worker: worker.index, overlapped, stepInEpoch: stepInEpoch, hyper: hyper)
                }
            }
        }
    }

    /// One worker's part of an overlapped step: its shards (announcing each finished layer),
    /// then this rank's chunks, last layer first, each once its layer is ready.
    func workOverlapped(worker w: Int, _ overlapped: OverlappedExchange, stepInEpoch: Int, hyper: UpdateHyperparameters) {
        let t0 = monotonicSeconds()
        for shard in shards(of: w) {
            computeShard(shard, stepInEpoch: stepInEpoch, overlapped: overlapped)
        }
        let t1 = monotonicSeconds()
        overlapped.computing.value.add(-1, ordering: .relaxed)
        var waiting = 0.0
        let order = overlapped.reductionOrder
        while true {
            // Relaxed: the counter only hands out distinct positions; readiness is acquired below.
            let position = nextChunk.value.add(1, ordering: .relaxed).oldValue
            if position >= order.count { break }
            let chunk = order[position], segment = overlapped.segmentOfChunk[chunk]
            let t = monotonicSeconds()
            guard overlapped.waitUntilReady(segment: segment) else { break }
            waiting += monotonicSeconds() - t
            if overlapped.folds {
                exchange?.addInShardOrder(over: optimizer.chunks[chunk].range)
            } else {
                let finite = optimizer.update(
                    chunk: chunk, parameters: parameters.pointer, shardGradients: reductionPointers,
                    shardCount: reductionShardCount, hyperparameters: hyper)
                if !finite { badChunk.value.min(chunk, ordering: .relaxed) }
            }
            overlapped.reduced(segment: segment)
        }
        let t2 = monotonicSeconds()
        timing.add(worker: w, compute: t1 - t0, waiting: waiting, reduction: t2 - t1 - waiting)
    }

    /// After the update: every rank gets the new parameters and the shard losses, and the
    /// ranks agree on whether a gradient was not finite and whether to stop (a rank's task
    /// was cancelled), so every rank takes the same decision after the step.
    func agree(_ exchange: RankExchange, gather: Bool = true) throws(ClusterError) {
        if gather { try exchange.gatherParameters(parameters.pointer) }
        // Other ranks' entries are 0, and x + 0 is exact: every rank ends with the same losses.
        for s in 0..<configuration.shardsPerBatch where !localShards.contains(s) { shardLoss[s] = 0 }
        try exchange.cluster.allreduceSum(shardLoss, count: configuration.shardsPerBatch, "summing losses")
        var flags = (badChunk.value.load(ordering: .relaxed), Task.isCancelled ? -1 : 0)
        try withUnsafeMutableBytes(of: &flags) { (raw) throws(ClusterError) in
            try exchange.cluster.allreduceMin(raw.baseAddress!.assumingMemoryBound(to: Int.self), count: 2, "agreeing on the step")
        }
        badChunk.value.store(flags.0, ordering: .relaxed)
        agreedStop = flags.1 != 0
    }

    /// One worker's part of a step: computing its shards (unless `stepInEpoch` is nil),
    /// then `reduce`'s part of the reduction. Runs on that worker's pinned thread.
    func work(worker w: Int, stepInEpoch: Int?, hyper: UpdateHyperparameters, reduce: ReducePhase) {
        let t0 = monotonicSeconds()
        let mine = stepInEpoch == nil ? 0..<0 : shards(of: w)
        for shard in mine {
            // Single process: a cancelled step is abandoned between shards (a bounded wait for
            // Ctrl-C). Under MPI the ranks decide together after the step (see `agree`).
            if exchange == nil && Task.isCancelled {
                abandoned.value.store(1, ordering: .relaxed)
                break
            }
            computeShard(shard, stepInEpoch: stepInEpoch!)
        }
        let t1 = monotonicSeconds()
        if case .none = reduce {
            timing.add(worker: w, compute: t1 - t0, waiting: 0, reduction: 0)
            return
        }
        // Releasing: publishes this worker's gradient buffers to the workers that read
        // them in the reduction. Acquiring loads below pair with it.
        shardsDone.value.add(mine.count, ordering: .releasing)
        let total = localShards.count
        var spins = 0
        while shardsDone.value.load(ordering: .acquiring) < total {
            // Spin briefly (shards usually finish together), then yield the core:
            // with more workers than cores, a spinning worker would starve the others.
            spins += 1
            if spins > 1_000 { sched_yield() }
        }
        let t2 = monotonicSeconds()
        // Set only before a worker's releasing add above, so every worker reads the same value here.
        if abandoned.value.load(ordering: .relaxed) != 0 { return }
        // Relaxed: the counter only hands out distinct chunk indices; the data each
        // chunk reads was published by the barrier above.
        while true {
            let chunk = nextChunk.value.add(1, ordering: .relaxed).oldValue
            if chunk >= localChunks.upperBound { break }
            guard case .update(let shardCount) = reduce else {
                chunkSquares[chunk] = optimizer.sumForClipping(chunk: chunk, shardGradients: reductionPointers, shardCount: reductionShardCount)
                // A NaN or infinite sum shows in its square; the update's own check follows.
                if !chunkSquares[chunk].isFinite { badChunk.value.min(chunk, ordering: .relaxed) }
                continue
            }
            let finite = optimizer.update(
                chunk: chunk, parameters: parameters.pointer, shardGradients: reductionPointers,
                shardCount: shardCount, hyperparameters: hyper)
            // Relaxed: read after the task group completes, which orders it.
            if !finite { badChunk.value.min(chunk, ordering: .relaxed) }
        }
        let t3 = monotonicSeconds()
        timing.add(worker: w, compute: t1 - t0, waiting: t2 - t1, reduction: t3 - t2)
    }

    /// Between two phases of the shards' passes: slot `slot`'s total, the shards' sums added in
    /// shard order (under MPI after every rank has every shard's row: the other ranks' rows are
    /// zeroed, then summed across ranks, and x + 0 is exact).
    func meet(slot: Int) throws(ClusterError) {
        let sums = batchSums(shard: 0)!
        if let exchange {
            let count = sums.counts[slot], base = statisticsSlots[slot]
            for s in 0..<configuration.shardsPerBatch where !localShards.contains(s) { (base + s * count).update(repeating: 0, count: count) }
            try exchange.cluster.allreduceSum(base, count: configuration.shardsPerBatch * count, "combining BatchNorm statistics")
        }
        sums.addShards(slot)
    }

    /// One shard's part of the step into its own gradient buffer: the whole forward and backward
    /// pass, or (BatchNorm sharing statistics) phase `phase` of it; returns its loss sum (0 in
    /// the phases before the loss) and writes it to `shardLoss`. `phase` nil: the last phase.
    @discardableResult
    func computeShard(_ shard: Int, stepInEpoch: Int, phase: Int? = nil, overlapped: OverlappedExchange? = nil) -> Double {
        let n = configuration.shardSize
        let ws = workspaces[shard - localShards.lowerBound]
        let phase = phase ?? network.trainingPhases - 1
        if phase == 0 {
            let first = stepInEpoch * configuration.batchSize + shard * n
            // The shard's rows are converted from the stored data (a mapping or memory) here, in the shard's own task.
            for r in 0..<n { ws.load(trainingData, sample: Int(order[first + r]), row: r) }
        }
        let random = RandomContext(seed: configuration.seed, step: UInt32(truncatingIfNeeded: state.globalStep), firstPosition: shard * n)
        let local = shard - localShards.lowerBound
        let loss = network.trainingPhase(
            phase, parameters: parameters.pointer, workspace: ws, rows: n, random: random, lossDivisor: configuration.batchSize,
            gradient: shardGradients[shard].pointer, sums: batchSums(shard: shard)
        ) { _ in
            guard let overlapped else { return }
            let (segment, foldNow) = overlapped.finishedSegment(localShard: local)
            if foldNow {
                // A chain's rank 0: this layer's partial sum, in shard order, into its first shard's buffer.
                exchange?.addInShardOrder(over: overlapped.segments[segment])
                overlapped.reduced(segment: segment, count: overlapped.localChunksPerSegment[segment])
            }
        }
        if phase == network.meetingNodes.count { shardLoss[shard] = loss }
        return loss
    }

    /// The reduction phase alone (sum of the shard gradients already in place, update,
    /// max-norm), by all workers: for measuring it against the machine's bandwidth.
    /// Changes the weights like a step would; use on a trainer made for measuring.
    package func reduceOnly(hyperparameters: UpdateHyperparameters) async {
        shardsDone.value.store(Int.max / 2, ordering: .relaxed)
        nextChunk.value.store(localChunks.lowerBound, ordering: .relaxed)
        await runWorkers(stepInEpoch: nil, hyper: hyperparameters, reduce: .update(shardCount: reductionShardCount))
    }

    /// Everything of a step after computing the shards (exchange or all-reduce, update,
    /// allgather, agreement), on whatever the gradient buffers hold: for measuring the
    /// cross-rank step. Changes the weights like a step would.
    package func crossRankOnly(hyperparameters: UpdateHyperparameters) async throws(ClusterError) {
        guard let exchange else { return }
        nextChunk.value.store(localChunks.lowerBound, ordering: .relaxed)
        try exchange.combine()
        shardsDone.value.store(Int.max / 2, ordering: .relaxed)
        await runWorkers(stepInEpoch: nil, hyper: hyperparameters, reduce: .update(shardCount: reductionShardCount))
        try agree(exchange)
    }

    /// Bytes the reduction reads and writes once: every shard gradient, and the
    /// parameters and velocity read and written.
    package var reductionBytes: Int {
        (configuration.shardsPerBatch + 4) * network.layout.parameterCount * MemoryLayout<Float>.stride
    }
}

/// Seconds per worker spent computing shards, waiting at the barrier and reducing.
/// Each worker writes only its own cache line; read after steps complete.
public final class StepTiming: @unchecked Sendable {
    let slots: UnsafeMutablePointer<Double>
    /// The number of workers timed.
    public let workers: Int
    static let stride = 8  // 8 doubles = one 64-byte line per worker

    init(workers: Int) {
        self.workers = workers
        slots = .allocate(capacity: workers * Self.stride)
        slots.initialize(repeating: 0, count: workers * Self.stride)
    }

    deinit { slots.deallocate() }

    func add(worker: Int, compute: Double, waiting: Double, reduction: Double) {
        let s = slots + worker * Self.stride
        s[0] += compute
        s[1] += waiting
        s[2] += reduction
    }

    /// Seconds computing and reducing, summed over workers since the last reset.
    func busySeconds() -> Double {
        var total = 0.0
        for i in 0..<workers { total += slots[i * Self.stride] + slots[i * Self.stride + 2] }
        return total
    }

    /// Mean over workers of seconds computing, waiting and reducing since the last reset, divided by `steps`.
    public func meanSplit(steps: Int) -> StepSplit {
        var c = 0.0, w = 0.0, r = 0.0
        for i in 0..<workers {
            c += slots[i * Self.stride]
            w += slots[i * Self.stride + 1]
            r += slots[i * Self.stride + 2]
        }
        let n = Double(workers * max(steps, 1))
        return StepSplit(compute: c / n, waiting: w / n, reduction: r / n)
    }

    /// Starts the sums again from zero.
    public func reset() { slots.update(repeating: 0, count: workers * Self.stride) }
}
