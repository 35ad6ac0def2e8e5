@testable import ShardwiseEngine
import ShardwiseApp
import ShardwiseKernels
import ShardwiseLayers
import ShardwiseTopology
import XCTest

/// The parallel reduction equals a plain sequential sum-and-update, bit for bit,
/// over seeds, chunk sizes and worker counts. Also run under ThreadSanitizer (make test).
final class ReductionTests: XCTestCase {
    func testParallelReductionEqualsSequentialSum() async throws {
        for workers in [1, 2, 3, 5] {
            let pool = try WorkerPool.onThisMachine(workers: workers, oversubscribe: true)
            for chunkElements in [16, 100, 1_000, 16_384] {
                for seed in UInt64(0)..<4 {
                    let shards = Int(seed) + 1
                    let configuration = RunConfiguration(
                        network: NetworkConfiguration(inputSize: 20, hiddenSizes: [33, 17], outputSize: 10, dropoutInput: 0, dropoutHidden: 0.5), training: TrainingConfiguration(
                        optimizer: OptimizerConfiguration(learningRate: 0.1, momentum: MomentumRamp(start: 0.9, end: 0.9, epochs: 0), weightDecay: 1e-4),
                        epochs: 1, batchSize: 4 * shards, shardSize: 4, seed: seed))
                    let trainer = try Trainer(
                        network: configuration.network, data: syntheticDataset(count: 64, seed: seed), configuration: configuration.training,
                        workers: pool, chunkElements: chunkElements)
                    let count = trainer.network.layout.count
                    let stream = RandomAddress(seed: seed, purpose: .synthetic)
                    for (s, buffer) in trainer.shardGradients.enumerated() {
                        for i in 0..<count { buffer[i] = stream.uniform(s * count + i) - 0.5 }
                    }
                    let expected = FloatBuffer(count: count), velocity = FloatBuffer(count: count)
                    expected.copy(from: trainer.parameters)
                    let hyper = UpdateHyperparameters(learningRate: 0.1, momentum: 0.9, weightDecay: 1e-4)
                    for step in 0..<2 {
                        for tensor in trainer.network.layout.tensors {
                            SGDKernel.updateReference(
                                range: tensor.offset..<tensor.offset + tensor.count, weights: expected.pointer,
                                gradients: trainer.shardGradientPointers, shardCount: shards,
                                velocity: velocity.pointer, hyper: hyper, firstStep: step == 0)
                        }
                        await trainer.reduceOnly(hyperparameters: hyper)
                        trainer.optimizer.stepsTaken += 1
                    }
                    XCTAssertEqual(trainer.parameters.array, expected.array, "workers \(workers) chunk \(chunkElements) seed \(seed)")
                    XCTAssertEqual(trainer.optimizer.state.array, velocity.array)
                }
            }
            pool.shutdown()
        }
    }
}

final class ShardMemoryTests: XCTestCase {
    /// Each shard's gradient and workspace memory sits on the NUMA node of the worker that computes it.
    func testShardBuffersLiveOnTheirWorkersNode() throws {
        let pool = try WorkerPool.onThisMachine(workers: 2, oversubscribe: true)
        defer { pool.shutdown() }
        var configuration = RunConfiguration.reference()
        configuration.network.hiddenSizes = [32]
        configuration.batchSize = 8 * 5
        configuration.shardSize = 8
        let trainer = try Trainer(network: configuration.network, data: syntheticDataset(count: 64, features: 784, seed: 1), configuration: configuration.training, workers: pool)
        let topology = try ShardwiseTopology.Topology.thisMachine()
        for shard in 0..<configuration.shardsPerBatch {
            let owner = Trainer.owner(ofShard: shard, shards: configuration.shardsPerBatch, workers: 2)
            XCTAssert(trainer.shards(of: owner).contains(shard), "shard \(shard) owner \(owner)")
            guard let node = pool.workers[owner].placement.memoryNode else { continue }
            let buffer = trainer.shardGradients[shard]
            XCTAssertEqual(topology.memoryLocation(of: buffer.pointer, bytes: buffer.count * 4), [node], "shard \(shard)")
        }
    }
}

/// Which ordered exchange `--exchange auto` takes: the one whose transfers take less time,
/// in units of one gradient's transfer (both give the same weights; MPITests checks that).
final class ExchangePatternTests: XCTestCase {
    func testAutoTakesTheChainOnlyWhereItMovesLess() {
        // The reference network: its largest layer (1024 x 1024 + 1024) is 36% of the parameters.
        let reference = 1_049_600.0 / 2_913_290.0
        func pick(_ ranks: Int, _ k: Int, overlap: Bool = true, _ fraction: Double = reference) -> RankExchange.Pattern {
            RankExchange.faster(ranks: ranks, shardsOnBusiestRank: k, largestLayerFraction: fraction, overlap: overlap)
        }
        // One shard a rank: the scatter is a ring all-reduce's bytes, which the chain cannot beat.
        XCTAssertEqual(pick(2, 1), .scatter)
        XCTAssertEqual(pick(8, 1), .scatter)
        // Two ranks: the scatter sends (k + 1)/2 gradients, the overlapped chain about 1.7.
        XCTAssertEqual(pick(2, 2), .scatter)
        XCTAssertEqual(pick(2, 3), .chain)
        XCTAssertEqual(pick(2, 16), .chain)
        // Without overlap the chain runs its two directions one after the other: 2 gradients.
        XCTAssertEqual(pick(2, 3, overlap: false), .scatter)
        XCTAssertEqual(pick(2, 4, overlap: false), .chain)
        // Many ranks: the chain's pipeline fill grows with them; many shards a rank still favour it.
        XCTAssertEqual(pick(16, 4), .scatter)
        XCTAssertEqual(pick(16, 16), .chain)
        XCTAssertEqual(pick(16, 64, overlap: false), .chain)
        XCTAssertEqual(pick(16, 16, overlap: false), .scatter)
        // A network with one dominant layer pipelines badly: the scatter up to 3 shards a rank.
        XCTAssertEqual(pick(2, 4, 0.85), .scatter)
        XCTAssertEqual(pick(2, 8, 0.85), .chain)
    }
}
