import Foundation
import ShardwiseKernels
import XCTest

@testable import ShardwiseLayers

/// Every new layer, loss and optimizer against PyTorch on the same inputs and weights:
/// Shardwise computes each case here and writes it out; Tests/python/compare_pytorch.py builds
/// the equivalent torch module, loss or optimizer and requires agreement to 1e-5 (normwise
/// relative) for outputs, input gradients, parameter gradients, weights and optimizer state.
/// Skipped, saying why, when `torch` is not importable and cannot be installed.
final class PyTorchComparisonTests: XCTestCase {
    var folder = ""
    var cases: [[String: Any]] = []
    var files = 0

    override func setUpWithError() throws {
        folder = NSTemporaryDirectory() + "shardwise-torch-\(getpid())-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
    }

    override func tearDown() { try? FileManager.default.removeItem(atPath: folder) }

    func write(_ values: [Float]) throws -> String {
        files += 1
        let name = "a\(files).f32"
        try values.withUnsafeBytes { Data($0) }.write(to: URL(fileURLWithPath: "\(folder)/\(name)"))
        return name
    }

    func layer(_ name: String, _ kind: String, _ layer: any Layer, _ shape: [Int], rows: Int = 3, args: [String: Any] = [:], input: [Float]? = nil) throws {
        var run = try LayerRun(layer, inputShape: shape, rows: rows, seed: UInt64(cases.count + 1), input: input)
        run.run()
        cases.append([
            "type": "layer", "name": name, "kind": kind, "args": args, "rows": rows, "input_shape": shape, "output_shape": run.outputShape,
            "input": try write(run.input), "output": try write(run.output), "projection": try write(run.projection),
            "input_gradient": try write(run.inputGradient),
            "parameters": try zip(run.parameters, run.specs).map { [try write($0), $1.shape] as [Any] },
            "parameter_gradients": try zip(run.parameterGradients, run.specs).map { [try write($0), $1.shape] as [Any] },
        ])
    }

    /// A whole model from the layer language, forward and backward with cross-entropy over
    /// `rows` samples: its logits and every parameter's gradient, each tensor under its name
    /// (PyTorch builds the same tree of `torch.nn` modules and loads them by name).
    /// With `shardSize`, a training step (BatchNorm with the whole batch's statistics) in shards
    /// as the engine runs it, and the buffers after it.
    /// With `vocabulary`, a language model: the inputs are token ids below it and each position has a label.
    func model(_ name: String, _ text: String, _ shape: [Int], rows: Int = 6, shardSize: Int? = nil, vocabulary: Int? = nil) throws {
        let network = try Network(Sequential(try ModelDescription.layers(text, inputShape: shape)), inputShape: shape)
        let parameters = FloatBuffer(count: network.layout.count)
        network.initialize(parameters: parameters, seed: UInt64(cases.count + 1))
        let stream = RandomAddress(seed: UInt64(cases.count + 1), purpose: .synthetic, position: 5)
        for t in network.layout.tensors where !t.name.hasSuffix("num_batches_tracked") {  // perturbed, so that norms' weights, biases and running statistics matter
            for e in 0..<t.count { parameters[t.offset + e] += 0.3 * (stream.uniform(t.offset + e) - 0.5) }
        }
        let ws = Workspace(network: network, capacity: rows)
        let width = network.widths[0], positions = network.labelPositions, classes = network.widths.last! / positions
        let input = (0..<rows * width).map { i in vocabulary.map { Float(stream.integer(100_000 + i, below: $0)) } ?? 4 * stream.uniform(100_000 + i) - 2 }
        let labels = (0..<rows * positions).map { Int32(stream.integer(200_000 + $0, below: classes)) }
        func tensors(_ buffer: UnsafePointer<Float>, buffers: Bool = false) throws -> [[Any]] {
            try network.layout.tensors.filter { buffers ? $0.isBuffer : true }.map { t in
                [t.name, try write(Array(UnsafeBufferPointer(start: buffer + t.offset, count: t.count))), t.shape]
            }
        }
        let initial = try tensors(parameters.pointer)
        let outputs: [Float], gradient = FloatBuffer(count: network.layout.count)
        if let shardSize {
            let step = ShardedStep(network, parameters: parameters, input: input, labels: labels, shardSize: shardSize)
            outputs = step.outputs
            for (i, g) in step.gradient.enumerated() { gradient[i] = g }
        } else {
            for i in 0..<rows * width { ws.input[i] = input[i] }
            for r in 0..<rows * positions { ws.labels[r] = labels[r] }
            network.forward(parameters: parameters.pointer, workspace: ws, rows: rows, random: nil)
            network.backward(parameters: parameters.pointer, workspace: ws, rows: rows, lossDivisor: rows, gradient: gradient.pointer)
            outputs = Array(UnsafeBufferPointer(start: ws.output, count: rows * positions * classes))
        }
        cases.append([
            "type": "model", "name": name, "layers": text, "rows": rows, "input_shape": shape, "classes": classes, "positions": positions,
            "labels": labels.map(Int.init),
            "input": try write(input), "output": try write(outputs), "train": shardSize != nil,
            "parameters": initial, "gradients": try tensors(gradient.pointer).filter { network.layout.tensor(named: $0[0] as! String)?.isBuffer == false },
            "buffers_after": try tensors(parameters.pointer, buffers: true),
        ])
    }

