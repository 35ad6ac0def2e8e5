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
        return parts.map { $0.contains(" ") ? "'\($0)'" : $0 }.joined(separator: " ")
    }

    /// Whether the data is MNIST's IDX folder (the default when no `--data` names a file).
    public var isMNIST: Bool {
        guard let path else { return true }
        var isFolder: ObjCBool = false
        return FileManager.default.fileExists(atPath: path, isDirectory: &isFolder) && isFolder.boolValue
    }
}

/// The samples of a run: training, and the test and validation sets when there are any.
public struct RunData: Sendable {
    public var train: Dataset
    public var test: Dataset?
    public var validation: Dataset?
    /// Where the training samples came from (a folder or a file), for summaries.
    public var origin: String
}

public enum DataSource {
    /// Loads, splits and preprocesses a run's data. `validationSamples` (`--validation N`)
    /// are held out by the trainer, and preprocessing statistics are computed without them.
    public static func load(
        _ options: DataOptions, trainLimit: Int?, testLimit: Int?, seed: UInt64, validationSamples: Int?,
        pool: WorkerPool, console: Console
    ) async throws -> RunData {
        var data: RunData
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
        if let trainLimit { data.train = data.train.prefix(trainLimit) }
        if let testLimit, let test = data.test { data.test = test.prefix(testLimit) }
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

    /// "standard", "scale:255", "as stored" (MNIST: "pixels / 255", done as the IDX files load).
    public static func describe(_ preprocessing: Preprocessing, mnist: Bool) -> String {
        preprocessing.kind != "none" ? preprocessing.kind : mnist ? "pixels / 255" : "as stored"
    }

    /// "classification, 10 classes" or "regression, 1 target", for the first line of a run.
    public static func describe(_ data: Dataset) -> String {
        data.task == .classification
            ? "classification, \(data.classes) classes" : "regression, \(data.targetWidth) target\(data.targetWidth == 1 ? "" : "s") (RMSE, MAE)"
    }
}
