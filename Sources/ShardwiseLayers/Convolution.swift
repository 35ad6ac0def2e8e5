import ShardwiseKernels

/// A height and a width: a window's size, stride, padding or dilation. An integer literal gives both.
public struct Size2D: Sendable, Equatable, Codable, ExpressibleByIntegerLiteral {
    public var height: Int
    public var width: Int

    public init(_ height: Int, _ width: Int) {
        self.height = height
        self.width = width
    }

    public init(integerLiteral value: Int) { self.init(value, value) }

    var pair: (Int, Int) { (height, width) }
    var positive: Bool { height > 0 && width > 0 }
    var description: String { height == width ? "\(height)" : "(\(height), \(width))" }
}

/// A sample's (C, H, W), or an error naming what was found.
func imageShape(_ shape: [Int], _ what: String) throws(ModelError) -> (Int, Int, Int) {
    guard shape.count == 3 else {
        throw ModelError("\(what) takes samples of shape (C, H, W), got \(Network.describe(shape)); give the model an input shape such as (1, 28, 28)")
    }
    return (shape[0], shape[1], shape[2])
}

/// 2-D convolution over NCHW samples, as PyTorch's `nn.Conv2d`: weight (O, C, kH, kW) and
/// bias (O), named `weight` and `bias`; stride, zero padding and dilation per dimension.
///
/// NCHW, because it is PyTorch's layout: a checkpoint's tensors, a `Flatten` after the last
/// convolution and the data's rows all mean what they mean in PyTorch, with no transposes.
/// The convolution is lowered onto the GEMM (im2col): a group of g samples becomes a
/// (C kH kW, g P) matrix (P output positions per sample), and W (O, C kH kW) times it gives
/// the group's outputs. The portable kernels never write that matrix: their GEMM gathers it
/// from the samples while packing its panels (the same bits); for the BLAS it is written out.
/// The group is sized for GEMMs of at least ~512 columns. The backward
/// pass recomputes the lowered matrix (cheaper than keeping it for the whole shard), adds
/// each group's weight gradient onto the previous groups' in group order, and gives the
/// input gradient through col2im: every sum in a fixed order, whatever the threads. Every
/// product is a plain (β = 0) GEMM, so the portable kernels compute all of them: the same
/// bits on any CPU.
/// Weights start He-uniform over the fan-in C kH kW, biases at zero.
public struct Conv2D: Layer {
    public let inChannels: Int
    public let outChannels: Int
    public let kernel: Size2D
    public let stride: Size2D
    public let padding: Size2D
    public let dilation: Size2D

    /// A convolution from `inChannels` to `outChannels` with a `kernel` window.
    public init(_ inChannels: Int, _ outChannels: Int, kernel: Size2D, stride: Size2D = 1, padding: Size2D = 0, dilation: Size2D = 1) {
        self.inChannels = inChannels
        self.outChannels = outChannels
        self.kernel = kernel
        self.stride = stride
        self.padding = padding
        self.dilation = dilation
    }

    /// The window over samples of `shape` (already checked).
    func geometry(_ shape: [Int]) -> WindowGeometry {
        WindowGeometry(
            channels: shape[0], height: shape[1], width: shape[2], kernel: kernel.pair, stride: stride.pair,
            padding: padding.pair, dilation: dilation.pair)
    }

    public func outputWidth(inputWidth: Int) throws(ModelError) -> Int {
        throw ModelError("Conv2D takes samples of shape (C, H, W); give the model an input shape such as (1, 28, 28)")
    }

