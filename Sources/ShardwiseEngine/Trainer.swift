import ShardwiseData
import ShardwiseIO
import ShardwiseKernels
import ShardwiseLayers
import Synchronization

/// The data-parallel training engine: a model's parameters and optimizer state, and the
/// optimisation steps that the pinned workers of a ``WorkerPool`` run on them.
///
/// A step cuts the global batch into `shardsPerBatch` shards of `shardSize` samples.
/// One child task per worker (pinned with `executorPreference`):
///  1. computes its block of shards, each forward and backward into that shard's own
///     gradient buffer, with random draws addressed by (seed, step, global-batch
///     position) — never by worker;
///  2. waits at a barrier until every shard is done;
///  3. claims parameter chunks with an atomic counter and, for each, sums the shards'
///     gradients in shard order and applies the SGD update and max-norm.
/// Every float sum runs in shard order whatever the worker count, so the weights are
/// bit-identical for any number of workers. Atomics claim work and publish progress;
/// they never add floats. Across MPI ranks, each rank computes a block of the shards and the
/// ranks exchange shard gradients without adding them, so the sums stay the single-process sums.
///
/// Train with ``fit(epochs:test:checkpoints:stopAfterSteps:snapshots:)``, which yields ``TrainingEvent``s;
/// cancelling the task that iterates it stops training after the step in flight.
public final class Trainer: @unchecked Sendable {
    /// How the model is trained.
    public let configuration: TrainingConfiguration
    /// The model compiled for the data's row width.
    public let network: Network
    /// The description checkpoints carry, when the model was built from one.
    public let networkDescription: NetworkConfiguration?
    /// (parameters) laid out as `network.layout`.
    public let parameters: FloatBuffer
    /// The optimizer and its state (the momentum buffer).
    public let optimizer: ChunkedOptimizer
    /// The pinned workers that run the steps.
    public let pool: WorkerPool
    /// The MPI job this trainer is one rank of; nil in a single process.
    public let cluster: Cluster?
    /// Under MPI: how the ranks combine their gradients (nil in a single process).
    let exchange: RankExchange?
    /// Under MPI, unless turned off: the same exchange overlapped with the backward pass,
    /// driven by the pool's communication thread.
    let overlapped: OverlappedExchange?
    let communicator: PinnedWorker?
    /// The global shards this process computes (all of them without a cluster).
    package let localShards: Range<Int>
    /// The parameter chunks this process updates.
    let localChunks: Range<Int>
    /// What the reduction phase reads: every shard's gradient, or (fast all-reduce)
    /// the one buffer holding the sum over all ranks.
    let reductionPointers: UnsafeMutablePointer<UnsafeMutablePointer<Float>>
    let reductionShardCount: Int
    /// One gradient buffer per shard of the global batch, and one workspace per shard this
    /// process computes, first touched by the worker that computes the shard (so on its NUMA node).
    let shardGradients: [FloatBuffer]
    let shardGradientPointers: UnsafeMutablePointer<UnsafeMutablePointer<Float>>
    let workspaces: [Workspace]
    /// Loss sum of each shard in the last step, summed in shard order afterwards.
    let shardLoss: UnsafeMutablePointer<Double>
    /// Gradient clipping: each chunk's sum of squared summed gradients, added in chunk order.
    let chunkSquares: UnsafeMutablePointer<Double>
    /// BatchNorm's sums: per slot a row for each shard of the global batch and their total
    /// (see `BatchSums`); empty without batch-statistics layers.
    let statisticsSlots: [UnsafeMutablePointer<Double>]
    let statisticsCounts: [Int]
    /// The samples trained on (the validation split held out) and the held-out samples.
    public let trainingData: Dataset
    /// The held-out validation samples, with a validation split.
    public let validationData: Dataset?
    /// The current epoch's sample order.
    package internal(set) var order: [Int32]
    /// Where training stands; a checkpoint stores it.
    public internal(set) var state: TrainingState
    /// Under MPI: whether the ranks agreed, in the last step, to stop after it.
    public internal(set) var agreedStop = false
    /// Seconds spent in cross-rank calls, summed over steps; overlapped, the seconds of the
    /// steps not spent computing or reducing (the communication left exposed).
    public internal(set) var communicationSeconds = 0.0
    /// Wall-clock seconds of the steps, summed.
    public internal(set) var stepSeconds = 0.0

