/// Disjoint core sets for trials that train side by side (`shardwise sweep --parallel-trials`).
public struct TrialPlan: Sendable, Equatable {
    /// Each trial slot's PUs: whole cores, no core in two slots.
    public var slots: [[ProcessingUnit]]
    /// Cores per slot.
    public var coresPerTrial: Int
    /// Why this many slots of this size, in one line.
    public var reason: String
}

extension Topology {
    /// Cuts the allowed cores into disjoint sets of `width` cores, each inside the smallest
    /// domain that holds it: whole L3 domains (or NUMA nodes, whichever is smaller) first,
    /// then what is left of each NUMA node and package. A set never spans packages when a
    /// package has room for `width` cores; cores that fit no set stay idle. The sets come
    /// round-robin over packages and NUMA nodes, so the first few trials spread over the
    /// machine's memory controllers.
    public func trialSlots(width: Int) -> [[ProcessingUnit]] {
        let usable = allowedPUs
        var free = orderedCores(usable, policy: .compact)
        guard width > 0, !free.isEmpty else { return [] }
        let package: (ProcessingUnit) -> Int = { $0.package?.rawValue ?? -1 }
        let widestPackage = Dictionary(grouping: free, by: { package($0[0]) }).values.map(\.count).max() ?? 0
        // Smallest domains first; coarser than a package only when no package can hold a set.
        let levels = domainLevels(usable).reversed().map { level in { (core: [ProcessingUnit]) in level(core[0]) } }
        var slots: [[[ProcessingUnit]]] = []
        for key in levels + [{ _ in 0 }] {
            var left: [[ProcessingUnit]] = []
            for group in grouped(free, by: key) {
                let spansPackages = Set(group.items.map { package($0[0]) }).count > 1
                if spansPackages && width <= widestPackage {
                    left += group.items
                    continue
                }
                var cores = group.items[...]
                while cores.count >= width {
                    slots.append(Array(cores.prefix(width)))
                    cores = cores.dropFirst(width)
                }
                left += cores
            }
            free = left
        }
        let sets = slots.map { $0.flatMap { $0 } }
        return interleave(sets, by: domainLevels(usable).map { level in { level($0.first!) } })
    }

    /// The trial slots for a sweep of `trialCount` trials (nil: unbounded), each trial's step
    /// `shards` shards. A trial on `w` cores takes ceil(shards / w) rounds a step, so `auto`
    /// (`trials` nil) picks the width that trains the most shards per unit of time over all
    /// trials that can run at once, the larger width on a tie (each trial finishes sooner),
    /// and says why. With a count, the width is the largest that fits that many slots.
    public func trialPlan(trials: Int?, coresPerTrial shards: Int, trialCount: Int? = nil) throws(PlacementError) -> TrialPlan {
        let cores = Set(allowedPUs.map(\.core)).count
        guard cores > 0 else { throw PlacementError(description: "\(source) has no allowed processing unit to place trials on") }
        guard shards > 0 else { throw PlacementError(description: "a trial's step has \(shards) shards, expected at least 1") }
        func plural(_ n: Int, _ word: String) -> String { "\(n) \(word)\(n == 1 ? "" : "s")" }
        if let trials {
            guard trials > 0 else { throw PlacementError(description: "--parallel-trials: \(trials), expected at least 1 (or auto)") }
            guard trials <= cores else {
                throw PlacementError(description: "--parallel-trials: \(trials) trials side by side, but \(source) has \(cores) usable cores; expected at most \(cores), one core each")
            }
            var width = max(1, min(shards, cores / trials))
            while width > 1 && trialSlots(width: width).count < trials { width -= 1 }
            let slots = Array(trialSlots(width: width).prefix(trials))
            return TrialPlan(slots: slots, coresPerTrial: width, reason: "\(trials) trials asked for, \(plural(width, "core")) each (\(cores) usable cores; a trial's step has \(plural(shards, "shard")))")
        }
        // Score: shards trained per round over the trials that can run at once; on a tie, slots
        // that stay inside one package, then the wider slots.
        var best: (width: Int, slots: [[ProcessingUnit]], score: (Double, Int, Int))?
        for width in 1...min(shards, cores) {
            let slots = trialSlots(width: width)
            let running = min(slots.count, trialCount ?? .max)
            let rate = Double(running * shards) / Double((shards + width - 1) / width)
            let inPackage = slots.allSatisfy { Set($0.map(\.package)).count == 1 } ? 1 : 0
            let score = (rate, inPackage, width)
            if best == nil || score > best!.score { best = (width, slots, score) }
        }
        let (width, slots) = (best!.width, best!.slots)
        let idle = cores - slots.count * width
        let rounds = (shards + width - 1) / width
        return TrialPlan(
            slots: slots, coresPerTrial: width,
            reason: "auto: \(plural(shards, "shard")) a step, so \(plural(width, "core")) a trial (\(plural(rounds, "round")) a step)"
                + " trains the most shards at once (on a tie: within a package, then wider): \(cores) usable cores hold \(plural(slots.count, "such set")) inside their L3, NUMA and package domains"
                + (trialCount.map { $0 < slots.count ? ", \(plural($0, "trial")) to run" : "" } ?? "")
                + (idle > 0 ? " (\(plural(idle, "core")) left idle)" : ""))
    }
}
