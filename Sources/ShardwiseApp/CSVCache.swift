import Foundation
import Shardwise

/// CSV files are parsed once, in parallel over the pinned workers, into two NPY files (float32
/// features; int64 labels or float64 targets) in a cache folder; later runs map those directly
/// while the CSV is the same file version and the column choices are unchanged.
///
/// An entry is a folder named after a digest of everything it was made from: the CSV's path,
/// its ``FileIdentity`` (device, inode, size, modification and change times, read from the very
/// descriptor that was parsed), a SHA-256 of its first and last 64 KiB, and the column choices.
/// It is written under a temporary name and published by one rename, never modified after:
/// two runs that parse at once publish the same entry or two versions' entries, never a mix,
/// and each trains on the arrays it parsed (mapped before the rename). A later run finds the
/// entry of the file version it sees or parses again; entries of older versions are removed.
enum CSVCache {
    /// What a cache entry was made from; the entry is used only while all of it matches.
    struct Key: Codable, Equatable {
        var source: String
        var file: FileIdentity
        /// SHA-256 of the file's first and last 64 KiB, hex.
        var sample: String
        var labelColumn: String?
        var ignoredColumns: [String]
        var format = 2
        /// Filled in when written: the inferred task, the sizes and the columns' names.
        var task: TrainingTask?
        var rows: Int?
        var features: Int?
        var featureNames: [String]?
        var targetName: String?

        func matches(_ other: Key) -> Bool {
            (source, file, sample, labelColumn, ignoredColumns, format)
                == (other.source, other.file, other.sample, other.labelColumn, other.ignoredColumns, other.format)
        }

        /// A hex digest of `text`, `length` characters.
        static func digest(_ text: String, length: Int = 16) -> String {
            var hash = SHA256()
            Array(text.utf8).withUnsafeBytes { hash.update($0) }
            return String(SHA256.hex(hash.finalize()).prefix(length))
        }

        var choice: String { "\(source)|\(labelColumn ?? "")|\(ignoredColumns)" }

        /// The entries of this CSV and column choice are named `prefix-version` (older versions are pruned by it).
        func prefix(_ name: String) -> String { "\(name)-" + Self.digest(choice) }

        /// The first format's `base.json`, `base.features.npy` and `base.targets.npy`.
        func legacyBase(_ name: String) -> String { "\(name)-" + Self.digest(choice, length: 12) }

        /// The folder name of this version's entry.
        func entry(_ name: String) -> String {
            let f = file
            return prefix(name) + "-" + Self.digest("\(f.device)|\(f.inode)|\(f.size)|\(f.modified)|\(f.changed)|\(sample)|\(format)")
        }
    }

    /// SHA-256 of the first and last 64 KiB of `bytes`.
    static func sample(_ bytes: UnsafeRawBufferPointer) -> String {
        var hash = SHA256()
        let n = min(bytes.count, 1 << 16)
        hash.update(UnsafeRawBufferPointer(rebasing: bytes[..<n]))
        hash.update(UnsafeRawBufferPointer(rebasing: bytes[(bytes.count - n)...]))
        return SHA256.hex(hash.finalize())
    }

