import ArgumentParser
import ShardwiseLayers

/// The architecture flags shared by `train` and `scale`.
struct NetworkOptions: ParsableArguments {
    @Option(help: "Hidden layer sizes, comma-separated.")
    var layers = "1024,1024,1024"

    @Option(help: "Probability of zeroing an input unit, in [0, 1).")
    var dropoutInput = 0.2

    @Option(help: "Probability of zeroing a hidden unit, in [0, 1).")
    var dropoutHidden = 0.5

    @Flag(help: "No dropout (both rates 0).")
    var noDropout = false

    func configuration() throws -> NetworkConfiguration {
        NetworkConfiguration(
            hiddenSizes: try parseLayerSizes(layers), dropoutInput: noDropout ? 0 : dropoutInput,
            dropoutHidden: noDropout ? 0 : dropoutHidden)
    }
}
