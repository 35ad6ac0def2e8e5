/// The sums that batch-statistics layers (BatchNorm) exchange in one training step: per slot,
/// one row of Doubles for each shard of the global batch and a last row for their total. Slot
/// j < S (S = the network's ``Network/statisticsNodes`` count) holds the forward sums of
/// statistics node j, slot S + j its backward sums. The engine owns the memory (allocated once).
public struct BatchSums {
    /// Per slot: (shards + 1) × its count Doubles.
    public let slots: [UnsafeMutablePointer<Double>]
    /// Per slot: Doubles per row.
    public let counts: [Int]
    /// The global index of the shard this pass computes.
    public let shard: Int
    /// Shards in the global batch.
    public let shards: Int
    /// Rows in the global batch.
    public let batchRows: Int

    /// The sums of `shards` shards (of `batchRows` rows in all) in `slots`, for shard `shard`.
    public init(slots: [UnsafeMutablePointer<Double>], counts: [Int], shard: Int, shards: Int, batchRows: Int) {
        (self.slots, self.counts, self.shard, self.shards, self.batchRows) = (slots, counts, shard, shards, batchRows)
    }

    /// This shard's row of slot `j`.
    public func own(_ j: Int) -> UnsafeMutablePointer<Double> { slots[j] + shard * counts[j] }
    /// The total row of slot `j`.
    public func total(_ j: Int) -> UnsafeMutablePointer<Double> { slots[j] + shards * counts[j] }

    /// Slot `j`'s total: the shards' rows added in shard order.
    public func addShards(_ j: Int) {
        let total = self.total(j), count = counts[j]
        total.update(repeating: 0, count: count)
        for s in 0..<shards {
            let row = slots[j] + s * count
            for i in 0..<count { total[i] += row[i] }
        }
    }
}

extension Network {
    /// The phases of one shard's training pass: 1, plus 2 for each BatchNorm that shares its
    /// statistics across the batch. Between phase p and p + 1 the shards meet: every shard has
    /// written its sums into slot ``meetingSlot(afterPhase:)`` and the engine forms their total.
    public var trainingPhases: Int { 2 * meetingNodes.count + 1 }

    /// The slot whose total phase `p + 1` reads: the forward sums of the (p+1)-th sharing node,
    /// then, in the backward pass, the backward sums of the sharing nodes from the last.
    public func meetingSlot(afterPhase p: Int) -> Int {
        let m = meetingNodes.count
        return p < m ? statisticsIndex[meetingNodes[p]]! : statisticsNodes.count + statisticsIndex[meetingNodes[2 * m - 1 - p]]!
    }

    /// Doubles per row of each slot of ``BatchSums`` (forward slots, then backward slots).
    public var statisticsCounts: [Int] {
        let counts = statisticsNodes.map { n in (nodes[n].layer as! any BatchStatisticsLayer).statisticsCount(inputShape: shapes[nodes[n].inputs[0]]) }
        return counts + counts
    }

