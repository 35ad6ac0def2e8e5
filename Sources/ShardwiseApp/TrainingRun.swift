import Foundation
import Shardwise

/// Where a run reads its data and writes its results, and which workers train it.
public struct RunOptions: Sendable {
    /// The data files and how to read, split and preprocess them.
    public var data = DataOptions()
    /// `--data`: an MNIST folder or a data file.
    public var dataDirectory: String? {
        get { data.path }
        set { data.path = newValue }
    }
    /// metrics.jsonl, summary.json and the checkpoints go here.
    public var outDirectory: String?
    /// Worker count; nil means one per core of this machine (or of `cores`).
    public var workers: Int?
    /// Only these PUs (OS indices): a sweep trial's slot of the machine.
    public var cores: [OSIndex]?
    public var policy: PlacementPolicy = .compact
    public var smt = false
    public var oversubscribe = false
    /// Only the cores of the process's CPU binding (`taskset`), not every core of its cgroup.
    public var affinity = false
    /// Use only the first N training / test samples (tests and quick looks).
    public var trainLimit: Int?
    public var testLimit: Int?
    public var checkpointEvery: CheckpointPolicy.Interval?
    /// Checkpoints kept (the newest).
    public var keep = 3
    /// Continue from the newest valid checkpoint in this folder.
    public var resume: String?
    /// Stop (as if interrupted) after this many steps of this run: tests of resumption.
    public var stopAfterSteps: Int?
    /// Under MPI: combine ranks with a plain MPI_Allreduce (not reproducible across rank counts).
    public var fastAllreduce = false
    /// Under MPI: overlap the exchange with the backward pass (the same weights either way).
    public var overlap = true
    /// Under MPI, ordered: how the ranks combine their gradients (the same weights either way).
    public var exchange = ExchangePattern.auto
    /// The matrix kernels: the portable ones (the same bits on any CPU; the default), or the
    /// BLAS library. A resumed run keeps its checkpoint's (a checkpoint without one: BLAS).
    public var kernels: MatrixKernels = .portable
    /// Under MPI: seconds to wait for the other ranks before ending the job.
    public var mpiTimeout = 120.0
    /// Replace a previous run's results in `outDirectory` instead of refusing to start.
    public var overwrite = false
    /// Recorded in the output folder's lock file (the command line that holds it).
    public var owner = "shardwise"
    /// Settings given explicitly for this run (typed flags): with `resume`, each must agree
    /// with the checkpoint's configuration, which the run otherwise keeps.
    public var typedFields: Set<ConfigurationError.Field> = []

    public init(
        dataDirectory: String? = nil, outDirectory: String? = nil, workers: Int? = nil, trainLimit: Int? = nil, testLimit: Int? = nil
    ) {
        self.workers = workers
        data.path = dataDirectory
        self.outDirectory = outDirectory
        self.trainLimit = trainLimit
        self.testLimit = testLimit
    }
}

