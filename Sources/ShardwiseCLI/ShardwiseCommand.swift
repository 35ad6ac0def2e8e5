import ArgumentParser
import Dispatch
import Shardwise
import ShardwiseApp
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

struct ShardwiseCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "shardwise",
        abstract: "Data-parallel neural-network training on many-core CPU servers.",
        version: "\(ShardwiseVersion.current) (commit \(BLAS.buildCommit))",
        subcommands: [TrainCommand.self, EvalCommand.self, PredictCommand.self, InspectCommand.self, ExportCommand.self, GenerateCommand.self, SweepCommand.self, ScaleCommand.self, CurvesCommand.self, BenchCommand.self, TopologyCommand.self, DoctorCommand.self])
}

/// The one place where the program meets the process: standard output and error, exit
/// statuses, signals. Exit statuses: 0 success, 1 a failure while running (bad file,
/// diverged run), 2 a usage error (bad flag or value), 3 an MPI job whose ranks stopped
/// answering, 128 + signal after SIGINT or SIGTERM. One line on standard error, never a backtrace.
@main
enum Main {
    /// `shardwise --version`: the version, the commit built from, and the BLAS it will load.
    static func printVersion() -> Never {
        var lines = ["shardwise \(ShardwiseVersion.current) (commit \(BLAS.buildCommit))"]
        do {
            let blas = try BLAS.load()
            lines.append("BLAS: \(blas.library) (\(blas.build); \(blas.kernels) kernels, \(blas.selection))")
        } catch {
            lines.append("BLAS: none usable (\(error.description))")
        }
        writeAll(STDOUT_FILENO, lines.joined(separator: "\n") + "\n")
        exit(0)
    }

    static func main() async {
        if CommandLine.arguments.dropFirst() == ["--version"] { printVersion() }
        nonisolated(unsafe) let command: ParsableCommand
        do {
            command = try ShardwiseCommand.parseAsRoot()
        } catch {
            if ShardwiseCommand.exitCode(for: error) == .success {
                ShardwiseCommand.exit(withError: error)  // --help, --version
            }
            let message = ShardwiseCommand.message(for: error).split(separator: "\n").first.map(String.init) ?? "invalid arguments"
            fail("error: \(message) (see 'shardwise help' for usage)", status: 2)
        }
        // Under mpirun every rank runs the command: only train and bench know how to share the work.
        if Cluster.launched, !(command is TrainCommand || command is BenchCommand || command is DoctorCommand || command is TopologyCommand) {
            fail("error: under mpirun only 'shardwise train' and 'shardwise bench' run across ranks; run this command in one process", status: 2)
        }
        // The command runs in its own task so that a signal can cancel it.
        let parsed = Parsed(command: command)
        let work = Task.detached { try await parsed.run() }
        let signals = Signals(cancelling: work)
        do {
            try await work.value
            try Cluster.finish()
        } catch let error as RunError {
            let status = error.stopped ? (signals.received == 0 ? 0 : 128 + signals.received) : error.exitStatus
            let text = (error.stopped ? "" : "error: ") + message(for: error)
            guard let cluster = Cluster.current else { fail(text, status: status) }
            // Under MPI: an error every rank reached together ends the job normally, told
            // once; an error of this rank alone ends every rank (they would wait for it).
            if error.collective || error.stopped {
                if error.everyRank { writeAll(STDERR_FILENO, "rank \(cluster.rank) of \(cluster.size): " + text + "\n") }
                else if cluster.rank == 0 { writeAll(STDERR_FILENO, text + "\n") }
                try? Cluster.finish()
                exit(status)
            }
            writeAll(STDERR_FILENO, "rank \(cluster.rank) of \(cluster.size): " + text + "\n")
            Cluster.abortJob(status: status)
            exit(status)
        } catch let error as ClusterError {
            writeAll(STDERR_FILENO, "error: \(error)\n")
            Cluster.abortJob(status: 3)
            exit(3)
        } catch let error as ValidationError {
            fail("error: \(error) (see 'shardwise help' for usage)", status: 2)
        } catch {
            // `--help` and `help <command>` parse to argument-parser's help command, whose run throws the help request.
            if ShardwiseCommand.exitCode(for: error) == .success { ShardwiseCommand.exit(withError: error) }
            fail("error: \(error)", status: 1)
        }
    }

    /// The error's line, with configuration fields named by their flags.
    static func message(for error: RunError) -> String {
        guard case .configuration(let problem)? = error.underlying else { return error.description }
        return "\(flag(problem.field)): \(problem.problem(naming: flag))"
    }

