import Foundation
import Shardwise

/// A trained model read back for evaluation or prediction: its network, parameters, task
/// and the preprocessing its inputs had in training.
public struct SavedModel: Sendable {
    public var network: NetworkConfiguration
    public var parameters: [Float]
    public var task: TrainingTask
    public var preprocessing: Preprocessing
    /// Where it was read from.
    public var path: String
    /// A language model's: how its token ids map to text.
    public var vocabulary: Vocabulary?

    /// A model from a checkpoint folder (or a folder of them), or a bare `model.safetensors`
    /// whose metadata holds the network description.
    public static func load(_ path: String) throws(CheckpointError) -> SavedModel {
        var isFolder: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isFolder) else {
            throw CheckpointError("\(path): no such checkpoint (expected a checkpoint folder, a folder of them, or a model.safetensors)")
        }
        if isFolder.boolValue {
            // A checkpoint folder (any of its files present), or a run's folder of them.
            let isCheckpoint = ["SHA256SUMS", "state.json", "model.safetensors"].contains { access("\(path)/\($0)", F_OK) == 0 }
            let folder = isCheckpoint ? path : try Checkpoint.newest(in: path)
            let loaded = try TrainingRun.loadCheckpoint(folder)
            return SavedModel(
                network: loaded.state.network!, parameters: loaded.parameters, task: loaded.state.task ?? .classification,
                preprocessing: loaded.state.preprocessing ?? .none, path: folder, vocabulary: loaded.state.vocabulary)
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
        var preprocessing = Preprocessing.none
        if let json = file.metadata["preprocessing"] {
            guard let decoded = try? JSON.decoder().decode(Preprocessing.self, from: Data(json.utf8)) else {
                throw CheckpointError("\(path): __metadata__ preprocessing is not a Shardwise preprocessing")
            }
            preprocessing = decoded
            if let problem = decoded.problem { throw CheckpointError("\(path): __metadata__ \(problem)") }
        }
        let task = file.metadata["task"].flatMap(TrainingTask.init(rawValue:)) ?? .classification
        var vocabulary: Vocabulary?
        if let json = file.metadata["vocabulary"] {
            guard let decoded = try? JSON.decoder().decode(Vocabulary.self, from: Data(json.utf8)) else {
                throw CheckpointError("\(path): __metadata__ vocabulary is not a Shardwise vocabulary")
            }
            if let problem = decoded.problem { throw CheckpointError("\(path): __metadata__ vocabulary: \(problem)") }
            vocabulary = decoded
        }
        return SavedModel(
            network: network, parameters: try Checkpoint.flatten(file.tensors, layout: layout, prefix: "", path: path),
            task: task, preprocessing: preprocessing, path: path, vocabulary: vocabulary)
    }

    /// Checks that `data` fits this model: features, and classes or targets.
    func check(_ data: Dataset) throws {
        guard data.features == network.inputSize else {
            throw RunError("\(data.source): \(data.features) features per sample, the model in \(path) takes \(network.inputSize)")
        }
        if let shift = preprocessing.shift, shift.count != data.features {
            throw RunError("\(path): preprocessing of \(shift.count) features, the data has \(data.features)")
        }
        guard data.targets != nil else { return }
        if task == .classification, data.classes > network.outputSize {
            throw RunError("\(path): the model gives \(network.outputSize) outputs, the data (\(data.source)) has \(data.classes) classes")
        }
        if task == .regression, data.targetWidth != network.outputSize {
            throw RunError("\(path): the model gives \(network.outputSize) outputs, the data (\(data.source)) has \(data.targetWidth) targets per sample")
        }
    }

