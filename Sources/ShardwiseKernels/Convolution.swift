/// The geometry of a 2-D convolution or pooling window over one (C, H, W) sample, as
/// PyTorch's `Conv2d`/`MaxPool2d` define it: output size ⌊(H + 2 padding - dilation (k - 1) - 1) / stride⌋ + 1.
public struct WindowGeometry: Sendable, Equatable {
    public var channels: Int, height: Int, width: Int
    public var kernelHeight: Int, kernelWidth: Int
    public var strideHeight: Int, strideWidth: Int
    public var padHeight: Int, padWidth: Int
    public var dilationHeight: Int, dilationWidth: Int

    /// A window over (channels, height, width) samples.
    public init(
        channels: Int, height: Int, width: Int, kernel: (Int, Int), stride: (Int, Int), padding: (Int, Int), dilation: (Int, Int)
    ) {
        (self.channels, self.height, self.width) = (channels, height, width)
        (kernelHeight, kernelWidth) = kernel
        (strideHeight, strideWidth) = stride
        (padHeight, padWidth) = padding
        (dilationHeight, dilationWidth) = dilation
    }

    /// Output rows: ⌊(H + 2 pad - dilation (kH - 1) - 1) / stride⌋ + 1 (at most 0 when the window does not fit).
    public var outputHeight: Int { Self.outputSize(height, kernelHeight, strideHeight, padHeight, dilationHeight) }
    /// Output columns.
    public var outputWidth: Int { Self.outputSize(width, kernelWidth, strideWidth, padWidth, dilationWidth) }
    /// P: output positions per channel.
    public var positions: Int { outputHeight * outputWidth }
    /// K: values under one window across the channels, C kH kW (a row of the lowered matrix).
    public var windowValues: Int { channels * kernelHeight * kernelWidth }

    static func outputSize(_ size: Int, _ kernel: Int, _ stride: Int, _ pad: Int, _ dilation: Int) -> Int {
        let span = size + 2 * pad - dilation * (kernel - 1) - 1
        return span < 0 ? 0 : span / stride + 1
    }
}

/// The lowering of convolutions onto matrix products (im2col and its adjoint) and pooling.
///
/// Every loop runs in one fixed order, so results never depend on threads; col2im and
/// the pooling gradients add into the input gradient in that order.
public enum ConvolutionKernel {
    /// Writes one sample's (K, P) lowered matrix into columns `column..<column + P` of `cols`
    /// (row stride `ld`): row (c kH + i) kW + j, column oy Wo + ox holds
    /// x[c, oy s - pad + i d, ox s - pad + j d], or 0 in the padding.
    public static func im2col(
        _ g: WindowGeometry, x: UnsafePointer<Float>, cols: UnsafeMutablePointer<Float>, ld: Int, column: Int
    ) {
        let ho = g.outputHeight, wo = g.outputWidth
        for c in 0..<g.channels {
            let plane = x + c * g.height * g.width
            for i in 0..<g.kernelHeight {
                for j in 0..<g.kernelWidth {
                    let row = cols + ((c * g.kernelHeight + i) * g.kernelWidth + j) * ld + column
                    for oy in 0..<ho {
                        let iy = oy * g.strideHeight - g.padHeight + i * g.dilationHeight
                        let out = row + oy * wo
                        guard iy >= 0 && iy < g.height else {
                            out.update(repeating: 0, count: wo)
                            continue
                        }
                        let line = plane + iy * g.width
                        let x0 = j * g.dilationWidth - g.padWidth
                        for ox in 0..<wo {
                            let ix = ox * g.strideWidth + x0
                            out[ox] = ix >= 0 && ix < g.width ? line[ix] : 0
                        }
                    }
                }
            }
        }
    }

