import ShardwiseLayers
import ShardwiseData
import ShardwiseIO
import ShardwiseKernels

/// When and where ``Trainer/fit(epochs:test:checkpoints:stopAfterSteps:snapshots:)`` writes checkpoints.
public struct CheckpointPolicy: Sendable {
    /// How often, besides at the end and when stopped.
    public enum Interval: Sendable, Equatable {
        /// Every N optimisation steps.
        case steps(Int)
        /// After every N epochs.
        case epochs(Int)
    }

    /// The folder for the `checkpoint-<step>` folders (and `best/` with early stopping).
    public var directory: String
    /// How often besides the end and a stop; nil: only then.
    public var every: Interval?
    /// Checkpoints kept (the newest).
    public var keep: Int

    /// Checkpoints into `directory`, every `every`, keeping the newest `keep`.
    public init(directory: String, every: Interval? = nil, keep: Int = 3) {
        self.directory = directory
        self.every = every
        self.keep = keep
    }
}

extension Trainer {
    /// Trains until `epochs` epochs are done (default: the configuration's), from where
    /// ``state`` stands, yielding an event per step, per epoch and per checkpoint.
    ///
    /// - Parameters:
    ///   - epochs: the epoch count to reach (default: the configuration's `epochs`).
    ///   - test: evaluated after every epoch (the record's `testErrorPercent`; nil without one).
    ///   - checkpoints: where checkpoints go; without one, none is written.
    ///   - stopAfterSteps: stop as if cancelled after this many steps of this call.
    ///   - snapshots: after each evaluated epoch, also yield a ``TrainingEvent/snapshot(_:)``
    ///     (a copy of the parameters: what a logger of weights reads, race-free).
    /// The loop runs on the pool's first worker, so it shares no thread with the caller.
    public func fit(
        epochs: Int? = nil, test: Dataset? = nil, checkpoints: CheckpointPolicy? = nil, stopAfterSteps: Int? = nil,
        snapshots: Bool = false
    ) -> TrainingEvents {
        let until = epochs ?? configuration.epochs
        return TrainingEvents { channel in
            Task(executorPreference: self.pool.workers[0]) {
                do {
                    try await self.train(
                        until: until, test: test, checkpoints: checkpoints, stopAfterSteps: stopAfterSteps, snapshots: snapshots,
                        emit: channel.send)
                    channel.finish()
                } catch {
                    channel.finish(throwing: error)
                }
            }
        }
    }

    /// The training loop: epochs of steps, each epoch evaluated, checkpoints on the policy's
    /// schedule, early stopping on the validation split, and a checkpoint when stopped.
    func train(
        until epochs: Int, test: Dataset?, checkpoints: CheckpointPolicy?, stopAfterSteps: Int?, snapshots: Bool = false,
        emit: (TrainingEvent) -> Void
    ) async throws(TrainingError) {
        if let test {
            let fingerprint = test.fingerprint
            if let stored = state.testData, stored != fingerprint {
                throw .configuration(ConfigurationError(.data, "test set \(fingerprint), but the earlier epochs were tested on \(stored)"))
            }
            state.testData = fingerprint
        }
        // A finished run stays finished: nothing is trained, and its checkpoints are left as they are.
        guard !isFinished || epochs > configuration.epochs else { return }
        let steps = stepsPerEpoch
        var stepsThisRun = 0
        var lastCheckpoint: String?
        // Every checkpoint written is announced, before what it belongs to (a stop, the end).
        func save(_ policy: CheckpointPolicy, _ kind: CheckpointKind) throws(TrainingError) -> String {
            let path = try writeCheckpoint(policy, kind: kind)
            emit(.checkpoint(path: path, globalStep: state.globalStep, kind: kind))
            return path
        }
        while state.epoch < epochs {
            shuffle(epoch: state.epoch)
            let start = monotonicSeconds() - state.epochSeconds
            while state.stepInEpoch < steps {
                let loss: Double
                do { loss = try await step(epoch: state.epoch, stepInEpoch: state.stepInEpoch) } catch .cancelled {
                    let path = try checkpoints.map { policy throws(TrainingError) in try save(policy, .stopped) }
                    emit(.stopped(globalStep: state.globalStep, checkpoint: path))
                    return
                }
                try checkFinite(loss, lastCheckpoint: lastCheckpoint)
                state.epochLossSum += loss
                state.stepInEpoch += 1
                state.epochSeconds = monotonicSeconds() - start
                stepsThisRun += 1
                emit(.step(progress(epochs: epochs, loss: loss)))
                // Under MPI the ranks agreed in the step, so all stop here together.
                if (cluster == nil ? Task.isCancelled : agreedStop) || stepsThisRun == stopAfterSteps {
                    let path = try checkpoints.map { policy throws(TrainingError) in try save(policy, .stopped) }
                    emit(.stopped(globalStep: state.globalStep, checkpoint: path))
                    return
                }
                // On an epoch's last step the checkpoint waits for the epoch's record (below).
                if case .steps(let n) = checkpoints?.every, state.globalStep % n == 0, state.stepInEpoch < steps {
                    lastCheckpoint = try save(checkpoints!, .scheduled)
                }
            }
            let record = try await finishEpoch(test: test)
            emit(.epoch(record))
            if snapshots, configuration.evaluates(epoch: record.epoch) {
                emit(.snapshot(EpochSnapshot(
                    epoch: record.epoch, globalStep: state.globalStep,
                    parameters: Array(UnsafeBufferPointer(start: parameters.pointer, count: parameters.count)),
                    split: timing.meanSplit(steps: stepsThisRun))))
            }
            if record.validation != nil, state.epochsWithoutImprovement == 0, configuration.earlyStoppingPatience != nil,
               let policy = checkpoints {
                var best = policy
                best.directory += "/best"
                best.keep = 1
                _ = try save(best, .best)
            }
            if let patience = configuration.earlyStoppingPatience, (state.epochsWithoutImprovement ?? 0) >= patience,
               state.epoch < epochs {
                emit(.stoppedEarly(
                    epoch: state.epoch, bestEpoch: state.bestEpoch ?? 0,
                    bestValidationErrorPercent: state.bestValidationErrorPercent ?? .nan, patience: patience))
                break
            }
            // Every N epochs, or every N steps when the epoch's last step was the N-th.
            let due: Bool
            switch checkpoints?.every {
            case .steps(let n)?: due = state.globalStep % n == 0
            case .epochs(let n)?: due = state.epoch % n == 0
            case nil: due = false
            }
            if due, state.epoch < epochs { lastCheckpoint = try save(checkpoints!, .scheduled) }
        }
        if let policy = checkpoints { _ = try save(policy, .scheduled) }
    }

