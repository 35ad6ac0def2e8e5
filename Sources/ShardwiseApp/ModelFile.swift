import Foundation
import Shardwise
import Yams

/// A model file (`--model FILE`): YAML with the sample shape, the layers in the layer
/// language (``ModelDescription``) and optionally the loss.
///
/// ```yaml
/// input: [1, 28, 28]          # one sample's shape: the data's rows, read as (C, H, W)
/// layers: >
///   conv(32, 5, pad: 2) relu maxpool(2) conv(64, 5, pad: 2) relu maxpool(2)
///   flatten dropout(0.5) linear(1024) relu dropout(0.5) linear(10)
/// loss: cross_entropy(label_smoothing: 0.1)   # optional
/// ```
///
/// `layers` may also be a list, one layer (or several) per entry; there YAML reads `pad: 2` as
/// a mapping, so write `pad=2` or quote the entry. JSON is YAML too. Errors in the file are
/// usage errors (exit status 2), as a bad flag value is.
///
/// An optional `training:` mapping is the model's recipe (see ``Recipe``): flags given on the
/// command line override it; what neither sets takes the defaults of a model run (a constant
/// learning rate, no max-norm), not the reference perceptron's recipe.
public enum ModelFile {
    /// A model file's training recipe: each field optional.
    public struct Recipe: Sendable, Equatable {
        public var optimizer: OptimizerAlgorithm?
        public var learningRate: Double?
        public var schedule: String?
        public var lrFloor: Double?
        /// Some(nil): `max_norm: none`.
        public var maxNorm: Double??
        public var weightDecay: Double?
        public var clipNorm: Double?
        public var epochs: Int?
        public var batchSize: Int?
        public var stepsPerEpoch: Int?
        public var warmupSteps: Int?
        public var decayOn: String?
        public var beta2: Double?
        public init() {}
    }

    /// The keys of a recipe (`training:`).
    static let recipeKeys = ["optimizer", "lr", "schedule", "lr_floor", "max_norm", "weight_decay", "clip_norm", "epochs", "batch_size", "steps_per_epoch", "warmup_steps", "beta2", "decay_on"]

    /// The recipe in the file's `training:` mapping (an empty one without it).
    public static func recipe(_ path: String) throws(RunError) -> Recipe {
        let (fields, _) = try mapping(path)
        guard let node = fields["training"] else { return Recipe() }
        guard let entries = node.mapping else { throw RunError("--model: \(path), line \(node.mark?.line ?? 0): 'training' must be a mapping such as {optimizer: adam, lr: 0.001}") }
        var recipe = Recipe()
        for (key, value) in entries {
            let line = value.mark?.line ?? 0
            guard let name = key.string, recipeKeys.contains(name) else {
                throw RunError("--model: \(path), line \(key.mark?.line ?? 0): unknown training key '\(key.string ?? "\(key)")', expected one of \(recipeKeys.joined(separator: ", "))")
            }
            func number() throws(RunError) -> Double {
                guard let text = value.string, let number = Double(text), number.isFinite, number >= 0 else {
                    throw RunError("--model: \(path), line \(line): training \(name) '\(value.string ?? describe(value))', expected a non-negative number")
                }
                return number
            }
            func count() throws(RunError) -> Int {
                guard let n = value.int, n > 0, n <= Int(Int32.max) else {
                    throw RunError("--model: \(path), line \(line): training \(name) '\(value.string ?? describe(value))', expected a positive whole number")
                }
                return n
            }
            switch name {
            case "optimizer":
                guard let algorithm = value.string.flatMap(OptimizerAlgorithm.init(rawValue:)) else {
                    throw RunError("--model: \(path), line \(line): training optimizer '\(value.string ?? "")', expected sgd, adam, adamw or rmsprop")
                }
                recipe.optimizer = algorithm
            case "lr": recipe.learningRate = try number()
            case "schedule":
                guard let text = value.string, ["constant", "step", "exponential", "cosine"].contains(text) else {
                    throw RunError("--model: \(path), line \(line): training schedule '\(value.string ?? "")', expected constant, step, exponential or cosine")
                }
                recipe.schedule = text
            case "lr_floor": recipe.lrFloor = try number()
            case "max_norm": recipe.maxNorm = value.string == "none" ? .some(nil) : .some(try number())
            case "weight_decay": recipe.weightDecay = try number()
            case "clip_norm": recipe.clipNorm = try number()
            case "epochs": recipe.epochs = try count()
            case "steps_per_epoch": recipe.stepsPerEpoch = try count()
            case "warmup_steps": recipe.warmupSteps = try count()
            case "decay_on":
                guard let text = value.string, ["all", "matrices"].contains(text) else {
                    throw RunError("--model: \(path), line \(line): training decay_on '\(value.string ?? "")', expected all or matrices")
                }
                recipe.decayOn = text
            case "beta2": recipe.beta2 = try number()
            default: recipe.batchSize = try count()
            }
        }
        return recipe
    }

