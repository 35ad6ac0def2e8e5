/// What a layer's ONNX lowering (``Layer/lowerToONNX(_:input:inputShape:parameters:name:)``)
/// adds its operators to: the exporter's graph (`shardwise export --onnx`, opset 17). Values
/// are named strings; every method returns the name of what it added.
public protocol ONNXGraphBuilder {
    /// A float tensor constant of `dims` (empty: a scalar).
    mutating func constant(_ name: String, _ dims: [Int], _ values: [Float]) -> String
    /// A 1-D int64 constant (shapes, axes, slice bounds).
    mutating func integers(_ name: String, _ values: [Int]) -> String
    /// An operator `op` computing `output` from `inputs`, with integer, float and integer-list attributes.
    mutating func addNode(_ op: String, _ inputs: [String], _ output: String, ints: [(String, Int)], floats: [(String, Float)], lists: [(String, [Int])]) -> String
}

extension ONNXGraphBuilder {
    /// An operator with only the attributes given.
    @discardableResult
    public mutating func node(
        _ op: String, _ inputs: [String], _ output: String, ints: [(String, Int)] = [], floats: [(String, Float)] = [], lists: [(String, [Int])] = []
    ) -> String {
        addNode(op, inputs, output, ints: ints, floats: floats, lists: lists)
    }

    /// `(x - mean) / √(variance + ε)` over `axes` of `x` (the variance biased), or without the
    /// centring `x / √(mean(x²) + ε)`: the normalizations' common core.
    mutating func normalized(_ x: String, axes: [Int], centred: Bool, epsilon: Double, _ name: String) -> String {
        let centredValue = centred
            ? node("Sub", [x, node("ReduceMean", [x], "\(name).mean", ints: [("keepdims", 1)], lists: [("axes", axes)])], "\(name).centred") : x
        let meanSquare = node(
            "ReduceMean", [node("Mul", [centredValue, centredValue], "\(name).square")], "\(name).meansquare", ints: [("keepdims", 1)], lists: [("axes", axes)])
        let root = node("Sqrt", [node("Add", [meanSquare, constant("\(name).eps", [], [Float(epsilon)])], "\(name).shifted")], "\(name).root")
        return node("Div", [centredValue, root], "\(name).normalized")
    }

    /// Pooling and convolution window attributes.
    static func window(_ kernel: Size2D, _ stride: Size2D, _ padding: Size2D) -> [(String, [Int])] {
        [("kernel_shape", [kernel.height, kernel.width]), ("strides", [stride.height, stride.width]),
         ("pads", [padding.height, padding.width, padding.height, padding.width])]
    }
}

// The built-in layers' lowerings: each the standard operators computing the layer at inference.

extension Linear {
    /// `Gemm` with PyTorch's (out, in) weight, `transB` = 1; over (batch, T, I) sequences,
    /// `MatMul` by the transposed weight, then `Add` of the bias.
    public func lowerToONNX<G: ONNXGraphBuilder>(_ graph: inout G, input x: String, inputShape: [Int], parameters: [String], name: String) -> String? {
        guard inputShape.count == 2 else {
            return graph.node("Gemm", [x] + parameters, "\(name).output", ints: [("transB", 1)], floats: [("alpha", 1), ("beta", 1)])
        }
        let transposed = graph.node("Transpose", [parameters[0]], "\(name).weight_t", lists: [("perm", [1, 0])])
        let product = graph.node("MatMul", [x, transposed], "\(name).product")
        return graph.node("Add", [product, parameters[1]], "\(name).output")
    }
}

extension Conv2D {
    /// `Conv` with the (O, C, kH, kW) weight.
    public func lowerToONNX<G: ONNXGraphBuilder>(_ graph: inout G, input x: String, inputShape: [Int], parameters: [String], name: String) -> String? {
        graph.node("Conv", [x] + parameters, "\(name).output", lists: G.window(kernel, stride, padding) + [("dilations", [dilation.height, dilation.width])])
    }
}

