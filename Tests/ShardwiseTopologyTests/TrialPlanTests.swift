import Foundation
import ShardwiseTopology
import XCTest

/// `sweep --parallel-trials`: the core sets trials train on side by side.
final class TrialPlanTests: XCTestCase {
    /// What every plan must satisfy on `topology`: slots of whole allowed cores, no core (or
    /// PU) in two slots, each slot `coresPerTrial` cores, and no slot across packages when a
    /// package has room for one.
    func checkInvariants(_ plan: TrialPlan, _ topology: Topology, _ context: String) {
        let allowed = topology.allowedPUs
        let widestPackage = Dictionary(grouping: Set(allowed.map(\.core)), by: { core in allowed.first { $0.core == core }!.package }).values.map(\.count).max()!
        var seenCores = Set<LogicalIndex>(), seenPUs = Set<OSIndex>()
        XCTAssertFalse(plan.slots.isEmpty, context)
        for slot in plan.slots {
            let cores = Set(slot.map(\.core))
            XCTAssertEqual(cores.count, plan.coresPerTrial, "\(context): a slot of \(cores.count) cores")
            XCTAssert(seenCores.isDisjoint(with: cores), "\(context): a core in two trial slots")
            XCTAssert(seenPUs.isDisjoint(with: slot.map(\.os)), "\(context): a PU in two trial slots")
            seenCores.formUnion(cores)
            seenPUs.formUnion(slot.map(\.os))
            XCTAssert(slot.allSatisfy(\.allowed), "\(context): a disallowed PU in a slot")
            // Whole cores: every allowed PU of each of the slot's cores.
            XCTAssertEqual(Set(slot.map(\.os)), Set(allowed.filter { cores.contains($0.core) }.map(\.os)), "\(context): a slot holds part of a core")
            if plan.coresPerTrial <= widestPackage {
                XCTAssertEqual(Set(slot.map(\.package)).count, 1, "\(context): a trial split across packages though a package holds \(widestPackage) cores")
            }
        }
        XCTAssertLessThanOrEqual(plan.slots.count * plan.coresPerTrial, Set(allowed.map(\.core)).count, context)
    }

    /// Every topology (../shared/topologies, topology/, synthetic ones), auto and explicit
    /// counts, for trials of 1 to 16 shards a step.
    func testEveryTopologyPlansDisjointTrialsInsidePackages() throws {
        for (name, topology) in try allTestTopologies() {
            let cores = Set(topology.allowedPUs.map(\.core)).count
            for shards in [1, 2, 3, 4, 6, 8, 16] {
                let auto = try topology.trialPlan(trials: nil, coresPerTrial: shards)
                checkInvariants(auto, topology, "\(name), auto, \(shards) shards")
                XCTAssertLessThanOrEqual(auto.coresPerTrial, shards, name)
                for count in Set([1, 2, 3, max(1, cores / 2), cores]) where count <= cores {
                    let plan = try topology.trialPlan(trials: count, coresPerTrial: shards)
                    XCTAssertEqual(plan.slots.count, count, "\(name): \(count) trials asked for, \(shards) shards")
                    checkInvariants(plan, topology, "\(name), \(count) trials, \(shards) shards")
                }
            }
            XCTAssertThrowsError(try topology.trialPlan(trials: cores + 1, coresPerTrial: 2), name) { error in
                XCTAssert("\(error)".contains("expected at most \(cores)"), "\(error)")
            }
        }
    }

    /// Trials fill whole L3 domains, one trial per domain when a step's shards fill it, and
    /// the first trials go to different packages.
    func testSlotsFollowL3DomainsAndSpreadOverPackages() throws {
        let machine = try Topology(.synthetic("pack:2 numa:1 l3:2 core:4 pu:2"))
        let plan = try machine.trialPlan(trials: nil, coresPerTrial: 4)
        XCTAssertEqual(plan.slots.count, 4)
        XCTAssertEqual(plan.coresPerTrial, 4)
        for slot in plan.slots { XCTAssertEqual(Set(slot.map(\.l3)).count, 1, "a trial spans L3 domains though one holds it") }
        XCTAssertNotEqual(plan.slots[0][0].package, plan.slots[1][0].package, "the first two trials share a package")
        // Two trials of 4 shards on this machine: one per package.
        let two = try machine.trialPlan(trials: 2, coresPerTrial: 4)
        XCTAssertEqual(Set(two.slots.map { $0[0].package }).count, 2)
        // 3 shards a step on 4-core L3 domains: 3-core trials would leave a core of each idle,
        // 2-core ones take 2 rounds a step; 1-core ones use every core: auto weighs rounds.
        let three = try machine.trialPlan(trials: nil, coresPerTrial: 3)
        checkInvariants(three, machine, "3 shards")
        XCTAssert(three.reason.contains("auto"), three.reason)
        // A sweep of 2 trials does not need 16 one-core slots: wider slots finish each sooner.
        let few = try machine.trialPlan(trials: nil, coresPerTrial: 4, trialCount: 2)
        XCTAssertEqual(few.coresPerTrial, 4)
    }
}