/// The `train` command: MNIST, a worker pool, a trainer; its events become the console's
/// lines and the run folder's files (metrics.jsonl, curves.svg, summary.json).
public enum TrainingRun {
    public static func run(configuration requested: RunConfiguration, options requestedOptions: RunOptions, console: Console) async throws -> RunSummary {
        let wallStart = monotonicSeconds()
        let topology: Topology
        do { topology = try Topology.thisMachine(onlyBoundCPUs: requestedOptions.affinity) } catch { throw RunError(error.description) }
        // Under an MPI launcher this process is one rank; rank 0 alone prints and writes.
        let cluster: Cluster?
        do { cluster = try Cluster.join(topology: topology, timeout: requestedOptions.mpiTimeout) } catch { throw RunError(error.description) }
        let console = (cluster?.rank ?? 0) == 0 ? console : Console.silent
        var options = requestedOptions
        let resumed = try resumedCheckpoint(&options)
        var configuration = resumed.map { RunConfiguration(network: $0.state.network!, training: $0.state.configuration) } ?? requested
        if let resumed { try checkTypedSettings(requested, against: configuration, checkpoint: resumed.path, typed: options.typedFields) }
        let validationGiven = options.data.validationPath != nil || options.data.selection?.givesValidation == true
        do { try configuration.validate(validationGiven: validationGiven) } catch { throw RunError(.configuration(error)) }
        let blas = BLAS.ifPresent  // needed by --kernels blas alone (select says so)
        if let resumed {
            let stored = resumed.state.kernels ?? .blas
            if options.typedFields.contains(.kernels), options.kernels != stored {
                var error = RunError(.configuration(ConfigurationError(.kernels, "\(options.kernels.rawValue) contradicts the checkpoint \(resumed.path), trained with \(stored.rawValue) kernels; a resumed run keeps its kernels (they set the weights' bits)")))
                error.exitStatus = 2
                throw error
            }
            options.kernels = stored
        }
        // The choice is the process's: trials side by side (a sweep) made it once, before they started.
        if MatrixKernels.current != options.kernels || (options.kernels == .blas && blas == nil) {
            do { try MatrixKernels.select(options.kernels) } catch { throw RunError("--kernels \(options.kernels.rawValue): \(error.description)") }
        }
        if options.kernels == .portable, MatrixKernels.portableISA == "scalar" {
            console.warn("the portable kernels run scalar code on this CPU (no AVX2 or AVX-512): expect low throughput; --kernels blas trades cross-CPU reproducibility for speed")
        }
        if options.kernels == .blas, let blas, !blas.fastKernels { console.warn("BLAS runs slow kernels (\(blas.kernels), \(blas.cpu)); expect low throughput") }
        // Rank 0 alone writes: it alone holds the output folder, for the whole run.
        let folder = (cluster?.rank ?? 0) == 0 ? try claimFolder(options) : nil
        defer { withExtendedLifetime(folder) {} }
        // Under MPI the ranks compare their settings before reading the data (a mismatch ends
        // the job in moments), then the data they read.
        if let cluster {
            try agree(cluster, on: configuration.settings + [
                (.fastAllreduce, "\(options.fastAllreduce)"), (.overlap, "\(options.overlap)"), (.exchange, options.exchange.rawValue), (.kernels, options.kernels.rawValue), (.resume, resumed.map { "step \($0.state.globalStep)" } ?? "none"),
            ])
        }
        let pool: WorkerPool
        do {
            pool = try WorkerPool.onThisMachine(
                workers: options.workers, policy: options.policy, smt: options.smt, oversubscribe: options.oversubscribe,
                topology: topology, share: cluster.map { ($0.localRank, $0.localSize) }, within: options.cores)
        } catch { throw RunError("\(error)") }
        defer { pool.shutdown() }
        for note in pool.plan.notes { console.warn(note) }
        if let report = pool.pinningReport { console.warn(report) }
        let data = try await DataSource.load(
            options.data, trainLimit: options.trainLimit, testLimit: options.testLimit, seed: configuration.seed,
            validationSamples: configuration.validationSamples, pool: pool, console: console)
        if data.train.vocabulary != nil {
            console.showsLoss = true
            guard configuration.network.layers != nil else {
                throw RunError("--tokenizer: a language model is described with --model (tokens, attention and a linear head over each position; see Examples/models/shakespeare-char.yaml)")
            }
        }
        if let cluster {
            try agree(cluster, on: [(.data, "training set of \(data.train.fingerprint)"), (.data, "test set of \(data.test.map(\.fingerprint.description) ?? "none")")])
        }
        // The network's input and output widths come from the data (a resumed run's from its checkpoint, checked against the data).
        if resumed == nil {
            configuration.network.inputSize = data.train.features
            configuration.network.outputSize = data.train.outputWidth
        }
        let trainer: Trainer
        do {
            trainer = try Trainer(
                network: configuration.network, data: data.train, configuration: configuration.training, workers: pool,
                validation: data.validation, cluster: cluster, fastAllreduce: options.fastAllreduce, overlap: options.overlap, exchange: options.exchange)
            if let resumed { try trainer.restore(from: resumed) }
        } catch { throw RunError(error) }
        if let resumed, !trainer.isFinished {
            console.line("resuming from \(resumed.path): epoch \(trainer.state.epoch + 1), step \(trainer.state.stepInEpoch) of \(trainer.stepsPerEpoch)")
        }
        let kernelsName = options.kernels == .portable ? "portable \(MatrixKernels.portableISA)" : "BLAS \(BLAS.kernelsDescription)"
        console.line(
            "shardwise \(ShardwiseVersion.current): \(describe(configuration.network)), \(Self.parameterCounts(trainer.network.layout)), "
                + "\(trainer.trainingData.count) training / \(data.test?.count ?? 0) test samples from \(data.origin) (\(DataSource.describe(data.train)); inputs \(DataSource.describe(data.train.preprocessing, mnist: options.data.isMNIST))); "
                + (cluster.map { "\($0.size) MPI ranks (\(trainer.fastAllreduce ? "MPI_Allreduce" : "ordered exchange")\(trainer.overlapsExchange ? ", overlapped" : "")) x " } ?? "")
                + "\(pool.workers.count) workers (\(options.policy.rawValue)), shards of \(configuration.shardSize); \(kernelsName) kernels; "
                + "recipe: \(Self.recipe(configuration.training))\(configuration.network.initialization == .pytorch ? ", PyTorch initialisation" : "")")
        if trainer.isFinished, let resumed {
            console.line("\(resumed.path): this run finished (\(trainer.state.records.count) epochs); nothing is trained or rewritten")
            if let out = options.outDirectory, let data = try? RegularFile.read("\(out)/summary.json", limit: 64 << 20),
               let summary = try? JSON.decoder().decode(RunSummary.self, from: Data(data)) {
                return summary
            }
        }
        let stepsBefore = trainer.state.globalStep
        try await follow(trainer, configuration: configuration, test: data.test, options: options, console: console)
        var summary = RunSummary(
            trainer: trainer, configuration: configuration, steps: trainer.state.globalStep - stepsBefore,
            wallSeconds: monotonicSeconds() - wallStart, blas: blas, testSamples: data.test?.count ?? 0, dataDirectory: data.origin)
        summary.selection = options.data.selection
        if let out = options.outDirectory, (cluster?.rank ?? 0) == 0 {
            do { try AtomicFile.write(Array(try JSON.encoder(pretty: true).encode(summary)) + [0x0A], to: "\(out)/summary.json") } catch {
                throw RunError("\(error)")
            }
        }
        console.line("\(summary.resultLine) | weights sha256 \(summary.weightsSha256)")
        return summary
    }

