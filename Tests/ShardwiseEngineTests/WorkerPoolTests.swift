import ShardwiseEngine
import ShardwiseApp
import ShardwiseTopology
import XCTest

#if canImport(Glibc)
import Glibc
#endif

final class WorkerPoolTests: XCTestCase {
    /// Whether the thread with this kernel id still exists in this process.
    func alive(_ tid: Int32) -> Bool {
        FileManager.default.fileExists(atPath: "/proc/self/task/\(tid)")
    }

    /// A thread's identity: its id and its start time (field 22 of /proc/self/task/<tid>/stat,
    /// in clock ticks), so that a later thread given a reused id is not mistaken for it.
    struct ThreadIdentity: Equatable {
        var tid: Int32
        var start: UInt64?

        init(_ tid: Int32) {
            self.tid = tid
            start = Self.startTime(tid)
        }

        static func startTime(_ tid: Int32) -> UInt64? {
            guard let stat = try? String(contentsOfFile: "/proc/self/task/\(tid)/stat", encoding: .utf8),
                  let close = stat.lastIndex(of: ")")
            else { return nil }
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            return fields.count > 19 ? UInt64(fields[19]) : nil  // fields[0] is field 3 (state)
        }

        /// Still this thread: the id exists and started at the same tick.
        var exists: Bool { start != nil && Self.startTime(tid) == start }
    }

    /// The threads among `threads` that still exist after up to `seconds`. `/proc/self/task/<tid>`
    /// can outlive `pthread_join` for a moment (the kernel wakes the joiner when it clears the
    /// thread id, before it releases the task), so a joined thread is given time to vanish.
    func survivors(_ threads: [ThreadIdentity], within seconds: Double = 5) -> [Int32] {
        let deadline = Date().addingTimeInterval(seconds)
        var left = threads.filter(\.exists)
        while !left.isEmpty && Date() < deadline {
            usleep(1_000)
            left = left.filter(\.exists)
        }
        return left.map(\.tid)
    }

    /// One worker per core; children run with `executorPreference` see the PU their worker is bound to.
    func testChildrenRunOnTheirWorkersPU() async throws {
        let topology = try Topology.thisMachine()
        let cores = Set(topology.allowedPUs.map(\.core)).count
        let plan = try topology.plan(workers: cores, policy: .compact)
        let pool = try WorkerPool(plan: plan, topology: topology)
        let tids = pool.workers.map(\.threadID)
        XCTAssertEqual(Set(tids).count, cores)
        XCTAssert(tids.allSatisfy(alive))
        let identities = tids.map(ThreadIdentity.init)
        guard pool.allPinned else {
            pool.shutdown()
            throw XCTSkip("binding refused here: \(pool.pinningReport ?? "")")
        }
        let observations = await withTaskGroup(of: (Int, Int, Int32).self) { group in
            for round in 0..<200 {
                let worker = pool.workers[round % cores]
                group.addTask(executorPreference: worker) {
                    (worker.index, Topology.currentCPU().rawValue, Topology.currentThreadID())
                }
            }
            var all: [(Int, Int, Int32)] = []
            for await observation in group { all.append(observation) }
            return all
        }
        XCTAssertEqual(observations.count, 200)
        for (worker, cpu, thread) in observations {
            XCTAssertEqual(cpu, plan.workers[worker].pu.rawValue, "worker \(worker) ran on CPU \(cpu)")
            XCTAssertEqual(thread, tids[worker], "child of worker \(worker) ran on another thread")
        }
        pool.shutdown()
        XCTAssertEqual(survivors(identities), [], "shutdown joins every worker thread")
    }

    /// A topology read from a file cannot pin; the pool still runs the work, unpinned, and says so.
    func testUnpinnedPoolStillRuns() async throws {
        let synthetic = try Topology(.synthetic("pack:1 l3:1 core:3 pu:1"))
        let pool = try WorkerPool(plan: try synthetic.plan(workers: 3, policy: .spread), topology: synthetic)
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
        var all: [ThreadIdentity] = []
        for _ in 0..<20 {
            let pool = try WorkerPool(plan: try topology.plan(workers: 4, policy: .compact), topology: nil)
            all += pool.workers.map { ThreadIdentity($0.threadID) }
            pool.shutdown()
        }
        XCTAssertEqual(all.count, 80)
        XCTAssert(all.allSatisfy { $0.start != nil }, "every worker's start time was read while it ran")
        XCTAssertEqual(survivors(all), [], "a worker thread outlived its pool")
    }
}
