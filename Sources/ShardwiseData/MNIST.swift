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
        let train = try Dataset(imagesPath: paths[0], labelsPath: paths[1], classes: 10, features: features)
        let test = try Dataset(imagesPath: paths[2], labelsPath: paths[3], classes: 10, features: features ?? train.features)
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