    public func outputShape(inputShape: [Int]) throws(ModelError) -> [Int] {
        let (c, _, _) = try imageShape(inputShape, "Conv2D")
        guard inChannels > 0, outChannels > 0, kernel.positive, stride.positive, dilation.positive, padding.height >= 0, padding.width >= 0 else {
            throw ModelError("Conv2D(\(inChannels), \(outChannels), kernel: \(kernel.description), stride: \(stride.description), padding: \(padding.description), dilation: \(dilation.description)): sizes must be positive (padding at least 0)")
        }
        try ModelSize.arguments("Conv2D", [inChannels, outChannels, kernel.height, kernel.width, stride.height, stride.width, padding.height, padding.width, dilation.height, dilation.width])
        guard c == inChannels else {
            throw ModelError("Conv2D(\(inChannels), \(outChannels)) receives \(c) channels, expected \(inChannels)")
        }
        let g = geometry(inputShape)
        guard g.outputHeight > 0, g.outputWidth > 0 else {
            throw ModelError("Conv2D's \(kernel.description) window (dilation \(dilation.description), padding \(padding.description)) does not fit in \(inputShape[1])x\(inputShape[2])")
        }
        // What the passes and the scratch later multiply, bounded here (see ModelSize).
        let window = try ModelSize.product("Conv2D's window (C x kH x kW)", [c, kernel.height, kernel.width])
        try ModelSize.product("Conv2D's weight (O x C kH kW)", [outChannels, window])
        try ModelSize.product("Conv2D's lowered sample (C kH kW x output positions)", [window, g.outputHeight, g.outputWidth])
        try ModelSize.product("Conv2D's padded sample", [c, inputShape[1] + 2 * padding.height, inputShape[2] + 2 * padding.width])
        return [outChannels, g.outputHeight, g.outputWidth]
    }

    public func parameters(inputShape: [Int]) -> [ParameterSpec] {
        [
            ParameterSpec(
                name: "weight", shape: [outChannels, inChannels, kernel.height, kernel.width],
                initializer: .heUniform(fanIn: inChannels * kernel.height * kernel.width), role: .weight),
            ParameterSpec(name: "bias", shape: [outChannels], initializer: .zeros, role: .bias),
        ]
    }

    /// Samples per GEMM: enough for ~512 columns, at most `rows`.
    func groupSize(_ g: WindowGeometry, rows: Int) -> Int { max(1, min(rows, (512 + g.positions - 1) / g.positions)) }

    /// The lowered matrix, the group's outputs and the lowered gradient, (2 C kH kW + O) g P
    /// floats; one group's weight gradient, O C kH kW; the gathered lowering's offsets,
    /// C kH kW + g P, and with padding the group's padded samples, g C (H + 2 padH) (W + 2 padW).
    public func scratchCount(inputShape: [Int], rows: Int) -> Int {
        let g = geometry(inputShape), group = groupSize(g, rows: rows)
        let padded = padding.height > 0 || padding.width > 0
            ? group * g.channels * (g.height + 2 * g.padHeight) * (g.width + 2 * g.padWidth) : 0
        return (2 * g.windowValues + outChannels) * group * g.positions + outChannels * g.windowValues
            + g.windowValues + group * g.positions + padded
    }

    /// Multiply-adds per sample in the forward pass: O · C kH kW · P.
    public func multiplyAdds(inputShape: [Int]) -> Int {
        let g = geometry(inputShape)
        return outChannels * g.windowValues * g.positions
    }

    /// The scratch regions for groups of `group` samples.
    private struct Regions {
        var cols, block, dcols, groupGradient: UnsafeMutablePointer<Float>
        var windows, positions: UnsafeMutablePointer<Int32>
        var padded: UnsafeMutablePointer<Float>
    }

    private func regions(_ g: WindowGeometry, _ group: Int, _ scratch: UnsafeMutablePointer<Float>) -> Regions {
        let columns = group * g.positions, k = g.windowValues
        let cols = scratch, block = cols + k * columns, dcols = block + outChannels * columns
        let groupGradient = dcols + k * columns, offsets = groupGradient + outChannels * k
        let windows = UnsafeMutableRawPointer(offsets).assumingMemoryBound(to: Int32.self)
        return Regions(
            cols: cols, block: block, dcols: dcols, groupGradient: groupGradient, windows: windows,
            positions: windows + k, padded: offsets + k + columns)
    }

