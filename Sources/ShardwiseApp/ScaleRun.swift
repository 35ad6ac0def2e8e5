import Foundation
import Shardwise

/// One measured point of `shardwise scale`.
public struct ScalePoint: Codable, Sendable {
    /// "strong" (fixed global batch) or "weak" (fixed batch per worker).
    public var mode: String
    public var workers: Int
    public var globalBatch: Int
    public var samplesPerSecond: Double
    public var samplesPerSecondMin: Double
    public var samplesPerSecondMax: Double
    public var speedup: Double
    public var efficiency: Double
    /// Combined GEMM rate of `workers` independent single-thread GEMMs over one alone: the machine's ceiling.
    public var gemmCeiling: Double
    public var computeMs: Double
    public var waitingMs: Double
    public var reductionMs: Double
}

/// A point of the projection onto another topology: a model's estimate, never a measurement.
public struct ProjectedPoint: Codable, Sendable {
    public var workers: Int
    public var samplesPerSecond: Double
    public var efficiency: Double
    public var computeMs: Double
    public var reductionMs: Double
}

public struct ScaleReport: Codable, Sendable {
    public var command: String
    public var shardwiseVersion: String
    public var machine: String
    public var policy: String
    public var blas: String
    public var network: NetworkConfiguration
    public var shardSize: Int
    public var batchSize: Int
    public var data: String
    public var points: [ScalePoint]
    public var projectionTarget: String?
    public var projectionModel: String?
    public var projection: [ProjectedPoint]?

    public init(
        command: String, shardwiseVersion: String, machine: String, policy: String, blas: String,
        network: NetworkConfiguration, shardSize: Int, batchSize: Int, data: String, points: [ScalePoint]
    ) {
        self.command = command
        self.shardwiseVersion = shardwiseVersion
        self.machine = machine
        self.policy = policy
        self.blas = blas
        self.network = network
        self.shardSize = shardSize
        self.batchSize = batchSize
        self.data = data
        self.points = points
    }
}

/// `shardwise scale`: training-step throughput for a set of worker counts, under
/// strong and weak scaling, each point beside the machine's own ceiling for that
/// worker count, measured in the same run.
public enum ScaleRun {
    public struct Settings: Sendable {
        public var workerCounts: [Int]
        public var policy: PlacementPolicy = .compact
        public var windows = 5
        public var stepsPerWindow = 8
        public var modes = ["strong", "weak"]
        public var command = ""
        public init(workerCounts: [Int]) { self.workerCounts = workerCounts }
    }

    public static func run(
        configuration: RunConfiguration, data: Dataset, dataName: String, settings: Settings,
        projectTo target: Topology?, projectWorkers: [Int], line: (String) -> Void
    ) async throws -> ScaleReport {
        let blas = BLAS.ifPresent
        let machine = try Topology.thisMachine()
        let network = try Network(configuration.network)
        let description = "\(machine.packageCount) package(s), \(machine.numaNodes.count) NUMA node(s), \(machine.coreCount) cores, \(machine.pus.count) PUs"
        line("shardwise scale on this machine (\(description)), BLAS \(BLAS.kernelsDescription), policy \(settings.policy.rawValue)")
        line("network \(TrainingRun.describe(configuration.network)), shards of \(configuration.shardSize), \(dataName)")
        if !settings.command.isEmpty { line("command: \(settings.command)") }
        let single = try WorkerPool(plan: try machine.plan(workers: 1, policy: .compact), topology: machine)
        let gemmOne = try await MachineLimits.concurrentGEMM(pool: single, network: network, rows: 128, seconds: 0.5)
        single.shutdown()
        var points: [ScalePoint] = []
        var baseline: [String: Double] = [:]
        for workers in settings.workerCounts {
            let pool = try WorkerPool(plan: try machine.plan(workers: workers, policy: settings.policy, oversubscribe: true), topology: machine)
            defer { pool.shutdown() }
            let gemm = workers == 1 ? gemmOne : try await MachineLimits.concurrentGEMM(pool: pool, network: network, rows: 128, seconds: 0.5)
            for mode in settings.modes {
                var c = configuration
                if mode == "weak" { c.batchSize = configuration.batchSize * workers }
                let (rates, split) = try await measure(pool: pool, configuration: c, data: data, settings: settings)
                // The first point of each mode is the baseline: its per-worker median rate.
                if baseline[mode] == nil { baseline[mode] = median(rates) / Double(workers) }
                points.append(point(
                    mode: mode, workers: workers, globalBatch: c.batchSize, windowRates: rates,
                    baselinePerWorker: baseline[mode]!, gemmCeiling: gemm / gemmOne, split: split))
            }
        }
        var report = ScaleReport(
            command: settings.command, shardwiseVersion: ShardwiseVersion.current, machine: description, policy: settings.policy.rawValue,
            blas: blas.map { "\($0.build); kernels \($0.kernels)" } ?? "none", network: configuration.network, shardSize: configuration.shardSize,
            batchSize: configuration.batchSize, data: dataName, points: points)
        if let target {
            try await project(&report, onto: target, workers: projectWorkers, configuration: configuration, data: data, machine: machine)
        }
        for l in table(report) { line(l) }
        return report
    }

