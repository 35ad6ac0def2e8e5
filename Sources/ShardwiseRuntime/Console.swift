import Foundation

/// What a run prints: a live progress bar on a terminal, one plain line per epoch otherwise.
public final class Console: @unchecked Sendable {
    let isTerminal: Bool
    let write: (String) -> Void
    /// Warnings are dropped too (MPI ranks other than 0).
    let quiet: Bool
    private var lastDraw = 0.0

    /// Prints to standard output (and warnings to standard error).
    public init() {
        isTerminal = isatty(STDOUT_FILENO) == 1
        write = { text in writeAll(STDOUT_FILENO, text) }
        quiet = false
    }

    /// Collects output through `write`, as a non-terminal (tests).
    public init(write: @escaping (String) -> Void, quiet: Bool = false) {
        isTerminal = false
        self.write = write
        self.quiet = quiet
    }

    /// Prints nothing: every MPI rank but rank 0.
    public static var silent: Console { Console(write: { _ in }, quiet: true) }

    public func line(_ text: String) { write(text + "\n") }

    public func warn(_ text: String) {
        guard !quiet else { return }
        writeAll(STDERR_FILENO, "warning: \(text)\n")
    }

    /// Redraws the bar at most ten times a second; silent when not on a terminal.
    public func progress(epoch: Int, of epochs: Int, done: Int, total: Int, elapsed: Double, samplesPerSecond: Double, loss: Double) {
        guard isTerminal else { return }
        let now = monotonicSeconds()
        guard done == total || now - lastDraw > 0.1 else { return }
        lastDraw = now
        let width = 30
        let filled = width * done / total
        let bar = String(repeating: "=", count: filled) + String(repeating: " ", count: width - filled)
        let eta = elapsed / Double(done) * Double(total - done)
        write(String(format: "\repoch %d/%d [%@] %3d%% %7.0f samples/s loss %.4f ETA %3.0fs", epoch, epochs, bar, 100 * done / total, samplesPerSecond, loss, eta))
    }

    public func epochDone(_ record: EpochRecord, of epochs: Int) {
        let validation = record.validationErrorPercent.map { String(format: ", validation error %.2f%%", $0) } ?? ""
        let text = String(
            format: "epoch %d/%d: train loss %.4f%@, test error %.2f%%, %.0f samples/s, %.1f s",
            record.epoch, epochs, record.trainLoss, validation, record.testErrorPercent, record.samplesPerSecond, record.seconds)
        write((isTerminal ? "\r\u{1B}[K" : "") + text + "\n")
    }
}

/// Writes all of `text` to a file descriptor (unbuffered, so progress and errors appear at once).
public func writeAll(_ fd: Int32, _ text: String) {
    var bytes = Array(text.utf8)
    var done = 0
    while done < bytes.count {
        let n = bytes.withUnsafeMutableBytes { Foundation.write(fd, $0.baseAddress! + done, $0.count - done) }
        if n <= 0 {
            if n < 0 && errno == EINTR { continue }
            return
        }
        done += n
    }
}
