import Foundation

#if canImport(Glibc)
import Glibc
#endif

extension HostileInputTests {
    /// A text, a small GPT's model file, and pre-tokenized ids in a case's folder.
    static func languageModelFiles(_ folder: String, layers: String = "tokens(4, 8) attention(2) linear(4)") throws {
        try String(repeating: "abc\n", count: 200).write(toFile: "\(folder)/t.txt", atomically: false, encoding: .utf8)
        try modelFile(folder, input: [8], layers: layers)
    }

    /// Language models: token flags, token files, model shapes and generate, each refused by name.
    static var languageModelCases: [Case] {
        let lm = ["train", "--data", "t.txt", "--tokenizer", "char", "--context", "8", "--model", "model.yaml", "--batch-size", "4", "--shard-size", "2", "--workers", "1"]
        let files: (String) throws -> Void = { try languageModelFiles($0) }
        return [
            Case(name: "context 0", arguments: lm.dropLast(8) + ["--context", "0", "--model", "model.yaml"], mentions: ["--context", "0"], prepare: files),
            Case(name: "context 2^40", arguments: Array(lm[0..<5]) + ["--context", "1099511627776", "--model", "model.yaml"], mentions: ["--context"], prepare: files),
            Case(name: "context longer than the text", arguments: Array(lm[0..<5]) + ["--context", "2000", "--model", "model.yaml"], mentions: ["t.txt", "hold no window of 2000 + 1"], prepare: files),
            Case(name: "0 steps an epoch", arguments: lm + ["--steps-per-epoch", "0"], mentions: ["--steps-per-epoch", "0"], prepare: files),
            Case(name: "more steps an epoch than the windows hold", arguments: lm + ["--steps-per-epoch", "100000"], mentions: ["--steps-per-epoch", "more than"], prepare: files),
            Case(name: "negative warm-up", arguments: lm + ["--warmup-steps=-1"], mentions: ["--warmup-steps", "-1"], prepare: files),
            Case(name: "weight decay on biases", arguments: lm + ["--decay-on", "biases"], mentions: ["--decay-on", "biases"], prepare: files),
            Case(name: "steps that are no whole number of epochs", arguments: lm + ["--steps", "7", "--steps-per-epoch", "2"], mentions: ["--steps", "7"], prepare: files),
            Case(name: "attention heads that do not divide the width", arguments: lm, mentions: ["model.yaml", "multiple of the heads"]) {
                try languageModelFiles($0, layers: "tokens(4, 8) attention(3) linear(4)")
            },
            Case(name: "a head that is not per position", arguments: lm, mentions: ["outputs"]) {
                try languageModelFiles($0, layers: "tokens(4, 8) flatten linear(4)")
            },
            Case(name: "a vocabulary larger than the model's", arguments: lm, mentions: ["outputs"]) {
                try languageModelFiles($0)
                try String(repeating: "abcdefgh\n", count: 50).write(toFile: "\($0)/t.txt", atomically: false, encoding: .utf8)
            },
            Case(name: "a FIFO as the text", arguments: lm, mentions: ["t.txt", "regular file"]) {
                try languageModelFiles($0)
                unlink("\($0)/t.txt")
                fifo("\($0)/t.txt")
            },
            Case(name: "ids of an llm.c file of version 2", arguments: ["train", "--data", "t.bin", "--tokenizer", "uint16", "--context", "8", "--model", "model.yaml"], mentions: ["t.bin", "version 2"]) {
                try languageModelFiles($0)
                var header = [Int32](repeating: 0, count: 256)
                (header[0], header[1], header[2]) = (20_240_520, 2, 4)
                try (header.withUnsafeBytes { Data($0) } + Data(count: 8)).write(to: URL(fileURLWithPath: "\($0)/t.bin"))
            },
            Case(name: "ids beyond the vocabulary size", arguments: ["train", "--data", "t.bin", "--tokenizer", "uint16", "--vocabulary-size", "4", "--context", "8", "--model", "model.yaml"],
                 mentions: ["t.bin", "id 9 at position 1"]) {
                try languageModelFiles($0)
                try ([UInt16](arrayLiteral: 1, 9, 2).withUnsafeBytes { Data($0) }).write(to: URL(fileURLWithPath: "\($0)/t.bin"))
            },
            Case(name: "a vocabulary size of 2^20", arguments: lm + ["--vocabulary-size", "1048576"], mentions: ["--vocabulary-size"], prepare: files),
            Case(name: "generate 0 tokens", arguments: ["generate", "--checkpoint", "../good", "--tokens", "0"], mentions: ["--tokens", "0"]),
            Case(name: "generate at temperature nan", arguments: ["generate", "--checkpoint", "../good", "--temperature", "nan"], mentions: ["--temperature"]),
            Case(name: "generate from a classifier", arguments: ["generate", "--checkpoint", "../good"], mentions: ["not a language model"]),
        ]
    }
}
