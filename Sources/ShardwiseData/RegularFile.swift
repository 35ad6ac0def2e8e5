#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Opening and reading files that a user names: only regular files, and never more
/// bytes than the caller's format allows. A FIFO would block a reader forever and
/// `/dev/zero` would fill memory; a directory or a device is never a data file.
public enum RegularFile {
    /// Opens `path` for reading (close the descriptor when done) and returns its size.
    /// Throws unless it is a regular file; the open never blocks, even on a FIFO.
    public static func open(_ path: String) throws(DataError) -> (descriptor: Int32, size: Int) {
        let fd = Glibc.open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)
        guard fd >= 0 else { throw DataError(path: path, problem: "cannot open (\(String(cString: strerror(errno))))") }
        var info = stat()
        guard fstat(fd, &info) == 0 else {
            let reason = String(cString: strerror(errno))
            close(fd)
            throw DataError(path: path, problem: "cannot read its status (\(reason))")
        }
        guard info.st_mode & S_IFMT == S_IFREG else {
            close(fd)
            throw DataError(path: path, problem: "is \(kind(info.st_mode)), expected a regular file")
        }
        // Regular files ignore O_NONBLOCK; clear it anyway so that reads are plain.
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK)
        return (fd, Int(info.st_size))
    }

    /// The whole of a regular file of at most `limit` bytes (`what` names it in errors).
    /// Read to its end, not to its reported size (files under /proc report 0).
    public static func read(_ path: String, limit: Int, what: String = "the file") throws(DataError) -> [UInt8] {
        let (fd, size) = try open(path)
        defer { close(fd) }
        func tooLarge(_ n: Int) -> DataError {
            DataError(path: path, problem: "\(n) bytes or more, more than the \(limit) that \(what) can take")
        }
        guard size <= limit else { throw tooLarge(size) }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(size)
        var piece = [UInt8](repeating: 0, count: min(max(size, 4096), 1 << 22) + 1)
        while true {
            let n = piece.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress!, $0.count) }
            if n < 0 && errno == EINTR { continue }
            guard n >= 0 else {
                throw DataError(path: path, problem: "read failed after \(bytes.count) bytes (\(String(cString: strerror(errno))))")
            }
            if n == 0 { return bytes }
            guard bytes.count + n <= limit else { throw tooLarge(bytes.count + n) }
            bytes += piece[0..<n]
        }
    }

    /// The whole of a regular file, or nil when it is missing (other problems throw).
    public static func readIfPresent(_ path: String, limit: Int, what: String = "the file") throws(DataError) -> [UInt8]? {
        guard access(path, F_OK) == 0 else { return nil }
        return try read(path, limit: limit, what: what)
    }

    public static func kind(_ mode: mode_t) -> String {
        switch mode & S_IFMT {
        case S_IFDIR: "a folder"
        case S_IFIFO: "a FIFO (named pipe)"
        case S_IFCHR: "a character device"
        case S_IFBLK: "a block device"
        case S_IFSOCK: "a socket"
        default: "not a regular file"
        }
    }
}

/// Sizes computed from untrusted numbers (file headers, flags): nil on overflow instead of a trap.
public enum CheckedSize {
    /// The product of `factors`, or nil when one is negative or the product overflows `Int`.
    public static func product(_ factors: [Int]) -> Int? {
        var total = 1
        for f in factors {
            guard f >= 0 else { return nil }
            let (p, overflow) = total.multipliedReportingOverflow(by: f)
            if overflow { return nil }
            total = p
        }
        return total
    }

    /// The sum of `terms`, or nil when one is negative or the sum overflows `Int`.
    public static func sum(_ terms: [Int]) -> Int? {
        var total = 0
        for t in terms {
            guard t >= 0 else { return nil }
            let (s, overflow) = total.addingReportingOverflow(t)
            if overflow { return nil }
            total = s
        }
        return total
    }
}
