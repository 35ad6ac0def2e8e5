import ArgumentParser
import ShardwiseRuntime

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

struct ShardwiseCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "shardwise",
        abstract: "Data-parallel neural-network training on many-core CPU servers.",
        version: Shardwise.version,
        subcommands: [TrainCommand.self, EvalCommand.self, SweepCommand.self, ScaleCommand.self, CurvesCommand.self, BenchCommand.self, TopologyCommand.self, DoctorCommand.self])
}

/// Exit statuses: 0 success, 1 a failure while running (bad file, diverged run),
/// 2 a usage error (bad flag or value). One line on standard error, never a backtrace.
@main
enum Main {
    static func main() async {
        do {
            var command = try ShardwiseCommand.parseAsRoot()
            if var asyncCommand = command as? AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch let error as RunError {
            writeAll(STDERR_FILENO, (error.exitStatus == 1 ? "error: " : "") + error.description + "\n")
            exit(error.exitStatus)
        } catch {
            if ShardwiseCommand.exitCode(for: error) == .success {
                ShardwiseCommand.exit(withError: error)  // --help, --version
            }
            let message = ShardwiseCommand.message(for: error)
                .split(separator: "\n").first.map(String.init) ?? "invalid arguments"
            writeAll(STDERR_FILENO, "error: \(message)\n(see 'shardwise help' for usage)\n")
            exit(2)
        }
    }
}
