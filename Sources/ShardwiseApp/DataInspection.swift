import Foundation
import Shardwise

/// `shardwise inspect`: a data file as Shardwise reads it.
public enum DataInspection {
    /// Lines describing the data at `options.path`.
    public static func describe(_ options: DataOptions, console: Console = .silent) async throws -> [String] {
        let sets: [(String, Dataset)]
        let format: String
        if options.isMNIST {
            let mnist: MNIST
            do { mnist = try MNIST.load(directory: options.path) } catch { throw RunError(error.description) }
            sets = [("training", mnist.train), ("test", mnist.test)]
            format = "MNIST IDX folder \(mnist.directory)"
        } else {
            let path = options.path!
            let kind: DataFormat
            do { kind = path.contains(",") ? .npy : try DataFormat.detect(path) } catch { throw RunError(error.description) }
            let pool: WorkerPool?
            do { pool = kind == .csv ? try WorkerPool.onThisMachine(workers: nil, policy: .compact, smt: false, oversubscribe: false, topology: Topology.thisMachine()) : nil } catch {
                throw RunError("\(error)")
            }
            defer { pool?.shutdown() }
            let single = kind == .npy && !path.contains(",")
            let set = try await DataSource.file(path, options, pool: pool, console: console, needsTargets: !single)
            sets = [("", set)]
            format = "\(kind.rawValue) \(path)"
        }
        var lines = ["format: \(format)"]
        for (name, set) in sets {
            let prefix = name.isEmpty ? "" : "\(name) set: "
            lines.append("\(prefix)\(set.count) samples of \(set.features) features, stored as \(set.inputs.type)\(set.targets.map { ", targets as \($0.type)" } ?? " (no targets)")")
            if set.targets != nil {
                if set.task == .classification {
                    lines.append("\(prefix)task: \(DataSource.describe(set)); labels 0...\(set.classes - 1), counts \(set.labelCounts.map(String.init).joined(separator: " "))")
                } else {
                    lines.append("\(prefix)task: \(DataSource.describe(set)); " + targetSummary(set))
                }
            }
            let floats = set.count * set.features * 4
            let stored = set.inputs.byteCount
            lines.append("\(prefix)memory: \(MemoryBudget.format(stored)) as stored (mapped from the file where it is uncompressed: not anonymous memory); \(MemoryBudget.format(floats)) if held as floats; a shard converts only its own rows")
        }
        return lines
    }

    static func targetSummary(_ set: Dataset) -> String {
        let width = set.targetWidth
        let row = UnsafeMutablePointer<Float>.allocate(capacity: width)
        defer { row.deallocate() }
        var low = [Float](repeating: .infinity, count: width), high = [Float](repeating: -.infinity, count: width)
        var sum = [Double](repeating: 0, count: width)
        for i in 0..<set.count {
            set.copyTargets(i, into: row)
            for j in 0..<width {
                low[j] = min(low[j], row[j])
                high[j] = max(high[j], row[j])
                sum[j] += Double(row[j])
            }
        }
        return (0..<width).map { String(format: "target %d in [%.6g, %.6g], mean %.6g", $0, low[$0], high[$0], sum[$0] / Double(set.count)) }.joined(separator: "; ")
    }
}
