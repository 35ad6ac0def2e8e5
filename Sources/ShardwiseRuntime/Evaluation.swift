import Foundation
import ShardwiseData
import ShardwiseKernels
import ShardwiseLayers

/// `shardwise eval`: test error and confusion matrix of a saved model, and
/// Monte Carlo dropout (Gal and Ghahramani 2016): dropout kept on, T stochastic
/// passes averaged into a predictive distribution.
public struct EvaluationReport: Sendable {
    public var errorPercent: Double
    /// confusion[true class][predicted class]
    public var confusion: [[Int]]
    public var samples: Int
    /// With --mc-dropout: the error of the averaged prediction, the mean entropy (nats) of the averaged
    /// distribution, and that mean over the images it gets right and over those it gets wrong.
    public var monteCarlo: (passes: Int, errorPercent: Double, meanEntropy: Double, entropyCorrect: Double, entropyWrong: Double)?
}

public enum Evaluation {
    public static func run(
        checkpoint: String, dataDirectory: String?, testLimit: Int? = nil, mcDropoutPasses: Int? = nil, seed: UInt64 = 1
    ) throws -> EvaluationReport {
        do { _ = try BLAS.load() } catch { throw RunError(error.description) }
        let model: (network: NetworkConfiguration, parameters: [Float])
        do { model = try Checkpoint.loadModel(checkpoint) } catch { throw RunError(error.description) }
        var test: Dataset
        do { test = try MNIST.load(directory: dataDirectory).test } catch { throw RunError(error.description) }
        if let testLimit { test = test.prefix(testLimit) }
        guard test.features == model.network.inputSize else {
            throw RunError("\(checkpoint): the model takes \(model.network.inputSize) inputs, the test images have \(test.features) pixels")
        }
        let network = Network(model.network)
        let parameters = FloatBuffer(count: network.layout.count)
        model.parameters.withUnsafeBufferPointer { parameters.pointer.update(from: $0.baseAddress!, count: $0.count) }
        let classes = model.network.outputSize
        let ws = Workspace(network: network, capacity: 256)
        var confusion = [[Int]](repeating: [Int](repeating: 0, count: classes), count: classes)
        var meanProbabilities = [Double](repeating: 0, count: mcDropoutPasses == nil ? 0 : test.count * classes)

        func forEachBatch(dropout: (Int) -> DropoutContext?, _ body: (Int, Int) -> Void) {
            var start = 0
            while start < test.count {
                let n = min(ws.capacity, test.count - start)
                test.images.withUnsafeBufferPointer { ws.input.update(from: $0.baseAddress! + start * test.features, count: n * test.features) }
                for r in 0..<n { ws.labels[r] = test.labels[start + r] }
                network.forward(parameters: parameters.pointer, workspace: ws, rows: n, dropout: dropout(start))
                body(start, n)
                start += n
            }
        }

        forEachBatch(dropout: { _ in nil }) { start, n in
            for r in 0..<n {
                confusion[Int(test.labels[start + r])][argmax(ws.output + r * classes, classes)] += 1
            }
        }
        let errors = test.count - (0..<classes).reduce(0) { $0 + confusion[$1][$1] }
        var monteCarlo: (Int, Double, Double, Double, Double)?
        if let passes = mcDropoutPasses {
            for t in 0..<passes {
                // Pass t draws its masks from the dropout streams of "step" t: reproducible for a seed.
                forEachBatch(dropout: { DropoutContext(seed: seed, step: UInt32(t), firstPosition: $0) }) { start, n in
                    for r in 0..<n {
                        let z = ws.output + r * classes
                        let m = (0..<classes).map { Double(z[$0]) }.max()!
                        let e = (0..<classes).map { exp(Double(z[$0]) - m) }
                        let sum = e.reduce(0, +)
                        for c in 0..<classes { meanProbabilities[(start + r) * classes + c] += e[c] / sum / Double(passes) }
                    }
                }
            }
            var mcErrors = 0
            var entropyRight = 0.0, entropyWrong = 0.0
            for i in 0..<test.count {
                let p = meanProbabilities[i * classes..<(i + 1) * classes]
                let predicted = p.indices.max { p[$0] < p[$1] }! - i * classes
                let h = -p.reduce(0) { $0 + ($1 > 0 ? $1 * log($1) : 0) }
                if predicted != Int(test.labels[i]) {
                    mcErrors += 1
                    entropyWrong += h
                } else {
                    entropyRight += h
                }
            }
            let right = test.count - mcErrors
            monteCarlo = (
                passes, 100 * Double(mcErrors) / Double(test.count), (entropyRight + entropyWrong) / Double(test.count),
                right > 0 ? entropyRight / Double(right) : 0, mcErrors > 0 ? entropyWrong / Double(mcErrors) : 0)
        }
        return EvaluationReport(
            errorPercent: 100 * Double(errors) / Double(test.count), confusion: confusion, samples: test.count,
            monteCarlo: monteCarlo)
    }

    static func argmax(_ z: UnsafePointer<Float>, _ n: Int) -> Int {
        var best = 0
        for c in 1..<n where z[c] > z[best] { best = c }
        return best
    }
}
