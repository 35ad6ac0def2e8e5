import ShardwiseIO
import ShardwiseKernels
import ShardwiseLayers

/// Why training cannot start or go on.
public enum TrainingError: Error, CustomStringConvertible {
    /// A setting that cannot work, by field.
    case configuration(ConfigurationError)
    /// A model that cannot take the data's rows, by layer.
    case model(ModelError)
    /// No usable BLAS library.
    case blas(BLASError)
    /// Another rank of the MPI job failed or stopped answering.
    case cluster(ClusterError)
    /// A checkpoint that could not be written or used.
    case checkpoint(CheckpointError)
    /// A loss or gradient stopped being finite at `step`; `lastCheckpoint`, if any, is untouched.
    case diverged(step: Int, reason: String, lastCheckpoint: String?)
    /// The task was cancelled during a step, which was abandoned before its update: the
    /// parameters are those after `completedSteps` steps (``Trainer/fit(epochs:test:checkpoints:stopAfterSteps:snapshots:)``
    /// turns this into its `.stopped` event).
    case cancelled(completedSteps: Int)

    public var description: String {
        switch self {
        case .configuration(let error): error.description
        case .model(let error): error.description
        case .blas(let error): error.description
        case .cluster(let error): error.description
        case .checkpoint(let error): error.description
        case .cancelled(let steps): "cancelled during a step; the parameters are those after step \(steps)"
        case .diverged(let step, let reason, let checkpoint):
            "training diverged at step \(step): \(reason)" + (checkpoint.map { "; the last good checkpoint \($0) is untouched" } ?? "")
        }
    }
}
