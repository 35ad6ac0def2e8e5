import CShardwiseHwloc

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// An index as the operating system numbers objects (`P#3`): can be sparse or interleaved.
public struct OSIndex: Hashable, Comparable, Sendable, Codable, CustomStringConvertible {
    public var rawValue: Int
    /// The index the OS uses.
    public init(_ rawValue: Int) { self.rawValue = rawValue }
    public static func < (a: OSIndex, b: OSIndex) -> Bool { a.rawValue < b.rawValue }
    public var description: String { "P#\(rawValue)" }
    public init(from decoder: Decoder) throws { rawValue = try decoder.singleValueContainer().decode(Int.self) }
    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(rawValue)
    }
}

/// An index in hwloc's logical order (`L#3`): dense, following the machine's tree.
public struct LogicalIndex: Hashable, Comparable, Sendable, Codable, CustomStringConvertible {
    public var rawValue: Int
    /// hwloc's logical index.
    public init(_ rawValue: Int) { self.rawValue = rawValue }
    public static func < (a: LogicalIndex, b: LogicalIndex) -> Bool { a.rawValue < b.rawValue }
    public var description: String { "L#\(rawValue)" }
    public init(from decoder: Decoder) throws { rawValue = try decoder.singleValueContainer().decode(Int.self) }
    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(rawValue)
    }
}

/// A hardware thread and where it sits in the machine.
public struct ProcessingUnit: Sendable, Equatable {
    /// The OS's number for the PU.
    public var os: OSIndex
    /// hwloc's logical index.
    public var logical: LogicalIndex
    /// Its core.
    public var core: LogicalIndex
    /// Its L3 domain, if any.
    public var l3: LogicalIndex?
    /// Its NUMA node, if any.
    public var numa: LogicalIndex?
    /// Its package, if any.
    public var package: LogicalIndex?
    /// False when a cgroup cpuset (or similar) forbids this PU.
    public var allowed: Bool
}

/// A memory node.
public struct NUMANode: Sendable, Equatable {
    /// The OS's number for the node (what memory binding takes).
    public var os: OSIndex
    /// hwloc's logical index.
    public var logical: LogicalIndex
    /// The package it belongs to, if any.
    public var package: LogicalIndex?
    /// Its local memory.
    public var memoryBytes: UInt64
}

/// hwloc failed, or was given something it cannot read.
public struct TopologyError: Error, CustomStringConvertible, Equatable {
    public var description: String
    /// An error with the one-line description `description`.
    public init(_ description: String) { self.description = description }
}

/// A machine as hwloc sees it: packages, NUMA nodes, L3 domains, cores and PUs.
///
/// Offline PUs are not in the topology at all (hwloc leaves them out);
/// disallowed PUs are present with `allowed == false` and never placed on.
public final class Topology: @unchecked Sendable {
    /// Where a topology came from.
    public enum Source: Sendable, Equatable, CustomStringConvertible {
        /// The running machine, read by hwloc.
        case thisMachine
        /// An hwloc XML export (`lstopo --of xml`).
        case xml(path: String)
        /// An hwloc synthetic description, e.g. "pack:2 numa:2 core:8 pu:2".
        case synthetic(String)
        public var description: String {
            switch self {
            case .thisMachine: "this machine"
            case .xml(let path): path
            case .synthetic(let text): "synthetic \"\(text)\""
            }
        }
    }

    /// Where this topology came from.
    public let source: Source
    /// Every PU, in logical order.
    public let pus: [ProcessingUnit]
    /// Every NUMA node.
    public let numaNodes: [NUMANode]
    /// NUMA latency matrix by logical index, when hwloc has one.
    public let numaDistances: [[UInt64]]?
    /// Packages (sockets).
    public let packageCount: Int
    /// L3 cache domains.
    public let l3Count: Int
    /// Cores.
    public let coreCount: Int
    /// The most PUs a described machine may have, and the most children one level may give each
    /// parent: hwloc's build time grows faster than the square of a level's width (4,096 PUs
    /// side by side took 2.7 s, 8,192 took 27 s, 65,536 over ten minutes), and the largest
    /// machines have a few thousand PUs.
    public static let maxPUs = 16_384
    public static let maxArity = 4_096

