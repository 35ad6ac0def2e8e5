import ShardwiseData
import ShardwiseKernels

/// Where a shard's random draws come from in one training step.
public struct RandomContext: Sendable {
    /// The run's seed (the Philox key).
    public var seed: UInt64
    /// The global optimisation step (counts across epochs).
    public var step: UInt32
    /// Global-batch position of the shard's first row.
    public var firstPosition: Int

    /// The draws of the shard whose first row sits at `firstPosition` of the global batch, at `step`.
    public init(seed: UInt64, step: UInt32, firstPosition: Int) {
        self.seed = seed
        self.step = step
        self.firstPosition = firstPosition
    }
}

extension Network {
    /// Forward pass over `rows` rows of `workspace.input`; the outputs land in `workspace.output`.
    ///
    /// - Parameters:
    ///   - parameters: the flat parameter vector, laid out as `layout`.
    ///   - ws: the shard's workspace; its `input` holds the rows.
    ///   - n: rows, at most the workspace's capacity.
    ///   - random: where stochastic layers draw from when training; nil means evaluation.
    public func forward(parameters: UnsafePointer<Float>, workspace ws: Workspace, rows n: Int, random: RandomContext?) {
        precondition(n > 0 && n <= ws.capacity, "forward: \(n) rows in a workspace of \(ws.capacity)")
        for (k, layer) in layers.enumerated() {
            parameterOffsets[k].withUnsafeBufferPointer { offsets in
                layer.forward(ForwardPass(
                    rows: n, inputWidth: widths[k], outputWidth: widths[k + 1], inputShape: shapes[k], outputShape: shapes[k + 1],
                    input: ws.activations[k].pointer, output: ws.activations[k + 1].pointer,
                    parameters: ParameterValues(base: parameters, offsets: offsets),
                    scratch: ws.scratch(k),
                    random: random.map {
                        LayerRandomness(seed: $0.seed, step: $0.step, firstPosition: $0.firstPosition, layer: typeIndex[k])
                    }))
            }
        }
    }

    /// The loss on the outputs of the last `forward`, then the backward pass.
    ///
    /// Writes the gradient of `(1 / lossDivisor) * Σ_rows loss` into `gradient`
    /// (laid out as `layout`, every element overwritten) and returns the loss sum
    /// over the rows. With `lossDivisor` = the global batch size, the shards'
    /// gradients add up to the gradient of the global batch's mean loss.
    /// `finished(k)` is called as soon as layer k's part of `gradient` (``parameterRange(ofLayer:)``)
    /// is final, last layer first, for each layer with parameters: a cross-rank exchange can
    /// send it while the earlier layers' backward runs.
    @discardableResult
    public func backward(
        parameters: UnsafePointer<Float>, workspace ws: Workspace, rows n: Int,
        lossDivisor: Int, gradient: UnsafeMutablePointer<Float>, finished: (Int) -> Void = { _ in }
    ) -> Double {
        var dy = ws.gradientA.pointer
        var dx = ws.gradientB.pointer
        let loss = loss.evaluate(
            outputs: ws.output, targets: LossTargets(labels: ws.labels, values: ws.targets, areLabels: ws.holdsLabels), rows: n, width: widths[widths.count - 1],
            gradientScale: 1 / Float(lossDivisor), gradient: dy)
        for k in stride(from: layers.count - 1, through: 0, by: -1) {
            // Layers before the first one with parameters need no gradient at all.
            guard needsInputGradient[k] || !parameterOffsets[k].isEmpty else { break }
            parameterOffsets[k].withUnsafeBufferPointer { offsets in
                layers[k].backward(BackwardPass(
                    rows: n, inputWidth: widths[k], outputWidth: widths[k + 1], inputShape: shapes[k], outputShape: shapes[k + 1],
                    input: ws.activations[k].pointer, output: ws.activations[k + 1].pointer,
                    outputGradient: dy, inputGradient: needsInputGradient[k] ? dx : nil,
                    parameters: ParameterValues(base: parameters, offsets: offsets),
                    parameterGradients: ParameterGradients(base: gradient, offsets: offsets),
                    scratch: ws.scratch(k)))
            }
            if !parameterOffsets[k].isEmpty { finished(k) }
            if needsInputGradient[k] { swap(&dx, &dy) }
        }
        return loss
    }

    /// The part of the flat parameter vector that holds layer `k`'s tensors (with the padding
    /// after them, up to the next layer's first tensor); empty for a layer without parameters.
    public func parameterRange(ofLayer k: Int) -> Range<Int> {
        guard let first = parameterOffsets[k].first else { return 0..<0 }
        let next = parameterOffsets[(k + 1)...].first { !$0.isEmpty }?.first ?? layout.count
        return first..<next
    }

    /// Sums of squared and of absolute differences between outputs and targets over the
    /// rows, after `forward` (regression), in row order; with `scale`, each target's difference
    /// is multiplied by its scale first (back to the targets' units when they were standardized).
    public func errorSums(workspace ws: Workspace, rows n: Int, scale: [Float]? = nil) -> (squared: Double, absolute: Double) {
        let width = widths[widths.count - 1]
        var squared = 0.0, absolute = 0.0
        for k in 0..<n * width {
            let d = (Double(ws.output[k]) - Double(ws.targets[k])) * Double(scale?[k % width] ?? 1)
            squared += d * d
            absolute += abs(d)
        }
        return (squared, absolute)
    }

    /// Number of rows whose largest output is not at the label, after `forward`.
    public func countErrors(workspace ws: Workspace, rows n: Int) -> Int {
        let classes = widths[widths.count - 1]
        var errors = 0
        for r in 0..<n where argmax(ws.output + r * classes, count: classes) != Int(ws.labels[r]) { errors += 1 }
        return errors
    }

    /// Runs the forward pass over `rows` of `data` in batches of the workspace's capacity,
    /// calling `body(first row, row count)` after each with the outputs in `workspace.output`.
    /// `random(first row)` gives each batch's draws (nil: evaluation).
    public func forEachBatch(
        of data: Dataset, rows: Range<Int>, parameters: UnsafePointer<Float>, workspace ws: Workspace,
        random: (Int) -> RandomContext? = { _ in nil }, _ body: (Int, Int) -> Void
    ) {
        var start = rows.lowerBound
        while start < rows.upperBound {
            let n = min(ws.capacity, rows.upperBound - start)
            for r in 0..<n { ws.load(data, sample: start + r, row: r) }
            forward(parameters: parameters, workspace: ws, rows: n, random: random(start))
            body(start, n)
            start += n
        }
    }
}

/// The index of the largest of `count` values (the first, on ties).
public func argmax(_ z: UnsafePointer<Float>, count: Int) -> Int {
    var best = 0
    for c in 1..<count where z[c] > z[best] { best = c }
    return best
}
