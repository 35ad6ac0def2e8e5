import Foundation
import Shardwise

/// What a sweep trains: its axes, its cross-validation and how its trials share the machine.
public struct SweepSettings: Sendable {
    public var inputRates: [Double]
    public var hiddenRates: [Double]
    /// Seeds per combination; `fewerSeedsAbove` (size, seeds) lowers it for training sets larger than `size`.
    public var seeds: Int
    public var fewerSeedsAbove: (size: Int, seeds: Int)?
    public var sweepSeed: UInt64
    /// The data-size axis: seeded subsets of these sizes (nil: every training sample).
    public var trainSamples: [Int]?
    /// K-fold cross-validation instead of a held-out validation set, plus a refit per combination.
    public var folds: Int?
    /// Each trial trains at least this many steps: a small training set gets a multiple of
    /// the base epochs, evaluated as often as the base epochs would be.
    public var minSteps: Int?
    /// The validation figure whose first crossing each trial reports.
    public var targetError: Double?
    /// Trials side by side: a count, or nil for `auto` (as many as the topology fits).
    public var parallelTrials: Int?

    public init(inputRates: [Double], hiddenRates: [Double], seeds: Int = 1, sweepSeed: UInt64 = 1) {
        self.inputRates = inputRates
        self.hiddenRates = hiddenRates
        self.seeds = seeds
        self.sweepSeed = sweepSeed
        parallelTrials = 1
    }

    func seeds(for size: Int?) -> Int {
        if let (above, fewer) = fewerSeedsAbove, let size, size > above { return fewer }
        return seeds
    }
}

/// `shardwise sweep`: every combination of input and hidden dropout rates, over seeds, and
/// optionally over training-set sizes, with cross-validation.
///
/// Each trial trains in `OUT/trial-NNN` with a checkpoint per epoch; a rerun skips finished
/// trials (their summary.json) and resumes an interrupted one bit for bit, so the table is
/// the same. With `parallelTrials`, trials run side by side on disjoint sets of cores
/// (`Topology.trialPlan`); each trial's weights are those of running it alone, since a
/// trial's bits do not depend on its worker count.
public enum SweepRun {
    /// Trial `trial`'s seed: Philox of (sweep seed, purpose sweep, trial).
    public static func trialSeed(sweepSeed: UInt64, trial: Int) -> UInt64 {
        let b = RandomAddress(seed: sweepSeed, purpose: .sweep, position: UInt32(trial)).block(0)
        return UInt64(b.x) << 32 | UInt64(b.y)
    }

    /// One trial to train: its place on the axes, its configuration and its samples.
    struct Trial: Sendable {
        var index: Int
        var seedIndex: Int
        var configuration: RunConfiguration
        var selection: DataSelection?
        /// A refit waits for these trials (its folds) and trains for their mean best epoch.
        var needs: [Int] = []
    }

    public static func run(
        base: RunConfiguration, settings: SweepSettings, options: RunOptions, command: String, console: Console
    ) async throws -> SweepReport {
        guard let out = options.outDirectory else { throw RunError("sweep: needs --out DIR for its trials and results") }
        // The sweep holds its folder for its whole life; each trial holds its own below it.
        let folder: RunFolder
        do { folder = try RunFolder(out, owner: options.owner) } catch { throw RunError(error.description) }
        folder.recordOwner()
        defer { withExtendedLifetime(folder) {} }
        // The kernels are the process's, so every trial uses the sweep's: a trial resumed from a
        // checkpoint of other kernels is refused (TrainingRun names both), never mixed in.
        do { try MatrixKernels.select(options.kernels) } catch { throw RunError(error.description) }
        var options = options
        options.typedFields.insert(.kernels)
        // The files are read once (a --test-fraction split by the sweep's seed); every trial shares them.
        // The readers' threads stop before the trials pin their own.
        let trials: [Trial]
        do {
            let readers: WorkerPool
            do { readers = try WorkerPool.onThisMachine() } catch { throw RunError("\(error)") }
            defer { readers.shutdown() }
            options.data.loaded = try await DataSource.sources(options.data, seed: settings.sweepSeed, pool: readers, console: console)
            trials = try await plan(base: base, settings: settings, options: options, pool: readers, console: console)
        }
        var trialPlan: TrialPlan?
        if settings.parallelTrials != 1 {
            if Cluster.launched { throw RunError("--parallel-trials: under mpirun the ranks train one trial together; use --parallel-trials 1") }
            let topology: Topology
            do { topology = try Topology.thisMachine(onlyBoundCPUs: options.affinity) } catch { throw RunError(error.description) }
            do { trialPlan = try topology.trialPlan(trials: settings.parallelTrials, coresPerTrial: base.training.shardsPerBatch, trialCount: trials.count) } catch {
                throw RunError(error.description)
            }
            console.line("trials side by side: \(trialPlan!.slots.count) (\(trialPlan!.reason))")
            for (i, slot) in trialPlan!.slots.enumerated() {
                console.line("  slot \(i): PUs \(slot.map { String($0.os.rawValue) }.joined(separator: ","))")
            }
        }
        let results: [Int: Finished]
        do { results = try await execute(trials, slots: trialPlan?.slots, settings: settings, options: options, console: console) } catch var error as RunError where error.stopped {
            // The trial's own hint would resume that trial alone, outside the sweep.
            let what = error.description.components(separatedBy: ". Resume with")[0]
            error.description = "\(what). Finished trials are kept: rerun the same command to resume the sweep (\(options.owner))"
            throw error
        }
        let finished = trials.map { results[$0.index]! }
        var report = SweepReport(
            command: command, sweepSeed: settings.sweepSeed, base: base, trials: finished.map(\.trial), rows: rows(finished.map(\.trial)),
            metric: finished.first?.summary.metric ?? "error_percent", folds: settings.folds, targetError: settings.targetError)
        report.choices = choices(report.rows)
        report.parallelTrials = trialPlan?.slots.count
        report.parallelReason = trialPlan?.reason
        return report
    }