    static func fail(_ text: String, status: Int32) -> Never {
        writeAll(STDERR_FILENO, text + "\n")
        exit(status)
    }
}

/// The parsed command, handed to the task that runs it (argument-parser's commands are not `Sendable`).
struct Parsed: @unchecked Sendable {
    let command: ParsableCommand

    func run() async throws {
        if var asyncCommand = command as? AsyncParsableCommand { try await asyncCommand.run() } else {
            var plain = command
            try plain.run()
        }
    }
}

/// The flag that sets each configuration field.
func flag(_ field: ConfigurationError.Field) -> String {
    switch field {
    case .hiddenSizes: "--layers"
    case .dropoutInput: "--dropout-input"
    case .dropoutHidden: "--dropout-hidden"
    case .epochs: "--epochs"
    case .batchSize: "--batch-size"
    case .shardSize: "--shard-size"
    case .seed: "--seed"
    case .learningRate: "--lr"
    case .momentumStart: "--momentum-start"
    case .momentum: "--momentum"
    case .momentumRamp: "--momentum-ramp"
    case .nesterov: "--nesterov"
    case .weightDecay: "--weight-decay"
    case .maxNorm: "--max-norm"
    case .scheduleStep: "--lr-step"
    case .scheduleGamma: "--lr-gamma"
    case .scheduleFloor: "--lr-floor"
    case .validationSamples: "--validation"
    case .earlyStoppingPatience: "--early-stopping"
    case .evaluateEvery: "--evaluate-every"
    case .stepsPerEpoch: "--steps-per-epoch"
    case .data: "--data"
    case .ranks: "mpirun -np"
    case .memory: "memory"
    case .schedule: "--schedule"
    case .dropoutKind: "--dropout-kind"
    case .fastAllreduce: "--fast-allreduce"
    case .overlap: "--no-overlap"
    case .exchange: "--exchange"
    case .resume: "--resume"
    case .kernels: "--kernels"
    case .optimizer: "--optimizer"
    case .beta1: "--beta1"
    case .beta2: "--beta2"
    case .warmupSteps: "--warmup-steps"
    case .epsilon: "--eps"
    case .clipNorm: "--clip-norm"
    case .model: "--model"
    }
}

/// SIGINT and SIGTERM cancel the command's task: training finishes the step in flight,
/// writes its checkpoint and stops. A second signal ends the process at once.
final class Signals {
    private var sources: [DispatchSourceSignal] = []
    private let first = FirstSignal()

    final class FirstSignal: Sendable {
        let number = Atomic<Int32>(0)
    }

    /// The first signal received (0: none).
    var received: Int32 { first.number.load(ordering: .relaxed) }

    init(cancelling task: Task<Void, any Error>) {
        let first = self.first
        for number in [SIGINT, SIGTERM] {
            signal(number, SIG_IGN)  // delivered to the dispatch source instead
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler {
                if first.number.compareExchange(expected: 0, desired: number, ordering: .relaxed).exchanged {
                    task.cancel()
                } else {
                    writeAll(STDERR_FILENO, "\nsecond interrupt: stopping now, without a checkpoint\n")
                    _exit(128 + number)
                }
            }
            source.resume()
            sources.append(source)
        }
    }
}

/// Writes all of `text` to a file descriptor (unbuffered, so progress and errors appear at once).
func writeAll(_ fd: Int32, _ text: String) {
    var bytes = Array(text.utf8)
    var done = 0
    while done < bytes.count {
        let n = bytes.withUnsafeMutableBytes { write(fd, $0.baseAddress! + done, $0.count - done) }
        if n <= 0 {
            if n < 0 && errno == EINTR { continue }
            return
        }
        done += n
    }
}

extension Console {
    /// Standard output, a progress line redrawn in place when it is a terminal, plain progress
    /// lines every SHARDWISE_PROGRESS_SECONDS (default 30; 0: none) otherwise; warnings on standard error.
    /// Under mpirun output goes through a pseudo-terminal whatever its destination: plain lines.
    static var standard: Console {
        let seconds = getenv("SHARDWISE_PROGRESS_SECONDS").flatMap { Double(String(cString: $0)) }.flatMap { $0.isFinite ? $0 : nil }
        return Console(
            isTerminal: isatty(STDOUT_FILENO) == 1 && !Cluster.launched, write: { writeAll(STDOUT_FILENO, $0) },
            warn: { writeAll(STDERR_FILENO, "warning: \($0)\n") }, progressSeconds: seconds ?? Console.defaultProgressSeconds)
    }
}