    /// A point from its timed windows' samples/s: the median, min and max, the speedup over
    /// `baselinePerWorker` x 1 worker, and efficiency = speedup / workers.
    public static func point(
        mode: String, workers: Int, globalBatch: Int, windowRates: [Double], baselinePerWorker: Double,
        gemmCeiling: Double, split: StepSplit
    ) -> ScalePoint {
        let sorted = windowRates.sorted()
        let middle = median(windowRates)
        let speedup = middle / baselinePerWorker
        return ScalePoint(
            mode: mode, workers: workers, globalBatch: globalBatch, samplesPerSecond: middle,
            samplesPerSecondMin: sorted.first!, samplesPerSecondMax: sorted.last!, speedup: speedup,
            efficiency: speedup / Double(workers), gemmCeiling: gemmCeiling,
            computeMs: split.compute * 1e3, waitingMs: split.waiting * 1e3, reductionMs: split.reduction * 1e3)
    }

    /// The middle value (the mean of the middle two for an even count).
    static func median(_ values: [Double]) -> Double {
        let sorted = values.sorted()
        return sorted.count % 2 == 1 ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
    }

    /// Samples/s of each timed window after a warm-up, and the mean step split.
    static func measure(
        pool: WorkerPool, configuration: RunConfiguration, data: Dataset, settings: Settings
    ) async throws -> ([Double], StepSplit) {
        let trainer = try Trainer(network: configuration.network, data: data, configuration: configuration.training, workers: pool)
        return try await MachineLimits.timedSteps(trainer, windows: settings.windows, stepsPerWindow: settings.stepsPerWindow)
    }

    /// The projection model, stated in `projectionModel`.
    static func project(
        _ report: inout ScaleReport, onto target: Topology, workers counts: [Int], configuration: RunConfiguration,
        data: Dataset, machine: Topology
    ) async throws {
        // Inputs measured here: one shard's compute time on one worker, and the reduction's bandwidth on this machine's NUMA node.
        let one = try WorkerPool(plan: try machine.plan(workers: 1, policy: .compact), topology: machine)
        defer { one.shutdown() }
        let c = configuration
        let settings = Settings(workerCounts: [1])
        let (_, split) = try await measure(pool: one, configuration: c, data: data, settings: settings)
        let shardSeconds = split.compute / Double(c.shardsPerBatch)
        let all = try WorkerPool(plan: try machine.plan(workers: Set(machine.allowedPUs.map(\.core)).count, policy: .compact), topology: machine)
        defer { all.shutdown() }
        let nodeBandwidth = try await MachineLimits.reductionBandwidth(pool: all, configuration: c) * 1e9  // bytes/s per NUMA node
        let crossBandwidth = nodeBandwidth / 2
        let parameters = Double(try Network(c.network).layout.parameterCount)
        var projected: [ProjectedPoint] = []
        var perWorkerOne = 0.0
        for w in [1] + counts {
            guard let plan = try? target.plan(workers: w, policy: .spread) else { continue }
            let nodes = Double(Set(plan.workers.compactMap(\.numa)).count)
            let packages = Double(Set(plan.workers.compactMap(\.package)).count)
            let shards = Double(w * c.shardsPerBatch)  // weak scaling: the batch per worker is fixed
            let bytes = (shards + 4) * parameters * 4
            let crossFraction = packages > 1 ? (packages - 1) / packages : 0
            let reduction = bytes * (1 - crossFraction) / (nodeBandwidth * max(nodes, 1)) + bytes * crossFraction / (crossBandwidth * max(packages, 1))
            let compute = Double(c.shardsPerBatch) * shardSeconds
            let rate = Double(w * c.batchSize) / (compute + reduction)
            if w == 1 { perWorkerOne = rate }
            if counts.contains(w) {
                projected.append(ProjectedPoint(workers: w, samplesPerSecond: rate, efficiency: rate / (Double(w) * perWorkerOne), computeMs: compute * 1e3, reductionMs: reduction * 1e3))
            }
        }
        report.projectionTarget = target.source.description
        report.projectionModel = String(
            format: "PROJECTION, not a measurement. Weak scaling at %d samples per worker, workers placed by 'spread'. Compute per step = shards per worker x %.2f ms (one shard on one worker, measured here; every core assumed as fast as this one). Reduction per step = (shards + 4) x parameters x 4 bytes, at %.1f GB/s per NUMA node in use (this machine's reduction bandwidth), except the fraction (packages - 1)/packages of it that crosses sockets, at half that per package. Dispatch and waiting are ignored.",
            c.batchSize, shardSeconds * 1e3, nodeBandwidth / 1e9)
        report.projection = projected
    }

