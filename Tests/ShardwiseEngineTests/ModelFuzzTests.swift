@testable import ShardwiseApp
import Foundation
import Shardwise
import XCTest

/// Model descriptions from hostile hands, under a fixed seed: random layer-language strings,
/// mutated model files and mutated checkpoint metadata (a bare `model.safetensors`'s network
/// description, the one `state.json` carries too) must build or throw one line naming the
/// problem, never trap, and never allocate what a description claims (every size goes through
/// `ModelSize`). `make test` runs 10,000 iterations of each; `make fuzz` runs SHARDWISE_FUZZ_ITERATIONS.
final class ModelFuzzTests: XCTestCase {
    var iterations: Int { Int(ProcessInfo.processInfo.environment["SHARDWISE_FUZZ_ITERATIONS"] ?? "") ?? 10_000 }
    typealias Random = ReaderFuzzTests.Random

    /// Sizes that break unchecked arithmetic, and ordinary ones.
    static let numbers = ["0", "1", "2", "3", "5", "-1", "28", "2147483647", "2147483648", "4294967296", "4611686018427387904",
                          "9223372036854775807", "-9223372036854775808", "1e9", "0.5", "x"]
    static let shapes: [[Int]] = [[1, 28, 28], [784], [3, 32, 32], [1, 1, 1], [2147483647], [1 << 32, 1 << 32, 4], [65536, 65536], [4, 2]]

    static func number(_ random: inout Random) -> String {
        random.below(3) == 0 ? "\(random.below(40))" : numbers[random.below(numbers.count)]
    }

    /// One random layer (composites nest up to `depth` more levels).
    static func layer(_ random: inout Random, depth: Int) -> String {
        func n() -> String { number(&random) }
        switch random.below(depth > 0 ? 16 : 14) {
        case 0: return "conv(\(n()), \(n()), stride: \(n()), pad: \(n()), dilation: \(n()))"
        case 1: return "conv(\(n()), \(n()))"
        case 2: return "maxpool(\(n()), stride: \(n()), pad: \(n()))"
        case 3: return "avgpool(\(n()), pad: \(n()))"
        case 4: return "linear(\(n()))"
        case 5: return "embedding(\(n()), \(n()))"
        case 6: return "flatten"
        case 7: return ["relu", "gelu", "tanh", "sigmoid", "leaky_relu(0.1)"][random.below(5)]
        case 8: return "layernorm(dims: \(n()))"
        case 9: return "groupnorm(\(n()))"
        case 10: return ["batchnorm1d", "batchnorm2d", "rmsnorm"][random.below(3)]
        case 11: return "dropout(\(n()))"
        case 12: return "dropout2d(\(n()))"
        case 13: return "linear(\(n()), dropconnect: \(n()))"
        case 14: return "residual(\(layers(&random, depth: depth - 1)))"
        default: return "parallel(\(layers(&random, depth: depth - 1)) | \(layers(&random, depth: depth - 1)), combine: \(random.below(2) == 0 ? "add" : "concat"))"
        }
    }

    static func layers(_ random: inout Random, depth: Int) -> String {
        (0...random.below(5)).map { _ in layer(&random, depth: depth) }.joined(separator: " ")
    }

    /// `text` with one random edit: a number replaced by a hostile one, a cut, a copied range,
    /// or a stray character.
    static func mutate(_ text: String, _ random: inout Random) -> String {
        var characters = Array(text)
        guard !characters.isEmpty else { return text }
        switch random.below(4) {
        case 0:
            let digits = characters.indices.filter { characters[$0].isNumber }
            guard let start = digits.isEmpty ? nil : digits[random.below(digits.count)] else { break }
            var end = start
            while end < characters.count, characters[end].isNumber { end += 1 }
            characters.replaceSubrange(start..<end, with: Array(numbers[random.below(numbers.count)]))
        case 1:
            let start = random.below(characters.count)
            characters.removeSubrange(start..<min(characters.count, start + 1 + random.below(8)))
        case 2:
            let start = random.below(characters.count), end = min(characters.count, start + 1 + random.below(24))
            characters.insert(contentsOf: characters[start..<end], at: random.below(characters.count))
        default:
            characters.insert(Array("()[]{},:|&*#'\"\n 9-")[random.below(18)], at: random.below(characters.count + 1))
        }
        return String(characters)
    }