    /// Trains to the end, turning each event into console lines and files.
    static func follow(_ trainer: Trainer, configuration: RunConfiguration, test: Dataset?, options: RunOptions, console: Console) async throws {
        let policy = options.outDirectory.map { CheckpointPolicy(directory: $0, every: options.checkpointEvery, keep: options.keep) }
        let writes = (trainer.cluster?.rank ?? 0) == 0
        let board = writes ? options.outDirectory.flatMap {
            TensorBoardLog(folder: $0, configuration: configuration, data: options.data.path ?? "MNIST", console: console)
        } : nil
        defer { try? board?.flush() }
        // The events are read while the next epoch trains: what is written comes from the events,
        // never from the trainer's state.
        var records = trainer.state.records
        do {
            let events = trainer.fit(test: test, checkpoints: policy, stopAfterSteps: options.stopAfterSteps, snapshots: board != nil)
            for try await event in events {
                switch event {
                case .step(let p):
                    console.progress(p)
                    board?.step(p)
                case .epoch(let record):
                    records.append(record)
                    // With --evaluate-every k, the epochs between evaluations (tiny training sets
                    // run thousands) are neither printed nor written out one by one.
                    guard configuration.training.evaluates(epoch: record.epoch) else { break }
                    board?.epoch(record, step: record.epoch * trainer.stepsPerEpoch)
                    console.epochDone(record, of: configuration.epochs)
                    if writes, let out = options.outDirectory { try writeMetrics(records, configuration: configuration, languageModel: trainer.trainingData.vocabulary != nil, to: out) }
                case .snapshot(let snapshot):
                    try board?.snapshot(snapshot, layout: trainer.network.layout)
                case .checkpoint:
                    break
                case .stoppedEarly(let epoch, let best, let error, let patience):
                    let kept = options.outDirectory.map { "; its checkpoint is in \($0)/best" } ?? ""
                    let figure = trainer.trainingData.task == .classification ? String(format: "%.2f%%", error) : String(format: "RMSE %.4g", error)
                    console.line("early stopping after epoch \(epoch): no better validation error for \(patience) epochs (best \(figure) at epoch \(best)\(kept))")
                case .stopped(let step, let path):
                    guard let path, let out = options.outDirectory else {
                        throw RunError("interrupted at step \(step); no --out folder, so no checkpoint was written", stopped: true, collective: true)
                    }
                    throw RunError("interrupted after step \(step); checkpoint \(path) written. Resume with: shardwise train --resume \(out)\(resumeFlags(options))", stopped: true, collective: true)
                }
            }
        } catch TrainingError.diverged(let step, let reason, let checkpoint) {
            throw divergence(reason, step: step, lastCheckpoint: checkpoint, configuration: configuration.training)
        } catch let error as TrainingError {
            throw RunError(error)
        }
    }

    /// The data flags a resumed run must be given again (the checkpoint holds the rest).
    static func resumeFlags(_ options: RunOptions) -> String {
        var flags = options.data.flags.isEmpty ? [] : [options.data.flags]
        if let n = options.trainLimit { flags.append("--train-samples \(n)") }
        if let n = options.testLimit { flags.append("--test-samples \(n)") }
        return flags.map { " " + $0 }.joined()
    }

