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
    /// Classification: the mean loss a sample (a sequence model's: the mean over its tokens, in
    /// nats; divided by ln 2, bits per token).
    public var loss: Double?

    /// Metrics of these figures.
    public init(errorPercent: Double? = nil, rmse: Double? = nil, mae: Double? = nil, loss: Double? = nil) {
        self.errorPercent = errorPercent
        self.rmse = rmse
        self.mae = mae
        self.loss = loss
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

    /// The metrics of the model on `data`, with dropout off. Sums are taken over fixed chunks of
    /// samples (in sample order within a chunk) and the chunk sums added in chunk order, so
    /// the figures are the same for any number of workers or ranks (error counts are integers).
    public func metrics(on data: Dataset) async throws(TrainingError) -> Metrics {
        data.task == .classification ? try await classificationMetrics(data) : try await regressionMetrics(data)
    }

    func classificationMetrics(_ data: Dataset) async throws(TrainingError) -> Metrics {
        // Per chunk: (errors, loss sum).
        let sums = try await chunkSums(of: data) { ws, n in
            (Double(self.network.countErrors(workspace: ws, rows: n)), self.network.lossSum(workspace: ws, rows: n))
        }
        var errors = 0.0, loss = 0.0
        for c in 0..<sums.count / 2 {
            errors += sums[2 * c]
            loss += sums[2 * c + 1]
        }
        let positions = Double(data.count * network.labelPositions)
        return Metrics(errorPercent: 100 * errors / positions, loss: loss / Double(data.count))
    }

    static let metricChunk = 256

    func regressionMetrics(_ data: Dataset) async throws(TrainingError) -> Metrics {
        let sums = try await chunkSums(of: data) { ws, n in
            self.network.errorSums(workspace: ws, rows: n, scale: data.preprocessing.targetScale)
        }
        var squared = 0.0, absolute = 0.0
        for c in 0..<sums.count / 2 {
            squared += sums[2 * c]
            absolute += sums[2 * c + 1]
        }
        let n = Double(data.count * data.targetWidth)
        return Metrics(rmse: (squared / n).squareRoot(), mae: absolute / n)
    }

    /// Two sums per chunk of ``metricChunk`` samples of `data` (each `body(workspace, rows)`
    /// over the chunk's batches, added in sample order), every chunk's in chunk order, the
    /// chunks spread over the workers and, under MPI, the ranks: zero where another rank
    /// computes a chunk, so the cross-rank sum of each entry is exact (x + 0 = x).
    func chunkSums(of data: Dataset, _ body: @escaping @Sendable (Workspace, Int) -> (Double, Double)) async throws(TrainingError) -> [Double] {
        let chunkCount = (data.count + Self.metricChunk - 1) / Self.metricChunk
        let mine = cluster.map { $0.block(of: chunkCount) } ?? 0..<chunkCount
        var sums = [Double](repeating: 0, count: 2 * chunkCount)
        let computed = await overBlocks(mine) { block, ws in
            var out: [Double] = []
            for chunk in block {
                var first = 0.0, second = 0.0
                let rows = chunk * Self.metricChunk..<min(data.count, (chunk + 1) * Self.metricChunk)
                self.network.forEachBatch(of: data, rows: rows, parameters: self.parameters.pointer, workspace: ws) { _, n in
                    let s = body(ws, n)
                    first += s.0
                    second += s.1
                }
                out += [first, second]
            }
            return out
        }
        for (k, value) in computed.enumerated() { sums[2 * mine.lowerBound + k] = value }
        if let cluster {
            do { try sums.withUnsafeMutableBufferPointer { (p) throws(ClusterError) in try cluster.allreduceSum(p.baseAddress!, count: p.count, "summing test errors") } } catch {
                throw .cluster(error)
            }
        }
        return sums
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
