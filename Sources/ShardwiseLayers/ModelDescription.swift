import Foundation

/// The layer language of model files (`--model FILE`) and of ``NetworkConfiguration/layers``:
/// layers separated by spaces, commas or new lines, each a name with optional arguments,
/// positional first, then `key: value` or `key=value` (the second needs no quotes in a YAML list):
///
/// ```
/// conv(32, 5, pad: 2) relu maxpool(2) conv(64, 5, pad: 2) relu maxpool(2)
/// flatten dropout(0.5) linear(1024) relu dropout(0.5) linear(10)
/// ```
///
/// Widths and channels come from the shapes: `conv(32, 5)` takes whatever channels reach it,
/// `linear(10)` whatever width. Names (PyTorch's class in brackets): `conv(out, kernel, stride:,
/// pad:, dilation:)` [Conv2d], `maxpool(kernel, stride:, pad:)` [MaxPool2d], `avgpool(...)`
/// [AvgPool2d], `flatten` [Flatten], `linear(out, dropconnect: p, tied: tokens)` [Linear; `tied: tokens`: its weight
/// is the token table of the `tokens` layer before it, as a GPT's output head], `embedding(count, dim)`
/// [Embedding], `relu`, `tanh`, `sigmoid`, `gelu(approximate: tanh|none)`, `leaky_relu(slope)`,
/// `dropout(p)`, `dropout2d(p)`, `gaussian_dropout(p)`.
public enum ModelDescription {
    /// One parsed item: its text (for errors), name, positional and named arguments.
    struct Item {
        var text: String
        var name: String
        var positional: [String]
        var named: [String: String]
        /// The text between the parentheses, as written (a composite's layers).
        var inner: String = ""
    }

    /// Names of the composites, whose parentheses hold layers rather than arguments.
    static let composites: Set<String> = ["residual", "parallel"]

    /// The layers `text` describes for samples of `inputShape`, with each layer's output shape.
    /// Throws ``ModelError`` naming the layer (its position and text) and what does not fit.
    public static func layers(_ text: String, inputShape: [Int]) throws(ModelError) -> [any Layer] {
        try layers(text, inputShape: inputShape, depth: 0)
    }

    static func layers(_ text: String, inputShape: [Int], depth: Int) throws(ModelError) -> [any Layer] {
        guard depth < ModelGraph.maximumDepth else { throw ModelError("composites nested deeper than \(ModelGraph.maximumDepth)") }
        var shape = inputShape
        _ = try ModelSize.sampleWidth(shape, "the input")
        var layers: [any Layer] = []
        for (k, item) in try items(text).enumerated() {
            let layer: any Layer
            do { layer = try make(item, shape: shape, depth: depth) } catch { throw ModelError(layer: k, "\(item.text): \(error.problem)") }
            do { shape = try layer.outputShape(inputShape: shape); _ = try ModelSize.sampleWidth(shape, "it") } catch {
                throw ModelError(layer: k, "\(item.text) on input \(Network.describe(shape)): \(error.problem)")
            }
            layers.append(layer)
        }
        guard !layers.isEmpty else { throw ModelError("the model has no layers") }
        return layers
    }

    /// `text` with the rate of every dropout layer (`dropout`, `dropout2d`, `gaussian_dropout`)
    /// replaced: `input` for those before the first layer with parameters, `hidden` for the
    /// others; comments dropped, every other layer as written. For sweeping a described model's
    /// rates. Throws when the text does not parse, when it has no dropout layer, or when a rate
    /// would apply to no layer (`input` other than 0 without dropout on the input).
    public static func withDropoutRates(_ text: String, input: Double, hidden: Double) throws(ModelError) -> String {
        var parameterised = false, inputLayers = 0, hiddenLayers = 0
        let rendered = try items(text).map { (item) throws(ModelError) -> String in
            guard ["dropout", "dropout2d", "gaussian_dropout"].contains(item.name) else {
                // A composite's own dropout layers keep their rates; what follows it is hidden.
                parameterised = parameterised || ["conv", "conv2d", "linear", "dense", "embedding", "tokens", "attention", "layernorm", "rmsnorm", "groupnorm", "batchnorm", "batchnorm1d", "batchnorm2d"].contains(item.name)
                    || composites.contains(item.name)
                return item.text
            }
            guard item.positional.count + item.named.count <= 1, item.named.keys.allSatisfy({ $0 == "p" }) else {
                throw ModelError("\(item.text): expected one rate, p")
            }
            if parameterised { hiddenLayers += 1 } else { inputLayers += 1 }
            return "\(item.name)(\(parameterised ? hidden : input))"
        }
        guard inputLayers + hiddenLayers > 0 else { throw ModelError("the model has no dropout, dropout2d or gaussian_dropout layer whose rate could vary") }
        guard input == 0 || inputLayers > 0 else { throw ModelError("an input rate of \(input), but the model has no dropout layer before its first layer with parameters") }
        guard hidden == 0 || hiddenLayers > 0 else { throw ModelError("a hidden rate of \(hidden), but the model has no dropout layer after a layer with parameters") }
        return rendered.joined(separator: " ")
    }

