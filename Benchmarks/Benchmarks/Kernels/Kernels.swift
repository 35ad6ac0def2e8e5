import Benchmark
import Shardwise
import ShardwiseApp

// Shardwise's benchmarks. Every figure is judged against the machine's own limit,
// measured inside the same benchmark (the same process, the same run):
// the single-thread GEMM rate at the reference network's shapes, the combined rate
// of one GEMM per core at once, and memcpy's bandwidth.
//
// ordo-one/benchmark metrics are integers: rates are in MFLOP/s, samples/s, MB/s;
// ratios in percent. `shardwise bench` prints the same measurements as one table.

func metric(_ name: String) -> BenchmarkMetric {
    .custom(name, polarity: .prefersLarger, useScalingFactor: false)
}

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock], warmupIterations: 1, maxDuration: .seconds(20), maxIterations: 3)
    let reference = RunConfiguration.reference()
    let network = try! Network(reference.network)

    Benchmark("single-thread sgemm at the training shapes (batch 128)", configuration: .init(metrics: [metric("MFLOP/s")])) { benchmark in
        let rate = try KernelProbe.TrainingGEMMs(network: network, rows: 128).gflops(seconds: 1)
        benchmark.measurement(metric("MFLOP/s"), Int(rate * 1e3))
    }

    // Issue 2's target: one worker's training step at batch 128 reaches >= 75% of the
    // single-thread GEMM rate (6 x parameters FLOPs per sample).
    Benchmark(
        "training step, batch 128, 1 worker",
        configuration: .init(metrics: [.wallClock, metric("samples/s"), metric("step FLOP rate / GEMM rate (%)"), metric("GEMM MFLOP/s")])
    ) { benchmark in
        let pool = try WorkerPool.onThisMachine(workers: 1)
        defer { pool.shutdown() }
        let gemm = try await MachineLimits.concurrentGEMM(pool: pool, network: network, rows: 128, seconds: 1)
        let (rate, _) = try await MachineLimits.trainingThroughput(pool: pool, configuration: reference, steps: 60)
        let gflops = rate * KernelProbe.trainingFLOPs(network: network, samples: 1) * 1e-9
        benchmark.measurement(metric("samples/s"), Int(rate))
        benchmark.measurement(metric("GEMM MFLOP/s"), Int(gemm * 1e3))
        benchmark.measurement(metric("step FLOP rate / GEMM rate (%)"), Int(100 * gflops / gemm))
    }

    // Issue 4's targets: (b) 2-worker over 1-worker samples/s at global batch 256 is >= 95%
    // of (a) the combined GEMM rate of one single-thread GEMM per core over one alone.
    for batch in [128, 256] {
        Benchmark(
            "scaling, batch \(batch): all workers vs 1",
            configuration: .init(metrics: [
                metric("samples/s, 1 worker"), metric("samples/s, all workers"), metric("speedup (%)"),
                metric("GEMM ceiling (%)"), metric("speedup / ceiling (%)"),
                metric("compute us/step"), metric("waiting us/step"), metric("reduction us/step"),
            ])
        ) { benchmark in
            let many = try WorkerPool.onThisMachine()
            defer { many.shutdown() }
            let one = try WorkerPool.onThisMachine(workers: 1)
            defer { one.shutdown() }
            let gemmOne = try await MachineLimits.concurrentGEMM(pool: one, network: network, rows: 128, seconds: 1)
            let gemmAll = try await MachineLimits.concurrentGEMM(pool: many, network: network, rows: 128, seconds: 1)
            var configuration = reference
            configuration.batchSize = batch
            let (single, _) = try await MachineLimits.trainingThroughput(pool: one, configuration: configuration, steps: 40)
            let (multi, split) = try await MachineLimits.trainingThroughput(pool: many, configuration: configuration, steps: 40)
            let ceiling = gemmAll / gemmOne, speedup = multi / single
            benchmark.measurement(metric("samples/s, 1 worker"), Int(single))
            benchmark.measurement(metric("samples/s, all workers"), Int(multi))
            benchmark.measurement(metric("speedup (%)"), Int(100 * speedup))
            benchmark.measurement(metric("GEMM ceiling (%)"), Int(100 * ceiling))
            benchmark.measurement(metric("speedup / ceiling (%)"), Int(100 * speedup / ceiling))
            benchmark.measurement(metric("compute us/step"), Int(split.compute * 1e6))
            benchmark.measurement(metric("waiting us/step"), Int(split.waiting * 1e6))
            benchmark.measurement(metric("reduction us/step"), Int(split.reduction * 1e6))
        }
    }

    // Issue 4's target: the reduction moves gradients at >= 60% of a plain copy's bandwidth.
    Benchmark(
        "gradient reduction vs memcpy, all workers, batch 256",
        configuration: .init(metrics: [metric("reduction MB/s"), metric("memcpy MB/s"), metric("reduction / memcpy (%)")])
    ) { benchmark in
        let pool = try WorkerPool.onThisMachine()
        defer { pool.shutdown() }
        var configuration = reference
        configuration.batchSize = 256
        let copy = await MachineLimits.copyBandwidth(pool: pool)
        let reduction = try await MachineLimits.reductionBandwidth(pool: pool, configuration: configuration)
        benchmark.measurement(metric("reduction MB/s"), Int(reduction * 1e3))
        benchmark.measurement(metric("memcpy MB/s"), Int(copy * 1e3))
        benchmark.measurement(metric("reduction / memcpy (%)"), Int(100 * reduction / copy))
    }

    // Issue 3: what a step pays to hand a task to a pinned worker and get it back.
    // From worker 0, where the training loop runs, to the last worker and back, as a step
    // dispatches. One pool for all iterations (a lazily created global).
    Benchmark("dispatch from worker 0 to a pinned worker and back", configuration: .init(metrics: [.wallClock], warmupIterations: 100, maxDuration: .seconds(3), maxIterations: 20_000)) { benchmark in
        let worker = dispatchPool.workers[dispatchPool.workers.count - 1]
        await withTaskExecutorPreference(dispatchPool.workers[0]) {
            benchmark.startMeasurement()
            await withTaskGroup(of: Int.self) { group in
                group.addTask(executorPreference: worker) { 1 }
                _ = await group.next()
            }
            benchmark.stopMeasurement()
        }
    }
}

/// Lives for the benchmark process; its threads end with it.
let dispatchPool = try! WorkerPool.onThisMachine()
