/// Which update rule the chunked reduction applies, each as PyTorch's `torch.optim` class.
public enum OptimizerAlgorithm: String, Sendable, Codable, CaseIterable {
    /// `torch.optim.SGD`: momentum, Nesterov, L2 weight decay added to the gradient.
    case sgd
    /// `torch.optim.Adam`: bias-corrected moments, eps outside the square root, L2 decay added to the gradient.
    case adam
    /// `torch.optim.AdamW`: Adam with decoupled weight decay (w ← w (1 - lr λ) before the step).
    case adamw
    /// `torch.optim.RMSprop` (not centered): a running mean of g², eps outside the square root, optional momentum.
    case rmsprop
}

/// One step's hyperparameters for the update kernels, in PyTorch's `torch.optim` forms.
///
/// SGD, for each element: `g = grad + weightDecay * w`; with momentum μ > 0,
/// `buf = g` on the first step and `buf = μ * buf + g` after; the step direction
/// is `g + μ * buf` (Nesterov) or `buf`; then `w -= lr * direction`.
/// (Dampening is 0, as in PyTorch's default.) Adam, AdamW and RMSprop: see ``AdaptiveKernel``.
public struct UpdateHyperparameters: Sendable, Equatable {
    /// The learning rate of this step.
    public var learningRate: Float
    /// The momentum of this step (0: plain SGD; RMSprop's momentum).
    public var momentum: Float
    /// L2 decay added to the gradient (AdamW: the decoupled decay rate λ).
    public var weightDecay: Float
    /// Nesterov momentum.
    public var nesterov: Bool
    /// The update rule.
    public var algorithm: OptimizerAlgorithm = .sgd
    /// Adam's β₂ (the second moment's decay); RMSprop's smoothing constant α.
    public var beta2: Float = 0.999
    /// 1 - β₁ and 1 - β₂, rounded once from Double (as PyTorch passes them: 1 - Float(0.999) would be 1.3e-5 off).
    public var beta1Complement: Float = 0.1, beta2Complement: Float = 0.001
    /// AdamW's factor on the weights, 1 - lr λ, rounded once from Double.
    public var decayFactor: Float = 1
    /// Added to the denominator, outside the square root.
    public var epsilon: Float = 1e-8
    /// Adam: lr / (1 - β₁ᵗ) and √(1 - β₂ᵗ) for this step t (computed once a step, in Double).
    public var stepSize: Float = 0, biasCorrection2Root: Float = 1
    /// The factor on the summed gradient (gradient clipping's min(1, c / (‖g‖ + 1e-6))); 1: none.
    public var gradientScale: Float = 1

    /// One step's SGD hyperparameters.
    public init(learningRate: Float, momentum: Float = 0, weightDecay: Float = 0, nesterov: Bool = false) {
        self.learningRate = learningRate
        self.momentum = momentum
        self.weightDecay = weightDecay
        self.nesterov = nesterov
    }
}

package enum SGDKernel {
    /// Sums the shards' gradients in shard order, `((g₀ + g₁) + g₂) + …`, and applies
    /// the update to the elements `range` of w in one pass: the gradient sum never goes
    /// back to memory. `velocity` is unused when momentum is 0. Returns false when
    /// any summed gradient element is NaN or infinite (the update is applied regardless).
    ///
    /// - Parameters:
    ///   - range: the elements updated.
    ///   - w: the whole flat parameter vector; only `range` is touched.
    ///   - gradients: `shardCount` pointers, each to a shard's whole gradient vector.
    ///   - shardCount: the shards, summed in index order.
    ///   - velocity: the whole momentum buffer; only `range` is touched.
    ///   - h: learning rate, momentum, weight decay, Nesterov.
    ///   - firstStep: sets the buffer to the first gradient, as PyTorch does.
    @discardableResult
    public static func update(
        range: Range<Int>, weights w: UnsafeMutablePointer<Float>,
        gradients: UnsafePointer<UnsafeMutablePointer<Float>>, shardCount: Int,
        velocity: UnsafeMutablePointer<Float>, hyper h: UpdateHyperparameters, firstStep: Bool
    ) -> Bool {
        precondition(shardCount > 0)
        let limit = Vector16(repeating: .greatestFiniteMagnitude)
        var finite = SIMDMask<SIMD16<Int32>>(repeating: true)
        let count = range.upperBound
        let lr = Vector16(repeating: h.learningRate)
        let mu = Vector16(repeating: h.momentum)
        let wd = Vector16(repeating: h.weightDecay)
        let scale = Vector16(repeating: h.gradientScale)
        var i = range.lowerBound
        while i + 16 <= count {
            var g = load16(gradients[0] + i)
            var s = 1
            while s < shardCount {
                g = g + load16(gradients[s] + i)
                s += 1
            }
            // NaN fails both comparisons; ±inf fails one.
            finite = finite .& (g .<= limit) .& (g .>= -limit)
            if h.gradientScale != 1 { g = g * scale }
            let weight = load16(w + i)
            if h.weightDecay != 0 { g = g + wd * weight }
            if h.momentum != 0 {
                let buf = firstStep ? g : mu * load16(velocity + i) + g
                store16(buf, velocity + i)
                g = h.nesterov ? g + mu * buf : buf
            }
            store16(weight - lr * g, w + i)
            i += 16
        }
        var tailFinite = true
        while i < count {
            var g = gradients[0][i]
            for s in 1..<shardCount { g = g + gradients[s][i] }
            tailFinite = tailFinite && g.isFinite
            scalarStep(w + i, g, velocity + i, h, firstStep)
            i += 1
        }
        return tailFinite && all(finite)
    }

    /// Plain-loop reference: the shard sum, then the update, one element at a time.
    @discardableResult
    public static func updateReference(
        range: Range<Int>, weights w: UnsafeMutablePointer<Float>,
        gradients: UnsafePointer<UnsafeMutablePointer<Float>>, shardCount: Int,
        velocity: UnsafeMutablePointer<Float>, hyper h: UpdateHyperparameters, firstStep: Bool
    ) -> Bool {
        var finite = true
        for i in range {
            var g = gradients[0][i]
            for s in 1..<shardCount { g = g + gradients[s][i] }
            finite = finite && g.isFinite
            scalarStep(w + i, g, velocity + i, h, firstStep)
        }
        return finite
    }

    @inline(__always)
    static func scalarStep(
        _ w: UnsafeMutablePointer<Float>, _ gradient: Float, _ velocity: UnsafeMutablePointer<Float>,
        _ h: UpdateHyperparameters, _ firstStep: Bool
    ) {
        var g = gradient
        if h.gradientScale != 1 { g = g * h.gradientScale }
        if h.weightDecay != 0 { g = g + h.weightDecay * w.pointee }
        if h.momentum != 0 {
            let buf = firstStep ? g : h.momentum * velocity.pointee + g
            velocity.pointee = buf
            g = h.nesterov ? g + h.momentum * buf : buf
        }
        w.pointee = w.pointee - h.learningRate * g
    }
}
