@testable import ShardwiseRuntime
import ShardwiseKernels
import ShardwiseLayers
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
                    let configuration = TrainingConfiguration(
                        network: NetworkConfiguration(inputSize: 20, hiddenSizes: [33, 17], outputSize: 10, dropoutInput: 0, dropoutHidden: 0.5),
                        optimizer: OptimizerConfiguration(learningRate: 0.1, momentum: MomentumRamp(start: 0.9, end: 0.9, epochs: 0), weightDecay: 1e-4),
                        epochs: 1, batchSize: 4 * shards, shardSize: 4, seed: seed)
                    let trainer = try Trainer(
                        configuration: configuration, train: syntheticDataset(count: 64, seed: seed), pool: pool, chunkElements: chunkElements)
                    let count = trainer.network.layout.count
                    let stream = RandomAddress(seed: seed, purpose: .synthetic)
                    for (s, buffer) in trainer.shardGradients.enumerated() {
                        for i in 0..<count { buffer[i] = stream.uniform(s * count + i) - 0.5 }
                    }
                    let expected = FloatBuffer(count: count), velocity = FloatBuffer(count: count)
                    expected.copy(from: trainer.parameters)
                    let hyper = SGDHyperparameters(learningRate: 0.1, momentum: 0.9, weightDecay: 1e-4)
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
                    XCTAssertEqual(trainer.optimizer.velocity.array, velocity.array)
                }
            }
            pool.shutdown()
        }
    }
}
