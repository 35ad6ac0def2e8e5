import ArgumentParser
import Foundation
import Shardwise
import ShardwiseApp

struct ScaleCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "scale",
        abstract: "Measure training-step throughput against worker count (strong and weak scaling) and draw it.")

    @Option(help: "Worker counts, comma-separated, or 'max' (default: 1, 2, 4, ... up to the cores).")
    var workers: String?

    @Option(help: "strong (fixed global batch), weak (fixed batch per worker) or both.")
    var mode = "both"

    @OptionGroup var network: NetworkOptions

    @Option(help: "Global batch under strong scaling; batch per worker under weak scaling.")
    var batchSize = 256

    @Option(help: "Samples per shard.")
    var shardSize = 64

    @Flag(help: "Random data of MNIST's shape: no dataset needed.")
    var syntheticData = false

    @Option(help: "Folder with the MNIST files (default: data/mnist, then ../shared/datasets/mnist).")
    var data: String?

    @Option(help: "Worker placement: compact or spread.")
    var policy: PlacementPolicy = .compact

    @Option(help: "Timed windows per point (the median is reported).")
    var windows = 5

    @Option(help: "Steps per timed window.")
    var steps = 8

    @Option(help: "Folder for scale.csv, scale.json and scale.svg.")
    var out: String?

    @Option(help: "Project throughput onto the machine in this hwloc XML file.")
    var projectTo: String?

    @Option(help: "Project throughput onto this hwloc synthetic description.")
    var projectSynthetic: String?

    @Option(help: "Worker counts of the projection.")
    var projectWorkers = "16,64,128"

    func counts(cores: Int) throws -> [Int] {
        guard let workers else {
            return Array(sequence(first: 1) { $0 * 2 <= cores ? $0 * 2 : nil }) + (cores & (cores - 1) == 0 ? [] : [cores])
        }
        if workers == "max" { return [1, cores].uniqued() }
        let parsed = workers.split(separator: ",").map { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard !parsed.isEmpty, parsed.allSatisfy({ ($0 ?? 0) > 0 }) else {
            throw ValidationError("--workers: '\(workers)', expected counts like 1,2,4 or 'max'")
        }
        let counts = parsed.map { $0! }
        // A count given twice would be measured twice and its efficiency read against the wrong base.
        var seen = Set<Int>()
        if let repeated = counts.first(where: { !seen.insert($0).inserted }) {
            throw ValidationError("--workers: '\(workers)' gives \(repeated) more than once, expected distinct counts like 1,2,4")
        }
        return counts
    }

    func validate() throws {
        try requirePaths(["--out": out, "--data": data])
        guard ["strong", "weak", "both"].contains(mode) else { throw ValidationError("--mode: '\(mode)', expected strong, weak or both") }
        guard batchSize > 0, shardSize > 0, batchSize % shardSize == 0 else {
            throw ValidationError("--batch-size: \(batchSize) is not a positive whole number of shards of \(shardSize) (--shard-size)")
        }
        guard windows > 0, steps > 0 else { throw ValidationError("--windows and --steps: expected positive counts") }
        if projectTo != nil && projectSynthetic != nil { throw ValidationError("--project-to and --project-synthetic: give one target") }
        _ = try network.configuration()
    }

    func run() async throws {
        var configuration = RunConfiguration.reference()
        configuration.network = try network.configuration()
        configuration.batchSize = batchSize
        configuration.shardSize = shardSize
        do { try configuration.validate() } catch { throw ValidationError("\(error)") }
        let machine: Topology
        do { machine = try Topology.thisMachine() } catch { throw RunError(error.description) }
        let cores = Set(machine.allowedPUs.map(\.core)).count
        var settings = ScaleRun.Settings(workerCounts: try counts(cores: cores))
        settings.policy = policy
        settings.windows = windows
        settings.stepsPerWindow = steps
        settings.modes = mode == "both" ? ["strong", "weak"] : [mode]
        settings.command = "shardwise " + CommandLine.arguments.dropFirst().joined(separator: " ")
        let mostWorkers = settings.workerCounts.max() ?? 1
        guard mostWorkers <= Topology.maximumWorkersPerPU * machine.allowedPUs.count else {
            throw ValidationError("--workers: \(mostWorkers) workers on \(machine.allowedPUs.count) processing units; at most \(Topology.maximumWorkersPerPU) per unit")
        }
        let maxBatch = batchSize * mostWorkers
        let dataset: Dataset
        let dataName: String
        if syntheticData {
            // Four batches of the largest weak-scaling step, as floats: refused before allocating when they cannot fit.
            let budget = MemoryBudget.current()
            guard let bytes = CheckedSize.product([maxBatch, 4, MNIST.features, 4]), bytes <= budget.bytes else {
                throw ValidationError("--batch-size: \(batchSize) x \(mostWorkers) workers x 4 batches of random data need more than the \(budget) available")
            }
            dataset = MachineLimits.randomData(count: maxBatch * 4, features: MNIST.features, classes: MNIST.classes)
            dataName = "random data of MNIST's shape"
        } else {
            do { dataset = try MNIST.load(directory: data).train } catch { throw RunError(error.description) }
            dataName = "MNIST training set"
        }
        var target: Topology?
        do {
            if let projectTo { target = try Topology(.xml(path: projectTo)) }
            if let projectSynthetic { target = try Topology(.synthetic(projectSynthetic)) }
        } catch { throw RunError(error.description) }
        let projectCounts = projectWorkers.split(separator: ",").compactMap { Int($0) }
        let report: ScaleReport
        do {
            report = try await ScaleRun.run(
                configuration: configuration, data: dataset, dataName: dataName, settings: settings,
                projectTo: target, projectWorkers: projectCounts) { print($0) }
        } catch let error as RunError { throw error } catch { throw RunError("\(error)") }
        guard let out else { return }
        do {
            try AtomicFile.makeDirectory(out)
            try AtomicFile.write(ScaleRun.csv(report), to: "\(out)/scale.csv")
            try AtomicFile.write(String(decoding: try JSON.encoder(pretty: true).encode(report), as: UTF8.self) + "\n", to: "\(out)/scale.json")
            try AtomicFile.write(ScaleRun.svg(report), to: "\(out)/scale.svg")
        } catch let error as FileWriteError { throw RunError(error.description) }
        print("wrote \(out)/scale.csv, \(out)/scale.json, \(out)/scale.svg")
    }
}

extension Array where Element: Hashable {
    func uniqued() -> [Element] {
        var seen = Set<Element>()
        return filter { seen.insert($0).inserted }
    }
}
