// Trains a network with a layer of this package's own on MNIST, through the Shardwise library.
// Usage: TrainMNIST [MNIST folder] [epochs] [training samples]
import CustomLayers
import Shardwise

let arguments = CommandLine.arguments
let folder = arguments.count > 1 ? arguments[1] : nil
let epochs = arguments.count > 2 ? Int(arguments[2]) ?? 1 : 1
let samples = arguments.count > 3 ? Int(arguments[3]) : nil

var mnist = try MNIST.load(directory: folder)
if let samples { mnist.train = mnist.train.prefix(samples) }

let model = Sequential {
    UniformNoise(amplitude: 0.05)
    Linear(784, 256); Swish(); Dropout(0.3)
    Linear(256, 256); Swish(); Dropout(0.3)
    Linear(256, 10)
}
let configuration = TrainingConfiguration(
    optimizer: OptimizerConfiguration(learningRate: 0.05, momentum: MomentumRamp(start: 0.9, end: 0.9, epochs: 0), maxNorm: 3.5),
    epochs: epochs, batchSize: 128, shardSize: 64, seed: 1)

let workers = try WorkerPool.onThisMachine()
let trainer = try Trainer(model: model, data: mnist.train, configuration: configuration, workers: workers)
for try await event in trainer.fit(test: mnist.test) {
    if case .epoch(let record) = event, let error = record.testErrorPercent {
        print("epoch \(record.epoch): train loss \(record.trainLoss), test error \(error)%")
    }
}
print("weights sha256 \(trainer.weightsSHA256)")
workers.shutdown()