    /// The lowering of samples `first..<first + count` of `x` for a product: written into
    /// `cols` (row stride count·P) for the BLAS; for the portable kernels, the offsets (and the
    /// padded samples) from which their GEMM gathers the same matrix as it packs it.
    private func lower(_ g: WindowGeometry, _ x: UnsafePointer<Float>, first: Int, count: Int, _ r: Regions) -> UnsafePointer<Float>? {
        let inWidth = g.channels * g.height * g.width
        let paddedCount = count * g.channels * (g.height + 2 * g.padHeight) * (g.width + 2 * g.padWidth)
        // The offsets are 32-bit: a group beyond 2^31 values is lowered the written-out way.
        guard MatrixKernels.current == .portable, paddedCount <= Int(Int32.max) else {
            for j in 0..<count {
                ConvolutionKernel.im2col(g, x: x + (first + j) * inWidth, cols: r.cols, ld: count * g.positions, column: j * g.positions)
            }
            return nil
        }
        ConvolutionKernel.offsets(g, count: count, windows: r.windows, positions: r.positions)
        guard g.padHeight > 0 || g.padWidth > 0 else { return x + first * inWidth }
        ConvolutionKernel.pad(g, x: x + first * inWidth, count: count, into: r.padded)
        return UnsafePointer(r.padded)
    }

    /// c (m, columns) = a (m, K) · the lowered matrix (K, columns).
    private func timesLowered(
        _ g: WindowGeometry, _ gathered: UnsafePointer<Float>?, _ r: Regions, m: Int, columns: Int,
        a: UnsafePointer<Float>, c: UnsafeMutablePointer<Float>
    ) {
        let k = g.windowValues
        if let gathered {
            BLAS.gemmGathered(
                transposeA: false, m: m, n: columns, k: k, a: a, lda: k, x: gathered, kOffsets: r.windows, nOffsets: r.positions, c: c, ldc: columns)
        } else {
            BLAS.gemm(transposeA: false, transposeB: false, m: m, n: columns, k: k, a: a, lda: k, b: r.cols, ldb: columns, beta: 0, c: c, ldc: columns)
        }
    }

    /// c (m, K) = a (m, columns) · the lowered matrix transposed (columns, K).
    private func timesLoweredTransposed(
        _ g: WindowGeometry, _ gathered: UnsafePointer<Float>?, _ r: Regions, m: Int, columns: Int,
        a: UnsafePointer<Float>, c: UnsafeMutablePointer<Float>
    ) {
        let k = g.windowValues
        if let gathered {
            BLAS.gemmGathered(
                transposeA: false, m: m, n: k, k: columns, a: a, lda: columns, x: gathered, kOffsets: r.positions, nOffsets: r.windows, c: c, ldc: k)
        } else {
            BLAS.gemm(transposeA: false, transposeB: true, m: m, n: k, k: columns, a: a, lda: columns, b: r.cols, ldb: columns, beta: 0, c: c, ldc: k)
        }
    }

    public func forward(_ pass: ForwardPass) {
        let g = geometry(pass.inputShape), p = g.positions, o = outChannels
        let group = groupSize(g, rows: pass.rows)
        let r = regions(g, group, pass.scratch)
        let bias = pass.parameters[1]
        var first = 0
        while first < pass.rows {
            let count = min(group, pass.rows - first), columns = count * p
            let gathered = lower(g, pass.input, first: first, count: count, r)
            // block (O, count P) = W (O, K) · lowered (K, count P)
            timesLowered(g, gathered, r, m: o, columns: columns, a: pass.parameters[0], c: r.block)
            for j in 0..<count {
                let out = pass.output + (first + j) * o * p
                for c in 0..<o {
                    let from = r.block + c * columns + j * p, to = out + c * p, b = bias[c]
                    for q in 0..<p { to[q] = from[q] + b }
                }
            }
            first += count
        }
    }

