/// Layers applied one after another: the model type of Shardwise.
///
/// ```swift
/// let model = Sequential {
///     Dropout(0.2)
///     Linear(784, 1024); ReLU(); Dropout(0.5)
///     Linear(1024, 10)
/// }
/// ```
///
/// Parameter names follow PyTorch's state dicts: the k-th layer that has parameters
/// (counting from 0) names its tensors `layers.<k>.<name>`, e.g. `layers.0.weight`.
/// Widths are checked when the model is compiled for an input width (see ``Network``).
public struct Sequential: Sendable {
    /// The layers, applied in order.
    public var layers: [any Layer]

    /// A model of `layers`, in order.
    public init(_ layers: [any Layer]) {
        self.layers = layers
    }

    /// A model of `layers`, in order.
    public init(@LayerBuilder _ layers: () -> [any Layer]) {
        self.layers = layers()
    }
}

/// Builds a layer list from statements, `if`, `if-else` and `for` loops; a nested
/// ``Sequential`` contributes its layers.
@resultBuilder
public enum LayerBuilder {
    /// One layer, or a nested model's layers.
    public static func buildExpression(_ layer: any Layer) -> [any Layer] { [layer] }
    /// One layer, or a nested model's layers.
    public static func buildExpression(_ model: Sequential) -> [any Layer] { model.layers }
    /// The layers of consecutive statements, in order.
    public static func buildBlock(_ parts: [any Layer]...) -> [any Layer] { parts.flatMap { $0 } }
    /// The layers of an `if` without `else`, or none.
    public static func buildOptional(_ part: [any Layer]?) -> [any Layer] { part ?? [] }
    /// The layers of the branch taken.
    public static func buildEither(first part: [any Layer]) -> [any Layer] { part }
    /// The layers of the branch taken.
    public static func buildEither(second part: [any Layer]) -> [any Layer] { part }
    /// The layers of every iteration of a `for` loop, in order.
    public static func buildArray(_ parts: [[any Layer]]) -> [any Layer] { parts.flatMap { $0 } }
}
