import ShardwiseData
import ShardwiseKernels
import ShardwiseLayers

/// The training loop's state and one optimisation step, on one worker.
///
/// A step cuts the global batch into `shardsPerBatch` shards of `shardSize`
/// samples. Each shard runs forward and backward into its own gradient buffer,
/// drawing dropout masks addressed by (seed, step, global-batch position); then
/// the shard gradients are summed in shard order and the optimizer updates the
/// weights. Because nothing depends on which thread computed a shard, the
/// data-parallel engine can hand shards to any worker and get the same bits.
public final class Trainer: @unchecked Sendable {
    public let configuration: TrainingConfiguration
    public let network: Network
    public let parameters: FloatBuffer
    public let optimizer: SGDOptimizer
    /// One gradient buffer per shard of the global batch.
    let shardGradients: [FloatBuffer]
    let workspaces: [Workspace]
    let train: Dataset
    let trainImages: FloatBuffer
    /// The current epoch's sample order.
    public private(set) var order: [Int32]
    /// Optimisation steps taken so far, across epochs.
    public private(set) var globalStep = 0

    /// Throws `TrainingError` for a bad setting and `BLASError` when no BLAS can be loaded.
    public init(configuration: TrainingConfiguration, train: Dataset) throws {
        _ = try BLAS.load()
        try configuration.validate(trainingSamples: train.count, features: train.features, classes: train.classes)
        self.configuration = configuration
        self.train = train
        let network = Network(configuration.network)
        self.network = network
        parameters = FloatBuffer(count: network.layout.count)
        network.initialize(parameters: parameters, seed: configuration.seed)
        optimizer = SGDOptimizer(configuration: configuration.optimizer, parameterCount: network.layout.count)
        shardGradients = (0..<configuration.shardsPerBatch).map { _ in FloatBuffer(count: network.layout.count) }
        workspaces = (0..<configuration.shardsPerBatch).map { _ in
            Workspace(network: network, capacity: configuration.shardSize)
        }
        let images = FloatBuffer(count: train.images.count)
        train.images.withUnsafeBufferPointer { images.pointer.update(from: $0.baseAddress!, count: $0.count) }
        trainImages = images
        order = Array(0..<Int32(train.count))
    }

    public var stepsPerEpoch: Int { train.count / configuration.batchSize }

    /// Shuffles the training set for `epoch`: Fisher-Yates driven by the stream (seed, shuffle, epoch).
    public func shuffle(epoch: Int) {
        let stream = RandomAddress(seed: configuration.seed, purpose: .shuffle, step: UInt32(epoch))
        for i in 0..<order.count { order[i] = Int32(i) }
        for i in stride(from: order.count - 1, to: 0, by: -1) {
            order.swapAt(i, stream.integer(i, below: i + 1))
        }
    }

    /// Runs one optimisation step on batch `stepInEpoch` of `epoch` and returns the batch's loss sum.
    public func step(epoch: Int, stepInEpoch: Int) -> Double {
        let progress = Double(epoch) + Double(stepInEpoch) / Double(stepsPerEpoch)
        var loss = 0.0
        for shard in 0..<configuration.shardsPerBatch {
            loss += computeShard(shard, stepInEpoch: stepInEpoch)
        }
        reduceAndUpdate(range: 0..<network.layout.count, hyperparameters: configuration.optimizer.hyperparameters(progress: progress))
        optimizer.applyMaxNorm(network: network, parameters: parameters.pointer)
        optimizer.stepsTaken += 1
        globalStep += 1
        return loss
    }

    /// Forward and backward for one shard into its own gradient buffer.
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
        return network.backward(
            parameters: parameters.pointer, workspace: ws, rows: n, lossDivisor: configuration.batchSize,
            gradient: shardGradients[shard].pointer)
    }

    /// Sums the shard gradients over `range` in shard order, into shard 0's buffer, and applies the update there.
    func reduceAndUpdate(range: Range<Int>, hyperparameters: SGDHyperparameters) {
        let total = shardGradients[0].pointer + range.lowerBound
        for shard in 1..<max(1, configuration.shardsPerBatch) {
            Elementwise.add(count: range.count, a: total, b: shardGradients[shard].pointer + range.lowerBound, out: total)
        }
        optimizer.update(
            range: range, parameters: parameters.pointer, gradient: shardGradients[0].pointer,
            hyperparameters: hyperparameters)
    }

    /// Test error in percent and mean loss, with dropout off.
    public func evaluate(_ data: Dataset) -> (errorPercent: Double, loss: Double) {
        let ws = workspaces[0]
        let features = data.features
        var errors = 0
        var loss = 0.0
        var start = 0
        while start < data.count {
            let n = min(ws.capacity, data.count - start)
            data.images.withUnsafeBufferPointer { images in
                ws.input.update(from: images.baseAddress! + start * features, count: n * features)
            }
            for r in 0..<n { ws.labels[r] = data.labels[start + r] }
            network.forward(parameters: parameters.pointer, workspace: ws, rows: n, dropout: nil)
            errors += network.countErrors(workspace: ws, rows: n)
            loss += network.loss(workspace: ws, rows: n)
            start += n
        }
        return (100 * Double(errors) / Double(data.count), loss / Double(data.count))
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
