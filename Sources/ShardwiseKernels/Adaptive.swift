/// Adam, AdamW and RMSprop, fused with the shard sum as ``SGDKernel`` is: each element's
/// gradient is summed over the shards in shard order, `((g₀ + g₁) + g₂) + …`, scaled by the
/// clipping factor, and used at once; the sum never goes back to memory.
///
/// The element updates follow PyTorch's single-tensor implementations (the CPU default):
/// - Adam: `g += λ w`; AdamW instead `w *= 1 - lr λ`; then `m += (1 - β₁)(g - m)`,
///   `v = β₂ v + (1 - β₂) g g`, `w -= (lr / (1 - β₁ᵗ)) · m / (√v / √(1 - β₂ᵗ) + ε)`.
/// - RMSprop (α in `beta2`): `g += λ w`, `s = α s + (1 - α) g g`, `a = √s + ε`; with momentum μ,
///   `b = μ b + g / a`, `w -= lr b`; without, `w -= lr g / a`.
/// Square roots and divisions are IEEE-exact, so the results do not depend on the CPU.
/// The state starts at zero: on the first step (`firstStep`) the buffers are not read.
package enum AdaptiveKernel {
    /// Updates `range` of w; `first` is Adam's m or RMSprop's s, `second` Adam's v or
    /// RMSprop's momentum buffer (unused without momentum). Returns false when a summed
    /// gradient element is NaN or infinite (the update is applied regardless).
    @discardableResult
    package static func update(
        range: Range<Int>, weights w: UnsafeMutablePointer<Float>,
        gradients: UnsafePointer<UnsafeMutablePointer<Float>>, shardCount: Int,
        first: UnsafeMutablePointer<Float>, second: UnsafeMutablePointer<Float>,
        hyper h: UpdateHyperparameters, firstStep: Bool
    ) -> Bool {
        precondition(shardCount > 0 && h.algorithm != .sgd)
        let limit = Vector16(repeating: .greatestFiniteMagnitude)
        var finite = SIMDMask<SIMD16<Int32>>(repeating: true)
        var i = range.lowerBound
        while i + 16 <= range.upperBound {
            var g = load16(gradients[0] + i)
            var s = 1
            while s < shardCount {
                g = g + load16(gradients[s] + i)
                s += 1
            }
            finite = finite .& (g .<= limit) .& (g .>= -limit)
            var a = firstStep ? Vector16() : load16(first + i)
            var b = firstStep ? Vector16() : load16(second + i)
            var weight = load16(w + i)
            step(&weight, &a, &b, g, h)
            store16(weight, w + i)
            store16(a, first + i)
            if h.algorithm != .rmsprop || h.momentum != 0 { store16(b, second + i) }
            i += 16
        }
        var tailFinite = true
        while i < range.upperBound {
            var g = gradients[0][i]
            for s in 1..<shardCount { g = g + gradients[s][i] }
            tailFinite = tailFinite && g.isFinite
            scalarStep(w + i, first + i, second + i, g, h, firstStep)
            i += 1
        }
        return tailFinite && all(finite)
    }

    /// Plain-loop reference: the shard sum, then the update, one element at a time.
    @discardableResult
    package static func updateReference(
        range: Range<Int>, weights w: UnsafeMutablePointer<Float>,
        gradients: UnsafePointer<UnsafeMutablePointer<Float>>, shardCount: Int,
        first: UnsafeMutablePointer<Float>, second: UnsafeMutablePointer<Float>,
        hyper h: UpdateHyperparameters, firstStep: Bool
    ) -> Bool {
        var finite = true
        for i in range {
            var g = gradients[0][i]
            for s in 1..<shardCount { g = g + gradients[s][i] }
            finite = finite && g.isFinite
            scalarStep(w + i, first + i, second + i, g, h, firstStep)
        }
        return finite
    }

    /// One lane group: the same expressions as ``scalarStep``, in the same order.
    @inline(__always)
    static func step(_ w: inout Vector16, _ a: inout Vector16, _ b: inout Vector16, _ gradient: Vector16, _ h: UpdateHyperparameters) {
        var g = gradient
        if h.gradientScale != 1 { g = g * Vector16(repeating: h.gradientScale) }
        let wd = Vector16(repeating: h.weightDecay)
        switch h.algorithm {
        case .adam, .adamw:
            if h.weightDecay != 0 {
                if h.algorithm == .adamw { w = w * Vector16(repeating: h.decayFactor) } else { g = g + wd * w }
            }
            a = a + Vector16(repeating: h.beta1Complement) * (g - a)
            b = b * Vector16(repeating: h.beta2) + Vector16(repeating: h.beta2Complement) * g * g
            let denominator = b.squareRoot() / Vector16(repeating: h.biasCorrection2Root) + Vector16(repeating: h.epsilon)
            w = w - Vector16(repeating: h.stepSize) * (a / denominator)
        case .rmsprop:
            if h.weightDecay != 0 { g = g + wd * w }
            a = a * Vector16(repeating: h.beta2) + Vector16(repeating: h.beta2Complement) * g * g
            let average = a.squareRoot() + Vector16(repeating: h.epsilon)
            let lr = Vector16(repeating: h.learningRate)
            if h.momentum != 0 {
                b = b * Vector16(repeating: h.momentum) + g / average
                w = w - lr * b
            } else {
                w = w - lr * (g / average)
            }
        case .sgd:
            preconditionFailure("SGD runs in SGDKernel")
        }
    }

    @inline(__always)
    static func scalarStep(
        _ w: UnsafeMutablePointer<Float>, _ first: UnsafeMutablePointer<Float>, _ second: UnsafeMutablePointer<Float>,
        _ gradient: Float, _ h: UpdateHyperparameters, _ firstStep: Bool
    ) {
        var g = gradient
        if h.gradientScale != 1 { g = g * h.gradientScale }
        var a = firstStep ? 0 : first.pointee
        var b = firstStep ? 0 : second.pointee
        switch h.algorithm {
        case .adam, .adamw:
            if h.weightDecay != 0 {
                if h.algorithm == .adamw { w.pointee = w.pointee * h.decayFactor } else { g = g + h.weightDecay * w.pointee }
            }
            a = a + h.beta1Complement * (g - a)
            b = b * h.beta2 + h.beta2Complement * g * g
            let denominator = b.squareRoot() / h.biasCorrection2Root + h.epsilon
            w.pointee = w.pointee - h.stepSize * (a / denominator)
            second.pointee = b
        case .rmsprop:
            if h.weightDecay != 0 { g = g + h.weightDecay * w.pointee }
            a = a * h.beta2 + h.beta2Complement * g * g
            let average = a.squareRoot() + h.epsilon
            if h.momentum != 0 {
                b = b * h.momentum + g / average
                w.pointee = w.pointee - h.learningRate * b
                second.pointee = b
            } else {
                w.pointee = w.pointee - h.learningRate * (g / average)
            }
        case .sgd:
            preconditionFailure("SGD runs in SGDKernel")
        }
        first.pointee = a
    }
}

/// The first pass of a clipped step: the shard sum written back, and its squared norm.
package enum GradientSum {
    /// Adds shards 1..<shardCount onto shard 0's buffer over `range`, in shard order (the same
    /// sums the fused kernels form), and returns Σ g² of the sums, in element order, in Double.
    package static func sumInPlace(range: Range<Int>, gradients: UnsafePointer<UnsafeMutablePointer<Float>>, shardCount: Int) -> Double {
        let target = gradients[0]
        var squares = 0.0
        for i in range {
            var g = target[i]
            for s in 1..<max(shardCount, 1) { g = g + gradients[s][i] }
            target[i] = g
            squares += Double(g) * Double(g)
        }
        return squares
    }
}