    /// Every trial in sweep order: sizes, then input rates, hidden rates, seeds, and folds
    /// (each combination's folds followed by its refit), sized against the data the sweep read.
    static func plan(base: RunConfiguration, settings: SweepSettings, options: RunOptions, pool: WorkerPool, console: Console) async throws -> [Trial] {
        // The sizes and folds are checked against the data before anything trains.
        let data = try await DataSource.load(
            options.data, trainLimit: options.trainLimit, testLimit: options.testLimit, seed: settings.sweepSeed,
            validationSamples: nil, pool: pool, console: console)
        // The network's input and output widths come from the data, as a trial's run sets them.
        var base = base
        base.network.inputSize = data.train.features
        base.network.outputSize = data.train.outputWidth
        let usesSelection = settings.trainSamples != nil || settings.folds != nil
        var trials: [Trial] = []
        for size in settings.trainSamples.map({ $0.map(Optional.some) }) ?? [nil] {
            for input in settings.inputRates {
                for hidden in settings.hiddenRates {
                    for s in 0..<settings.seeds(for: size) {
                        var configuration = base
                        configuration.network.dropoutInput = input
                        configuration.network.dropoutHidden = hidden
                        configuration.network.dropoutHiddenPerLayer = nil
                        if let layers = base.network.layers {
                            // A described model: the rates go into its dropout layers.
                            do { configuration.network.layers = try ModelDescription.withDropoutRates(layers, input: input, hidden: hidden) } catch {
                                throw RunError("--model: \(error)")
                            }
                        }
                        var selection: DataSelection?
                        if usesSelection {
                            // The sweep's seed chooses the samples: the same for every setting and seed.
                            selection = DataSelection(seed: settings.sweepSeed, validationSamples: settings.folds == nil ? base.validationSamples : nil, trainSamples: size)
                            configuration.validationSamples = nil
                        }
                        let folds: [Int?] = settings.folds.map { Array(0..<$0) } ?? [nil]
                        var foldTrials: [Int] = []
                        for fold in folds {
                            selection?.fold = fold
                            selection?.folds = settings.folds
                            var chosen = data
                            if let selection { try selection.apply(to: &chosen) }
                            let count = chosen.train.count - (selection == nil ? base.validationSamples ?? 0 : 0)
                            var trial = Trial(index: trials.count, seedIndex: s, configuration: configuration, selection: selection)
                            try stretch(&trial.configuration, trainingSamples: count, minSteps: settings.minSteps)
                            trial.configuration.seed = trialSeed(sweepSeed: settings.sweepSeed, trial: trial.index)
                            if fold != nil { foldTrials.append(trial.index) }
                            trials.append(trial)
                        }
                        if settings.folds != nil {
                            // The refit: every fold trained on, no validation, for the folds' mean best epoch.
                            var refit = Trial(index: trials.count, seedIndex: s, configuration: trials.last!.configuration, selection: selection, needs: foldTrials)
                            refit.selection?.fold = nil
                            refit.configuration.earlyStoppingPatience = nil
                            refit.configuration.seed = trialSeed(sweepSeed: settings.sweepSeed, trial: refit.index)
                            trials.append(refit)
                        }
                    }
                }
            }
        }
        return trials
    }