extension MaxPool2D {
    public func lowerToONNX<G: ONNXGraphBuilder>(_ graph: inout G, input x: String, inputShape: [Int], parameters: [String], name: String) -> String? {
        graph.node("MaxPool", [x], "\(name).output", lists: G.window(kernel, stride, padding))
    }
}

extension AvgPool2D {
    /// Zeros of the padding count, as `count_include_pad=True`.
    public func lowerToONNX<G: ONNXGraphBuilder>(_ graph: inout G, input x: String, inputShape: [Int], parameters: [String], name: String) -> String? {
        graph.node("AveragePool", [x], "\(name).output", ints: [("count_include_pad", 1)], lists: G.window(kernel, stride, padding))
    }
}

extension Flatten {
    public func lowerToONNX<G: ONNXGraphBuilder>(_ graph: inout G, input x: String, inputShape: [Int], parameters: [String], name: String) -> String? {
        graph.node("Flatten", [x], "\(name).output", ints: [("axis", 1)])
    }
}

extension ReLU {
    public func lowerToONNX<G: ONNXGraphBuilder>(_ graph: inout G, input x: String, inputShape: [Int], parameters: [String], name: String) -> String? {
        graph.node("Relu", [x], "\(name).output")
    }
}

extension Tanh {
    public func lowerToONNX<G: ONNXGraphBuilder>(_ graph: inout G, input x: String, inputShape: [Int], parameters: [String], name: String) -> String? {
        graph.node("Tanh", [x], "\(name).output")
    }
}

extension Sigmoid {
    public func lowerToONNX<G: ONNXGraphBuilder>(_ graph: inout G, input x: String, inputShape: [Int], parameters: [String], name: String) -> String? {
        graph.node("Sigmoid", [x], "\(name).output")
    }
}

extension LeakyReLU {
    public func lowerToONNX<G: ONNXGraphBuilder>(_ graph: inout G, input x: String, inputShape: [Int], parameters: [String], name: String) -> String? {
        graph.node("LeakyRelu", [x], "\(name).output", floats: [("alpha", slope)])
    }
}

extension GELU {
    /// Opset 17 has no GELU: x · ½ (1 + erf(x / √2)), or with `tanh`
    /// x · ½ (1 + tanh(√(2/π) (x + 0.044715 x³))), as PyTorch defines them.
    public func lowerToONNX<G: ONNXGraphBuilder>(_ graph: inout G, input x: String, inputShape: [Int], parameters: [String], name: String) -> String? {
        let inner: String
        if approximate == .tanh {
            let cube = graph.node("Mul", [graph.node("Mul", [x, x], "\(name).x2"), x], "\(name).x3")
            let cubic = graph.node("Mul", [cube, graph.constant("\(name).c", [], [0.044715])], "\(name).cx3")
            let k = graph.constant("\(name).k", [], [Float((2 / Double.pi).squareRoot())])
            inner = graph.node("Tanh", [graph.node("Mul", [graph.node("Add", [x, cubic], "\(name).u"), k], "\(name).ku")], "\(name).t")
        } else {
            let k = graph.constant("\(name).k", [], [Float(0.5.squareRoot())])
            inner = graph.node("Erf", [graph.node("Mul", [x, k], "\(name).z")], "\(name).t")
        }
        let onePlus = graph.node("Add", [inner, graph.constant("\(name).one", [], [1])], "\(name).p")
        return graph.node("Mul", [graph.node("Mul", [x, onePlus], "\(name).xp"), graph.constant("\(name).half", [], [0.5])], "\(name).output")
    }
}

