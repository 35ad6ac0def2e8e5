extension Topology {
    /// The machine as an indented tree: packages, NUMA nodes with memory, L3 domains, cores, PUs.
    public func treeDescription() -> String {
        var lines = ["Machine (\(source)): \(packageCount) packages, \(numaNodes.count) NUMA nodes, \(l3Count) L3, \(coreCount) cores, \(pus.count) PUs"]
        let memory = Dictionary(uniqueKeysWithValues: numaNodes.map { ($0.logical, $0) })
        func group<K: Hashable & Comparable>(_ pus: [ProcessingUnit], by key: (ProcessingUnit) -> K) -> [(K, [ProcessingUnit])] {
            Dictionary(grouping: pus, by: key).sorted { $0.key < $1.key }
        }
        for (package, inPackage) in group(pus, by: { $0.package?.rawValue ?? -1 }) {
            lines.append("  Package L#\(package)")
            for (numa, inNode) in group(inPackage, by: { $0.numa?.rawValue ?? -1 }) {
                let node = memory[LogicalIndex(numa)]
                let size = node.map { " \(formatBytes($0.memoryBytes))" } ?? ""
                lines.append("    NUMANode L#\(numa)\(node.map { " \($0.os)" } ?? "")\(size)")
                for (l3, inL3) in group(inNode, by: { $0.l3?.rawValue ?? -1 }) {
                    lines.append(l3 < 0 ? "      (no L3)" : "      L3 L#\(l3)")
                    for (core, inCore) in group(inL3, by: { $0.core }) {
                        let threads = inCore.map { "PU \($0.logical) \($0.os)\($0.allowed ? "" : " (disallowed)")" }
                        lines.append("        Core \(core): " + threads.joined(separator: ", "))
                    }
                }
            }
        }
        if let distances = numaDistances {
            lines.append("  NUMA latencies (relative):")
            for row in distances { lines.append("    " + row.map(String.init).joined(separator: " ")) }
        }
        return lines.joined(separator: "\n")
    }
}

extension PlacementPlan {
    /// One line per worker.
    public func tableDescription() -> String {
        var lines = ["\(workers.count) workers, policy \(policy.rawValue)\(smt ? ", SMT" : ""):"]
        lines.append("worker  PU(OS)  core  L3    NUMA  package  memory")
        func text(_ index: LogicalIndex?) -> String { index.map { String($0.rawValue) } ?? "-" }
        for w in workers {
            lines.append(
                [String(w.worker), String(w.pu.rawValue), String(w.core.rawValue), text(w.l3), text(w.numa), text(w.package), w.memoryNode.map(\.description) ?? "-"]
                    .enumerated().map { i, s in s.padding(toLength: [8, 8, 6, 6, 6, 9, 8][i], withPad: " ", startingAt: 0) }
                    .joined())
        }
        for note in notes { lines.append("note: \(note)") }
        return lines.joined(separator: "\n")
    }
}

extension TrialPlan {
    /// One line per slot: its PUs and the domains it lies in.
    public func tableDescription() -> String {
        func domains(_ slot: [ProcessingUnit], _ key: (ProcessingUnit) -> LogicalIndex?) -> String {
            let values = Set(slot.compactMap(key).map(\.rawValue)).sorted()
            return values.isEmpty ? "-" : values.map(String.init).joined(separator: ",")
        }
        var lines = ["\(slots.count) trial slots of \(coresPerTrial) core\(coresPerTrial == 1 ? "" : "s"): \(reason)"]
        lines.append("slot  package     NUMA        L3            PUs (OS)")
        for (i, slot) in slots.enumerated() {
            lines.append(
                [String(i), domains(slot, \.package), domains(slot, \.numa), domains(slot, \.l3), slot.map { String($0.os.rawValue) }.joined(separator: ",")]
                    .enumerated().map { j, s in j == 4 ? s : s.padding(toLength: [6, 12, 12, 14][j], withPad: " ", startingAt: 0) }
                    .joined())
        }
        return lines.joined(separator: "\n")
    }
}

func formatBytes(_ bytes: UInt64) -> String {
    let gib = Double(bytes) / 1_073_741_824
    if gib >= 1 { return "(\(Int(gib.rounded())) GiB)" }
    return "(\(bytes / 1_048_576) MiB)"
}

#if canImport(Foundation)
import Foundation
#endif
