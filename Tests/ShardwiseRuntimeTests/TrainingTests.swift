import ShardwiseData
import ShardwiseKernels
import ShardwiseLayers
import ShardwiseRuntime
import XCTest

#if canImport(Glibc)
import Glibc
#endif

func sharedMNISTFolder() throws -> String {
    let candidates = ["../shared/datasets/mnist", "../../shared/datasets/mnist"]
    guard let folder = candidates.first(where: { access("\($0)/train-labels-idx1-ubyte.gz", R_OK) == 0 }) else {
        throw XCTSkip("../shared/datasets/mnist is absent; MNIST training tests skipped")
    }
    return folder
}

/// A small problem with a learnable rule, for tests that must not need MNIST:
/// the label is the index of the largest of the first 10 features.
func syntheticDataset(count: Int, features: Int = 20, seed: UInt64) -> Dataset {
    let stream = RandomAddress(seed: seed, purpose: .synthetic)
    var images = [Float](repeating: 0, count: count * features)
    var labels = [Int32](repeating: 0, count: count)
    for n in 0..<count {
        for f in 0..<features { images[n * features + f] = stream.uniform(n * features + f) }
        labels[n] = Int32((0..<10).max { images[n * features + $0] < images[n * features + $1] }!)
    }
    return Dataset(features: features, classes: 10, images: images, labels: labels)
}

final class TrainingTests: XCTestCase {
    func smallConfiguration(seed: UInt64 = 1, shardSize: Int = 8) -> TrainingConfiguration {
        TrainingConfiguration(
            network: NetworkConfiguration(inputSize: 20, hiddenSizes: [32, 32], outputSize: 10, dropoutInput: 0.1, dropoutHidden: 0.3),
            optimizer: OptimizerConfiguration(
                learningRate: 0.05, schedule: .cosine(epochs: 3, floor: 0.1),
                momentum: MomentumRamp(start: 0.5, end: 0.9, epochs: 1), maxNorm: 3),
            epochs: 3, batchSize: 32, shardSize: shardSize, seed: seed)
    }

    func train(_ configuration: TrainingConfiguration, data: Dataset) throws -> Trainer {
        let trainer = try Trainer(configuration: configuration, train: data)
        for epoch in 0..<configuration.epochs {
            trainer.shuffle(epoch: epoch)
            for s in 0..<trainer.stepsPerEpoch { _ = trainer.step(epoch: epoch, stepInEpoch: s) }
        }
        return trainer
    }

    /// The same configuration and seed give the same weights; another seed does not.
    func testSameSeedSameWeights() throws {
        let data = syntheticDataset(count: 512, seed: 3)
        let a = try train(smallConfiguration(), data: data).weightsSHA256
        let b = try train(smallConfiguration(), data: data).weightsSHA256
        let c = try train(smallConfiguration(seed: 2), data: data).weightsSHA256
        XCTAssertEqual(a, b)
        XCTAssertNotEqual(a, c)
    }

    func testShuffleIsAPermutationThatDependsOnEpochAndSeed() throws {
        let data = syntheticDataset(count: 100, seed: 3)
        let trainer = try Trainer(configuration: smallConfiguration(), train: data)
        trainer.shuffle(epoch: 0)
        let first = trainer.order
        XCTAssertEqual(Set(first), Set(0..<100))
        trainer.shuffle(epoch: 1)
        XCTAssertNotEqual(trainer.order, first)
        trainer.shuffle(epoch: 0)
        XCTAssertEqual(trainer.order, first)
    }

    func testLearnsSyntheticRule() throws {
        let data = syntheticDataset(count: 2048, seed: 3)
        var configuration = smallConfiguration()
        configuration.epochs = 10
        configuration.optimizer.schedule = .cosine(epochs: 10, floor: 0.05)
        let trainer = try train(configuration, data: data)
        let error = trainer.evaluate(syntheticDataset(count: 1000, seed: 99)).errorPercent
        XCTAssertLessThan(error, 25, "a 10-way argmax rule should be learnt well past chance (90% error)")
    }

    /// End to end on MNIST: 10,000 training samples, 2 epochs, 3x256 with dropout,
    /// must beat 94% test accuracy on the first 2,000 test images (a linear model gets ~90%).
    func testMNISTSubsetAccuracy() throws {
        let folder = try sharedMNISTFolder()
        var configuration = TrainingConfiguration.reference(epochs: 2)
        configuration.network.hiddenSizes = [256, 256, 256]
        var lines: [String] = []
        let summary = try TrainingRun.run(
            configuration: configuration,
            options: RunOptions(dataDirectory: folder, trainLimit: 10_000, testLimit: 2_000),
            console: Console { lines.append($0) })
        XCTAssertLessThan(summary.finalTestErrorPercent, 6.0)
        XCTAssertEqual(summary.epochs.count, 2)
        XCTAssert(lines.last!.hasPrefix(String(format: "test error %.2f%% | weights sha256 ", summary.finalTestErrorPercent)))
        XCTAssertEqual(summary.weightsSha256.count, 64)
    }

    func testValidationNamesTheSetting() {
        func problem(_ change: (inout TrainingConfiguration) -> Void) -> String {
            var configuration = smallConfiguration()
            change(&configuration)
            do {
                try configuration.validate()
                return "valid"
            } catch {
                return error.description
            }
        }
        XCTAssertEqual(problem { _ in }, "valid")
        XCTAssertEqual(problem { $0.network.dropoutInput = 1 }, "--dropout-input: 1.0, expected a probability in [0, 1)")
        XCTAssertEqual(problem { $0.network.dropoutHidden = -0.1 }, "--dropout-hidden: -0.1, expected a probability in [0, 1)")
        XCTAssertEqual(problem { $0.batchSize = 0 }, "--batch-size: 0, expected a positive number of samples")
        XCTAssertEqual(problem { $0.batchSize = 30 }, "--batch-size: 30 is not a whole number of shards of 8 (--shard-size)")
        XCTAssertEqual(problem { $0.network.hiddenSizes = [] }, "--layers: no hidden layers given, expected sizes like 1024,1024,1024")
        XCTAssertEqual(problem { $0.network.hiddenSizes = [4, 0] }, "--layers: layer size 0 in 4,0, expected positive sizes")
        XCTAssertEqual(problem { $0.optimizer.learningRate = 0 }, "--lr: 0.0, expected a positive learning rate")
        XCTAssertEqual(problem { $0.optimizer.maxNorm = -1 }, "--max-norm: -1.0, expected a positive norm bound")
    }
}
