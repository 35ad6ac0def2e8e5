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
    /// Batch-statistics layers (BatchNorm) use their running statistics here, as in evaluation:
    /// training's batch statistics come only in the engine's ``trainingPhase(_:parameters:workspace:rows:random:lossDivisor:gradient:sums:)``.
    ///
    /// - Parameters:
    ///   - parameters: the flat parameter vector, laid out as `layout`.
    ///   - ws: the shard's workspace; its `input` holds the rows.
    ///   - n: rows, at most the workspace's capacity.
    ///   - random: where stochastic layers (dropout) draw from; nil means evaluation.
    public func forward(parameters: UnsafePointer<Float>, workspace ws: Workspace, rows n: Int, random: RandomContext?) {
        precondition(n > 0 && n <= ws.capacity, "forward: \(n) rows in a workspace of \(ws.capacity)")
        for k in nodes.indices { forwardNode(k, parameters: parameters, workspace: ws, rows: n, random: random) { $0.forward($1) } }
    }

    /// Node k's forward pass: a combination, or `body(layer, pass)` for a leaf.
    @inline(__always)
    func forwardNode(
        _ k: Int, parameters: UnsafePointer<Float>, workspace ws: Workspace, rows n: Int, random: RandomContext?, _ body: (any Layer, ForwardPass) -> Void
    ) {
        let node = nodes[k]
        switch node.operation {
        case .layer(let layer):
            let v = node.inputs[0]
            parameterOffsets[k].withUnsafeBufferPointer { offsets in
                body(layer, ForwardPass(
                    rows: n, inputWidth: widths[v], outputWidth: widths[node.output], inputShape: shapes[v], outputShape: shapes[node.output],
                    input: ws.activations[v].pointer, output: ws.activations[node.output].pointer,
                    parameters: ParameterValues(base: parameters, offsets: offsets),
                    scratch: ws.scratch(k),
                    random: random.map {
                        LayerRandomness(seed: $0.seed, step: $0.step, firstPosition: $0.firstPosition, layer: typeIndex[k])
                    }))
            }
        case .combine(let combination):
            combine(combination, node, rows: n, ws)
        }
    }

    /// A combination's forward pass: sums in input order, concatenation by rows, products.
    private func combine(_ combination: Combination, _ node: ModelGraph.Node, rows n: Int, _ ws: Workspace) {
        let out = ws.activations[node.output].pointer, width = widths[node.output]
        switch combination {
        case .add:
            out.update(from: ws.activations[node.inputs[0]].pointer, count: n * width)
            for v in node.inputs.dropFirst() { Elementwise.add(count: n * width, x: ws.activations[v].pointer, y: out) }
        case .concatenate:
            var column = 0
            for v in node.inputs {
                let x = ws.activations[v].pointer, w = widths[v]
                for r in 0..<n { (out + r * width + column).update(from: x + r * w, count: w) }
                column += w
            }
        case .multiply:
            let a = ws.activations[node.inputs[0]].pointer, b = ws.activations[node.inputs[1]].pointer
            let bw = widths[node.inputs[1]]
            if bw == width {
                Elementwise.multiply(count: n * width, a: a, b: b, out: out)
            } else {
                let plane = width / bw
                for r in 0..<n {
                    for c in 0..<bw {
                        let o = r * width + c * plane, g = b[r * bw + c]
                        for i in 0..<plane { out[o + i] = a[o + i] * g }
                    }
                }
            }
        }
    }

    /// The loss on the outputs of the last `forward`, then the backward pass.
    ///
    /// Writes the gradient of `(1 / lossDivisor) * Σ_rows loss` into `gradient`
    /// (laid out as `layout`, every element overwritten) and returns the loss sum
    /// over the rows. With `lossDivisor` = the global batch size, the shards'
    /// gradients add up to the gradient of the global batch's mean loss.
    /// `finished(k)` is called as soon as node k's part of `gradient` (``parameterRange(ofNode:)``)
    /// is final, last node first, for each node with parameters: a cross-rank exchange can
    /// send it while the earlier layers' backward runs.
    ///
    /// A value read by several nodes (a residual's input, say) gets the sum of their gradients,
    /// added in backward order: the first written, each later one added.
    @discardableResult
    public func backward(
        parameters: UnsafePointer<Float>, workspace ws: Workspace, rows n: Int,
        lossDivisor: Int, gradient: UnsafeMutablePointer<Float>, finished: (Int) -> Void = { _ in }
    ) -> Double {
        let loss = lossGradient(workspace: ws, rows: n, lossDivisor: lossDivisor)
        for k in stride(from: nodes.count - 1, through: 0, by: -1) where runsBackward[k] {
            backwardNode(k, parameters: parameters, workspace: ws, rows: n, gradient: gradient, finished: finished) { $0.backward($1) }
        }
        return loss
    }

    /// The loss over the rows of the last forward pass, its gradient into the output's gradient
    /// buffer. A sequence model's (T, V) outputs are T positions with a label each: the loss is
    /// taken over the N T positions and a sample's loss is the mean over its positions (the
    /// mean over every token of the batch, as a language model's cross-entropy).
    func lossGradient(workspace ws: Workspace, rows n: Int, lossDivisor: Int) -> Double {
        let p = labelPositions
        let sum = loss.evaluate(
            outputs: ws.output, targets: LossTargets(labels: ws.labels, values: ws.targets, areLabels: ws.holdsLabels), rows: n * p,
            width: widths[widths.count - 1] / p, gradientScale: 1 / Float(lossDivisor * p), gradient: ws.gradient(gradientSlot[widths.count - 1]))
        return p == 1 ? sum : sum / Double(p)
    }

    /// The loss summed over the rows of the last forward pass, each row's the mean over its
    /// positions (evaluation; the output gradient buffer is overwritten).
    public func lossSum(workspace ws: Workspace, rows n: Int) -> Double {
        lossGradient(workspace: ws, rows: n, lossDivisor: 1)
    }

    /// Positions of a sample's output with a label each: T for a sequence model's (T, V)
    /// outputs (a language model's next tokens), else 1.
    public var labelPositions: Int {
        let shape = shapes[shapes.count - 1]
        return shape.count == 2 ? shape[0] : 1
    }

    /// Node k's backward pass: a combination's, or `body(layer, pass)` for a leaf; then its
    /// contributions added where a value has several readers, and `finished(k)` for a node with parameters.
    @inline(__always)
    func backwardNode(
        _ k: Int, parameters: UnsafePointer<Float>, workspace ws: Workspace, rows n: Int, gradient: UnsafeMutablePointer<Float>,
        finished: (Int) -> Void, _ body: (any Layer, BackwardPass) -> Void
    ) {
        let node = nodes[k], dy = ws.gradient(gradientSlot[node.output])
        switch node.operation {
        case .layer(let layer):
            let v = node.inputs[0], contribution = contributions[k][0]
            let dx = contribution == .none ? nil : contribution == .write ? ws.gradient(gradientSlot[v]) : ws.accumulation
            parameterOffsets[k].withUnsafeBufferPointer { offsets in
                gradientOffsets[k].withUnsafeBufferPointer { gradientOffsets in
                    body(layer, BackwardPass(
                        rows: n, inputWidth: widths[v], outputWidth: widths[node.output], inputShape: shapes[v], outputShape: shapes[node.output],
                        input: ws.activations[v].pointer, output: ws.activations[node.output].pointer,
                        outputGradient: dy, inputGradient: dx,
                        parameters: ParameterValues(base: parameters, offsets: offsets),
                        parameterGradients: ParameterGradients(base: gradient, offsets: gradientOffsets),
                        scratch: ws.scratch(k)))
                }
            }
            if contribution == .add { Elementwise.add(count: n * widths[v], x: ws.accumulation, y: ws.gradient(gradientSlot[v])) }
            // A tied tensor's owner: its gradient is its own use's plus each later use's (already written), in that order.
            for tie in ties where tie.owner == k { Elementwise.add(count: tie.count, x: gradient + tie.gradient, y: gradient + tie.offset) }
            if !trainedOffsets[k].isEmpty { finished(k) }
        case .combine(let combination):
            for (j, v) in node.inputs.enumerated() where contributions[k][j] != .none {
                let target = contributions[k][j] == .write ? ws.gradient(gradientSlot[v]) : ws.accumulation
                combineBackward(combination, node, input: j, rows: n, ws, outputGradient: dy, into: target)
                if contributions[k][j] == .add { Elementwise.add(count: n * widths[v], x: ws.accumulation, y: ws.gradient(gradientSlot[v])) }
            }
        }
    }

    /// The gradient of a combination's input `j` from its output gradient `dy`, written to `dx`.
    private func combineBackward(
        _ combination: Combination, _ node: ModelGraph.Node, input j: Int, rows n: Int, _ ws: Workspace,
        outputGradient dy: UnsafeMutablePointer<Float>, into dx: UnsafeMutablePointer<Float>
    ) {
        let width = widths[node.output], w = widths[node.inputs[j]]
        switch combination {
        case .add:
            dx.update(from: dy, count: n * width)
        case .concatenate:
            let column = node.inputs[..<j].reduce(0) { $0 + widths[$1] }
            for r in 0..<n { (dx + r * w).update(from: dy + r * width + column, count: w) }
        case .multiply:
            // d a = dy * b (b broadcast); d b = dy * a, summed over each channel's positions (in Double, in order) when b is per channel.
            let other = ws.activations[node.inputs[1 - j]].pointer
            let bw = widths[node.inputs[1]]
            if bw == width {
                Elementwise.multiply(count: n * width, a: dy, b: other, out: dx)
            } else {
                let plane = width / bw
                for r in 0..<n {
                    for c in 0..<bw {
                        let o = r * width + c * plane
                        if j == 0 {
                            let g = other[r * bw + c]
                            for i in 0..<plane { dx[o + i] = dy[o + i] * g }
                        } else {
                            var sum = 0.0
                            for i in 0..<plane { sum += Double(dy[o + i]) * Double(other[o + i]) }
                            dx[r * bw + c] = Float(sum)
                        }
                    }
                }
            }
        }
    }

    /// The part of the flat parameter vector that holds node `k`'s tensors (with the padding
    /// after them, up to the next node's first tensor); empty for a node without parameters.
    /// For a flat model node k is layer k.
    public func parameterRange(ofNode k: Int) -> Range<Int> {
        guard let first = trainedOffsets[k].first else { return 0..<0 }
        let next = trainedOffsets[(k + 1)...].first { !$0.isEmpty }?.first ?? layout.trainedCount
        return first..<next
    }

    /// Node k's tensors in declaration order, buffers included.
    public func tensors(ofNode k: Int) -> [ParameterLayout.Tensor] {
        parameterOffsets[k].map { offset in layout.tensors.first { $0.offset == offset }! }
    }

    /// Gradient buffers (of the widest value's rows) a workspace holds: 2 for a chain of layers.
    public var gradientBufferCount: Int { gradientBuffers + (needsAccumulation ? 1 : 0) }

    /// The parameter ranges of the nodes with parameters, in the order the backward pass finishes them (the last node first).
    public var parameterSegments: [Range<Int>] {
        nodes.indices.reversed().map { parameterRange(ofNode: $0) }.filter { !$0.isEmpty }
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

    /// Number of rows (of a sequence model, positions) whose largest output is not at the label, after `forward`.
    public func countErrors(workspace ws: Workspace, rows n: Int) -> Int {
        let p = labelPositions, classes = widths[widths.count - 1] / p
        var errors = 0
        for r in 0..<n * p where argmax(ws.output + r * classes, count: classes) != Int(ws.labels[r]) { errors += 1 }
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
