import Foundation
import ShardwiseData
import ShardwiseKernels
import ShardwiseLayers

/// A checkpoint is a folder `checkpoint-<step>` holding `model.safetensors` (the
/// parameters, named as the model's `ParameterLayout`, e.g. `layers.0.weight`),
/// `optimizer.safetensors` (the optimizer's state: per state buffer, one tensor per parameter
/// tensor, prefixed with the buffer's PyTorch name, `momentum_buffer.` for SGD, `exp_avg.` and
/// `exp_avg_sq.` for Adam), `state.json` (the caller's training state) and
/// `SHA256SUMS` over the three (checkable with `sha256sum -c`).
///
/// It is written into a temporary folder, every file fsynced, then renamed into place
/// and the parent fsynced: a crash at any point leaves the previous checkpoint as it was.
/// It takes parameters, optimizer state and training state, never a trainer.
public enum Checkpoint {
    /// The prefix of checkpoint folder names.
    public static let prefix = "checkpoint-"
    static let files = ["model.safetensors", "optimizer.safetensors", "state.json"]

    /// What a checkpoint holds.
    public struct Contents<State: Decodable> {
        /// The checkpoint folder.
        public var path: String
        /// The decoded `state.json`.
        public var state: State
        /// Laid out as the layout given to ``load(_:as:layout:)``.
        public var parameters: [Float]
        /// The optimizer's flat state: each state buffer laid out as the parameters, one after another.
        public var optimizerState: [Float]
    }

    /// `checkpoint-<step>`, zero-padded to 9 digits so names sort by step.
    public static func folderName(step: Int) -> String {
        let digits = String(step)
        return prefix + String(repeating: "0", count: max(0, 9 - digits.count)) + digits
    }

    /// Writes `checkpoint-<step>` into `directory` and keeps the newest `keep` checkpoints.
    ///
    /// - Parameters:
    ///   - parameters: the flat parameter vector, laid out as `layout`.
    ///   - optimizerState: the optimizer's state buffers, each laid out as `layout`, one after another.
    ///   - optimizerStateNames: their names (PyTorch's: `momentum_buffer`, `exp_avg`, ...).
    ///   - layout: names, shapes and offsets of the tensors.
    ///   - state: the training state, written as `state.json`.
    ///   - step: the global step, which names the folder.
    ///   - metadata: strings stored in `model.safetensors`' `__metadata__` (a model description, say).
    ///   - directory: where the checkpoint folders are.
    ///   - keep: checkpoints kept, the newest.
    @discardableResult
    public static func write<State: Encodable>(
        parameters: UnsafePointer<Float>, optimizerState: UnsafePointer<Float>, optimizerStateNames: [String] = ["momentum_buffer"],
        layout: ParameterLayout, state: State, step: Int, metadata: [String: String] = [:], directory: String, keep: Int
    ) throws(CheckpointError) -> String {
        let final = "\(directory)/\(folderName(step: step))"
        let temporary = "\(directory)/.\(folderName(step: step)).tmp-\(getpid())"
        do {
            try AtomicFile.makeDirectory(directory)
            AtomicFile.removeFolder(temporary)
            try AtomicFile.makeDirectory(temporary)
            let model = SafeTensors.encode(tensors(layout, parameters, prefix: ""), metadata: ["format": "pt"].merging(metadata) { a, _ in a })
            let optimizer = SafeTensors.encode(
                optimizerStateNames.enumerated().flatMap { k, name in tensors(layout, optimizerState + k * layout.count, prefix: name + ".") },
                metadata: ["format": "pt"])
            let stateJSON: [UInt8]
            do { stateJSON = Array(try JSON.encoder(pretty: true).encode(state)) + [0x0A] } catch {
                throw CheckpointError("cannot encode the training state: \(error)")
            }
            var sums = ""
            for (name, bytes) in zip(files, [model, optimizer, stateJSON]) {
                try AtomicFile.writeDurably(bytes, to: "\(temporary)/\(name)")
                sums += "\(SHA256.hexDigest(bytes))  \(name)\n"
            }
            try AtomicFile.writeDurably(Array(sums.utf8), to: "\(temporary)/SHA256SUMS")
            AtomicFile.syncDirectory(temporary)
            try AtomicFile.replaceFolder(final, with: temporary)
        } catch {
            AtomicFile.removeFolder(temporary)
            let previous = (try? newest(in: directory)).map { "; the previous checkpoint \($0) is intact" } ?? ""
            throw CheckpointError("cannot write checkpoint: \(error)\(previous)")
        }
        prune(directory, keep: keep, upTo: step)
        return final
    }

