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

    @Option(help: "Instead: time this model file's training step (random data of its input shape) and each convolution's forward and backward pass on one worker, against the GEMM rate.")
    var model: String?

    @Option(help: "With --model: samples per step.")
    var batchSize = 128

    @Option(help: "With --model: samples per shard.")
    var shardSize = 64

    @Option(help: "With --model: classes of the random data (the model's outputs).")
    var classes = 10

    @Option(help: "With --model: the optimizer (sgd, adam, adamw, rmsprop).")
    var optimizer: OptimizerAlgorithm = .sgd

    @Flag(help: "With --model: print the report as one JSON object.")
    var json = false

    @Option(help: "With --model: the matrix kernels, portable (the default, as training's) or blas.")
    var kernels: MatrixKernels = .portable

    func validate() throws {
        if let workers, workers <= 0 { throw ValidationError("--workers: \(workers), expected at least 1") }
        if !(1...Network.maximumWidth).contains(classes) { throw ValidationError("--classes: \(classes), expected 1 to \(Network.maximumWidth) (the model's outputs)") }
        if !(1...1_000_000).contains(steps) { throw ValidationError("--steps: \(steps), expected 1 to 1000000 timed steps") }
    }

    func run() async throws {
        do {
            if Cluster.launched {
                try await ClusterReport.run(steps: steps) { print($0) }
                return
            }
            if let model {
                var network = try ModelFile.load(model)
                network.outputSize = classes
                // A language model (tokens first): random token windows, a label at each position.
                if let built = try? Network(network), built.nodes.first?.layer is TokenEmbedding { network.outputSize = built.widths.last! }
                var settings = OptimizerConfiguration(learningRate: 1e-3, momentum: MomentumRamp(start: 0.9, end: 0.9, epochs: 0), maxNorm: 3.5)
                settings.algorithm = optimizer
                let training = TrainingConfiguration(optimizer: settings, epochs: 1, batchSize: batchSize, shardSize: shardSize, seed: 1)
                let report = try await ModelBenchmark.run(
                    configuration: RunConfiguration(network: network, training: training), workers: workers, steps: steps, kernels: kernels)
                if json {
                    print(String(decoding: try JSON.encoder(pretty: false).encode(report), as: UTF8.self))
                } else {
                    print(String(format: "training step, batch %d, %d workers, %@ kernels: %.1f ms (%.0f samples/s); single-thread sgemm %.1f GFLOP/s", report.batchSize, report.workers, kernels.rawValue, report.stepMilliseconds, report.samplesPerSecond, report.gemmGflops))
                    for c in report.convolutions + (report.attention ?? []) {
                        print(String(format: "  layer %d, %@: %.2f ms forward+backward on 1 thread, %.1f GFLOP/s = %.0f%% of sgemm", c.layer, c.description, c.milliseconds, c.gflops, 100 * c.gemmFraction))
                    }
                    if let layers = report.meetingLayers, let apart = report.shardStatisticsStepMilliseconds {
                        print(String(format: "  BatchNorm over the global batch: %d layers, the shards meet twice a step at each; with per-shard statistics (stats: shard) the step takes %.1f ms: the meetings cost %.1f ms (%.1f%%)",
                                     layers, apart, report.stepMilliseconds - apart, 100 * (report.stepMilliseconds - apart) / report.stepMilliseconds))
                    }
                }
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
