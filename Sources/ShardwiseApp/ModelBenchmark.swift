import Foundation
import Shardwise

/// `shardwise bench --model FILE`: a described network's training step on random data (random
/// token windows for a language model), and each convolution's and attention layer's forward
/// and backward pass on one pinned worker, with the machine's
/// single-thread GEMM rate measured in the same run to judge them by.
public enum ModelBenchmark {
    /// One convolution or attention layer, timed alone.
    public struct LayerTiming: Codable, Sendable {
        public var layer: Int
        public var description: String
        /// Milliseconds of one forward plus backward pass over the batch, on one thread.
        public var milliseconds: Double
        /// Its matrix-product FLOPs (2 per multiply-add: forward, weight gradient and, past the
        /// first layer, input gradient) over the time.
        public var gflops: Double
        /// ``gflops`` over the machine's single-thread GEMM rate.
        public var gemmFraction: Double
    }

    public struct Report: Codable, Sendable {
        public var model: String
        public var batchSize: Int
        public var workers: Int
        /// Milliseconds of one training step (forward, backward, reduction, update) of the whole batch.
        public var stepMilliseconds: Double
        public var samplesPerSecond: Double
        /// Single-thread `sgemm` GFLOP/s at the reference network's shapes, in this run.
        public var gemmGflops: Double
        public var convolutions: [LayerTiming]
        /// Causal self-attention layers (their products: the projections' and the causal half of
        /// q kᵀ and of the probabilities times v, 3x the forward's for the pass); nil without any.
        public var attention: [LayerTiming]?
        /// With BatchNorm over the global batch: the layers whose shards meet (twice a step
        /// each, in the forward and the backward pass).
        public var meetingLayers: Int?
        /// The same model and batch with every BatchNorm on per-shard statistics (no meetings),
        /// timed in alternation with ``stepMilliseconds``: the difference is what the meetings cost.
        public var shardStatisticsStepMilliseconds: Double?
    }

    /// The report for `configuration` with `kernels` (the single-thread GEMM rate is the BLAS's,
    /// the machine's limit, whichever kernels run the model).
    public static func run(configuration: RunConfiguration, workers: Int?, steps: Int, kernels: MatrixKernels) async throws -> Report {
        // Everything checked before a thread starts or a buffer is allocated.
        do { try configuration.validate() } catch { throw RunError(.configuration(error)) }
        let network = try Network(configuration.network)
        if let problem = MemoryEstimate.inferenceProblem(network: network, rows: configuration.batchSize) {
            throw RunError("--batch-size \(configuration.batchSize): \(problem)")
        }
        let budget = MemoryBudget.current()
        guard let samples = CheckedSize.product([configuration.batchSize, CheckedSize.sum([steps, 2]) ?? -1]),
              let bytes = CheckedSize.product([samples, configuration.network.inputSize, 4]), bytes <= budget.bytes / 2 else {
            throw RunError("--steps \(steps) and --batch-size \(configuration.batchSize): the random data of that many steps needs more than half the \(budget) available")
        }
        let pool = try WorkerPool.onThisMachine(workers: workers)
        defer { pool.shutdown() }
        let reference = try Network(RunConfiguration.reference().network)
        try MatrixKernels.select(.blas)
        let gemm = try await withTaskExecutorPreference(pool.workers[0]) {
            try KernelProbe.TrainingGEMMs(network: reference, rows: 128).gflops(seconds: 1)
        }
        try MatrixKernels.select(kernels)
        var convolutions: [LayerTiming] = []
        for (k, node) in network.nodes.enumerated() {
            guard let conv = node.layer as? Conv2D else { continue }
            let (input, output) = (network.shapes[node.inputs[0]], network.shapes[node.output])
            let seconds = await withTaskExecutorPreference(pool.workers[0]) {
                time(conv, inputShape: input, rows: configuration.batchSize, inputGradient: k > 0)
            }
            let products = k > 0 ? 3.0 : 2.0
            let flops = 2 * products * Double(conv.multiplyAdds(inputShape: input) * configuration.batchSize)
            convolutions.append(LayerTiming(
                layer: k, description: "conv \(input) -> \(output), kernel \(conv.kernel.height)x\(conv.kernel.width)",
                milliseconds: seconds * 1e3, gflops: flops / seconds * 1e-9, gemmFraction: flops / seconds * 1e-9 / gemm))
        }
        var attention: [LayerTiming] = []
        for (k, node) in network.nodes.enumerated() {
            guard let layer = node.layer as? CausalSelfAttention else { continue }
            let input = network.shapes[node.inputs[0]]
            let seconds = await withTaskExecutorPreference(pool.workers[0]) {
                time(layer, inputShape: input, rows: configuration.batchSize, inputGradient: true)
            }
            let flops = 2 * 3 * Double(layer.multiplyAdds(inputShape: input) * configuration.batchSize)
            attention.append(LayerTiming(
                layer: k, description: "attention \(Network.describe(input)), \(layer.heads) heads", milliseconds: seconds * 1e3,
                gflops: flops / seconds * 1e-9, gemmFraction: flops / seconds * 1e-9 / gemm))
        }
        let data: Dataset
        if let tokens = network.nodes.first?.layer as? TokenEmbedding {
            let context = network.shapes[0][0]
            do {
                data = try TokenStream.random(count: samples + context + 1, vocabularySize: tokens.vocabulary, seed: 7)
                    .windows(0..<samples + context + 1, context: context)
            } catch { throw RunError(error.description) }
        } else {
            data = MachineLimits.randomData(count: samples, features: configuration.network.inputSize, classes: configuration.network.outputSize)
        }
        let trainer = try Trainer(network: configuration.network, data: data, configuration: configuration.training, workers: pool)
        var report = Report(
            model: configuration.network.layers ?? "perceptron", batchSize: configuration.batchSize, workers: pool.workers.count,
            stepMilliseconds: 0, samplesPerSecond: 0, gemmGflops: gemm, convolutions: convolutions, attention: attention.isEmpty ? nil : attention)
        guard !network.meetingNodes.isEmpty, let layers = configuration.network.layers else {
            let (rates, _) = try await MachineLimits.timedSteps(trainer, windows: 1, stepsPerWindow: steps)
            (report.stepMilliseconds, report.samplesPerSecond) = (1e3 * Double(configuration.batchSize) / rates[0], rates[0])
            return report
        }
        // The meetings' cost: the same model with per-shard statistics computes the same sums
        // but never waits for the other shards. Alternate the two (3 rounds), medians.
        var ghost = configuration.network
        ghost.layers = ModelDescription.withBatchNormStatistics(layers, .shard)
        let apart = try Trainer(network: ghost, data: data, configuration: configuration.training, workers: pool)
        var (global, shard): ([Double], [Double]) = ([], [])
        for _ in 0..<3 {
            global += try await MachineLimits.timedSteps(trainer, windows: 1, stepsPerWindow: max(steps / 3, 5)).0
            shard += try await MachineLimits.timedSteps(apart, windows: 1, stepsPerWindow: max(steps / 3, 5)).0
        }
        let (rate, shardRate) = (global.sorted()[1], shard.sorted()[1])
        (report.stepMilliseconds, report.samplesPerSecond) = (1e3 * Double(configuration.batchSize) / rate, rate)
        report.meetingLayers = network.meetingNodes.count
        report.shardStatisticsStepMilliseconds = 1e3 * Double(configuration.batchSize) / shardRate
        return report
    }

