import ShardwiseKernels
/// How the learning rate changes with training progress, like `torch.optim.lr_scheduler`.
///
/// Progress is measured in epochs, fractional within an epoch (`epoch + step/stepsPerEpoch`),
/// so continuous schedules move every step and `step` changes at epoch boundaries.
public enum LearningRateSchedule: Sendable, Equatable, Codable {
    /// The base rate throughout.
    case constant
    /// Multiply by `gamma` every `every` epochs (StepLR).
    case step(every: Int, gamma: Double)
    /// Multiply by `gamma` every epoch, continuously (ExponentialLR).
    case exponential(gamma: Double)
    /// Half a cosine from the base rate down to `floor` x base over `epochs` (CosineAnnealingLR).
    case cosine(epochs: Int, floor: Double)

    /// The learning rate at `progress` epochs (fractional), from the base rate `base`.
    public func learningRate(base: Double, progress epochs: Double) -> Double {
        switch self {
        case .constant:
            return base
        case .step(let every, let gamma):
            return base * StepMath.pow(gamma, Double(Int(epochs) / every))
        case .exponential(let gamma):
            return base * StepMath.pow(gamma, epochs)
        case .cosine(let total, let floor):
            let t = min(epochs / Double(total), 1)
            return base * (floor + (1 - floor) * 0.5 * (1 + StepMath.cos(Double.pi * t)))
        }
    }

    /// The name the command line uses for the schedule.
    public var name: String {
        switch self {
        case .constant: "constant"
        case .step: "step"
        case .exponential: "exponential"
        case .cosine: "cosine"
        }
    }
}

/// A linear ramp of the momentum coefficient from `start` to `end` over `epochs`,
/// as Srivastava et al. (2014) ramp 0.5 -> 0.99. `epochs == 0` means `end` throughout.
public struct MomentumRamp: Sendable, Equatable, Codable {
    /// The momentum at progress 0.
    public var start: Double
    /// The momentum from `epochs` on.
    public var end: Double
    /// The length of the ramp in epochs (0: `end` throughout).
    public var epochs: Double

    /// A ramp from `start` to `end` over `epochs` epochs.
    public init(start: Double, end: Double, epochs: Double) {
        self.start = start
        self.end = end
        self.epochs = epochs
    }

    /// The momentum at `progress` epochs (fractional).
    public func momentum(progress: Double) -> Double {
        guard epochs > 0 else { return end }
        let t = min(progress / epochs, 1)
        return start + (end - start) * t
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
