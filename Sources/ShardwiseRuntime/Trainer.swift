import CShardwiseMPI
import ShardwiseData
import ShardwiseKernels
import ShardwiseLayers
import ShardwiseTopology
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The data-parallel training engine: the model's state and one optimisation step
/// run by the pinned workers of a `WorkerPool`.
///
/// A step cuts the global batch into `shardsPerBatch` shards of `shardSize`
/// samples. One child task per worker (pinned with `executorPreference`):
///  1. computes its block of shards, each forward and backward into that shard's
///     own gradient buffer, with dropout masks addressed by (seed, step,
///     global-batch position) — never by worker;
///  2. waits at a barrier until every shard is done;
///  3. claims parameter chunks with an atomic counter and, for each, sums the
///     shards' gradients in shard order and applies the SGD update and max-norm.
/// Every float sum runs in shard order whatever the worker count, so the weights
/// are bit-identical for any number of workers. Atomics claim work and publish
/// progress; they never add floats.
///
/// Across MPI ranks (`cluster`), rank r computes a contiguous block of the shards
/// and owns a contiguous block of the parameter chunks. A step then runs:
///  1. each rank computes its shards (phase 1 above, its workers only);
///  2. an exchange (a reduce-scatter that does not add): every rank sends each of
///     its shard gradients' slice in rank q's chunk block to rank q, so each rank
///     holds every shard's gradient for its own chunks;
///  3. each rank sums, in shard order, and updates its chunks (phase 3 above);
///  4. an allgather of the updated parameters.
/// The sums are the single-process sums, element for element, so the weights are
/// bit-identical for any rank count. With `fastAllreduce` a rank instead adds its
/// own shards, `MPI_Allreduce` adds the ranks' sums (in an order MPI chooses), and
/// every rank updates all parameters: less data moved, not reproducible across rank counts.
public final class Trainer: @unchecked Sendable {
    public let configuration: TrainingConfiguration
    public let network: Network
    public let parameters: FloatBuffer
    public let optimizer: SGDOptimizer
    public let pool: WorkerPool
    /// The MPI job this trainer is one rank of; nil in a single process.
    public let cluster: Cluster?
    public let fastAllreduce: Bool
    /// The global shards this process computes (all of them without a cluster).
    public let localShards: Range<Int>
    /// The parameter chunks this process updates.
    let localChunks: Range<Int>
    /// What the reduction phase reads: every shard's gradient, or (fast all-reduce)
    /// the one buffer holding the sum over all ranks.
    let reductionPointers: UnsafeMutablePointer<UnsafeMutablePointer<Float>>
    let reductionShardCount: Int
    /// Cross-rank transfers of one step, and each rank's parameter range (allgather).
    let transfers: UnsafeMutablePointer<sw_mpi_transfer>
    let transferCount: Int
    let rankCounts: UnsafeMutablePointer<Int32>
    let rankOffsets: UnsafeMutablePointer<Int32>
    /// Signal number the ranks agreed on after the last step (0: none).
    public private(set) var agreedSignal: Int32 = 0
    /// Seconds spent in cross-rank calls, summed over steps.
    public private(set) var communicationSeconds = 0.0
    /// One gradient buffer per shard of the global batch, and one workspace per shard this
    /// process computes, first touched by the worker that computes the shard (so on its NUMA node).
    let shardGradients: [FloatBuffer]
    let shardGradientPointers: UnsafeMutablePointer<UnsafeMutablePointer<Float>>
    let workspaces: [Workspace]
    /// Loss sum of each shard in the last step, summed in shard order afterwards.
    let shardLoss: UnsafeMutablePointer<Double>
    let train: Dataset
    let trainImages: FloatBuffer
    /// The current epoch's sample order.
    public private(set) var order: [Int32]
    /// Optimisation steps taken so far, across epochs.
    public private(set) var globalStep = 0

    // Step coordination. Each counter sits on its own cache line (see `PaddedCounter`).
    let shardsDone = PaddedCounter()
    let nextChunk = PaddedCounter()
    /// Lowest chunk whose summed gradient was not finite in the last step (Int.max: none).
    let badChunk = PaddedCounter()
    /// Tests: write a NaN into this shard's gradient of `layers.1.weight` at this global step.
    var injectNaN: (step: Int, shard: Int)?
    /// Per-worker seconds spent computing, reducing and waiting, summed over steps.
    public let timing: StepTiming