    /// A dropout layer's rate: `dropout(p)`, `dropout2d(p)`, `gaussian_dropout(p)` (or `p: p`).
    static var dropoutLayer: Regex<(Substring, Substring, Substring)> { /(?i)\b(dropout2d|gaussian_dropout|dropout)\s*\(\s*(?:p\s*[:=]\s*)?([0-9.eE+-]+)\s*\)/ }
    /// A layer's dropout argument: attention's `dropout: p`, linear's `dropconnect: p`.
    static var dropoutArgument: Regex<(Substring, Substring, Substring)> { /(?i)\b(dropout|dropconnect)\s*[:=]\s*([0-9.eE+-]+)/ }

    /// Every dropout rate written in `text` at any depth, in the order written: dropout layers'
    /// (`dropout`, `dropout2d`, `gaussian_dropout`), attention's `dropout:` and linear's `dropconnect:`.
    public static func dropoutRates(_ text: String) -> [Double] {
        let found = text.matches(of: dropoutLayer).map { ($0.range.lowerBound, $0.output.2) }
            + text.matches(of: dropoutArgument).map { ($0.range.lowerBound, $0.output.2) }
        return found.sorted { $0.0 < $1.0 }.compactMap { Double($0.1) }
    }

    /// `text` with every rate of ``dropoutRates(_:)`` set to 0, every layer kept (the same
    /// parameters and random streams), so the model is the one described trained without
    /// dropout. Nil when it has no rate above 0 to remove.
    public static func withoutDropout(_ text: String) -> String? {
        guard dropoutRates(text).contains(where: { $0 != 0 }) else { return nil }
        return text.replacing(dropoutLayer) { "\($0.output.1)(0)" }.replacing(dropoutArgument) { "\($0.output.1): 0" }
    }

    /// `text` with every BatchNorm layer's training statistics set to `statistics` (at any
    /// depth; other arguments kept): the same model with the shards meeting or not, for
    /// timing what the meetings cost.
    public static func withBatchNormStatistics(_ text: String, _ statistics: BatchNorm.Statistics) -> String {
        let pattern = /(?i)\b(batch(?:norm(?:[12]d)?|_norm))\b(\s*\(([^()]*)\))?/
        return text.replacing(pattern) { match in
            let kept = (match.output.3.map(String.init) ?? "").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
                .filter { !$0.isEmpty && !$0.lowercased().hasPrefix("stats") }
            return "\(match.output.1)(\((kept + ["stats: \(statistics.rawValue)"]).joined(separator: ", ")))"
        }
    }

    /// Splits the text into items: a name, then optionally arguments in parentheses.
    static func items(_ text: String) throws(ModelError) -> [Item] {
        var result: [Item] = []
        let characters = Array(text)
        var i = 0
        func isSeparator(_ c: Character) -> Bool { c == " " || c == "," || c == "\n" || c == "\t" || c == "\r" || c == ";" }
        while i < characters.count {
            if isSeparator(characters[i]) { i += 1; continue }
            if characters[i] == "#" {  // a comment to the end of the line
                while i < characters.count && characters[i] != "\n" { i += 1 }
                continue
            }
            let start = i
            while i < characters.count, characters[i].isLetter || characters[i].isNumber || characters[i] == "_" { i += 1 }
            let name = String(characters[start..<i]).lowercased()
            guard !name.isEmpty else {
                throw ModelError("unexpected '\(characters[i])' at character \(i + 1) of the layers, expected a layer name such as conv, relu or linear")
            }
            var arguments: [String] = []
            var inner = ""
            if i < characters.count && characters[i] == "(" {
                // The matching parenthesis: a composite's layers have arguments of their own.
                var depth = 0, close: Int? = nil
                for j in i..<characters.count {
                    if characters[j] == "(" { depth += 1 }
                    if characters[j] == ")" { depth -= 1 }
                    if depth == 0 { close = j; break }
                }
                guard let close else {
                    throw ModelError("\(name)( at character \(start + 1) of the layers has no closing parenthesis")
                }
                inner = String(characters[(i + 1)..<close])
                arguments = composites.contains(name) ? [] : inner.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
                if arguments == [""] { arguments = [] }
                i = close + 1
            }
            var item = Item(text: String(characters[start..<i]), name: name, positional: [], named: [:], inner: inner)
            for argument in arguments {
                if let colon = argument.firstIndex(where: { $0 == ":" || $0 == "=" }) {
                    let key = argument[..<colon].trimmingCharacters(in: .whitespaces).lowercased()
                    guard item.named[key] == nil else { throw ModelError("\(item.text): '\(key)' given twice") }
                    item.named[key] = argument[argument.index(after: colon)...].trimmingCharacters(in: .whitespaces)
                } else {
                    guard item.named.isEmpty else { throw ModelError("\(item.text): positional argument '\(argument)' after a named one") }
                    item.positional.append(argument)
                }
            }
            result.append(item)
        }
        return result
    }

