import Foundation
import Shardwise
import Yams

/// A model file (`--model FILE`): YAML with the sample shape, the layers in the layer
/// language (``ModelDescription``) and optionally the loss.
///
/// ```yaml
/// input: [1, 28, 28]          # one sample's shape: the data's rows, read as (C, H, W)
/// layers: >
///   conv(32, 5, pad: 2) relu maxpool(2) conv(64, 5, pad: 2) relu maxpool(2)
///   flatten dropout(0.5) linear(1024) relu dropout(0.5) linear(10)
/// loss: cross_entropy(label_smoothing: 0.1)   # optional
/// ```
///
/// `layers` may also be a list, one layer (or several) per entry; there YAML reads `pad: 2` as
/// a mapping, so write `pad=2` or quote the entry. JSON is YAML too. Errors in the file are
/// usage errors (exit status 2), as a bad flag value is.
public enum ModelFile {
    /// The most bytes a model file may have.
    static let limit = 1 << 20

    /// The network the file describes, its output width to be set from the data.
    public static func load(_ path: String) throws(RunError) -> NetworkConfiguration {
        let bytes: [UInt8]
        do { bytes = try RegularFile.read(path, limit: limit, what: "a model file") } catch { throw RunError("--model: \(error.description)") }
        guard let text = String(validating: bytes, as: UTF8.self) else { throw RunError("--model: \(path) is not UTF-8 text") }
        let node: Node?
        do { node = try Yams.compose(yaml: text) } catch {
            let reason = "\(error)".split(separator: "\n").first.map(String.init) ?? "\(error)"
            throw RunError("--model: \(path): not YAML (\(reason)); in a YAML list, write arguments as pad=2 or quote the entry, or give the layers as a block (layers: >)")
        }
        guard let mapping = node?.mapping else {
            throw RunError("--model: \(path): expected a mapping with 'input' (e.g. [1, 28, 28]) and 'layers', found \(node.map { "\($0)" } ?? "an empty file")")
        }
        var fields: [String: Node] = [:]
        for (key, value) in mapping {
            guard let name = key.string, ["input", "layers", "loss"].contains(name) else {
                throw RunError("--model: \(path), line \(key.mark?.line ?? 0): unknown key '\(key.string ?? "\(key)")', expected input, layers or loss")
            }
            fields[name] = value
        }
        guard let inputNode = fields["input"] else { throw RunError("--model: \(path): no 'input', expected one sample's shape such as [1, 28, 28] or [784]") }
        let shape: [Int?]? = inputNode.sequence.map { $0.map(\.int) } ?? inputNode.int.map { [$0] }
        guard let shape, !shape.isEmpty, shape.allSatisfy({ ($0 ?? 0) > 0 }) else {
            throw RunError("--model: \(path), line \(inputNode.mark?.line ?? 0): input '\(inputNode.string ?? "\(inputNode)")', expected positive sizes such as [1, 28, 28]")
        }
        guard let layersNode = fields["layers"] else { throw RunError("--model: \(path): no 'layers', expected e.g. \"flatten linear(128) relu linear(10)\"") }
        let layers: String
        if let list = layersNode.sequence {
            layers = try list.map { item throws(RunError) -> String in
                guard let s = item.string else {
                    let hint = item.mapping != nil ? "; YAML read 'name: value' in it as a mapping: write arguments as pad=2 or quote the entry" : ""
                    throw RunError("--model: \(path), line \(item.mark?.line ?? 0): a layer must be text such as conv(32, 5)\(hint)")
                }
                return s
            }.joined(separator: "\n")
        } else if let s = layersNode.string {
            layers = s
        } else {
            throw RunError("--model: \(path), line \(layersNode.mark?.line ?? 0): 'layers' must be text or a list of texts")
        }
        let loss = fields["loss"].flatMap { $0.string }
        if fields["loss"] != nil && loss == nil { throw RunError("--model: \(path): 'loss' must be text such as cross_entropy or mse") }
        var network = NetworkConfiguration(layers: layers, inputShape: shape.map { $0! }, outputSize: 1, loss: loss)
        // Parse now, so that a bad layer is named with the file before any data is read; the
        // output width is the model's until the data's is known (training checks they agree).
        do { network.outputSize = try Network(network).widths.last! } catch { throw RunError("--model: \(path): \(error)") }
        return network
    }
}
