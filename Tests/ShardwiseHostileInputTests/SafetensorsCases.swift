import Foundation
import Shardwise
import XCTest

#if canImport(Glibc)
import Glibc
#endif

extension HostileInputTests {
    /// The model.safetensors of the good checkpoint, with its header (JSON) edited.
    static func editedModel(_ edit: (inout [String: Any]) -> Void) throws -> [UInt8] {
        let bytes = Array(try Data(contentsOf: URL(fileURLWithPath: "\(try Checkpoint.newest(in: "\(root)/good"))/model.safetensors")))
        let length = Int((0..<8).reduce(UInt64(0)) { $0 | UInt64(bytes[$1]) << (8 * UInt64($1)) })
        var header = try JSONSerialization.jsonObject(with: Data(bytes[8..<8 + length])) as! [String: Any]
        edit(&header)
        let text = String(decoding: try JSONSerialization.data(withJSONObject: header), as: UTF8.self)
        return safetensors(header: text, data: Array(bytes[(8 + length)...]))
    }

    static func metadataNetwork(_ edit: @escaping (inout [String: Any]) -> Void) throws -> [UInt8] {
        try editedModel { header in
            var meta = header["__metadata__"] as? [String: String] ?? [:]
            var network: [String: Any] = [
                "input_size": 784, "hidden_sizes": [32], "output_size": 10, "dropout_input": 0.2, "dropout_hidden": 0.5,
            ]
            edit(&network)
            meta["network"] = String(decoding: try! JSONSerialization.data(withJSONObject: network), as: UTF8.self)
            header["__metadata__"] = meta
        }
    }

    /// Safetensors files given to `eval`: sizes and offsets set to 0, -1, 2^31, 2^62, 2^63, lies about lengths.
    static var safetensorsCases: [Case] {
        func model(_ name: String, mentions: [String] = ["model.safetensors"], _ bytes: @escaping () throws -> [UInt8]) -> Case {
            Case(name: name, arguments: ["eval", "--checkpoint", "model.safetensors", "--data", "../data"], mentions: mentions) {
                try Data(try bytes()).write(to: URL(fileURLWithPath: "\($0)/model.safetensors"))
            }
        }
        let weight = "layers.0.weight"
        var cases = [
            model("empty safetensors file") { [] },
            model("4-byte safetensors file") { [1, 2, 3, 4] },
            model("header length 2^63") { safetensors(header: "{}", declaredLength: 1 << 63) },
            model("header length past the end") { safetensors(header: "{}", declaredLength: 4096) },
            model("header not JSON") { safetensors(header: "not json at all") },
            model("header a JSON array") { safetensors(header: "[1,2,3]") },
            model("metadata not strings") { safetensors(header: "{\"__metadata__\":{\"network\":5}}") },
            model("no network description") { safetensors(header: "{}") },
        ]
        for (label, shape, offsets) in [
            ("shape [-1], offsets [0,-4]", "[-1]", "[0,-4]"), ("shape [2^62]", "[4611686018427387904]", "[0,16]"),
            ("shape [2^31,2^31,4] (overflow)", "[2147483648,2147483648,4]", "[0,16]"), ("shape [0] offsets [0,2^63-1]", "[0]", "[0,9223372036854775807]"),
            ("offsets past the data", "[4]", "[0,16000]"), ("fractional shape", "[1.5]", "[0,6]"), ("shape a string", "\"big\"", "[0,4]"),
        ] {
            cases.append(model(label) {
                safetensors(header: "{\"\(weight)\":{\"dtype\":\"F32\",\"shape\":\(shape),\"data_offsets\":\(offsets)}}", data: [UInt8](repeating: 0, count: 16))
            })
        }
        cases += [
            model("F16 tensor") { safetensors(header: "{\"\(weight)\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,4]}}", data: [0, 0, 0, 0]) },
            model("overlapping tensors") {
                safetensors(header: "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", data: [UInt8](repeating: 0, count: 12))
            },
            model("network with 5 outputs for 10 classes", mentions: ["model.safetensors", "5"]) { try metadataNetwork { $0["output_size"] = 5 } },
            model("network with a negative layer size", mentions: ["model.safetensors", "-5"]) { try metadataNetwork { $0["hidden_sizes"] = [-5] } },
            model("network with 4e9 inputs", mentions: ["model.safetensors", "4000000000"]) { try metadataNetwork { $0["input_size"] = 4_000_000_000 } },
            model("network with dropout 1.5", mentions: ["model.safetensors", "1.5"]) { try metadataNetwork { $0["dropout_hidden"] = 1.5 } },
            model("tensors of another architecture", mentions: ["model.safetensors", "architecture"]) { try metadataNetwork { $0["hidden_sizes"] = [16] } },
            model("preprocessing divisor 0", mentions: ["model.safetensors", "divisor"]) {
                try editedModel { header in
                    var meta = header["__metadata__"] as? [String: String] ?? [:]
                    meta["preprocessing"] = #"{"kind":"scale:0","divisor":0}"#
                    header["__metadata__"] = meta
                }
            },
            model("a NaN weight", mentions: ["model.safetensors", "must be finite"]) {
                var bytes = Array(try Data(contentsOf: URL(fileURLWithPath: "\(try Checkpoint.newest(in: "\(root)/good"))/model.safetensors")))
                let length = Int((0..<8).reduce(UInt64(0)) { $0 | UInt64(bytes[$1]) << (8 * UInt64($1)) })
                withUnsafeBytes(of: Float.nan.bitPattern.littleEndian) { for k in 0..<4 { bytes[8 + length + 4 + k] = $0[k] } }
                return bytes
            },
            Case(name: "checkpoint is /dev/zero", arguments: ["eval", "--checkpoint", "/dev/zero", "--data", "../data"], mentions: ["/dev/zero", "regular file"]),
            Case(name: "checkpoint is a FIFO", arguments: ["eval", "--checkpoint", "pipe", "--data", "../data"], mentions: ["pipe", "regular file"]) { fifo("\($0)/pipe") },
        ]
        return cases
    }

    /// Checkpoint folders whose state.json (resealed, so its checksum matches) is hostile.
}