    /// Runs the model over `data` (dropout off; with `passes`, dropout on for each of that many
    /// passes, pass t drawing from the streams of step t), calling `body(first row, rows,
    /// outputs)` for every batch of every pass.
    func forEachOutput(
        _ data: Dataset, passes: Int?, seed: UInt64, _ body: (_ pass: Int, _ start: Int, _ rows: Int, _ outputs: UnsafePointer<Float>) -> Void
    ) throws {
        let compiled: Network
        do {
            let loss = try network.lossFunction() ?? (task == .classification ? SoftmaxCrossEntropy() : MeanSquaredError())
            compiled = try Network(network.model(), inputShape: network.sampleShape, loss: loss)
        } catch {
            throw RunError("\(path): \(error)")
        }
        if let problem = compiled.categoricalProblem(in: data) { throw RunError(problem) }
        if let problem = MemoryEstimate.inferenceProblem(network: compiled, rows: 256) { throw RunError("\(path): \(problem)") }
        let weights = FloatBuffer(count: compiled.layout.count)
        parameters.withUnsafeBufferPointer { weights.pointer.update(from: $0.baseAddress!, count: $0.count) }
        let ws = Workspace(network: compiled, capacity: 256)
        for t in 0..<(passes ?? 1) {
            let random: (Int) -> RandomContext? = passes == nil ? { _ in nil } : { RandomContext(seed: seed, step: UInt32(t), firstPosition: $0) }
            compiled.forEachBatch(of: data, rows: 0..<data.count, parameters: weights.pointer, workspace: ws, random: random) { start, n in
                body(t, start, n, ws.output)
            }
        }
    }
}

/// `shardwise eval`: test error and confusion matrix (classification) or RMSE and MAE
/// (regression) of a saved model, and Monte Carlo dropout (Gal and Ghahramani 2016):
/// dropout kept on, T stochastic passes averaged into a predictive distribution.
public struct EvaluationReport: Sendable {
    public var task: TrainingTask
    /// Classification: percent of samples misclassified; regression: nil.
    public var errorPercent: Double?
    /// Regression: RMSE and MAE.
    public var rmse: Double?
    public var mae: Double?
    /// confusion[true class][predicted class] (classification).
    public var confusion: [[Int]]
    public var samples: Int
    /// With --mc-dropout: the error of the averaged prediction (classification: percent;
    /// regression: RMSE of the predictive mean), the mean entropy (nats) of the averaged
    /// distribution (regression: the mean predictive variance), and that mean over the samples
    /// it gets right and over those it gets wrong (classification).
    public var monteCarlo: (passes: Int, errorPercent: Double, meanEntropy: Double, entropyCorrect: Double, entropyWrong: Double)?
    /// A language model's: the mean loss a token (nats) over the windows, each `context` tokens.
    public var loss: Double?
    public var context: Int?
}

public enum Evaluation {
    public static func run(
        checkpoint: String, data options: DataOptions = DataOptions(), testLimit: Int? = nil, mcDropoutPasses: Int? = nil, seed: UInt64 = 1
    ) async throws -> EvaluationReport {
        MatrixKernels.fallBackWithoutBLAS()
        let model: SavedModel
        do { model = try SavedModel.load(checkpoint) } catch { throw RunError(error.description) }
        if let vocabulary = model.vocabulary { return try languageModel(model, vocabulary: vocabulary, data: options, testLimit: testLimit) }
        var test: Dataset
        if options.isMNIST {
            do { test = try MNIST.load(directory: options.path, features: model.network.inputSize).test } catch {
                throw RunError("\(error.description) (the model in \(checkpoint) takes \(model.network.inputSize) inputs)")
            }
        } else {
            var request = options
            request.request.task = model.task
            test = try await DataSource.file(options.path!, request, pool: nil, console: .silent)
        }
        if let testLimit { test = test.prefix(testLimit) }
        test.preprocessing = model.preprocessing
        try model.check(test)
        return model.task == .classification
            ? try classify(model, test, mcDropoutPasses: mcDropoutPasses, seed: seed)
            : try regress(model, test, mcDropoutPasses: mcDropoutPasses, seed: seed)
    }

