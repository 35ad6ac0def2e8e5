import Foundation
import Shardwise
import XCTest

#if canImport(Glibc)
import Glibc
#endif

/// A character-level GPT under the real executable, on a small text of its own: it learns,
/// its weights are the same for 1, 2 and 3 workers and after a resume on another worker
/// count, and `generate` gives the same text for a seed. Its output head is tied to the token table.
final class LanguageModelTests: XCTestCase {
    var folder = ""

    override func setUpWithError() throws {
        folder = NSTemporaryDirectory() + "shardwise-lm-\(getpid())-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        // Lines of words from a small lexicon: a text with structure a model can learn.
        let words = ["the", "king", "shall", "speak", "of", "love", "and", "war", "to", "his", "lords", "tonight"]
        var state: UInt64 = 7
        var lines: [String] = []
        for _ in 0..<400 {
            var line: [String] = []
            for _ in 0..<6 {
                state = state &* 6364136223846793005 &+ 1442695040888963407
                line.append(words[Int(state >> 33) % words.count])
            }
            lines.append(line.joined(separator: " ") + ".")
        }
        try (lines.joined(separator: "\n") + "\n").write(toFile: "\(folder)/text.txt", atomically: true, encoding: .utf8)
        let model = """
            input: [16]
            layers: >
              tokens(20, 16)
              residual(layernorm(dims: 1) attention(2, dropout: 0.1)) residual(layernorm(dims: 1) linear(32) gelu linear(16) dropout(0.1))
              layernorm(dims: 1) linear(20, tied: tokens)
            training: {optimizer: adamw, lr: 0.01, schedule: cosine, lr_floor: 0.1, warmup_steps: 5, beta2: 0.99, weight_decay: 0.1, decay_on: matrices, clip_norm: 1.0, max_norm: none, epochs: 3, steps_per_epoch: 20, batch_size: 8}
            """
        try model.write(toFile: "\(folder)/model.yaml", atomically: true, encoding: .utf8)
    }

    override func tearDown() { try? FileManager.default.removeItem(atPath: folder) }

    func train(_ extra: [String]) throws -> (status: Int32, output: String, error: String) {
        try runShardwise(["train", "--data", "\(folder)/text.txt", "--tokenizer", "char", "--context", "16", "--model", "\(folder)/model.yaml",
                          "--shard-size", "2", "--oversubscribe"] + extra)
    }

    func hash(_ output: String) -> String? { output.firstMatch(of: /weights sha256 ([0-9a-f]{64})/).map { String($0.1) } }

