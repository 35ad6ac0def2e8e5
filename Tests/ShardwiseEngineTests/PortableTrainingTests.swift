import Foundation
import Shardwise
import ShardwiseApp
import XCTest

/// Training on the portable kernels: the same weights whatever the instruction set (scalar,
/// AVX2, AVX-512 where present), for 1 and 3 workers, with every dropout kind and the
/// schedules whose rates come from transcendental functions.
final class PortableTrainingTests: XCTestCase {
    override func tearDown() {
        try? MatrixKernels.select(.blas, isa: MatrixKernels.availableISAs.last!)
    }

    func train(_ configuration: RunConfiguration, data: Dataset, workers: Int, steps: Int) async throws -> String {
        let pool = try WorkerPool.onThisMachine(workers: workers, oversubscribe: true)
        defer { pool.shutdown() }
        let trainer = try Trainer(network: configuration.network, data: data, configuration: configuration.training, workers: pool)
        var taken = 0
        for epoch in 0..<configuration.epochs {
            trainer.shuffle(epoch: epoch)
            for s in 0..<trainer.stepsPerEpoch where taken < steps {
                _ = try await trainer.step(epoch: epoch, stepInEpoch: s)
                taken += 1
            }
        }
        return trainer.weightsSHA256
    }

    func testEveryInstructionSetTrainsTheSameWeights() async throws {
        let data = syntheticDataset(count: 2048, features: 96, seed: 4)
        for (kind, schedule) in [(DropoutKind.bernoulli, LearningRateSchedule.cosine(epochs: 2, floor: 0.1)),
                                 (.gaussian, .exponential(gamma: 0.7)), (.dropconnect, .step(every: 1, gamma: 0.5))] {
            var configuration = RunConfiguration(
                network: NetworkConfiguration(inputSize: 96, hiddenSizes: [64, 32], outputSize: 10, dropoutInput: 0.2, dropoutHidden: 0.5, dropoutKind: kind),
                training: .reference(epochs: 2))
            configuration.batchSize = 64
            configuration.shardSize = 16
            configuration.optimizer.schedule = schedule
            var hashes: [String: String] = [:]
            for isa in MatrixKernels.availableISAs {
                try MatrixKernels.select(.portable, isa: isa)
                for workers in [1, 3] {
                    hashes["\(isa), \(workers) workers"] = try await train(configuration, data: data, workers: workers, steps: 24)
                }
            }
            XCTAssertEqual(Set(hashes.values).count, 1, "\(kind): \(hashes)")
            try MatrixKernels.select(.blas)
            let blas = try await train(configuration, data: data, workers: 1, steps: 24)
            XCTAssertNotEqual(blas, hashes.values.first, "\(kind): the BLAS path happens to give the portable bits")
        }
    }
}
