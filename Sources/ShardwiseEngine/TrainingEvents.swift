import ShardwiseKernels

/// What ``Trainer/fit(epochs:test:checkpoints:stopAfterSteps:snapshots:)`` reports, in order.
public enum TrainingEvent: Sendable {
    /// A step finished.
    case step(StepProgress)
    /// An epoch finished and was evaluated.
    case epoch(EpochRecord)
    /// Right after an evaluated epoch's `.epoch`, when `fit` was asked for snapshots: the
    /// parameters and timing as that epoch ended, copied on the training task (the trainer's own
    /// `parameters`, `state` and `timing` belong to the next epoch by the time an event is read).
    case snapshot(EpochSnapshot)
    /// A checkpoint folder was written.
    case checkpoint(path: String, globalStep: Int, kind: CheckpointKind)
    /// Early stopping ended training after `epoch` (1-based).
    case stoppedEarly(epoch: Int, bestEpoch: Int, bestValidationErrorPercent: Double, patience: Int)
    /// The task was cancelled (or `stopAfterSteps` reached): training stopped after `globalStep`;
    /// the checkpoint written then, if a checkpoint policy was given.
    case stopped(globalStep: Int, checkpoint: String?)
}

/// The trainer as an epoch ended (see ``TrainingEvent/snapshot(_:)``).
public struct EpochSnapshot: Sendable {
    /// The 1-based epoch that ended.
    public var epoch: Int
    /// Optimisation steps taken when it ended (since the first step of the run, resumptions included).
    public var globalStep: Int
    /// A copy of the parameters, in ``ParameterLayout`` order.
    public var parameters: [Float]
    /// The mean step-time split over this `fit` call's steps so far.
    public var split: StepSplit
}

/// Why a checkpoint was written.
public enum CheckpointKind: Sendable, Equatable {
    /// On the policy's schedule, or at the end of training.
    case scheduled
    /// The best validation error so far (early stopping keeps it in `best/`).
    case best
    /// Training was stopped.
    case stopped
}

/// Progress after one step.
public struct StepProgress: Sendable {
    /// 1-based epoch and step within it.
    public var epoch: Int
    /// The epoch count training runs to.
    public var epochs: Int
    /// The steps done in this epoch (1-based).
    public var step: Int
    /// Steps per epoch.
    public var stepsPerEpoch: Int
    /// Steps done since training began, across epochs and resumptions.
    public var globalStep: Int
    /// Training seconds of this epoch so far.
    public var elapsed: Double
    /// This epoch's training samples per second so far.
    public var samplesPerSecond: Double
    /// Mean loss per sample over the epoch's steps so far.
    public var meanLoss: Double
    /// Mean loss per sample of the step just taken.
    public var loss: Double
    /// The learning rate the step just taken used.
    public var learningRate: Double
}

/// The events of one training run, as an `AsyncSequence`.
///
/// Iterating starts training on the trainer's first worker. Cancelling the iterating task
/// stops training after the step in flight: the events up to ``TrainingEvent/stopped(globalStep:checkpoint:)``
/// still arrive, then the sequence ends. Leaving the loop early (`break`) cancels training the
/// same way, without waiting for it: keep the worker pool running until the trainer is released.
/// A failure ends the sequence by throwing a ``TrainingError``.
public struct TrainingEvents: AsyncSequence, Sendable {
    public typealias Element = TrainingEvent
    let start: @Sendable (EventChannel) -> Task<Void, Never>

    public func makeAsyncIterator() -> Iterator { Iterator(run: Run(start: start)) }

    /// Trains while iterated; see `TrainingEvents`.
    public struct Iterator: AsyncIteratorProtocol {
        let run: Run

        public mutating func next() async throws -> TrainingEvent? {
            let run = self.run
            run.startIfNeeded()
            // Not the stream's own cancellation: cancelling stops the producer, whose last events still arrive.
            return try await withTaskCancellationHandler {
                try await run.channel.receive()
            } onCancel: {
                run.cancel()
            }
        }
    }

    /// The producer task of one iteration; cancelled when its iterator goes away.
    final class Run: Sendable {
        let channel = EventChannel()
        let start: @Sendable (EventChannel) -> Task<Void, Never>
        let task = Locked<Task<Void, Never>?>(nil)

        init(start: @escaping @Sendable (EventChannel) -> Task<Void, Never>) { self.start = start }

        func startIfNeeded() {
            task.withLock { if $0 == nil { $0 = start(channel) } }
        }

        func cancel() { task.withLock { $0?.cancel() } }

        deinit { task.withLock { $0?.cancel() } }
    }
}

/// A one-consumer queue of events that ends with nil or an error; sending never waits.
///
/// Step events wake a waiting consumer at most every `stepWakeInterval` seconds; the ones
/// between stay queued and arrive with the next wake-up, in order. Waking a thread for
/// every step cost 5-10% of the reference network's throughput on 2 cores (the woken
/// thread preempts a pinned worker); every other event wakes the consumer at once.
final class EventChannel: Sendable {
    struct State {
        var buffer: [TrainingEvent] = []
        var waiter: CheckedContinuation<TrainingEvent?, any Error>?
        var finished = false
        var failure: (any Error)?
        var lastWake = 0.0
    }

    let state = Locked(State())
    static let stepWakeInterval = 0.1

    func send(_ event: TrainingEvent) {
        var urgent = true
        if case .step = event { urgent = false }
        let now = monotonicSeconds()
        let wake = state.withLock { s -> (CheckedContinuation<TrainingEvent?, any Error>, TrainingEvent)? in
            s.buffer.append(event)
            guard let w = s.waiter, urgent || now - s.lastWake >= Self.stepWakeInterval else { return nil }
            s.waiter = nil
            s.lastWake = now
            return (w, s.buffer.removeFirst())
        }
        wake.map { $0.0.resume(returning: $0.1) }
    }

    /// Ends the sequence after the queued events (step events may be waiting in the queue
    /// while the consumer waits): then nil, or the error, thrown once.
    func finish(throwing error: (any Error)? = nil) {
        let wake = state.withLock { s -> (CheckedContinuation<TrainingEvent?, any Error>, TrainingEvent?)? in
            s.finished = true
            s.failure = error
            guard let w = s.waiter else { return nil }
            s.waiter = nil
            if !s.buffer.isEmpty { return (w, s.buffer.removeFirst()) }
            s.failure = nil
            return (w, nil)
        }
        guard let (waiter, event) = wake else { return }
        if let event { waiter.resume(returning: event) } else if let error { waiter.resume(throwing: error) } else { waiter.resume(returning: nil) }
    }

    func receive() async throws -> TrainingEvent? {
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<TrainingEvent?, any Error>) in
            enum Answer { case event(TrainingEvent), end, fail(any Error), wait }
            let answer = state.withLock { s -> Answer in
                if !s.buffer.isEmpty { return .event(s.buffer.removeFirst()) }
                if s.finished {
                    if let failure = s.failure {
                        s.failure = nil  // thrown once; the sequence then ends
                        return .fail(failure)
                    }
                    return .end
                }
                s.waiter = c
                return .wait
            }
            switch answer {
            case .event(let event): c.resume(returning: event)
            case .end: c.resume(returning: nil)
            case .fail(let error): c.resume(throwing: error)
            case .wait: break
            }
        }
    }
}
