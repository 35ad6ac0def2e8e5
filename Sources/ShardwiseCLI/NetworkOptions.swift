import ArgumentParser
import Shardwise
import ShardwiseApp

/// The architecture flags shared by `train` and `scale`.
struct NetworkOptions: ParsableArguments {
    @Option(help: "A model file (YAML: input shape, layers such as 'conv(32, 5, pad: 2) relu maxpool(2) flatten linear(10)', optional loss) instead of the ReLU perceptron of --layers and the dropout flags. See docs/models.md.")
    var model: String?

    func validate() throws { try requirePaths(["--model": model]) }

    @Option(help: "Hidden layer sizes, comma-separated.")
    var layers = "1024,1024,1024"

    @Option(help: "Probability of zeroing an input unit, in [0, 1).")
    var dropoutInput = 0.2

    @Option(help: "Probability of zeroing a hidden unit, in [0, 1): one rate, or one per hidden layer (0.5,0.3,0.2).")
    var dropoutHidden = "0.5"

    @Option(help: "Dropout noise: bernoulli, gaussian (same variance) or dropconnect (on the weights).")
    var dropoutKind: DropoutKind = .bernoulli

    @Flag(help: "No dropout (all rates 0).")
    var noDropout = false

    func configuration() throws -> NetworkConfiguration {
        if let model { return try ModelFile.load(model) }
        let sizes = try parseLayerSizes(layers)
        let parts = dropoutHidden.split(separator: ",", omittingEmptySubsequences: false)
        let rates = try parts.map { part -> Double in
            guard let rate = Double(part.trimmingCharacters(in: .whitespaces)) else {
                throw ValidationError("--dropout-hidden: '\(part)' in '\(dropoutHidden)' is not a number, expected rates like 0.5 or 0.5,0.3,0.2")
            }
            return rate
        }
        guard rates.count == 1 || rates.count == sizes.count else {
            throw ValidationError("--dropout-hidden: \(rates.count) rates for \(sizes.count) hidden layers, expected 1 or \(sizes.count)")
        }
        return NetworkConfiguration(
            hiddenSizes: sizes, dropoutInput: noDropout ? 0 : dropoutInput, dropoutHidden: noDropout ? 0 : rates[0],
            dropoutHiddenPerLayer: noDropout || rates.count == 1 ? nil : rates, dropoutKind: dropoutKind)
    }
}

extension DropoutKind: ExpressibleByArgument {}
extension MatrixKernels: ExpressibleByArgument {}
extension ExchangePattern: ExpressibleByArgument {}