    /// Throws `TrainingError` for a bad setting and `BLASError` when no BLAS can be loaded.
    /// `chunkElements` sets the reduction's chunk size (see `SGDOptimizer`); it does not change results.
    public init(
        configuration: TrainingConfiguration, train: Dataset, pool: WorkerPool, chunkElements: Int = 16_384,
        cluster: Cluster? = nil, fastAllreduce: Bool = false
    ) throws {
        _ = try BLAS.load()
        try configuration.validate(trainingSamples: train.count, features: train.features, classes: train.classes)
        let shards = configuration.shardsPerBatch
        if let cluster, shards < cluster.size {
            throw TrainingError(flag: "--batch-size", problem: "\(configuration.batchSize) samples make \(shards) shards of \(configuration.shardSize) for \(cluster.size) ranks; every rank needs at least one shard (use a smaller --shard-size or a larger batch)")
        }
        self.configuration = configuration
        self.train = train
        self.pool = pool
        self.cluster = cluster
        self.fastAllreduce = cluster != nil && fastAllreduce
        localShards = cluster.map { $0.block(of: shards) } ?? 0..<shards
        let network = Network(configuration.network)
        self.network = network
        parameters = FloatBuffer(count: network.layout.count)
        network.initialize(parameters: parameters, seed: configuration.seed)
        let optimizer = SGDOptimizer(configuration: configuration.optimizer, network: network, chunkElements: chunkElements)
        self.optimizer = optimizer
        // Each shard's buffers live on the NUMA node of the worker that computes it
        // (shards are assigned to workers in fixed blocks, see `shards(of:)`). Another
        // rank's shards get a buffer too, touched only where this rank receives.
        let local = localShards
        let owners = (0..<shards).map { s in
            local.contains(s) ? Self.owner(ofShard: s - local.lowerBound, shards: local.count, workers: pool.workers.count) : nil
        }
        let allocators = pool.workers.map { pool.memoryAllocator(for: $0) }
        shardGradients = (0..<shards).map { FloatBuffer(count: network.layout.count, allocator: owners[$0].flatMap { allocators[$0] }) }
        shardGradientPointers = .allocate(capacity: shards)
        for s in 0..<shards { shardGradientPointers[s] = shardGradients[s].pointer }
        // Workspaces only for the shards this process computes (index: shard - localShards.lowerBound).
        workspaces = local.map {
            Workspace(network: network, capacity: configuration.shardSize, allocator: owners[$0].flatMap { allocators[$0] })
        }
        // Chunk blocks and parameter ranges of every rank, and this rank's transfers.
        let ranks = cluster?.size ?? 1
        let ordered = cluster != nil && !fastAllreduce
        let chunkBlocks = (0..<ranks).map { r in
            !ordered ? 0..<optimizer.chunks.count : Cluster.block(r, of: optimizer.chunks.count, parts: ranks)
        }
        let elementRanges = chunkBlocks.map { b in
            b.isEmpty ? 0..<0 : optimizer.chunks[b.lowerBound].range.lowerBound..<optimizer.chunks[b.upperBound - 1].range.upperBound
        }
        localChunks = chunkBlocks[cluster?.rank ?? 0]
        rankCounts = .allocate(capacity: ranks)
        rankOffsets = .allocate(capacity: ranks)
        for r in 0..<ranks {
            rankCounts[r] = Int32(elementRanges[r].count)
            rankOffsets[r] = Int32(elementRanges[r].lowerBound)
        }
        var plan: [sw_mpi_transfer] = []
        if let cluster, ordered {
            let me = cluster.rank
            for q in 0..<ranks where q != me {
                let theirs = elementRanges[q], mine = elementRanges[me]
                for s in local where !theirs.isEmpty {
                    plan.append(sw_mpi_transfer(peer: Int32(q), send: 1, tag: Int32(s), buffer: shardGradients[s].pointer + theirs.lowerBound, count: theirs.count))
                }
                for s in cluster.block(of: shards, rank: q) where !mine.isEmpty {
                    plan.append(sw_mpi_transfer(peer: Int32(q), send: 0, tag: Int32(s), buffer: shardGradients[s].pointer + mine.lowerBound, count: mine.count))
                }
            }
        }
        transferCount = plan.count
        transfers = .allocate(capacity: max(1, plan.count))
        transfers.initialize(from: plan, count: plan.count)
        if cluster != nil && !ordered {
            reductionPointers = .allocate(capacity: 1)
            reductionPointers[0] = shardGradients[local.lowerBound].pointer
            reductionShardCount = 1
        } else {
            reductionPointers = shardGradientPointers
            reductionShardCount = shards
        }
        shardLoss = .allocate(capacity: shards)
        shardLoss.initialize(repeating: 0, count: shards)
        let images = FloatBuffer(count: train.images.count)
        train.images.withUnsafeBufferPointer { images.pointer.update(from: $0.baseAddress!, count: $0.count) }
        trainImages = images
        order = Array(0..<Int32(train.count))
        timing = StepTiming(workers: pool.workers.count)
    }