    static func divergence(_ what: String, step: Int, lastCheckpoint: String?, configuration: TrainingConfiguration) -> RunError {
        let kept = lastCheckpoint.map { "; the last good checkpoint \($0) is untouched" } ?? ""
        return RunError("training diverged at step \(step): \(what); lower --lr (now \(configuration.optimizer.learningRate))\(kept)", collective: true)
    }

    /// A resumed run continues as it was configured: a setting typed now that contradicts the
    /// checkpoint's is refused with both values (exit status 2), never silently ignored.
    static func checkTypedSettings(
        _ requested: RunConfiguration, against stored: RunConfiguration, checkpoint: String, typed: Set<ConfigurationError.Field>
    ) throws {
        // The input and output widths come from the data, not from flags.
        var requested = requested
        requested.network.inputSize = stored.network.inputSize
        requested.network.outputSize = stored.network.outputSize
        for (mine, theirs) in zip(requested.settings, stored.settings) where mine.value != theirs.value && typed.contains(mine.field) {
            var error = RunError(.configuration(ConfigurationError(
                mine.field,
                "\(mine.value) contradicts the checkpoint \(checkpoint), trained with \(theirs.value); a resumed run keeps its configuration: drop the flag, or start a new run in another --out")))
            error.exitStatus = 2
            throw error
        }
    }

    /// With `--resume`: the newest valid checkpoint of that folder, which also becomes the output folder.
    static func resumedCheckpoint(_ options: inout RunOptions) throws -> Checkpoint.Contents<TrainingState>? {
        guard let folder = options.resume else { return nil }
        if options.outDirectory == nil { options.outDirectory = folder }
        do { return try loadCheckpoint(try Checkpoint.newest(in: folder)) } catch { throw RunError(error.description) }
    }

    /// A checkpoint of a described network (every checkpoint the command line writes).
    /// Its description and training settings pass the same validation as the command line's,
    /// and its format version must be one this build reads.
    public static func loadCheckpoint(_ path: String) throws(CheckpointError) -> Checkpoint.Contents<TrainingState> {
        try Checkpoint.load(path, as: TrainingState.self) { (state) throws(CheckpointError) in
            guard ShardwiseVersion.canRead(state.version) else {
                throw CheckpointError("\(path)/state.json: written by shardwise \(state.version), expected a version up to \(ShardwiseVersion.current) (a newer format)")
            }
            guard let network = state.network else { throw CheckpointError("\(path)/state.json: no network description; the model was built in code") }
            // Whether a validation file is given is the resumed run's to say (it checks again).
            do { try state.configuration.validate(validationGiven: true) } catch { throw CheckpointError("\(path)/state.json: \(error)") }
            do { try state.validate() } catch { throw CheckpointError("\(path)/state.json: \(error)") }
            return try layout(of: network, in: "\(path)/state.json")
        } stateNames: { $0.configuration.optimizer.stateNames }
    }

    /// The parameter layout of a stored network description, after the checks the command line makes.
    static func layout(of network: NetworkConfiguration, in file: String) throws(CheckpointError) -> ParameterLayout {
        do { try network.validate() } catch { throw CheckpointError("\(file): network \(error)") }
        do { return try Network(network).layout } catch { throw CheckpointError("\(file): \(error)") }
    }

    /// Under MPI: every rank must train the same configuration on the same data. A rank
    /// started with other flags or files would train other weights, or hang the job at its
    /// first exchange; instead every rank ends at once, naming the field and each rank's value.
    static func agree(_ cluster: Cluster, on settings: [(field: ConfigurationError.Field, value: String)]) throws {
        let found: (index: Int, values: [String])?
        do { found = try cluster.disagreement(on: settings.map(\.value)) } catch { throw RunError(error.description) }
        guard let found else { return }
        let ranks = found.values.enumerated().map { "rank \($0.offset): \($0.element)" }.joined(separator: "; ")
        var error = RunError(.configuration(ConfigurationError(
            settings[found.index].field, "the MPI ranks disagree (\(ranks)); start every rank with the same flags and data")))
        error.collective = true
        error.everyRank = true
        error.exitStatus = 2
        throw error
    }

