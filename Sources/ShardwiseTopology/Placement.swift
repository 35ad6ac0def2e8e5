/// How workers are spread over the machine.
public enum PlacementPolicy: String, Sendable, Codable, CaseIterable {
    /// Fill one L3 domain, then the NUMA node, then the package, before moving on.
    case compact
    /// Round-robin over packages, and over NUMA nodes and L3 domains within them.
    case spread
}

/// Where one worker runs and where its memory comes from.
public struct WorkerPlacement: Sendable, Equatable, Codable {
    /// The worker's index.
    public var worker: Int
    /// The PU it is bound to (the OS's number).
    public var pu: OSIndex
    /// The same PU, hwloc's logical index.
    public var puLogical: LogicalIndex
    /// Its core.
    public var core: LogicalIndex
    /// Its L3 domain, if the machine reports one.
    public var l3: LogicalIndex?
    /// Its NUMA node, if any.
    public var numa: LogicalIndex?
    /// The NUMA node (OS index) the worker's memory is bound to.
    public var memoryNode: OSIndex?
    /// Its package (socket), if any.
    public var package: LogicalIndex?
}

/// A placement plan: one entry per worker.
public struct PlacementPlan: Sendable, Equatable, Codable {
    /// How workers were spread.
    public var policy: PlacementPolicy
    /// Whether SMT siblings may be used before every core has a worker.
    public var smt: Bool
    /// One placement per worker, in worker order.
    public var workers: [WorkerPlacement]
    /// What the plan had to decide that the user should know (SMT siblings used, oversubscription).
    public var notes: [String]
}

/// A placement that cannot be made (more workers than usable PUs, say), with what to do.
public struct PlacementError: Error, CustomStringConvertible, Equatable {
    public var description: String
    /// An error with this one-line description.
    public init(description: String) { self.description = description }
}

extension Topology {
    /// Oversubscription's bound: more threads than this per processing unit only thrash
    /// (and 40,000 of them exhaust the process's thread and stack limits).
    public static let maximumWorkersPerPU = 16

    /// Plans `workerCount` workers under `policy`: one per physical core first, SMT
    /// siblings only when `smt` is set or there are more workers than cores; never a
    /// disallowed PU; more workers than PUs only with `oversubscribe`.
    /// With `share` (index, count), only that block of the allowed cores is used (see `share(_:of:)`);
    /// with `within`, only those PUs (a trial's cores, see `trialPlan(trials:coresPerTrial:)`).
    public func plan(
        workers workerCount: Int, policy: PlacementPolicy, smt: Bool = false, oversubscribe: Bool = false,
        share: (index: Int, count: Int)? = nil, within: [ProcessingUnit]? = nil
    ) throws(PlacementError) -> PlacementPlan {
        let usable = try share.map { (s) throws(PlacementError) in try self.share(s.index, of: s.count, oversubscribe: oversubscribe) }
            ?? within?.filter(\.allowed) ?? allowedPUs
        guard workerCount > 0 else {
            throw PlacementError(description: "--workers: \(workerCount), expected at least 1")
        }
        guard !usable.isEmpty else {
            throw PlacementError(description: "\(source) has no allowed processing unit to place workers on")
        }
        guard workerCount <= usable.count || oversubscribe else {
            throw PlacementError(description: "--workers: \(workerCount) workers but \(source) has \(usable.count) usable processing units (\(coresOf(usable).count) cores); use at most \(usable.count), or pass --oversubscribe")
        }
        guard workerCount <= Self.maximumWorkersPerPU * usable.count else {
            throw PlacementError(description: "--workers: \(workerCount) workers on \(usable.count) usable processing units; --oversubscribe allows at most \(Self.maximumWorkersPerPU) per unit (\(Self.maximumWorkersPerPU * usable.count))")
        }
        // Cores in policy order; each core's PUs in logical order.
        let cores = orderedCores(usable, policy: policy)
        var sequence: [ProcessingUnit]
        if smt && policy == .compact {
            sequence = cores.flatMap { $0 }  // fill each core's threads before the next core
        } else {
            sequence = []
            let depth = cores.map(\.count).max() ?? 0
            for level in 0..<depth { sequence += cores.compactMap { level < $0.count ? $0[level] : nil } }
        }
        var notes: [String] = []
        if workerCount > cores.count && !smt {
            notes.append("\(workerCount) workers for \(cores.count) cores: \(min(workerCount, usable.count) - cores.count) run on SMT siblings")
        }
        if workerCount > usable.count {
            notes.append("oversubscribed: \(workerCount) workers on \(usable.count) processing units")
        }
        let chosen = (0..<workerCount).map { sequence[$0 % sequence.count] }
        let nodeByLogical = Dictionary(uniqueKeysWithValues: numaNodes.map { ($0.logical, $0.os) })
        let workers = chosen.enumerated().map { index, pu in
            WorkerPlacement(
                worker: index, pu: pu.os, puLogical: pu.logical, core: pu.core, l3: pu.l3, numa: pu.numa,
                memoryNode: pu.numa.flatMap { nodeByLogical[$0] }, package: pu.package)
        }
        return PlacementPlan(policy: policy, smt: smt, workers: workers, notes: notes)
    }

