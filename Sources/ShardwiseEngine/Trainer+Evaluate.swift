import ShardwiseData
import ShardwiseLayers

/// How well a model does on a data set: the error rate (classification), or the root mean
/// squared and mean absolute errors (regression).
public struct Metrics: Sendable, Equatable {
    /// Classification: percent of samples whose largest output is not their label.
    public var errorPercent: Double?
    /// Regression: root mean squared error over every target of every sample.
    public var rmse: Double?
    /// Regression: mean absolute error over every target of every sample.
    public var mae: Double?

    /// Metrics of these figures.
    public init(errorPercent: Double? = nil, rmse: Double? = nil, mae: Double? = nil) {
        self.errorPercent = errorPercent
        self.rmse = rmse
        self.mae = mae
    }

    /// The figure early stopping and sweeps compare (lower is better): the error rate or the RMSE.
    public var primary: Double { errorPercent ?? rmse ?? .nan }
    /// The primary figure's name: `error_percent` or `rmse`.
    public var name: String { errorPercent != nil ? "error_percent" : "rmse" }
}

extension Trainer {
    /// Error rate in percent on `data`, with dropout off (classification; regression: the RMSE).
    public func evaluate(_ data: Dataset) async throws(TrainingError) -> Double {
        try await metrics(on: data).primary
    }

    /// The metrics of the model on `data`, with dropout off. Classification: workers take
    /// contiguous blocks and their integer error counts add up exactly, whatever the worker
    /// count; across ranks the counts are summed. Regression: sums are taken over fixed chunks of
    /// samples (in sample order within a chunk) and the chunk sums added in chunk order, so
    /// the figures are the same for any number of workers or ranks.
    public func metrics(on data: Dataset) async throws(TrainingError) -> Metrics {
        data.task == .classification ? try await classificationMetrics(data) : try await regressionMetrics(data)
    }

    func classificationMetrics(_ data: Dataset) async throws(TrainingError) -> Metrics {
        let rows = cluster.map { $0.block(of: data.count) } ?? 0..<data.count
        var errors = await overBlocks(rows) { block, ws in
            var errors = 0
            self.network.forEachBatch(of: data, rows: block, parameters: self.parameters.pointer, workspace: ws) { _, n in
                errors += self.network.countErrors(workspace: ws, rows: n)
            }
            return [Double(errors)]
        }.reduce(0) { $0 + Int($1) }
        if let cluster {
            do { errors = try cluster.sum(errors, "counting test errors") } catch { throw .cluster(error) }
        }
        return Metrics(errorPercent: 100 * Double(errors) / Double(data.count))
    }

    static let metricChunk = 256

    func regressionMetrics(_ data: Dataset) async throws(TrainingError) -> Metrics {
        let chunkCount = (data.count + Self.metricChunk - 1) / Self.metricChunk
        let mine = cluster.map { $0.block(of: chunkCount) } ?? 0..<chunkCount
        // Per chunk: (sum of squares, sum of absolute values); zero where another rank computes it,
        // so the cross-rank sum of each entry is exact (x + 0 = x).
        var sums = [Double](repeating: 0, count: 2 * chunkCount)
        let computed = await overBlocks(mine) { block, ws in
            var out: [Double] = []
            for chunk in block {
                var squared = 0.0, absolute = 0.0
                let rows = chunk * Self.metricChunk..<min(data.count, (chunk + 1) * Self.metricChunk)
                self.network.forEachBatch(of: data, rows: rows, parameters: self.parameters.pointer, workspace: ws) { _, n in
                    let s = self.network.errorSums(workspace: ws, rows: n, scale: data.preprocessing.targetScale)
                    squared += s.squared
                    absolute += s.absolute
                }
                out += [squared, absolute]
            }
            return out
        }
        for (k, value) in computed.enumerated() { sums[2 * mine.lowerBound + k] = value }
        if let cluster {
            do { try sums.withUnsafeMutableBufferPointer { (p) throws(ClusterError) in try cluster.allreduceSum(p.baseAddress!, count: p.count, "summing test errors") } } catch {
                throw .cluster(error)
            }
        }
        var squared = 0.0, absolute = 0.0
        for c in 0..<chunkCount {
            squared += sums[2 * c]
            absolute += sums[2 * c + 1]
        }
        let n = Double(data.count * data.targetWidth)
        return Metrics(rmse: (squared / n).squareRoot(), mae: absolute / n)
    }

    /// Runs `body` over contiguous blocks of `items`, one per worker (at most one per local
    /// workspace), on the pinned workers; returns the blocks' results joined in block order.
    func overBlocks(_ items: Range<Int>, _ body: @escaping @Sendable (Range<Int>, Workspace) -> [Double]) async -> [Double] {
        let blocks = max(1, min(workerCount, localShards.count))
        let per = (items.count + blocks - 1) / blocks
        let results = await withTaskGroup(of: (Int, [Double]).self) { group in
            for b in 0..<blocks {
                let block = items.lowerBound + min(items.count, b * per)..<items.lowerBound + min(items.count, (b + 1) * per)
                group.addTask(executorPreference: pool.workers[b]) { (b, body(block, self.workspaces[b])) }
            }
            var results = [[Double]](repeating: [], count: blocks)
            for await (b, r) in group { results[b] = r }
            return results
        }
        return results.flatMap { $0 }
    }
}
