import Synchronization

/// A layer the layer language can name, so that model files and descriptions
/// (``NetworkConfiguration/layers``, checkpoints) can hold it: a user's layer conforms, is
/// registered once with ``ModelDescription/register(_:)``, and is then written like a built-in
/// one, `linear(64) swish linear(10)`.
public protocol NamedLayer: Layer {
    /// Its name in the layer language: lowercase letters, digits and `_`, starting with a letter.
    static var languageName: String { get }
    /// The layer from its arguments in a description, for input samples of `inputShape` (the
    /// layer infers widths from it, as `linear(10)` does). Read every argument it takes:
    /// arguments left unread are refused, naming them.
    init(arguments: inout LayerArguments, inputShape: [Int]) throws(ModelError)
}

/// A layer's arguments in a description: positional first, then `key: value`, read by
/// position or key; ``NamedLayer`` initialisers consume what they take.
public struct LayerArguments {
    var arguments: ModelDescription.Arguments

    /// Argument `position` (nil: by key only) or `key`, a whole number; `value` when absent.
    public mutating func int(_ position: Int?, _ key: String, default value: Int? = nil) throws(ModelError) -> Int {
        try arguments.int(position, key, default: value)
    }

    /// Argument `position` or `key`, a finite number; `value` when absent.
    public mutating func double(_ position: Int?, _ key: String, default value: Double? = nil) throws(ModelError) -> Double {
        try arguments.double(position, key, default: value)
    }

    /// Argument `position` or `key` as written (quotes kept), nil when absent.
    public mutating func text(_ position: Int?, _ key: String) -> String? {
        arguments.text(position, key)
    }
}

extension ModelDescription {
    /// Layer types registered by name (``register(_:)``).
    static let registered = Mutex<[String: any NamedLayer.Type]>([:])

    /// Names the built-in layers and blocks take (not available to ``register(_:)``).
    static let builtInNames: Set<String> = [
        "conv", "conv2d", "maxpool", "maxpool2d", "avgpool", "avgpool2d", "flatten", "linear", "dense", "embedding", "relu", "tanh", "sigmoid",
        "gelu", "leaky_relu", "leakyrelu", "batchnorm", "batchnorm1d", "batchnorm2d", "batch_norm", "layernorm", "layer_norm", "rmsnorm", "rms_norm",
        "groupnorm", "group_norm", "dropout", "dropout2d", "gaussian_dropout", "residual", "parallel",
    ]

    /// Makes `type` available in the layer language under its ``NamedLayer/languageName``, in
    /// every description parsed afterwards (model files, ``NetworkConfiguration``, checkpoints).
    /// Registering the same type again does nothing. Throws for a malformed name, a built-in
    /// one, or one another type has taken.
    public static func register(_ type: any NamedLayer.Type) throws(ModelError) {
        let name = type.languageName
        guard let first = name.unicodeScalars.first, ("a"..."z").contains(first),
            name.unicodeScalars.allSatisfy({ ("a"..."z").contains($0) || ("0"..."9").contains($0) || $0 == "_" })
        else { throw ModelError("layer name '\(name)' of \(type), expected lowercase letters, digits and _, starting with a letter") }
        guard !builtInNames.contains(name) else { throw ModelError("layer name '\(name)' of \(type) is a built-in layer's") }
        let taken: (any NamedLayer.Type)? = registered.withLock { names in
            if let other = names[name], ObjectIdentifier(other) != ObjectIdentifier(type) { return other }
            names[name] = type
            return nil
        }
        if let taken { throw ModelError("layer name '\(name)' of \(type) is taken by \(taken)") }
    }

    /// The registered layer `item` names, nil when none has that name.
    static func registeredLayer(_ item: Item, _ arguments: inout Arguments, shape: [Int]) throws(ModelError) -> (any Layer)? {
        guard let type = registered.withLock({ $0[item.name] }) else { return nil }
        var wrapped = LayerArguments(arguments: arguments)
        let layer = try type.init(arguments: &wrapped, inputShape: shape)
        arguments = wrapped.arguments
        return layer
    }

    /// The registered names, sorted (for errors).
    static var registeredNames: [String] { registered.withLock { $0.keys.sorted() } }
}
