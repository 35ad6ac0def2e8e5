/// The stochastic-gradient-descent update, in PyTorch's `torch.optim.SGD` form.
///
/// For each element: `g = grad + weightDecay * w`; with momentum μ > 0,
/// `buf = g` on the first step and `buf = μ * buf + g` after; the step direction
/// is `g + μ * buf` (Nesterov) or `buf`; then `w -= lr * direction`.
/// (Dampening is 0, as in PyTorch's default.)
public struct SGDHyperparameters: Sendable, Equatable {
    public var learningRate: Float
    public var momentum: Float
    public var weightDecay: Float
    public var nesterov: Bool

    public init(learningRate: Float, momentum: Float = 0, weightDecay: Float = 0, nesterov: Bool = false) {
        self.learningRate = learningRate
        self.momentum = momentum
        self.weightDecay = weightDecay
        self.nesterov = nesterov
    }
}

public enum SGDKernel {
    /// Updates `count` elements of w in place. `velocity` is unused when momentum is 0.
    /// w, grad, velocity: (count), disjoint.
    public static func update(
        count: Int, weights w: UnsafeMutablePointer<Float>, gradient grad: UnsafePointer<Float>,
        velocity: UnsafeMutablePointer<Float>, hyper h: SGDHyperparameters, firstStep: Bool
    ) {
        let lr = Vector16(repeating: h.learningRate)
        let mu = Vector16(repeating: h.momentum)
        let wd = Vector16(repeating: h.weightDecay)
        var i = 0
        while i + 16 <= count {
            let weight = load16(w + i)
            var g = load16(grad + i)
            if h.weightDecay != 0 { g = g + wd * weight }
            if h.momentum != 0 {
                let buf = firstStep ? g : mu * load16(velocity + i) + g
                store16(buf, velocity + i)
                g = h.nesterov ? g + mu * buf : buf
            }
            store16(weight - lr * g, w + i)
            i += 16
        }
        if i < count {
            updateReference(
                count: count - i, weights: w + i, gradient: grad + i, velocity: velocity + i,
                hyper: h, firstStep: firstStep)
        }
    }

    public static func updateReference(
        count: Int, weights w: UnsafeMutablePointer<Float>, gradient grad: UnsafePointer<Float>,
        velocity: UnsafeMutablePointer<Float>, hyper h: SGDHyperparameters, firstStep: Bool
    ) {
        for i in 0..<count {
            var g = grad[i]
            if h.weightDecay != 0 { g = g + h.weightDecay * w[i] }
            if h.momentum != 0 {
                let buf = firstStep ? g : h.momentum * velocity[i] + g
                velocity[i] = buf
                g = h.nesterov ? g + h.momentum * buf : buf
            }
            w[i] = w[i] - h.learningRate * g
        }
    }
}