    /// The layer an item names, for samples of `shape`.
    static func make(_ item: Item, shape: [Int], depth: Int = 0) throws(ModelError) -> any Layer {
        if composites.contains(item.name) { return try composite(item, shape: shape, depth: depth) }
        var arguments = Arguments(item)
        let layer: any Layer
        switch item.name {
        case "conv", "conv2d":
            guard shape.count == 3 else { throw ModelError("takes samples of shape (C, H, W), got \(Network.describe(shape)); give the model an input shape such as [1, 28, 28]") }
            let out = try arguments.int(0, "out_channels")
            let kernel = try arguments.int(1, "kernel")
            layer = Conv2D(
                shape[0], out, kernel: Size2D(kernel, kernel), stride: Size2D(integerLiteral: try arguments.int(nil, "stride", default: 1)),
                padding: Size2D(integerLiteral: try arguments.int(nil, "pad", alias: "padding", default: 0)),
                dilation: Size2D(integerLiteral: try arguments.int(nil, "dilation", default: 1)))
        case "maxpool", "maxpool2d", "avgpool", "avgpool2d":
            let kernel = Size2D(integerLiteral: try arguments.int(0, "kernel"))
            let stride = try arguments.optionalInt("stride").map { Size2D(integerLiteral: $0) }
            let padding = Size2D(integerLiteral: try arguments.int(nil, "pad", alias: "padding", default: 0))
            layer = item.name.hasPrefix("max")
                ? MaxPool2D(kernel, stride: stride, padding: padding) : AvgPool2D(kernel, stride: stride, padding: padding)
        case "flatten":
            layer = Flatten()
        case "linear", "dense":
            // Flat rows, or (tokens, values): each token alone, as nn.Linear on the last dimension.
            guard shape.count <= 2 else { throw ModelError("takes flat rows, got samples of shape \(Network.describe(shape)); add flatten before it") }
            let tie = arguments.named.removeValue(forKey: "tied")
            guard tie == nil || tie!.lowercased() == "tokens" else { throw ModelError("tied: \(tie!), expected tokens (the token table of the tokens layer before it)") }
            layer = Linear(
                shape[shape.count - 1], try arguments.int(0, "out_features"), dropConnect: try arguments.double(nil, "dropconnect", default: 0), tied: tie != nil)
        case "embedding":
            layer = Embedding(try arguments.int(0, "count"), try arguments.int(1, "dim"))
        case "tokens", "token_embedding":
            layer = TokenEmbedding(vocabulary: try arguments.int(0, "vocabulary"), width: try arguments.int(1, "dim"))
        case "attention", "causal_self_attention":
            guard shape.count == 2 else { throw ModelError("takes (tokens, values) samples, got \(Network.describe(shape)); start the model with tokens(VOCABULARY, DIM)") }
            layer = CausalSelfAttention(width: shape[1], heads: try arguments.int(0, "heads"), dropout: try arguments.double(nil, "dropout", default: 0))
        case "relu":
            layer = ReLU()
        case "tanh":
            layer = Tanh()
        case "sigmoid":
            layer = Sigmoid()
        case "gelu":
            let form = arguments.named.removeValue(forKey: "approximate") ?? "none"
            guard let approximation = GELU.Approximation(rawValue: form.lowercased().trimmingCharacters(in: CharacterSet(charactersIn: "'\""))) else {
                throw ModelError("approximate: \(form), expected none or tanh")
            }
            layer = GELU(approximate: approximation)
        case "leaky_relu", "leakyrelu":
            layer = LeakyReLU(Float(try arguments.double(0, "slope", default: 0.01)))
        case "batchnorm", "batchnorm1d", "batchnorm2d", "batch_norm":
            if item.name == "batchnorm1d" && shape.count != 1 { throw ModelError("takes flat rows, got samples of shape \(Network.describe(shape)); use batchnorm2d for (C, H, W) samples") }
            if item.name == "batchnorm2d" && shape.count != 3 { throw ModelError("takes (C, H, W) samples, got \(Network.describe(shape)); use batchnorm1d for flat rows") }
            let stats = arguments.named.removeValue(forKey: "stats") ?? "batch"
            guard let statistics = BatchNorm.Statistics(rawValue: stats.lowercased()) else { throw ModelError("stats: \(stats), expected batch (the global batch's) or shard (each shard's own)") }
            layer = BatchNorm(
                epsilon: try arguments.double(nil, "eps", default: 1e-5), momentum: try arguments.double(nil, "momentum", default: 0.1), statistics: statistics)
        case "layernorm", "layer_norm":
            layer = LayerNorm(dimensions: try arguments.optionalInt("dims"), epsilon: try arguments.double(nil, "eps", default: 1e-5))
        case "rmsnorm", "rms_norm":
            layer = RMSNorm(dimensions: try arguments.optionalInt("dims"), epsilon: try arguments.double(nil, "eps", default: Double(Float.ulpOfOne)))
        case "groupnorm", "group_norm":
            layer = GroupNorm(try arguments.int(0, "groups"), epsilon: try arguments.double(nil, "eps", default: 1e-5))
        case "dropout":
            layer = Dropout(try arguments.double(0, "p"))
        case "dropout2d":
            layer = Dropout2d(try arguments.double(0, "p"))
        case "gaussian_dropout":
            layer = GaussianDropout(try arguments.double(0, "p"))
        default:
            guard let registered = try registeredLayer(item, &arguments, shape: shape) else {
                let names = ["conv", "maxpool", "avgpool", "flatten", "linear", "embedding", "tokens", "attention", "relu", "tanh", "sigmoid", "gelu", "leaky_relu", "batchnorm1d", "batchnorm2d",
                    "layernorm", "rmsnorm", "groupnorm", "dropout", "dropout2d", "gaussian_dropout", "residual", "parallel"] + registeredNames
                throw ModelError("unknown layer '\(item.name)', expected one of \(names.joined(separator: ", "))")
            }
            layer = registered
        }
        try arguments.finish()
        return layer
    }