    public func backward(_ pass: BackwardPass) {
        let g = geometry(pass.inputShape), p = g.positions, o = outChannels, k = g.windowValues
        let group = groupSize(g, rows: pass.rows)
        let r = regions(g, group, pass.scratch)
        let dW = pass.parameterGradients[0], db = pass.parameterGradients[1]
        // The bias gradient: per channel, over samples then positions, in Double.
        for c in 0..<o {
            var sum = 0.0
            for s in 0..<pass.rows {
                let row = pass.outputGradient + (s * o + c) * p
                for q in 0..<p { sum += Double(row[q]) }
            }
            db[c] = Float(sum)
        }
        if let dx = pass.inputGradient { dx.update(repeating: 0, count: pass.rows * pass.inputWidth) }
        var first = 0
        while first < pass.rows {
            let count = min(group, pass.rows - first), columns = count * p
            let gathered = lower(g, pass.input, first: first, count: count, r)
            for j in 0..<count {
                let dy = pass.outputGradient + (first + j) * o * p
                for c in 0..<o { (r.block + c * columns + j * p).update(from: dy + c * p, count: p) }
            }
            // dW (O, K) = Σ over groups, in group order, of block (O, count P) · loweredᵀ (count P, K).
            // Each product is a β = 0 GEMM (the portable kernels' form: the same bits on any CPU).
            timesLoweredTransposed(g, gathered, r, m: o, columns: columns, a: r.block, c: first == 0 ? dW : r.groupGradient)
            if first > 0 { Elementwise.add(count: o * k, x: r.groupGradient, y: dW) }
            if let dx = pass.inputGradient {
                // dcols (K, count P) = Wᵀ (K, O) · block (O, count P), then back onto the inputs.
                BLAS.gemm(
                    transposeA: true, transposeB: false, m: k, n: columns, k: o,
                    a: pass.parameters[0], lda: k, b: r.block, ldb: columns, beta: 0, c: r.dcols, ldc: columns)
                for j in 0..<count {
                    ConvolutionKernel.col2im(g, cols: r.dcols, ld: columns, column: j * p, dx: dx + (first + j) * pass.inputWidth)
                }
            }
            first += count
        }
    }
}

/// A pooling window's settings, shared by ``MaxPool2D`` and ``AvgPool2D``.
struct PoolingWindow: Sendable {
    var kernel: Size2D, stride: Size2D, padding: Size2D

    func geometry(_ shape: [Int]) -> WindowGeometry {
        WindowGeometry(
            channels: shape[0], height: shape[1], width: shape[2], kernel: kernel.pair, stride: stride.pair,
            padding: padding.pair, dilation: (1, 1))
    }

    func outputShape(_ shape: [Int], _ name: String) throws(ModelError) -> [Int] {
        let (c, _, _) = try imageShape(shape, name)
        guard kernel.positive, stride.positive, padding.height >= 0, padding.width >= 0 else {
            throw ModelError("\(name)(kernel: \(kernel.description), stride: \(stride.description), padding: \(padding.description)): sizes must be positive (padding at least 0)")
        }
        try ModelSize.arguments(name, [kernel.height, kernel.width, stride.height, stride.width, padding.height, padding.width])
        guard 2 * padding.height <= kernel.height, 2 * padding.width <= kernel.width else {
            throw ModelError("\(name): padding \(padding.description) is more than half the \(kernel.description) window (PyTorch refuses it too)")
        }
        let g = geometry(shape)
        guard g.outputHeight > 0, g.outputWidth > 0 else {
            throw ModelError("\(name)'s \(kernel.description) window does not fit in \(shape[1])x\(shape[2])")
        }
        return [c, g.outputHeight, g.outputWidth]
    }
}

/// Max pooling over NCHW samples, as PyTorch's `nn.MaxPool2d` (stride defaults to the window;
/// padding counts as -infinity). The gradient goes to each window's first maximum.
public struct MaxPool2D: Layer {
    let window: PoolingWindow
    public var kernel: Size2D { window.kernel }
    public var stride: Size2D { window.stride }
    public var padding: Size2D { window.padding }

    /// Pooling with a `kernel` window moved by `stride` (default: the window).
    public init(_ kernel: Size2D, stride: Size2D? = nil, padding: Size2D = 0) {
        window = PoolingWindow(kernel: kernel, stride: stride ?? kernel, padding: padding)
    }

