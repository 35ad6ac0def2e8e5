#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The MNIST digits, from the four original IDX files.
public struct MNIST: Sendable {
    /// The 60,000 training images (or fewer, when cut).
    public var train: Dataset
    /// The 10,000 test images.
    public var test: Dataset
    /// The folder the files were read from.
    public var directory: String

    /// Pixels per image (28 x 28): the default input width of a network before data is read.
    public static let features = 28 * 28
    /// Digit classes.
    public static let classes = 10

    /// The four files, without the `.gz` suffix.
    public static let fileNames = [
        "train-images-idx3-ubyte", "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte",
    ]

    /// Folders searched, in order, when no `--data` is given.
    public static let defaultDirectories = ["data/mnist", "../shared/datasets/mnist"]

    /// Loads MNIST from `directory`, or from the first default folder that has the files.
    /// Each file may be raw or gzip-compressed (`name` or `name.gz`). With `features`, images
    /// of another size are refused from their header, before their pixels are read.
    public static func load(directory: String?, features: Int? = nil) throws(DataError) -> MNIST {
        let folder: String
        if let directory {
            folder = directory
        } else if let found = defaultDirectories.first(where: { hasFiles($0) }) {
            folder = found
        } else {
            throw DataError(
                path: defaultDirectories.joined(separator: " or "),
                problem: "MNIST not found; put \(fileNames.map { $0 + ".gz" }.joined(separator: ", ")) (raw or gzip-compressed) in data/mnist/, or pass --data DIR")
        }
        var paths: [String] = []
        for name in fileNames {
            guard let path = locate(folder: folder, name: name) else {
                throw DataError(
                    path: "\(folder)/\(name).gz",
                    problem: "missing; expected the MNIST files \(fileNames.map { $0 + ".gz" }.joined(separator: ", ")) in \(folder)")
            }
            paths.append(path)
        }
        let train = try Dataset(imagesPath: paths[0], labelsPath: paths[1], classes: classes, features: features)
        let test = try Dataset(imagesPath: paths[2], labelsPath: paths[3], classes: classes, features: features ?? train.features)
        guard train.features == test.features else {
            throw DataError(path: paths[2], problem: "images have \(test.features) pixels, training images have \(train.features)")
        }
        return MNIST(train: train, test: test, directory: folder)
    }

    static func hasFiles(_ folder: String) -> Bool {
        fileNames.allSatisfy { locate(folder: folder, name: $0) != nil }
    }

    static func locate(folder: String, name: String) -> String? {
        for candidate in ["\(folder)/\(name).gz", "\(folder)/\(name)"] where access(candidate, R_OK) == 0 {
            return candidate
        }
        return nil
    }
}

extension Dataset {
    /// Reads an IDX image file (count, rows, columns) and an IDX label file (count),
    /// checking that the counts agree and every label is below `classes`; with `features`,
    /// that each image has that many pixels, before its pixels are read. Pixels become
    /// floats in [0, 1] (divided by 255), held in memory.
    public init(imagesPath: String, labelsPath: String, classes: Int, features expected: Int? = nil) throws(DataError) {
        let images = try IDXFile(path: imagesPath, expectedDimensions: 3) { (d) throws(DataError) in
            guard d[0] > 0, d[1] > 0, d[2] > 0 else {
                throw DataError(path: imagesPath, problem: "empty image set (dimensions \(d)), expected at least one image")
            }
            if let expected, d[1] * d[2] != expected {
                throw DataError(path: imagesPath, problem: "images of \(d[1])x\(d[2]) = \(d[1] * d[2]) pixels, expected \(expected)")
            }
            // The bytes, then 4 bytes a pixel as floats: refused before reading when they cannot fit.
            let budget = MemoryBudget.current()
            if let bytes = CheckedSize.product(d + [5]), bytes > budget.bytes {
                throw DataError(path: imagesPath, problem: "\(d[0]) images of \(d[1])x\(d[2]) need \(MemoryBudget.format(bytes)) as bytes and floats, more than the \(budget) available")
            }
        }
        let count = images.dimensions[0]
        let labels = try IDXFile(path: labelsPath, expectedDimensions: 1) { (d) throws(DataError) in
            guard d[0] == count else {
                throw DataError(
                    path: labelsPath, problem: "has \(d[0]) labels, but \(imagesPath) has \(count) images; expected the same count")
            }
        }
        if let index = labels.bytes.firstIndex(where: { Int($0) >= classes }) {
            throw DataError(
                path: labelsPath,
                problem: "label \(labels.bytes[index]) at index \(index) is out of range, expected 0...\(classes - 1)")
        }
        let pixels = [Float](unsafeUninitializedCapacity: images.bytes.count) { out, initialized in
            images.bytes.withUnsafeBufferPointer { bytes in
                for i in 0..<bytes.count { out[i] = Float(bytes[i]) / 255 }
            }
            initialized = images.bytes.count
        }
        self.init(features: images.dimensions[1] * images.dimensions[2], classes: classes, images: pixels, labels: labels.bytes.map { Int32($0) })
        source = imagesPath
    }
}