    /// Refuses a synthetic description whose machine is too large, before hwloc builds it.
    static func checkSyntheticSize(_ text: String) throws(TopologyError) {
        var total = 1
        var token = "", skipping = 0
        func level() throws(TopologyError) {
            defer { token = "" }
            // "core:8", "8", "numa:2(memory=1GB)": the arity is the number after the last colon.
            guard !token.isEmpty, let arity = Int(token.split(separator: ":").last ?? "") else { return }
            guard arity <= maxArity else {
                throw TopologyError("synthetic \"\(text)\": level '\(token)' gives each parent \(arity) children, expected at most \(maxArity)")
            }
            let (product, overflow) = total.multipliedReportingOverflow(by: max(arity, 1))
            total = overflow ? Int.max : product
        }
        for c in text {
            switch c {
            case "(", "[": skipping += 1
            case ")", "]": skipping = max(0, skipping - 1)
            case " ", "\t", "\n": if skipping == 0 { try level() }
            default: if skipping == 0 { token.append(c) }
            }
        }
        try level()
        guard total <= maxPUs else {
            throw TopologyError("synthetic \"\(text)\": describes \(total == Int.max ? "more than \(Int.max)" : "\(total)") PUs, expected at most \(maxPUs)")
        }
    }

    /// Whether threads can be bound on it (it is the running machine).
    public let isThisSystem: Bool
    let handle: OpaquePointer

    /// Reads a topology from `source`; throws when hwloc cannot. `onlyBoundCPUs` (this machine
    /// only): PUs outside the process's CPU binding (`taskset`, `numactl`, `mpirun --bind-to`)
    /// count as not allowed, as PUs outside its cgroup always do.
    public init(_ source: Source, onlyBoundCPUs: Bool = false) throws(TopologyError) {
        var message = [CChar](repeating: 0, count: 512)
        let handle: OpaquePointer?
        switch source {
        case .thisMachine:
            let code = onlyBoundCPUs ? SW_TOPOLOGY_THIS_SYSTEM_BOUND : SW_TOPOLOGY_THIS_SYSTEM
            handle = sw_topology_load(Int32(code), nil, &message, message.count)
        case .xml(let path):
            // Only a regular file: hwloc would block on a FIFO and read a device without end.
            var info = stat()
            guard stat(path, &info) == 0, info.st_mode & S_IFMT == S_IFREG else {
                throw TopologyError("\(path): not a readable regular file, expected an hwloc XML export (lstopo --of xml)")
            }
            handle = sw_topology_load(Int32(SW_TOPOLOGY_XML), path, &message, message.count)
        case .synthetic(let text):
            try Topology.checkSyntheticSize(text)
            handle = sw_topology_load(Int32(SW_TOPOLOGY_SYNTHETIC), text, &message, message.count)
        }
        guard let handle else {
            throw TopologyError("\(source): \(String(decoding: message.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))")
        }
        let puCount = Int(sw_topology_pu_count(handle))
        guard puCount <= Topology.maxPUs else {
            sw_topology_destroy(handle)
            throw TopologyError("\(source): describes \(puCount) PUs, expected at most \(Topology.maxPUs)")
        }
        var raw = [sw_pu](repeating: sw_pu(), count: puCount)
        sw_topology_pus(handle, &raw)
        // An OS index names one PU to bind to: two PUs with one index would get two workers on
        // one CPU (hwloc accepts such an export).
        var seen = Set<Int32>()
        if let twice = raw.first(where: { !seen.insert($0.os_index).inserted }) {
            sw_topology_destroy(handle)
            throw TopologyError("\(source): two PUs have OS index \(twice.os_index), expected each PU's os_index once")
        }
        self.handle = handle
        self.source = source
        func optional(_ i: Int32) -> LogicalIndex? { i < 0 ? nil : LogicalIndex(Int(i)) }
        pus = raw.map {
            ProcessingUnit(
                os: OSIndex(Int($0.os_index)), logical: LogicalIndex(Int($0.logical_index)),
                core: LogicalIndex(Int($0.core < 0 ? $0.logical_index : $0.core)), l3: optional($0.l3),
                numa: optional($0.numa), package: optional($0.package), allowed: $0.allowed != 0)
        }
        var nodes = [sw_numa_node](repeating: sw_numa_node(), count: Int(sw_topology_numa_count(handle)))
        sw_topology_numa_nodes(handle, &nodes)
        numaNodes = nodes.map {
            NUMANode(os: OSIndex(Int($0.os_index)), logical: LogicalIndex(Int($0.logical_index)), package: optional($0.package), memoryBytes: $0.local_memory)
        }
        let n = nodes.count
        var matrix = [UInt64](repeating: 0, count: n * n)
        if n > 0, sw_topology_numa_distances(handle, &matrix, Int32(n)) == 0 {
            numaDistances = (0..<n).map { Array(matrix[$0 * n..<($0 + 1) * n]) }
        } else {
            numaDistances = nil
        }
        packageCount = max(0, Int(sw_topology_count(handle, "package")))
        l3Count = max(0, Int(sw_topology_count(handle, "l3")))
        coreCount = max(0, Int(sw_topology_count(handle, "core")))
        isThisSystem = sw_topology_is_this_system(handle) != 0
    }

