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
public final class Trainer: @unchecked Sendable {
    public let configuration: TrainingConfiguration
    public let network: Network
    public let parameters: FloatBuffer
    public let optimizer: SGDOptimizer
    public let pool: WorkerPool
    /// One gradient buffer and workspace per shard of the global batch, first
    /// touched by the worker that computes the shard (so on its NUMA node).
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
    public init(configuration: TrainingConfiguration, train: Dataset, pool: WorkerPool, chunkElements: Int = 16_384) throws {
        _ = try BLAS.load()
        try configuration.validate(trainingSamples: train.count, features: train.features, classes: train.classes)
        self.configuration = configuration
        self.train = train
        self.pool = pool
        let network = Network(configuration.network)
        self.network = network
        parameters = FloatBuffer(count: network.layout.count)
        network.initialize(parameters: parameters, seed: configuration.seed)
        optimizer = SGDOptimizer(configuration: configuration.optimizer, network: network, chunkElements: chunkElements)
        let shards = configuration.shardsPerBatch
        // Each shard's buffers live on the NUMA node of the worker that computes it
        // (shards are assigned to workers in fixed blocks, see `shards(of:)`).
        let owners = (0..<shards).map { s in Self.owner(ofShard: s, shards: shards, workers: pool.workers.count) }
        let allocators = pool.workers.map { pool.memoryAllocator(for: $0) }
        shardGradients = (0..<shards).map { FloatBuffer(count: network.layout.count, allocator: allocators[owners[$0]]) }
        shardGradientPointers = .allocate(capacity: shards)
        for s in 0..<shards { shardGradientPointers[s] = shardGradients[s].pointer }
        workspaces = (0..<shards).map {
            Workspace(network: network, capacity: configuration.shardSize, allocator: allocators[owners[$0]])
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
        shardGradientPointers.deallocate()
        shardLoss.deallocate()
    }

    public var workerCount: Int { pool.workers.count }
    public var stepsPerEpoch: Int { train.count / configuration.batchSize }

    /// Shards of worker `w`: a contiguous block, so the shards a worker computes are fixed for a run.
    func shards(of w: Int) -> Range<Int> {
        let s = configuration.shardsPerBatch, n = workerCount
        let per = (s + n - 1) / n
        return min(s, w * per)..<min(s, (w + 1) * per)
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
        nextChunk.value.store(0, ordering: .relaxed)
        badChunk.value.store(Int.max, ordering: .relaxed)
        await withTaskGroup(of: Void.self) { group in
            for worker in pool.workers {
                group.addTask(executorPreference: worker) {
                    self.work(worker: worker.index, stepInEpoch: stepInEpoch, hyper: hyper)
                }
            }
        }
        optimizer.stepsTaken += 1
        globalStep += 1
        var loss = 0.0
        for s in 0..<configuration.shardsPerBatch { loss += shardLoss[s] }
        return loss
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
        shardsDone.value.store(configuration.shardsPerBatch, ordering: .relaxed)
        nextChunk.value.store(0, ordering: .relaxed)
        await withTaskGroup(of: Void.self) { group in
            for worker in pool.workers {
                group.addTask(executorPreference: worker) {
                    self.work(worker: worker.index, stepInEpoch: nil, hyper: hyperparameters)
                }
            }
        }
    }

    /// Bytes the reduction reads and writes once: every shard gradient, and the
    /// parameters and velocity read and written.
    public var reductionBytes: Int {
        (configuration.shardsPerBatch + 4) * network.layout.parameterCount * MemoryLayout<Float>.stride
    }

    /// One worker's part of a step (or, with `stepInEpoch` nil, of the reduction alone).
    /// Runs on that worker's pinned thread.
    func work(worker w: Int, stepInEpoch: Int?, hyper: SGDHyperparameters) {
        let t0 = monotonicSeconds()
        let mine = stepInEpoch == nil ? 0..<0 : shards(of: w)
        for shard in mine { shardLoss[shard] = computeShard(shard, stepInEpoch: stepInEpoch!) }
        let t1 = monotonicSeconds()
        // Releasing: publishes this worker's gradient buffers to the workers that read
        // them in the reduction. Acquiring loads below pair with it.
        shardsDone.value.add(mine.count, ordering: .releasing)
        let total = configuration.shardsPerBatch
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
            if chunk >= optimizer.chunks.count { break }
            let finite = optimizer.update(
                chunk: chunk, parameters: parameters.pointer, shardGradients: shardGradientPointers,
                shardCount: total, hyperparameters: hyper)
            // Relaxed: read after the task group completes, which orders it.
            if !finite { badChunk.value.min(chunk, ordering: .relaxed) }
        }
        let t3 = monotonicSeconds()
        timing.add(worker: w, compute: t1 - t0, waiting: t2 - t1, reduction: t3 - t2)
    }

    /// Forward and backward for one shard into its own gradient buffer; returns its loss sum.
    func computeShard(_ shard: Int, stepInEpoch: Int) -> Double {
        let n = configuration.shardSize
        let ws = workspaces[shard]
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
    public func evaluate(_ data: Dataset) async -> Double {
        let blocks = min(workerCount, workspaces.count)
        let per = (data.count + blocks - 1) / blocks
        let errors = await withTaskGroup(of: Int.self) { group in
            for b in 0..<blocks {
                group.addTask(executorPreference: pool.workers[b]) {
                    self.countErrors(data, rows: b * per..<min(data.count, (b + 1) * per), workspace: self.workspaces[b])
                }
            }
            return await group.reduce(0, +)
        }
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
