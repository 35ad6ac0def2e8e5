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

/// Channel dropout, as PyTorch's `nn.Dropout2d`: in training each whole feature map (channel
/// c of a (C, H, W) sample) is zeroed with probability `p` and survivors are scaled by 1/(1-p);
/// the identity in evaluation. Channel c of sample s at step t is kept according to word c of
/// the stream (seed, dropout2d, t, position s, this layer's index among the model's Dropout2d
/// layers): the same masks for any shard size or worker count.
public struct Dropout2d: Layer {
    /// The probability of zeroing a channel, in [0, 1).
    public let probability: Double

    public init(_ probability: Double) {
        self.probability = probability
    }

    public func outputWidth(inputWidth: Int) throws(ModelError) -> Int {
        throw ModelError("Dropout2d takes samples of shape (C, H, W); give the model an input shape such as (1, 28, 28)")
    }

    public func outputShape(inputShape: [Int]) throws(ModelError) -> [Int] {
        guard (0..<1).contains(probability) else { throw ModelError("Dropout2d(\(probability)): expected a probability in [0, 1)") }
        guard inputShape.count >= 2 else {
            throw ModelError("Dropout2d zeroes whole channels of (C, H, W) samples, got \(Network.describe(inputShape))")
        }
        return inputShape
    }

    /// The (N, C) channel mask of the last training forward, already scaled.
    public func scratchCount(inputShape: [Int], rows: Int) -> Int { rows * inputShape[0] }

    public func forward(_ pass: ForwardPass) {
        guard let random = pass.random else {
            pass.output.update(from: pass.input, count: pass.rows * pass.inputWidth)
            return
        }
        let channels = pass.inputShape[0]
        DropoutKernel.fillMask(
            rows: pass.rows, columns: channels, address: random.address(.dropout2d),
            firstPosition: random.firstPosition, dropProbability: probability, mask: pass.scratch)
        scaleChannels(rows: pass.rows, channels: channels, plane: pass.inputWidth / channels, pass.input, pass.scratch, pass.output)
    }

    public func backward(_ pass: BackwardPass) {
        guard let dx = pass.inputGradient else { return }
        let channels = pass.inputShape[0]
        scaleChannels(rows: pass.rows, channels: channels, plane: pass.inputWidth / channels, pass.outputGradient, pass.scratch, dx)
    }

    /// out[s, c, :] = x[s, c, :] · mask[s, c].
    private func scaleChannels(
        rows: Int, channels: Int, plane: Int, _ x: UnsafePointer<Float>, _ mask: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>
    ) {
        for m in 0..<rows * channels {
            let factor = mask[m], from = x + m * plane, to = out + m * plane
            for q in 0..<plane { to[q] = from[q] * factor }
        }
    }
}
