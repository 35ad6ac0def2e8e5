import Foundation
import ShardwiseTopology
import XCTest

func sharedTopologies() throws -> [String] {
    let candidates = ["../shared/topologies", "../../shared/topologies"]
    guard let folder = candidates.first(where: { FileManager.default.fileExists(atPath: $0) }) else {
        throw XCTSkip("../shared/topologies is absent; real-machine placement tests skipped")
    }
    return try FileManager.default.contentsOfDirectory(atPath: folder).filter { $0.hasSuffix(".xml") }.sorted().map { "\(folder)/\($0)" }
}

let synthetics = [
    "pack:2 numa:2 l3:2 core:8 pu:2",
    "pack:1 l3:1 core:4 pu:1",
    "pack:4 numa:2 l3:3 core:4 pu:4",
    "pack:2 core:6 pu:2",
]

/// `lstopo-no-graphics -i INPUT --only TYPE`: one line per object, as lstopo reports them.
func hwlocCount(_ input: String, _ type: String) throws -> Int {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/lstopo-no-graphics")
    process.arguments = ["-i", input, "--only", type]
    let pipe = Pipe()
    process.standardOutput = pipe
    try process.run()
    let text = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    process.waitUntilExit()
    return text.split(separator: "\n").count
}

final class PlacementTests: XCTestCase {
    func allTopologies() throws -> [(String, Topology)] {
        var result = try synthetics.map { ($0, try Topology(.synthetic($0))) }
        if let files = try? sharedTopologies() {
            result += try files.map { ($0, try Topology(.xml(path: $0))) }
        }
        return result
    }

    func testCountsAgreeWithHwlocCalc() throws {
        guard FileManager.default.fileExists(atPath: "/usr/bin/lstopo-no-graphics") else { throw XCTSkip("lstopo is not installed (Debian package hwloc)") }
        for (input, topology) in try allTopologies() {
            XCTAssertEqual(topology.pus.count, try hwlocCount(input, "pu"), input)
            XCTAssertEqual(topology.coreCount, try hwlocCount(input, "core"), input)
            XCTAssertEqual(topology.numaNodes.count, try hwlocCount(input, "numa"), input)
            XCTAssertEqual(topology.packageCount, try hwlocCount(input, "package"), input)
            XCTAssertEqual(topology.l3Count, try hwlocCount(input, "l3cache"), input)
        }
    }

    /// Every plan: no PU twice, only allowed PUs, one worker per core before any SMT sibling.
    func testPlanInvariants() throws {
        for (input, topology) in try allTopologies() {
            let cores = Set(topology.allowedPUs.map(\.core)).count
            for policy in PlacementPolicy.allCases {
                for count in Set([1, 2, 3, cores / 2, cores, topology.allowedPUs.count]) where count > 0 {
                    let plan = try topology.plan(workers: count, policy: policy)
                    let pus = plan.workers.map(\.pu)
                    XCTAssertEqual(Set(pus).count, count, "\(input) \(policy) \(count): a PU used twice")
                    let allowed = Set(topology.allowedPUs.map(\.os))
                    XCTAssert(pus.allSatisfy(allowed.contains), "\(input): a disallowed or offline PU used")
                    let usedCores = plan.workers.map(\.core)
                    XCTAssertEqual(Set(usedCores).count, min(count, cores), "\(input) \(policy) \(count): SMT sibling before a free core")
                    XCTAssertEqual(plan.combineOrder.sorted(), Array(0..<count))
                    XCTAssertEqual(plan.notes.isEmpty, count <= cores, "\(input) \(policy) \(count): \(plan.notes)")
                }
            }
        }
    }

    /// Spread: packages and NUMA nodes get counts that differ by at most one.
    func testSpreadBalancesPackagesAndNodes() throws {
        for (input, topology) in try allTopologies() {
            let usable = topology.allowedPUs
            let packages = Set(usable.compactMap(\.package)), nodes = Set(usable.compactMap(\.numa))
            let coresPerNode = Dictionary(grouping: usable, by: { $0.numa }).mapValues { Set($0.map(\.core)).count }
            let balancedNodes = Set(coresPerNode.values).count == 1
            for count in 1...Set(usable.map(\.core)).count {
                let plan = try topology.plan(workers: count, policy: .spread)
                let perPackage = packages.map { p in plan.workers.filter { $0.package == p }.count }
                XCTAssertLessThanOrEqual(perPackage.max()! - perPackage.min()!, 1, "\(input) \(count) workers: packages \(perPackage)")
                if balancedNodes {
                    let perNode = nodes.map { n in plan.workers.filter { $0.numa == n }.count }
                    XCTAssertLessThanOrEqual(perNode.max()! - perNode.min()!, 1, "\(input) \(count) workers: NUMA nodes \(perNode)")
                }
            }
        }
    }