    /// `residual(LAYERS)`, `residual(LAYERS, shortcut: LAYERS)`, `parallel(LAYERS | LAYERS ...)`,
    /// `parallel(LAYERS | LAYERS, combine: concat|add)`: the layers inferred from `shape` as at the top level.
    static func composite(_ item: Item, shape: [Int], depth: Int) throws(ModelError) -> any Layer {
        let (body, named) = try sections(item.inner)
        func build(_ text: String, _ what: String) throws(ModelError) -> [any Layer] {
            do { return try layers(text, inputShape: shape, depth: depth + 1) } catch { throw ModelError("\(what): \(error.description)") }
        }
        switch item.name {
        case "residual":
            if let key = named.keys.sorted().first(where: { $0 != "shortcut" }) { throw ModelError("unknown argument '\(key)', expected shortcut") }
            let shortcut = try named["shortcut"].map { (text) throws(ModelError) in try build(text, "shortcut") }
            return Residual(body: try build(body, "body"), shortcut: shortcut)
        default:
            if let key = named.keys.sorted().first(where: { $0 != "combine" }) { throw ModelError("unknown argument '\(key)', expected combine") }
            let combine = named["combine"]?.trimmingCharacters(in: .whitespacesAndNewlines).lowercased() ?? "concat"
            guard let combination = ["concat": Combination.concatenate, "concatenate": .concatenate, "add": .add, "sum": .add][combine] else {
                throw ModelError("combine: \(combine), expected concat or add")
            }
            let branches = splitTopLevel(body, "|")
            guard branches.count >= 2 else { throw ModelError("expected at least two branches separated by |, got \(branches.count)") }
            var built: [Sequential] = []
            for (b, text) in branches.enumerated() { built.append(Sequential(try build(text, "branch \(b)"))) }
            return Parallel(combination, branches: built)
        }
    }