    deinit {
        if reductionPointers != shardGradientPointers { reductionPointers.deallocate() }
        shardGradientPointers.deallocate()
        shardLoss.deallocate()
        transfers.deallocate()
        rankCounts.deallocate()
        rankOffsets.deallocate()
    }

    public var workerCount: Int { pool.workers.count }
    public var stepsPerEpoch: Int { train.count / configuration.batchSize }

    /// Shards of worker `w`: a contiguous block of this process's shards, so the
    /// shards a worker computes are fixed for a run.
    func shards(of w: Int) -> Range<Int> {
        let s = localShards.count, n = workerCount, first = localShards.lowerBound
        let per = (s + n - 1) / n
        return first + min(s, w * per)..<first + min(s, (w + 1) * per)
    }

    static func owner(ofShard shard: Int, shards: Int, workers: Int) -> Int {
        shard / ((shards + workers - 1) / workers)
    }

    /// Shuffles the training set for `epoch`: Fisher-Yates driven by the stream (seed, shuffle, epoch).
    public func shuffle(epoch: Int) {
        let stream = RandomAddress(seed: configuration.seed, purpose: .shuffle, step: UInt32(epoch))
        for i in 0..<order.count { order[i] = Int32(i) }
        for i in stride(from: order.count - 1, to: 0, by: -1) {
            order.swapAt(i, stream.integer(i, below: i + 1))
        }
    }

    /// Runs one optimisation step on batch `stepInEpoch` of `epoch` and returns the batch's loss sum.
    public func step(epoch: Int, stepInEpoch: Int) async -> Double {
        let progress = Double(epoch) + Double(stepInEpoch) / Double(stepsPerEpoch)
        let hyper = configuration.optimizer.hyperparameters(progress: progress)
        shardsDone.value.store(0, ordering: .relaxed)
        nextChunk.value.store(localChunks.lowerBound, ordering: .relaxed)
        badChunk.value.store(Int.max, ordering: .relaxed)
        if let cluster {
            // Compute, combine across ranks, reduce: the workers run twice, around the exchange.
            await runWorkers(stepInEpoch: stepInEpoch, hyper: hyper, reduce: false)
            let t0 = monotonicSeconds()
            combineAcrossRanks()
            let t1 = monotonicSeconds()
            await runWorkers(stepInEpoch: nil, hyper: hyper, reduce: true)
            let t2 = monotonicSeconds()
            agree(cluster)
            communicationSeconds += (t1 - t0) + (monotonicSeconds() - t2)
        } else {
            await runWorkers(stepInEpoch: stepInEpoch, hyper: hyper, reduce: true)
        }
        optimizer.stepsTaken += 1
        globalStep += 1
        var loss = 0.0
        for s in 0..<configuration.shardsPerBatch { loss += shardLoss[s] }
        return loss
    }

    /// One child task per worker, each pinned to its worker.
    func runWorkers(stepInEpoch: Int?, hyper: SGDHyperparameters, reduce: Bool) async {
        await withTaskGroup(of: Void.self) { group in
            for worker in pool.workers {
                group.addTask(executorPreference: worker) {
                    self.work(worker: worker.index, stepInEpoch: stepInEpoch, hyper: hyper, reduce: reduce)
                }
            }
        }
    }

    /// Between computing and reducing: gives this rank what its chunks need from the
    /// other ranks' shards (ordered mode), or the sum over all ranks (fast all-reduce).
    func combineAcrossRanks() {
        guard let cluster else { return }
        if fastAllreduce {
            // This rank's shards, added in shard order into its first shard's buffer.
            let sum = shardGradients[localShards.lowerBound]
            for s in localShards.dropFirst() { Elementwise.add(count: sum.count, x: shardGradients[s].pointer, y: sum.pointer) }
            cluster.allreduceSum(sum.pointer, count: sum.count)
        } else {
            cluster.exchange(transfers, count: transferCount)
        }
        // The reduction below starts when the counter shows every shard in place.
        shardsDone.value.store(Int.max / 2, ordering: .relaxed)
    }

