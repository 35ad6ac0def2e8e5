import ArgumentParser
import Foundation
import ShardwiseLayers
import ShardwiseRuntime

struct CurvesCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "curves",
        abstract: "Draw the learning curves of finished runs (their --out folders) on one chart.")

    @Argument(help: "Run folders holding metrics.jsonl and summary.json.")
    var runs: [String]

    @Option(help: "The SVG file to write.")
    var out: String

    func validate() throws {
        if runs.isEmpty { throw ValidationError("give at least one run folder") }
    }

    func run() throws {
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        var series: [(String, [EpochRecord])] = []
        var title = "Learning curves"
        for folder in runs {
            guard let metrics = FileManager.default.contents(atPath: "\(folder)/metrics.jsonl") else {
                throw RunError("\(folder)/metrics.jsonl: missing; expected the --out folder of a shardwise train run")
            }
            let records: [EpochRecord]
            do {
                records = try String(decoding: metrics, as: UTF8.self).split(separator: "\n").map {
                    try decoder.decode(EpochRecord.self, from: Data($0.utf8))
                }
            } catch { throw RunError("\(folder)/metrics.jsonl: not Shardwise metrics (\(error))") }
            var name = folder
            if let data = FileManager.default.contents(atPath: "\(folder)/summary.json"),
               let summary = try? decoder.decode(RunSummaryHeader.self, from: data) {
                name = TrainingRun.label(summary.configuration.network)
                title = "Learning curves: \(summary.configuration.network.hiddenSizes.map(String.init).joined(separator: "-")) ReLU network on MNIST"
            }
            series.append((name, records))
        }
        do { try AtomicFile.write(Curves.svg(title: title, runs: series), to: out) } catch { throw RunError(error.description) }
        print("wrote \(out)")
    }
}

/// The part of summary.json that names a run.
struct RunSummaryHeader: Decodable {
    var configuration: TrainingConfiguration
}