    /// With `minSteps`, a trial on few samples trains k times the base epochs (k the least
    /// that reaches `minSteps` steps), evaluated every k epochs, its schedule and momentum
    /// ramp stretched to match: the same number of evaluations and the same schedule shape
    /// for every training-set size.
    public static func stretch(_ configuration: inout RunConfiguration, trainingSamples: Int, minSteps: Int?) throws {
        let batch = configuration.batchSize
        guard trainingSamples >= batch else {
            throw RunError("--batch-size: \(batch) is larger than the \(trainingSamples) samples a trial trains on; use a smaller batch or larger --train-samples")
        }
        let perEpoch = trainingSamples / batch, epochs = configuration.epochs
        // Checked as every trial is planned, before the first one trains.
        guard let steps = CheckedSize.product([epochs, perEpoch]), steps <= Int(UInt32.max) else {
            throw RunError("--epochs \(epochs) of \(perEpoch) steps: more than the 2^32 - 1 steps a run can address")
        }
        guard let minSteps else { return }
        let k = max(1, (minSteps + steps - 1) / steps)
        guard k > 1 else { return }
        guard let total = CheckedSize.product([k, epochs]), total <= Int(Int32.max) else {
            throw RunError("--min-steps \(minSteps): \(k) x --epochs \(epochs) epochs, more than the 2147483647 a run can train")
        }
        guard let stretched = CheckedSize.product([total, perEpoch]), stretched <= Int(UInt32.max) else {
            throw RunError("--min-steps \(minSteps): \(total) epochs of \(perEpoch) steps, more than the 2^32 - 1 steps a run can address")
        }
        configuration.epochs = total
        configuration.training.evaluateEvery = k
        var optimizer = configuration.training.optimizer
        switch optimizer.schedule {
        case .constant: break
        case .step(let every, let gamma): optimizer.schedule = .step(every: CheckedSize.product([every, k]) ?? .max, gamma: gamma)
        case .exponential(let gamma): optimizer.schedule = .exponential(gamma: pow(gamma, 1 / Double(k)))
        case .cosine(let length, let floor): optimizer.schedule = .cosine(epochs: CheckedSize.product([length, k]) ?? .max, floor: floor)
        }
        optimizer.momentum.epochs *= Double(k)
        configuration.training.optimizer = optimizer
    }

    /// A finished trial: its row figures and the run's summary.
    struct Finished: Sendable {
        var trial: SweepTrial
        var summary: RunSummary
    }

    /// Runs the trials, `slots.count` at a time when given (each on its slot's cores), a
    /// refit only once its folds are done; finished trials from an earlier run are read back.
    static func execute(_ trials: [Trial], slots: [[ProcessingUnit]]?, settings: SweepSettings, options: RunOptions, console: Console) async throws -> [Int: Finished] {
        var results: [Int: Finished] = [:]
        var pending = trials[...]
        var free = Array((slots ?? [[]]).indices)
        var started = 0
        try await withThrowingTaskGroup(of: (slot: Int, index: Int, finished: Finished).self) { group in
            while true {
                while let slot = free.first, let i = pending.firstIndex(where: { $0.needs.allSatisfy { results[$0] != nil } }) {
                    // Ctrl-C between trials: nothing is running to checkpoint; the rest wait for a rerun.
                    if Task.isCancelled { throw RunError("interrupted before trial \(pending[i].index) started", stopped: true, collective: true) }
                    var trial = pending.remove(at: i)
                    if !trial.needs.isEmpty {
                        let best = trial.needs.compactMap { results[$0]?.trial.bestEpoch }
                        trial.configuration.epochs = max(1, Int((Double(best.reduce(0, +)) / Double(max(best.count, 1))).rounded()))
                    }
                    free.removeFirst()
                    started += 1
                    let place = "\(started) of \(trials.count), \(trials.count - started) to go"
                    var trialOptions = options
                    var trialConsole = console
                    if let slots {
                        trialOptions.cores = slots[slot].map(\.os)
                        trialOptions.workers = nil
                        trialConsole = console.prefixed(String(format: "  [%03d] ", trial.index))
                    }
                    let chosen = trial, runOptions = trialOptions, runConsole = trialConsole
                    group.addTask {
                        var finished = try await train(chosen, options: runOptions, console: runConsole, announce: console, place: place, target: settings.targetError)
                        if slots != nil { finished.trial.cores = runOptions.cores?.map(\.rawValue) }
                        return (slot, chosen.index, finished)
                    }
                }
                guard let done = try await group.next() else { break }
                results[done.index] = done.finished
                free.append(done.slot)
                free.sort()
            }
        }
        return results
    }

