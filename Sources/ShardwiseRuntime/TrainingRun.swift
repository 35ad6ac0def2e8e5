import Foundation
import ShardwiseData
import ShardwiseKernels
import ShardwiseLayers
import ShardwiseTopology
import Synchronization

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
    /// With --validation: the error on the held-out training samples.
    public var validationErrorPercent: Double?

    public init(epoch: Int, trainLoss: Double, testErrorPercent: Double, samplesPerSecond: Double, seconds: Double) {
        self.epoch = epoch
        self.trainLoss = trainLoss
        self.testErrorPercent = testErrorPercent
        self.samplesPerSecond = samplesPerSecond
        self.seconds = seconds
    }
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
    /// With --validation: the epoch (1-based) of the lowest validation error, and its errors.
    public var bestEpoch: Int?
    public var bestValidationErrorPercent: Double?
    public var bestTestErrorPercent: Double?
    public var validationSamples: Int?
    /// Whether early stopping ended the run before its last epoch.
    public var stoppedEarly: Bool?
    /// Under MPI: the number of ranks (workers is per rank) and how their gradients were
    /// combined ("ordered": bit-identical to one process; "fast": MPI_Allreduce).
    public var ranks: Int?
    public var crossRank: String?
}

extension Dataset {
    /// Holds out `count` samples for validation: the first `count` of a permutation drawn from
    /// (seed, validation split), so the same samples for a seed whatever the worker count.
    /// Both parts keep the original order.
    public func splitValidation(count: Int, seed: UInt64) -> (train: Dataset, validation: Dataset) {
        let stream = RandomAddress(seed: seed, purpose: .validationSplit)
        var order = Array(0..<self.count)
        for i in stride(from: order.count - 1, to: 0, by: -1) { order.swapAt(i, stream.integer(i, below: i + 1)) }
        let held = Set(order.prefix(count))
        let validation = order.prefix(count).sorted()
        let train = (0..<self.count).filter { !held.contains($0) }
        return (subset(train), subset(validation))
    }
}

public struct StepSplit: Codable, Sendable {
    public var compute: Double
    public var waiting: Double
    public var reduction: Double
    /// Under MPI: seconds per step in cross-rank calls (exchange or all-reduce, allgather, agreement).
    public var crossRank: Double?

    public init(compute: Double, waiting: Double, reduction: Double, crossRank: Double? = nil) {
        self.compute = compute
        self.waiting = waiting
        self.reduction = reduction
        self.crossRank = crossRank
    }
}

/// How often to write a checkpoint.
public enum CheckpointInterval: Sendable, Equatable {
    case steps(Int)
    case epochs(Int)

    /// "500" (steps) or "2e" (epochs).
    public init?(_ text: String) {
        if text.hasSuffix("e"), let n = Int(text.dropLast()), n > 0 {
            self = .epochs(n)
        } else if let n = Int(text), n > 0 {
            self = .steps(n)
        } else {
            return nil
        }
    }
}

/// Where a run reads its data and writes its results, and which workers train it.
public struct RunOptions: Sendable {
    public var dataDirectory: String?
    /// metrics.jsonl, summary.json and the checkpoints go here.
    public var outDirectory: String?
    /// Worker count; nil means one per core of this machine.
    public var workers: Int?
    public var policy: PlacementPolicy = .compact
    public var smt = false
    public var oversubscribe = false
    /// Use only the first N training / test samples (tests and quick looks).
    public var trainLimit: Int?
    public var testLimit: Int?
    public var checkpointEvery: CheckpointInterval?
    /// Checkpoints kept (the newest).
    public var keep = 3
    /// Continue from the newest valid checkpoint in this folder.
    public var resume: String?
    /// Stop (as if interrupted) after this many steps of this run: tests of resumption.
    public var stopAfterSteps: Int?
    /// Under MPI: combine ranks with a plain MPI_Allreduce (not reproducible across rank counts).
    public var fastAllreduce = false
    /// Under MPI: seconds to wait for the other ranks before ending the job.
    public var mpiTimeout = 120.0

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
    /// The process exit status: 1 for failures, 128 + signal after an interruption.
    public var exitStatus: Int32
    /// Under MPI: every rank reached this error together (an agreed stop or divergence),
    /// so the job can end normally; otherwise the failing rank ends the job.
    public var collective: Bool
    public init(_ description: String, exitStatus: Int32 = 1, collective: Bool = false) {
        self.description = description
        self.exitStatus = exitStatus
        self.collective = collective
    }
}

/// Set by SIGINT and SIGTERM; the training loop checks it after every step.
/// A lock-free atomic store is async-signal-safe.
let interruption = Atomic<Int32>(0)