    /// A language model on a text (or a file of its ids): the windows every T tokens of the whole
    /// file (`--data`), tokenized with the model's vocabulary; the mean cross-entropy over every
    /// token of them and the error per token.
    static func languageModel(_ model: SavedModel, vocabulary: Vocabulary, data options: DataOptions, testLimit: Int?) throws -> EvaluationReport {
        guard let path = options.path else { throw RunError("--data: a language model is evaluated on a text (or a file of its token ids), expected --data FILE") }
        let t = model.network.inputSize, v = vocabulary.size
        var test: Dataset
        do {
            let stream = try TokenStream.text(path, tokenizer: vocabulary.kind, vocabulary: vocabulary)
            test = try stream.windows(0..<stream.count, context: t, stride: t)
        } catch { throw RunError(error.description) }
        if let testLimit { test = test.prefix(testLimit) }
        guard model.network.outputSize == t * v else {
            throw RunError("\(model.path): the model gives \(model.network.outputSize) outputs, expected \(t) positions of \(v) token logits")
        }
        var loss = 0.0, errors = 0
        var labels = [Int32](repeating: 0, count: t)
        try model.forEachOutput(test, passes: nil, seed: 1) { _, start, n, out in
            for r in 0..<n {
                test.copyLabels(start + r, into: &labels)
                for p in 0..<t {
                    let z = out + (r * t + p) * v, best = argmax(z, count: v), top = Double(z[best])
                    var sum = 0.0
                    for c in 0..<v { sum += PortableMath.exp(Double(z[c]) - top) }
                    loss += top + PortableMath.log(sum) - Double(z[Int(labels[p])])
                    if best != Int(labels[p]) { errors += 1 }
                }
            }
        }
        let tokens = Double(test.count * t)
        var report = EvaluationReport(task: .classification, errorPercent: 100 * Double(errors) / tokens, confusion: [], samples: test.count)
        (report.loss, report.context) = (loss / tokens, t)
        return report
    }

    static func classify(_ model: SavedModel, _ test: Dataset, mcDropoutPasses: Int?, seed: UInt64) throws -> EvaluationReport {
        let classes = model.network.outputSize
        var confusion = [[Int]](repeating: [Int](repeating: 0, count: classes), count: classes)
        try model.forEachOutput(test, passes: nil, seed: seed) { _, start, n, out in
            for r in 0..<n { confusion[Int(test.label(start + r))][argmax(out + r * classes, count: classes)] += 1 }
        }
        let errors = test.count - (0..<classes).reduce(0) { $0 + confusion[$1][$1] }
        var report = EvaluationReport(
            task: .classification, errorPercent: 100 * Double(errors) / Double(test.count), confusion: confusion, samples: test.count)
        if let passes = mcDropoutPasses {
            let p = try Prediction.meanProbabilities(model, test, passes: passes, seed: seed)
            var mcErrors = 0
            var entropyRight = 0.0, entropyWrong = 0.0
            for i in 0..<test.count {
                let row = p[i * classes..<(i + 1) * classes]
                let predicted = row.indices.max { row[$0] < row[$1] }! - i * classes
                let h = -row.reduce(0) { $0 + ($1 > 0 ? $1 * log($1) : 0) }
                if predicted != Int(test.label(i)) {
                    mcErrors += 1
                    entropyWrong += h
                } else {
                    entropyRight += h
                }
            }
            let right = test.count - mcErrors
            report.monteCarlo = (
                passes, 100 * Double(mcErrors) / Double(test.count), (entropyRight + entropyWrong) / Double(test.count),
                right > 0 ? entropyRight / Double(right) : 0, mcErrors > 0 ? entropyWrong / Double(mcErrors) : 0)
        }
        return report
    }

    static func regress(_ model: SavedModel, _ test: Dataset, mcDropoutPasses: Int?, seed: UInt64) throws -> EvaluationReport {
        let width = model.network.outputSize
        let target = UnsafeMutablePointer<Float>.allocate(capacity: width)
        defer { target.deallocate() }
        func errors(_ predictions: [Double]) -> (rmse: Double, mae: Double) {
            var squared = 0.0, absolute = 0.0
            for i in 0..<test.count {
                test.copyTargets(i, into: target, normalized: false)
                for j in 0..<width {
                    let d = predictions[i * width + j] - Double(target[j])
                    squared += d * d
                    absolute += abs(d)
                }
            }
            let n = Double(test.count * width)
            return ((squared / n).squareRoot(), absolute / n)
        }
        let plain = errors(try Prediction.meanAndVariance(model, test, passes: nil, seed: seed).mean)
        var report = EvaluationReport(task: .regression, rmse: plain.rmse, mae: plain.mae, confusion: [], samples: test.count)
        if let passes = mcDropoutPasses {
            let (mean, variance) = try Prediction.meanAndVariance(model, test, passes: passes, seed: seed)
            report.monteCarlo = (passes, errors(mean).rmse, variance.reduce(0, +) / Double(variance.count), 0, 0)
        }
        return report
    }
}
