import Foundation
import Shardwise

/// The kernel report of `shardwise bench`: the machine's limits and Shardwise
/// measured against them, in one run, as text lines.
public enum KernelReport {
    public struct StepRow: Sendable {
        public var batch: Int
        public var workers: Int
        public var samplesPerSecond: Double
        public var gflops: Double
        public var split: StepSplit
    }

    public static func run(workers: Int?, steps: Int, seconds: Double, line: (String) -> Void) async throws {
        let many = try WorkerPool.onThisMachine(workers: workers)
        defer { many.shutdown() }
        let one = try WorkerPool.onThisMachine(workers: 1)
        defer { one.shutdown() }
        let w = many.workers.count
        let reference = RunConfiguration.reference()
        let network = try Network(reference.network)
        line("shardwise \(ShardwiseVersion.current) kernel report: \(w) workers, BLAS \(BLAS.ifPresent.map { "\($0.kernels) (\($0.library))" } ?? "none")")
        if let report = many.pinningReport { line("note: \(report)") }

        let gemmOne = try await MachineLimits.concurrentGEMM(pool: one, network: network, rows: 128, seconds: seconds)
        let gemmAll = try await MachineLimits.concurrentGEMM(pool: many, network: network, rows: 128, seconds: seconds)
        let ceiling = gemmAll / gemmOne
        line(String(format: "sgemm, the reference network's products at batch 128: %.1f GFLOP/s on one thread; %.1f GFLOP/s with %d at once = %.2fx (the scaling ceiling)", gemmOne, gemmAll, w, ceiling))

        let copyOne = await MachineLimits.copyBandwidth(pool: one)
        let copyAll = await MachineLimits.copyBandwidth(pool: many)
        line(String(format: "memcpy, 64 MiB: %.1f GB/s on one thread, %.1f GB/s with %d (read + write)", copyOne, copyAll, w))
        var large = reference
        large.batchSize = 256
        let reduction = try await MachineLimits.reductionBandwidth(pool: many, configuration: large)
        line(String(format: "gradient reduction (4 shards of 64, update and max-norm fused): %.1f GB/s with %d workers = %.0f%% of memcpy", reduction, w, 100 * reduction / copyAll))

        let draws = philoxDraws(seconds: seconds)
        line(String(format: "Philox4x32-10 dropout masks: %.0f M draws/s (%.1f Gbit/s of random bits) on one thread", draws / 1e6, draws * 32 / 1e9))
        let dispatch = await MachineLimits.dispatchMicroseconds(pool: many)
        line(String(format: "dispatch of a task from worker 0 to a pinned worker and back: %.1f µs (median)", dispatch))

        line("training step, reference network (784-1024-1024-1024-10, dropout 0.2/0.5), shards of 64:")
        line("batch  workers  samples/s   GFLOP/s  of 1-thread GEMM  compute ms  waiting ms  reduction ms")
        var rows: [StepRow] = []
        for batch in [128, 256] {
            for pool in [one, many] where pool === one || w > 1 {
                var configuration = reference
                configuration.batchSize = batch
                let (rate, split) = try await MachineLimits.trainingThroughput(pool: pool, configuration: configuration, steps: steps)
                let gflops = rate * KernelProbe.trainingFLOPs(network: network, samples: 1) * 1e-9
                rows.append(StepRow(batch: batch, workers: pool.workers.count, samplesPerSecond: rate, gflops: gflops, split: split))
                line(String(format: "%5d  %7d  %9.0f  %8.1f  %15.0f%%  %10.2f  %10.2f  %12.2f", batch, pool.workers.count, rate, gflops, 100 * gflops / gemmOne, split.compute * 1e3, split.waiting * 1e3, split.reduction * 1e3))
            }
        }
        if w > 1 {
            for batch in [128, 256] {
                let single = rows.first { $0.batch == batch && $0.workers == 1 }!.samplesPerSecond
                let multi = rows.first { $0.batch == batch && $0.workers == w }!.samplesPerSecond
                line(String(format: "batch %d: %d workers / 1 worker = %.2fx, %.0f%% of the %.2fx ceiling", batch, w, multi / single, 100 * multi / single / ceiling, ceiling))
            }
        }
    }

    /// Dropout-mask draws per second on the calling thread (128 x 1024 masks, p = 0.5).
    static func philoxDraws(seconds: Double) -> Double {
        let rows = 128, columns = 1024
        let mask = FloatBuffer(count: rows * columns)
        var step: UInt32 = 0
        let (count, elapsed) = measureRepeatedly(seconds: seconds) {
            DropoutKernel.fillMask(
                rows: rows, columns: columns, address: RandomAddress(seed: 1, purpose: .dropout, step: step, layer: 1),
                firstPosition: 0, dropProbability: 0.5, mask: mask.pointer)
            step += 1
        }
        return Double(rows * columns * count) / elapsed
    }
}
