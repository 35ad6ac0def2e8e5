import ArgumentParser
import Shardwise
import ShardwiseApp

/// Refuses a path flag given as '' (a shell variable left unset), naming the flag, before
/// anything reads or writes ("error: : cannot open" named nothing).
func requirePaths(_ paths: KeyValuePairs<String, String?>) throws {
    for (flag, value) in paths where value?.allSatisfy(\.isWhitespace) == true {
        throw ValidationError("\(flag): '\(value ?? "")' is empty, expected a path")
    }
}

/// How a data file is read: which arrays or columns are the features and the target.
/// Shared by train, sweep, eval and predict.
struct FileFlags: ParsableArguments {
    @Option(help: "NPZ or safetensors: the features' array (default: x, X, features, data, inputs or images).")
    var features: String?

    @Option(help: "NPZ or safetensors: the labels' array (default: y, Y, labels, targets or target); with a features .npy as --data, the labels' .npy file.")
    var labels: String?

    @Option(help: "CSV: the target column's name (default: the last column).")
    var labelColumn: String?

    @Option(help: "CSV: columns to leave out, comma-separated names.")
    var ignoreColumns: String?

    @Option(help: "CSV: folder for the parsed copies of CSV files (default: .shardwise-cache beside the CSV).")
    var cacheDir: String?

    func apply(to options: inout DataOptions) {
        options.request.featuresName = features
        options.request.labelsName = labels
        options.request.labelColumn = labelColumn
        options.request.ignoredColumns = ignoreColumns.map { $0.split(separator: ",").map(String.init) } ?? []
        options.cacheFolder = cacheDir
    }
}

/// The training data's extra flags: separate test and validation files, the task, the
/// preprocessing and a held-out test fraction.
struct DataFlags: ParsableArguments {
    @OptionGroup var file: FileFlags

    @Option(help: "A test file of the same kind as --data (evaluated after every epoch).")
    var testData: String?

    @Option(help: "A validation file of the same kind as --data (for --early-stopping), instead of --validation N.")
    var validationData: String?

    @Option(help: "Hold out this fraction of --data as the test set, chosen by the seed (when no --test-data is given).")
    var testFraction: Double?

    @Option(help: "classification or regression (default: integer labels are classes, other values are targets).")
    var task: String?

    @Option(help: "Input preprocessing, computed on the training samples: none, standard, minmax or scale:K (default: scale:255 for 8-bit features, none otherwise).")
    var normalize: String?

    @Option(help: "--data is text for a language model: char (one id per distinct character) or bytes (the 256 byte values); or uint16, ids tokenized elsewhere (nanoGPT's train.bin, llm.c's .bin), mapped. The last --test-fraction (default 0.1) is the test set, or --test-data (uint16).")
    var tokenizer: String?

    @Option(help: "With --tokenizer uint16: the token ids' count (default: the largest id in --data, plus one).")
    var vocabularySize: Int?

    @Option(help: "A language model's window: T tokens in, the next token of each out (the model's input length).")
    var context: Int?

    func validate() throws {
        try requirePaths(["--test-data": testData, "--validation-data": validationData])
        if let task, TrainingTask(rawValue: task) == nil {
            throw ValidationError("--task: '\(task)', expected classification or regression")
        }
        if let testFraction, !(testFraction > 0 && testFraction < 1) {
            throw ValidationError("--test-fraction: \(testFraction), expected a fraction between 0 and 1")
        }
        if let normalize {
            let valid = ["none", "standard", "minmax"].contains(normalize)
                || (normalize.hasPrefix("scale:") && Float(normalize.dropFirst(6)).map { $0.isFinite && $0 > 0 } == true)
            if !valid { throw ValidationError("--normalize: '\(normalize)', expected none, standard, minmax or scale:K with K > 0") }
        }
        if testData != nil && testFraction != nil {
            throw ValidationError("--test-fraction: a test file is given (--test-data); use one or the other")
        }
        if let tokenizer, Vocabulary.Kind(rawValue: tokenizer) == nil {
            throw ValidationError("--tokenizer: '\(tokenizer)', expected char, bytes or uint16")
        }
        if let vocabularySize {
            guard tokenizer == "uint16" else { throw ValidationError("--vocabulary-size: the ids' count is for --tokenizer uint16") }
            guard (1...Vocabulary.maxSize).contains(vocabularySize) else { throw ValidationError("--vocabulary-size: \(vocabularySize), expected 1 to \(Vocabulary.maxSize) (16-bit ids)") }
        }
        if let context {
            guard tokenizer != nil else { throw ValidationError("--context: a window of tokens needs --tokenizer (text data)") }
            guard context > 0, context <= 1 << 20 else { throw ValidationError("--context: \(context), expected 1 to 1048576 tokens") }
        }
    }

    func apply(to options: inout DataOptions) {
        file.apply(to: &options)
        options.testPath = testData
        options.validationPath = validationData
        options.testFraction = testFraction
        options.request.task = task.flatMap(TrainingTask.init(rawValue:))
        options.normalize = normalize
        options.tokenizer = tokenizer.flatMap(Vocabulary.Kind.init(rawValue:))
        options.context = context
        options.vocabularySize = vocabularySize
    }
}
