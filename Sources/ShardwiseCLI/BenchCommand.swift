import ArgumentParser
import ShardwiseRuntime

struct BenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Measure this machine's limits (GEMM, copy bandwidth) and Shardwise against them, in one run.")

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
            try await KernelReport.run(workers: workers, steps: steps, seconds: 1.0) { print($0) }
        } catch let error as RunError {
            throw error
        } catch {
            throw RunError("\(error)")
        }
    }
}
