import Foundation
import Shardwise

/// What a run says: a progress line redrawn in place on a terminal (as tqdm and Keras draw
/// theirs), a plain progress line every `progressSeconds` otherwise (logs, files, CI), and one
/// line per epoch either way. It writes through the closures it is given (the program's
/// standard output and error). Calls come from one task at a time (the run's event loop).
public final class Console: @unchecked Sendable {
    let isTerminal: Bool
    let write: @Sendable (String) -> Void
    let warning: @Sendable (String) -> Void
    /// Seconds between plain progress lines when not on a terminal (0 or less: none).
    let progressSeconds: Double
    /// A language model's run: epoch lines give the test loss (nats and bits a token) before the error.
    public var showsLoss = false
    private var lastDraw = 0.0
    private var lastPlain: (epoch: Int, time: Double)?
    /// When this console began: a run's elapsed time counts from it.
    private let start = monotonicSeconds()

    /// Seconds between plain progress lines by default: a long epoch in a log still shows signs of life.
    public static let defaultProgressSeconds = 30.0

    /// - Parameters:
    ///   - isTerminal: whether `write` goes to a terminal (the progress line is redrawn in place only there).
    ///   - write: receives lines (each ends with a newline) and progress redraws.
    ///   - warn: receives warnings (one line each, without "warning: ").
    ///   - progressSeconds: not on a terminal, seconds between plain progress lines within an epoch (0: none).
    public init(
        isTerminal: Bool = false, write: @escaping @Sendable (String) -> Void, warn: @escaping @Sendable (String) -> Void = { _ in },
        progressSeconds: Double = Console.defaultProgressSeconds
    ) {
        self.isTerminal = isTerminal
        self.write = write
        warning = warn
        self.progressSeconds = progressSeconds
    }

    /// Says nothing: every MPI rank but rank 0.
    public static var silent: Console { Console(write: { _ in }) }

    /// The same output, each line and warning led by `prefix`, without progress bars: one of
    /// several trials that train side by side.
    public func prefixed(_ prefix: String) -> Console {
        let (write, warning) = (self.write, self.warning)
        return Console(isTerminal: false, write: { text in write(prefix + text) }, warn: { warning(prefix + $0) }, progressSeconds: progressSeconds)
    }

    public func line(_ text: String) { write(text + "\n") }

    public func warn(_ text: String) { warning(text) }

    /// On a terminal, redraws the progress line at most ten times a second; otherwise writes a
    /// plain line when `progressSeconds` have passed since the epoch began or the last such line.
    public func progress(_ p: StepProgress) {
        let now = monotonicSeconds()
        guard p.step > 0, p.stepsPerEpoch > 0 else { return }
        let percent = 100 * p.step / p.stepsPerEpoch
        let perStep = p.elapsed / Double(p.step)
        let epochETA = perStep * Double(p.stepsPerEpoch - p.step)
        let runETA = epochETA + perStep * Double(p.stepsPerEpoch) * Double(max(p.epochs - p.epoch, 0))
        let figures = String(format: "%.0f samples/s, loss %.4f", p.samplesPerSecond, p.meanLoss)
        let times = "elapsed \(Self.duration(now - start)), ETA epoch \(Self.duration(epochETA)), run \(Self.duration(runETA))"
        if isTerminal {
            guard p.step == p.stepsPerEpoch || now - lastDraw > 0.1 else { return }
            lastDraw = now
            let width = 24
            let filled = min(width, width * p.step / p.stepsPerEpoch)
            let bar = String(repeating: "=", count: filled) + String(repeating: " ", count: width - filled)
            write("\r\u{1B}[K" + String(format: "epoch %d/%d [%@] %3d%% ", p.epoch, p.epochs, bar, percent) + figures + ", " + times)
            return
        }
        guard progressSeconds > 0, p.step < p.stepsPerEpoch else { return }
        if lastPlain?.epoch != p.epoch { lastPlain = (p.epoch, now - p.elapsed) }
        guard now - lastPlain!.time >= progressSeconds else { return }
        lastPlain = (p.epoch, now)
        write("epoch \(p.epoch)/\(p.epochs): step \(p.step)/\(p.stepsPerEpoch) (\(percent)%), \(figures), \(times)\n")
    }

    /// 59s, 4m05s, 2h03m.
    static func duration(_ seconds: Double) -> String {
        guard seconds.isFinite, seconds >= 0 else { return "?" }
        let s = Int(seconds.rounded())
        if s < 60 { return "\(s)s" }
        if s < 3600 { return String(format: "%dm%02ds", s / 60, s % 60) }
        return String(format: "%dh%02dm", s / 3600, s % 3600 / 60)
    }

    public func epochDone(_ record: EpochRecord, of epochs: Int) {
        let validation = record.validationErrorPercent.map { String(format: ", validation error %.2f%%", $0) }
            ?? record.validationRmse.map { String(format: ", validation RMSE %.4g", $0) } ?? ""
        let loss = showsLoss ? record.testLoss.map { String(format: ", test loss %.4f (%.3f bits)", $0, $0 / M_LN2) } : nil
        let test = loss.map { $0 + String(format: ", error %.2f%%", record.testErrorPercent ?? .nan) }
            ?? record.testErrorPercent.map { String(format: ", test error %.2f%%", $0) }
            ?? record.testRmse.map { String(format: ", test RMSE %.4g, MAE %.4g", $0, record.testMae ?? .nan) } ?? ""
        let text = String(
            format: "epoch %d/%d: train loss %.4f%@%@, %.0f samples/s, %.1f s",
            record.epoch, epochs, record.trainLoss, validation, test, record.samplesPerSecond, record.seconds)
        write((isTerminal ? "\r\u{1B}[K" : "") + text + "\n")
    }
}
