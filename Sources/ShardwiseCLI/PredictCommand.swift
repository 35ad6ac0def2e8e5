import ArgumentParser
import Foundation
import Shardwise
import ShardwiseApp

struct PredictCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "predict",
        abstract: "Write a checkpoint's predictions for every sample of a data file (CSV or NPY).",
        discussion: "Classification: columns class, p0..pC-1 (probabilities); regression: prediction (or prediction0..). With --mc-dropout T, the mean of T dropout passes and its entropy (classification) or variance (regression). A CSV to predict may lack the target column.")

    @Option(help: "A checkpoint folder, a folder of checkpoints (the newest valid one is used), or a model.safetensors.")
    var checkpoint: String

    @Option(help: "The samples: a file of the training data's kind (CSV, NPY, NPZ, safetensors), or an MNIST folder (its test set).")
    var data: String?

    @OptionGroup var file: FileFlags

    @Option(help: "Where to write the predictions: a .csv or .npy file.")
    var out: String

    @Option(help: "Keep dropout on and average T stochastic passes (Gal and Ghahramani 2016).")
    var mcDropout: Int?

    @Option(help: "Seed of the Monte Carlo dropout masks.")
    var seed: UInt64 = 1

    func validate() throws {
        try requirePaths(["--out": out, "--checkpoint": checkpoint, "--data": data])
        if let mcDropout, !(1...10_000).contains(mcDropout) {
            throw ValidationError("--mc-dropout: \(mcDropout), expected 1 to 10000 passes")
        }
        if !(out.hasSuffix(".csv") || out.hasSuffix(".npy")) {
            throw ValidationError("--out: '\(out)', expected a file name ending in .csv or .npy")
        }
    }

    func run() async throws {
        var options = DataOptions(path: data)
        file.apply(to: &options)
        let rows = try await Prediction.run(checkpoint: checkpoint, data: options, out: out, mcDropoutPasses: mcDropout, seed: seed)
        print("\(rows) predictions written to \(out)")
    }
}

struct InspectCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inspect",
        abstract: "What Shardwise sees in a data file: samples, features, types, labels and the memory it takes.")

    @Argument(help: "A data file (CSV, NPZ, safetensors, FEATURES.npy,LABELS.npy or one NPY) or an MNIST folder.")
    var path: String

    @OptionGroup var file: FileFlags

    @Option(help: "classification or regression (default: inferred from the labels).")
    var task: String?

    func run() async throws {
        var options = DataOptions(path: path)
        file.apply(to: &options)
        options.request.task = task.flatMap(TrainingTask.init(rawValue:))
        for line in try await DataInspection.describe(options, console: .standard) { print(line) }
    }
}

struct ExportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export",
        abstract: "Write a checkpoint's network as an ONNX model (opset 17) for ONNX Runtime and other engines.",
        discussion: "Input 'input' takes samples as the data reader gave them in training (batch dimension 'batch'): an own data file's values as stored; an MNIST folder's pixels divided by 255, as its reader divides them. The --normalize preprocessing is part of the graph. Outputs: 'logits' and 'probabilities' (classification) or 'prediction' (regression).")

    @Option(help: "A checkpoint folder, a folder of checkpoints (the newest valid one is used), or a model.safetensors.")
    var checkpoint: String

    @Option(help: "The ONNX file to write.")
    var onnx: String

    func run() throws {
        do { try AtomicFile.checkReplaceable(onnx) } catch { throw RunError("--onnx \(error.description)") }
        let model: SavedModel
        do { model = try SavedModel.load(checkpoint) } catch { throw RunError(error.description) }
        let bytes = try ONNXExport.model(model)
        do { try AtomicFile.write(bytes, to: onnx) } catch { throw RunError(error.description) }
        print("\(onnx): \(model.network.inputSize) inputs -> \(model.network.outputSize) outputs, \(bytes.count) bytes (ONNX opset 17)")
    }
}
