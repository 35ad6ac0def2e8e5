#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation

/// A run's output folder, held by one process at a time: an exclusive `flock` on its
/// `.shardwise.lock`, taken when the run starts and released when the process ends (the
/// kernel drops it even after a crash, so a stale lock never blocks the next run).
/// The lock file names its holder, so a second writer is told who has the folder.
public final class RunFolder: @unchecked Sendable {
    /// The folder.
    public let path: String
    private let descriptor: Int32

    /// The lock file's name inside the folder.
    public static let lockName = ".shardwise.lock"

    /// Creates `path` (and its parents) if needed and locks it for this process, recording
    /// `owner` (a command line, say) in the lock file. Throws when another process holds it.
    public init(_ path: String, owner: String) throws(FolderError) {
        do { try AtomicFile.makeDirectory(path) } catch { throw FolderError(error.description) }
        let lock = "\(path)/\(Self.lockName)"
        let fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o644)
        guard fd >= 0 else { throw FolderError("\(lock): cannot open (\(String(cString: strerror(errno))))") }
        if let error = Self.lock(fd, path) {
            close(fd)
            throw error
        }
        self.path = path
        descriptor = fd
        self.owner = owner
    }

    private let owner: String

    /// Records this process as the holder in the lock file (after the caller has decided to
    /// use the folder: a refused run leaves the folder as it found it, lock file included).
    public func recordOwner() {
        let record = Array("pid \(getpid()) on \(hostName()): \(owner)\n".utf8)
        _ = ftruncate(descriptor, 0)
        _ = record.withUnsafeBytes { pwrite(descriptor, $0.baseAddress!, $0.count, 0) }
    }

    /// The entries of `path` other than a lock file, or [] when it does not exist.
    public static func contents(of path: String) -> [String] {
        (AtomicFile.list(path) ?? []).filter { $0 != lockName }.sorted()
    }

    deinit { close(descriptor) }  // releases the lock

    /// Takes the lock on `fd`, or says who holds it.
    static func lock(_ fd: Int32, _ path: String) -> FolderError? {
        guard flock(fd, LOCK_EX | LOCK_NB) != 0 else { return nil }
        guard errno == EWOULDBLOCK else { return FolderError("\(path)/\(lockName): cannot lock (\(String(cString: strerror(errno))))") }
        var holder = [UInt8](repeating: 0, count: 512)
        let n = holder.withUnsafeMutableBytes { pread(fd, $0.baseAddress!, $0.count, 0) }
        let who = String(decoding: holder.prefix(max(n, 0)), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        return FolderError("\(path): in use by another run (\(who.isEmpty ? "a process that holds \(path)/\(lockName)" : who)); wait for it to end, or choose another --out")
    }

    /// Throws when another process holds `path`'s lock; writes nothing (no lock file is created).
    public static func checkNotInUse(_ path: String) throws(FolderError) {
        let fd = open("\(path)/\(lockName)", O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        guard fd >= 0 else { return }
        defer { close(fd) }  // also releases the lock taken to test it
        if let error = lock(fd, path) { throw error }
    }

    /// The folder's entries, the lock file excepted.
    public var contents: [String] { Self.contents(of: path) }

    /// Removes what a Shardwise run writes into a folder (checkpoints, `best/`, metrics,
    /// summary, curves, a `no-dropout/` comparison run, trial folders) and nothing else.
    public func removeRunOutputs() {
        Self.removeRunOutputs(in: path)
    }

    static func removeRunOutputs(in folder: String) {
        for name in AtomicFile.list(folder) ?? [] {
            let path = "\(folder)/\(name)"
            if name.hasPrefix(Checkpoint.prefix) || name.hasPrefix(".\(Checkpoint.prefix)") {
                AtomicFile.removeFolder(path)
            } else if ["metrics.jsonl", "summary.json", "curves.svg", "sweep.json", "sweep.csv", "sweep.svg"].contains(name) || name.hasPrefix("events.out.tfevents.") {
                unlink(path)
            } else if name == "best" || name == "no-dropout" || name.hasPrefix("trial-") {
                removeRunOutputs(in: path)
                unlink("\(path)/\(lockName)")
                rmdir(path)
            }
        }
    }
}

/// An output folder that cannot be used: who holds it, or what it already contains.
public struct FolderError: Error, CustomStringConvertible {
    public var description: String
    /// An error with this one-line description.
    public init(_ description: String) { self.description = description }
}

private func hostName() -> String {
    var name = [CChar](repeating: 0, count: 256)
    gethostname(&name, name.count)
    return String(decoding: name.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}