    /// The file's top-level mapping by key, and its text.
    static func mapping(_ path: String) throws(RunError) -> (fields: [String: Node], text: String) {
        let bytes: [UInt8]
        do { bytes = try RegularFile.read(path, limit: limit, what: "a model file") } catch { throw RunError("--model: \(error.description)") }
        // A byte-order mark (as Windows editors write) is not part of the YAML.
        let body = bytes.starts(with: [0xEF, 0xBB, 0xBF]) ? Array(bytes.dropFirst(3)) : bytes
        guard let text = String(validating: body, as: UTF8.self) else { throw RunError("--model: \(path) is not UTF-8 text") }
        let node: Node?
        do { node = try Yams.compose(yaml: text) } catch {
            let reason = "\(error)".split(separator: "\n").first.map(String.init) ?? "\(error)"
            throw RunError("--model: \(path): not YAML (\(reason)); in a YAML list, write arguments as pad=2 or quote the entry, or give the layers as a block (layers: >)")
        }
        // Aliases share what they name, so a small file can describe an enormous tree: count
        // what it expands to, stopping at the bound, before anything walks or prints it.
        if let node, expandedNodes(node, limit: maxNodes) > maxNodes {
            throw RunError("--model: \(path): expands to more than \(maxNodes) YAML values (through aliases), expected a model description of at most \(maxNodes)")
        }
        guard let mapping = node?.mapping else {
            throw RunError("--model: \(path): expected a mapping with 'input' (e.g. [1, 28, 28]) and 'layers', found \(node.map(describe) ?? "an empty file")")
        }
        var fields: [String: Node] = [:]
        for (key, value) in mapping {
            guard let name = key.string, ["input", "layers", "loss", "init", "training"].contains(name) else {
                throw RunError("--model: \(path), line \(key.mark?.line ?? 0): unknown key '\(key.string ?? "\(key)")', expected input, layers, loss, init or training")
            }
            fields[name] = value
        }
        return (fields, text)
    }

    /// The most bytes a model file may have.
    static let limit = 1 << 20
    /// The most values (scalars, lists and mappings) a model file may expand to.
    static let maxNodes = 100_000

    /// A short name for what a YAML value is, for messages (never its whole tree).
    static func describe(_ node: Node) -> String {
        switch node {
        case .scalar(let scalar): return "'\(scalar.string.prefix(60))'"
        case .sequence(let list): return "a list of \(list.count) values"
        case .mapping(let map): return "a mapping of \(map.count) keys"
        case .alias: return "an alias"
        }
    }

    /// How many values `node` expands to, counting at most to `limit + 1`.
    static func expandedNodes(_ node: Node, limit: Int) -> Int {
        var count = 0
        var pending = [node]
        while let next = pending.popLast() {
            count += 1
            if count > limit { return count }
            switch next {
            case .scalar: break
            case .sequence(let list): pending.append(contentsOf: list)
            case .mapping(let map):
                for (key, value) in map { pending.append(key); pending.append(value) }
            case .alias: break
            }
        }
        return count
    }

    /// The network the file describes, its output width to be set from the data.
    public static func load(_ path: String) throws(RunError) -> NetworkConfiguration {
        let (fields, _) = try mapping(path)
        guard let inputNode = fields["input"] else { throw RunError("--model: \(path): no 'input', expected one sample's shape such as [1, 28, 28] or [784]") }
        let shape: [Int?]? = inputNode.sequence.map { $0.map(\.int) } ?? inputNode.int.map { [$0] }
        guard let shape, !shape.isEmpty, shape.allSatisfy({ ($0 ?? 0) > 0 }) else {
            throw RunError("--model: \(path), line \(inputNode.mark?.line ?? 0): input '\(inputNode.string ?? "\(inputNode)")', expected positive sizes such as [1, 28, 28]")
        }
        guard let layersNode = fields["layers"] else { throw RunError("--model: \(path): no 'layers', expected e.g. \"flatten linear(128) relu linear(10)\"") }
        let layers: String
        if let list = layersNode.sequence {
            layers = try list.map { item throws(RunError) -> String in
                guard let s = item.string else {
                    let hint = item.mapping != nil ? "; YAML read 'name: value' in it as a mapping: write arguments as pad=2 or quote the entry" : ""
                    throw RunError("--model: \(path), line \(item.mark?.line ?? 0): a layer must be text such as conv(32, 5)\(hint)")
                }
                return s
            }.joined(separator: "\n")
        } else if let s = layersNode.string {
            layers = s
        } else {
            throw RunError("--model: \(path), line \(layersNode.mark?.line ?? 0): 'layers' must be text or a list of texts")
        }
        let loss = fields["loss"].flatMap { $0.string }
        if fields["loss"] != nil && loss == nil { throw RunError("--model: \(path): 'loss' must be text such as cross_entropy or mse") }
        var network = NetworkConfiguration(layers: layers, inputShape: shape.map { $0! }, outputSize: 1, loss: loss)
        if let node = fields["init"] {
            guard let scheme = node.string.flatMap(InitializationScheme.init(rawValue:)) else {
                throw RunError("--model: \(path), line \(node.mark?.line ?? 0): init '\(node.string ?? describe(node))', expected he (the default) or pytorch")
            }
            network.initialization = scheme
        }
        // Parse now, so that a bad layer is named with the file before any data is read; the
        // output width is the model's until the data's is known (training checks they agree).
        do { network.outputSize = try Network(network).widths.last! } catch { throw RunError("--model: \(path): \(error)") }
        return network
    }
}
