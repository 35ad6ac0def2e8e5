#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// How much memory this process may still take, and what sets that bound: the machine's
/// memory, a cgroup's `memory.max`, or the address-space and data limits (`ulimit -v`,
/// `ulimit -d`) less what the process already maps. A trainer that would need more is
/// refused before it allocates anything, with the figure and the settings behind it.
public struct MemoryBudget: Sendable, CustomStringConvertible {
    /// Bytes available.
    public var bytes: Int
    /// What sets the bound ("the machine's memory", "ulimit -v").
    public var source: String

    /// A budget of `bytes`, bounded by `source`.
    public init(bytes: Int, source: String) {
        self.bytes = bytes
        self.source = source
    }

    /// "24.0 GB (the machine's memory)".
    public var description: String { "\(MemoryBudget.format(bytes)) (\(source))" }

    /// The smallest of this process's bounds.
    public static func current() -> MemoryBudget {
        var candidates: [MemoryBudget] = []
        let pages = sysconf(Int32(_SC_PHYS_PAGES)), pageSize = sysconf(Int32(_SC_PAGESIZE))
        if pages > 0, pageSize > 0 { candidates.append(MemoryBudget(bytes: pages * pageSize, source: "the machine's memory")) }
        if let text = try? RegularFile.read("/sys/fs/cgroup/memory.max", limit: 64),
           let word = String(decoding: text, as: UTF8.self).split(whereSeparator: \.isWhitespace).first, let limit = Int(word) {
            candidates.append(MemoryBudget(bytes: limit, source: "the cgroup's memory.max"))
        }
        let mapped = mappedBytes()
        for (resource, name) in [(RLIMIT_AS, "ulimit -v"), (RLIMIT_DATA, "ulimit -d")] {
            var limit = rlimit()
            if getrlimit(__rlimit_resource_t(resource.rawValue), &limit) == 0, limit.rlim_cur < rlim_t(Int.max) {
                candidates.append(MemoryBudget(bytes: max(0, Int(limit.rlim_cur) - mapped), source: "\(name) \(format(Int(limit.rlim_cur))), less the \(format(mapped)) already mapped"))
            }
        }
        return candidates.min { $0.bytes < $1.bytes } ?? MemoryBudget(bytes: .max, source: "no known bound")
    }

    /// The process's mapped (virtual) bytes, from /proc/self/statm.
    static func mappedBytes() -> Int {
        guard let text = try? RegularFile.read("/proc/self/statm", limit: 4096) else { return 0 }
        let pages = String(decoding: text, as: UTF8.self).split(separator: " ").first.flatMap { Int($0) } ?? 0
        return pages * sysconf(Int32(_SC_PAGESIZE))
    }

    /// "1.5 GB", "703 GB", "12 MB", "40 KB".
    public static func format(_ bytes: Int) -> String {
        let gb = Double(bytes) / 1e9
        if gb >= 100 { return "\(Int(gb.rounded())) GB" }
        if gb >= 1 { return "\((gb * 10).rounded() / 10) GB" }
        if bytes >= 1_000_000 { return "\(Int((Double(bytes) / 1e6).rounded())) MB" }
        return "\(Int((Double(bytes) / 1e3).rounded(.up))) KB"
    }
}
