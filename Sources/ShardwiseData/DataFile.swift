#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The data formats Shardwise reads, told apart by their first bytes (not their names).
public enum DataFormat: String, Sendable, CaseIterable {
    /// A folder of the four MNIST IDX files (raw or gzip-compressed).
    case mnistFolder = "MNIST IDX folder"
    /// A NumPy array (`.npy`); a pair `features.npy,labels.npy` gives both.
    case npy = "NPY"
    /// A NumPy archive of arrays (`.npz`), stored or deflated.
    case npz = "NPZ"
    /// A safetensors file holding the features and the labels as two tensors.
    case safetensors
    /// Comma-separated numbers with a header row.
    case csv = "CSV"

    /// The format of the file or folder at `path`.
    public static func detect(_ path: String) throws(DataError) -> DataFormat {
        var info = stat()
        guard stat(path, &info) == 0 else { throw DataError(path: path, problem: "cannot be read (\(String(cString: strerror(errno))))") }
        if info.st_mode & S_IFMT == S_IFDIR { return .mnistFolder }
        let (fd, size) = try RegularFile.open(path)
        defer { close(fd) }
        guard size > 0 else { throw DataError(path: path, problem: "empty file (0 bytes), expected a data file") }
        var head = [UInt8](repeating: 0, count: 16)
        let n = head.withUnsafeMutableBytes { pread(fd, $0.baseAddress!, 16, 0) }
        let bytes = head.prefix(max(n, 0))
        if bytes.starts(with: NPY.magic) { return .npy }
        if bytes.starts(with: [0x50, 0x4B, 0x03, 0x04]) { return .npz }
        // Safetensors: an 8-byte little-endian header length, then the JSON header. A length
        // with a control byte in it is no text, so it is safetensors even when the length is
        // wrong (its reader then names the length), never a CSV whose bytes an error would echo.
        if bytes.count >= 9, bytes[8] == UInt8(ascii: "{") {
            let length = bytes.prefix(8).enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
            if length > 1, length <= UInt64(size - 8) { return .safetensors }
            if bytes.prefix(8).contains(where: { $0 < 0x09 }) { return .safetensors }
        }
        if bytes.starts(with: [0x1F, 0x8B]) || bytes.starts(with: [0, 0, 8]) {
            throw DataError(path: path, problem: "an IDX (or gzip) file; pass the folder that holds the four MNIST files")
        }
        return .csv
    }
}

/// What to read from a data file: which arrays or columns are the features and the targets.
public struct DataRequest: Sendable, Equatable {
    /// NPZ or safetensors: the features' array name (default `x`, else the first of `X`, `features`, `data`, `inputs`).
    public var featuresName: String?
    /// NPZ or safetensors: the labels' array name (default `y`, else the first of `Y`, `labels`, `targets`, `target`);
    /// beside a features NPY, the labels' NPY file.
    public var labelsName: String?
    /// CSV: the target column (default: the last).
    public var labelColumn: String?
    /// CSV: columns that are neither features nor target.
    public var ignoredColumns: [String] = []
    /// The task; nil: inferred (integer labels: classification; float: regression).
    public var task: TrainingTask?
    /// Whether the file must hold targets (training, evaluation) or may hold none (prediction).
    public var needsTargets = true
    /// Prediction: the model's input width. A CSV with exactly this many columns (after the
    /// ignored ones) is all features, with no target column.
    public var featuresOnly: Int?

    /// A request with every default.
    public init(featuresName: String? = nil, labelsName: String? = nil, labelColumn: String? = nil, ignoredColumns: [String] = [], task: TrainingTask? = nil) {
        self.featuresName = featuresName
        self.labelsName = labelsName
        self.labelColumn = labelColumn
        self.ignoredColumns = ignoredColumns
        self.task = task
    }

    static let featureNames = ["x", "X", "features", "data", "inputs", "images"]
    static let labelNames = ["y", "Y", "labels", "targets", "target"]
}

