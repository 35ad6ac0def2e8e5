import Foundation
@testable import ShardwiseApp
import XCTest

#if canImport(Glibc)
import Glibc
#endif

/// What a person watching a run sees: on a terminal one progress line redrawn in place, in a
/// pipe or file plain periodic lines, both with throughput, running loss, elapsed time and ETAs.
final class ProgressTests: XCTestCase {
    var folder = ""

    override func setUp() {
        folder = NSTemporaryDirectory() + "progress-\(getpid())-\(UUID().uuidString.prefix(8))"
    }

    override func tearDown() {
        try? FileManager.default.removeItem(atPath: folder)
    }

    /// A run long enough for a few redraws: 64 steps of batch 128.
    func trainArguments(_ data: String, out: String) -> [String] {
        ["train", "--data", data, "--epochs", "2", "--train-samples", "8192", "--test-samples", "500", "--layers", "256,256", "--out", out]
    }

    /// The binary with its standard output and error on a pseudo-terminal it creates: everything it wrote.
    func runOnTerminal(_ arguments: [String]) throws -> (status: Int32, output: String) {
        // glibc's pseudo-terminal calls, which Swift's Glibc module leaves out (they need _XOPEN_SOURCE).
        typealias Open = @convention(c) (Int32) -> Int32
        typealias Name = @convention(c) (Int32, UnsafeMutablePointer<CChar>, Int) -> Int32
        func look<T>(_ name: String, _: T.Type) -> T? { dlsym(UnsafeMutableRawPointer(bitPattern: 0), name).map { unsafeBitCast($0, to: T.self) } }
        guard let openpt = look("posix_openpt", Open.self), let grant = look("grantpt", Open.self), let unlock = look("unlockpt", Open.self),
              let name = look("ptsname_r", Name.self) else { throw XCTSkip("no pseudo-terminal calls in this C library") }
        let master = openpt(O_RDWR | O_NOCTTY)
        var path = [CChar](repeating: 0, count: 128)
        guard master >= 0, grant(master) == 0, unlock(master) == 0, name(master, &path, path.count) == 0 else {
            throw XCTSkip("no pseudo-terminal on this machine: \(String(cString: strerror(errno)))")
        }
        let slave = open(path, O_RDWR | O_NOCTTY)
        XCTAssertGreaterThanOrEqual(slave, 0)
        let terminal = FileHandle(fileDescriptor: slave, closeOnDealloc: false)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: shardwiseExecutable)
        process.arguments = arguments
        process.standardOutput = terminal
        process.standardError = terminal
        try process.run()
        close(slave)  // the child holds its own copy; reads end with EIO once it exits
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = read(master, &buffer, buffer.count)
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            bytes += buffer[..<n]
        }
        close(master)
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: bytes, as: UTF8.self))
    }

    /// On a terminal: the progress line is redrawn in place (carriage return, erase line), names
    /// the epoch, its percentage, samples/s, the running loss, elapsed time and both ETAs; each
    /// epoch's result line replaces it.
    func testTerminalGetsOneLineRedrawnInPlace() throws {
        let data = try sharedMNIST()
        let (status, output) = try runOnTerminal(trainArguments(data, out: "\(folder)/tty"))
        XCTAssertEqual(status, 0, output)
        let redraws = output.components(separatedBy: "\r\u{1B}[K").dropFirst()
        XCTAssertGreaterThanOrEqual(redraws.count, 2, output)
        let bar = try XCTUnwrap(redraws.first { $0.hasPrefix("epoch 1/2 [") }, output)
        for part in ["%", "samples/s", "loss ", "elapsed ", "ETA epoch ", ", run "] { XCTAssert(bar.contains(part), "'\(bar)' lacks '\(part)'") }
        // The redraws carry no newline of their own: only the epoch's result line ends one.
        let lastRedraw = try XCTUnwrap(redraws.last { $0.hasPrefix("epoch 2/2 [") }, output)
        XCTAssertFalse(lastRedraw.contains("\n"), lastRedraw)
        XCTAssert(output.contains("\r\u{1B}[Kepoch 2/2: train loss"), output)
        XCTAssertFalse(output.contains("step 1/"), "plain progress lines on a terminal: \(output)")
    }

    /// In a pipe: no control characters, plain progress lines at the interval asked for
    /// (SHARDWISE_PROGRESS_SECONDS), each a whole line with the same figures; none at the
    /// default interval (30 s) for a run this short.
    func testPipeGetsPlainPeriodicLines() throws {
        let data = try sharedMNIST()
        setenv("SHARDWISE_PROGRESS_SECONDS", "0.01", 1)
        let often = try runShardwise(trainArguments(data, out: "\(folder)/often"))
        unsetenv("SHARDWISE_PROGRESS_SECONDS")
        XCTAssertEqual(often.status, 0, often.error)
        XCTAssertFalse(often.output.contains("\r") || often.output.contains("\u{1B}"), often.output)
        let lines = often.output.split(separator: "\n").filter { $0.contains(": step ") }
        XCTAssertGreaterThanOrEqual(lines.count, 2, often.output)
        let pattern = try NSRegularExpression(pattern: #"^epoch [12]/2: step (\d+)/64 \((\d+)%\), \d+ samples/s, loss \d+\.\d{4}, elapsed [0-9hms]+, ETA epoch [0-9hms]+, run [0-9hms]+$"#)
        var lastStep = (epoch: "", step: 0)
        for line in lines.map(String.init) {
            let match = try XCTUnwrap(pattern.firstMatch(in: line, range: NSRange(line.startIndex..., in: line)), "'\(line)'")
            let step = Int((line as NSString).substring(with: match.range(at: 1)))!, percent = Int((line as NSString).substring(with: match.range(at: 2)))!
            XCTAssert(step >= 1 && step < 64, line)
            XCTAssertEqual(percent, step * 100 / 64, line)
            let epoch = String(line.prefix(9))
            if epoch == lastStep.epoch { XCTAssertGreaterThan(step, lastStep.step, "steps go forward within an epoch: \(line)") }
            lastStep = (epoch, step)
        }
        let quiet = try runShardwise(trainArguments(data, out: "\(folder)/quiet"))
        XCTAssertEqual(quiet.status, 0, quiet.error)
        XCTAssertFalse(quiet.output.contains(": step "), quiet.output)
        XCTAssertEqual(quiet.output.split(separator: "\n").filter { $0.hasPrefix("epoch ") }.count, 2, quiet.output)
    }

    /// Durations as the progress lines write them.
    func testDurations() {
        XCTAssertEqual(Console.duration(0), "0s")
        XCTAssertEqual(Console.duration(59.4), "59s")
        XCTAssertEqual(Console.duration(245), "4m05s")
        XCTAssertEqual(Console.duration(7380), "2h03m")
        XCTAssertEqual(Console.duration(.nan), "?")
        XCTAssertEqual(Console.duration(-1), "?")
    }
}