    static func table(_ report: ScaleReport) -> [String] {
        var lines = ["mode    workers  batch   samples/s (min-max)        speedup  efficiency  GEMM ceiling  of ceiling  compute ms  waiting ms  reduction ms"]
        for p in report.points {
            lines.append(String(
                format: "%-6@  %7d  %5d  %9.0f (%6.0f-%6.0f)  %7.2fx  %9.0f%%  %11.2fx  %9.0f%%  %10.2f  %10.2f  %12.2f",
                p.mode, p.workers, p.globalBatch, p.samplesPerSecond, p.samplesPerSecondMin, p.samplesPerSecondMax,
                p.speedup, 100 * p.efficiency, p.gemmCeiling, 100 * p.speedup / p.gemmCeiling, p.computeMs, p.waitingMs, p.reductionMs))
        }
        if let projection = report.projection, let target = report.projectionTarget {
            lines.append("PROJECTION onto \(target) (a model, not a measurement):")
            lines.append("workers  samples/s  efficiency  compute ms  reduction ms")
            for p in projection {
                lines.append(String(format: "%7d  %9.0f  %9.0f%%  %10.2f  %12.2f", p.workers, p.samplesPerSecond, 100 * p.efficiency, p.computeMs, p.reductionMs))
            }
            if let model = report.projectionModel { lines.append(model) }
        }
        return lines
    }

    public static func csv(_ report: ScaleReport) -> String {
        var text = "mode,workers,global_batch,samples_per_second,samples_per_second_min,samples_per_second_max,speedup,efficiency,gemm_ceiling,compute_ms,waiting_ms,reduction_ms\n"
        for p in report.points {
            text += "\(p.mode),\(p.workers),\(p.globalBatch),\(p.samplesPerSecond),\(p.samplesPerSecondMin),\(p.samplesPerSecondMax),\(p.speedup),\(p.efficiency),\(p.gemmCeiling),\(p.computeMs),\(p.waitingMs),\(p.reductionMs)\n"
        }
        return text
    }

    public static func svg(_ report: ScaleReport) -> String {
        var throughput: [SVGChart.Series] = []
        var efficiency: [SVGChart.Series] = []
        for (i, mode) in ["strong", "weak"].enumerated() {
            let points = report.points.filter { $0.mode == mode }
            guard let first = points.first else { continue }
            let color = SVGChart.palette[i]
            let perWorker = first.samplesPerSecond / Double(first.workers)
            throughput.append(.init(name: "\(mode) scaling", points: points.map { (Double($0.workers), $0.samplesPerSecond) }, color: color))
            throughput.append(.init(name: "ideal (\(mode))", points: points.map { (Double($0.workers), perWorker * Double($0.workers)) }, color: color, dashed: true))
            efficiency.append(.init(name: "\(mode) scaling", points: points.map { (Double($0.workers), 100 * $0.efficiency) }, color: color))
        }
        let ceiling = report.points.filter { $0.mode == "strong" }
        efficiency.append(.init(name: "GEMM ceiling / workers", points: ceiling.map { (Double($0.workers), 100 * $0.gemmCeiling / Double($0.workers)) }, color: SVGChart.palette[2], dashed: true))
        efficiency.append(.init(name: "ideal", points: ceiling.map { (Double($0.workers), 100) }, color: "#777", dashed: true))
        return SVGChart(
            title: "Scaling: \(report.network.hiddenSizes.map(String.init).joined(separator: "-")) ReLU network, shards of \(report.shardSize)",
            subtitle: "\(report.machine); BLAS \(report.blas.components(separatedBy: ";").last ?? ""); \(report.data)",
            panels: [
                .init(title: "Throughput", xLabel: "workers", yLabel: "samples per second", series: throughput),
                .init(title: "Parallel efficiency", xLabel: "workers", yLabel: "efficiency (%)", series: efficiency),
            ]
        ).render()
    }
}
