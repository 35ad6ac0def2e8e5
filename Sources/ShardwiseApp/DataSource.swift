import Foundation
import Shardwise

/// Where a run's samples come from: the MNIST folder (the default) or the user's own files
/// in any format Shardwise reads, and how they are split and preprocessed.
public struct DataOptions: Sendable {
    /// `--data`: an MNIST folder, or a data file (NPY pair, NPZ, safetensors, CSV).
    public var path: String?
    /// `--test-data`, `--validation-data`: separate files of the same kind.
    public var testPath: String?
    public var validationPath: String?
    /// Which arrays or columns hold the features and the targets, and the task.
    public var request = DataRequest()
    /// `--normalize`: none, standard, minmax or scale:K; nil: scale:255 for 8-bit features, none otherwise.
    public var normalize: String?
    /// `--test-fraction`: hold out this fraction of `path` as the test set (chosen by the seed).
    public var testFraction: Double?
    /// Where CSV files' parsed copies are kept (default: `.shardwise-cache` beside the CSV).
    public var cacheFolder: String?
    /// Which training samples a sweep's trial uses: a seeded subset, a fold held out.
    public var selection: DataSelection?
    /// The files already read (`DataSource.sources`): a sweep reads them once for all its
    /// trials, which share the samples' memory.
    public var loaded: RunData?
    /// `--tokenizer`: `--data` is text for a language model, tokenized by character or byte.
    public var tokenizer: Vocabulary.Kind?
    /// `--context`: a language model's window of tokens (its input length).
    public var context: Int?
    /// `--vocabulary-size`: pre-tokenized ids' count (default: the largest id found, plus one).
    public var vocabularySize: Int?

    public init(path: String? = nil) { self.path = path }

    /// The command-line flags that give these options (what a resumed run must be given again).
    public var flags: String {
        var parts: [String] = []
        func add(_ flag: String, _ value: String?) { if let value { parts += [flag, value] } }
        add("--data", path)
        add("--test-data", testPath)
        add("--validation-data", validationPath)
        add("--test-fraction", testFraction.map { "\($0)" })
        add("--normalize", normalize)
        add("--task", request.task?.rawValue)
        add("--features", request.featuresName)
        add("--labels", request.labelsName)
        add("--label-column", request.labelColumn)
        add("--ignore-columns", request.ignoredColumns.isEmpty ? nil : request.ignoredColumns.joined(separator: ","))
        add("--cache-dir", cacheFolder)
        add("--tokenizer", tokenizer?.rawValue)
        add("--context", context.map(String.init))
        add("--vocabulary-size", vocabularySize.map(String.init))
        return parts.map { $0.contains(" ") ? "'\($0)'" : $0 }.joined(separator: " ")
    }

    /// Whether the data is MNIST's IDX folder (the default when no `--data` names a file).
    public var isMNIST: Bool {
        guard let path else { return true }
        var isFolder: ObjCBool = false
        return FileManager.default.fileExists(atPath: path, isDirectory: &isFolder) && isFolder.boolValue
    }
}

/// A sweep trial's samples, chosen from the training data by the sweep's seed, in this order:
/// `validationSamples` held out (the same ones for every trial), then a subset of
/// `trainSamples` of the rest (a smaller subset inside a larger one), then, with `folds`,
/// fold `fold` held out as the validation set and the others trained on.
public struct DataSelection: Codable, Sendable, Equatable, CustomStringConvertible {
    public var seed: UInt64
    public var validationSamples: Int?
    public var trainSamples: Int?
    public var fold: Int?
    public var folds: Int?

    public init(seed: UInt64, validationSamples: Int? = nil, trainSamples: Int? = nil, fold: Int? = nil, folds: Int? = nil) {
        self.seed = seed
        self.validationSamples = validationSamples
        self.trainSamples = trainSamples
        self.fold = fold
        self.folds = folds
    }

    /// Whether it gives the run its validation set.
    public var givesValidation: Bool { fold != nil || (validationSamples ?? 0) > 0 }

    /// "fold 2 of 5, a subset of 1000, seed 1".
    public var description: String {
        var parts: [String] = []
        if let n = validationSamples, fold == nil { parts.append("\(n) validation samples held out") }
        if let n = trainSamples { parts.append("a subset of \(n) training samples") }
        if let fold, let folds { parts.append("fold \(fold + 1) of \(folds) held out") } else if let folds { parts.append("all \(folds) folds trained on") }
        return parts.joined(separator: ", ") + " (seed \(seed))"
    }

