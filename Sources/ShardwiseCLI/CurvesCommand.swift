import ArgumentParser
import Foundation
import Shardwise
import ShardwiseApp

struct CurvesCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "curves",
        abstract: "Draw the learning curves of finished runs (their --out folders) on one chart.")

    @Argument(help: "Run folders holding metrics.jsonl and summary.json.")
    var runs: [String]

    @Option(help: "The SVG file to write.")
    var out: String

    @Option(help: "Also write a Markdown table of the runs (final test error, epochs, wall time) to this file, and print it.")
    var table: String?

    @Option(help: "A published test error (%) to set beside each run in the table, in the order of the runs.")
    var paperError: [Double] = []

    func validate() throws {
        if runs.isEmpty { throw ValidationError("give at least one run folder") }
        if !paperError.isEmpty && paperError.count != runs.count {
            throw ValidationError("--paper-error: \(paperError.count) values for \(runs.count) runs, expected one per run")
        }
        if let bad = paperError.first(where: { !(0...100).contains($0) }) {
            throw ValidationError("--paper-error: \(bad), expected test errors in percent, 0 to 100")
        }
        if !paperError.isEmpty && table == nil {
            throw ValidationError("--paper-error: needs --table FILE.md")
        }
    }

    func run() throws {
        do {
            try AtomicFile.checkReplaceable(out)
            if let table { try AtomicFile.checkReplaceable(table) }
        } catch { throw RunError(error.description) }
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        var series: [(String, [EpochRecord])] = []
        var rows: [String] = []
        var title = "Learning curves"
        var languageModel = false
        for folder in runs {
            let metrics: [UInt8]
            do {
                guard let found = try RegularFile.readIfPresent("\(folder)/metrics.jsonl", limit: 256 << 20, what: "a metrics file") else {
                    throw RunError("\(folder)/metrics.jsonl: missing; expected the --out folder of a shardwise train run")
                }
                metrics = found
            } catch let error as DataError { throw RunError(error.description) }
            var records: [EpochRecord] = []
            for (n, line) in String(decoding: metrics, as: UTF8.self).split(separator: "\n").enumerated() {
                guard let record = try? decoder.decode(EpochRecord.self, from: Data(line.utf8)) else {
                    throw RunError("\(folder)/metrics.jsonl, line \(n + 1): not a Shardwise epoch record (a JSON object with epoch, train_loss, seconds and samples_per_second)")
                }
                if let problem = record.problem { throw RunError("\(folder)/metrics.jsonl, line \(n + 1): \(problem)") }
                records.append(record)
            }
            var name = folder
            var wall = "-"
            if let data = try? RegularFile.read("\(folder)/summary.json", limit: 64 << 20, what: "a summary"),
               let summary = try? decoder.decode(RunSummaryHeader.self, from: Data(data)) {
                name = TrainingRun.label(summary.configuration.network)
                languageModel = languageModel || summary.vocabulary != nil
                let network = TrainingRun.name(summary.configuration.network, languageModel: summary.vocabulary != nil)
                title = "Learning curves: \(network)\(summary.configuration.network.layers == nil ? " on MNIST" : "")"
                wall = summary.wallSeconds.map { String(format: "%.0f min", $0 / 60) } ?? "-"
            }
            series.append((name, records))
            guard let last = records.last else { throw RunError("\(folder)/metrics.jsonl: no epochs") }
            let paper = paperError.isEmpty ? "" : String(format: " %.2f%% |", paperError[rows.count])
            // A language model's row: its test loss per token beside the error.
            let loss = languageModel ? String(format: " %.4f |", last.testLoss ?? .nan) : ""
            rows.append(String(format: "| %@ | %@ | %d |%@ %.2f%% |%@ %@ |", folder, name, last.epoch, loss, last.testErrorPercent ?? .nan, paper, wall))
        }
        if let table {
            let header = "| run | network | epochs |" + (languageModel ? " test loss |" : "") + " test error |" + (paperError.isEmpty ? "" : " paper |") + " wall time |\n"
                + "|---|---|---|" + (languageModel ? "---|" : "") + "---|" + (paperError.isEmpty ? "" : "---|") + "---|\n"
            let text = header + rows.joined(separator: "\n") + "\n"
            do { try AtomicFile.write(text, to: table) } catch { throw RunError(error.description) }
            print(text, terminator: "")
            print("wrote \(table)")
        }
        do { try AtomicFile.write(Curves.svg(title: title, runs: series, languageModel: languageModel), to: out) } catch { throw RunError(error.description) }
        print("wrote \(out)")
    }
}

/// The part of summary.json that names a run.
struct RunSummaryHeader: Decodable {
    var configuration: RunConfiguration
    var wallSeconds: Double?
    /// A language model's vocabulary (nil for other runs).
    var vocabulary: Vocabulary?
}
