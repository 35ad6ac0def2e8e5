import Foundation
import ShardwiseKernels
import ShardwiseLayers

/// Where training stands: with the model and optimizer files, everything needed to continue.
public struct TrainingState: Codable, Sendable {
    public var version: String
    public var configuration: TrainingConfiguration
    /// The epoch in progress (0-based) and the next step to run in it.
    public var epoch: Int
    public var stepInEpoch: Int
    /// Optimisation steps taken so far (the dropout streams' step, the momentum buffer's age).
    public var globalStep: Int
    /// Loss summed over the steps of the epoch in progress, and its training seconds so far.
    public var epochLossSum: Double
    public var epochSeconds: Double
    /// Finished epochs' metrics.
    public var records: [EpochRecord]
    /// Early stopping: the best validation error so far, its epoch (1-based), and epochs since.
    public var bestValidationErrorPercent: Double?
    public var bestEpoch: Int?
    public var epochsWithoutImprovement: Int?
}

/// A checkpoint is a folder `checkpoint-<step>` holding `model.safetensors` (the
/// weights, named like PyTorch's `nn.Linear` layers), `optimizer.safetensors` (the
/// momentum buffers), `state.json` (`TrainingState`) and `SHA256SUMS` over the three
/// (checkable with `sha256sum -c`). It is written into a temporary folder, every file
/// fsynced, then renamed into place and the parent fsynced: a crash at any point
/// leaves the previous checkpoint as it was.
public enum Checkpoint {
    public static let prefix = "checkpoint-"
    static let files = ["model.safetensors", "optimizer.safetensors", "state.json"]

    public struct Loaded {
        public var path: String
        public var state: TrainingState
        /// Laid out as `Network(state.configuration.network).layout`.
        public var parameters: [Float]
        public var velocity: [Float]
    }

    public static func folderName(step: Int) -> String {
        let digits = String(step)
        return prefix + String(repeating: "0", count: max(0, 9 - digits.count)) + digits
    }

    /// Writes a checkpoint of `trainer` at `state` into `directory` and keeps the newest `keep`.
    @discardableResult
    public static func write(trainer: Trainer, state: TrainingState, directory: String, keep: Int) throws(CheckpointError) -> String {
        let final = "\(directory)/\(folderName(step: state.globalStep))"
        let temporary = "\(directory)/.\(folderName(step: state.globalStep)).tmp-\(getpid())"
        do {
            try AtomicFile.makeDirectory(directory)
            AtomicFile.removeFolder(temporary)
            try AtomicFile.makeDirectory(temporary)
            let layout = trainer.network.layout
            let metadata = [
                "format": "pt", "shardwise_version": Shardwise.version,
                "network": String(decoding: try! TrainingRun.jsonEncoder(pretty: false).encode(state.configuration.network), as: UTF8.self),
            ]
            let model = SafeTensors.encode(tensors(layout, trainer.parameters, prefix: ""), metadata: metadata)
            let optimizer = SafeTensors.encode(tensors(layout, trainer.optimizer.velocity, prefix: "momentum_buffer."), metadata: ["format": "pt"])
            let stateJSON = Array(try! TrainingRun.jsonEncoder(pretty: true).encode(state)) + [0x0A]
            let contents = [model, optimizer, stateJSON]
            var sums = ""
            for (name, bytes) in zip(files, contents) {
                try AtomicFile.writeDurably(bytes, to: "\(temporary)/\(name)")
                sums += "\(sha256(bytes))  \(name)\n"
            }
            try AtomicFile.writeDurably(Array(sums.utf8), to: "\(temporary)/SHA256SUMS")
            AtomicFile.syncDirectory(temporary)
            if access(final, F_OK) == 0 { AtomicFile.removeFolder(final) }
            guard rename(temporary, final) == 0 else {
                throw FileWriteError(path: final, reason: "rename: \(String(cString: strerror(errno)))")
            }
            AtomicFile.syncDirectory(directory)
        } catch {
            AtomicFile.removeFolder(temporary)
            let previous = (try? newest(in: directory)).map { "; the previous checkpoint \($0) is intact" } ?? ""
            throw CheckpointError("cannot write checkpoint: \(error)\(previous)")
        }
        prune(directory, keep: keep)
        return final
    }

    /// Removes all but the newest `keep` checkpoints, and temporary folders left by dead writers.
    static func prune(_ directory: String, keep: Int) {
        let names = AtomicFile.list(directory) ?? []
        let checkpoints = names.filter { $0.hasPrefix(prefix) }.sorted()
        for name in checkpoints.dropLast(max(keep, 1)) { AtomicFile.removeFolder("\(directory)/\(name)") }
        for name in names where name.hasPrefix(".\(prefix)") && !name.hasSuffix(".tmp-\(getpid())") {
            AtomicFile.removeFolder("\(directory)/\(name)")
        }
    }

    /// The newest checkpoint in `directory` that passes every check.
    public static func newest(in directory: String) throws(CheckpointError) -> String {
        guard let names = AtomicFile.list(directory) else {
            throw CheckpointError("\(directory): cannot read the folder (\(String(cString: strerror(errno))))")
        }
        let candidates = names.filter { $0.hasPrefix(prefix) }.sorted().reversed()
        var problems: [String] = []
        for name in candidates {
            do {
                _ = try load("\(directory)/\(name)")
                return "\(directory)/\(name)"
            } catch {
                problems.append(error.description)
            }
        }
        if problems.isEmpty {
            throw CheckpointError("\(directory): no checkpoint found, expected a folder \(prefix)<step> written by 'shardwise train --checkpoint-every'")
        }
        throw CheckpointError("\(directory): no valid checkpoint; \(problems.joined(separator: "; "))")
    }