    /// After the update: every rank gets the new parameters, the shard losses, and
    /// agrees on whether a gradient was not finite and whether a signal stops the run.
    func agree(_ cluster: Cluster) {
        if !fastAllreduce {
            cluster.allgather(parameters.pointer, counts: rankCounts, displacements: rankOffsets, "gathering parameters")
        }
        // Other ranks' entries are 0, and x + 0 is exact: every rank ends with the same losses.
        for s in 0..<configuration.shardsPerBatch where !localShards.contains(s) { shardLoss[s] = 0 }
        cluster.allreduceSum(shardLoss, count: configuration.shardsPerBatch, "summing losses")
        var flags = (badChunk.value.load(ordering: .relaxed), -Int(interruption.load(ordering: .relaxed)))
        withUnsafeMutableBytes(of: &flags) { cluster.allreduceMin($0.baseAddress!.assumingMemoryBound(to: Int.self), count: 2, "agreeing on the step") }
        badChunk.value.store(flags.0, ordering: .relaxed)
        agreedSignal = Int32(-flags.1)
    }

    /// Everything of a step after computing the shards (exchange or all-reduce, update,
    /// allgather, agreement), on whatever the gradient buffers hold: for measuring the
    /// cross-rank step. Changes the weights like a step would.
    public func crossRankOnly(hyperparameters: SGDHyperparameters) async {
        guard let cluster else { return }
        nextChunk.value.store(localChunks.lowerBound, ordering: .relaxed)
        combineAcrossRanks()
        await runWorkers(stepInEpoch: nil, hyper: hyperparameters, reduce: true)
        agree(cluster)
    }

    /// Gives this rank the full momentum buffer (each rank updates only its own chunks):
    /// a collective, before a checkpoint is written.
    public func gatherOptimizerState() {
        guard let cluster, !fastAllreduce else { return }
        cluster.allgather(optimizer.velocity.pointer, counts: rankCounts, displacements: rankOffsets, "gathering the optimizer state")
    }

    /// The tensor whose gradient was NaN or infinite in the last step, if any.
    public var nonFiniteGradientTensor: String? {
        let chunk = badChunk.value.load(ordering: .relaxed)
        return chunk == Int.max ? nil : optimizer.tensorName(ofChunk: chunk, in: network)
    }

    /// Puts the model and optimizer state of a checkpoint in place (before any step).
    public func restore(parameters values: [Float], velocity: [Float], globalStep: Int) {
        precondition(values.count == parameters.count && velocity.count == parameters.count)
        values.withUnsafeBufferPointer { parameters.pointer.update(from: $0.baseAddress!, count: $0.count) }
        velocity.withUnsafeBufferPointer { optimizer.velocity.pointer.update(from: $0.baseAddress!, count: $0.count) }
        self.globalStep = globalStep
        optimizer.stepsTaken = globalStep
    }

    /// The reduction phase alone (sum of the shard gradients already in place, update,
    /// max-norm), by all workers: for measuring it against the machine's bandwidth.
    /// Changes the weights like a step would; use on a trainer made for measuring.
    public func reduceOnly(hyperparameters: SGDHyperparameters) async {
        shardsDone.value.store(Int.max / 2, ordering: .relaxed)
        nextChunk.value.store(localChunks.lowerBound, ordering: .relaxed)
        await runWorkers(stepInEpoch: nil, hyper: hyperparameters, reduce: true)
    }

    /// Bytes the reduction reads and writes once: every shard gradient, and the
    /// parameters and velocity read and written.
    public var reductionBytes: Int {
        (configuration.shardsPerBatch + 4) * network.layout.parameterCount * MemoryLayout<Float>.stride
    }

