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

struct GenerateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "generate",
        abstract: "Continue a text with a language model trained with --tokenizer, streaming the characters as they are drawn.",
        discussion: "Each token is drawn from the softmax of the logits divided by --temperature (0: always the likeliest), kept to the --top-k likeliest, with the seed's random stream: the same seed gives the same text on any machine.")

    @Option(help: "A checkpoint folder, a folder of checkpoints (the newest valid one is used), or a model.safetensors.")
    var checkpoint: String

    @Option(help: "The text to continue.")
    var prompt = "\n"

    @Option(help: "Tokens to generate.")
    var tokens = 500

    @Option(help: "Divides the logits: below 1 sharper, above 1 more varied, 0 the likeliest token each time.")
    var temperature = 1.0

    @Option(help: "Draw only from the K likeliest tokens (default: all).")
    var topK: Int?

    @Option(help: "The random stream's seed.")
    var seed: UInt64 = 1

    func validate() throws {
        try requirePaths(["--checkpoint": checkpoint])
        guard (1...1_000_000).contains(tokens) else { throw ValidationError("--tokens: \(tokens), expected 1 to 1000000") }
        guard temperature.isFinite, temperature >= 0, temperature <= 100 else { throw ValidationError("--temperature: \(temperature), expected a number from 0 to 100") }
        if let topK, topK < 1 { throw ValidationError("--top-k: \(topK), expected at least 1") }
    }

    func run() throws {
        _ = try Generation.run(checkpoint: checkpoint, Generation.Settings(prompt: prompt, tokens: tokens, temperature: temperature, topK: topK, seed: seed)) { piece in
            FileHandle.standardOutput.write(Data(piece.utf8))
        }
        FileHandle.standardOutput.write(Data("\n".utf8))
    }
}