    /// The data set in the CSV file at `path`, from the cache (made first when missing or stale).
    static func load(_ path: String, request: DataRequest, pool: WorkerPool?, cacheFolder: String?, console: Console) async throws -> Dataset {
        if let cacheFolder {
            var info = stat()
            if cacheFolder.isEmpty { throw RunError("--cache-dir: an empty path; expected a folder") }
            if stat(cacheFolder, &info) == 0, info.st_mode & S_IFMT != S_IFDIR {
                throw RunError("--cache-dir \(cacheFolder): it is \(RegularFile.kind(info.st_mode)); expected a folder")
            }
        }
        let file: TableBytes
        do { file = try TableBytes(mapping: path) } catch { throw RunError(error.description) }
        guard let identity = file.identity else { throw RunError("\(path): cannot read its status") }
        let absolute = path.hasPrefix("/") ? path : FileManager.default.currentDirectoryPath + "/" + path
        var key = Key(
            source: absolute, file: identity, sample: sample(UnsafeRawBufferPointer(start: file.base, count: file.count)),
            labelColumn: request.labelColumn, ignoredColumns: request.ignoredColumns)
        let name = (absolute as NSString).lastPathComponent
        let folders = [cacheFolder ?? ((absolute as NSString).deletingLastPathComponent + "/.shardwise-cache"),
                       (ProcessInfo.processInfo.environment["XDG_CACHE_HOME"] ?? NSHomeDirectory() + "/.cache") + "/shardwise"]
        let entry = key.entry(name)
        for folder in folders {
            let base = "\(folder)/\(entry)"
            if let data = try? RegularFile.read("\(base)/key.json", limit: 1 << 24), let stored = try? JSON.decoder().decode(Key.self, from: Data(data)),
               stored.matches(key), let task = stored.task {
                var cached = request
                cached.task = request.task ?? task
                if let set = try? Dataset.load(binary: "\(base)/features.npy,\(base)/targets.npy", request: cached),
                   set.count == stored.rows, set.features == stored.features {
                    return set.described(as: path)
                }
            }
        }
        let started = monotonicSeconds()
        let parsed = try await parse(file, path: path, request: request, pool: pool)
        if parsed.targetName == nil { return try parsed.dataset(request: request, source: path) }  // features alone (prediction): not cached
        key.task = parsed.task
        key.rows = parsed.rows
        key.features = parsed.features
        key.featureNames = parsed.featureNames
        key.targetName = parsed.targetName
        var request = request
        request.task = request.task ?? parsed.task
        for folder in folders {
            let temporary = "\(folder)/.\(entry).tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
            defer { AtomicFile.removeFolder(temporary) }
            do {
                try AtomicFile.makeDirectory(temporary)
                try write(parsed, base: temporary)
                try AtomicFile.write(try JSON.line(key), to: "\(temporary)/key.json")
                // Mapped before it is published: this run trains on what it parsed, whoever publishes.
                let set: Dataset
                do { set = try Dataset.load(binary: "\(temporary)/features.npy,\(temporary)/targets.npy", request: request) } catch {
                    throw DataError(path: path, problem: error.problem)  // the CSV's problem, not its copy's
                }
                publish(temporary, folder: folder, entry: entry, key: key, name: name)
                console.line(String(format: "%@: parsed %d rows in %.2f s; cached in %@", path, parsed.rows, monotonicSeconds() - started, folder))
                return set.described(as: path)
            } catch let error as DataError {
                throw RunError(error.description)
            } catch {
                continue  // not writable: the next folder
            }
        }
        console.warn("\(path): no writable cache folder (\(folders.joined(separator: ", "))); the CSV is parsed again on every run")
        return try parsed.dataset(request: request, source: path)
    }

