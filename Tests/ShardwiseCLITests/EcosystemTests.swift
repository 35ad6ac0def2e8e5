import Foundation
import Shardwise
import XCTest

#if canImport(Glibc)
import Glibc
#endif

/// Shardwise's outputs read by the real tools of the field: TensorBoard's EventAccumulator
/// reads the event file, ONNX's checker accepts the exported model and ONNX Runtime's outputs
/// equal `shardwise predict`'s. The Python packages are installed from PyPI when missing;
/// the tests skip with a message where they cannot be had.
final class EcosystemTests: XCTestCase {
    var folder = ""

    override func setUpWithError() throws {
        folder = NSTemporaryDirectory() + "shardwise-eco-\(getpid())-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
    }

    override func tearDown() { try? FileManager.default.removeItem(atPath: folder) }

    /// `shardwise` or `python3` with `arguments`: the exit status and everything it printed.
    func run(_ executable: String, _ arguments: [String]) throws -> (status: Int32, output: String) {
        guard executable == "shardwise" else { return try runPython(arguments) }
        let run = try runShardwise(arguments)
        return (run.status, run.output + run.error)
    }

    /// `python3` with `modules` importable (installed with pip when missing), or a skip.
    func python(with modules: [String], packages: [String]) throws {
        if try run("python3", ["-c", "import " + modules.joined(separator: ", ")]).status == 0 { return }
        let install = try run("python3", ["-m", "pip", "install", "--quiet"] + packages)
        guard install.status == 0, try run("python3", ["-c", "import " + modules.joined(separator: ", ")]).status == 0 else {
            throw XCTSkip("\(packages.joined(separator: ", ")) cannot be had here: \(install.output.suffix(300))")
        }
    }

    func testTensorBoardReadsEveryScalarHistogramAndText() throws {
        try python(with: ["tensorboard", "numpy"], packages: ["tensorboard", "numpy"])
        let mnist = try sharedMNIST()
        let out = "\(folder)/run"
        let train = try run("shardwise", ["train", "--data", mnist, "--out", out, "--epochs", "2", "--layers", "64,32", "--train-samples", "3000",
                                          "--test-samples", "500", "--validation", "500", "--batch-size", "64", "--shard-size", "32"])
        XCTAssertEqual(train.status, 0, train.output)
        let check = try run("python3", ["Tests/python/tensorboard_check.py", out])
        XCTAssertEqual(check.status, 0, check.output)
    }

    /// A seeded synthetic data set as an NPY pair: `count` samples of `features` float32 values,
    /// the first `categorical` of them integer categories (column j: 0 ..< 5 - j).
    func writeData(_ name: String, count: Int, features: Int, regression: Bool, categorical: Int = 0) throws -> (x: String, y: String) {
        var state: UInt64 = 11
        func next() -> Float {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return Float(state >> 40) / Float(1 << 24) * 8 - 2
        }
        let x = (0..<count * features).map { i in
            let column = i % features
            return column < categorical ? ((next() + 2) / 8 * Float(5 - column)).rounded(.down) : next()
        }
        let rows = (0..<count).map { Array(x[$0 * features..<($0 + 1) * features]) }
        let xPath = "\(folder)/\(name)-x.npy", yPath = "\(folder)/\(name)-y.npy"
        try Data(NPY.encodeHeader(type: .float32, shape: [count, features]) + x.withUnsafeBytes { Array($0) }).write(to: URL(fileURLWithPath: xPath))
        if regression {
            let y = rows.map { Double($0[0] * 40 - $0[1] * $0[2] * 7 + 150) }
            try Data(NPY.encodeHeader(type: .float64, shape: [count]) + y.withUnsafeBytes { Array($0) }).write(to: URL(fileURLWithPath: yPath))
        } else {
            let y = rows.map { Int64(($0[0] > 1 ? 1 : 0) + ($0[1] > 2 ? 2 : 0)) }
            try Data(NPY.encodeHeader(type: .int64, shape: [count]) + y.withUnsafeBytes { Array($0) }).write(to: URL(fileURLWithPath: yPath))
        }
        return (xPath, yPath)
    }

