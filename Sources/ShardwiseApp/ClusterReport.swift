import Foundation
import Shardwise

/// `mpirun -np N shardwise bench`: the cross-rank step against a plain MPI_Allreduce of
/// the same gradient, and end-to-end samples/s of N ranks against one process using all
/// of the host's cores, measured in the same run. Rank 0 prints.
public enum ClusterReport {
    public static func run(steps: Int, repetitions: Int = 30, line: (String) -> Void) async throws {
        let topology = try Topology.thisMachine()
        guard let cluster = try Cluster.join(topology: topology, timeout: 300) else {
            throw RunError("the cluster report needs an MPI launcher: mpirun -np 2 shardwise bench")
        }
        func say(_ text: String) { if cluster.rank == 0 { line(text) } }
        let pool = try WorkerPool.onThisMachine(topology: topology, share: (cluster.localRank, cluster.localSize))
        defer { pool.shutdown() }
        let reference = RunConfiguration.reference()
        let network = try Network(reference.network)
        let gradientBytes = Double(network.layout.parameterCount * 4)
        say("shardwise \(ShardwiseVersion.current) cluster report: \(cluster.size) ranks x \(pool.workers.count) workers, BLAS \(BLAS.kernelsDescription); reference network, \(network.layout.parameterCount) parameters (\(String(format: "%.1f", gradientBytes / 1e6)) MB of gradient)")

        // One process with all of the host's cores, while the other ranks sleep.
        var baseline: [Int: Double] = [:]
        if cluster.rank == 0 {
            let whole = try WorkerPool.onThisMachine(topology: topology)
            defer { whole.shutdown() }
            for batch in [128, 256] {
                var configuration = reference
                configuration.batchSize = batch
                baseline[batch] = try await MachineLimits.trainingThroughput(pool: whole, configuration: configuration, steps: steps).samplesPerSecond
            }
            say("baseline: 1 process x \(whole.workers.count) workers (the other ranks idle)")
        }
        try cluster.barrier("waiting for the baseline", idle: true)

        say("cross-rank step, median of \(repetitions) (everything after the shards' gradients are computed):")
        say("batch  ordered exchange ms  MPI_Allreduce step ms  MPI_Allreduce alone ms  ordered / allreduce step")
        for batch in [128, 256] {
            var configuration = reference
            configuration.batchSize = batch
            let data = MachineLimits.randomData(count: batch, features: configuration.network.inputSize, classes: configuration.network.outputSize)
            var medians: [Double] = []
            for fast in [false, true] {
                let trainer = try Trainer(
                    network: configuration.network, data: data, configuration: configuration.training, workers: pool,
                    cluster: cluster, fastAllreduce: fast)
                _ = try await trainer.step(epoch: 0, stepInEpoch: 0)
                let hyper = UpdateHyperparameters(learningRate: 1e-9, momentum: 0.9)
                medians.append(try await timed(repetitions, cluster) { try await trainer.crossRankOnly(hyperparameters: hyper) })
            }
            let buffer = FloatBuffer(count: network.layout.parameterCount)
            let alone = try await timed(repetitions, cluster) { try cluster.allreduceSum(buffer.pointer, count: buffer.count) }
            say(String(format: "%5d  %19.2f  %21.2f  %22.2f  %23.2fx", batch, medians[0] * 1e3, medians[1] * 1e3, alone * 1e3, medians[0] / medians[1]))
        }

        say("end to end, global batch (synthetic data, \(steps) steps):")
        say("batch  1 process samples/s  \(cluster.size) ranks ordered  \(cluster.size) ranks MPI_Allreduce  ordered / 1 process")
        for batch in [128, 256] {
            var configuration = reference
            configuration.batchSize = batch
            var rates: [Double] = []
            for fast in [false, true] {
                rates.append(try await MachineLimits.trainingThroughput(
                    pool: pool, configuration: configuration, steps: steps, cluster: cluster, fastAllreduce: fast).samplesPerSecond)
            }
            let single = baseline[batch] ?? .nan
            say(String(format: "%5d  %19.0f  %15.0f  %21.0f  %20.0f%%", batch, single, rates[0], rates[1], 100 * rates[0] / single))
        }
    }

    /// Median seconds of `body` over `repetitions`, each started together on every rank.
    static func timed(_ repetitions: Int, _ cluster: Cluster, _ body: () async throws -> Void) async throws -> Double {
        var samples: [Double] = []
        for _ in 0..<repetitions {
            try cluster.barrier("aligning a repetition")
            let start = monotonicSeconds()
            try await body()
            samples.append(monotonicSeconds() - start)
        }
        return ScaleRun.median(samples)
    }
}