extension Dataset {
    /// The data set in the binary file (or pair of NPY files `features.npy,labels.npy`) at
    /// `path`: NPY, NPZ or safetensors, mapped and read in place. Integer labels make a
    /// classification and float labels a regression unless `request.task` says otherwise.
    public static func load(binary path: String, request: DataRequest) throws(DataError) -> Dataset {
        let parts = path.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
        if parts.count == 2 {
            let features = try npyTable(parts[0])
            let labels = try npyTable(parts[1])
            return try make(features, labels, request: request, source: parts[0], targetsSource: parts[1])
        }
        let format = try DataFormat.detect(path)
        switch format {
        case .npy:
            let features = try npyTable(path)
            // `--labels FILE.npy` beside a features NPY: the pair, as `FEATURES.npy,LABELS.npy`.
            if let labels = request.labelsName, labels.hasSuffix(".npy") || labels.contains("/") {
                return try make(features, try npyTable(labels), request: request, source: path, targetsSource: labels)
            }
            guard !request.needsTargets else {
                throw DataError(path: path, problem: "an NPY file holds one array (the features); give the labels too, as FEATURES.npy,LABELS.npy")
            }
            return try make(features, nil, request: request, source: path, targetsSource: nil)
        case .npz:
            let archive = try NPZ(path: path, bytes: TableBytes(mapping: path))
            let names = archive.members.map(\.name)
            let x = try pick(request.featuresName, from: names, defaults: DataRequest.featureNames, what: "features", flag: "--features", path: path)
            let y = try pickTargets(request, names: names, path: path)
            let labels: Table? = if let y { try archive.table(y).table } else { nil }
            return try make(archive.table(x).table, labels, request: request, source: path, targetsSource: nil)
        case .safetensors:
            let bytes = try TableBytes(mapping: path)
            let header = try SafeTensorsHeader(bytes.base, count: bytes.count, path: path)
            let names = header.entries.map(\.name)
            func table(_ name: String) throws(DataError) -> Table {
                let e = header.entries.first { $0.name == name }!
                let rows = e.shape.first ?? 1
                let columns = e.shape.count <= 1 ? 1 : CheckedSize.product(Array(e.shape.dropFirst()))!
                return try Table(rows: rows, columns: columns, type: e.type, bytes: bytes, offset: header.dataStart + e.begin, path: "\(path) (tensor '\(name)')")
            }
            let x = try pick(request.featuresName, from: names, defaults: DataRequest.featureNames, what: "features", flag: "--features", path: path)
            let y = try pickTargets(request, names: names, path: path)
            let labels: Table? = if let y { try table(y) } else { nil }
            return try make(table(x), labels, request: request, source: path, targetsSource: nil)
        case .csv, .mnistFolder:
            throw DataError(path: path, problem: "is \(format.rawValue), not a binary array file")
        }
    }

    static func npyTable(_ path: String) throws(DataError) -> Table {
        guard try DataFormat.detect(path) == .npy else { throw DataError(path: path, problem: "not an NPY array (no \\x93NUMPY magic at its start)") }
        let bytes = try TableBytes(mapping: path)
        return try Table(NPY.header(bytes.base, available: bytes.count, path: path), bytes: bytes, start: 0, path: path)
    }

    static func pick(_ name: String?, from names: [String], defaults: [String], what: String, flag: String, path: String) throws(DataError) -> String {
        if let name {
            guard names.contains(name) else {
                throw DataError(path: path, problem: "no array named '\(name)' (\(flag)); it holds \(names.map { "'\($0)'" }.joined(separator: ", "))")
            }
            return name
        }
        guard let found = defaults.first(where: names.contains) else {
            throw DataError(path: path, problem: "no \(what) array (looked for \(defaults.map { "'\($0)'" }.joined(separator: ", "))); it holds \(names.map { "'\($0)'" }.joined(separator: ", ")); name it with \(flag)")
        }
        return found
    }

    static func pickTargets(_ request: DataRequest, names: [String], path: String) throws(DataError) -> String? {
        if !request.needsTargets && request.labelsName == nil && !DataRequest.labelNames.contains(where: names.contains) { return nil }
        return try pick(request.labelsName, from: names, defaults: DataRequest.labelNames, what: "labels", flag: "--labels", path: path)
    }

    static func make(_ features: Table, _ labels: Table?, request: DataRequest, source: String, targetsSource: String?) throws(DataError) -> Dataset {
        let task = request.task ?? ((labels?.type.isInteger ?? true) ? .classification : .regression)
        return try Dataset(inputs: features, targets: labels, task: task, source: source, targetsSource: targetsSource)
    }
}