    /// Compact: an L3 domain is full before the next one is used, and domains are taken in order.
    func testCompactFillsL3DomainsFirst() throws {
        for (input, topology) in try allTopologies() {
            let usable = topology.allowedPUs
            let coresPerL3 = Dictionary(grouping: usable, by: { $0.l3 }).mapValues { Set($0.map(\.core)).count }
            for count in 1...Set(usable.map(\.core)).count {
                let plan = try topology.plan(workers: count, policy: .compact)
                let used = Dictionary(grouping: plan.workers, by: \.l3).mapValues(\.count)
                let partial = used.filter { $0.value < coresPerL3[$0.key]! }
                XCTAssertLessThanOrEqual(partial.count, 1, "\(input) \(count): more than one L3 domain partly filled")
            }
        }
    }

    /// In the combine order, each L3 domain's, NUMA node's and package's workers are contiguous,
    /// so a pairwise tree over it combines partners in the same domain first.
    func testCombineOrderGroupsNeighbours() throws {
        for (input, topology) in try allTopologies() {
            for policy in PlacementPolicy.allCases {
                let plan = try topology.plan(workers: min(16, topology.allowedPUs.count), policy: policy)
                let ordered = plan.combineOrder.map { plan.workers[$0] }
                for key in [\WorkerPlacement.l3, \WorkerPlacement.numa, \WorkerPlacement.package] {
                    let runs = ordered.map { $0[keyPath: key] }
                    var seen: Set<LogicalIndex?> = []
                    var previous: LogicalIndex?? = nil
                    for value in runs where previous == nil || previous! != value {
                        XCTAssertFalse(seen.contains(value), "\(input) \(policy): domain \(String(describing: value)) split in the combine order")
                        seen.insert(value)
                        previous = value
                    }
                }
            }
        }
    }

    func testSMTAndOversubscription() throws {
        let topology = try Topology(.synthetic("pack:1 l3:1 core:4 pu:2"))
        let smt = try topology.plan(workers: 4, policy: .compact, smt: true)
        XCTAssertEqual(Set(smt.workers.map(\.core)).count, 2, "--smt compact fills a core's threads first")
        let more = try topology.plan(workers: 6, policy: .spread)
        XCTAssertEqual(Set(more.workers.map(\.core)).count, 4)
        XCTAssert(more.notes.first!.contains("SMT siblings"))
        XCTAssertThrowsError(try topology.plan(workers: 9, policy: .spread)) { error in
            XCTAssert("\(error)".contains("--workers: 9 workers but"), "\(error)")
            XCTAssert("\(error)".contains("--oversubscribe"), "\(error)")
        }
        let over = try topology.plan(workers: 9, policy: .spread, oversubscribe: true)
        XCTAssertEqual(over.workers.count, 9)
        XCTAssert(over.notes.contains { $0.contains("oversubscribed") })
    }

    func testSparseAndOfflineNumbering() throws {
        let files = try sharedTopologies()
        let offline = try Topology(.xml(path: files.first { $0.hasSuffix("linux-16em64t-4s2c2t-offlines.xml") }!))
        XCTAssertEqual(offline.pus.count, 12)
        let spread = try offline.plan(workers: 7, policy: .spread)
        XCTAssertEqual(Set(spread.workers.map(\.core)).count, 7)
        let sparse = try Topology(.xml(path: files.first { $0.hasSuffix("linux-48amd64-4pa2n6c-sparse.xml") }!))
        let osIndices = sparse.pus.map(\.os.rawValue) + sparse.numaNodes.map(\.os.rawValue)
        let logical = sparse.pus.map(\.logical.rawValue) + sparse.numaNodes.map(\.logical.rawValue)
        XCTAssertNotEqual(osIndices, logical, "OS numbering should be sparse here")
        let plan = try sparse.plan(workers: 48, policy: .compact)
        XCTAssertEqual(Set(plan.workers.map(\.pu)), Set(sparse.pus.map(\.os)))
        for w in plan.workers { XCTAssertEqual(sparse.pus.first { $0.os == w.pu }?.logical, w.puLogical) }
    }

    func testBadInputs() {
        XCTAssertThrowsError(try Topology(.synthetic("pack:x"))) { XCTAssert("\($0)".contains("invalid synthetic description"), "\($0)") }
        XCTAssertThrowsError(try Topology(.xml(path: "/nonexistent.xml"))) { XCTAssert("\($0)".contains("/nonexistent.xml"), "\($0)") }
    }
}
