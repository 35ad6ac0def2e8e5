import ShardwiseLayers

/// A training setting that cannot work, naming the setting (as its CLI flag),
/// the value found and what was expected.
public struct TrainingError: Error, CustomStringConvertible, Equatable {
    public var flag: String
    public var problem: String

    public init(flag: String, problem: String) {
        self.flag = flag
        self.problem = problem
    }

    public var description: String { "\(flag): \(problem)" }
}

extension TrainingConfiguration {
    /// Checks every setting; throws the first problem found.
    public func validate(trainingSamples: Int? = nil, features: Int? = nil, classes: Int? = nil) throws(TrainingError) {
        func check(_ condition: Bool, _ flag: String, _ problem: @autoclosure () -> String) throws(TrainingError) {
            if !condition { throw TrainingError(flag: flag, problem: problem()) }
        }
        try check(!network.hiddenSizes.isEmpty, "--layers", "no hidden layers given, expected sizes like 1024,1024,1024")
        for size in network.hiddenSizes {
            try check(size > 0, "--layers", "layer size \(size) in \(network.hiddenSizes.map(String.init).joined(separator: ",")), expected positive sizes")
        }
        try check(network.dropoutInput >= 0 && network.dropoutInput < 1, "--dropout-input", "\(network.dropoutInput), expected a probability in [0, 1)")
        for rate in [network.dropoutHidden] + (network.dropoutHiddenPerLayer ?? []) {
            try check(rate >= 0 && rate < 1, "--dropout-hidden", "\(rate), expected a probability in [0, 1)")
        }
        if let perLayer = network.dropoutHiddenPerLayer {
            try check(perLayer.count == network.hiddenSizes.count, "--dropout-hidden", "\(perLayer.count) rates for \(network.hiddenSizes.count) hidden layers")
        }
        try check(epochs > 0, "--epochs", "\(epochs), expected a positive number of epochs")
        try check(batchSize > 0, "--batch-size", "\(batchSize), expected a positive number of samples")
        try check(shardSize > 0, "--shard-size", "\(shardSize), expected a positive number of samples")
        try check(batchSize % shardSize == 0, "--batch-size", "\(batchSize) is not a whole number of shards of \(shardSize) (--shard-size)")
        try check(optimizer.learningRate > 0 && optimizer.learningRate.isFinite, "--lr", "\(optimizer.learningRate), expected a positive learning rate")
        try check((0..<1).contains(optimizer.momentum.start), "--momentum-start", "\(optimizer.momentum.start), expected a value in [0, 1)")
        try check((0..<1).contains(optimizer.momentum.end), "--momentum", "\(optimizer.momentum.end), expected a value in [0, 1)")
        try check(optimizer.momentum.epochs >= 0, "--momentum-ramp", "\(optimizer.momentum.epochs), expected epochs >= 0")
        try check(!optimizer.nesterov || optimizer.momentum.end > 0, "--nesterov", "needs momentum > 0 (as in PyTorch)")
        try check(optimizer.weightDecay >= 0, "--weight-decay", "\(optimizer.weightDecay), expected a value >= 0")
        if let c = optimizer.maxNorm {
            try check(c > 0 && c.isFinite, "--max-norm", "\(c), expected a positive norm bound")
        }
        switch optimizer.schedule {
        case .constant: break
        case .step(let every, let gamma):
            try check(every > 0, "--lr-step", "\(every), expected a positive number of epochs")
            try check(gamma > 0, "--lr-gamma", "\(gamma), expected a positive factor")
        case .exponential(let gamma):
            try check(gamma > 0, "--lr-gamma", "\(gamma), expected a positive factor")
        case .cosine(let total, let floor):
            try check(total > 0, "--epochs", "\(total), expected a positive number of epochs")
            try check(floor >= 0 && floor <= 1, "--lr-floor", "\(floor), expected a fraction in [0, 1]")
        }
        if let n = validationSamples {
            try check(n >= 0, "--validation", "\(n), expected a number of samples >= 0")
        }
        if let patience = earlyStoppingPatience {
            try check(patience > 0, "--early-stopping", "\(patience), expected a positive number of epochs")
            try check((validationSamples ?? 0) > 0, "--early-stopping", "needs a validation set (--validation N)")
        }
        if let trainingSamples {
            try check((validationSamples ?? 0) < trainingSamples, "--validation", "\(validationSamples ?? 0) of \(trainingSamples) training samples leaves none to train on")
            try check(batchSize <= trainingSamples, "--batch-size", "\(batchSize) is larger than the \(trainingSamples) training samples")
        }
        if let features {
            try check(features == network.inputSize, "--data", "images have \(features) pixels, the network expects \(network.inputSize)")
        }
        if let classes {
            try check(classes == network.outputSize, "--data", "\(classes) classes, the network expects \(network.outputSize)")
        }
    }
}
