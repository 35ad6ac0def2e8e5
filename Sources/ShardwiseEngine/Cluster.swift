import CShardwiseMPI
import Foundation
import ShardwiseTopology

/// The ranks of an MPI job, when this process was started as one of them
/// (`mpirun -np N shardwise ...`). Without a launcher there is no cluster and
/// MPI is never initialised: the single-process mode.
///
/// Every MPI call is made by one thread at a time: the training loop's, and during an
/// overlapped step only the worker pool's communication thread (``OverlappedExchange``).
/// Calls that wait for other ranks give up after `timeout` seconds and throw a
/// ``ClusterError``; the program then ends the whole job with ``abortJob(status:)``
/// (nothing can be recovered: the other ranks' state is unknown), so a rank that died
/// or hangs never leaves the others waiting forever.
public final class Cluster: @unchecked Sendable {
    /// This process's rank, 0..<size.
    public let rank: Int
    /// The number of ranks in the job.
    public let size: Int
    /// This rank's place among the ranks on its host that share its allowed cores:
    /// the placement layer gives each of them its own block of those cores.
    public let localRank: Int
    /// The number of ranks on this host that share its allowed cores.
    public let localSize: Int
    /// The host name, as MPI reports it.
    public let host: String
    /// Seconds to wait for the other ranks in any one call.
    public let timeout: Double
    private let error = UnsafeMutablePointer<CChar>.allocate(capacity: 512)

    /// Environment variables that MPI launchers set in every rank.
    static let launcherVariables = ["OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE"]

    /// True when a launcher started this process as one rank of a job.
    public static var launched: Bool {
        launcherVariables.contains { ProcessInfo.processInfo.environment[$0] != nil }
    }

    private static let joined = Locked<Cluster?>(nil)

    /// The job's cluster, initialising MPI on first use; nil when not launched by MPI.
    /// `topology` gives the allowed cores that this rank shares with others on its host.
    public static func join(topology: Topology, timeout: Double) throws(ClusterError) -> Cluster? {
        guard launched else { return nil }
        return try joined.withLock { (current: inout Cluster?) throws(ClusterError) -> Cluster? in
            if let current { return current }
            guard sw_mpi_available() != 0 else {
                throw ClusterError(message: "started by an MPI launcher, but this shardwise was built without MPI (install libopenmpi-dev and rebuild: make build)")
            }
            // Ranks that see the same allowed cores on a host share them out.
            var key: UInt32 = 2_166_136_261
            for pu in topology.allowedPUs { key = (key ^ UInt32(truncatingIfNeeded: pu.os.rawValue)) &* 16_777_619 }
            var rank: Int32 = 0, size: Int32 = 1, localRank: Int32 = 0, localSize: Int32 = 1
            var message = [CChar](repeating: 0, count: 512)
            guard sw_mpi_init(Int32(key & 0x7fff_ffff), &rank, &size, &localRank, &localSize, &message, message.count) == SW_MPI_OK else {
                throw ClusterError(message: "MPI: \(text(message))")
            }
            var name = [CChar](repeating: 0, count: 256)
            sw_mpi_processor_name(&name, name.count)
            current = Cluster(
                rank: Int(rank), size: Int(size), localRank: Int(localRank), localSize: Int(localSize),
                host: text(name), timeout: timeout)
            return current
        }
    }

