import Foundation
import Shardwise

/// Counts no run could finish and figures no run could have written: each used to spin,
/// trap or allocate what it claimed; each is now refused by name before any work starts.
extension HostileInputTests {
    /// A copy of the good run's folder whose metrics.jsonl has its last test error replaced by `value`.
    static func runWithError(_ folder: String, _ value: String) throws {
        try FileManager.default.copyItem(atPath: "\(root)/good", toPath: "\(folder)/run")
        let path = "\(folder)/run/metrics.jsonl"
        let text = try String(contentsOfFile: path, encoding: .utf8)
        let edited = text.replacing(/"test_error_percent":[0-9.e+-]+/, with: "\"test_error_percent\":\(value)")
        precondition(edited != text, "the good run's metrics hold no test error")
        try edited.write(toFile: path, atomically: false, encoding: .utf8)
    }

    static var countCases: [Case] {
        let bench = ["bench", "--workers", "1", "--model", "model.yaml"]
        func withModel(_ folder: String) throws { try modelFile(folder, input: [784], layers: "linear(10)") }
        return [
            Case(name: "sweep of 2^62 seeds", arguments: sweep + ["--seeds", "4611686018427387904"], mentions: ["--seeds", "4611686018427387904"]),
            Case(name: "sweep of 10 x 10 x 2,000 seeds", arguments: sweep + ["--dropout-hidden", "0,0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9", "--dropout-input", "0,0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9", "--seeds", "2000"], mentions: ["--seeds", "200000 trials"]),
            Case(name: "sweep of Int.max minimum steps", arguments: sweep + ["--min-steps", "9223372036854775807"], mentions: ["--min-steps"]),
            Case(name: "sweep of 2^62 epochs stretched to 100 steps", arguments: sweep + ["--epochs", "4611686018427387904", "--min-steps", "100"], mentions: ["--epochs"]),
            Case(name: "sweep to an infinite target error", arguments: sweep + ["--target-error", "inf"], mentions: ["--target-error", "inf"]),
            Case(name: "train 2^32 epochs", arguments: shared + ["--epochs", "4294967296"], mentions: ["--epochs", "4294967296"]),
            Case(name: "train 2^31 - 1 epochs of 4 steps (more than 2^32 steps)", arguments: shared + ["--epochs", "2147483647"], mentions: ["--epochs", "2^32"]),
            Case(name: "bench with 0 classes", arguments: bench + ["--classes", "0"], mentions: ["--classes", "0"], prepare: withModel),
            Case(name: "bench with 2^62 classes", arguments: bench + ["--classes", "4611686018427387904"], mentions: ["--classes"], prepare: withModel),
            Case(name: "bench of 2^62 steps", arguments: bench + ["--steps", "4611686018427387904"], mentions: ["--steps"], prepare: withModel),
            Case(name: "bench of a batch of 2^30", arguments: bench + ["--batch-size", "1073741824", "--shard-size", "1073741824"], mentions: ["--batch-size", "available"], prepare: withModel),
            Case(name: "topology of trials of 2^62 shards", arguments: ["topology", "--trials", "auto", "--shards", "4611686018427387904"], mentions: ["--shards"]),
            Case(name: "topology of 2^62 trials", arguments: ["topology", "--trials", "4611686018427387904"], mentions: ["--trials"]),
            Case(name: "curves of a negative test error", arguments: ["curves", "run", "--out", "c.svg"], mentions: ["metrics.jsonl", "-5"]) { try runWithError($0, "-5") },
            Case(name: "curves of a test error of 1e308", arguments: ["curves", "run", "--out", "c.svg"], mentions: ["metrics.jsonl", "1e+308"]) { try runWithError($0, "1e308") },
            Case(name: "curves with a NaN paper error", arguments: ["curves", "../good", "--out", "c.svg", "--table", "t.md", "--paper-error", "nan"], mentions: ["--paper-error", "nan"]),
        ]
    }
}
