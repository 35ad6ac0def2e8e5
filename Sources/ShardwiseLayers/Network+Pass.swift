import ShardwiseKernels

extension Network {
    /// Forward pass over `rows` rows of `workspace.input`; the logits land in `workspace.output`.
    ///
    /// - Parameters:
    ///   - parameters: the flat parameter vector, laid out as `layout`.
    ///   - dropout: where masks are drawn from when training; nil means evaluation (dropout is identity).
    public func forward(
        parameters: UnsafePointer<Float>, workspace ws: Workspace, rows n: Int, dropout: DropoutContext?
    ) {
        precondition(n > 0 && n <= ws.capacity, "forward: \(n) rows in a workspace of \(ws.capacity)")
        for (k, layer) in layers.enumerated() {
            let x = ws.activations[k].pointer
            let y = ws.activations[k + 1].pointer
            switch layer {
            case .linear(let inputs, let outputs, let index, let p):
                let (w, b) = parameterOffsets[k]!
                var weights = parameters + w
                if p > 0, let dropout {
                    // DropConnect: one mask per step for all its samples, whatever the shard.
                    let mask = ws.masks[k]!.pointer, masked = ws.maskedWeights[k]!.pointer
                    DropoutKernel.fillMask(
                        rows: outputs, columns: inputs,
                        address: RandomAddress(seed: dropout.seed, purpose: .dropConnect, step: dropout.step, layer: UInt32(index)),
                        firstPosition: 0, dropProbability: p, mask: mask)
                    Elementwise.multiply(count: outputs * inputs, a: weights, b: mask, out: masked)
                    weights = UnsafePointer(masked)
                }
                // y (N, O) = x (N, I) · Wᵀ, W: (O, I)
                BLAS.gemm(
                    transposeA: false, transposeB: true, m: n, n: outputs, k: inputs,
                    a: x, lda: inputs, b: weights, ldb: inputs, beta: 0, c: y, ldc: outputs)
                Elementwise.addBias(rows: n, columns: outputs, y: y, bias: parameters + b)
            case .relu(let width):
                Elementwise.relu(count: n * width, x: x, y: y)
            case .dropout(let width, let p, let index, let kind):
                if let dropout {
                    let mask = ws.masks[k]!.pointer
                    let address = RandomAddress(seed: dropout.seed, purpose: .dropout, step: dropout.step, layer: UInt32(index))
                    if kind == .gaussian {
                        DropoutKernel.fillGaussianMask(
                            rows: n, columns: width, address: address, firstPosition: dropout.firstPosition, dropProbability: p, mask: mask)
                    } else {
                        DropoutKernel.fillMask(
                            rows: n, columns: width, address: address, firstPosition: dropout.firstPosition, dropProbability: p, mask: mask)
                    }
                    Elementwise.multiply(count: n * width, a: x, b: mask, out: y)
                } else {
                    y.update(from: x, count: n * width)
                }
            }
        }
    }

    /// Softmax cross-entropy on the logits of the last `forward`, then the backward pass.
    ///
    /// Writes the gradient of `(1 / lossDivisor) * Σ_rows loss` into `gradient`
    /// (laid out as `layout`, every element overwritten) and returns the loss sum
    /// over the rows. With `lossDivisor` = the global batch size, the shards'
    /// gradients add up to the gradient of the global batch's mean loss.
    @discardableResult
    public func backward(
        parameters: UnsafePointer<Float>, workspace ws: Workspace, rows n: Int,
        lossDivisor: Int, gradient: UnsafeMutablePointer<Float>
    ) -> Double {
        let classes = widths[widths.count - 1]
        var dy = ws.gradientA.pointer
        var dx = ws.gradientB.pointer
        let loss = Elementwise.softmaxCrossEntropy(
            rows: n, classes: classes, logits: ws.output, labels: ws.labels,
            gradientScale: 1 / Float(lossDivisor), grad: dy)
        for k in stride(from: layers.count - 1, through: 0, by: -1) {
            guard needsInputGradient[k] || parameterOffsets[k] != nil else { break }
            switch layers[k] {
            case .linear(let inputs, let outputs, _, let p):
                let (w, b) = parameterOffsets[k]!
                let x = ws.activations[k].pointer
                // dW (O, I) = dYᵀ (O, N) · X (N, I)
                BLAS.gemm(
                    transposeA: true, transposeB: false, m: outputs, n: inputs, k: n,
                    a: dy, lda: outputs, b: x, ldb: inputs, beta: 0, c: gradient + w, ldc: inputs)
                // DropConnect: the forward used W ∘ M, so dW = (dYᵀ X) ∘ M.
                if p > 0 {
                    Elementwise.multiply(count: outputs * inputs, a: gradient + w, b: ws.masks[k]!.pointer, out: gradient + w)
                }
                Elementwise.columnSums(rows: n, columns: outputs, dy: dy, sums: gradient + b)
                if needsInputGradient[k] {
                    // dX (N, I) = dY (N, O) · W (O, I), with the weights the forward used
                    let weights = p > 0 ? UnsafePointer(ws.maskedWeights[k]!.pointer) : parameters + w
                    BLAS.gemm(
                        transposeA: false, transposeB: false, m: n, n: inputs, k: outputs,
                        a: dy, lda: outputs, b: weights, ldb: inputs, beta: 0, c: dx, ldc: inputs)
                    swap(&dx, &dy)
                }
            case .relu(let width):
                Elementwise.reluBackward(count: n * width, y: ws.activations[k + 1].pointer, dy: dy, dx: dy)
            case .dropout(let width, _, _, _):
                Elementwise.multiply(count: n * width, a: dy, b: ws.masks[k]!.pointer, out: dy)
            }
        }
        return loss
    }

    /// Number of rows whose largest logit is not at the label, after `forward`.
    public func countErrors(workspace ws: Workspace, rows n: Int) -> Int {
        let classes = widths[widths.count - 1]
        var errors = 0
        for r in 0..<n {
            let z = ws.output + r * classes
            var best = 0
            for c in 1..<classes where z[c] > z[best] { best = c }
            if best != Int(ws.labels[r]) { errors += 1 }
        }
        return errors
    }
}
