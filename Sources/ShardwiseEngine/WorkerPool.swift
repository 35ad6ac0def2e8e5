import ShardwiseKernels
import ShardwiseTopology
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// One pinned OS thread that runs Swift tasks: a `TaskExecutor` (SE-0417), so
/// `group.addTask(executorPreference: worker) { ... }` runs the child here.
///
/// Jobs arrive through a lock-free ring. An idle worker spins briefly (a step's
/// next dispatch usually follows within microseconds), then sleeps on a
/// semaphore; producers wake it only when it announced it sleeps.
public final class PinnedWorker: TaskExecutor, @unchecked Sendable {
    /// The worker's index in its pool, 0..<count.
    public let index: Int
    /// The processing unit and memory node the worker is bound to.
    public let placement: WorkerPlacement
    let ring = JobRing(capacity: 1024)
    let sleeping = Atomic<Bool>(false)
    let running = Atomic<Bool>(true)
    var semaphore = sem_t()
    var thread: pthread_t?
    /// Set by the thread once started: whether binding to `placement.pu` succeeded.
    let pinned = Atomic<Bool>(false)
    /// Set by the thread after it tried to bind; the pool's init waits for it.
    let started = Atomic<Bool>(false)
    /// Why binding failed, when it did (read after `started`).
    var bindingError: String?
    /// The kernel's id of the worker's thread (read after `started`).
    public private(set) var threadID: Int32 = 0

    /// Spin iterations before sleeping (~20-50 µs here): long enough to catch a
    /// step's next dispatch, short enough not to steal a core from other work.
    static let spinLimit = 20_000

    init(index: Int, placement: WorkerPlacement) {
        self.index = index
        self.placement = placement
        sem_init(&semaphore, 0, 0)
    }

    deinit { sem_destroy(&semaphore) }

    /// Queues a job on the worker's thread (`TaskExecutor`); the pool must not be shut down.
    public func enqueue(_ job: consuming ExecutorJob) {
        // A job sent to a stopped worker would never run and its awaiter would hang forever.
        precondition(running.load(ordering: .relaxed), "task sent to worker \(index) after its pool was shut down")
        let unowned = UnownedJob(job)
        while !ring.push(unowned) { sched_yield() }  // full: 1024 queued jobs, only under abuse
        // Sequentially consistent fence: orders the push before reading `sleeping`,
        // pairing with the fence in `run()` between storing `sleeping` and re-checking
        // the ring (Dekker's pattern), so a wake-up is never lost.
        atomicMemoryFence(ordering: .sequentiallyConsistent)
        if sleeping.load(ordering: .relaxed), sleeping.exchange(false, ordering: .acquiringAndReleasing) {
            sem_post(&semaphore)
        }
    }

    func run(topology: Topology?) {
        threadID = Topology.currentThreadID()
        if let topology, topology.isThisSystem {
            do {
                try topology.bindCurrentThread(to: placement.pu)
                pinned.store(true, ordering: .relaxed)
            } catch {
                bindingError = error.description
            }
        } else {
            bindingError = topology == nil ? "no topology given" : "topology \(topology!.source) is not this machine"
        }
        // Releasing: the pool's init, which acquires `started`, sees `pinned` and `bindingError`.
        started.store(true, ordering: .releasing)
        let executor = asUnownedTaskExecutor()
        var idle = 0
        while true {
            if let job = ring.pop() {
                job.runSynchronously(on: executor)
                idle = 0
                continue
            }
            if !running.load(ordering: .acquiring) { break }
            idle += 1
            if idle < Self.spinLimit { continue }
            sleeping.store(true, ordering: .relaxed)
            atomicMemoryFence(ordering: .sequentiallyConsistent)
            if let job = ring.pop() {
                // A producer may have seen `sleeping` and posted: harmless, the next wait returns at once.
                _ = sleeping.exchange(false, ordering: .acquiringAndReleasing)
                job.runSynchronously(on: executor)
                idle = 0
                continue
            }
            if !running.load(ordering: .acquiring) { break }
            while sem_wait(&semaphore) != 0 && errno == EINTR {}
            idle = 0
        }
    }

    func stop() {
        running.store(false, ordering: .releasing)
        atomicMemoryFence(ordering: .sequentiallyConsistent)
        sem_post(&semaphore)
    }
}

/// The only owner of threads in Shardwise: one pinned worker per planned placement.
///
/// Start it with a plan from the topology layer; run children on its workers
/// with `addTask(executorPreference: pool.workers[i])`; call `shutdown()` (or let
/// it deinit) to stop and join every thread.
public final class WorkerPool: @unchecked Sendable {
    /// Where each worker runs.
    public let plan: PlacementPlan
    /// The workers, one per planned placement; `workers[0]` runs the training loop.
    public let workers: [PinnedWorker]
    let topology: Topology?
    var threads: [pthread_t] = []
    private var isShutDown = false
    private var helper: PinnedWorker?