    /// Chooses the samples; the errors name the sweep flag that asked for too many.
    public func apply(to data: inout RunData) throws {
        if let n = validationSamples, n > 0, fold == nil {
            guard n < data.train.count else {
                throw RunError("--validation-samples: \(n) of \(data.train.count) training samples leaves none to train on")
            }
            (data.train, data.validation) = data.train.split(holdingOut: n, seed: seed, purpose: .validationSplit)
        }
        if let n = trainSamples {
            guard n <= data.train.count else {
                throw RunError("--train-samples: \(n), but \(data.train.count) training samples are available\((validationSamples ?? 0) > 0 && fold == nil ? " after the \(validationSamples!) validation samples" : ""); expected at most \(data.train.count)")
            }
            data.train = data.train.seededSubset(n, seed: seed)
        }
        if let fold, let folds {
            guard folds >= 2, folds <= data.train.count / 2 else {
                throw RunError("--folds: \(folds) folds of \(data.train.count) training samples, expected 2 to \(data.train.count / 2) (at least two samples a fold)")
            }
            (data.train, data.validation) = data.train.fold(fold, of: folds, seed: seed)
        }
    }
}

/// The samples of a run: training, and the test and validation sets when there are any.
public struct RunData: Sendable {
    public var train: Dataset
    public var test: Dataset?
    public var validation: Dataset?
    /// Where the training samples came from (a folder or a file), for summaries.
    public var origin: String

    public init(train: Dataset, test: Dataset? = nil, validation: Dataset? = nil, origin: String) {
        self.train = train
        self.test = test
        self.validation = validation
        self.origin = origin
    }
}

public enum DataSource {
    /// Loads, splits and preprocesses a run's data. `validationSamples` (`--validation N`)
    /// are held out by the trainer, and preprocessing statistics are computed without them.
    public static func load(
        _ options: DataOptions, trainLimit: Int?, testLimit: Int?, seed: UInt64, validationSamples: Int?,
        pool: WorkerPool, console: Console
    ) async throws -> RunData {
        var data: RunData
        if let loaded = options.loaded { data = loaded } else { data = try await sources(options, seed: seed, pool: pool, console: console) }
        if let trainLimit { data.train = data.train.prefix(trainLimit) }
        if let testLimit, let test = data.test { data.test = test.prefix(testLimit) }
        if let selection = options.selection {
            guard options.validationPath == nil || !selection.givesValidation else {
                throw RunError("--validation-data: a validation file is given, but the sweep holds out its own (\(selection)); use one or the other")
            }
            try selection.apply(to: &data)
        }
        // Statistics from the samples trained on: not the test set, not the validation split.
        var fitted = data.train
        if let n = validationSamples, n > 0, n < fitted.count { fitted = fitted.splitValidation(count: n, seed: seed).train }
        let name = options.normalize ?? (data.train.inputs.type == .uint8 ? "scale:255" : "none")
        let preprocessing: Preprocessing
        do { preprocessing = try Preprocessing.fitted(name, on: fitted) } catch { throw RunError(error.description) }
        data.train.preprocessing = preprocessing
        data.test?.preprocessing = preprocessing
        data.validation?.preprocessing = preprocessing
        return data
    }

    /// Reads the files (or the MNIST folder) and splits off `--test-fraction` (seeded by `seed`):
    /// the samples before any limit, selection or preprocessing.
    public static func sources(_ options: DataOptions, seed: UInt64, pool: WorkerPool, console: Console) async throws -> RunData {
        var data: RunData
        if let tokenizer = options.tokenizer {
            return try tokens(options, tokenizer: tokenizer, console: console)
        }
        if options.isMNIST {
            let mnist: MNIST
            do { mnist = try MNIST.load(directory: options.path) } catch { throw RunError(error.description) }
            if options.request.task == .regression { throw RunError("--task regression: MNIST's labels are classes") }
            data = RunData(train: mnist.train, test: options.testFraction == nil ? mnist.test : nil, origin: mnist.directory)
        } else {
            data = RunData(train: try await file(options.path!, options, pool: pool, console: console), origin: options.path!)
            if data.train.task == .classification, data.train.classes < 2 {
                throw RunError("\(options.path!): every label is \(data.train.classes - 1): one class, expected at least two to classify (or --task regression)")
            }
        }
        if let testPath = options.testPath {
            guard options.testFraction == nil else { throw RunError("--test-fraction: a test file is given (--test-data); use one or the other") }
            data.test = try await file(testPath, options, pool: pool, console: console, like: data.train)
        } else if let fraction = options.testFraction {
            guard fraction > 0 && fraction < 1 else { throw RunError("--test-fraction: \(fraction), expected a fraction between 0 and 1") }
            let held = Int((Double(data.train.count) * fraction).rounded())
            guard held > 0, held < data.train.count else {
                throw RunError("--test-fraction: \(fraction) of \(data.train.count) samples holds out \(held), expected at least one sample on each side")
            }
            (data.train, data.test) = data.train.split(holdingOut: held, seed: seed, purpose: .testSplit)
        }
        if let path = options.validationPath {
            data.validation = try await file(path, options, pool: pool, console: console, like: data.train)
        }
        return data
    }