    /// The PUs of block `index` of `count` contiguous blocks of the allowed cores, in
    /// compact order (the first blocks one core larger when it does not divide): how the
    /// MPI ranks on one host divide its cores, so no two ranks pin the same core.
    /// More blocks than cores is an error unless `oversubscribe`; blocks then take one core each, round-robin.
    public func share(_ index: Int, of count: Int, oversubscribe: Bool = false) throws(PlacementError) -> [ProcessingUnit] {
        let cores = orderedCores(allowedPUs, policy: .compact)
        guard count > 1 else { return allowedPUs }
        guard cores.count >= count else {
            guard oversubscribe else {
                throw PlacementError(description: "\(count) ranks on this host share its \(cores.count) cores (\(source)); start at most \(cores.count) ranks per host, or pass --oversubscribe")
            }
            return cores[index % cores.count]
        }
        let base = cores.count / count, extra = cores.count % count
        let start = index * base + min(index, extra)
        return Array(cores[start..<start + base + (index < extra ? 1 : 0)].joined())
    }

    func coresOf(_ pus: [ProcessingUnit]) -> [LogicalIndex: [ProcessingUnit]] {
        Dictionary(grouping: pus, by: \.core)
    }

    /// The usable cores, each as its PUs, in the order the policy takes them.
    func orderedCores(_ usable: [ProcessingUnit], policy: PlacementPolicy) -> [[ProcessingUnit]] {
        let byCore = coresOf(usable)
        // Logical order follows the tree: package, NUMA node, L3, core.
        let cores = byCore.keys.sorted().map { byCore[$0]!.sorted { $0.logical < $1.logical } }
        switch policy {
        case .compact:
            return cores
        case .spread:
            // Interleave level by level, largest domains first (usually packages, then
            // NUMA nodes, then L3 domains; on POWER a NUMA node holds several packages),
            // so each round visits every domain once.
            return interleave(cores, by: domainLevels(usable).map { level in { level($0.first!) } })
        }
    }

    /// Package, NUMA node and L3 domain, as keys, ordered from the largest domains
    /// (most cores each) to the smallest: the machine's nesting, whichever way it goes.
    func domainLevels(_ usable: [ProcessingUnit]) -> [(ProcessingUnit) -> Int] {
        let levels: [(ProcessingUnit) -> Int] = [
            { $0.package?.rawValue ?? -1 }, { $0.numa?.rawValue ?? -1 }, { $0.l3?.rawValue ?? -1 },
        ]
        let coresPerDomain = levels.map { level -> Double in
            let domains = Dictionary(grouping: usable, by: level)
            return Double(Set(usable.map(\.core)).count) / Double(domains.count)
        }
        // Stable: ties keep package, NUMA, L3 order.
        return levels.indices.sorted { (-coresPerDomain[$0], $0) < (-coresPerDomain[$1], $1) }.map { levels[$0] }
    }

    /// Round-robin over the groups given by the first key, each group ordered recursively by the rest.
    func interleave(_ items: [[ProcessingUnit]], by keys: [([ProcessingUnit]) -> Int]) -> [[ProcessingUnit]] {
        guard let key = keys.first else { return items }
        let ordered = grouped(items, by: key).map { interleave($0.items, by: Array(keys.dropFirst())) }
        var result: [[ProcessingUnit]] = []
        let longest = ordered.map(\.count).max() ?? 0
        for round in 0..<longest {
            for group in ordered where round < group.count { result.append(group[round]) }
        }
        return result
    }

    /// `items` grouped by `key`, the groups in order of first appearance, each in the items' order.
    func grouped<Item>(_ items: [Item], by key: (Item) -> Int) -> [(key: Int, items: [Item])] {
        var groups: [(key: Int, items: [Item])] = []
        for item in items {
            let k = key(item)
            if let i = groups.firstIndex(where: { $0.key == k }) { groups[i].items.append(item) } else { groups.append((k, [item])) }
        }
        return groups
    }
}
