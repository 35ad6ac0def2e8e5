import ShardwiseKernels

/// Inverted dropout, as PyTorch's `nn.Dropout`: in training each unit is zeroed with
/// probability `p` and survivors are scaled by 1/(1-p); in evaluation it is the identity.
///
/// Unit u of sample s (its position in the global batch) at step t is kept according to
/// word u of the stream (seed, dropout, t, position s, this layer's index among the model's
/// Dropout layers): the mask does not depend on the shard size or the worker count.
public struct Dropout: Layer {
    /// The probability of zeroing a unit, in [0, 1).
    public let probability: Double

    /// Dropout that zeroes each unit with probability `probability`.
    public init(_ probability: Double) {
        self.probability = probability
    }

    public func outputWidth(inputWidth: Int) throws(ModelError) -> Int {
        guard (0..<1).contains(probability) else { throw ModelError("Dropout(\(probability)): expected a probability in [0, 1)") }
        return inputWidth
    }

    /// The mask of the last training forward, (N, width), already scaled.
    public func scratchCount(inputWidth: Int, rows: Int) -> Int { rows * inputWidth }

    public func forward(_ pass: ForwardPass) {
        forwardMasked(pass) { random, mask in
            DropoutKernel.fillMask(
                rows: pass.rows, columns: pass.inputWidth, address: random.address(.dropout),
                firstPosition: random.firstPosition, dropProbability: probability, mask: mask)
        }
    }

    public func backward(_ pass: BackwardPass) { backwardMasked(pass) }
}

/// Gaussian dropout (Srivastava et al. 2014, section 10): each unit is multiplied by
/// 1 + √(p/(1-p)) z, z ~ N(0, 1), the same mean and variance as `Dropout(p)`;
/// the identity in evaluation. Its draws are addressed as `Dropout`'s, among the
/// model's GaussianDropout layers.
public struct GaussianDropout: Layer {
    /// The Bernoulli rate whose mean and variance the noise matches, in [0, 1).
    public let probability: Double

    /// Gaussian dropout with the variance of `Dropout(probability)`.
    public init(_ probability: Double) {
        self.probability = probability
    }

    public func outputWidth(inputWidth: Int) throws(ModelError) -> Int {
        guard (0..<1).contains(probability) else { throw ModelError("GaussianDropout(\(probability)): expected a probability in [0, 1)") }
        return inputWidth
    }

    public func scratchCount(inputWidth: Int, rows: Int) -> Int { rows * inputWidth }

    public func forward(_ pass: ForwardPass) {
        forwardMasked(pass) { random, mask in
            DropoutKernel.fillGaussianMask(
                rows: pass.rows, columns: pass.inputWidth, address: random.address(.dropout),
                firstPosition: random.firstPosition, dropProbability: probability, mask: mask)
        }
    }

    public func backward(_ pass: BackwardPass) { backwardMasked(pass) }
}

/// y = x ∘ mask in training (the mask drawn by `fill` into the scratch), y = x in evaluation.
private func forwardMasked(_ pass: ForwardPass, fill: (LayerRandomness, UnsafeMutablePointer<Float>) -> Void) {
    let count = pass.rows * pass.inputWidth
    guard let random = pass.random else {
        pass.output.update(from: pass.input, count: count)
        return
    }
    fill(random, pass.scratch)
    Elementwise.multiply(count: count, a: pass.input, b: pass.scratch, out: pass.output)
}

/// dx = dy ∘ mask.
private func backwardMasked(_ pass: BackwardPass) {
    guard let dx = pass.inputGradient else { return }
    Elementwise.multiply(count: pass.rows * pass.inputWidth, a: pass.outputGradient, b: pass.scratch, out: dx)
}