    /// Takes the output folder's lock; a folder holding another run's results is refused
    /// (README, "What Shardwise refuses, and why") unless this run resumes it or overwrites.
    static func claimFolder(_ options: RunOptions) throws -> RunFolder? {
        guard let out = options.outDirectory else { return nil }
        let fresh = options.resume != out
        func refuse(_ contents: [String]) -> RunError {
            let shown = contents.prefix(3).joined(separator: ", ") + (contents.count > 3 ? ", …" : "")
            return RunError("--out \(out): already holds \(shown); a run never replaces another's results: continue it with --resume \(out), choose another --out, or pass --overwrite")
        }
        // Checked before the lock too, so that a refused run writes nothing (not even a lock file).
        do { try RunFolder.checkNotInUse(out) } catch { throw RunError(error.description) }
        if fresh, !options.overwrite, case let contents = RunFolder.contents(of: out), !contents.isEmpty { throw refuse(contents) }
        let folder: RunFolder
        do { folder = try RunFolder(out, owner: options.owner) } catch { throw RunError(error.description) }
        if fresh, !folder.contents.isEmpty {
            guard options.overwrite else { throw refuse(folder.contents) }
            folder.removeRunOutputs()
        }
        folder.recordOwner()
        return folder
    }

    /// metrics.jsonl and curves.svg, rewritten after every epoch.
    static func writeMetrics(_ records: [EpochRecord], configuration: RunConfiguration, languageModel: Bool, to out: String) throws {
        let lines = try records.map { try JSON.line($0) + "\n" }
        do {
            try AtomicFile.write(lines.joined(), to: "\(out)/metrics.jsonl")
            let title = languageModel ? name(configuration.network, languageModel: true) : describe(configuration.network)
            try AtomicFile.write(
                Curves.svg(title: "Learning curves: \(title)", runs: [(label(configuration.network), records)], languageModel: languageModel),
                to: "\(out)/curves.svg")
        } catch { throw RunError(error.description) }
    }

    /// "dropout 0.2/0.5" or "no dropout", for legends.
    public static func label(_ network: NetworkConfiguration) -> String {
        if let layers = network.layers {
            // A described model: its distinct dropout rates above 0, in the order written.
            var rates: [Double] = []
            for rate in ModelDescription.dropoutRates(layers) where rate > 0 && !rates.contains(rate) { rates.append(rate) }
            return rates.isEmpty ? "no dropout" : "dropout " + rates.map { String(format: "%g", $0) }.joined(separator: "/")
        }
        return network.allRates.allSatisfy { $0 == 0 } ? "no dropout" : "\(kindName(network))\(rates(network))"
    }

    /// What a chart's title calls the network: "784-1024-1024-1024-10 ReLU network", "a language
    /// model on windows of 128 tokens", "a model on (1, 28, 28)".
    public static func name(_ network: NetworkConfiguration, languageModel: Bool) -> String {
        guard network.layers != nil else { return "\(([network.inputSize] + network.hiddenSizes + [network.outputSize]).map(String.init).joined(separator: "-")) ReLU network" }
        return languageModel ? "a language model on windows of \(network.sampleShape.first ?? 0) tokens" : "a model on \(Network.describe(network.sampleShape))"
    }

    static func describe(_ network: NetworkConfiguration) -> String {
        if let layers = network.layers {
            return "model \(layers.split(whereSeparator: \.isNewline).joined(separator: " ")) on \(Network.describe(network.sampleShape))\(network.loss.map { ", loss \($0)" } ?? "")"
        }
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
}

extension TrainingRun {
    /// The training recipe in force, e.g. "adam, lr 0.001 constant, no max-norm, batch 128, 20 epochs".
    static func recipe(_ t: TrainingConfiguration) -> String {
        let o = t.optimizer
        var parts = ["\(o.algorithm.rawValue)\(o.algorithm == .sgd ? " momentum \(o.momentum.end)\(o.nesterov ? " nesterov" : "")" : "")", "lr \(o.learningRate) \(o.schedule.name)"]
        parts.append(o.maxNorm.map { "max-norm \($0)" } ?? "no max-norm")
        if o.weightDecay > 0 { parts.append("weight decay \(o.weightDecay)\(o.decayMatricesOnly == true ? " on matrices" : "")") }
        if let clip = o.clipNorm { parts.append("clip-norm \(clip)") }
        if let warmup = o.warmupSteps { parts.append("\(warmup) warm-up steps") }
        parts.append("batch \(t.batchSize), \(t.epochs) epochs\(t.stepsPerEpoch.map { " of \($0) steps" } ?? "")")
        return parts.joined(separator: ", ")
    }

    /// "78090 parameters" or, with BatchNorm, "78090 parameters + 681 buffer values" (running statistics).
    static func parameterCounts(_ layout: ParameterLayout) -> String {
        let trained = layout.trainedParameterCount, buffers = layout.parameterCount - trained
        return buffers == 0 ? "\(trained) parameters" : "\(trained) parameters + \(buffers) buffer values"
    }
}
