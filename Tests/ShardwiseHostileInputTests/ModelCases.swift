import Foundation
import Shardwise

/// Model descriptions whose sizes overflow or could not be allocated, through every command
/// that builds a model: `--model` files in train, sweep, scale and bench, a checkpoint's
/// `state.json` (resealed) and a bare `model.safetensors`'s metadata in eval, predict and export.
/// Each used to trap (signal 4) somewhere in the arithmetic of the shapes; every size now goes
/// through `ModelSize`, and the memory a shape needs is estimated before anything is allocated.
extension HostileInputTests {
    /// (name, input shape, layers) that overflow or cannot fit, and what the error names.
    static let hostileModels: [(name: String, input: [Int], layers: String, mentions: String)] = [
        ("dilation 2^62", [1, 28, 28], "conv(4, 3, dilation=4611686018427387904) flatten linear(10)", "4611686018427387904"),
        ("padding 2^62", [1, 28, 28], "conv(4, 3, pad=4611686018427387904) flatten linear(10)", "4611686018427387904"),
        ("kernel 2^32, padding 2^31", [1, 28, 28], "conv(1, 4294967296, pad=2147483648) flatten linear(10)", "4294967296"),
        ("pooling padding 2^62", [1, 28, 28], "maxpool(2, pad=4611686018427387904) flatten linear(10)", "4611686018427387904"),
        ("an embedding of Int.max values", [784], "embedding(10, 9223372036854775807) linear(10)", "9223372036854775807"),
        ("input 2^32 x 2^32 x 4", [1 << 32, 1 << 32, 4], "flatten linear(10)", "4294967296"),
        ("a padded convolution of 40,028 x 40,028 outputs", [1, 28, 28], "conv(1, 1, pad=20000) avgpool(40028) flatten", "available"),
    ]

    static func modelFile(_ folder: String, input: [Int], layers: String) throws {
        let text = "input: [\(input.map(String.init).joined(separator: ", "))]\nlayers: \(layers)\n"
        try text.write(toFile: "\(folder)/model.yaml", atomically: false, encoding: .utf8)
    }

    static var modelCases: [Case] {
        var cases: [Case] = []
        for model in hostileModels {
            let commands: [(String, [String])] = [
                ("train", ["train", "--data", "../data", "--epochs", "1", "--batch-size", "128", "--workers", "1", "--model", "model.yaml"]),
                ("sweep", ["sweep", "--data", "../data", "--epochs", "1", "--batch-size", "128", "--workers", "1", "--dropout-hidden", "0,0.5", "--out", "s", "--model", "model.yaml"]),
                ("scale", ["scale", "--synthetic-data", "--workers", "1", "--model", "model.yaml"]),
                ("bench", ["bench", "--steps", "1", "--workers", "1", "--model", "model.yaml", "--classes", model.mentions == "available" ? "1" : "10"]),
            ]
            // The last model is valid but too big: it needs data of its shape to reach the estimate.
            for (command, arguments) in commands where !(model.mentions == "available" && command != "bench") {
                let names = model.mentions == "available" ? "--batch-size" : "model.yaml"
                cases.append(Case(name: "\(command): \(model.name)", arguments: arguments, mentions: [names, model.mentions]) { folder in
                    try modelFile(folder, input: model.input, layers: model.layers)
                })
            }
            guard model.mentions != "available" else { continue }
            func described(_ network: inout [String: Any]) {
                network["layers"] = model.layers
                network["input_shape"] = model.input
            }
            for command in [["eval", "--data", "../data"], ["predict", "--data", "../data", "--out", "p.csv"], ["export", "--onnx", "m.onnx"]] {
                cases.append(Case(name: "\(command[0]) of a state.json with \(model.name)", arguments: [command[0], "--checkpoint", "ckpt"] + command.dropFirst(), mentions: ["state.json", model.mentions]) {
                    try editState(try copyCheckpoint($0)) { object in
                        var configuration = object["configuration"] as! [String: Any]
                        var network = configuration["network"] as! [String: Any]
                        described(&network)
                        configuration["network"] = network
                        object["configuration"] = configuration
                    }
                })
                cases.append(Case(name: "\(command[0]) of a model.safetensors with \(model.name)", arguments: [command[0], "--checkpoint", "model.safetensors"] + command.dropFirst(), mentions: ["model.safetensors", model.mentions]) {
                    try write(try metadataNetwork(described), "\($0)/model.safetensors")
                })
            }
        }
        cases.append(Case(name: "resume of a state.json with a dilation of 2^62", arguments: ["train", "--workers", "1", "--resume", "ckpt-run", "--data", "../data"], mentions: ["state.json", "4611686018427387904"]) {
            try FileManager.default.createDirectory(atPath: "\($0)/ckpt-run", withIntermediateDirectories: false)
            try FileManager.default.copyItem(atPath: try Checkpoint.newest(in: "\(root)/good"), toPath: "\($0)/ckpt-run/checkpoint-000000001")
            try editState("\($0)/ckpt-run/checkpoint-000000001") { object in
                var configuration = object["configuration"] as! [String: Any]
                var network = configuration["network"] as! [String: Any]
                network["layers"] = hostileModels[0].layers
                network["input_shape"] = hostileModels[0].input
                configuration["network"] = network
                object["configuration"] = configuration
            }
        })
        return cases
    }
}