    func progress(epochs: Int, loss: Double) -> StepProgress {
        let done = state.stepInEpoch * configuration.batchSize
        // The step just taken ran at the rate of its progress point (see `step(epoch:stepInEpoch:)`).
        let taken = Double(state.epoch) + Double(state.stepInEpoch - 1) / Double(stepsPerEpoch)
        return StepProgress(
            epoch: state.epoch + 1, epochs: epochs, step: state.stepInEpoch, stepsPerEpoch: stepsPerEpoch,
            globalStep: state.globalStep, elapsed: state.epochSeconds,
            samplesPerSecond: Double(done) / state.epochSeconds, meanLoss: state.epochLossSum / Double(done),
            loss: loss / Double(configuration.batchSize),
            learningRate: Double(configuration.optimizer.hyperparameters(progress: taken).learningRate))
    }

    func checkFinite(_ loss: Double, lastCheckpoint: String?) throws(TrainingError) {
        if let tensor = nonFiniteGradientTensor {
            throw .diverged(step: state.globalStep - 1, reason: "the gradient of \(tensor) is NaN or infinite", lastCheckpoint: lastCheckpoint)
        }
        guard loss.isFinite else { throw .diverged(step: state.globalStep - 1, reason: "the loss is \(loss)", lastCheckpoint: lastCheckpoint) }
    }

    /// Evaluates the epoch just trained, records it, and moves the state to the next epoch.
    func finishEpoch(test: Dataset?) async throws(TrainingError) -> EpochRecord {
        let samples = stepsPerEpoch * configuration.batchSize
        var record = EpochRecord(
            epoch: state.epoch + 1, trainLoss: state.epochLossSum / Double(samples), testErrorPercent: nil,
            samplesPerSecond: Double(samples) / state.epochSeconds, seconds: state.epochSeconds)
        let evaluated = configuration.evaluates(epoch: record.epoch)
        if evaluated, let test { record.test = try await metrics(on: test) }
        if evaluated, let validationData {
            let metrics = try await metrics(on: validationData)
            record.validation = metrics
            let error = metrics.primary
            if error < (state.bestValidationErrorPercent ?? .infinity) {
                state.bestValidationErrorPercent = error
                state.bestEpoch = record.epoch
                state.epochsWithoutImprovement = 0
            } else {
                state.epochsWithoutImprovement = (state.epochsWithoutImprovement ?? 0) + 1
            }
        }
        state.records.append(record)
        state.epoch += 1
        state.stepInEpoch = 0
        state.epochLossSum = 0
        state.epochSeconds = 0
        return record
    }

    /// Writes a checkpoint of the current state. Under MPI every rank gathers the optimizer
    /// state (a collective) and rank 0 alone writes; the others return the path rank 0 writes.
    @discardableResult
    public func writeCheckpoint(_ policy: CheckpointPolicy, kind: CheckpointKind = .scheduled) throws(TrainingError) -> String {
        do {
            for k in 0..<optimizer.stateCount { try exchange?.gatherOptimizerState(optimizer.state.pointer + k * optimizer.stateStride) }
        } catch { throw .cluster(error) }
        guard (cluster?.rank ?? 0) == 0 else { return "\(policy.directory)/\(Checkpoint.folderName(step: state.globalStep))" }
        var metadata: [String: String] = [:]
        if let networkDescription, let json = try? JSON.line(networkDescription) { metadata["network"] = json }
        metadata["shardwise_version"] = ShardwiseVersion.current
        if let task = state.task { metadata["task"] = task.rawValue }
        if let preprocessing = state.preprocessing, let json = try? JSON.line(preprocessing) { metadata["preprocessing"] = json }
        if let vocabulary = state.vocabulary, let json = try? JSON.line(vocabulary) { metadata["vocabulary"] = json }
        do {
            return try Checkpoint.write(
                parameters: parameters.pointer, optimizerState: optimizer.state.pointer,
                optimizerStateNames: configuration.optimizer.stateNames, layout: network.layout,
                state: state, step: state.globalStep, metadata: metadata, directory: policy.directory, keep: policy.keep)
        } catch { throw .checkpoint(error) }
    }
}