    // Step coordination. Each counter sits on its own cache line (see `PaddedCounter`).
    let shardsDone = PaddedCounter()
    let nextChunk = PaddedCounter()
    /// Non-zero when a worker skipped a shard of the step in flight because the task was cancelled.
    let abandoned = PaddedCounter()
    /// Lowest chunk whose summed gradient was not finite in the last step (Int.max: none).
    let badChunk = PaddedCounter()
    /// Per-worker seconds spent computing, reducing and waiting, summed over steps.
    public let timing: StepTiming

    /// A trainer for `model` on `data` (labels `0..<data.classes`, rows of `data.features`).
    ///
    /// - Parameters:
    ///   - model: the layers; compiled here for rows of `data.features` values.
    ///   - data: the training samples; the model's output width must be `data.classes`.
    ///   - configuration: batch, shards, optimizer, seed; a validation split is held out of `data` here.
    ///   - pool: the pool whose pinned workers run the steps; it must outlive training.
    ///   - validation: samples evaluated after every epoch for early stopping, instead of a split of `data`.
    ///   - loss: what training minimises (default: softmax cross-entropy for classification, mean squared error for regression).
    ///   - cluster: under MPI, the job this process is one rank of.
    ///   - fastAllreduce: under MPI, combine ranks with a plain all-reduce (not reproducible across rank counts).
    ///   - exchange: under MPI, ordered: scatter shard slices or chain partial sums (the same weights).
    ///   - overlap: under MPI, send each layer's gradients as soon as the backward pass produced
    ///     them and reduce and gather per layer (the same bits; false: compute, then exchange).
    ///   - chunkElements: the reduction's chunk size (see `ChunkedOptimizer`); it does not change results.
    ///   - description: the model's description, stored in checkpoints, when it was built from one.
    ///   - inputShape: the shape of one sample (e.g. [1, 28, 28] for a convolutional model); its
    ///     sizes must multiply to the data's features. nil: flat rows.
    /// Gradient clipping (``OptimizerConfiguration/clipNorm``) needs the whole gradient's norm
    /// before any update, so under MPI it runs the exchange without overlap.
    // Longer than 60 lines: every buffer is a `let` allocated once, here, in dependency order
    // (network, optimizer chunks, shard owners, buffers, exchange plan), so none is optional.
    public init(
        model: Sequential, data: Dataset, configuration: TrainingConfiguration, workers pool: WorkerPool,
        loss: (any Loss)? = nil, validation: Dataset? = nil, cluster: Cluster? = nil, fastAllreduce: Bool = false,
        overlap: Bool = true, exchange preferred: ExchangePattern = .auto, chunkElements: Int = 16_384,
        description: NetworkConfiguration? = nil, inputShape: [Int]? = nil, initialization: InitializationScheme = .he
    ) throws(TrainingError) {
        let asked = overlap
        if MatrixKernels.current == .blas {
            do { _ = try BLAS.load() } catch { throw .blas(error) }
        }
        do { try configuration.validate(trainingSamples: data.count, validationGiven: validation != nil) } catch { throw .configuration(error) }
        let network: Network
        let loss = loss ?? (data.task == .classification ? SoftmaxCrossEntropy() : MeanSquaredError())
        let shape = inputShape ?? [data.features]
        guard CheckedSize.product(shape) == data.features else {
            throw .configuration(ConfigurationError(.data, "rows of \(data.features) values, the model's input shape \(Network.describe(shape)) holds \(CheckedSize.product(shape).map(String.init) ?? "too many")"))
        }
        do { network = try Network(model, inputShape: shape, loss: loss) } catch { throw .model(error) }
        // Clipping needs the whole gradient before any update, BatchNorm's shared statistics the shards to meet mid-pass: no overlap.
        let overlap = asked && configuration.optimizer.clipNorm == nil && network.meetingNodes.isEmpty
        for set in [data, validation].compactMap({ $0 }) {
            if let problem = network.categoricalProblem(in: set) { throw .configuration(ConfigurationError(.data, problem)) }
        }
        guard network.widths.last == data.outputWidth else {
            let wanted = data.task == .classification ? "\(data.classes) classes" : "\(data.targetWidth) targets per sample"
            throw .configuration(ConfigurationError(.data, "\(wanted), the model gives \(network.widths.last!) outputs"))
        }
        guard data.targets != nil else { throw .configuration(ConfigurationError(.data, "\(data.source): no labels or targets to train on")) }
        guard data.task == .regression || network.labelPositions == data.targetWidth else {
            throw .configuration(ConfigurationError(.data, "\(data.targetWidth) labels per sample, the model's outputs \(Network.describe(network.shapes.last!)) have \(network.labelPositions) positions"))
        }
        let shards = configuration.shardsPerBatch
        if let cluster, shards < cluster.size {
            throw .configuration(ConfigurationError(.batchSize, "\(configuration.batchSize) samples make \(shards) shards of \(configuration.shardSize) for \(cluster.size) ranks; every rank needs at least one shard (a smaller {shardSize} or a larger batch)"))
        }
        try Self.checkMemory(network: network, configuration: configuration, data: data, localShards: cluster?.block(of: shards).count ?? shards)
        self.configuration = configuration
        self.network = network
        networkDescription = description
        self.pool = pool
        self.cluster = cluster
        if let validation {
            guard configuration.validationSamples ?? 0 == 0 else {
                throw .configuration(ConfigurationError(.validationSamples, "a validation set is given ({validationSamples} \(configuration.validationSamples!) would hold out another); use one or the other"))
            }
            guard validation.features == data.features, validation.outputWidth == data.outputWidth, validation.task == data.task else {
                throw .configuration(ConfigurationError(.data, "\(validation.source): \(validation.features) features and \(validation.outputWidth) outputs, the training data has \(data.features) and \(data.outputWidth)"))
            }
            (trainingData, validationData) = (data, validation)
        } else if let n = configuration.validationSamples, n > 0 {
            (trainingData, validationData) = data.splitValidation(count: n, seed: configuration.seed)
        } else {
            (trainingData, validationData) = (data, nil)
        }
        let local = cluster.map { $0.block(of: shards) } ?? 0..<shards
        localShards = local
        parameters = FloatBuffer(count: network.layout.count)
        network.initialize(parameters: parameters, seed: configuration.seed, scheme: initialization)
        let optimizer = ChunkedOptimizer(configuration: configuration.optimizer, layout: network.layout, chunkElements: chunkElements)
        self.optimizer = optimizer
        // Each shard's buffers live on the NUMA node of the worker that computes it
        // (shards are assigned to workers in fixed blocks, see `shards(of:)`). Another
        // rank's shards get a buffer too, touched only where this rank receives.
        let owners = (0..<shards).map { s in
            local.contains(s) ? Self.owner(ofShard: s - local.lowerBound, shards: local.count, workers: pool.workers.count) : nil
        }
        let allocators = pool.workers.map { pool.memoryAllocator(for: $0) }
        let shardGradients = (0..<shards).map { FloatBuffer(count: network.layout.count, allocator: owners[$0].flatMap { allocators[$0] }) }
        self.shardGradients = shardGradients
        shardGradientPointers = .allocate(capacity: shards)
        for s in 0..<shards { shardGradientPointers[s] = shardGradients[s].pointer }
        // Workspaces only for the shards this process computes (index: shard - localShards.lowerBound).
        workspaces = local.map {
            Workspace(network: network, capacity: configuration.shardSize, allocator: owners[$0].flatMap { allocators[$0] })
        }
        let exchange = cluster.map {
            RankExchange(
                cluster: $0, fast: fastAllreduce, preferred: preferred, overlap: overlap, shards: shards, chunks: optimizer.chunks,
                largestLayer: network.parameterSegments.map(\.count).max() ?? 0,
                shardGradients: shardGradients)
        }
        self.exchange = exchange
        if let exchange, overlap {
            do {
                overlapped = try OverlappedExchange(
                    exchange: exchange, network: network, chunks: optimizer.chunks, shards: shards, localShards: local,
                    shardGradients: shardGradients, parameters: parameters.pointer)
                communicator = try pool.communicationWorker()
            } catch let error as ClusterError {
                throw .cluster(error)
            } catch {
                throw .cluster(ClusterError(message: "cannot start the communication thread: \(error)"))
            }
        } else {
            (overlapped, communicator) = (nil, nil)
        }
        localChunks = exchange?.localChunks ?? 0..<optimizer.chunks.count
        if let exchange, exchange.fast {
            // The sum over all ranks, in the first local shard's buffer.
            (reductionPointers, reductionShardCount) = (exchange.sumSources, 1)
        } else if let exchange, exchange.pattern == .chain {
            // The partial sum (rank 0: its first shard's buffer), then this rank's other shards.
            (reductionPointers, reductionShardCount) = (exchange.sumSources, exchange.sumSourceCount)
        } else {
            reductionPointers = shardGradientPointers
            reductionShardCount = shards
        }
        shardLoss = .allocate(capacity: shards)
        shardLoss.initialize(repeating: 0, count: shards)
        chunkSquares = .allocate(capacity: optimizer.chunks.count)
        chunkSquares.initialize(repeating: 0, count: optimizer.chunks.count)
        statisticsCounts = network.statisticsCounts
        statisticsSlots = statisticsCounts.map { count in
            let slot = UnsafeMutablePointer<Double>.allocate(capacity: (shards + 1) * count)
            slot.initialize(repeating: 0, count: (shards + 1) * count)
            return slot
        }
        order = Array(0..<Int32(trainingData.count))
        state = TrainingState(configuration: configuration, network: description)
        state.trainingData = data.fingerprint
        state.task = data.task
        state.preprocessing = data.preprocessing
        state.vocabulary = data.vocabulary
        state.kernels = MatrixKernels.current
        timing = StepTiming(workers: pool.workers.count)
    }

