import ShardwiseRuntime
import ShardwiseTopology
import XCTest

#if canImport(Glibc)
import Glibc
#endif

final class WorkerPoolTests: XCTestCase {
    /// Threads of this process, from /proc/self/task.
    func threadCount() -> Int {
        (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task").count) ?? -1
    }

    /// One worker per core; children run with `executorPreference` see the PU their worker is bound to.
    func testChildrenRunOnTheirWorkersPU() async throws {
        let topology = try Topology.thisMachine()
        let cores = Set(topology.allowedPUs.map(\.core)).count
        let plan = try topology.plan(workers: cores, policy: .compact)
        let before = threadCount()
        let pool = WorkerPool(plan: plan, topology: topology)
        XCTAssertEqual(threadCount(), before + cores)
        guard pool.allPinned else {
            pool.shutdown()
            throw XCTSkip("binding refused here: \(pool.pinningReport ?? "")")
        }
        let observations = await withTaskGroup(of: (Int, Int, Int).self) { group in
            for round in 0..<200 {
                let worker = pool.workers[round % cores]
                group.addTask(executorPreference: worker) {
                    (worker.index, Topology.currentCPU().rawValue, Int(pthread_self()))
                }
            }
            var all: [(Int, Int, Int)] = []
            for await observation in group { all.append(observation) }
            return all
        }
        XCTAssertEqual(observations.count, 200)
        var threadOfWorker: [Int: Int] = [:]
        for (worker, cpu, thread) in observations {
            XCTAssertEqual(cpu, plan.workers[worker].pu.rawValue, "worker \(worker) ran on CPU \(cpu)")
            if let known = threadOfWorker[worker] { XCTAssertEqual(known, thread) } else { threadOfWorker[worker] = thread }
        }
        XCTAssertEqual(Set(threadOfWorker.values).count, cores, "each worker is its own thread")
        pool.shutdown()
        XCTAssertEqual(threadCount(), before, "shutdown joins every worker thread")
    }

    /// A topology read from a file cannot pin; the pool still runs the work, unpinned, and says so.
    func testUnpinnedPoolStillRuns() async throws {
        let synthetic = try Topology(.synthetic("pack:1 l3:1 core:3 pu:1"))
        let pool = WorkerPool(plan: try synthetic.plan(workers: 3, policy: .spread), topology: synthetic)
        XCTAssertFalse(pool.allPinned)
        XCTAssert(pool.pinningReport!.contains("3 of 3 workers run unpinned"), pool.pinningReport!)
        let sum = await withTaskGroup(of: Int.self) { group in
            for i in 0..<300 { group.addTask(executorPreference: pool.workers[i % 3]) { i } }
            return await group.reduce(0, +)
        }
        XCTAssertEqual(sum, 299 * 300 / 2)
        pool.shutdown()
    }

    /// Many start/stop cycles leave no thread behind.
    func testRepeatedStartStop() throws {
        let topology = try Topology(.synthetic("pack:1 core:4 pu:1"))
        let before = threadCount()
        for _ in 0..<20 {
            let pool = WorkerPool(plan: try topology.plan(workers: 4, policy: .compact), topology: nil)
            pool.shutdown()
        }
        XCTAssertEqual(threadCount(), before)
    }
}
