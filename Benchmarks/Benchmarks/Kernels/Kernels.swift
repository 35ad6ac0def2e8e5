import Benchmark
import ShardwiseData
import ShardwiseKernels
import ShardwiseLayers
import ShardwiseRuntime

// Shardwise's kernel benchmarks, judged against the machine's own limit measured
// in the same run: the single-thread GEMM rate at the reference network's shapes.
//
// Custom metrics are integers: rates are in MFLOP/s and samples/s, ratios in
// tenths of a percent ("step / GEMM (0.1%)" = 812 means 81.2%).

nonisolated(unsafe) let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .mallocCountTotal],
        warmupIterations: 3, maxDuration: .seconds(4), maxIterations: 1_000)

    let reference = Network(TrainingConfiguration.reference().network)
    _ = try! BLAS.load()

    // The limit: one thread running exactly the products of a batch-128 step.
    let gemms = KernelProbe.TrainingGEMMs(network: reference, rows: 128)
    let gemmLimit = gemms.gflops(seconds: 1.0)
    print(String(format: "single-thread sgemm at the training shapes (batch 128): %.1f GFLOP/s", gemmLimit))

    Benchmark(
        "sgemm, reference network's products at batch 128, one thread",
        configuration: .init(metrics: [.wallClock, .custom("MFLOP/s", polarity: .prefersLarger, useScalingFactor: false)])
    ) { benchmark in
        let start = monotonicSeconds()
        for _ in benchmark.scaledIterations { gemms.run() }
        let seconds = monotonicSeconds() - start
        benchmark.measurement(.custom("MFLOP/s", polarity: .prefersLarger, useScalingFactor: false), Int(gemms.flops * Double(benchmark.scaledIterations.count) / seconds * 1e-6))
    }

    for shardSize in [32, 64, 128] {
        var configuration = TrainingConfiguration.reference()
        configuration.shardSize = shardSize
        let data = randomDataset(count: 128 * 20)
        let trainer = try! Trainer(configuration: configuration, train: data)
        let flopsPerStep = KernelProbe.trainingFLOPs(network: trainer.network, samples: configuration.batchSize)
        var step = 0
        Benchmark(
            "training step, reference network, batch 128, shard \(shardSize), one worker",
            configuration: .init(metrics: [
                .wallClock, .mallocCountTotal,
                .custom("samples/s", polarity: .prefersLarger, useScalingFactor: false),
                .custom("step / GEMM (0.1%)", polarity: .prefersLarger, useScalingFactor: false),
            ])
        ) { benchmark in
            let start = monotonicSeconds()
            for _ in benchmark.scaledIterations {
                blackHole(trainer.step(epoch: 0, stepInEpoch: step % trainer.stepsPerEpoch))
                step += 1
            }
            let seconds = (monotonicSeconds() - start) / Double(benchmark.scaledIterations.count)
            benchmark.measurement(.custom("samples/s", polarity: .prefersLarger, useScalingFactor: false), Int(Double(configuration.batchSize) / seconds))
            benchmark.measurement(.custom("step / GEMM (0.1%)", polarity: .prefersLarger, useScalingFactor: false), Int(1000 * flopsPerStep / seconds * 1e-9 / gemmLimit))
        }
    }

    let maskRows = 128, maskColumns = 1024
    let mask = FloatBuffer(count: maskRows * maskColumns)
    Benchmark(
        "dropout mask (Philox), 128 x 1024",
        configuration: .init(metrics: [.wallClock, .custom("Mdraws/s", polarity: .prefersLarger, useScalingFactor: false)])
    ) { benchmark in
        let start = monotonicSeconds()
        for i in benchmark.scaledIterations {
            DropoutKernel.fillMask(
                rows: maskRows, columns: maskColumns, address: RandomAddress(seed: 1, purpose: .dropout, step: UInt32(i), layer: 1),
                firstPosition: 0, dropProbability: 0.5, mask: mask.pointer)
        }
        let seconds = monotonicSeconds() - start
        benchmark.measurement(.custom("Mdraws/s", polarity: .prefersLarger, useScalingFactor: false), Int(Double(maskRows * maskColumns * benchmark.scaledIterations.count) / seconds * 1e-6))
    }
}

/// Random images and labels of MNIST's shape: the step's speed does not depend on the values.
func randomDataset(count: Int) -> Dataset {
    let stream = RandomAddress(seed: 7, purpose: .synthetic)
    let images = (0..<count * 784).map { stream.uniform($0) }
    let labels = (0..<count).map { Int32(stream.integer($0, below: 10)) }
    return Dataset(features: 784, classes: 10, images: images, labels: labels)
}