    /// A trainer for the network a `NetworkConfiguration` describes (the command line's networks);
    /// the other parameters are the main initializer's.
    public convenience init(
        network description: NetworkConfiguration, data: Dataset, configuration: TrainingConfiguration, workers pool: WorkerPool,
        validation: Dataset? = nil, cluster: Cluster? = nil, fastAllreduce: Bool = false, overlap: Bool = true,
        exchange: ExchangePattern = .auto, chunkElements: Int = 16_384
    ) throws(TrainingError) {
        do { try description.validate() } catch { throw .configuration(error) }
        guard data.features == description.inputSize else {
            throw .configuration(ConfigurationError(.data, "rows of \(data.features) values, the network expects \(description.inputSize)"))
        }
        let model: Sequential, loss: (any Loss)?
        do { (model, loss) = (try description.model(), try description.lossFunction()) } catch { throw .model(error) }
        try self.init(
            model: model, data: data, configuration: configuration, workers: pool, loss: loss, validation: validation, cluster: cluster,
            fastAllreduce: fastAllreduce, overlap: overlap, exchange: exchange, chunkElements: chunkElements, description: description,
            inputShape: description.inputShape, initialization: description.initialization ?? .he)
    }

    deinit {
        shardGradientPointers.deallocate()
        shardLoss.deallocate()
        chunkSquares.deallocate()
        for slot in statisticsSlots { slot.deallocate() }
    }

