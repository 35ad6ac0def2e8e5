#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A file that could not be written, with the reason.
public struct FileWriteError: Error, CustomStringConvertible {
    /// The file that could not be written.
    public var path: String
    /// Why, from the system.
    public var reason: String
    public var description: String { "\(path): cannot write (\(reason))" }
}

/// Writes whole files so that a reader sees the old content or the new, never
/// half of one: write a temporary file in the same folder, fsync it, rename it
/// over the target, fsync the folder.
public enum AtomicFile {
    /// Writes `path` atomically: a temporary file, fsync, rename, fsync of the folder.
    public static func write(_ bytes: [UInt8], to path: String) throws(FileWriteError) {
        var failure: FileWriteError?
        bytes.withUnsafeBytes { raw in
            do throws(FileWriteError) { try write(pieces: [raw], to: path) } catch { failure = error }
        }
        if let failure { throw failure }
    }

    /// Writes the concatenation of `pieces` to `path` atomically (large files without a copy).
    /// Refuses `path` unless it is a regular file (or nothing yet): the rename would replace
    /// a device node, a FIFO or a socket (as root, `/dev/null` itself) with a regular file.
    public static func write(pieces: [UnsafeRawBufferPointer], to path: String) throws(FileWriteError) {
        try checkReplaceable(path)
        let temporary = "\(path).tmp-\(getpid())"
        try writeDurably(pieces: pieces, to: temporary)
        guard rename(temporary, path) == 0 else {
            let error = FileWriteError(path: path, reason: "rename: \(String(cString: strerror(errno)))")
            unlink(temporary)
            throw error
        }
        syncDirectory(containing: path)
    }

    /// Throws unless `path` names a regular file or nothing: an empty path, a folder, a device
    /// node, a FIFO or a socket (a symbolic link judged by what it names) is never written over.
    public static func checkReplaceable(_ path: String) throws(FileWriteError) {
        guard !path.isEmpty else { throw FileWriteError(path: "''", reason: "an empty path; expected a file name") }
        var info = stat()
        guard stat(path, &info) == 0 else { return }  // nothing there yet (or a dangling link, replaced)
        let kinds: [(mode_t, String)] = [
            (S_IFDIR, "a folder"), (S_IFCHR, "a character device"), (S_IFBLK, "a block device"), (S_IFIFO, "a FIFO"), (S_IFSOCK, "a socket"),
        ]
        let kind = info.st_mode & S_IFMT
        guard kind == S_IFREG else {
            let name = kinds.first { $0.0 == kind }?.1 ?? "not a regular file"
            throw FileWriteError(path: path, reason: "it is \(name); expected a regular file or a new name, and Shardwise never writes over anything else")
        }
    }

    /// Writes `path` atomically: a temporary file, fsync, rename, fsync of the folder.
    public static func write(_ text: String, to path: String) throws(FileWriteError) {
        try write(Array(text.utf8), to: path)
    }

    /// Writes `bytes` to `path` (created or truncated) and fsyncs it; removes it on failure.
    public static func writeDurably(_ bytes: [UInt8], to path: String) throws(FileWriteError) {
        var failure: FileWriteError?
        bytes.withUnsafeBytes { raw in
            do throws(FileWriteError) { try writeDurably(pieces: [raw], to: path) } catch { failure = error }
        }
        if let failure { throw failure }
    }

    /// Writes the concatenation of `pieces` to `path` (created or truncated) and fsyncs it; removes it on failure.
    public static func writeDurably(pieces: [UnsafeRawBufferPointer], to path: String) throws(FileWriteError) {
        func fail(_ what: String) -> FileWriteError {
            FileWriteError(path: path, reason: "\(what): \(String(cString: strerror(errno)))")
        }
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw fail("open") }
        for piece in pieces where piece.count > 0 {
            var written = 0
            while written < piece.count {
                let n = Glibc.write(fd, piece.baseAddress! + written, piece.count - written)
                if n < 0 {
                    if errno == EINTR { continue }
                    let error = fail("write")
                    close(fd)
                    unlink(path)
                    throw error
                }
                written += n
            }
        }
        if fsync(fd) != 0 {
            let error = fail("fsync")
            close(fd)
            unlink(path)
            throw error
        }
        close(fd)
    }

    /// fsyncs the folder that holds `path`, so a rename in it is durable.
    public static func syncDirectory(containing path: String) {
        let folder = path.contains("/") ? String(path[..<path.lastIndex(of: "/")!]) : "."
        syncDirectory(folder.isEmpty ? "/" : folder)
    }

    /// Flushes a folder's entries (after a rename into it) to disk.
    public static func syncDirectory(_ folder: String) {
        let fd = open(folder, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if fd >= 0 {
            fsync(fd)
            close(fd)
        }
    }

    /// Creates `path` and its parents (like `mkdir -p`).
    public static func makeDirectory(_ path: String) throws(FileWriteError) {
        var current = path.hasPrefix("/") ? "" : "."
        for component in path.split(separator: "/") {
            current += "/" + component
            if mkdir(current, 0o755) != 0 && errno != EEXIST {
                throw FileWriteError(path: path, reason: "mkdir \(current): \(String(cString: strerror(errno)))")
            }
        }
    }

    /// Removes a folder of plain files (a checkpoint), ignoring errors.
    public static func removeFolder(_ path: String) {
        if let dir = opendir(path) {
            while let entry = readdir(dir) {
                let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
                if name != "." && name != ".." { unlink("\(path)/\(name)") }
            }
            closedir(dir)
        }
        rmdir(path)
    }

    /// Names in a folder (not "." or ".."), or nil when it cannot be read.
    public static func list(_ path: String) -> [String]? {
        guard let dir = opendir(path) else { return nil }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    /// Moves the folder `replacement` to `path`. When `path` exists, the two are swapped in one
    /// step (Linux's `renameat2` with `RENAME_EXCHANGE`) and the old one removed after, so a
    /// crash at any moment leaves one complete folder at `path`.
    public static func replaceFolder(_ path: String, with replacement: String) throws(FileWriteError) {
        if access(path, F_OK) == 0, let exchange = renameExchange {
            guard exchange(AT_FDCWD, replacement, AT_FDCWD, path, 2 /* RENAME_EXCHANGE */) == 0 else {
                throw FileWriteError(path: path, reason: "renameat2: \(String(cString: strerror(errno)))")
            }
            syncDirectory(containing: path)
            removeFolder(replacement)  // now the old folder
            return
        }
        if access(path, F_OK) == 0 { removeFolder(path) }  // no atomic exchange on this system
        guard rename(replacement, path) == 0 else {
            throw FileWriteError(path: path, reason: "rename: \(String(cString: strerror(errno)))")
        }
        syncDirectory(containing: path)
    }

    typealias RenameAt2 = @convention(c) (Int32, UnsafePointer<CChar>, Int32, UnsafePointer<CChar>, UInt32) -> Int32
    /// glibc's `renameat2` (2.28 and later), looked up at run time: Swift's Glibc module does not declare it.
    static let renameExchange = unsafeBitCast(
        dlsym(UnsafeMutableRawPointer(bitPattern: 0), "renameat2"), to: RenameAt2?.self)
}
