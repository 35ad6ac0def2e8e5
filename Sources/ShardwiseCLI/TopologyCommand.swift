import ArgumentParser
import Foundation
import Shardwise
import ShardwiseApp

struct TopologyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "topology",
        abstract: "Show a machine's topology and the placement plan for a number of workers.")

    @Option(help: "An hwloc XML export to read instead of this machine.")
    var topology: String?

    @Option(help: "An hwloc synthetic description, e.g. \"pack:2 numa:2 l3:2 core:8 pu:2\".")
    var synthetic: String?

    @Option(help: "Workers to place (default: one per core).")
    var workers: Int?

    @Option(help: "Placement policy: compact or spread.")
    var policy: PlacementPolicy = .compact

    @Flag(help: "Place workers on SMT siblings too.")
    var smt = false

    @Flag(help: "Allow more workers than processing units.")
    var oversubscribe = false

    @Flag(help: "Print the topology and plan as JSON.")
    var json = false

    @Option(help: "Show the cores of trials side by side (as sweep --parallel-trials): a count, or auto.")
    var trials: String?

    @Option(help: "With --trials: shards per step of each trial (--batch-size / --shard-size), the most cores a trial can use.")
    var shards = 2

    func validate() throws {
        if topology != nil && synthetic != nil {
            throw ValidationError("--topology and --synthetic: give one machine description, not both")
        }
    }

    func run() throws {
        let machine: Topology
        do {
            machine = try Topology(
                topology.map { .xml(path: $0) } ?? synthetic.map { .synthetic($0) } ?? .thisMachine)
        } catch { throw RunError(error.description) }
        if let trials {
            guard trials == "auto" || (1...SweepCommand.maximumTrials).contains(Int(trials) ?? 0) else {
                throw ValidationError("--trials: '\(trials)', expected a count from 1 to \(SweepCommand.maximumTrials) or auto")
            }
            guard (1...Int(Int32.max)).contains(shards) else { throw ValidationError("--shards: \(shards), expected 1 to 2147483647 shards per step") }
            let plan: TrialPlan
            do { plan = try machine.trialPlan(trials: Int(trials), coresPerTrial: shards) } catch { throw ValidationError(error.description) }
            if json {
                print(String(decoding: try JSON.encoder(pretty: true).encode(TrialReport(plan)), as: UTF8.self))
            } else {
                print(plan.tableDescription())
            }
            return
        }
        let count = workers ?? Set(machine.allowedPUs.map(\.core)).count
        let plan: PlacementPlan
        do {
            plan = try machine.plan(workers: count, policy: policy, smt: smt, oversubscribe: oversubscribe)
        } catch { throw ValidationError(error.description) }
        if json {
            let report = TopologyReport(machine: machine, plan: plan)
            print(String(decoding: try JSON.encoder(pretty: true).encode(report), as: UTF8.self))
        } else {
            print(machine.treeDescription())
            print()
            print(plan.tableDescription())
        }
    }
}

extension PlacementPolicy: ExpressibleByArgument {}

/// `shardwise topology --json`: the machine's counts and the plan.
struct TopologyReport: Encodable {
    var source: String
    var packages: Int
    var numaNodes: [NUMA]
    var l3Domains: Int
    var cores: Int
    var pus: Int
    var allowedPus: Int
    var plan: PlacementPlan

    struct NUMA: Encodable {
        var osIndex: Int
        var logicalIndex: Int
        var memoryBytes: UInt64
    }

    init(machine: Topology, plan: PlacementPlan) {
        source = machine.source.description
        packages = machine.packageCount
        numaNodes = machine.numaNodes.map { NUMA(osIndex: $0.os.rawValue, logicalIndex: $0.logical.rawValue, memoryBytes: $0.memoryBytes) }
        l3Domains = machine.l3Count
        cores = machine.coreCount
        pus = machine.pus.count
        allowedPus = machine.allowedPUs.count
        self.plan = plan
    }
}

/// `shardwise topology --trials ... --json`: each slot's PUs and domains.
struct TrialReport: Encodable {
    var coresPerTrial: Int
    var reason: String
    var slots: [[Int]]
    var packages: [[Int]]
    var numaNodes: [[Int]]

    init(_ plan: TrialPlan) {
        coresPerTrial = plan.coresPerTrial
        reason = plan.reason
        slots = plan.slots.map { $0.map(\.os.rawValue) }
        packages = plan.slots.map { Array(Set($0.compactMap(\.package?.rawValue))).sorted() }
        numaNodes = plan.slots.map { Array(Set($0.compactMap(\.numa?.rawValue))).sorted() }
    }
}