extension Embedding {
    /// The row's first value is a category (`Slice`, `Cast`, `Gather`); the other values pass
    /// through and the category's vector follows them (`Concat`).
    public func lowerToONNX<G: ONNXGraphBuilder>(_ graph: inout G, input x: String, inputShape: [Int], parameters: [String], name: String) -> String? {
        let inputWidth = inputShape.reduce(1, *)
        let axis = graph.integers("\(name).axis", [1])
        let first = graph.node("Slice", [x, graph.integers("\(name).first.start", [0]), graph.integers("\(name).first.end", [1]), axis], "\(name).category")
        let index = graph.node("Cast", [first], "\(name).index", ints: [("to", 7)])  // INT64
        let gathered = graph.node("Gather", [parameters[0], index], "\(name).gathered", ints: [("axis", 0)])  // (batch, 1, dimension)
        let vector = graph.node("Reshape", [gathered, graph.integers("\(name).vector.shape", [-1, dimension])], "\(name).vector")
        guard inputWidth > 1 else { return graph.node("Identity", [vector], "\(name).output") }
        let rest = graph.node("Slice", [x, graph.integers("\(name).rest.start", [1]), graph.integers("\(name).rest.end", [inputWidth]), axis], "\(name).rest")
        return graph.node("Concat", [rest, vector], "\(name).output", ints: [("axis", 1)])
    }
}

extension Dropout {
    /// The identity at inference.
    public func lowerToONNX<G: ONNXGraphBuilder>(_ graph: inout G, input x: String, inputShape: [Int], parameters: [String], name: String) -> String? {
        graph.node("Identity", [x], "\(name).output")
    }
}

extension Dropout2d {
    /// The identity at inference.
    public func lowerToONNX<G: ONNXGraphBuilder>(_ graph: inout G, input x: String, inputShape: [Int], parameters: [String], name: String) -> String? {
        graph.node("Identity", [x], "\(name).output")
    }
}

extension GaussianDropout {
    /// The identity at inference.
    public func lowerToONNX<G: ONNXGraphBuilder>(_ graph: inout G, input x: String, inputShape: [Int], parameters: [String], name: String) -> String? {
        graph.node("Identity", [x], "\(name).output")
    }
}

extension BatchNorm {
    /// `BatchNormalization` with the weight, bias and running statistics (scale, B, mean, var).
    public func lowerToONNX<G: ONNXGraphBuilder>(_ graph: inout G, input x: String, inputShape: [Int], parameters: [String], name: String) -> String? {
        graph.node("BatchNormalization", [x] + parameters.prefix(4), "\(name).output", floats: [("epsilon", Float(epsilon)), ("momentum", Float(1 - momentum))])
    }
}

extension LayerNorm {
    public func lowerToONNX<G: ONNXGraphBuilder>(_ graph: inout G, input x: String, inputShape: [Int], parameters: [String], name: String) -> String? {
        graph.node("LayerNormalization", [x] + parameters, "\(name).output", ints: [("axis", -(dimensions ?? inputShape.count))], floats: [("epsilon", Float(epsilon))])
    }
}

extension RMSNorm {
    /// x / √(mean(x²) + ε) · weight over the trailing dimensions (opset 17 has no RMSNormalization).
    public func lowerToONNX<G: ONNXGraphBuilder>(_ graph: inout G, input x: String, inputShape: [Int], parameters: [String], name: String) -> String? {
        let axes = Array((inputShape.count - (dimensions ?? inputShape.count) + 1)...inputShape.count)
        return graph.node("Mul", [graph.normalized(x, axes: axes, centred: false, epsilon: epsilon, name), parameters[0]], "\(name).output")
    }
}

extension GroupNorm {
    /// Reshaped to (N, G, rest), normalized over the last axis, reshaped back, per-channel affine
    /// (opset 17's GroupNormalization has per-group, not per-channel, scales).
    public func lowerToONNX<G: ONNXGraphBuilder>(_ graph: inout G, input x: String, inputShape: [Int], parameters: [String], name: String) -> String? {
        let grouped = graph.node("Reshape", [x, graph.integers("\(name).grouped.shape", [0, groups, -1])], "\(name).grouped")
        let sample = graph.integers("\(name).sample.shape", [-1] + inputShape)
        let normalized = graph.node("Reshape", [graph.normalized(grouped, axes: [2], centred: true, epsilon: epsilon, name), sample], "\(name).sample")
        let perChannel = graph.integers("\(name).channel.shape", [inputShape[0]] + Array(repeating: 1, count: inputShape.count - 1))
        let weight = graph.node("Reshape", [parameters[0], perChannel], "\(name).weight")
        let bias = graph.node("Reshape", [parameters[1], perChannel], "\(name).bias")
        return graph.node("Add", [graph.node("Mul", [normalized, weight], "\(name).scaled"), bias], "\(name).output")
    }
}