    /// Renames the finished `temporary` folder to `entry` (when another run published that
    /// version first, its entry stays: it holds the same file's arrays), then removes the
    /// entries of other versions of the same CSV and column choice, and the first format's files.
    static func publish(_ temporary: String, folder: String, entry: String, key: Key, name: String) {
        _ = rename(temporary, "\(folder)/\(entry)")
        for suffix in [".json", ".features.npy", ".targets.npy"] { unlink("\(folder)/\(key.legacyBase(name))\(suffix)") }
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: folder) else { return }
        for old in names where old.hasPrefix(key.prefix(name) + "-") && old != entry { AtomicFile.removeFolder("\(folder)/\(old)") }
    }

    struct Parsed {
        var parts: [CSV.Part]
        var rows: Int
        var features: Int
        var task: TrainingTask
        var featureNames: [String]
        var targetName: String?

        var featureHeader: [UInt8] { NPY.encodeHeader(type: .float32, shape: [rows, features]) }
        var targetType: ElementType { task == .classification ? .int64 : .float64 }
        var targetHeader: [UInt8] { NPY.encodeHeader(type: targetType, shape: [rows]) }

        /// The targets as stored: int64 labels or float64 values.
        func targetBytes(_ part: CSV.Part) -> [UInt8] {
            task == .classification
                ? part.targets.map { Int64($0) }.withUnsafeBytes { Array($0) }
                : part.targets.withUnsafeBytes { Array($0) }
        }

        /// The data set in memory (when no cache folder can be written).
        func dataset(request: DataRequest, source: String) throws -> Dataset {
            let features = TableBytes(allocating: rows * self.features * 4)
            let targets = TableBytes(allocating: rows * 8)
            let hasTargets = targetName != nil
            var f = 0, t = 0
            for part in parts {
                part.features.withUnsafeBytes { features.mutableBase!.advanced(by: f).copyMemory(from: $0.baseAddress!, byteCount: $0.count); f += $0.count }
                targetBytes(part).withUnsafeBytes { targets.mutableBase!.advanced(by: t).copyMemory(from: $0.baseAddress!, byteCount: $0.count); t += $0.count }
            }
            do {
                return try Dataset(
                    inputs: Table(rows: rows, columns: self.features, type: .float32, bytes: features, offset: 0, path: source),
                    targets: hasTargets ? Table(rows: rows, columns: 1, type: targetType, bytes: targets, offset: 0, path: source) : nil,
                    task: request.task ?? task, source: source)
            } catch { throw RunError(error.description) }
        }
    }

    /// The arrays as `folder/features.npy` and `folder/targets.npy`.
    static func write(_ parsed: Parsed, base folder: String) throws {
        let header = parsed.featureHeader
        try header.withUnsafeBytes { h in
            let pieces = [h] + parsed.parts.map { part in part.features.withUnsafeBytes { $0 } }
            try AtomicFile.write(pieces: pieces, to: "\(folder)/features.npy")
        }
        var targets = parsed.targetHeader
        for part in parsed.parts { targets += parsed.targetBytes(part) }
        try AtomicFile.write(targets, to: "\(folder)/targets.npy")
    }

    /// Parses the CSV (mapped in `file`) over the pool's workers, one range of whole lines each, joined in file order
    /// (without a pool, in one range on the calling thread).
    static func parse(_ file: TableBytes, path: String, request: DataRequest, pool: WorkerPool?) async throws -> Parsed {
        let bytes = UnsafeRawBufferPointer(start: file.base, count: file.count)
        let layout: CSV.Layout
        do {
            layout = try CSV.layout(
                bytes, path: path, labelColumn: request.labelColumn, ignoredColumns: request.ignoredColumns,
                featureCount: request.needsTargets ? nil : request.featuresOnly)
        } catch {
            throw RunError(error.description)
        }
        let ranges = CSV.ranges(bytes, layout: layout, count: pool?.workers.count ?? 1)
        let parts = pool == nil ? ranges.map { CSV.parse(bytes, range: $0, layout: layout) } : await withTaskGroup(of: (Int, CSV.Part).self) { group in
            let pool = pool!
            for (k, range) in ranges.enumerated() {
                group.addTask(executorPreference: pool.workers[k % pool.workers.count]) {
                    (k, withExtendedLifetime(file) { CSV.parse(UnsafeRawBufferPointer(start: file.base, count: file.count), range: range, layout: layout) })
                }
            }
            var parts = [CSV.Part](repeating: CSV.Part(), count: ranges.count)
            for await (k, part) in group { parts[k] = part }
            return parts
        }
        var line = layout.headerLines
        for part in parts {
            if let problem = part.problem { throw RunError("\(path): line \(line + problem.line): \(problem.message)") }
            line += part.lines
        }
        let rows = parts.reduce(0) { $0 + $1.features.count } / layout.features.count
        guard rows > 0 else { throw RunError("\(path): a header and no data rows, expected at least one row of numbers") }
        // Integer labels 0..<C with every class present read as classes; anything else as values.
        var seen = Set<Double>(), integral = true
        for part in parts where integral {
            for v in part.targets { if v < 0 || v.rounded() != v || seen.count > 10_000 { integral = false; break }; seen.insert(v) }
        }
        let classification = integral && seen.count >= 2 && seen.max()! == Double(seen.count - 1)
        return Parsed(
            parts: parts, rows: rows, features: layout.features.count, task: classification ? .classification : .regression,
            featureNames: layout.features.map { layout.names[$0] }, targetName: layout.target >= 0 ? layout.names[layout.target] : nil)
    }

}

extension Dataset {
    /// The same samples, named after `source` in messages.
    func described(as source: String) -> Dataset {
        var copy = self
        copy.source = source
        return copy
    }
}