    /// The adjoint of ``im2col(_:x:cols:ld:column:)``: adds each lowered gradient back onto the
    /// input position it came from. `dx` (C, H, W) must be zeroed by the caller.
    public static func col2im(
        _ g: WindowGeometry, cols: UnsafePointer<Float>, ld: Int, column: Int, dx: UnsafeMutablePointer<Float>
    ) {
        let ho = g.outputHeight, wo = g.outputWidth
        for c in 0..<g.channels {
            let plane = dx + c * g.height * g.width
            for i in 0..<g.kernelHeight {
                for j in 0..<g.kernelWidth {
                    let row = cols + ((c * g.kernelHeight + i) * g.kernelWidth + j) * ld + column
                    for oy in 0..<ho {
                        let iy = oy * g.strideHeight - g.padHeight + i * g.dilationHeight
                        guard iy >= 0 && iy < g.height else { continue }
                        let line = plane + iy * g.width, values = row + oy * wo
                        let x0 = j * g.dilationWidth - g.padWidth
                        for ox in 0..<wo {
                            let ix = ox * g.strideWidth + x0
                            if ix >= 0 && ix < g.width { line[ix] += values[ox] }
                        }
                    }
                }
            }
        }
    }

    /// Max pooling of one sample (C, H, W) into (C, Ho, Wo); `argmax` gets each output's input
    /// index within the sample (the first maximum in window order, as PyTorch's; padding never wins).
    public static func maxPool(_ g: WindowGeometry, x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>, argmax: UnsafeMutablePointer<Int32>) {
        let ho = g.outputHeight, wo = g.outputWidth
        for c in 0..<g.channels {
            for oy in 0..<ho {
                for ox in 0..<wo {
                    var best = -Float.infinity, at = -1
                    for i in 0..<g.kernelHeight {
                        let iy = oy * g.strideHeight - g.padHeight + i * g.dilationHeight
                        guard iy >= 0 && iy < g.height else { continue }
                        for j in 0..<g.kernelWidth {
                            let ix = ox * g.strideWidth - g.padWidth + j * g.dilationWidth
                            guard ix >= 0 && ix < g.width else { continue }
                            let index = (c * g.height + iy) * g.width + ix
                            // NaN propagates, as in PyTorch.
                            if at < 0 || x[index] > best || x[index].isNaN && !best.isNaN { (best, at) = (x[index], index) }
                        }
                    }
                    let o = (c * ho + oy) * wo + ox
                    y[o] = best
                    argmax[o] = Int32(at)
                }
            }
        }
    }

    /// The max-pooling gradient: dx[argmax[o]] += dy[o]. `dx` must be zeroed by the caller.
    public static func maxPoolBackward(outputs: Int, dy: UnsafePointer<Float>, argmax: UnsafePointer<Int32>, dx: UnsafeMutablePointer<Float>) {
        for o in 0..<outputs { dx[Int(argmax[o])] += dy[o] }
    }

    /// Average pooling of one sample, dividing by kH kW (PyTorch's `count_include_pad=True`).
    public static func averagePool(_ g: WindowGeometry, x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>) {
        let ho = g.outputHeight, wo = g.outputWidth, divisor = Float(g.kernelHeight * g.kernelWidth)
        for c in 0..<g.channels {
            for oy in 0..<ho {
                for ox in 0..<wo {
                    var sum: Float = 0
                    forEachWindowIndex(g, c, oy, ox) { sum += x[$0] }
                    y[(c * ho + oy) * wo + ox] = sum / divisor
                }
            }
        }
    }

    /// The average-pooling gradient: adds dy / (kH kW) onto every input position of each window
    /// (`dx` zeroed by the caller).
    public static func averagePoolBackward(_ g: WindowGeometry, dy: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>) {
        let ho = g.outputHeight, wo = g.outputWidth, divisor = Float(g.kernelHeight * g.kernelWidth)
        for c in 0..<g.channels {
            for oy in 0..<ho {
                for ox in 0..<wo {
                    let share = dy[(c * ho + oy) * wo + ox] / divisor
                    forEachWindowIndex(g, c, oy, ox) { dx[$0] += share }
                }
            }
        }
    }

    @inline(__always)
    static func forEachWindowIndex(_ g: WindowGeometry, _ c: Int, _ oy: Int, _ ox: Int, _ body: (Int) -> Void) {
        for i in 0..<g.kernelHeight {
            let iy = oy * g.strideHeight - g.padHeight + i * g.dilationHeight
            guard iy >= 0 && iy < g.height else { continue }
            for j in 0..<g.kernelWidth {
                let ix = ox * g.strideWidth - g.padWidth + j * g.dilationWidth
                if ix >= 0 && ix < g.width { body((c * g.height + iy) * g.width + ix) }
            }
        }
    }
}