    /// A data file (any format but the MNIST folder); with `like`, checked to fit the training data.
    public static func file(_ path: String, _ options: DataOptions, pool: WorkerPool?, console: Console, like train: Dataset? = nil, needsTargets: Bool = true) async throws -> Dataset {
        var request = options.request
        request.needsTargets = needsTargets
        if let train {
            request.task = train.task
            // A labels *file* belongs to --data; test and validation files give theirs as X.npy,Y.npy.
            if let labels = request.labelsName, labels.hasSuffix(".npy") || labels.contains("/") { request.labelsName = nil }
        }
        let set: Dataset
        do {
            let format = path.contains(",") ? DataFormat.npy : try DataFormat.detect(path)
            switch format {
            case .mnistFolder:
                let mnist = try MNIST.load(directory: path)
                set = path == options.testPath ? mnist.test : mnist.train
            case .csv:
                set = try await CSVCache.load(path, request: request, pool: pool, cacheFolder: options.cacheFolder, console: console)
            case .npy, .npz, .safetensors:
                set = try Dataset.load(binary: path, request: request)
            }
        } catch let error as DataError { throw RunError(error.description) }
        if let train {
            guard set.features == train.features else {
                throw RunError("\(path): \(set.features) features per sample, the training data (\(train.source)) has \(train.features); expected the same")
            }
            if set.task == .classification, set.targets != nil, set.classes > train.classes {
                throw RunError("\(path): labels up to \(set.classes - 1), the training data has \(train.classes) classes (0...\(train.classes - 1))")
            }
            if set.task == .regression, set.targets != nil, set.targetWidth != train.targetWidth {
                throw RunError("\(path): \(set.targetWidth) targets per sample, the training data has \(train.targetWidth)")
            }
        }
        return set
    }

    /// A language model's samples from the text at `--data`: the ids of its first part's windows
    /// of `--context` + 1 tokens to train on, and the last `--test-fraction` (default 0.1) of the
    /// ids, a contiguous tail no training window reaches, as the test set: its windows every
    /// `--context` tokens, a fixed set that covers it once. Pre-tokenized ids (`--tokenizer
    /// uint16`) may give their test ids in a file of their own (`--test-data val.bin`): then all of
    /// `--data` trains.
    static func tokens(_ options: DataOptions, tokenizer: Vocabulary.Kind, console: Console) throws -> RunData {
        guard let path = options.path else { throw RunError("--tokenizer: give the text to train on with --data FILE") }
        guard let context = options.context else { throw RunError("--tokenizer: give the model's window with --context T (its input length)") }
        guard options.validationPath == nil, options.testPath == nil || tokenizer == .uint16 else {
            throw RunError("--tokenizer: the test tokens are the text's tail (--test-fraction); --test-data takes a file of pre-tokenized ids (--tokenizer uint16)")
        }
        let started = monotonicSeconds()
        let stream: TokenStream
        let given = options.vocabularySize.map(Vocabulary.ids)
        do { stream = try TokenStream.text(path, tokenizer: tokenizer, vocabulary: given) } catch { throw RunError(error.description) }
        var train: Dataset, test: Dataset, described: String
        if let testPath = options.testPath {
            do {
                let held = try TokenStream.binary(testPath, vocabularySize: stream.vocabulary.size)
                train = try stream.windows(0..<stream.count, context: context)
                test = try held.windows(0..<held.count, context: context, stride: context)
            } catch { throw RunError(error.description) }
            described = "all to train on; \(testPath) to test"
        } else {
            let fraction = options.testFraction ?? 0.1
            let held = Int((Double(stream.count) * fraction).rounded())
            let split = stream.count - held
            do {
                train = try stream.windows(0..<split, context: context)
                test = try stream.windows(split..<stream.count, context: context, stride: context)
            } catch { throw RunError("\(error.description) (--test-fraction \(fraction) holds out the last \(held) of \(stream.count) tokens)") }
            described = "\(split) to train on, the last \(held) to test"
        }
        train.vocabulary = stream.vocabulary
        test.vocabulary = stream.vocabulary
        console.line(String(format: "%@: %d tokens (%@) in %.2f s; %@", path, stream.count, stream.vocabulary.description, monotonicSeconds() - started, described))
        return RunData(train: train, test: test, origin: path)
    }

    /// "standard", "scale:255", "as stored" (MNIST: "pixels / 255", done as the IDX files load).
    public static func describe(_ preprocessing: Preprocessing, mnist: Bool) -> String {
        preprocessing.kind != "none" ? preprocessing.kind : mnist ? "pixels / 255" : "as stored"
    }

    /// "classification, 10 classes" or "regression, 1 target", for the first line of a run.
    public static func describe(_ data: Dataset) -> String {
        if let vocabulary = data.vocabulary { return "language model, \(vocabulary), windows of \(data.features) tokens" }
        return data.task == .classification
            ? "classification, \(data.classes) classes" : "regression, \(data.targetWidth) target\(data.targetWidth == 1 ? "" : "s") (RMSE, MAE)"
    }
}
