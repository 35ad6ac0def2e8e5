import Foundation
import Shardwise

/// What a run says: a live progress bar on a terminal, one plain line per epoch otherwise.
/// It writes through the closures it is given (the program's standard output and error).
public final class Console: @unchecked Sendable {
    let isTerminal: Bool
    let write: @Sendable (String) -> Void
    let warning: @Sendable (String) -> Void
    private var lastDraw = 0.0

    /// - Parameters:
    ///   - isTerminal: whether `write` goes to a terminal (progress bars are drawn only there).
    ///   - write: receives lines (each ends with a newline) and progress redraws.
    ///   - warn: receives warnings (one line each, without "warning: ").
    public init(isTerminal: Bool = false, write: @escaping @Sendable (String) -> Void, warn: @escaping @Sendable (String) -> Void = { _ in }) {
        self.isTerminal = isTerminal
        self.write = write
        warning = warn
    }

    /// Says nothing: every MPI rank but rank 0.
    public static var silent: Console { Console(write: { _ in }) }

    /// The same output, each line and warning led by `prefix`, without progress bars: one of
    /// several trials that train side by side.
    public func prefixed(_ prefix: String) -> Console {
        let (write, warning) = (self.write, self.warning)
        return Console(isTerminal: false, write: { text in write(prefix + text) }, warn: { warning(prefix + $0) })
    }

    public func line(_ text: String) { write(text + "\n") }

    public func warn(_ text: String) { warning(text) }

    /// Redraws the bar at most ten times a second; silent when not on a terminal.
    public func progress(_ p: StepProgress) {
        guard isTerminal else { return }
        let now = monotonicSeconds()
        guard p.step == p.stepsPerEpoch || now - lastDraw > 0.1 else { return }
        lastDraw = now
        let width = 30
        let filled = width * p.step / p.stepsPerEpoch
        let bar = String(repeating: "=", count: filled) + String(repeating: " ", count: width - filled)
        let eta = p.elapsed / Double(p.step) * Double(p.stepsPerEpoch - p.step)
        write(String(format: "\repoch %d/%d [%@] %3d%% %7.0f samples/s loss %.4f ETA %3.0fs", p.epoch, p.epochs, bar, 100 * p.step / p.stepsPerEpoch, p.samplesPerSecond, p.meanLoss, eta))
    }

    public func epochDone(_ record: EpochRecord, of epochs: Int) {
        let validation = record.validationErrorPercent.map { String(format: ", validation error %.2f%%", $0) }
            ?? record.validationRmse.map { String(format: ", validation RMSE %.4g", $0) } ?? ""
        let test = record.testErrorPercent.map { String(format: ", test error %.2f%%", $0) }
            ?? record.testRmse.map { String(format: ", test RMSE %.4g, MAE %.4g", $0, record.testMae ?? .nan) } ?? ""
        let text = String(
            format: "epoch %d/%d: train loss %.4f%@%@, %.0f samples/s, %.1f s",
            record.epoch, epochs, record.trainLoss, validation, test, record.samplesPerSecond, record.seconds)
        write((isTerminal ? "\r\u{1B}[K" : "") + text + "\n")
    }
}