    /// Trains one trial in `OUT/trial-NNN`, or reads it back when an earlier run finished it.
    /// `announce` says which trial starts and where it is in the sweep (`place`: "3 of 12, 9 to go");
    /// `console` receives the trial's own lines.
    static func train(_ trial: Trial, options: RunOptions, console: Console, announce: Console, place: String, target: Double?) async throws -> Finished {
        let out = options.outDirectory!
        let configuration = trial.configuration
        let folder = "\(out)/trial-\(String(format: "%03d", trial.index))"
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        let name = describe(trial)
        // A finished trial is known by its summary alone (reading its checkpoint back would
        // verify tens of megabytes per trial).
        if let done = try readSummary(in: folder, decoder: decoder), done.configuration == configuration, done.selection == trial.selection {
            announce.line("trial \(trial.index) (\(place)): \(name): done earlier")
            return Finished(trial: SweepTrial(index: trial.index, summary: done, seedIndex: trial.seedIndex, target: target), summary: done)
        }
        let earlier = try earlierTrial(in: folder, decoder: decoder)
        if !options.overwrite {
            if let trained = earlier.configuration, let difference = configuration.firstDifference(from: trained) {
                throw RunError(.configuration(ConfigurationError(
                    difference.field,
                    "\(difference.mine) in this sweep, but \(folder) was trained with \(difference.other); rerun a sweep with its own flags, use another --out, or pass --overwrite to retrain its trials")))
            }
            if let done = earlier.summary, done.selection != trial.selection {
                throw RunError("--train-samples/--folds: \(folder) was trained on \(done.selection?.description ?? "every training sample"), this sweep asks for \(trial.selection?.description ?? "every training sample"); rerun a sweep with its own flags, use another --out, or pass --overwrite")
            }
        }
        var trialOptions = options
        trialOptions.outDirectory = folder
        // A checkpoint per evaluation: tiny training sets run thousands of short epochs.
        trialOptions.checkpointEvery = .epochs(configuration.training.evaluateEvery ?? 1)
        trialOptions.keep = 1
        trialOptions.data.selection = trial.selection
        if earlier.checkpoint, earlier.configuration == configuration { trialOptions.resume = folder }
        announce.line("trial \(trial.index) (\(place)): \(name)\(trialOptions.resume == nil ? "" : " (resuming)")\(options.cores.map { " on PUs \($0.map { String($0.rawValue) }.joined(separator: ","))" } ?? "")")
        let summary = try await TrainingRun.run(configuration: configuration, options: trialOptions, console: console)
        if summary.bestEpoch == nil, trial.needs.isEmpty {
            throw RunError("sweep: trial \(trial.index) has no validation results; it needs --validation-samples N or --folds K")
        }
        return Finished(trial: SweepTrial(index: trial.index, summary: summary, seedIndex: trial.seedIndex, target: target), summary: summary)
    }

    /// A trial folder's summary.json, when it has a readable one.
    static func readSummary(in folder: String, decoder: JSONDecoder) throws -> RunSummary? {
        do {
            return try RegularFile.readIfPresent("\(folder)/summary.json", limit: 64 << 20, what: "a summary").flatMap {
                try? decoder.decode(RunSummary.self, from: Data($0))
            }
        } catch { throw RunError(error.description) }
    }

    /// "1000 samples, input 0.2, hidden 0.5, seed 0, fold 2/5".
    static func describe(_ trial: Trial) -> String {
        let n = trial.configuration.network
        var parts = (trial.selection?.trainSamples.map { ["\($0) samples"] } ?? []) + ["input \(n.dropoutInput)", "hidden \(n.dropoutHidden)", "seed \(trial.seedIndex)"]
        if let s = trial.selection, let folds = s.folds { parts.append(s.fold.map { "fold \($0 + 1)/\(folds)" } ?? "refit on all \(folds) folds, \(trial.configuration.epochs) epochs") }
        return parts.joined(separator: ", ")
    }

    /// What a trial folder holds from an earlier run of the sweep: its summary, whether it has a
    /// checkpoint, and the configuration it was trained with (from either).
    static func earlierTrial(in folder: String, decoder: JSONDecoder) throws -> (summary: RunSummary?, checkpoint: Bool, configuration: RunConfiguration?) {
        let summary = try readSummary(in: folder, decoder: decoder)
        guard (try? Checkpoint.newest(in: folder)) != nil else { return (summary, false, summary?.configuration) }
        let state: TrainingState
        do { state = try TrainingRun.loadCheckpoint(try Checkpoint.newest(in: folder)).state } catch { throw RunError(error.description) }
        return (summary, true, state.network.map { RunConfiguration(network: $0, training: state.configuration) })
    }
}
