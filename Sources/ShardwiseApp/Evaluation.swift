import Foundation
import Shardwise

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
        do { model = try loadModel(checkpoint) } catch { throw RunError(error.description) }
        var test: Dataset
        do { test = try MNIST.load(directory: dataDirectory, features: model.network.inputSize).test } catch {
            throw RunError("\(error.description) (the model in \(checkpoint) takes \(model.network.inputSize) inputs)")
        }
        if let testLimit { test = test.prefix(testLimit) }
        guard test.classes == model.network.outputSize else {
            throw RunError("\(checkpoint): the model gives \(model.network.outputSize) outputs, the test set has \(test.classes) classes")
        }
        let network: Network
        do { network = try Network(model.network) } catch { throw RunError("\(checkpoint): \(error)") }
        let parameters = FloatBuffer(count: network.layout.count)
        model.parameters.withUnsafeBufferPointer { parameters.pointer.update(from: $0.baseAddress!, count: $0.count) }
        let classes = model.network.outputSize
        let ws = Workspace(network: network, capacity: 256)
        var confusion = [[Int]](repeating: [Int](repeating: 0, count: classes), count: classes)
        network.forEachBatch(of: test, rows: 0..<test.count, parameters: parameters.pointer, workspace: ws) { start, n in
            for r in 0..<n {
                confusion[Int(test.labels[start + r])][argmax(ws.output + r * classes, count: classes)] += 1
            }
        }
        let errors = test.count - (0..<classes).reduce(0) { $0 + confusion[$1][$1] }
        let monteCarlo = mcDropoutPasses.map {
            monteCarloDropout(network, parameters: parameters, workspace: ws, test: test, passes: $0, seed: seed)
        }
        return EvaluationReport(
            errorPercent: 100 * Double(errors) / Double(test.count), confusion: confusion, samples: test.count,
            monteCarlo: monteCarlo)
    }

    /// T passes with dropout on, averaged: the error of the mean prediction and its entropy.
    static func monteCarloDropout(
        _ network: Network, parameters: FloatBuffer, workspace ws: Workspace, test: Dataset, passes: Int, seed: UInt64
    ) -> (passes: Int, errorPercent: Double, meanEntropy: Double, entropyCorrect: Double, entropyWrong: Double) {
        let classes = network.widths.last!
        var meanProbabilities = [Double](repeating: 0, count: test.count * classes)
        for t in 0..<passes {
            // Pass t draws its masks from the dropout streams of "step" t: reproducible for a seed.
            let random = { RandomContext(seed: seed, step: UInt32(t), firstPosition: $0) }
            network.forEachBatch(of: test, rows: 0..<test.count, parameters: parameters.pointer, workspace: ws, random: random) { start, n in
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
        return (
            passes, 100 * Double(mcErrors) / Double(test.count), (entropyRight + entropyWrong) / Double(test.count),
            right > 0 ? entropyRight / Double(right) : 0, mcErrors > 0 ? entropyWrong / Double(mcErrors) : 0)
    }

    /// A model for evaluation: from a checkpoint folder (or a folder of them), or a bare
    /// `model.safetensors` whose metadata holds the network description.
    public static func loadModel(_ path: String) throws(CheckpointError) -> (network: NetworkConfiguration, parameters: [Float]) {
        var isFolder: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isFolder) else {
            throw CheckpointError("\(path): no such checkpoint (expected a checkpoint folder, a folder of them, or a model.safetensors)")
        }
        if isFolder.boolValue {
            // A checkpoint folder (any of its files present), or a run's folder of them.
            let isCheckpoint = ["SHA256SUMS", "state.json", "model.safetensors"].contains { access("\(path)/\($0)", F_OK) == 0 }
            let folder = isCheckpoint ? path : try Checkpoint.newest(in: path)
            let loaded = try TrainingRun.loadCheckpoint(folder)
            return (loaded.state.network!, loaded.parameters)
        }
        let bytes: [UInt8]
        do { bytes = try RegularFile.read(path, limit: MemoryBudget.current().bytes / 2, what: "memory") } catch {
            throw CheckpointError(error.description)
        }
        let file = try SafeTensors.decode(bytes, path: path)
        guard let text = file.metadata["network"],
              let network = try? JSON.decoder().decode(NetworkConfiguration.self, from: Data(text.utf8))
        else { throw CheckpointError("\(path): no Shardwise network description in its __metadata__") }
        let layout = try TrainingRun.layout(of: network, in: "\(path) (__metadata__)")
        return (network, try Checkpoint.flatten(file.tensors, layout: layout, prefix: "", path: path))
    }
}