/// The `train` command: load data, train epoch by epoch, evaluate, report, write
/// outputs and checkpoints; resume from one.
public enum TrainingRun {
    public static func run(
        configuration requested: TrainingConfiguration, options: RunOptions, console requestedConsole: Console = Console()
    ) async throws -> RunSummary {
        // Under an MPI launcher this process is one rank; rank 0 alone prints and writes.
        let topology: Topology
        do { topology = try Topology.thisMachine() } catch { throw RunError(error.description) }
        let cluster = try Cluster.join(topology: topology, timeout: options.mpiTimeout)
        // mpirun forwards output through a pseudo-terminal whatever its destination: plain lines.
        let console = cluster == nil ? requestedConsole : cluster!.rank == 0 ? Console(write: { writeAll(STDOUT_FILENO, $0) }) : Console.silent
        var configuration = requested
        var resumed: Checkpoint.Loaded?
        var options = options
        if let folder = options.resume {
            do { resumed = try Checkpoint.load(try Checkpoint.newest(in: folder)) } catch { throw RunError(error.description) }
            configuration = resumed!.state.configuration  // the run continues as it was configured
            if options.outDirectory == nil { options.outDirectory = folder }
        }
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
        var validation: Dataset?
        if let n = configuration.validationSamples, n > 0 {
            guard n < mnist.train.count else { throw RunError("--validation: \(n) of \(mnist.train.count) training samples leaves none to train on") }
            (mnist.train, validation) = mnist.train.splitValidation(count: n, seed: configuration.seed)
        }
        if let out = options.outDirectory, (cluster?.rank ?? 0) == 0 {
            do { try AtomicFile.makeDirectory(out) } catch { throw RunError(error.description) }
        }

        let pool: WorkerPool
        do {
            pool = try WorkerPool.onThisMachine(
                workers: options.workers, policy: options.policy, smt: options.smt, oversubscribe: options.oversubscribe,
                topology: topology, share: cluster.map { ($0.localRank, $0.localSize) })
        } catch { throw RunError("\(error)") }
        defer { pool.shutdown() }
        for note in pool.plan.notes { console.warn(note) }
        if let report = pool.pinningReport { console.warn(report) }
        let trainer: Trainer
        do {
            trainer = try Trainer(
                configuration: configuration, train: mnist.train, pool: pool, cluster: cluster, fastAllreduce: options.fastAllreduce)
        } catch { throw RunError("\(error)") }
        var state = TrainingState(
            version: Shardwise.version, configuration: configuration, epoch: 0, stepInEpoch: 0, globalStep: 0,
            epochLossSum: 0, epochSeconds: 0, records: [])
        if let resumed {
            trainer.restore(parameters: resumed.parameters, velocity: resumed.velocity, globalStep: resumed.state.globalStep)
            state = resumed.state
            console.line("resuming from \(resumed.path): epoch \(state.epoch + 1), step \(state.stepInEpoch) of \(trainer.stepsPerEpoch)")
        }
        console.line(
            "shardwise \(Shardwise.version): \(describe(configuration.network)), \(trainer.network.layout.parameterCount) parameters, "
                + "\(mnist.train.count) training / \(mnist.test.count) test samples from \(mnist.directory); "
                + (cluster.map { "\($0.size) MPI ranks (\(trainer.fastAllreduce ? "MPI_Allreduce" : "ordered exchange")) x " } ?? "")
                + "\(pool.workers.count) workers (\(options.policy.rawValue)), shards of \(configuration.shardSize); BLAS \(blas.kernels) kernels")
        // SIGINT and SIGTERM finish the step in progress, then checkpoint and stop.
        interruption.store(0, ordering: .relaxed)
        let previousInt = signal(SIGINT) { interruption.store($0, ordering: .relaxed) }
        let previousTerm = signal(SIGTERM) { interruption.store($0, ordering: .relaxed) }
        defer {
            signal(SIGINT, previousInt)
            signal(SIGTERM, previousTerm)
        }
        // The loop itself runs on worker 0: while it awaits a step, that thread runs
        // worker 0's share, and no thread of the global executor is involved.
        let start = state
        let held = validation
        return try await withTaskExecutorPreference(pool.workers[0]) {
            try await loop(trainer: trainer, state: start, mnist: mnist, validation: held, options: options, blas: blas, console: console)
        }
    }

