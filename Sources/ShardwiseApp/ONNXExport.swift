import Foundation
import Shardwise

/// `shardwise export --onnx`: a saved model as an ONNX model (IR version 8, opset 17) for
/// ONNX Runtime and other inference engines. The input `input` takes samples as the data
/// reader gave them in training (a dynamic batch dimension `batch`): an own file's values as
/// stored, an MNIST folder's pixels divided by 255 (its reader divides); the preprocessing Shardwise applied in
/// training is the graph's first nodes (`Div` by the divisor, then `Sub` shift and `Div` scale
/// per feature), in the same order as Shardwise computes it; a model over (C, H, W) samples
/// then reshapes the rows to NCHW. Each layer becomes the standard operators computing it
/// (`Linear`: `Gemm` with PyTorch's (out, in) weights, `transB` = 1; `Conv2D`: `Conv` with its
/// (O, C, kH, kW) weights; pooling, `Flatten`, activations by their ONNX names; `GELU`, which
/// opset 17 lacks, from `Erf` or `Tanh` as PyTorch defines it; `Embedding`: `Slice`, `Cast`,
/// `Gather`, `Concat`); dropout layers, the identity at inference, are left out. Outputs:
/// `logits` and `probabilities` (`Softmax`) for a classification; `prediction` for a
/// regression (standardized targets mapped back).
public enum ONNXExport {
    /// The ONNX model's bytes.
    public static func model(_ saved: SavedModel) throws -> [UInt8] {
        let network: Network
        do { network = try Network(saved.network) } catch {
            throw RunError("\(saved.path): \(error)")
        }
        var graph = Graph()
        var current = "input"
        let p = saved.preprocessing
        if p.divisor != 1 {
            current = graph.node("Div", [current, graph.constant("preprocess.divisor", [], [p.divisor])], "preprocess.scaled")
        }
        if let shift = p.shift, let scale = p.scale {
            let centred = graph.node("Sub", [current, graph.constant("preprocess.shift", [shift.count], shift)], "preprocess.centred")
            current = graph.node("Div", [centred, graph.constant("preprocess.scale", [scale.count], scale)], "preprocess.normalized")
        }
        if network.shapes[0].count > 1 {
            current = graph.node("Reshape", [current, graph.integers("input.shape", [-1] + network.shapes[0])], "input.samples")
        }
        // Each value's name in the graph: the input's after preprocessing, then each node's output.
        var values = [String](repeating: "", count: network.shapes.count)
        values[0] = current
        for (k, node) in network.nodes.enumerated() {
            let name = "\(node.name).\(k)"
            let inputs = node.inputs.map { values[$0] }
            guard let layer = node.layer else {
                guard case .combine(let combination) = node.operation else { continue }
                values[node.output] = graph.combine(combination, inputs, shapes: node.inputs.map { network.shapes[$0] }, name)
                continue
            }
            // This node's tensors, under the checkpoint's names, into the graph.
            let parameters = network.tensors(ofNode: k).map { t in
                graph.constant(t.name, t.shape, Array(saved.parameters[t.offset..<t.offset + t.count]))
            }
            guard let output = layer.lowerToONNX(&graph, input: inputs[0], inputShape: network.shapes[node.inputs[0]], parameters: parameters, name: name) else {
                throw RunError("\(saved.path): layer \(node.name) (\(type(of: layer))) has no ONNX form (its lowerToONNX gives none)")
            }
            values[node.output] = output
        }
        current = values[network.shapes.count - 1]
        if network.shapes.last!.count > 1 { current = graph.node("Flatten", [current], "output.flat", ints: [("axis", 1)]) }
        let outputs: [String]
        if saved.task == .classification {
            graph.node("Identity", [current], "logits")
            let positions = network.labelPositions, width = network.widths.last!
            if positions > 1 {
                // A language model's (T, V) logits: a softmax over each position's V.
                let positioned = graph.node("Reshape", ["logits", graph.integers("logits.positions", [-1, positions, width / positions])], "logits.positioned")
                let softmax = graph.node("Softmax", [positioned], "probabilities.positioned", ints: [("axis", 2)])
                graph.node("Reshape", [softmax, graph.integers("probabilities.shape", [-1, width])], "probabilities")
            } else {
                graph.node("Softmax", ["logits"], "probabilities", ints: [("axis", 1)])
            }
            outputs = ["logits", "probabilities"]
        } else if let shift = p.targetShift, let scale = p.targetScale {
            let scaled = graph.node("Mul", [current, graph.constant("targets.scale", [scale.count], scale)], "targets.scaled")
            graph.node("Add", [scaled, graph.constant("targets.shift", [shift.count], shift)], "prediction")
            outputs = ["prediction"]
        } else {
            graph.node("Identity", [current], "prediction")
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
                for n in graph.nodes { g.data(1, n) }
                g.string(2, "shardwise_\(saved.task.rawValue)")
                for t in graph.initializers { g.data(5, t) }
                g.message(11, valueInfo("input", width: saved.network.inputSize))
                for o in outputs { g.message(12, valueInfo(o, width: saved.network.outputSize)) }
            }
            m.message(8) { o in
                o.string(1, "")
                o.int(2, 17)
            }
        }.bytes
    }

    /// An ONNX graph's nodes and initializers (GraphProto fields 1 and 5), as they are added.
    struct Graph: ONNXGraphBuilder {
        var nodes: [[UInt8]] = []
        var initializers: [[UInt8]] = []
        /// The initializers' names: a tensor two layers read (a tied head's weight) is added once.
        var named: Set<String> = []

        /// A float tensor initializer; returns its name.
        @discardableResult
        mutating func constant(_ name: String, _ dims: [Int], _ values: [Float]) -> String {
            tensor(name, dims, type: 1, values.withUnsafeBytes { Array($0) })  // FLOAT
        }

        /// A 1-D int64 tensor initializer (shapes, slice bounds); returns its name.
        mutating func integers(_ name: String, _ values: [Int]) -> String {
            tensor(name, [values.count], type: 7, values.map(Int64.init).withUnsafeBytes { Array($0) })  // INT64, little-endian
        }

        private mutating func tensor(_ name: String, _ dims: [Int], type: Int, _ raw: [UInt8]) -> String {
            guard named.insert(name).inserted else { return name }
            initializers.append(Protobuf { t in
                t.packedInts(1, dims)
                t.int(2, type)
                t.string(8, name)
                t.data(9, raw)
            }.bytes)
            return name
        }

        /// A node computing `output` from `inputs`; returns `output`.
        @discardableResult
        mutating func node(
            _ op: String, _ inputs: [String], _ output: String,
            ints: [(String, Int)] = [], floats: [(String, Float)] = [], lists: [(String, [Int])] = []
        ) -> String {
            let index = nodes.count
            nodes.append(Protobuf { n in
                for i in inputs { n.string(1, i) }
                n.string(2, output)
                n.string(3, "\(op.lowercased())_\(index)")
                n.string(4, op)
                for (name, value) in ints { n.message(5) { a in a.string(1, name); a.int(3, value); a.int(20, 2) } }  // INT
                for (name, value) in floats { n.message(5) { a in a.string(1, name); a.float(2, value); a.int(20, 1) } }  // FLOAT
                for (name, values) in lists { n.message(5) { a in a.string(1, name); a.packedInts(8, values); a.int(20, 7) } }  // INTS
            }.bytes)
            return output
        }

        mutating func addNode(
            _ op: String, _ inputs: [String], _ output: String, ints: [(String, Int)], floats: [(String, Float)], lists: [(String, [Int])]
        ) -> String {
            node(op, inputs, output, ints: ints, floats: floats, lists: lists)
        }

        /// A combination of `inputs` (of sample `shapes`): `Add`, `Concat` on the channel axis, `Mul` (a per-channel factor reshaped to broadcast).
        mutating func combine(_ combination: Combination, _ inputs: [String], shapes: [[Int]], _ name: String) -> String {
            switch combination {
            case .add:
                var sum = inputs[0]
                for (i, x) in inputs.dropFirst().enumerated() { sum = node("Add", [sum, x], i == inputs.count - 2 ? "\(name).output" : "\(name).sum\(i)") }
                return sum
            case .concatenate:
                return node("Concat", inputs, "\(name).output", ints: [("axis", 1)])
            case .multiply:
                var factor = inputs[1]
                if shapes[1].count < shapes[0].count {
                    factor = node("Reshape", [factor, integers("\(name).factor.shape", [-1, shapes[1][0]] + Array(repeating: 1, count: shapes[0].count - 1))], "\(name).factor")
                }
                return node("Mul", [inputs[0], factor], "\(name).output")
            }
        }
    }
}