    /// The BatchNorm sums of `shard` (nil without batch-statistics layers).
    func batchSums(shard: Int) -> BatchSums? {
        statisticsSlots.isEmpty ? nil : BatchSums(
            slots: statisticsSlots, counts: statisticsCounts, shard: shard, shards: configuration.shardsPerBatch,
            batchRows: configuration.batchSize)
    }

    /// Refuses a configuration whose buffers would not fit in this process's ``MemoryBudget``,
    /// naming the figure and the settings that drive it.
    static func checkMemory(network: Network, configuration: TrainingConfiguration, data: Dataset, localShards: Int) throws(TrainingError) {
        let shards = configuration.shardsPerBatch
        let budget = MemoryBudget.current()
        let estimate = MemoryEstimate(
            network: network, shards: shards, localShards: localShards, shardSize: configuration.shardSize,
            samples: data.count)
        guard let estimate, let total = estimate.total, total <= budget.bytes else {
            let parts = estimate.map {
                "\(MemoryBudget.format($0.shardGradients)) for \(shards) shard gradient buffers ({batchSize} \(configuration.batchSize) / {shardSize} \(configuration.shardSize)) of \(network.layout.parameterCount) parameters ({hiddenSizes}), "
                    + "\(MemoryBudget.format($0.workspaces)) for \(localShards) workspaces of \(configuration.shardSize) rows, \(MemoryBudget.format($0.parameters + $0.data)) for parameters and data"
            } ?? "more than can be addressed"
            let needed = estimate?.total.map(MemoryBudget.format) ?? "more than can be addressed"
            throw .configuration(ConfigurationError(.memory, "training needs about \(needed) (\(parts)), more than the \(budget) available"))
        }
    }