    static func loop(
        trainer: Trainer, state initial: TrainingState, mnist: MNIST, validation: Dataset?, options: RunOptions,
        blas: BLASInfo, console: Console
    ) async throws -> RunSummary {
        let configuration = trainer.configuration
        let wallStart = monotonicSeconds()
        var state = initial
        let steps = trainer.stepsPerEpoch
        let samplesPerEpoch = steps * configuration.batchSize
        var stepsThisRun = 0
        var lastCheckpoint: String?
        // Under MPI only rank 0 writes; the others take part in gathering the state.
        let writes = (trainer.cluster?.rank ?? 0) == 0

        func checkpoint(into folder: String? = nil, keep: Int = options.keep) throws -> String? {
            guard let out = folder ?? options.outDirectory else { return nil }
            trainer.gatherOptimizerState()
            guard writes else { return "\(out)/\(Checkpoint.folderName(step: state.globalStep))" }
            do {
                let path = try Checkpoint.write(trainer: trainer, state: state, directory: out, keep: keep)
                if folder == nil { lastCheckpoint = path }
                return path
            } catch { throw RunError(error.description) }
        }

        var stoppedEarly = false
        while state.epoch < configuration.epochs && !stoppedEarly {
            trainer.shuffle(epoch: state.epoch)
            let start = monotonicSeconds() - state.epochSeconds
            while state.stepInEpoch < steps {
                let s = state.stepInEpoch
                let loss = await trainer.step(epoch: state.epoch, stepInEpoch: s)
                if let tensor = trainer.nonFiniteGradientTensor {
                    throw divergence("the gradient of \(tensor) is NaN or infinite", step: trainer.globalStep - 1, lastCheckpoint: lastCheckpoint, configuration: configuration)
                }
                guard loss.isFinite else {
                    throw divergence("the loss is \(loss)", step: trainer.globalStep - 1, lastCheckpoint: lastCheckpoint, configuration: configuration)
                }
                state.epochLossSum += loss
                state.stepInEpoch += 1
                state.globalStep = trainer.globalStep
                stepsThisRun += 1
                let elapsed = monotonicSeconds() - start
                state.epochSeconds = elapsed
                console.progress(
                    epoch: state.epoch + 1, of: configuration.epochs, done: s + 1, total: steps, elapsed: elapsed,
                    samplesPerSecond: Double((s + 1) * configuration.batchSize) / elapsed,
                    loss: state.epochLossSum / Double((s + 1) * configuration.batchSize))
                // Under MPI the ranks agreed on the signal in the step, so all stop here together.
                let signalled = trainer.cluster == nil ? interruption.load(ordering: .relaxed) : trainer.agreedSignal
                if signalled != 0 || stepsThisRun == options.stopAfterSteps {
                    if options.outDirectory == nil { throw RunError("interrupted at step \(state.globalStep); no --out folder, so no checkpoint was written", exitStatus: 128 + max(signalled, 2), collective: true) }
                    let path = try checkpoint()!
                    throw RunError(
                        "interrupted after step \(state.globalStep); checkpoint \(path) written. Resume with: shardwise train --resume \(options.outDirectory!)",
                        exitStatus: signalled != 0 ? 128 + signalled : 0, collective: true)
                }
                if case .steps(let n) = options.checkpointEvery, state.globalStep % n == 0, state.stepInEpoch < steps {
                    _ = try checkpoint()
                }
            }
            let trainLoss = state.epochLossSum / Double(samplesPerEpoch)
            let test = await trainer.evaluate(mnist.test)
            var record = EpochRecord(
                epoch: state.epoch + 1, trainLoss: trainLoss, testErrorPercent: test,
                samplesPerSecond: Double(samplesPerEpoch) / state.epochSeconds, seconds: state.epochSeconds)
            var improved = false
            if let validation {
                let error = await trainer.evaluate(validation)
                record.validationErrorPercent = error
                improved = error < (state.bestValidationErrorPercent ?? .infinity)
                if improved {
                    state.bestValidationErrorPercent = error
                    state.bestEpoch = record.epoch
                    state.epochsWithoutImprovement = 0
                } else {
                    state.epochsWithoutImprovement = (state.epochsWithoutImprovement ?? 0) + 1
                }
            }
            state.records.append(record)
            console.epochDone(record, of: configuration.epochs)
            state.epoch += 1
            state.stepInEpoch = 0
            state.epochLossSum = 0
            state.epochSeconds = 0
            // The best epoch so far keeps its own checkpoint, OUT/best.
            if improved, configuration.earlyStoppingPatience != nil, let out = options.outDirectory {
                _ = try checkpoint(into: "\(out)/best", keep: 1)
            }
            if let patience = configuration.earlyStoppingPatience, (state.epochsWithoutImprovement ?? 0) >= patience,
               state.epoch < configuration.epochs {
                stoppedEarly = true
                let best = options.outDirectory.map { "; its checkpoint is in \($0)/best" } ?? ""
                console.line(String(format: "early stopping after epoch %d: no better validation error for %d epochs (best %.2f%% at epoch %d%@)", state.epoch, patience, state.bestValidationErrorPercent ?? 0, state.bestEpoch ?? 0, best))
            }
            if let out = options.outDirectory, writes {
                let lines = try state.records.map { String(decoding: try jsonEncoder(pretty: false).encode($0), as: UTF8.self) + "\n" }
                do {
                    try AtomicFile.write(lines.joined(), to: "\(out)/metrics.jsonl")
                    try AtomicFile.write(
                        Curves.svg(title: "Learning curves: \(describe(configuration.network))", runs: [(label(configuration.network), state.records)]),
                        to: "\(out)/curves.svg")
                } catch { throw RunError(error.description) }
            }
            if case .epochs(let n) = options.checkpointEvery, state.epoch % n == 0, state.epoch < configuration.epochs {
                _ = try checkpoint()
            }
        }
        _ = try checkpoint()

        let stepCount = Double(max(stepsThisRun, 1))
        let split = trainer.timing.meanSeconds
        let trainingSeconds = state.records.reduce(0) { $0 + $1.seconds }
        let epochsRun = state.records.count
        let summary = RunSummary(
            version: Shardwise.version, configuration: configuration,
            finalTestErrorPercent: state.records.last!.testErrorPercent,
            samplesPerSecond: Double(samplesPerEpoch * epochsRun) / trainingSeconds,
            wallSeconds: monotonicSeconds() - wallStart, weightsSha256: trainer.weightsSHA256,
            workers: trainer.workerCount, shardSize: configuration.shardSize, placement: trainer.pool.plan,
            pinned: trainer.pool.allPinned,
            stepSeconds: StepSplit(
                compute: split.compute / stepCount, waiting: split.waiting / stepCount, reduction: split.reduction / stepCount,
                crossRank: trainer.cluster.map { _ in trainer.communicationSeconds / stepCount }),
            blas: blas,
            trainSamples: mnist.train.count, testSamples: mnist.test.count, dataDirectory: mnist.directory,
            epochs: state.records, bestEpoch: state.bestEpoch, bestValidationErrorPercent: state.bestValidationErrorPercent,
            bestTestErrorPercent: state.bestEpoch.map { state.records[$0 - 1].testErrorPercent },
            validationSamples: validation?.count, stoppedEarly: validation == nil ? nil : stoppedEarly,
            ranks: trainer.cluster?.size, crossRank: trainer.cluster.map { _ in trainer.fastAllreduce ? "fast" : "ordered" })
        if let out = options.outDirectory, writes {
            let json = String(decoding: try jsonEncoder(pretty: true).encode(summary), as: UTF8.self) + "\n"
            do { try AtomicFile.write(json, to: "\(out)/summary.json") } catch { throw RunError(error.description) }
        }
        console.line(String(format: "test error %.2f%% | weights sha256 %@", summary.finalTestErrorPercent, summary.weightsSha256))
        return summary
    }

