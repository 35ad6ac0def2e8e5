import ShardwiseData

/// The one checked path for the sizes of a model description, whichever command reads it
/// (`--model` in train, sweep, scale and bench; a checkpoint's `state.json` or a bare
/// `model.safetensors` in eval, predict, export and resume): every sample shape between
/// layers goes through ``sampleWidth(_:_:)`` (``ModelGraph`` and ``ModelDescription`` call it),
/// and every built-in layer bounds its arguments and the products it computes later (its
/// weights, its lowered matrices, its scratch) with ``arguments(_:_:)`` and ``product(_:_:)``
/// inside its `outputShape`, before anything else reads them. A size past ``maximum`` is a
/// ``ModelError`` naming the layer; with every factor at most 2^31 - 1, the products the
/// passes and ``MemoryEstimate`` then form (times a shard's rows) stay inside `Int`.
public enum ModelSize {
    /// The most values in one sample, one parameter tensor or one layer argument: 2^31 - 1,
    /// BLAS's `int` dimensions and what one random stream addresses.
    public static let maximum = Int(Int32.max)

    /// Throws unless every value is in 0...``maximum``.
    public static func arguments(_ layer: String, _ values: [Int]) throws(ModelError) {
        if let value = values.first(where: { !(0...maximum).contains($0) }) {
            throw ModelError("\(layer): size \(value), expected at most \(maximum) (2^31 - 1)")
        }
    }

    /// The product of `factors`, or an error naming `what` when it is negative or more than ``maximum``.
    @discardableResult
    public static func product(_ what: String, _ factors: [Int]) throws(ModelError) -> Int {
        guard let value = CheckedSize.product(factors), value <= maximum else {
            throw ModelError("\(what) has \(factors.map(String.init).joined(separator: " x ")) values, expected at most \(maximum) (2^31 - 1)")
        }
        return value
    }

    /// The values in one sample of `shape`: one or more positive sizes, at most ``maximum`` in all.
    public static func sampleWidth(_ shape: [Int], _ what: String) throws(ModelError) -> Int {
        guard !shape.isEmpty, shape.allSatisfy({ $0 > 0 }), let width = CheckedSize.product(shape), width <= maximum else {
            throw ModelError("\(what) gives samples of shape \(shape), expected positive sizes of 1...\(maximum) values in all")
        }
        return width
    }
}