    /// Seconds of one forward and backward pass of `layer` over `rows` samples (best of 5, after a warm-up).
    static func time(_ layer: any Layer, inputShape: [Int], rows: Int, inputGradient: Bool) -> Double {
        let outputShape = (try? layer.outputShape(inputShape: inputShape)) ?? inputShape
        let inWidth = inputShape.reduce(1, *), outWidth = outputShape.reduce(1, *)
        let specs = layer.parameters(inputShape: inputShape)
        let offsets = specs.map { $0.shape.reduce(1, *) }.reduce(into: [0]) { $0.append($0.last! + $1) }
        let parameters = FloatBuffer(count: offsets.last!), gradients = FloatBuffer(count: offsets.last!)
        let x = FloatBuffer(count: rows * inWidth), y = FloatBuffer(count: rows * outWidth)
        let dy = FloatBuffer(count: rows * outWidth), dx = FloatBuffer(count: rows * inWidth)
        let scratch = FloatBuffer(count: max(1, layer.scratchCount(inputShape: inputShape, rows: rows)))
        for i in 0..<rows * inWidth { x[i] = Float(i % 13) * 0.1 - 0.6 }
        for i in 0..<parameters.count { parameters[i] = Float(i % 7) * 0.01 - 0.03 }
        return offsets.withUnsafeBufferPointer { offsets in
            let values = ParameterValues(base: parameters.pointer, offsets: offsets)
            func pass() {
                layer.forward(ForwardPass(
                    rows: rows, inputWidth: inWidth, outputWidth: outWidth, inputShape: inputShape, outputShape: outputShape,
                    input: x.pointer, output: y.pointer, parameters: values, scratch: scratch.pointer, random: nil))
                for i in 0..<rows * outWidth { dy[i] = 0.001 }
                layer.backward(BackwardPass(
                    rows: rows, inputWidth: inWidth, outputWidth: outWidth, inputShape: inputShape, outputShape: outputShape,
                    input: x.pointer, output: y.pointer, outputGradient: dy.pointer, inputGradient: inputGradient ? dx.pointer : nil,
                    parameters: values, parameterGradients: ParameterGradients(base: gradients.pointer, offsets: offsets), scratch: scratch.pointer))
            }
            pass()
            var best = Double.infinity
            for _ in 0..<5 {
                let start = monotonicSeconds()
                pass()
                best = min(best, monotonicSeconds() - start)
            }
            return best
        }
    }
}