    static func text(_ chars: [CChar]) -> String {
        String(decoding: chars.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// The cluster, if this process joined one.
    public static var current: Cluster? { joined.withLock { $0 } }

    /// Ends MPI at a normal exit: every rank must call it, or the launcher reports the job as failed.
    public static func finish() throws(ClusterError) {
        guard let cluster = current else { return }
        try cluster.barrier("finishing")
        sw_mpi_finalize()
    }

    /// Ends every rank of the job with `status` after a failure only this rank saw
    /// (`MPI_Abort`); does nothing outside an MPI job. The caller exits afterwards.
    public static func abortJob(status: Int32) {
        if current != nil { sw_mpi_abort(status) }
    }

    init(rank: Int, size: Int, localRank: Int, localSize: Int, host: String, timeout: Double) {
        self.rank = rank
        self.size = size
        self.localRank = localRank
        self.localSize = localSize
        self.host = host
        self.timeout = timeout
        error.initialize(repeating: 0, count: 512)
    }

    deinit { error.deallocate() }

    /// A collective failed or timed out: throws what this rank was doing and why.
    func check(_ status: Int32, _ doing: String) throws(ClusterError) {
        guard status != SW_MPI_OK else { return }
        throw ClusterError(rank: rank, size: size, host: host, doing: doing, detail: String(cString: error), timedOut: status == SW_MPI_TIMEOUT)
    }

    /// Posts all transfers and waits for them.
    func exchange(_ transfers: UnsafePointer<sw_mpi_transfer>, count: Int) throws(ClusterError) {
        try check(sw_mpi_exchange(transfers, Int32(count), timeout, error, 512), "exchanging shard gradients")
    }

    /// In place: every rank ends with every rank's part.
    func allgather(_ buffer: UnsafeMutablePointer<Float>, counts: UnsafePointer<Int32>, displacements: UnsafePointer<Int32>, _ doing: String) throws(ClusterError) {
        try check(sw_mpi_allgatherv_floats(buffer, counts, displacements, timeout, error, 512), doing)
    }

    package func allreduceSum(_ values: UnsafeMutablePointer<Float>, count: Int) throws(ClusterError) {
        try check(sw_mpi_allreduce_floats(values, Int32(count), Int32(SW_MPI_SUM), timeout, error, 512), "summing gradients (MPI_Allreduce)")
    }

    func allreduceSum(_ values: UnsafeMutablePointer<Double>, count: Int, _ doing: String) throws(ClusterError) {
        try check(sw_mpi_allreduce_doubles(values, Int32(count), Int32(SW_MPI_SUM), timeout, error, 512), doing)
    }

    func allreduceMin(_ values: UnsafeMutablePointer<Int>, count: Int, _ doing: String) throws(ClusterError) {
        try check(sw_mpi_allreduce_longs(values, Int32(count), Int32(SW_MPI_MIN), timeout, error, 512), doing)
    }

    func allreduceLongs(_ values: UnsafeMutablePointer<Int>, count: Int, op: Int32, _ doing: String) throws(ClusterError) {
        try check(sw_mpi_allreduce_longs(values, Int32(count), op, timeout, error, 512), doing)
    }

    /// Checks that every rank holds the same `values` (a job's settings, say, in a fixed order
    /// that every rank shares). Returns nil when they agree; otherwise the first index at which
    /// some rank differs from rank 0, with each rank's value there (the first 64 bytes).
    /// One all-reduce of a hash when they agree; a second exchange of every value when not.
    public func disagreement(on values: [String]) throws(ClusterError) -> (index: Int, values: [String])? {
        let hashes = values.map { Self.hash($0) }
        var range = [Self.hash(hashes.map(String.init).joined(separator: ",")), 0]
        range[1] = -range[0]
        try range.withUnsafeMutableBufferPointer { (b) throws(ClusterError) in
            try allreduceLongs(b.baseAddress!, count: 2, op: Int32(SW_MPI_MIN), "comparing the ranks' settings")
        }
        guard range[0] != -range[1] else { return nil }  // min(h) == max(h): every rank agrees
        // Each rank fills its own row (per value: its hash, then 64 bytes as 8 words); the sum is the table.
        let words = 9, row = values.count * words
        var table = [Int](repeating: 0, count: size * row)
        for (i, value) in values.enumerated() {
            table[rank * row + i * words] = hashes[i]
            for (b, byte) in value.utf8.prefix(64).enumerated() {
                table[rank * row + i * words + 1 + b / 8] |= Int(byte) << (8 * (b % 8))
            }
        }
        try table.withUnsafeMutableBufferPointer { (b) throws(ClusterError) in
            try allreduceLongs(b.baseAddress!, count: b.count, op: Int32(SW_MPI_SUM), "exchanging the ranks' settings")
        }
        for i in values.indices where (1..<size).contains(where: { table[$0 * row + i * words] != table[i * words] }) {
            return (i, (0..<size).map { r in
                let bytes = (0..<64).map { b in UInt8(truncatingIfNeeded: table[r * row + i * words + 1 + b / 8] >> (8 * (b % 8))) }
                return String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self)
            })
        }
        return nil
    }

    /// FNV-1a of the text, as a non-negative Int (so that min and -max can share one reduction).
    static func hash(_ text: String) -> Int {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in text.utf8 { h = (h ^ UInt64(byte)) &* 0x100_0000_01b3 }
        return Int(h >> 2)
    }

    /// The sum over ranks of one integer (exact, so independent of the order MPI adds in).
    public func sum(_ value: Int, _ doing: String) throws(ClusterError) -> Int {
        var v = value
        try check(sw_mpi_allreduce_longs(&v, 1, Int32(SW_MPI_SUM), timeout, error, 512), doing)
        return v
    }

    /// `idle`: sleep while waiting, leaving the core to a rank that is measuring.
    public func barrier(_ doing: String, idle: Bool = false) throws(ClusterError) {
        try check(sw_mpi_barrier(timeout, idle ? 1_000 : 0, error, 512), doing)
    }

    /// Rank `r`'s block of `count` items: contiguous, the first ranks one larger when it does not divide.
    public func block(of count: Int, rank r: Int? = nil) -> Range<Int> {
        Cluster.block(r ?? rank, of: count, parts: size)
    }

    package static func block(_ part: Int, of count: Int, parts: Int) -> Range<Int> {
        let base = count / parts, extra = count % parts
        let start = part * base + min(part, extra)
        return start..<start + base + (part < extra ? 1 : 0)
    }
}

/// An MPI job that cannot go on: what this rank was doing and why.
public struct ClusterError: Error, CustomStringConvertible {
    public var description: String

    init(message: String) { description = message }

    init(rank: Int, size: Int, host: String, doing: String, detail: String, timedOut: Bool) {
        let why = timedOut ? "; a rank has died or hangs (the timeout is the cluster's, --mpi-timeout on the command line)" : ""
        description = "rank \(rank) of \(size) on \(host), \(doing): \(detail)\(why); ending the job"
    }
}