    func window(_ k: Size2D, _ s: Size2D, _ p: Size2D, _ d: Size2D = 1) -> [String: Any] {
        ["kernel": [k.height, k.width], "stride": [s.height, s.width], "padding": [p.height, p.width], "dilation": [d.height, d.width]]
    }

    func conv(_ name: String, _ c: Int, _ o: Int, _ k: Size2D, _ s: Size2D, _ p: Size2D, _ d: Size2D, _ shape: [Int], rows: Int = 3) throws {
        try layer(name, "conv", Conv2D(c, o, kernel: k, stride: s, padding: p, dilation: d), shape, rows: rows,
                  args: window(k, s, p, d).merging(["in": c, "out": o]) { a, _ in a })
    }

    func loss(_ name: String, _ kind: String, _ loss: any Loss, smoothing: Double = 0) throws {
        let rows = 6, width = 5
        let stream = RandomAddress(seed: 17, purpose: .synthetic, position: UInt32(cases.count))
        let outputs = (0..<rows * width).map { 6 * stream.uniform($0) - 3 }
        let targets = (0..<rows * width).map { stream.uniform(1000 + $0) }
        let labels = (0..<rows).map { Int32(($0 * 3) % width) }
        var gradient = [Float](repeating: .nan, count: rows * width)
        let sum = outputs.withUnsafeBufferPointer { o in
            targets.withUnsafeBufferPointer { t in
                labels.withUnsafeBufferPointer { l in
                    gradient.withUnsafeMutableBufferPointer { g in
                        loss.evaluate(
                            outputs: o.baseAddress!, targets: LossTargets(labels: l.baseAddress!, values: t.baseAddress!, areLabels: kind == "cross_entropy"),
                            rows: rows, width: width, gradientScale: 1 / Float(rows), gradient: g.baseAddress!)
                    }
                }
            }
        }
        cases.append([
            "type": "loss", "name": name, "kind": kind, "rows": rows, "width": width, "label_smoothing": smoothing,
            "outputs": try write(outputs), "targets": try write(targets), "labels": labels.map(Int.init),
            "loss": sum / Double(rows), "gradient": try write(gradient),
        ])
    }

