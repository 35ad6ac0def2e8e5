import Shardwise

#if canImport(Glibc)
import Glibc
#endif

/// Measurements of this machine's limits and of Shardwise against them, in one run:
/// the single-thread GEMM rate, the combined rate of one GEMM per worker at once
/// (the scaling ceiling), copy bandwidth, the reduction's bandwidth, training-step
/// throughput, and the cost of dispatching a task to a pinned worker.
public enum MachineLimits {
    /// Combined GFLOP/s of the reference network's batch-`rows` products, one
    /// independent copy per worker of `pool`, all running at once for about `seconds`.
    public static func concurrentGEMM(pool: WorkerPool, network: Network, rows: Int, seconds: Double) async throws -> Double {
        if MatrixKernels.current == .blas { _ = try BLAS.load() }
        return await withTaskGroup(of: Double.self) { group in
            for worker in pool.workers {
                group.addTask(executorPreference: worker) {
                    (try? KernelProbe.TrainingGEMMs(network: network, rows: rows).gflops(seconds: seconds)) ?? 0
                }
            }
            return await group.reduce(0, +)
        }
    }

    /// GB/s (bytes read + bytes written) of `memcpy` over a `megabytes` buffer split among
    /// the pool's workers, all copying at once: the plain copy the reduction is judged against.
    public static func copyBandwidth(pool: WorkerPool, megabytes: Int = 64, repetitions: Int = 20) async -> Double {
        let bytes = megabytes << 20
        let source = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64)
        let destination = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64)
        defer {
            source.deallocate()
            destination.deallocate()
        }
        memset(source, 1, bytes)
        memset(destination, 0, bytes)
        let n = pool.workers.count
        let slice = bytes / n
        // Addresses as integers: the children write disjoint slices.
        let sourceAddress = UInt(bitPattern: source), destinationAddress = UInt(bitPattern: destination)
        func pass() async {
            await withTaskGroup(of: Void.self) { group in
                for worker in pool.workers {
                    let offset = worker.index * slice
                    let length = worker.index == n - 1 ? bytes - offset : slice
                    group.addTask(executorPreference: worker) {
                        memcpy(UnsafeMutableRawPointer(bitPattern: destinationAddress)! + offset,
                               UnsafeRawPointer(bitPattern: sourceAddress)! + offset, length)
                    }
                }
            }
        }
        await pass()
        let start = monotonicSeconds()
        for _ in 0..<repetitions { await pass() }
        return 2 * Double(bytes) * Double(repetitions) / (monotonicSeconds() - start) * 1e-9
    }

    /// Samples/s of training steps of `configuration` on random MNIST-shaped data, after a warm-up.
    /// Under MPI (`cluster`), every rank takes part; the rate is the global batch's.
    public static func trainingThroughput(
        pool: WorkerPool, configuration: RunConfiguration, steps: Int, cluster: Cluster? = nil, fastAllreduce: Bool = false
    ) async throws -> (samplesPerSecond: Double, split: StepSplit) {
        let data = randomData(count: configuration.batchSize * max(steps + 2, 4), features: configuration.network.inputSize, classes: configuration.network.outputSize)
        let trainer = try Trainer(
            network: configuration.network, data: data, configuration: configuration.training, workers: pool,
            cluster: cluster, fastAllreduce: fastAllreduce)
        let (rates, split) = try await timedSteps(trainer, windows: 1, stepsPerWindow: steps)
        return (rates[0], split)
    }

    /// Samples/s of each of `windows` timed windows of steps, after 2 warm-up steps, and the
    /// mean step split over them; on the trainer's first worker, as training runs.
    /// Under MPI the ranks start the timed windows together.
    public static func timedSteps(_ trainer: Trainer, windows: Int, stepsPerWindow: Int) async throws -> ([Double], StepSplit) {
        try await withTaskExecutorPreference(trainer.pool.workers[0]) {
            let steps = trainer.stepsPerEpoch
            var step = 0
            func next() async throws {
                _ = try await trainer.step(epoch: 0, stepInEpoch: step % steps)
                step += 1
            }
            for _ in 0..<2 { try await next() }
            try trainer.cluster?.barrier("starting the measurement")
            trainer.timing.reset()
            var rates: [Double] = []
            for _ in 0..<windows {
                let start = monotonicSeconds()
                for _ in 0..<stepsPerWindow { try await next() }
                rates.append(Double(trainer.configuration.batchSize * stepsPerWindow) / (monotonicSeconds() - start))
            }
            return (rates, trainer.timing.meanSplit(steps: windows * stepsPerWindow))
        }
    }

    /// GB/s of the reduction phase alone (shard sum, SGD update, max-norm) by the pool's workers.
    public static func reductionBandwidth(pool: WorkerPool, configuration: RunConfiguration, repetitions: Int = 20) async throws -> Double {
        let data = randomData(count: configuration.batchSize, features: configuration.network.inputSize, classes: configuration.network.outputSize)
        let trainer = try Trainer(network: configuration.network, data: data, configuration: configuration.training, workers: pool)
        let hyper = UpdateHyperparameters(learningRate: 1e-6, momentum: 0.9)
        await trainer.reduceOnly(hyperparameters: hyper)
        let start = monotonicSeconds()
        for _ in 0..<repetitions { await trainer.reduceOnly(hyperparameters: hyper) }
        return Double(trainer.reductionBytes) * Double(repetitions) / (monotonicSeconds() - start) * 1e-9
    }

    /// Median microseconds for a task running on worker 0 (where the training loop runs)
    /// to run an empty child on the last worker and get its result back: a step's dispatch cost.
    public static func dispatchMicroseconds(pool: WorkerPool, repetitions: Int = 2_000) async -> Double {
        await withTaskExecutorPreference(pool.workers[0]) {
            var samples: [Double] = []
            samples.reserveCapacity(repetitions)
            let worker = pool.workers[pool.workers.count - 1]
            for _ in 0..<repetitions {
                let start = monotonicSeconds()
                await withTaskGroup(of: Int.self) { group in
                    group.addTask(executorPreference: worker) { 1 }
                    _ = await group.next()
                }
                samples.append((monotonicSeconds() - start) * 1e6)
            }
            samples.sort()
            return samples[samples.count / 2]
        }
    }

    /// Random images and labels of the given shape: a step's speed does not depend on the values.
    public static func randomData(count: Int, features: Int, classes: Int) -> Dataset {
        let stream = RandomAddress(seed: 7, purpose: .synthetic)
        var images = [Float](repeating: 0, count: count * features)
        for i in 0..<images.count { images[i] = stream.uniform(i) }
        let labels = (0..<count).map { Int32(stream.integer(count * features + $0, below: classes)) }
        return Dataset(features: features, classes: classes, images: images, labels: labels)
    }
}