    /// Starts one thread per worker in `plan`; binds each to its PU when `topology` is this machine.
    /// Throws (after stopping the threads already started) when the system refuses a thread.
    public init(plan: PlacementPlan, topology: Topology?) throws(PlacementError) {
        self.plan = plan
        self.topology = topology
        workers = plan.workers.map { PinnedWorker(index: $0.worker, placement: $0) }
        for worker in workers {
            do { try start(worker) } catch {
                shutdown()
                throw PlacementError(description: "cannot start worker thread \(threads.count + 1) of \(workers.count) (\(error)); use fewer --workers")
            }
        }
        for worker in workers {
            while !worker.started.load(ordering: .acquiring) { sched_yield() }
        }
    }

    /// Starts `worker`'s thread; throws pthread_create's error.
    private func start(_ worker: PinnedWorker) throws(PlacementError) {
        let context = Unmanaged.passRetained(ThreadContext(worker: worker, topology: topology)).toOpaque()
        var thread = pthread_t()
        let status = pthread_create(&thread, nil, { raw in
            let context = Unmanaged<ThreadContext>.fromOpaque(raw!).takeRetainedValue()
            context.worker.run(topology: context.topology)
            return nil
        }, context)
        guard status == 0 else {
            Unmanaged<ThreadContext>.fromOpaque(context).release()
            throw PlacementError(description: "pthread_create: \(String(cString: strerror(status)))")
        }
        threads.append(thread)
    }

    /// A thread for driving cross-rank transfers while the workers compute (MPI moves data
    /// only inside its calls): started on first use, on the last worker's PU, and mostly
    /// asleep (it polls with short naps). Not a worker: it computes nothing.
    public func communicationWorker() throws(PlacementError) -> PinnedWorker {
        if let helper { return helper }
        let last = workers[workers.count - 1].placement
        let worker = PinnedWorker(index: workers.count, placement: last)
        try start(worker)
        while !worker.started.load(ordering: .acquiring) { sched_yield() }
        helper = worker
        return worker
    }

    /// Whether every worker is bound to its PU (false for a topology read from a file,
    /// or where the container forbids binding).
    public var allPinned: Bool {
        workers.allSatisfy { $0.pinned.load(ordering: .relaxed) }
    }

    /// One line saying why workers run unpinned, or nil when all are pinned.
    public var pinningReport: String? {
        guard let failed = workers.first(where: { !$0.pinned.load(ordering: .relaxed) }) else { return nil }
        let count = workers.filter { !$0.pinned.load(ordering: .relaxed) }.count
        return "\(count) of \(workers.count) workers run unpinned (\(failed.bindingError ?? "binding failed"))"
    }

    /// Memory bound to `worker`'s NUMA node through hwloc, when the pool has this machine's topology.
    public func memoryAllocator(for worker: PinnedWorker) -> MemoryAllocator? {
        guard let topology, topology.isThisSystem, let node = worker.placement.memoryNode else { return nil }
        return MemoryAllocator(
            allocate: { topology.allocate(bytes: $0, onNode: node) },
            deallocate: { topology.free($0, bytes: $1) })
    }

    /// Stops every worker after the jobs already queued and joins their threads.
    public func shutdown() {
        guard !isShutDown else { return }
        isShutDown = true
        for worker in workers { worker.stop() }
        helper?.stop()
        for thread in threads {
            // Called from one of the pool's own workers (async code resumed there), that
            // thread cannot join itself: detach it; it ends once its current job returns.
            if pthread_equal(thread, pthread_self()) != 0 {
                pthread_detach(thread)
            } else {
                pthread_join(thread, nil)
            }
        }
    }

    deinit { shutdown() }
}

final class ThreadContext {
    let worker: PinnedWorker
    let topology: Topology?
    init(worker: PinnedWorker, topology: Topology?) {
        self.worker = worker
        self.topology = topology
    }
}

extension WorkerPool {
    /// A pool on this machine: `workers` (default one per core) placed by `policy`.
    /// Throws `PlacementError` (too many workers) or `TopologyError` (hwloc failed).
    /// With `share` (index, count), the pool uses only that block of the machine's cores
    /// (an MPI rank's part of its host); with `within`, only those PUs (a sweep trial's core
    /// set). Either way it defaults to one worker per core it may use.
    public static func onThisMachine(
        workers: Int? = nil, policy: PlacementPolicy = .compact, smt: Bool = false, oversubscribe: Bool = false,
        topology: Topology? = nil, share: (index: Int, count: Int)? = nil, within: [OSIndex]? = nil
    ) throws -> WorkerPool {
        let topology = try topology ?? Topology.thisMachine()
        let pus = within.map { set in topology.allowedPUs.filter { set.contains($0.os) } }
        let usable = try share.map { try topology.share($0.index, of: $0.count, oversubscribe: oversubscribe) } ?? pus ?? topology.allowedPUs
        let count = workers ?? Set(usable.map(\.core)).count
        return try WorkerPool(
            plan: try topology.plan(workers: count, policy: policy, smt: smt, oversubscribe: oversubscribe, share: share, within: pus),
            topology: topology)
    }
}
