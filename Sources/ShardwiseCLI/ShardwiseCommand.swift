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
            // Under mpirun every rank runs the command: only train and bench know how to share the work.
            if Cluster.launched, !(command is TrainCommand || command is BenchCommand || command is DoctorCommand || command is TopologyCommand) {
                writeAll(STDERR_FILENO, "error: under mpirun only 'shardwise train' and 'shardwise bench' run across ranks; run this command in one process\n")
                exit(2)
            }
            if var asyncCommand = command as? AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
            Cluster.finish()
        } catch let error as RunError {
            let text = (error.exitStatus == 1 ? "error: " : "") + error.description + "\n"
            guard let cluster = Cluster.current else {
                writeAll(STDERR_FILENO, text)
                exit(error.exitStatus)
            }
            // Under MPI: an error every rank reached together ends the job normally, told
            // once; an error of this rank alone ends every rank (they would wait for it).
            if error.collective {
                if cluster.rank == 0 { writeAll(STDERR_FILENO, text) }
                Cluster.finish()
                exit(error.exitStatus)
            }
            writeAll(STDERR_FILENO, "rank \(cluster.rank) of \(cluster.size): " + text)
            Cluster.abort(status: error.exitStatus)
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
