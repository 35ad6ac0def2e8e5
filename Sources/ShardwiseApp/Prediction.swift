import Foundation
import Shardwise

/// `shardwise predict`: a saved model's outputs for every sample of a data file, written as
/// CSV or NPY. Classification: the predicted class and each class's probability; regression:
/// the predicted values. With Monte Carlo dropout (T passes, dropout on), the predictive mean
/// and its entropy (classification) or variance (regression).
public enum Prediction {
    /// The columns written, in order.
    public static func columns(task: TrainingTask, outputs: Int, monteCarlo: Bool) -> [String] {
        switch task {
        case .classification:
            return ["class"] + (0..<outputs).map { "p\($0)" } + (monteCarlo ? ["entropy"] : [])
        case .regression:
            let names = outputs == 1 ? ["prediction"] : (0..<outputs).map { "prediction\($0)" }
            return names + (monteCarlo ? (outputs == 1 ? ["variance"] : (0..<outputs).map { "variance\($0)" }) : [])
        }
    }

    /// Writes the predictions of the model at `checkpoint` for `data` to `out` (`.csv` or `.npy`); returns the rows written.
    public static func run(checkpoint: String, data options: DataOptions, out: String, mcDropoutPasses: Int?, seed: UInt64) async throws -> Int {
        MatrixKernels.fallBackWithoutBLAS()
        let model: SavedModel
        do { model = try SavedModel.load(checkpoint) } catch { throw RunError(error.description) }
        guard out.hasSuffix(".csv") || out.hasSuffix(".npy") else { throw RunError("--out \(out): expected a file name ending in .csv or .npy") }
        do { try AtomicFile.checkReplaceable(out) } catch { throw RunError("--out \(error.description)") }
        var data: Dataset
        if options.isMNIST {
            do { data = try MNIST.load(directory: options.path, features: model.network.inputSize).test } catch { throw RunError(error.description) }
        } else {
            var request = options
            request.request.task = model.task
            request.request.featuresOnly = model.network.inputSize
            data = try await DataSource.file(options.path!, request, pool: nil, console: .silent, needsTargets: false)
        }
        data.preprocessing = model.preprocessing
        try model.check(data)
        let table = try values(model, data, passes: mcDropoutPasses, seed: seed)
        let names = columns(task: model.task, outputs: model.network.outputSize, monteCarlo: mcDropoutPasses != nil)
        do {
            if out.hasSuffix(".npy") {
                let floats = table.map { Float($0) }
                let header = NPY.encodeHeader(type: .float32, shape: [data.count, names.count])
                try floats.withUnsafeBytes { raw in try header.withUnsafeBytes { try AtomicFile.write(pieces: [$0, raw], to: out) } }
            } else {
                var text = names.joined(separator: ",") + "\n"
                text.reserveCapacity(data.count * names.count * 12)
                for i in 0..<data.count {
                    let row = table[i * names.count..<(i + 1) * names.count]
                    text += row.enumerated().map { k, v in
                        model.task == .classification && k == 0 ? String(Int(v)) : String(format: "%.9g", v)
                    }.joined(separator: ",") + "\n"
                }
                try AtomicFile.write(text, to: out)
            }
        } catch let error as FileWriteError { throw RunError(error.description) }
        return data.count
    }

    /// The output table, (samples, columns) row-major.
    static func values(_ model: SavedModel, _ data: Dataset, passes: Int?, seed: UInt64) throws -> [Double] {
        let k = model.network.outputSize
        var rows: [[Double]] = []
        rows.reserveCapacity(data.count)
        switch model.task {
        case .classification:
            let p = try meanProbabilities(model, data, passes: passes, seed: seed)
            for i in 0..<data.count {
                let probabilities = Array(p[i * k..<(i + 1) * k])
                let best = probabilities.indices.max { probabilities[$0] < probabilities[$1] }!
                var row = [Double(best)] + probabilities
                if passes != nil { row.append(-probabilities.reduce(0) { $0 + ($1 > 0 ? $1 * log($1) : 0) }) }
                rows.append(row)
            }
        case .regression:
            let (mean, variance) = try meanAndVariance(model, data, passes: passes, seed: seed)
            for i in 0..<data.count {
                rows.append(Array(mean[i * k..<(i + 1) * k]) + (passes != nil ? Array(variance[i * k..<(i + 1) * k]) : []))
            }
        }
        return rows.flatMap { $0 }
    }

    /// Softmax probabilities, averaged over `passes` dropout passes (nil: one pass, dropout off).
    static func meanProbabilities(_ model: SavedModel, _ data: Dataset, passes: Int?, seed: UInt64) throws -> [Double] {
        let k = model.network.outputSize
        let weight = 1 / Double(passes ?? 1)
        var mean = [Double](repeating: 0, count: data.count * k)
        try model.forEachOutput(data, passes: passes, seed: seed) { _, start, n, out in
            for r in 0..<n {
                let z = out + r * k
                let m = (0..<k).map { Double(z[$0]) }.max()!
                let e = (0..<k).map { exp(Double(z[$0]) - m) }
                let sum = e.reduce(0, +)
                for c in 0..<k { mean[(start + r) * k + c] += e[c] / sum * weight }
            }
        }
        return mean
    }

    /// Outputs averaged over `passes` dropout passes and their variance across passes (nil:
    /// one pass, dropout off, variance 0), in the targets' units (standardized targets mapped back).
    static func meanAndVariance(_ model: SavedModel, _ data: Dataset, passes: Int?, seed: UInt64) throws -> (mean: [Double], variance: [Double]) {
        let k = model.network.outputSize
        let shift = model.preprocessing.targetShift ?? [Float](repeating: 0, count: k)
        let scale = model.preprocessing.targetScale ?? [Float](repeating: 1, count: k)
        var sum = [Double](repeating: 0, count: data.count * k), squares = sum
        try model.forEachOutput(data, passes: passes, seed: seed) { _, start, n, out in
            for j in 0..<n * k {
                let v = Double(out[j]) * Double(scale[j % k]) + Double(shift[j % k])
                sum[start * k + j] += v
                squares[start * k + j] += v * v
            }
        }
        let t = Double(passes ?? 1)
        let mean = sum.map { $0 / t }
        return (mean, zip(squares, mean).map { max($0 / t - $1 * $1, 0) })
    }
}