extension TokenEmbedding {
    /// Each id's row of `token.weight` (`Cast` to int64, `Gather`) plus `position.weight` (`Add`, broadcast over the batch).
    public func lowerToONNX<G: ONNXGraphBuilder>(_ graph: inout G, input x: String, inputShape: [Int], parameters: [String], name: String) -> String? {
        let ids = graph.node("Cast", [x], "\(name).ids", ints: [("to", 7)])  // INT64
        let vectors = graph.node("Gather", [parameters[0], ids], "\(name).vectors", ints: [("axis", 0)])  // (batch, T, C)
        return graph.node("Add", [vectors, parameters[1]], "\(name).output")
    }
}

extension CausalSelfAttention {
    /// The projections as `MatMul` by the transposed weights and `Add`; the heads by `Slice`,
    /// `Reshape` and `Transpose`; softmax(q kᵀ / √d + mask) v with the causal mask a constant
    /// (0 on and below the diagonal, -1e30 above); the heads joined back.
    public func lowerToONNX<G: ONNXGraphBuilder>(_ graph: inout G, input x: String, inputShape: [Int], parameters: [String], name: String) -> String? {
        let t = inputShape[0], c = width, h = heads, d = width / heads
        func linear(_ input: String, _ weight: String, _ bias: String, _ label: String) -> String {
            let transposed = graph.node("Transpose", [weight], "\(name).\(label).weight_t", lists: [("perm", [1, 0])])
            return graph.node("Add", [graph.node("MatMul", [input, transposed], "\(name).\(label).product"), bias], "\(name).\(label).output")
        }
        let qkv = linear(x, parameters[0], parameters[1], "qkv")
        let axis = graph.integers("\(name).axis", [2])
        func head(_ k: Int, _ label: String, perm: [Int]) -> String {
            let part = graph.node("Slice", [qkv, graph.integers("\(name).\(label).start", [k * c]), graph.integers("\(name).\(label).end", [(k + 1) * c]), axis], "\(name).\(label)")
            let split = graph.node("Reshape", [part, graph.integers("\(name).\(label).shape", [-1, t, h, d])], "\(name).\(label).heads")
            return graph.node("Transpose", [split], "\(name).\(label).t", lists: [("perm", perm)])
        }
        let q = head(0, "q", perm: [0, 2, 1, 3]), k = head(1, "k", perm: [0, 2, 3, 1]), v = head(2, "v", perm: [0, 2, 1, 3])
        let scores = graph.node("Mul", [graph.node("MatMul", [q, k], "\(name).qk"), graph.constant("\(name).scale", [], [scale(d)])], "\(name).scores")
        var mask = [Float](repeating: 0, count: t * t)
        for i in 0..<t { for j in (i + 1)..<max(t, i + 1) { mask[i * t + j] = -1e30 } }
        let masked = graph.node("Add", [scores, graph.constant("\(name).mask", [t, t], mask)], "\(name).masked")
        let probabilities = graph.node("Softmax", [masked], "\(name).probabilities", ints: [("axis", 3)])
        let heads = graph.node("Transpose", [graph.node("MatMul", [probabilities, v], "\(name).y")], "\(name).y.t", lists: [("perm", [0, 2, 1, 3])])
        let joined = graph.node("Reshape", [heads, graph.integers("\(name).y.shape", [-1, t, c])], "\(name).joined")
        return linear(joined, parameters[2], parameters[3], "proj")
    }
}