    /// Five steps of the chunked optimizer (chunks of 16 floats over two tensors, two shards
    /// summed) on a 37-weight layer, with optional clipping, as the trainer runs them.
    func optimizer(_ name: String, _ configuration: OptimizerConfiguration) throws {
        let network = try Network(Sequential([Linear(37, 1)]), inputWidth: 37)
        let layout = network.layout
        let optimizer = ChunkedOptimizer(configuration: configuration, layout: layout, chunkElements: 16)
        let count = layout.count, steps = 5
        let stream = RandomAddress(seed: 23, purpose: .synthetic, position: UInt32(cases.count))
        var weights = [Float](repeating: 0, count: count)
        for t in layout.tensors { for e in 0..<t.count { weights[t.offset + e] = 2 * stream.uniform(t.offset + e) - 1 } }
        let initial = weights
        var applied: [Float] = []
        let shards = (0..<2).map { _ in UnsafeMutablePointer<Float>.allocate(capacity: count) }
        defer { shards.forEach { $0.deallocate() } }
        let squares = UnsafeMutablePointer<Double>.allocate(capacity: optimizer.chunks.count)
        defer { squares.deallocate() }
        for step in 0..<steps {
            for s in 0..<2 {
                shards[s].update(repeating: 0, count: count)
                for t in layout.tensors {
                    for e in 0..<t.count { shards[s][t.offset + e] = 3 * stream.uniform(10_000 * (step * 2 + s + 1) + t.offset + e) - 1.5 }
                }
            }
            // What torch is given: the summed gradient, in the same order.
            applied += (0..<count).map { shards[0][$0] + shards[1][$0] }
            var hyper = configuration.hyperparameters(progress: 0, step: optimizer.stepsTaken)
            var shardCount = 2
            try shards.withUnsafeBufferPointer { pointers in
                if let c = configuration.clipNorm {
                    for k in optimizer.chunks.indices {
                        squares[k] = optimizer.sumForClipping(chunk: k, shardGradients: pointers.baseAddress!, shardCount: 2)
                    }
                    hyper.gradientScale = ChunkedOptimizer.clippingFactor(chunkSquares: squares, count: optimizer.chunks.count, maxNorm: c)
                    XCTAssertLessThan(hyper.gradientScale, 1, "the case should clip")
                    shardCount = 1
                }
                try weights.withUnsafeMutableBufferPointer { w in
                    for k in optimizer.chunks.indices {
                        let finite = optimizer.update(
                            chunk: k, parameters: w.baseAddress!, shardGradients: pointers.baseAddress!, shardCount: shardCount, hyperparameters: hyper)
                        XCTAssertTrue(finite)
                    }
                    _ = try XCTUnwrap(w.baseAddress)
                }
            }
            optimizer.stepsTaken += 1
        }
        var state: [String: String] = [:]
        for (k, key) in configuration.stateNames.enumerated() {
            state[key] = try write(Array(UnsafeBufferPointer(start: optimizer.state.pointer + k * optimizer.stateStride, count: count)))
        }
        let h = configuration
        cases.append([
            "type": "optimizer", "name": name, "algorithm": h.algorithm.rawValue, "count": count, "steps": steps,
            "initial": try write(initial), "gradients": try write(applied), "final": try write(weights), "state": state,
            "clip_norm": h.clipNorm as Any? ?? NSNull(),
            "hyper": ["lr": h.learningRate, "momentum": h.momentum.end, "nesterov": h.nesterov, "weight_decay": h.weightDecay,
                      "beta1": h.beta1, "beta2": h.beta2, "eps": h.epsilon] as [String: Any],
        ])
    }

    func settings(_ algorithm: OptimizerAlgorithm, lr: Double, momentum: Double = 0, nesterov: Bool = false, decay: Double = 0,
                  beta2: Double = 0.999, clip: Double? = nil) -> OptimizerConfiguration {
        var c = OptimizerConfiguration(learningRate: lr, momentum: MomentumRamp(start: momentum, end: momentum, epochs: 0), nesterov: nesterov, weightDecay: decay)
        c.algorithm = algorithm
        c.beta2 = beta2
        c.clipNorm = clip
        return c
    }