    /// One worker's part of a step: computing its shards (unless `stepInEpoch` is nil),
    /// then, if `reduce`, the reduction. Runs on that worker's pinned thread.
    func work(worker w: Int, stepInEpoch: Int?, hyper: SGDHyperparameters, reduce: Bool) {
        let t0 = monotonicSeconds()
        let mine = stepInEpoch == nil ? 0..<0 : shards(of: w)
        for shard in mine { shardLoss[shard] = computeShard(shard, stepInEpoch: stepInEpoch!) }
        let t1 = monotonicSeconds()
        guard reduce else {
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
        // Relaxed: the counter only hands out distinct chunk indices; the data each
        // chunk reads was published by the barrier above.
        while true {
            let chunk = nextChunk.value.add(1, ordering: .relaxed).oldValue
            if chunk >= localChunks.upperBound { break }
            let finite = optimizer.update(
                chunk: chunk, parameters: parameters.pointer, shardGradients: reductionPointers,
                shardCount: reductionShardCount, hyperparameters: hyper)
            // Relaxed: read after the task group completes, which orders it.
            if !finite { badChunk.value.min(chunk, ordering: .relaxed) }
        }
        let t3 = monotonicSeconds()
        timing.add(worker: w, compute: t1 - t0, waiting: t2 - t1, reduction: t3 - t2)
    }

    /// Forward and backward for one shard into its own gradient buffer; returns its loss sum.
    func computeShard(_ shard: Int, stepInEpoch: Int) -> Double {
        let n = configuration.shardSize
        let ws = workspaces[shard - localShards.lowerBound]
        let features = network.configuration.inputSize
        let first = stepInEpoch * configuration.batchSize + shard * n
        for r in 0..<n {
            let sample = Int(order[first + r])
            (ws.input + r * features).update(from: trainImages.pointer + sample * features, count: features)
            ws.labels[r] = train.labels[sample]
        }
        let dropout = DropoutContext(
            seed: configuration.seed, step: UInt32(truncatingIfNeeded: globalStep), firstPosition: shard * n)
        network.forward(parameters: parameters.pointer, workspace: ws, rows: n, dropout: dropout)
        let loss = network.backward(
            parameters: parameters.pointer, workspace: ws, rows: n, lossDivisor: configuration.batchSize,
            gradient: shardGradients[shard].pointer)
        if let fault = injectNaN, fault.step == globalStep, fault.shard == shard {
            shardGradients[shard][network.layout.tensors[2].offset] = .nan
        }
        return loss
    }

    /// Test error in percent, with dropout off; workers take contiguous blocks and
    /// their integer error counts add up exactly, whatever the worker count.
    /// Across ranks, each rank counts a block of the samples and the counts are summed.
    public func evaluate(_ data: Dataset) async -> Double {
        let rows = cluster.map { $0.block(of: data.count) } ?? 0..<data.count
        let blocks = min(workerCount, localShards.count)
        let per = (rows.count + blocks - 1) / blocks
        var errors = await withTaskGroup(of: Int.self) { group in
            for b in 0..<blocks {
                group.addTask(executorPreference: pool.workers[b]) {
                    self.countErrors(
                        data, rows: rows.lowerBound + min(rows.count, b * per)..<rows.lowerBound + min(rows.count, (b + 1) * per),
                        workspace: self.workspaces[b])
                }
            }
            return await group.reduce(0, +)
        }
        if let cluster { errors = cluster.sum(errors, "counting test errors") }
        return 100 * Double(errors) / Double(data.count)
    }

    func countErrors(_ data: Dataset, rows: Range<Int>, workspace ws: Workspace) -> Int {
        let features = data.features
        var errors = 0
        var start = rows.lowerBound
        while start < rows.upperBound {
            let n = min(ws.capacity, rows.upperBound - start)
            data.images.withUnsafeBufferPointer { images in
                ws.input.update(from: images.baseAddress! + start * features, count: n * features)
            }
            for r in 0..<n { ws.labels[r] = data.labels[start + r] }
            network.forward(parameters: parameters.pointer, workspace: ws, rows: n, dropout: nil)
            errors += network.countErrors(workspace: ws, rows: n)
            start += n
        }
        return errors
    }

    /// SHA-256 of all parameters' float32 bytes, little-endian, in layer order, weight then bias.
    public var weightsSHA256: String {
        var hash = SHA256()
        for tensor in network.layout.tensors {
            hash.update(UnsafeRawBufferPointer(start: parameters.pointer + tensor.offset, count: tensor.count * 4))
        }
        return SHA256.hex(hash.finalize())
    }
}

/// An atomic counter alone on its cache line, so workers spinning on it do not
/// slow writers of neighbouring data (false sharing).
final class PaddedCounter: @unchecked Sendable {
    let value = Atomic<Int>(0)
    let padding: (Int, Int, Int, Int, Int, Int, Int) = (0, 0, 0, 0, 0, 0, 0)
}

/// Seconds per worker spent computing shards, waiting at the barrier and reducing.
/// Each worker writes only its own cache line; read after steps complete.
public final class StepTiming: @unchecked Sendable {
    let slots: UnsafeMutablePointer<Double>
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

    /// Mean over workers of (compute, waiting, reduction) seconds since the last reset.
    public var meanSeconds: (compute: Double, waiting: Double, reduction: Double) {
        var c = 0.0, w = 0.0, r = 0.0
        for i in 0..<workers {
            c += slots[i * Self.stride]
            w += slots[i * Self.stride + 1]
            r += slots[i * Self.stride + 2]
        }
        let n = Double(workers)
        return (c / n, w / n, r / n)
    }

    public func reset() { slots.update(repeating: 0, count: workers * Self.stride) }
}