    /// Loads and verifies a checkpoint folder: checksums, state, tensor names and shapes.
    public static func load(_ path: String) throws(CheckpointError) -> Loaded {
        guard let sums = AtomicFile.read("\(path)/SHA256SUMS") else {
            throw CheckpointError("\(path): missing SHA256SUMS, expected a checkpoint folder written by shardwise")
        }
        let expected = Dictionary(
            String(decoding: sums, as: UTF8.self).split(separator: "\n").compactMap { line -> (String, String)? in
                let parts = line.split(separator: " ", omittingEmptySubsequences: true)
                return parts.count == 2 ? (String(parts[1]), String(parts[0])) : nil
            }, uniquingKeysWith: { a, _ in a })
        var contents: [String: [UInt8]] = [:]
        for name in files {
            guard let bytes = AtomicFile.read("\(path)/\(name)") else { throw CheckpointError("\(path)/\(name): missing") }
            guard let sum = expected[name] else { throw CheckpointError("\(path)/SHA256SUMS: no checksum for \(name)") }
            guard sha256(bytes) == sum else {
                throw CheckpointError("\(path)/\(name): checksum mismatch (corrupted or truncated: \(bytes.count) bytes, SHA-256 \(sha256(bytes).prefix(12))…, expected \(sum.prefix(12))…)")
            }
            contents[name] = bytes
        }
        let state: TrainingState
        do {
            let decoder = JSONDecoder()
            decoder.keyDecodingStrategy = .convertFromSnakeCase
            state = try decoder.decode(TrainingState.self, from: Data(contents["state.json"]!))
        } catch {
            throw CheckpointError("\(path)/state.json: not a training state (\(error))")
        }
        let layout = Network(state.configuration.network).layout
        let model = try SafeTensors.decode(contents["model.safetensors"]!, path: "\(path)/model.safetensors")
        let optimizer = try SafeTensors.decode(contents["optimizer.safetensors"]!, path: "\(path)/optimizer.safetensors")
        return Loaded(
            path: path, state: state,
            parameters: try flatten(model.tensors, layout: layout, prefix: "", path: "\(path)/model.safetensors"),
            velocity: try flatten(optimizer.tensors, layout: layout, prefix: "momentum_buffer.", path: "\(path)/optimizer.safetensors"))
    }

    /// A model for evaluation: from a checkpoint folder, or a bare `model.safetensors`
    /// whose metadata holds the network configuration.
    public static func loadModel(_ path: String) throws(CheckpointError) -> (network: NetworkConfiguration, parameters: [Float]) {
        var isFolder: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isFolder) else {
            throw CheckpointError("\(path): no such checkpoint (expected a checkpoint folder, a folder of them, or a model.safetensors)")
        }
        if isFolder.boolValue {
            let folder = access("\(path)/SHA256SUMS", F_OK) == 0 ? path : try newest(in: path)
            let loaded = try load(folder)
            return (loaded.state.configuration.network, loaded.parameters)
        }
        guard let bytes = AtomicFile.read(path) else { throw CheckpointError("\(path): cannot read") }
        let file = try SafeTensors.decode(bytes, path: path)
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        guard let text = file.metadata["network"],
              let network = try? decoder.decode(NetworkConfiguration.self, from: Data(text.utf8))
        else { throw CheckpointError("\(path): no Shardwise network description in its __metadata__") }
        return (network, try flatten(file.tensors, layout: Network(network).layout, prefix: "", path: path))
    }

    static func tensors(_ layout: ParameterLayout, _ buffer: FloatBuffer, prefix: String) -> [SafeTensors.Tensor] {
        layout.tensors.map { t in
            SafeTensors.Tensor(name: prefix + t.name, shape: t.shape, values: Array(UnsafeBufferPointer(start: buffer.pointer + t.offset, count: t.count)))
        }
    }

    /// Places named tensors into the flat layout, checking that names and shapes match the architecture.
    static func flatten(_ tensors: [SafeTensors.Tensor], layout: ParameterLayout, prefix: String, path: String) throws(CheckpointError) -> [Float] {
        let byName = Dictionary(tensors.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        var flat = [Float](repeating: 0, count: layout.count)
        for t in layout.tensors {
            guard let found = byName[prefix + t.name] else {
                throw CheckpointError("\(path): no tensor '\(prefix + t.name)'; the checkpoint is for another architecture")
            }
            guard found.shape == t.shape else {
                throw CheckpointError("\(path): tensor '\(prefix + t.name)' has shape \(found.shape), the network expects \(t.shape) (another architecture)")
            }
            for i in 0..<t.count { flat[t.offset + i] = found.values[i] }
        }
        if tensors.count != layout.tensors.count {
            throw CheckpointError("\(path): \(tensors.count) tensors, the network has \(layout.tensors.count) (another architecture)")
        }
        return flat
    }

    static func sha256(_ bytes: [UInt8]) -> String {
        var hash = SHA256()
        bytes.withUnsafeBytes { hash.update($0) }
        return SHA256.hex(hash.finalize())
    }
}