    /// Phase `phase` of one shard's training pass (see ``trainingPhases``): forward, loss and
    /// backward as ``forward(parameters:workspace:rows:random:)`` and ``backward(parameters:workspace:rows:lossDivisor:gradient:finished:)``
    /// run them, but with every batch-statistics layer in training mode: a layer that shares its
    /// statistics ends a phase with its shard's sums and starts the next from the batch's total;
    /// one that does not uses its shard's own sums at once. Returns the shard's loss sum in the
    /// phase that computes it (the phase after the last forward meeting), 0 in the others.
    @discardableResult
    public func trainingPhase(
        _ phase: Int, parameters: UnsafePointer<Float>, workspace ws: Workspace, rows n: Int, random: RandomContext,
        lossDivisor: Int, gradient: UnsafeMutablePointer<Float>, sums: BatchSums?, finished: (Int) -> Void = { _ in }
    ) -> Double {
        let m = meetingNodes.count
        precondition(phase >= 0 && phase <= 2 * m && (sums != nil || statisticsNodes.isEmpty), "training phase \(phase) of \(2 * m + 1)")
        let statistics = statisticsNodes.count
        if phase <= m {
            // Forward: from the node whose batch sums just met (or the start) to the next sharing node.
            let start = phase == 0 ? 0 : meetingNodes[phase - 1], end = phase < m ? meetingNodes[phase] : nodes.count
            for k in start..<end {
                forwardNode(k, parameters: parameters, workspace: ws, rows: n, random: random) { layer, pass in
                    guard let sums, let layer = layer as? any BatchStatisticsLayer else { return layer.forward(pass) }
                    let j = statisticsIndex[k]!
                    if layer.sharesStatistics {
                        layer.forward(pass, batchSums: sums.total(j), batchRows: sums.batchRows)  // k == start: the batch's total is in
                    } else {
                        layer.forwardSums(pass, into: sums.own(j))
                        layer.forward(pass, batchSums: sums.own(j), batchRows: n)
                    }
                }
            }
            if phase < m {
                forwardNode(end, parameters: parameters, workspace: ws, rows: n, random: random) { layer, pass in
                    (layer as! any BatchStatisticsLayer).forwardSums(pass, into: sums!.own(statisticsIndex[end]!))
                }
                return 0
            }
        }
        var loss = 0.0
        // Backward: from the end (after the loss) or from the sharing node whose backward sums just met.
        let top: Int
        if phase == m {
            loss = lossGradient(workspace: ws, rows: n, lossDivisor: lossDivisor)
            top = nodes.count - 1
        } else {
            top = meetingNodes[2 * m - phase]
        }
        let q = phase - m  // backward meetings passed
        let bottom = q < m ? meetingNodes[m - 1 - q] : -1
        for k in stride(from: top, to: bottom, by: -1) where runsBackward[k] {
            backwardNode(k, parameters: parameters, workspace: ws, rows: n, gradient: gradient, finished: finished) { layer, pass in
                guard let sums, let layer = layer as? any BatchStatisticsLayer else { return layer.backward(pass) }
                let j = statisticsIndex[k]!
                if layer.sharesStatistics {
                    layer.backward(
                        pass, forwardSums: sums.total(j), backwardSums: sums.total(statistics + j), shardSums: sums.own(statistics + j), batchRows: sums.batchRows)
                } else {
                    layer.backwardSums(pass, forwardSums: sums.own(j), batchRows: n, into: sums.own(statistics + j))
                    layer.backward(pass, forwardSums: sums.own(j), backwardSums: sums.own(statistics + j), shardSums: sums.own(statistics + j), batchRows: n)
                }
            }
        }
        if bottom >= 0 {
            // The next meeting: this shard's backward sums of the sharing node below.
            let j = statisticsIndex[bottom]!, node = nodes[bottom], v = node.inputs[0]
            parameterOffsets[bottom].withUnsafeBufferPointer { offsets in
                let pass = BackwardPass(
                    rows: n, inputWidth: widths[v], outputWidth: widths[node.output], inputShape: shapes[v], outputShape: shapes[node.output],
                    input: ws.activations[v].pointer, output: ws.activations[node.output].pointer,
                    outputGradient: ws.gradient(gradientSlot[node.output]), inputGradient: nil,
                    parameters: ParameterValues(base: parameters, offsets: offsets),
                    parameterGradients: ParameterGradients(base: gradient, offsets: offsets), scratch: ws.scratch(bottom))
                (node.layer as! any BatchStatisticsLayer).backwardSums(pass, forwardSums: sums!.total(j), batchRows: sums!.batchRows, into: sums!.own(statistics + j))
            }
        }
        return loss
    }

    /// After a step: every batch-statistics layer's buffers (running statistics) in `parameters`
    /// from the forward sums of every shard (the slots' shard rows), in node order.
    public func updateBuffers(_ parameters: UnsafeMutablePointer<Float>, sums: BatchSums) {
        for (j, n) in statisticsNodes.enumerated() {
            parameterOffsets[n].withUnsafeBufferPointer { offsets in
                (nodes[n].layer as! any BatchStatisticsLayer).updateBuffers(
                    ParameterGradients(base: parameters, offsets: offsets), inputShape: shapes[nodes[n].inputs[0]],
                    shardSums: sums.slots[j], shards: sums.shards, shardRows: sums.batchRows / sums.shards)
            }
        }
    }
}
