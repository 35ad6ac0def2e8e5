import Shardwise

/// `x + σ(gate(x)) ⊙ body(x)`: a gated residual block (highway-style), a composite Shardwise
/// does not ship, written outside it. It only says how its children connect; the engine keeps
/// their parameters (`body.<i>.…`, `gate.<i>.…`), activations and gradients, and adds the
/// gradients of `x`, which three nodes read, in a fixed order.
public struct GatedResidual: CompositeLayer {
    public var body: Sequential
    public var gate: Sequential

    /// The block around `body`; the gate is a linear layer of the body's width, then a sigmoid.
    public init(width: Int, @LayerBuilder body: () -> [any Layer]) {
        self.body = Sequential(body())
        self.gate = Sequential { Linear(width, width); Sigmoid() }
    }

    public func build(_ x: ModelValue, in graph: inout ModelGraph) throws(ModelError) -> ModelValue {
        let b = try graph.apply(body, named: "body", to: x)
        let g = try graph.apply(gate, named: "gate", to: x)
        return try graph.combine(.add, [x, try graph.combine(.multiply, [g, b])])
    }
}