    /// Removes all but the newest `keep` checkpoints up to `step` (a later one is another
    /// run's, never this writer's to delete), and temporary folders left by dead writers.
    static func prune(_ directory: String, keep: Int, upTo step: Int) {
        let names = AtomicFile.list(directory) ?? []
        let checkpoints = names.filter { $0.hasPrefix(prefix) && $0 <= folderName(step: step) }.sorted()
        for name in checkpoints.dropLast(max(keep, 1)) {
            // Renamed out of the checkpoint names first (one atomic step), then emptied: a kill
            // mid-removal leaves a dot-named folder for the next prune, never a checkpoint with files missing.
            let doomed = "\(directory)/.\(name).old-\(getpid())"
            if rename("\(directory)/\(name)", doomed) == 0 { AtomicFile.removeFolder(doomed) }
        }
        for name in names where name.hasPrefix(".\(prefix)") && !name.hasSuffix(".tmp-\(getpid())") {
            AtomicFile.removeFolder("\(directory)/\(name)")
        }
    }

    /// The newest checkpoint in `directory` whose files are all present and match their checksums.
    public static func newest(in directory: String) throws(CheckpointError) -> String {
        guard let names = AtomicFile.list(directory) else {
            throw CheckpointError("\(directory): cannot read the folder (\(String(cString: strerror(errno))))")
        }
        let candidates = names.filter { $0.hasPrefix(prefix) }.sorted().reversed()
        var problems: [String] = []
        for name in candidates {
            do {
                try verify("\(directory)/\(name)")
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
    /// `layout` gives the parameter layout the state describes (it may throw for a state it cannot use),
    /// `stateNames` the names of the optimizer's state buffers it implies (SGD's momentum buffer by default).
    /// Every file must be a regular file, and no read is larger than its format allows: the
    /// state first (at most 64 MiB), then tensors of at most the size its layout implies.
    public static func load<State: Decodable>(
        _ path: String, as: State.Type, layout: (State) throws(CheckpointError) -> ParameterLayout,
        stateNames: (State) -> [String] = { _ in ["momentum_buffer"] }
    ) throws(CheckpointError) -> Contents<State> {
        let sums = try expectedSums(path)
        let stateBytes = try verifiedRead(path, "state.json", limit: stateLimit, sums: sums)
        let state: State
        do { state = try JSON.decoder().decode(State.self, from: Data(stateBytes)) } catch {
            throw CheckpointError("\(path)/state.json: not a training state (\(error))")
        }
        let layout = try layout(state), names = stateNames(state)
        // The header: a JSON entry of at most ~200 bytes per tensor, plus the metadata.
        guard let limit = CheckedSize.sum([8, 1 << 20, 256 * layout.tensors.count, 4 * layout.parameterCount]),
              let optimizerLimit = CheckedSize.sum([8, 1 << 20, 256 * layout.tensors.count * names.count, 4 * layout.parameterCount * names.count])
        else {
            throw CheckpointError("\(path)/state.json: its network has more parameters than can be addressed")
        }
        let model = try SafeTensors.decode(
            try verifiedRead(path, "model.safetensors", limit: limit, sums: sums), path: "\(path)/model.safetensors")
        let optimizer = try SafeTensors.decode(
            try verifiedRead(path, "optimizer.safetensors", limit: optimizerLimit, sums: sums), path: "\(path)/optimizer.safetensors")
        var optimizerState: [Float] = []
        for name in names {
            optimizerState += try flatten(
                optimizer.tensors, layout: layout, prefix: name + ".", path: "\(path)/optimizer.safetensors", expectedCount: layout.tensors.count * names.count)
        }
        return Contents(
            path: path, state: state,
            parameters: try flatten(model.tensors, layout: layout, prefix: "", path: "\(path)/model.safetensors"),
            optimizerState: optimizerState)
    }

    /// Largest `state.json` read (a state grows by one metrics record per epoch, ~200 bytes).
    static let stateLimit = 64 << 20

    /// SHA256SUMS of a checkpoint folder: file name to hex digest.
    static func expectedSums(_ path: String) throws(CheckpointError) -> [String: String] {
        let sums: [UInt8]?
        do { sums = try RegularFile.readIfPresent("\(path)/SHA256SUMS", limit: 4096, what: "a checkpoint's SHA256SUMS") } catch {
            throw CheckpointError(error.description)
        }
        guard let sums else {
            throw CheckpointError("\(path): missing SHA256SUMS, expected a checkpoint folder written by shardwise")
        }
        return Dictionary(
            String(decoding: sums, as: UTF8.self).split(separator: "\n").compactMap { line -> (String, String)? in
                let parts = line.split(separator: " ", omittingEmptySubsequences: true)
                return parts.count == 2 ? (String(parts[1]), String(parts[0])) : nil
            }, uniquingKeysWith: { a, _ in a })
    }

    /// One of the checkpoint's files, read whole (at most `limit` bytes) and checked against its sum.
    static func verifiedRead(_ path: String, _ name: String, limit: Int, sums: [String: String]) throws(CheckpointError) -> [UInt8] {
        guard let sum = sums[name] else { throw CheckpointError("\(path)/SHA256SUMS: no checksum for \(name)") }
        let bytes: [UInt8]?
        do { bytes = try RegularFile.readIfPresent("\(path)/\(name)", limit: limit, what: "this checkpoint's \(name)") } catch {
            throw CheckpointError(error.description)
        }
        guard let bytes else { throw CheckpointError("\(path)/\(name): missing") }
        try compare(SHA256.hexDigest(bytes), sum, "\(path)/\(name)", size: bytes.count)
        return bytes
    }

    /// Checks every file of a checkpoint against SHA256SUMS, reading each in pieces (nothing
    /// is held in memory): how ``newest(in:)`` tells a complete checkpoint from a damaged one.
    static func verify(_ path: String) throws(CheckpointError) {
        let sums = try expectedSums(path)
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        for name in files {
            guard let sum = sums[name] else { throw CheckpointError("\(path)/SHA256SUMS: no checksum for \(name)") }
            guard access("\(path)/\(name)", F_OK) == 0 else { throw CheckpointError("\(path)/\(name): missing") }
            let fd: Int32
            do { fd = try RegularFile.open("\(path)/\(name)").descriptor } catch { throw CheckpointError(error.description) }
            defer { close(fd) }
            var hash = SHA256()
            var size = 0
            while true {
                let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress!, $0.count) }
                if n < 0 && errno == EINTR { continue }
                guard n >= 0 else { throw CheckpointError("\(path)/\(name): read failed (\(String(cString: strerror(errno))))") }
                if n == 0 { break }
                buffer.withUnsafeBytes { hash.update(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
                size += n
            }
            try compare(SHA256.hex(hash.finalize()), sum, "\(path)/\(name)", size: size)
        }
    }

    static func compare(_ found: String, _ expected: String, _ file: String, size: Int) throws(CheckpointError) {
        guard found == expected else {
            throw CheckpointError("\(file): checksum mismatch (corrupted or truncated: \(size) bytes, SHA-256 \(found.prefix(12))…, expected \(expected.prefix(12))…)")
        }
    }

    static func tensors(_ layout: ParameterLayout, _ values: UnsafePointer<Float>, prefix: String) -> [SafeTensors.Tensor] {
        layout.tensors.map { t in
            SafeTensors.Tensor(name: prefix + t.name, shape: t.shape, values: Array(UnsafeBufferPointer(start: values + t.offset, count: t.count)))
        }
    }

    /// Places named tensors into the flat layout, checking that names and shapes match the architecture.
    /// `expectedCount`: the tensors the file must hold (default: the layout's).
    public static func flatten(
        _ tensors: [SafeTensors.Tensor], layout: ParameterLayout, prefix: String, path: String, expectedCount: Int? = nil
    ) throws(CheckpointError) -> [Float] {
        let byName = Dictionary(tensors.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        // Every tensor present and of its shape before the flat vector is allocated: its size then
        // comes from values the file holds, never from a description alone.
        for t in layout.tensors {
            guard let found = byName[prefix + t.name] else {
                throw CheckpointError("\(path): no tensor '\(prefix + t.name)'; the checkpoint is for another architecture or optimizer")
            }
            guard found.shape == t.shape else {
                throw CheckpointError("\(path): tensor '\(prefix + t.name)' has shape \(found.shape), the network expects \(t.shape) (another architecture)")
            }
        }
        var flat = [Float](repeating: 0, count: layout.count)
        for t in layout.tensors {
            let found = byName[prefix + t.name]!
            // Weights (and optimizer state) are used as they are: a NaN or an infinity would give
            // silent garbage, so it is refused as a trained one would be.
            for i in 0..<t.count {
                let value = found.values[i]
                guard value.isFinite else {
                    throw CheckpointError("\(path): tensor '\(prefix + t.name)' holds \(value) at element \(i); a checkpoint's values must be finite")
                }
                flat[t.offset + i] = value
            }
        }
        let expected = expectedCount ?? layout.tensors.count
        if tensors.count != expected {
            throw CheckpointError("\(path): \(tensors.count) tensors, expected \(expected) (another architecture or optimizer)")
        }
        return flat
    }
}

/// The JSON conventions of every file Shardwise writes: snake_case keys, sorted, slashes unescaped.
public enum JSON {
    /// An encoder with these conventions; `pretty` adds indentation.
    public static func encoder(pretty: Bool) -> JSONEncoder {
        let encoder = JSONEncoder()
        encoder.keyEncodingStrategy = .convertToSnakeCase
        encoder.outputFormatting = pretty ? [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes] : [.sortedKeys, .withoutEscapingSlashes]
        return encoder
    }

    /// A decoder for files written with these conventions.
    public static func decoder() -> JSONDecoder {
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        return decoder
    }

    /// One line of JSON (no newline).
    public static func line<T: Encodable>(_ value: T) throws -> String {
        String(decoding: try encoder(pretty: false).encode(value), as: UTF8.self)
    }
}
