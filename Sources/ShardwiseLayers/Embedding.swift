import ShardwiseData
import ShardwiseKernels

/// A learned vector per category, as PyTorch's `nn.Embedding(count, dimension)` (weight
/// (count, dimension), named `weight`), for integer-coded categorical columns.
///
/// It reads the category of each row from the row's first value (an integer in
/// `0..<count`, as the data holds it), passes the other values through, and appends the
/// category's vector: rows of I values become rows of I - 1 + dimension. So k Embedding
/// layers at the start of a model consume the data's first k columns, one each, and leave
/// `[numeric columns, vector 0, ..., vector k-1]`. In PyTorch:
/// `torch.cat([x[:, 1:], emb(x[:, 0].long())], dim=1)`.
///
/// The gradient is sparse (only the rows' categories), but each shard writes it densely:
/// the whole table zeroed, then each row's output gradient added onto its category's vector
/// in row order. The reduction then sums the shards' tables in shard order like any other
/// tensor, so the contract holds at the price of a table-sized gradient per shard (fine
/// for tabular vocabularies; not meant for million-row vocabularies).
/// Vectors start uniform in [-√3, √3) (unit variance, as PyTorch's N(0, 1)).
/// A category outside `0..<count` gives NaN outputs (``Network/categoricalProblem(in:)`` finds
/// such data before training or evaluation starts).
public struct Embedding: Layer {
    /// Categories: rows of the table.
    public let count: Int
    /// Values per category's vector.
    public let dimension: Int

    public init(_ count: Int, _ dimension: Int) {
        self.count = count
        self.dimension = dimension
    }

    public func outputWidth(inputWidth: Int) throws(ModelError) -> Int {
        guard count > 0, dimension > 0 else { throw ModelError("Embedding(\(count), \(dimension)): sizes must be positive") }
        try ModelSize.arguments("Embedding(\(count), \(dimension))", [dimension])
        guard count <= 1 << 24 else { throw ModelError("Embedding(\(count), \(dimension)): at most 2^24 categories (each is read from a float)") }
        return inputWidth - 1 + dimension
    }

    public func outputShape(inputShape: [Int]) throws(ModelError) -> [Int] {
        guard inputShape.count == 1 else {
            throw ModelError("Embedding takes flat rows whose first value is a category, got samples of shape \(Network.describe(inputShape))")
        }
        return [try outputWidth(inputWidth: inputShape[0])]
    }

    public func parameters(inputWidth: Int) -> [ParameterSpec] {
        [ParameterSpec(name: "weight", shape: [count, dimension], initializer: .uniform(bound: Float(3.0.squareRoot())), role: .other)]
    }

    /// The category of a row's first value, or nil when it is not one.
    @inline(__always)
    func category(_ value: Float) -> Int? {
        guard value >= 0, value < Float(count), value.rounded(.towardZero) == value else { return nil }
        return Int(value)
    }

    public func forward(_ pass: ForwardPass) {
        let i = pass.inputWidth, o = pass.outputWidth, table = pass.parameters[0]
        for r in 0..<pass.rows {
            let x = pass.input + r * i, y = pass.output + r * o
            (y).update(from: x + 1, count: i - 1)
            if let c = category(x[0]) {
                (y + i - 1).update(from: table + c * dimension, count: dimension)
            } else {
                (y + i - 1).update(repeating: .nan, count: dimension)
            }
        }
    }

    public func backward(_ pass: BackwardPass) {
        let i = pass.inputWidth, o = pass.outputWidth, dW = pass.parameterGradients[0]
        dW.update(repeating: 0, count: count * dimension)
        for r in 0..<pass.rows {
            guard let c = category(pass.input[r * i]) else { continue }
            let dy = pass.outputGradient + r * o + i - 1, row = dW + c * dimension
            for d in 0..<dimension { row[d] += dy[d] }
        }
        guard let dx = pass.inputGradient else { return }
        for r in 0..<pass.rows {
            dx[r * i] = 0  // a category has no gradient
            (dx + r * i + 1).update(from: pass.outputGradient + r * o, count: i - 1)
        }
    }
}

extension Network {
    /// The first sample whose category column is not an integer in range for the
    /// ``Embedding`` layers at the start of the model (layer k reads data column k), or nil.
    public func categoricalProblem(in data: Dataset) -> String? {
        var row = [Float](repeating: 0, count: data.features)
        for (column, layer) in layers.prefix(while: { $0 is Embedding }).enumerated() {
            let embedding = layer as! Embedding
            guard column < data.features else { return "the model's Embedding layer \(column) reads column \(column + 1), the data has \(data.features)" }
            for sample in 0..<data.count {
                row.withUnsafeMutableBufferPointer { data.copyInputs(sample, into: $0.baseAddress!) }
                if embedding.category(row[column]) == nil {
                    return "\(data.source): sample \(sample + 1), column \(column + 1) holds \(row[column]), expected a category in 0...\(embedding.count - 1) for Embedding(\(embedding.count), \(embedding.dimension)) (layer \(column))"
                }
            }
        }
        return nil
    }
}