    /// A composite's text: the layers before the first `key:` at the top level, and each key's text up to the next.
    static func sections(_ text: String) throws(ModelError) -> (body: String, named: [String: String]) {
        let characters = Array(text)
        var keys: [(key: String, start: Int, value: Int)] = []
        var depth = 0, i = 0
        while i < characters.count {
            let c = characters[i]
            if c == "(" { depth += 1 } else if c == ")" { depth -= 1 }
            guard depth == 0, c.isLetter, i == 0 || !(characters[i - 1].isLetter || characters[i - 1].isNumber || characters[i - 1] == "_") else { i += 1; continue }
            var j = i
            while j < characters.count, characters[j].isLetter || characters[j].isNumber || characters[j] == "_" { j += 1 }
            var k = j
            while k < characters.count, characters[k] == " " { k += 1 }
            if k < characters.count, characters[k] == ":" || characters[k] == "=" {
                keys.append((String(characters[i..<j]).lowercased(), i, k + 1))
            }
            i = j
        }
        var named: [String: String] = [:]
        for (n, key) in keys.enumerated() {
            guard named[key.key] == nil else { throw ModelError("'\(key.key)' given twice") }
            let end = n + 1 < keys.count ? keys[n + 1].start : characters.count
            named[key.key] = String(characters[key.value..<end])
        }
        return (String(characters[..<(keys.first?.start ?? characters.count)]), named)
    }

    /// `text` split at `separator` outside parentheses.
    static func splitTopLevel(_ text: String, _ separator: Character) -> [String] {
        var parts: [String] = [], current = "", depth = 0
        for c in text {
            if c == "(" { depth += 1 } else if c == ")" { depth -= 1 }
            if c == separator && depth == 0 { parts.append(current); current = "" } else { current.append(c) }
        }
        parts.append(current)
        return parts
    }

    /// An item's arguments, consumed as the layer reads them; left-overs are errors.
    struct Arguments {
        var positional: [String?]
        var named: [String: String]

        init(_ item: Item) {
            positional = item.positional
            named = item.named
        }

        mutating func text(_ index: Int?, _ key: String, alias: String? = nil) -> String? {
            if let value = named.removeValue(forKey: key) { return value }
            if let alias, let value = named.removeValue(forKey: alias) { return value }
            guard let index, index < positional.count else { return nil }
            defer { positional[index] = nil }
            return positional[index]
        }

        mutating func int(_ index: Int?, _ key: String, alias: String? = nil, default value: Int? = nil) throws(ModelError) -> Int {
            guard let text = text(index, key, alias: alias) else {
                if let value { return value }
                throw ModelError("missing \(key)")
            }
            guard let number = Int(text) else { throw ModelError("\(key) '\(text)', expected a whole number") }
            return number
        }

        mutating func optionalInt(_ key: String) throws(ModelError) -> Int? {
            guard named[key] != nil else { return nil }
            return try int(nil, key)
        }

        mutating func double(_ index: Int?, _ key: String, default value: Double? = nil) throws(ModelError) -> Double {
            guard let text = text(index, key) else {
                if let value { return value }
                throw ModelError("missing \(key)")
            }
            guard let number = Double(text), number.isFinite else { throw ModelError("\(key) '\(text)', expected a number") }
            return number
        }

        func finish() throws(ModelError) {
            if let extra = positional.compactMap({ $0 }).first { throw ModelError("unexpected argument '\(extra)'") }
            if let key = named.keys.sorted().first { throw ModelError("unknown argument '\(key)'") }
        }
    }

    /// The loss a description names: `cross_entropy` (optionally `(label_smoothing: ε)`),
    /// `bce_with_logits`, `mse`.
    public static func loss(_ text: String) throws(ModelError) -> any Loss {
        let parsed = try items(text)
        guard parsed.count == 1, let item = parsed.first else { throw ModelError("loss '\(text)', expected one of cross_entropy, bce_with_logits, mse") }
        var arguments = Arguments(item)
        let loss: any Loss
        switch item.name {
        case "cross_entropy", "crossentropy":
            let smoothing = try arguments.double(0, "label_smoothing", default: 0)
            guard (0...1).contains(smoothing) else { throw ModelError("loss \(item.text): label_smoothing \(smoothing), expected a value in [0, 1]") }
            loss = SoftmaxCrossEntropy(labelSmoothing: smoothing)
        case "bce_with_logits", "bcewithlogits":
            loss = BinaryCrossEntropyWithLogits()
        case "mse":
            loss = MeanSquaredError()
        default:
            throw ModelError("loss '\(item.name)', expected one of cross_entropy, bce_with_logits, mse")
        }
        do { try arguments.finish() } catch { throw ModelError("loss \(item.text): \(error.problem)") }
        return loss
    }
}
