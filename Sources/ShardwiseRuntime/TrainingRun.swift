import Foundation
import ShardwiseData
import ShardwiseKernels
import ShardwiseLayers
import ShardwiseTopology

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
    public var workers: Int
    public var shardSize: Int
    public var placement: PlacementPlan
    public var pinned: Bool
    /// Mean seconds per step per worker: computing shards, waiting at the barrier, reducing.
    public var stepSeconds: StepSplit
    public var blas: BLASInfo
    public var trainSamples: Int
    public var testSamples: Int
    public var dataDirectory: String
    public var epochs: [EpochRecord]
}

public struct StepSplit: Codable, Sendable {
    public var compute: Double
    public var waiting: Double
    public var reduction: Double
}

/// Where a run reads its data and writes its results, and which workers train it.
public struct RunOptions: Sendable {
    public var dataDirectory: String?
    public var outDirectory: String?
    /// Worker count; nil means one per core of this machine.
    public var workers: Int?
    public var policy: PlacementPolicy = .compact
    public var smt = false
    public var oversubscribe = false
    /// Use only the first N training / test samples (tests and quick looks).
    public var trainLimit: Int?
    public var testLimit: Int?

    public init(
        dataDirectory: String? = nil, outDirectory: String? = nil, workers: Int? = nil, trainLimit: Int? = nil, testLimit: Int? = nil
    ) {
        self.workers = workers
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
    ) async throws -> RunSummary {
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

        let pool: WorkerPool
        do {
            pool = try WorkerPool.onThisMachine(
                workers: options.workers, policy: options.policy, smt: options.smt, oversubscribe: options.oversubscribe)
        } catch { throw RunError("\(error)") }
        defer { pool.shutdown() }
        for note in pool.plan.notes { console.warn(note) }
        if let report = pool.pinningReport { console.warn(report) }
        let trainer: Trainer
        do { trainer = try Trainer(configuration: configuration, train: mnist.train, pool: pool) } catch { throw RunError("\(error)") }
        console.line(
            "shardwise \(Shardwise.version): \(describe(configuration.network)), \(trainer.network.layout.parameterCount) parameters, "
                + "\(mnist.train.count) training / \(mnist.test.count) test samples from \(mnist.directory); "
                + "\(pool.workers.count) workers (\(options.policy.rawValue)), shards of \(configuration.shardSize); BLAS \(blas.kernels) kernels")
        // The loop itself runs on worker 0: while it awaits a step, that thread runs
        // worker 0's share, and no thread of the global executor is involved.
        return try await withTaskExecutorPreference(pool.workers[0]) {
            try await loop(trainer: trainer, mnist: mnist, configuration: configuration, options: options, blas: blas, console: console)
        }
    }

    static func loop(
        trainer: Trainer, mnist: MNIST, configuration: TrainingConfiguration, options: RunOptions, blas: BLASInfo, console: Console
    ) async throws -> RunSummary {

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
                lossSum += await trainer.step(epoch: epoch, stepInEpoch: s)
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
            let test = await trainer.evaluate(mnist.test)
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

        let stepCount = Double(trainer.globalStep)
        let split = trainer.timing.meanSeconds
        let summary = RunSummary(
            version: Shardwise.version, configuration: configuration,
            finalTestErrorPercent: records.last!.testErrorPercent,
            samplesPerSecond: Double(samplesPerEpoch * configuration.epochs) / trainingSeconds,
            wallSeconds: monotonicSeconds() - wallStart, weightsSha256: trainer.weightsSHA256,
            workers: trainer.workerCount, shardSize: configuration.shardSize, placement: trainer.pool.plan,
            pinned: trainer.pool.allPinned,
            stepSeconds: StepSplit(compute: split.compute / stepCount, waiting: split.waiting / stepCount, reduction: split.reduction / stepCount),
            blas: blas,
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
        encoder.outputFormatting = pretty ? [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes] : [.sortedKeys, .withoutEscapingSlashes]
        return encoder
    }
}