    public func outputWidth(inputWidth: Int) throws(ModelError) -> Int {
        throw ModelError("MaxPool2D takes samples of shape (C, H, W); give the model an input shape such as (1, 28, 28)")
    }

    public func outputShape(inputShape: [Int]) throws(ModelError) -> [Int] { try window.outputShape(inputShape, "MaxPool2D") }

    /// Each output's input index (an Int32 in a float's bytes), per row.
    public func scratchCount(inputShape: [Int], rows: Int) -> Int { rows * window.geometry(inputShape).positions * inputShape[0] }

    public func forward(_ pass: ForwardPass) {
        let g = window.geometry(pass.inputShape)
        let argmax = UnsafeMutableRawPointer(pass.scratch).assumingMemoryBound(to: Int32.self)
        for s in 0..<pass.rows {
            ConvolutionKernel.maxPool(
                g, x: pass.input + s * pass.inputWidth, y: pass.output + s * pass.outputWidth, argmax: argmax + s * pass.outputWidth)
        }
    }

    public func backward(_ pass: BackwardPass) {
        guard let dx = pass.inputGradient else { return }
        dx.update(repeating: 0, count: pass.rows * pass.inputWidth)
        let argmax = UnsafeRawPointer(pass.scratch).assumingMemoryBound(to: Int32.self)
        for s in 0..<pass.rows {
            ConvolutionKernel.maxPoolBackward(
                outputs: pass.outputWidth, dy: pass.outputGradient + s * pass.outputWidth,
                argmax: argmax + s * pass.outputWidth, dx: dx + s * pass.inputWidth)
        }
    }
}

/// Average pooling over NCHW samples, as PyTorch's `nn.AvgPool2d` (stride defaults to the
/// window; with padding, zeros count towards the average, `count_include_pad=True`).
public struct AvgPool2D: Layer {
    let window: PoolingWindow
    public var kernel: Size2D { window.kernel }
    public var stride: Size2D { window.stride }
    public var padding: Size2D { window.padding }

    /// Pooling with a `kernel` window moved by `stride` (default: the window).
    public init(_ kernel: Size2D, stride: Size2D? = nil, padding: Size2D = 0) {
        window = PoolingWindow(kernel: kernel, stride: stride ?? kernel, padding: padding)
    }

    public func outputWidth(inputWidth: Int) throws(ModelError) -> Int {
        throw ModelError("AvgPool2D takes samples of shape (C, H, W); give the model an input shape such as (1, 28, 28)")
    }

    public func outputShape(inputShape: [Int]) throws(ModelError) -> [Int] { try window.outputShape(inputShape, "AvgPool2D") }

    public func forward(_ pass: ForwardPass) {
        let g = window.geometry(pass.inputShape)
        for s in 0..<pass.rows {
            ConvolutionKernel.averagePool(g, x: pass.input + s * pass.inputWidth, y: pass.output + s * pass.outputWidth)
        }
    }

    public func backward(_ pass: BackwardPass) {
        guard let dx = pass.inputGradient else { return }
        dx.update(repeating: 0, count: pass.rows * pass.inputWidth)
        let g = window.geometry(pass.inputShape)
        for s in 0..<pass.rows {
            ConvolutionKernel.averagePoolBackward(g, dy: pass.outputGradient + s * pass.outputWidth, dx: dx + s * pass.inputWidth)
        }
    }
}

/// Flattens each sample to one dimension, as PyTorch's `nn.Flatten()`: (C, H, W) becomes
/// (C·H·W) in the same order, so a `Linear` can follow a convolution.
public struct Flatten: Layer {
    public init() {}

    public func outputWidth(inputWidth: Int) throws(ModelError) -> Int { inputWidth }

    public func outputShape(inputShape: [Int]) throws(ModelError) -> [Int] { [inputShape.reduce(1, *)] }

    public func forward(_ pass: ForwardPass) { pass.output.update(from: pass.input, count: pass.rows * pass.inputWidth) }

    public func backward(_ pass: BackwardPass) {
        pass.inputGradient?.update(from: pass.outputGradient, count: pass.rows * pass.inputWidth)
    }
}
