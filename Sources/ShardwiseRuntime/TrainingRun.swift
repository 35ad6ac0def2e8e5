import Foundation
import ShardwiseData
import ShardwiseKernels
import ShardwiseLayers

public enum Shardwise {
    public static let version = "0.1.0"
}

/// One epoch's line of `metrics.jsonl`.
public struct EpochRecord: Codable, Sendable, Equatable {
    public var epoch: Int
    public var trainLoss: Double
    public var testErrorPercent: Double
    public var samplesPerSecond: Double
    public var seconds: Double
}

/// `summary.json`: the configuration, the result and how it was computed.
public struct RunSummary: Codable, Sendable {
    public var version: String
    public var configuration: TrainingConfiguration
    public var finalTestErrorPercent: Double
    public var samplesPerSecond: Double
    public var wallSeconds: Double
    public var weightsSha256: String
    public var blas: BLASInfo
    public var trainSamples: Int
    public var testSamples: Int
    public var dataDirectory: String
    public var epochs: [EpochRecord]
}

/// Where a run reads its data and writes its results.
public struct RunOptions: Sendable {
    public var dataDirectory: String?
    public var outDirectory: String?
    /// Use only the first N training / test samples (tests and quick looks).
    public var trainLimit: Int?
    public var testLimit: Int?

    public init(dataDirectory: String? = nil, outDirectory: String? = nil, trainLimit: Int? = nil, testLimit: Int? = nil) {
        self.dataDirectory = dataDirectory
        self.outDirectory = outDirectory
        self.trainLimit = trainLimit
        self.testLimit = testLimit
    }
}

/// A failure that ends a run, with a one-line message for the user.
public struct RunError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// The `train` command: load data, train epoch by epoch, evaluate, report, write outputs.
public enum TrainingRun {
    public static func run(
        configuration: TrainingConfiguration, options: RunOptions, console: Console = Console()
    ) throws -> RunSummary {
        try configuration.validate()
        let blas: BLASInfo
        do { blas = try BLAS.load() } catch { throw RunError(error.description) }
        if !blas.fastKernels {
            console.warn("BLAS runs slow kernels (\(blas.kernels), \(blas.cpu)); expect low throughput")
        }
        var mnist: MNIST
        do { mnist = try MNIST.load(directory: options.dataDirectory) } catch { throw RunError(error.description) }
        if let limit = options.trainLimit { mnist.train = mnist.train.prefix(limit) }
        if let limit = options.testLimit { mnist.test = mnist.test.prefix(limit) }
        if let out = options.outDirectory {
            do { try AtomicFile.makeDirectory(out) } catch { throw RunError(error.description) }
        }

        let trainer: Trainer
        do { trainer = try Trainer(configuration: configuration, train: mnist.train) } catch { throw RunError("\(error)") }
        console.line(
            "shardwise \(Shardwise.version): \(describe(configuration.network)), \(trainer.network.layout.parameterCount) parameters, "
                + "\(mnist.train.count) training / \(mnist.test.count) test samples from \(mnist.directory); "
                + "BLAS \(blas.kernels) kernels")

        let wallStart = monotonicSeconds()
        var records: [EpochRecord] = []
        var trainingSeconds = 0.0
        let steps = trainer.stepsPerEpoch
        let samplesPerEpoch = steps * configuration.batchSize
        for epoch in 0..<configuration.epochs {
            trainer.shuffle(epoch: epoch)
            let start = monotonicSeconds()
            var lossSum = 0.0
            for s in 0..<steps {
                lossSum += trainer.step(epoch: epoch, stepInEpoch: s)
                let elapsed = monotonicSeconds() - start
                console.progress(
                    epoch: epoch + 1, of: configuration.epochs, done: s + 1, total: steps, elapsed: elapsed,
                    samplesPerSecond: Double((s + 1) * configuration.batchSize) / elapsed,
                    loss: lossSum / Double((s + 1) * configuration.batchSize))
            }
            let seconds = monotonicSeconds() - start
            trainingSeconds += seconds
            let trainLoss = lossSum / Double(samplesPerEpoch)
            guard trainLoss.isFinite else {
                throw RunError("training diverged at epoch \(epoch + 1): the loss is \(trainLoss); lower --lr (now \(configuration.optimizer.learningRate))")
            }
            let test = trainer.evaluate(mnist.test)
            let record = EpochRecord(
                epoch: epoch + 1, trainLoss: trainLoss, testErrorPercent: test.errorPercent,
                samplesPerSecond: Double(samplesPerEpoch) / seconds, seconds: seconds)
            records.append(record)
            console.epochDone(record, of: configuration.epochs)
            if let out = options.outDirectory {
                let lines = try records.map { String(decoding: try jsonEncoder(pretty: false).encode($0), as: UTF8.self) + "\n" }
                do { try AtomicFile.write(lines.joined(), to: "\(out)/metrics.jsonl") } catch { throw RunError(error.description) }
            }
        }

        let summary = RunSummary(
            version: Shardwise.version, configuration: configuration,
            finalTestErrorPercent: records.last!.testErrorPercent,
            samplesPerSecond: Double(samplesPerEpoch * configuration.epochs) / trainingSeconds,
            wallSeconds: monotonicSeconds() - wallStart, weightsSha256: trainer.weightsSHA256, blas: blas,
            trainSamples: mnist.train.count, testSamples: mnist.test.count, dataDirectory: mnist.directory,
            epochs: records)
        if let out = options.outDirectory {
            let json = String(decoding: try jsonEncoder(pretty: true).encode(summary), as: UTF8.self) + "\n"
            do { try AtomicFile.write(json, to: "\(out)/summary.json") } catch { throw RunError(error.description) }
        }
        console.line(String(format: "test error %.2f%% | weights sha256 %@", summary.finalTestErrorPercent, summary.weightsSha256))
        return summary
    }

    static func describe(_ network: NetworkConfiguration) -> String {
        let sizes = ([network.inputSize] + network.hiddenSizes + [network.outputSize]).map(String.init).joined(separator: "-")
        return "\(sizes) ReLU, dropout \(network.dropoutInput) input / \(network.dropoutHidden) hidden"
    }

    public static func jsonEncoder(pretty: Bool) -> JSONEncoder {
        let encoder = JSONEncoder()
        encoder.keyEncodingStrategy = .convertToSnakeCase
        encoder.outputFormatting = pretty ? [.prettyPrinted, .sortedKeys] : [.sortedKeys]
        return encoder
    }
}
