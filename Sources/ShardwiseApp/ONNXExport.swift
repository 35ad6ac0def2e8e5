import Foundation
import Shardwise

/// `shardwise export --onnx`: a saved model as an ONNX model (IR version 8, opset 17) for
/// ONNX Runtime and other inference engines. The input `input` takes samples as stored in the
/// training data (a dynamic batch dimension `batch`); the preprocessing Shardwise applied in
/// training is the graph's first nodes (`Div` by the divisor, then `Sub` shift and `Div` scale
/// per feature), in the same order as Shardwise computes it. `Linear` becomes `Gemm` (weights in
/// PyTorch's (out, in) layout, `transB` = 1), `ReLU` becomes `Relu`, and dropout layers, the
/// identity at inference, are left out. Outputs: `logits` and `probabilities` (`Softmax`) for a
/// classification; `prediction` for a regression (standardized targets mapped back).
public enum ONNXExport {
    /// The ONNX model's bytes.
    public static func model(_ saved: SavedModel) throws -> [UInt8] {
        let network: Network
        do { network = try Network(saved.network) } catch {
            throw RunError("\(saved.path): \(error)")
        }
        var nodes: [[UInt8]] = []
        var initializers: [[UInt8]] = []
        func tensor(_ name: String, _ dims: [Int], _ values: [Float]) {
            initializers.append(Protobuf { t in
                t.packedInts(1, dims)
                t.int(2, 1)  // FLOAT
                t.string(8, name)
                t.data(9, values.withUnsafeBytes { Array($0) })
            }.bytes)
        }
        func node(_ op: String, _ inputs: [String], _ output: String, ints: [(String, Int)] = [], floats: [(String, Float)] = []) {
            nodes.append(Protobuf { n in
                for i in inputs { n.string(1, i) }
                n.string(2, output)
                n.string(3, "\(op.lowercased())_\(nodes.count)")
                n.string(4, op)
                for (name, value) in ints { n.message(5) { a in a.string(1, name); a.int(3, value); a.int(20, 2) } }
                for (name, value) in floats { n.message(5) { a in a.string(1, name); a.float(2, value); a.int(20, 1) } }
            }.bytes)
        }
        var current = "input"
        let p = saved.preprocessing
        if p.divisor != 1 {
            tensor("preprocess.divisor", [], [p.divisor])
            node("Div", [current, "preprocess.divisor"], "preprocess.scaled")
            current = "preprocess.scaled"
        }
        if let shift = p.shift, let scale = p.scale {
            tensor("preprocess.shift", [shift.count], shift)
            tensor("preprocess.scale", [scale.count], scale)
            node("Sub", [current, "preprocess.shift"], "preprocess.centred")
            node("Div", ["preprocess.centred", "preprocess.scale"], "preprocess.normalized")
            current = "preprocess.normalized"
        }
        var tensors = network.layout.tensors.makeIterator()
        for (k, layer) in network.layers.enumerated() {
            switch layer {
            case is Linear:
                guard let weight = tensors.next(), let bias = tensors.next() else { throw RunError("\(saved.path): layer \(k) has no parameters") }
                for t in [weight, bias] {
                    tensor(t.name, t.shape, Array(saved.parameters[t.offset..<t.offset + t.count]))
                }
                node("Gemm", [current, weight.name, bias.name], "layers.\(k).output", ints: [("transB", 1)], floats: [("alpha", 1), ("beta", 1)])
                current = "layers.\(k).output"
            case is ReLU, is Tanh, is Sigmoid:
                node(layer is ReLU ? "Relu" : layer is Tanh ? "Tanh" : "Sigmoid", [current], "layers.\(k).output")
                current = "layers.\(k).output"
            case let leaky as LeakyReLU:
                node("LeakyRelu", [current], "layers.\(k).output", floats: [("alpha", leaky.slope)])
                current = "layers.\(k).output"
            case is Dropout, is GaussianDropout, is Dropout2d:
                continue  // the identity at inference
            default:
                throw RunError("\(saved.path): layer \(k) (\(type(of: layer))) has no ONNX form in this exporter")
            }
        }
        let outputs: [String]
        if saved.task == .classification {
            node("Identity", [current], "logits")
            node("Softmax", ["logits"], "probabilities", ints: [("axis", 1)])
            outputs = ["logits", "probabilities"]
        } else if let shift = p.targetShift, let scale = p.targetScale {
            tensor("targets.scale", [scale.count], scale)
            tensor("targets.shift", [shift.count], shift)
            node("Mul", [current, "targets.scale"], "targets.scaled")
            node("Add", ["targets.scaled", "targets.shift"], "prediction")
            outputs = ["prediction"]
        } else {
            node("Identity", [current], "prediction")
            outputs = ["prediction"]
        }
        func valueInfo(_ name: String, width: Int) -> (inout Protobuf) -> Void {
            { v in
                v.string(1, name)
                v.message(2) { type in
                    type.message(1) { t in
                        t.int(1, 1)  // FLOAT
                        t.message(2) { shape in
                            shape.message(1) { d in d.string(2, "batch") }
                            shape.message(1) { d in d.int(1, width) }
                        }
                    }
                }
            }
        }
        return Protobuf { m in
            m.int(1, 8)  // IR version 8
            m.string(2, "shardwise")
            m.string(3, ShardwiseVersion.current)
            m.message(7) { g in
                for n in nodes { g.data(1, n) }
                g.string(2, "shardwise_\(saved.task.rawValue)")
                for t in initializers { g.data(5, t) }
                g.message(11, valueInfo("input", width: saved.network.inputSize))
                for o in outputs { g.message(12, valueInfo(o, width: saved.network.outputSize)) }
            }
            m.message(8) { o in
                o.string(1, "")
                o.int(2, 17)
            }
        }.bytes
    }
}