    /// The pool's number of workers.
    public var workerCount: Int { pool.workers.count }
    /// Optimisation steps per epoch (the last partial batch is dropped).
    public var stepsPerEpoch: Int { configuration.stepsPerEpoch ?? trainingData.count / configuration.batchSize }
    /// Whether ranks combine gradients with a plain all-reduce (not reproducible across rank counts).
    public var fastAllreduce: Bool { exchange?.fast ?? false }
    /// Under MPI: whether the exchange overlaps the backward pass.
    public var overlapsExchange: Bool { overlapped != nil }
    /// Under MPI: the bytes this rank sends and receives per step.
    public var traffic: Traffic? { exchange?.traffic }

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

    /// Sets the sample order of `epoch`: a permutation drawn from (seed, shuffle, epoch).
    public func shuffle(epoch: Int) {
        RandomAddress(seed: configuration.seed, purpose: .shuffle, step: UInt32(epoch)).shuffle(&order)
    }

    /// Puts a checkpoint's parameters, optimizer state and training state in place (before any step).
    public func restore(from checkpoint: Checkpoint.Contents<TrainingState>) throws(TrainingError) {
        guard checkpoint.state.configuration == configuration else {
            throw .checkpoint(CheckpointError("\(checkpoint.path): trained with another configuration than this trainer's"))
        }
        if let stored = checkpoint.state.trainingData, stored != state.trainingData {
            throw .checkpoint(CheckpointError("\(checkpoint.path): trained on other data (\(stored)); the data given now is \(state.trainingData.map(\.description) ?? "unknown")"))
        }
        do { try checkpoint.state.validate() } catch { throw .checkpoint(CheckpointError("\(checkpoint.path)/state.json: \(error)")) }
        if let stored = checkpoint.state.preprocessing, stored != state.preprocessing {
            throw .checkpoint(CheckpointError("\(checkpoint.path): trained on inputs preprocessed as \(stored.kind) (statistics included); the data given now is preprocessed as \(state.preprocessing?.kind ?? "none")"))
        }
        // The counters must say the same thing for this data: global step = finished epochs' steps + steps into this one.
        let finishedSteps = checkpoint.state.epoch.multipliedReportingOverflow(by: stepsPerEpoch)
        guard checkpoint.state.stepInEpoch <= stepsPerEpoch, !finishedSteps.overflow,
              checkpoint.state.globalStep == finishedSteps.partialValue + checkpoint.state.stepInEpoch
        else {
            throw .checkpoint(CheckpointError("\(checkpoint.path)/state.json: global step \(checkpoint.state.globalStep) at epoch \(checkpoint.state.epoch + 1), step \(checkpoint.state.stepInEpoch), expected \(stepsPerEpoch) steps an epoch"))
        }
        guard checkpoint.parameters.count == parameters.count, checkpoint.optimizerState.count == optimizer.state.count else {
            throw .checkpoint(CheckpointError("\(checkpoint.path): \(checkpoint.parameters.count) parameters, the model has \(parameters.count)"))
        }
        checkpoint.parameters.withUnsafeBufferPointer { parameters.pointer.update(from: $0.baseAddress!, count: $0.count) }
        checkpoint.optimizerState.withUnsafeBufferPointer { optimizer.state.pointer.update(from: $0.baseAddress!, count: $0.count) }
        let fingerprint = state.trainingData
        state = checkpoint.state
        state.trainingData = fingerprint
        state.preprocessing = state.preprocessing ?? Preprocessing.none
        optimizer.stepsTaken = state.globalStep
    }

    /// Whether training is over: every epoch trained, or early stopping's patience ran out.
    public var isFinished: Bool {
        state.epoch >= configuration.epochs
            || configuration.earlyStoppingPatience.map { (state.epochsWithoutImprovement ?? 0) >= $0 } == true
    }

    /// The tensor whose gradient was NaN or infinite in the last step, if any.
    public var nonFiniteGradientTensor: String? {
        let chunk = badChunk.value.load(ordering: .relaxed)
        return chunk == Int.max ? nil : optimizer.tensorName(ofChunk: chunk, in: network.layout)
    }

    /// SHA-256 of all parameters' float32 bytes, little-endian, in layout order (each layer's weight, then bias).
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