    /// A model file in `folder`; returns its path.
    func modelFile(_ name: String, _ text: String) throws -> String {
        let path = "\(folder)/\(name).yaml"
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    /// Every layer kind (Linear, convolutions, pooling, flatten, every activation, embeddings,
    /// dropout of each kind) and both tasks, with each kind of preprocessing: ONNX Runtime's
    /// outputs equal `shardwise predict`'s to 1e-5.
    func testONNXExportAgreesWithPredict() throws {
        try python(with: ["onnx", "onnxruntime", "numpy"], packages: ["onnx", "onnxruntime", "numpy"])
        let small = ["--layers", "32,16", "--epochs", "3", "--batch-size", "32", "--shard-size", "16"]
        let few = ["--epochs", "3", "--batch-size", "32", "--shard-size", "16", "--optimizer", "adam", "--lr", "0.003"]
        // Padding, stride and dilation in both dimensions, both poolings with padding, every activation.
        let cnn = try modelFile("cnn", """
            input: [2, 6, 6]
            layers:
              - conv(4, 3, pad=1) leaky_relu(0.2) dropout2d(0.1) maxpool(2, stride=1, pad=1)
              - conv(5, 3, stride=2, dilation=2) gelu avgpool(2, pad=1) tanh
              - flatten dropout(0.2) linear(12) gelu(approximate=tanh) sigmoid linear(4)
            """)
        // A tree: residual blocks (identity and strided shortcuts), concatenated and added branches,
        // every normalization, BatchNorm's running statistics.
        let tree = try modelFile("tree", """
            input: [2, 6, 6]
            layers: >
              conv(4, 3, pad: 1) batchnorm2d relu residual(conv(4, 3, pad: 1) groupnorm(2) relu conv(4, 3, pad: 1) batchnorm2d)
              parallel(conv(2, 1) | maxpool(3, stride: 1, pad: 1) conv(3, 1)) layernorm(dims: 2) rmsnorm
              residual(conv(6, 3, stride: 2, pad: 1) relu, shortcut: conv(6, 1, stride: 2)) flatten linear(12) batchnorm1d
              parallel(linear(4) | tanh linear(4), combine: add)
            """)
        // Two categorical columns (the data's first two, integer-coded) and the numeric rest.
        let tabular = try modelFile("tabular", "input: [6]\nlayers: embedding(5, 3) embedding(4, 2) linear(16) relu dropout(0.1) linear(4)\n")
        let cases: [(name: String, regression: Bool, features: Int, categorical: Int, flags: [String])] = [
            ("bernoulli", false, 12, 0, small + ["--normalize", "standard"]),
            ("gaussian", false, 12, 0, small + ["--dropout-kind", "gaussian", "--normalize", "minmax"]),
            ("dropconnect", false, 12, 0, small + ["--dropout-kind", "dropconnect", "--normalize", "scale:4"]),
            ("regression", true, 12, 0, small + ["--normalize", "standard"]),
            ("plain", true, 12, 0, small + ["--no-dropout"]),
            // The reference network's shape (784-1024x3-10, dropout 0.2/0.5), a few steps.
            ("reference", false, 784, 0, ["--epochs", "1", "--stop-after-steps", "3"]),
            ("cnn", false, 72, 0, few + ["--model", cnn, "--normalize", "standard"]),
            ("tabular", false, 6, 2, few + ["--model", tabular]),
            ("tree", false, 72, 0, few + ["--model", tree, "--normalize", "standard"]),
        ]
        for c in cases {
            let data = try writeData(c.name, count: 600, features: c.features, regression: c.regression, categorical: c.categorical)
            let out = "\(folder)/\(c.name)"
            let train = try run("shardwise", ["train", "--data", "\(data.x),\(data.y)", "--lr", "0.01", "--out", out] + c.flags)
            XCTAssert(train.status == 0 || train.output.contains("interrupted after step 3"), "\(c.name): \(train.output)")
            let export = try run("shardwise", ["export", "--checkpoint", out, "--onnx", "\(out)/model.onnx"])
            XCTAssertEqual(export.status, 0, "\(c.name): \(export.output)")
            let predict = try run("shardwise", ["predict", "--checkpoint", out, "--data", data.x, "--out", "\(out)/p.npy"])
            XCTAssertEqual(predict.status, 0, "\(c.name): \(predict.output)")
            let check = try run("python3", ["Tests/python/onnx_check.py", "\(out)/model.onnx", data.x, "\(out)/p.npy"])
            XCTAssertEqual(check.status, 0, "\(c.name): \(check.output)")
        }
    }
}