    static func divergence(_ what: String, step: Int, lastCheckpoint: String?, configuration: TrainingConfiguration) -> RunError {
        let kept = lastCheckpoint.map { "; the last good checkpoint \($0) is untouched" } ?? ""
        return RunError("training diverged at step \(step): \(what); lower --lr (now \(configuration.optimizer.learningRate))\(kept)", collective: true)
    }

    /// "dropout 0.2/0.5" or "no dropout", for legends.
    public static func label(_ network: NetworkConfiguration) -> String {
        network.allRates.allSatisfy { $0 == 0 } ? "no dropout" : "\(kindName(network))\(rates(network))"
    }

    static func describe(_ network: NetworkConfiguration) -> String {
        let sizes = ([network.inputSize] + network.hiddenSizes + [network.outputSize]).map(String.init).joined(separator: "-")
        return "\(sizes) ReLU, \(kindName(network))\(network.dropoutInput) input / \(rates(network).split(separator: "/").dropFirst().joined(separator: ",")) hidden"
    }

    static func kindName(_ network: NetworkConfiguration) -> String {
        network.dropoutKind == .bernoulli ? "dropout " : "\(network.dropoutKind.rawValue) dropout "
    }

    /// "0.2/0.5" (uniform hidden rate) or "0.2/0.5,0.3,0.2" (per layer).
    static func rates(_ network: NetworkConfiguration) -> String {
        "\(network.dropoutInput)/" + (network.dropoutHiddenPerLayer.map { $0.map { "\($0)" }.joined(separator: ",") } ?? "\(network.dropoutHidden)")
    }

    public static func jsonEncoder(pretty: Bool) -> JSONEncoder {
        let encoder = JSONEncoder()
        encoder.keyEncodingStrategy = .convertToSnakeCase
        encoder.outputFormatting = pretty ? [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes] : [.sortedKeys, .withoutEscapingSlashes]
        return encoder
    }
}