    deinit { sw_topology_destroy(handle) }

    /// The running machine; with `onlyBoundCPUs`, only the PUs of the process's CPU binding are allowed.
    public static func thisMachine(onlyBoundCPUs: Bool = false) throws(TopologyError) -> Topology {
        try Topology(.thisMachine, onlyBoundCPUs: onlyBoundCPUs)
    }

    /// Binds the calling thread to one PU (a singlified cpuset, `HWLOC_CPUBIND_THREAD`).
    public func bindCurrentThread(to pu: OSIndex) throws(TopologyError) {
        var message = [CChar](repeating: 0, count: 256)
        guard sw_topology_bind_thread(handle, Int32(pu.rawValue), &message, message.count) == 0 else {
            throw TopologyError(String(decoding: message.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
        }
    }

    /// Allocates page-aligned memory bound to a NUMA node (plain allocation where binding is unsupported).
    public func allocate(bytes: Int, onNode node: OSIndex?) -> UnsafeMutableRawPointer? {
        sw_topology_alloc_on_node(handle, bytes, Int32(node?.rawValue ?? -1))
    }

    /// The NUMA nodes (OS indices) holding the pages of `bytes` at `pointer`, after they were touched.
    public func memoryLocation(of pointer: UnsafeRawPointer, bytes: Int) -> [OSIndex] {
        var nodes = [Int32](repeating: 0, count: max(numaNodes.count, 1))
        let found = sw_topology_area_nodes(handle, pointer, bytes, &nodes, Int32(nodes.count))
        return found < 0 ? [] : nodes.prefix(Int(found)).map { OSIndex(Int($0)) }
    }

    /// Releases memory from `allocate(bytes:onNode:)`.
    public func free(_ pointer: UnsafeMutableRawPointer, bytes: Int) {
        sw_topology_free(handle, pointer, bytes)
    }

    /// The CPU (OS index) the calling thread runs on now.
    public static func currentCPU() -> OSIndex { OSIndex(Int(sw_current_cpu())) }

    /// The kernel's id of the calling thread (as in /proc/self/task).
    public static func currentThreadID() -> Int32 { sw_thread_id() }

    /// The PUs this process may run on (its cpuset, online ones only).
    public var allowedPUs: [ProcessingUnit] { pus.filter(\.allowed) }
}