    func testLearnsAndGivesOneWeightsHashForAnyWorkerCountAndResume() throws {
        let two = try train(["--workers", "2", "--out", "\(folder)/two"])
        XCTAssertEqual(two.status, 0, two.error)
        // 20 characters: the words' 17 letters, space, '.' and the line break.
        XCTAssert(two.output.contains("language model, 20 characters, windows of 16 tokens"), two.output)
        let loss = try XCTUnwrap(two.output.firstMatch(of: /test loss ([0-9.]+) \(([0-9.]+) bits\/token\)/))
        let nats = try XCTUnwrap(Double(loss.1)), bits = try XCTUnwrap(Double(loss.2))
        XCTAssertEqual(bits, nats / M_LN2, accuracy: 1e-3)
        // Uniform guessing costs ln 20 = 3.0 nats, and each character's frequency alone (no
        // context) 2.80; a model that reads the context does far better.
        let text = try String(contentsOfFile: "\(folder)/text.txt", encoding: .utf8)
        var counts: [Character: Double] = [:]
        for c in text { counts[c, default: 0] += 1 }
        let unigram = counts.values.reduce(0) { $0 - $1 / Double(text.count) * log($1 / Double(text.count)) }
        XCTAssertEqual(unigram, 2.804, accuracy: 1e-3)
        XCTAssertLessThan(nats, unigram - 0.4, two.output)
        let reference = try XCTUnwrap(hash(two.output))
        for workers in ["1", "3"] {
            let run = try train(["--workers", workers])
            XCTAssertEqual(run.status, 0, run.error)
            XCTAssertEqual(hash(run.output), reference, "\(workers) workers")
        }
        // Stopped after 30 of the 60 steps on 1 worker, resumed on 3: the same weights.
        let cut = try train(["--workers", "1", "--stop-after-steps", "30", "--out", "\(folder)/cut"])
        XCTAssertEqual(cut.status, 0, cut.error)
        // A resumed run is given its data flags again, as with any data file.
        let resumed = try runShardwise(["train", "--data", "\(folder)/text.txt", "--tokenizer", "char", "--context", "16", "--resume", "\(folder)/cut", "--workers", "3", "--oversubscribe"])
        XCTAssertEqual(resumed.status, 0, resumed.error)
        XCTAssertEqual(hash(resumed.output), reference, resumed.output)

        // generate: the prompt, then the tokens; one text for a seed, another for another seed.
        func generate(_ extra: [String]) throws -> String {
            let result = try runShardwise(["generate", "--checkpoint", "\(folder)/two", "--prompt", "the king", "--tokens", "40"] + extra)
            XCTAssertEqual(result.status, 0, result.error)
            return result.output
        }
        let first = try generate(["--seed", "5", "--temperature", "0.8"])
        XCTAssert(first.hasPrefix("the king"), first)
        XCTAssertEqual(first.count, "the king".count + 40 + 1)
        XCTAssertEqual(try generate(["--seed", "5", "--temperature", "0.8"]), first)
        XCTAssertNotEqual(try generate(["--seed", "6", "--temperature", "0.8"]), first)
        // Temperature 0 is the likeliest token each time, as top-k 1 is.
        XCTAssertEqual(try generate(["--temperature", "0"]), try generate(["--top-k", "1", "--seed", "9"]))
        // The checkpoint in PyTorch (the same modules by name, scaled_dot_product_attention): the same test loss.
        if (try? runPython(["-c", "import torch, numpy, yaml"]))?.status == 0 {
            let torch = try runPython(["Benchmarks/pytorch/gpt_torch.py", "--evaluate", "\(folder)/two", "--data", "\(folder)/text.txt", "--model", "\(folder)/model.yaml"])
            XCTAssertEqual(torch.status, 0, torch.output)
            let theirs = try XCTUnwrap(torch.output.firstMatch(of: /test loss ([0-9.]+) in PyTorch/).flatMap { Double($0.1) }, torch.output)
            XCTAssertEqual(theirs, nats, accuracy: 2e-4, torch.output)
        } else {
            print("PyTorch (torch, numpy, yaml) is not installed: the checkpoint is not checked in PyTorch")
        }
        // The ONNX export in ONNX Runtime (tokens as Gather + Add, attention with a causal mask): the same test loss.
        if (try? runPython(["-c", "import onnx, onnxruntime, numpy"]))?.status == 0 {
            let export = try runShardwise(["export", "--checkpoint", "\(folder)/two", "--onnx", "\(folder)/lm.onnx"])
            XCTAssertEqual(export.status, 0, export.error)
            let check = try runPython(["Tests/python/onnx_lm_check.py", "\(folder)/lm.onnx", "\(folder)/text.txt", "16"])
            XCTAssertEqual(check.status, 0, check.output)
            let match = try XCTUnwrap(check.output.firstMatch(of: /test loss ([0-9.]+) in ONNX Runtime \(from the probabilities ([0-9.]+)\)/), check.output)
            XCTAssertEqual(Double(match.1)!, nats, accuracy: 2e-4, check.output)
            XCTAssertEqual(Double(match.2)!, nats, accuracy: 2e-4, check.output)
        } else {
            print("onnx and onnxruntime are not installed: the ONNX export is not checked")
        }
        // eval on a file holding the text's last 10%: the training run's test loss and error.
        let held = Int((Double(text.count) * 0.1).rounded())
        try String(text.suffix(held)).write(toFile: "\(folder)/tail.txt", atomically: true, encoding: .utf8)
        let evaluated = try runShardwise(["eval", "--checkpoint", "\(folder)/two", "--data", "\(folder)/tail.txt"])
        XCTAssertEqual(evaluated.status, 0, evaluated.error)
        let error = try XCTUnwrap(two.output.firstMatch(of: /bits\/token\), error ([0-9.]+)%/).map { String($0.1) })
        XCTAssert(evaluated.output.contains(String(format: "test loss %@ (", String(loss.1))) && evaluated.output.contains("error \(error)% on"), evaluated.output + two.output)
        let unknown = try runShardwise(["generate", "--checkpoint", "\(folder)/two", "--prompt", "xyz"])
        XCTAssertEqual(unknown.status, 1)
        XCTAssertEqual(unknown.error, "error: --prompt: character 0 (x) is not in the model's vocabulary of 20 characters\n")
        XCTAssertEqual(unknown.output, "")
    }

    /// The text's ids written as nanoGPT's raw uint16 train.bin train the same weights as the
    /// text itself: the same windows, split and vocabulary size. A separate test file of ids
    /// (`--test-data`) trains on all of --data.
    func testPreTokenizedIdsTrainAsTheText() throws {
        let text = try String(contentsOfFile: "\(folder)/text.txt", encoding: .utf8)
        let symbols = Array(Set(text.unicodeScalars.map(\.value))).sorted()
        let ids = text.unicodeScalars.map { UInt16(symbols.firstIndex(of: $0.value)!) }
        XCTAssert(FileManager.default.createFile(atPath: "\(folder)/train.bin", contents: ids.withUnsafeBytes { Data($0) }))
        XCTAssert(FileManager.default.createFile(atPath: "\(folder)/val.bin", contents: ids.suffix(400).withUnsafeBytes { Data($0) }))
        let flags = ["--context", "16", "--model", "\(folder)/model.yaml", "--shard-size", "2", "--epochs", "1", "--workers", "2"]
        let fromText = try runShardwise(["train", "--data", "\(folder)/text.txt", "--tokenizer", "char"] + flags)
        let fromIds = try runShardwise(["train", "--data", "\(folder)/train.bin", "--tokenizer", "uint16", "--out", "\(folder)/ids"] + flags)
        XCTAssertEqual(fromIds.status, 0, fromIds.error)
        XCTAssert(fromIds.output.contains("language model, 20 token ids"), fromIds.output)
        XCTAssertEqual(hash(fromIds.output), hash(fromText.output))
        let held = try runShardwise(["train", "--data", "\(folder)/train.bin", "--tokenizer", "uint16", "--test-data", "\(folder)/val.bin"] + flags)
        XCTAssertEqual(held.status, 0, held.error)
        XCTAssert(held.output.contains("\(ids.count - 16) training / 24 test samples"), held.output)
        // generate reads and writes ids.
        let generated = try runShardwise(["generate", "--checkpoint", "\(folder)/ids", "--prompt", "3 4 5", "--tokens", "4"])
        XCTAssertEqual(generated.status, 0, generated.error)
        XCTAssertEqual(generated.output.split(separator: " ").count, 7, generated.output)
    }

    /// The process run with `environment` added (an instruction set forced), or under mpirun.
    func launch(_ executable: String, _ arguments: [String], environment: [String: String] = [:]) throws -> (status: Int32, output: String, error: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        let output = out.fileHandleForReading.readDataToEndOfFile(), error = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: output, as: UTF8.self), String(decoding: error, as: UTF8.self))
    }

    /// Every instruction set of the portable kernels, and two MPI ranks on different ones
    /// (scalar on one, the fastest on the other), give the single process's weights.
    func testInstructionSetsAndMPIRanksGiveTheSameWeights() throws {
        let flags = ["train", "--data", "\(folder)/text.txt", "--tokenizer", "char", "--context", "16", "--model", "\(folder)/model.yaml",
                     "--shard-size", "2", "--epochs", "1"]
        let reference = try runShardwise(flags + ["--workers", "2"])
        XCTAssertEqual(reference.status, 0, reference.error)
        let isas = MatrixKernels.availableISAs
        for isa in isas {
            let run = try launch(shardwiseExecutable, flags + ["--workers", "2"], environment: ["SHARDWISE_KERNEL_ISA": isa])
            XCTAssertEqual(run.status, 0, run.error)
            XCTAssert(run.output.contains("portable \(isa) kernels"), run.output)
            XCTAssertEqual(hash(run.output), hash(reference.output), isa)
        }
        let mpirun = "/usr/bin/mpirun"
        guard access(mpirun, X_OK) == 0 else { throw XCTSkip("\(mpirun) is absent (make deps installs openmpi-bin)") }
        let rank = flags + ["--workers", "1"]
        let mixed = try launch(mpirun, (geteuid() == 0 ? ["--allow-run-as-root"] : []) + ["--oversubscribe",
            "-np", "1", "-x", "SHARDWISE_KERNEL_ISA=scalar", shardwiseExecutable] + rank + [":", "-np", "1", "-x", "SHARDWISE_KERNEL_ISA=\(isas.last!)", shardwiseExecutable] + rank,
            environment: ["OMPI_MCA_btl_vader_single_copy_mechanism": "none"])
        XCTAssertEqual(mixed.status, 0, mixed.error)
        XCTAssert(mixed.output.contains("2 MPI ranks"), mixed.output)
        XCTAssertEqual(hash(mixed.output), hash(reference.output), "2 ranks, scalar and \(isas.last!)")
    }

    func testBadTokenFlagsAreRefused() throws {
        let noModel = try runShardwise(["train", "--data", "\(folder)/text.txt", "--tokenizer", "char", "--context", "16"])
        XCTAssertEqual(noModel.status, 1)
        XCTAssert(noModel.error.contains("a language model is described with --model"), noModel.error)
        let noTokenizer = try runShardwise(["train", "--data", "\(folder)/text.txt", "--context", "16"])
        XCTAssertEqual(noTokenizer.status, 2)
        XCTAssert(noTokenizer.error.contains("--context: a window of tokens needs --tokenizer"), noTokenizer.error)
        let badTokenizer = try runShardwise(["train", "--data", "\(folder)/text.txt", "--tokenizer", "words", "--context", "16"])
        XCTAssertEqual(badTokenizer.status, 2)
        XCTAssert(badTokenizer.error.contains("--tokenizer: 'words', expected char, bytes or uint16"), badTokenizer.error)
        XCTAssert(FileManager.default.createFile(atPath: "\(folder)/binary.txt", contents: Data([0x66, 0xFF, 0xFE, 0x0A])))
        let binary = try runShardwise(["train", "--data", "\(folder)/binary.txt", "--tokenizer", "char", "--context", "16", "--model", "\(folder)/model.yaml", "--shard-size", "2"])
        XCTAssertEqual(binary.status, 1)
        XCTAssert(binary.error.contains("binary.txt: not UTF-8 text, expected text for --tokenizer char"), binary.error)
        let long = try train(["--context", "4000"])
        XCTAssertEqual(long.status, 1)
        XCTAssert(long.error.contains("hold no window of 4000 + 1 (--context 4000)"), long.error)
        // Training by steps: --steps N is N / K epochs of the recipe's K = 20 steps.
        let bySteps = try train(["--steps", "40", "--workers", "1"])
        XCTAssertEqual(bySteps.status, 0, bySteps.error)
        XCTAssert(bySteps.output.contains("batch 8, 2 epochs of 20 steps"), bySteps.output)
        XCTAssert(bySteps.output.contains("epoch 2/2"), bySteps.output)
        let ragged = try train(["--steps", "50"])
        XCTAssertEqual(ragged.status, 2)
        XCTAssert(ragged.error.contains("--steps: 50 is not a whole number of epochs of 20 steps (--steps-per-epoch)"), ragged.error)
        let mismatch = try train(["--context", "8"])
        XCTAssertEqual(mismatch.status, 1)
        XCTAssert(mismatch.error.contains("--model: input shape (16) does not hold the 8 values of a row"), mismatch.error)
    }

    /// `--compare-no-dropout` on a described model: the second run is the model with every rate
    /// (dropout layers and attention's) at 0, the same weights as that model trained alone, and
    /// curves.svg holds both runs' training and test loss per token.
    func testCompareNoDropoutTrainsTheModelWithEveryRateZero() throws {
        let both = try train(["--steps", "20", "--workers", "2", "--compare-no-dropout", "--out", "\(folder)/both"])
        XCTAssertEqual(both.status, 0, both.error)
        let hashes = both.output.matches(of: /weights sha256 ([0-9a-f]{64})/).map { String($0.1) }
        XCTAssertEqual(hashes.count, 2, both.output)
        let text = try String(contentsOfFile: "\(folder)/model.yaml", encoding: .utf8)
        let plain = text.replacingOccurrences(of: "dropout: 0.1", with: "dropout: 0").replacingOccurrences(of: "dropout(0.1)", with: "dropout(0)")
        XCTAssertNotEqual(plain, text)
        try plain.write(toFile: "\(folder)/model.yaml", atomically: true, encoding: .utf8)
        let alone = try train(["--steps", "20", "--workers", "1"])
        XCTAssertEqual(alone.status, 0, alone.error)
        XCTAssertEqual(hash(alone.output), hashes[1], "the no-dropout run is the model with its rates at 0")
        XCTAssertNotEqual(hashes[0], hashes[1])
        let svg = try String(contentsOfFile: "\(folder)/both/curves.svg", encoding: .utf8)
        for label in ["Loss per token", "dropout 0.1, training", "no dropout, test", "Test error per token"] { XCTAssert(svg.contains(label), label) }
        let curves = try runShardwise(["curves", "\(folder)/both", "\(folder)/both/no-dropout", "--out", "\(folder)/c.svg", "--table", "\(folder)/c.md"])
        XCTAssertEqual(curves.status, 0, curves.error)
        let loss = try XCTUnwrap(both.output.firstMatch(of: /test loss ([0-9.]+) \(/).map { String($0.1) })
        XCTAssert(curves.output.contains("| dropout 0.1 | 1 | \(loss) |"), curves.output)
        // A model without dropout has nothing to compare.
        let none = try train(["--steps", "20", "--compare-no-dropout", "--out", "\(folder)/none"])
        XCTAssertEqual(none.status, 2)
        XCTAssert(none.error.contains("--compare-no-dropout: the model (\(folder)/model.yaml) has no dropout rate above 0 to compare against"), none.error)
    }

    /// `bench --model` on a language model: a step on random token windows, and each attention
    /// layer timed alone against the machine's GEMM rate.
    func testBenchTimesAttentionAgainstTheGEMMRate() throws {
        let bench = try runShardwise(["bench", "--model", "\(folder)/model.yaml", "--batch-size", "8", "--shard-size", "2", "--steps", "3", "--workers", "1", "--json", "--optimizer", "adamw"])
        XCTAssertEqual(bench.status, 0, bench.error)
        let report = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(bench.output.utf8)) as? [String: Any], bench.output)
        XCTAssertGreaterThan(report["step_milliseconds"] as? Double ?? 0, 0, bench.output)
        let attention = try XCTUnwrap(report["attention"] as? [[String: Any]], bench.output)
        XCTAssertEqual(attention.count, 1)
        XCTAssertEqual(attention[0]["description"] as? String, "attention (16, 16), 2 heads")
        let gflops = try XCTUnwrap(attention[0]["gflops"] as? Double), fraction = try XCTUnwrap(attention[0]["gemm_fraction"] as? Double)
        let gemm = try XCTUnwrap(report["gemm_gflops"] as? Double)
        XCTAssertEqual(fraction, gflops / gemm, accuracy: 1e-9 * max(1, fraction))
        XCTAssertGreaterThan(gflops, 0)
    }
}