    func testLayersLossesAndOptimizersAgreeWithPyTorch() throws {
        _ = try BLAS.load()
        // The kernels training runs by default (their convolutions gather the lowered matrix).
        try MatrixKernels.select(.portable)
        defer { try? MatrixKernels.select(.blas) }
        try conv("conv 2->3 k3", 2, 3, 3, 1, 0, 1, [2, 6, 5])
        try conv("conv k(3,2) stride 2 pad 1", 2, 3, Size2D(3, 2), 2, 1, 1, [2, 7, 6])
        try conv("conv dilation 2 stride (1,2)", 1, 2, 2, Size2D(1, 2), Size2D(0, 1), 2, [1, 6, 7])
        try conv("conv 1->8 k5 pad 2 (MNIST-like)", 1, 8, 5, 1, 2, 1, [1, 12, 12], rows: 5)
        try conv("conv 4->6 k3, groups of samples", 4, 6, 3, 1, 1, 1, [4, 4, 4], rows: 40)
        try layer("maxpool 2", "maxpool", MaxPool2D(2), [3, 6, 4], args: window(2, 2, 0))
        try layer("maxpool 3 stride 2 pad 1", "maxpool", MaxPool2D(3, stride: 2, padding: 1), [2, 7, 6], args: window(3, 2, 1))
        try layer("avgpool 2", "avgpool", AvgPool2D(2), [3, 6, 4], args: window(2, 2, 0))
        try layer("avgpool 3 stride 2 pad 1", "avgpool", AvgPool2D(3, stride: 2, padding: 1), [2, 7, 6], args: window(3, 2, 1))
        try layer("flatten", "flatten", Flatten(), [2, 3, 4])
        let wide: [Float] = (0..<3 * 40).map { Float($0 % 40) * 0.3 - 6 + Float($0 / 40) * 0.1 }
        for (name, kind, l, args) in [
            ("tanh", "tanh", Tanh() as any Layer, [:] as [String: Any]), ("sigmoid", "sigmoid", Sigmoid(), [:]),
            ("gelu", "gelu", GELU(), ["approximate": "none"]), ("gelu tanh", "gelu", GELU(approximate: .tanh), ["approximate": "tanh"]),
            ("leaky_relu 0.1", "leaky_relu", LeakyReLU(0.1), ["slope": 0.1]),
        ] {
            try layer(name, kind, l, [17], args: args)
            try layer(name + " on [-6, 6]", kind, l, [40], args: args, input: wide)
        }
        try layer("layernorm", "layernorm", LayerNorm(), [3, 2, 4], args: ["shape": [3, 2, 4], "eps": 1e-5])
        try layer("layernorm last dim, eps 1e-3", "layernorm", LayerNorm(dimensions: 1, epsilon: 1e-3), [5, 6], args: ["shape": [6], "eps": 1e-3])
        try layer("rmsnorm", "rmsnorm", RMSNorm(), [9], args: ["shape": [9]])
        try layer("rmsnorm last 2 dims", "rmsnorm", RMSNorm(dimensions: 2), [2, 3, 4], args: ["shape": [3, 4]])
        try layer("groupnorm 2 of 6 channels", "groupnorm", GroupNorm(2), [6, 3, 3], rows: 4, args: ["groups": 2, "channels": 6, "eps": 1e-5])
        try layer("groupnorm instance (4 of 4)", "groupnorm", GroupNorm(4, epsilon: 1e-3), [4, 5], args: ["groups": 4, "channels": 4, "eps": 1e-3])
        try model(
            "residual CNN with norms",
            "conv(4, 3, pad: 1) residual(conv(4, 3, pad: 1) groupnorm(2) relu conv(4, 3, pad: 1) layernorm) relu "
                + "parallel(conv(2, 1) | maxpool(3, stride: 1, pad: 1) conv(3, 1)) rmsnorm "
                + "residual(conv(6, 3, stride: 2, pad: 1) gelu, shortcut: conv(6, 1, stride: 2)) flatten "
                + "residual(linear(16) tanh, shortcut: linear(16)) parallel(linear(5) | relu linear(5), combine: add)",
            [1, 6, 6])
        try model(
            "BatchNorm 1d/2d, batch of 32 in 4 shards",
            "conv(4, 3, pad: 1) batchnorm2d relu residual(conv(4, 3, pad: 1) batchnorm2d(momentum: 0.3, eps: 1e-3)) maxpool(2) flatten linear(12) batchnorm1d tanh linear(4)",
            [2, 6, 6], rows: 32, shardSize: 8)
        try model("BatchNorm, evaluation (running statistics)", "conv(3, 3) batchnorm2d relu flatten linear(4)", [1, 5, 5])
        var categorical: [Float] = []
        for r in 0..<6 { categorical += [Float(r * 3 % 7), Float(r) * 0.5 - 1, 2 - Float(r) * 0.3] }
        try layer("embedding(7, 3)", "embedding", Embedding(7, 3), [3], rows: 6, args: ["count": 7, "dim": 3], input: categorical)
        // A language model's layers: causal attention over block edges (32-query tiles), token and
        // position embeddings, a linear layer over each token.
        try layer("attention 2 heads, 37 tokens", "attention", CausalSelfAttention(width: 8, heads: 2), [37, 8], rows: 2, args: ["width": 8, "heads": 2])
        try layer("attention 4 heads, 70 tokens", "attention", CausalSelfAttention(width: 16, heads: 4), [70, 16], rows: 2, args: ["width": 16, "heads": 4])
        let ids: [Float] = (0..<27).map { Float(($0 * 7 + 3) % 11) }
        try layer("tokens(11, 6) over 9", "tokens", TokenEmbedding(vocabulary: 11, width: 6), [9], rows: 3, args: ["vocabulary": 11, "dim": 6, "context": 9], input: ids)
        try layer("linear over 5 tokens", "linear", Linear(6, 4), [5, 6], args: ["in": 6, "out": 4])
        // The output head tied to the token table: one tensor, its gradient the sum of both uses.
        try model(
            "GPT block, output head tied to the token embedding",
            "tokens(11, 8) residual(layernorm(dims: 1) attention(2)) residual(layernorm(dims: 1) linear(16) gelu linear(8)) layernorm(dims: 1) linear(11, tied: tokens)",
            [9], rows: 3, vocabulary: 11)
        try loss("cross entropy", "cross_entropy", SoftmaxCrossEntropy())
        try loss("cross entropy, label smoothing 0.1", "cross_entropy", SoftmaxCrossEntropy(labelSmoothing: 0.1), smoothing: 0.1)
        try loss("bce with logits", "bce_with_logits", BinaryCrossEntropyWithLogits())
        try loss("mse", "mse", MeanSquaredError())
        try optimizer("sgd nesterov, decay", settings(.sgd, lr: 0.05, momentum: 0.9, nesterov: true, decay: 1e-3))
        try optimizer("adam", settings(.adam, lr: 1e-2))
        try optimizer("adam, L2 decay 0.01", settings(.adam, lr: 1e-2, decay: 0.01))
        try optimizer("adamw, decay 0.1", settings(.adamw, lr: 1e-2, decay: 0.1))
        try optimizer("adam, clip-norm 0.5", settings(.adam, lr: 1e-2, clip: 0.5))
        try optimizer("sgd, clip-norm 1", settings(.sgd, lr: 0.1, momentum: 0.9, clip: 1))
        try optimizer("rmsprop alpha 0.9, decay", settings(.rmsprop, lr: 1e-2, decay: 0.01, beta2: 0.9))
        try optimizer("rmsprop momentum 0.5", settings(.rmsprop, lr: 1e-2, momentum: 0.5, beta2: 0.99))
        let manifest = try JSONSerialization.data(withJSONObject: ["cases": cases], options: [.prettyPrinted])
        try manifest.write(to: URL(fileURLWithPath: "\(folder)/manifest.json"))
        let result = try python(["Tests/python/compare_pytorch.py", folder])
        if result.status == 77 { throw XCTSkip("PyTorch comparison skipped: \(result.output)") }
        XCTAssertEqual(result.status, 0, result.output)
        XCTAssertTrue(result.output.contains("\(cases.count) cases, 0 arrays"), result.output)
        print(result.output)
    }

    /// `python3 arguments`, after making `torch` importable when it can be (pip, the CPU build
    /// 2.13.0+cpu where the machine's wheels hold it; PyPI's default build pulls gigabytes of CUDA
    /// libraries, too much for a test run); exit status 77 and the reason when it cannot.
    func python(_ arguments: [String]) throws -> (status: Int32, output: String) {
        func run(_ arguments: [String]) throws -> (status: Int32, output: String) {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            process.arguments = ["python3"] + arguments
            let pipe = Pipe()
            process.standardOutput = pipe
            process.standardError = pipe
            try process.run()
            let text = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            process.waitUntilExit()
            return (process.terminationStatus, text)
        }
        if try run(["-c", "import torch, numpy"]).status != 0 {
            _ = try run(["-m", "pip", "install", "--quiet", "torch==2.13.0+cpu", "numpy"])
            let check = try run(["-c", "import torch, numpy"])
            if check.status != 0 { return (77, "torch cannot be installed here: \(check.output.suffix(200))") }
        }
        return try run(arguments)
    }
}