    /// A built network's sizes are within bounds, and its memory estimate is computed without trapping.
    func checkBuilt(_ network: Network, _ what: String) {
        XCTAssert(network.widths.allSatisfy { (1...ModelSize.maximum).contains($0) }, what)
        XCTAssert(network.layout.tensors.allSatisfy { (1...ModelSize.maximum).contains($0.count) }, what)
        _ = network.multiplyAddsPerSample
        _ = MemoryEstimate(network: network, shards: 4, localShards: 2, shardSize: 256, samples: 60_000)
        _ = MemoryEstimate.inferenceProblem(network: network, rows: 256)
    }

    func checkError(_ error: Error, _ what: String) {
        let text = "\(error)"
        XCTAssertFalse(text.isEmpty, what)
        XCTAssertFalse(text.contains("\n"), "a multi-line error for \(what): \(text)")
    }

    func testRandomLayerLanguage() throws {
        var random = Random(state: 20_261_204)
        var built = 0
        for _ in 0..<iterations {
            let text = Self.layers(&random, depth: 2), shape = Self.shapes[random.below(Self.shapes.count)]
            let what = "\(text) on \(shape)"
            do {
                let network = try Network(NetworkConfiguration(layers: text, inputShape: shape, outputSize: 10))
                checkBuilt(network, what)
                built += 1
            } catch {
                checkError(error, what)
            }
            _ = try? ModelDescription.withDropoutRates(text, input: 0.2, hidden: 0.5)
        }
        XCTAssertGreaterThan(built, iterations / 50, "some random models are valid")
    }

    func testMutatedModelFiles() throws {
        let path = NSTemporaryDirectory() + "shardwise-model-fuzz-\(getpid()).yaml"
        defer { unlink(path) }
        let valid = """
            input: [1, 28, 28]
            layers:
              - conv(8, 5, pad=2)
              - relu
              - maxpool(2)
              - residual(conv(8, 3, pad=1) batchnorm2d relu)
              - flatten
              - dropout(0.5)
              - linear(10)
            loss: cross_entropy(label_smoothing=0.1)
            """
        var random = Random(state: 77)
        var accepted = 0
        for _ in 0..<iterations {
            var text = valid
            for _ in 0...random.below(3) { text = Self.mutate(text, &random) }
            try text.write(toFile: path, atomically: false, encoding: .utf8)
            do {
                checkBuilt(try Network(try ModelFile.load(path)), text)
                accepted += 1
            } catch {
                XCTAssert("\(error)".hasPrefix("--model: \(path)"), "\(error)")
                checkError(error, text)
            }
        }
        XCTAssertGreaterThan(accepted, 0, "some mutations leave a valid model")
    }

    /// The description a checkpoint carries, mutated, through the loading path of eval, predict
    /// and export (a bare `model.safetensors`) and the check a checkpoint's `state.json` gets.
    func testMutatedCheckpointMetadata() throws {
        let path = NSTemporaryDirectory() + "shardwise-metadata-fuzz-\(getpid()).safetensors"
        defer { unlink(path) }
        let network = NetworkConfiguration(layers: "conv(4, 3, pad: 1) relu maxpool(2) flatten embedding(3, 2) linear(10)", inputShape: [1, 8, 8], outputSize: 10)
        let compiled = try Network(network)
        let tensors = compiled.layout.tensors.map { SafeTensors.Tensor(name: $0.name, shape: $0.shape, values: [Float](repeating: 0.25, count: $0.count)) }
        let description = String(decoding: try JSON.encoder(pretty: false).encode(network), as: UTF8.self)
        var random = Random(state: 5)
        var loaded = 0
        for _ in 0..<iterations {
            var text = description
            for _ in 0...random.below(3) { text = Self.mutate(text, &random) }
            try Data(SafeTensors.encode(tensors, metadata: ["network": text])).write(to: URL(fileURLWithPath: path))
            do {
                let model = try SavedModel.load(path)
                checkBuilt(try Network(model.network), text)
                loaded += 1
            } catch {
                checkError(error, text)
            }
            if let decoded = try? JSON.decoder().decode(NetworkConfiguration.self, from: Data(text.utf8)) {
                do { _ = try TrainingRun.layout(of: decoded, in: "state.json") } catch { checkError(error, text) }
            }
        }
        XCTAssertGreaterThan(loaded, 0, "some mutations leave a loadable model")
    }
}
