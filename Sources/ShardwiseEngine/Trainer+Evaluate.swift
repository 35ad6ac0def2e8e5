import ShardwiseData
import ShardwiseLayers

extension Trainer {
    /// Error rate in percent on `data`, with dropout off. Workers take contiguous blocks and
    /// their integer error counts add up exactly, whatever the worker count. Across ranks,
    /// each rank counts a block of the samples and the counts are summed.
    public func evaluate(_ data: Dataset) async throws(TrainingError) -> Double {
        let rows = cluster.map { $0.block(of: data.count) } ?? 0..<data.count
        let blocks = min(workerCount, localShards.count)
        let per = (rows.count + blocks - 1) / blocks
        var errors = await withTaskGroup(of: Int.self) { group in
            for b in 0..<blocks {
                let block = rows.lowerBound + min(rows.count, b * per)..<rows.lowerBound + min(rows.count, (b + 1) * per)
                group.addTask(executorPreference: pool.workers[b]) {
                    var errors = 0
                    let ws = self.workspaces[b]
                    self.network.forEachBatch(of: data, rows: block, parameters: self.parameters.pointer, workspace: ws) { _, n in
                        errors += self.network.countErrors(workspace: ws, rows: n)
                    }
                    return errors
                }
            }
            return await group.reduce(0, +)
        }
        if let cluster {
            do { errors = try cluster.sum(errors, "counting test errors") } catch { throw .cluster(error) }
        }
        return 100 * Double(errors) / Double(data.count)
    }
}
