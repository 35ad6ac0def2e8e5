import Foundation
import Shardwise

/// `shardwise generate`: text from a language model's checkpoint, one token at a time. Each
/// token is drawn from the softmax of the last position's logits (divided by the temperature,
/// kept to the `topK` largest) with the uniform number of the stream (seed, generation, token
/// index), the distribution summed in id order: with the portable kernels, the same seed gives
/// the same text on any machine. The model reads the last T tokens (T its context); a shorter
/// text fills the first positions (causal attention: the later ones cannot change them).
public enum Generation {
    /// What to generate.
    public struct Settings: Sendable {
        public var prompt: String
        public var tokens: Int
        public var temperature: Double
        public var topK: Int?
        public var seed: UInt64

        public init(prompt: String, tokens: Int, temperature: Double = 1, topK: Int? = nil, seed: UInt64 = 1) {
            (self.prompt, self.tokens, self.temperature, self.topK, self.seed) = (prompt, tokens, temperature, topK, seed)
        }
    }

    /// Generates `settings.tokens` tokens after the prompt, handing the prompt and then each
    /// piece of text to `emit` as it is formed; returns the generated text (the prompt excluded).
    public static func run(checkpoint: String, _ settings: Settings, emit: (String) -> Void = { _ in }) throws -> String {
        try MatrixKernels.select(.portable)
        let model: SavedModel
        do { model = try SavedModel.load(checkpoint) } catch { throw RunError(error.description) }
        guard let vocabulary = model.vocabulary else {
            throw RunError("\(model.path): not a language model (its state holds no vocabulary); generate needs a model trained with --tokenizer")
        }
        let network: Network
        do { network = try Network(model.network) } catch { throw RunError("\(model.path): \(error)") }
        let t = network.shapes[0].count == 1 ? network.shapes[0][0] : 0, v = vocabulary.size
        guard t > 0, network.labelPositions == t, network.widths.last == t * v else {
            throw RunError("\(model.path): the model's outputs \(Network.describe(network.shapes.last!)) are not \(t) positions of \(v) token logits")
        }
        var ids: [Int]
        do { ids = try vocabulary.encode(settings.prompt, path: "--prompt").map(Int.init) } catch { throw RunError(error.description) }
        guard !ids.isEmpty else { throw RunError("--prompt: empty, expected at least one character to continue") }
        emit(settings.prompt)
        let ws = Workspace(network: network, capacity: 1)
        var text = "", pending: [Int] = []
        var logits = [Double](repeating: 0, count: v)
        for n in 0..<settings.tokens {
            let window = ids.suffix(t)
            for (p, id) in window.enumerated() { ws.input[p] = Float(id) }
            for p in window.count..<t { ws.input[p] = 0 }
            model.parameters.withUnsafeBufferPointer { network.forward(parameters: $0.baseAddress!, workspace: ws, rows: 1, random: nil) }
            let last = ws.output + (window.count - 1) * v
            for c in 0..<v { logits[c] = Double(last[c]) }
            let id = draw(logits, settings: settings, index: n)
            ids.append(id)
            // Bytes: text only once a whole UTF-8 sequence is in.
            pending.append(id)
            let piece = vocabulary.decode(pending)
            if vocabulary.kind == .char || !piece.unicodeScalars.contains("\u{FFFD}") || pending.count >= 4 {
                text += piece
                emit(piece)
                pending.removeAll()
            }
        }
        if !pending.isEmpty {
            let piece = vocabulary.decode(pending)
            text += piece
            emit(piece)
        }
        return text
    }

    /// The token drawn from `logits` for token `index`: the largest at temperature 0, else the
    /// softmax of logits / temperature over the `topK` largest (ties: the lower id), sampled by
    /// the stream's uniform number against the probabilities summed in id order.
    static func draw(_ logits: [Double], settings: Settings, index: Int) -> Int {
        let v = logits.count
        guard settings.temperature > 0 else { return logits.indices.max { logits[$0] < logits[$1] || (logits[$0] == logits[$1] && $0 > $1) }! }
        var keep = [Bool](repeating: true, count: v)
        if let k = settings.topK, k < v {
            let ranked = logits.indices.sorted { logits[$0] > logits[$1] || (logits[$0] == logits[$1] && $0 < $1) }
            for c in ranked[k...] { keep[c] = false }
        }
        let top = logits.indices.filter { keep[$0] }.map { logits[$0] }.max()!
        var weights = [Double](repeating: 0, count: v), total = 0.0
        for c in 0..<v where keep[c] {
            weights[c] = PortableMath.exp((logits[c] - top) / settings.temperature)
            total += weights[c]
        }
        let stream = RandomAddress(seed: settings.seed, purpose: .generation, step: UInt32(truncatingIfNeeded: index))
        let u = Double(stream.integer(0, below: 1 << 53)) / Double(1 << 53) * total
        var sum = 0.0
        for c in 0..<v where keep[c] {
            sum += weights[c]
            if u < sum { return c }
        }
        return (0..<v).last { keep[$0] }!
    }
}
