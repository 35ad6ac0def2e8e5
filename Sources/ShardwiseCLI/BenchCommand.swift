import ArgumentParser
import Shardwise
import ShardwiseApp

struct BenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Measure this machine's limits (GEMM, copy bandwidth) and Shardwise against them, in one run.",
        discussion: "Under mpirun (mpirun -np 2 shardwise bench): the cross-rank step against a plain MPI_Allreduce, and N ranks against one process, instead.")

    @Option(help: "Workers for the multi-worker figures (default: one per core).")
    var workers: Int?

    @Option(help: "Timed training steps per configuration.")
    var steps = 60

    func validate() throws {
        if let workers, workers <= 0 { throw ValidationError("--workers: \(workers), expected at least 1") }
        if steps <= 0 { throw ValidationError("--steps: \(steps), expected at least 1") }
    }

    func run() async throws {
        do {
            if Cluster.launched {
                try await ClusterReport.run(steps: steps) { print($0) }
                return
            }
            try await KernelReport.run(workers: workers, steps: steps, seconds: 1.0) { print($0) }
        } catch let error as RunError {
            throw error
        } catch {
            throw RunError("\(error)")
        }
    }
}
