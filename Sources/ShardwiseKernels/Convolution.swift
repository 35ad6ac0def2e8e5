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
    /// Copies `count` floats 8 at a time (rows of a lowered matrix are short: a memmove call each would cost more than the copy).
    @inline(__always)
    static func copy(from source: UnsafePointer<Float>, to target: UnsafeMutablePointer<Float>, count: Int) {
        var k = 0
        while k + 8 <= count {
            UnsafeMutableRawPointer(target + k).storeBytes(of: UnsafeRawPointer(source + k).loadUnaligned(as: SIMD8<Float>.self), as: SIMD8<Float>.self)
            k += 8
        }
        while k < count {
            target[k] = source[k]
            k += 1
        }
    }

    /// target[k] += source[k], 8 at a time, in element order (each element has one addition: the order across calls is the caller's).
    @inline(__always)
    static func add(_ source: UnsafePointer<Float>, onto target: UnsafeMutablePointer<Float>, count: Int) {
        var k = 0
        while k + 8 <= count {
            let sum = UnsafeRawPointer(target + k).loadUnaligned(as: SIMD8<Float>.self) + UnsafeRawPointer(source + k).loadUnaligned(as: SIMD8<Float>.self)
            UnsafeMutableRawPointer(target + k).storeBytes(of: sum, as: SIMD8<Float>.self)
            k += 8
        }
        while k < count {
            target[k] += source[k]
            k += 1
        }
    }

    /// The output positions `lo..<hi` whose input index `o · stride + offset` falls in `0..<size`.
    @inline(__always)
    static func validRange(offset: Int, stride: Int, size: Int, outputs: Int) -> (lo: Int, hi: Int) {
        let lo = offset >= 0 ? 0 : min(outputs, (-offset + stride - 1) / stride)
        let hi = offset > size - 1 ? 0 : min(outputs, (size - 1 - offset) / stride + 1)
        return (lo, max(lo, hi))
    }

    /// Writes one sample's (K, P) lowered matrix into columns `column..<column + P` of `cols`
    /// (row stride `ld`): row (c kH + i) kW + j, column oy Wo + ox holds
    /// x[c, oy s - pad + i d, ox s - pad + j d], or 0 in the padding. Each output row is a
    /// zeroed margin, a copy (contiguous at stride 1) and another margin: no test per element.
    public static func im2col(
        _ g: WindowGeometry, x: UnsafePointer<Float>, cols: UnsafeMutablePointer<Float>, ld: Int, column: Int
    ) {
        let ho = g.outputHeight, wo = g.outputWidth, sw = g.strideWidth
        for c in 0..<g.channels {
            let plane = x + c * g.height * g.width
            for i in 0..<g.kernelHeight {
                let y0 = i * g.dilationHeight - g.padHeight
                let rowsIn = validRange(offset: y0, stride: g.strideHeight, size: g.height, outputs: ho)
                for j in 0..<g.kernelWidth {
                    let row = cols + ((c * g.kernelHeight + i) * g.kernelWidth + j) * ld + column
                    let x0 = j * g.dilationWidth - g.padWidth
                    let (lo, hi) = validRange(offset: x0, stride: sw, size: g.width, outputs: wo)
                    if rowsIn.lo > 0 { row.update(repeating: 0, count: rowsIn.lo * wo) }
                    for oy in rowsIn.lo..<rowsIn.hi {
                        let out = row + oy * wo
                        let line = plane + (oy * g.strideHeight + y0) * g.width + x0
                        if lo > 0 { out.update(repeating: 0, count: lo) }
                        if sw == 1 {
                            copy(from: line + lo, to: out + lo, count: hi - lo)
                        } else {
                            for ox in lo..<hi { out[ox] = line[ox &* sw] }
                        }
                        if hi < wo { (out + hi).update(repeating: 0, count: wo - hi) }
                    }
                    if rowsIn.hi < ho { (row + rowsIn.hi * wo).update(repeating: 0, count: (ho - rowsIn.hi) * wo) }
                }
            }
        }
    }

    /// The lowered matrix as offsets, for ``BLAS/gemmGathered(transposeA:m:n:k:a:lda:x:kOffsets:nOffsets:c:ldc:)``:
    /// row (c kH + i) kW + j, column s P + oy Wo + ox of the lowering of `count` samples is
    /// `x[windows[row] + positions[column]]`, x holding the samples padded (``pad(_:x:count:into:)``;
    /// or as they are, without padding) one after another. The same values as ``im2col(_:x:cols:ld:column:)``.
    public static func offsets(
        _ g: WindowGeometry, count: Int, windows: UnsafeMutablePointer<Int32>, positions: UnsafeMutablePointer<Int32>
    ) {
        let h = g.height + 2 * g.padHeight, w = g.width + 2 * g.padWidth
        var r = 0
        for c in 0..<g.channels {
            for i in 0..<g.kernelHeight {
                for j in 0..<g.kernelWidth {
                    windows[r] = Int32((c * h + i * g.dilationHeight) * w + j * g.dilationWidth)
                    r += 1
                }
            }
        }
        var q = 0
        for s in 0..<count {
            for oy in 0..<g.outputHeight {
                for ox in 0..<g.outputWidth {
                    positions[q] = Int32(s * g.channels * h * w + oy * g.strideHeight * w + ox * g.strideWidth)
                    q += 1
                }
            }
        }
    }

    /// Copies `count` (C, H, W) samples into (C, H + 2 padH, W + 2 padW) planes with zero margins.
    public static func pad(_ g: WindowGeometry, x: UnsafePointer<Float>, count: Int, into padded: UnsafeMutablePointer<Float>) {
        let h = g.height + 2 * g.padHeight, w = g.width + 2 * g.padWidth
        padded.update(repeating: 0, count: count * g.channels * h * w)
        for plane in 0..<count * g.channels {
            for y in 0..<g.height {
                copy(from: x + (plane * g.height + y) * g.width, to: padded + (plane * h + y + g.padHeight) * w + g.padWidth, count: g.width)
            }
        }
    }

    /// The adjoint of ``im2col(_:x:cols:ld:column:)``: adds each lowered gradient back onto the
    /// input position it came from, in (c, i, j, oy, ox) order. `dx` (C, H, W) must be zeroed by the caller.
    public static func col2im(
        _ g: WindowGeometry, cols: UnsafePointer<Float>, ld: Int, column: Int, dx: UnsafeMutablePointer<Float>
    ) {
        let ho = g.outputHeight, wo = g.outputWidth, sw = g.strideWidth
        for c in 0..<g.channels {
            let plane = dx + c * g.height * g.width
            for i in 0..<g.kernelHeight {
                let y0 = i * g.dilationHeight - g.padHeight
                let rowsIn = validRange(offset: y0, stride: g.strideHeight, size: g.height, outputs: ho)
                for j in 0..<g.kernelWidth {
                    let row = cols + ((c * g.kernelHeight + i) * g.kernelWidth + j) * ld + column
                    let x0 = j * g.dilationWidth - g.padWidth
                    let (lo, hi) = validRange(offset: x0, stride: sw, size: g.width, outputs: wo)
                    for oy in rowsIn.lo..<rowsIn.hi {
                        let values = row + oy * wo
                        let line = plane + (oy * g.strideHeight + y0) * g.width + x0
                        if sw == 1 {
                            add(values + lo, onto: line + lo, count: hi - lo)
                        } else {
                            for ox in lo..<hi { line[ox &* sw] += values[ox] }
                        }
                    }
                }
            }
        }
    }

    /// Max pooling of one sample (C, H, W) into (C, Ho, Wo); `argmax` gets each output's input
    /// index within the sample (the first maximum in window order, as PyTorch's; padding never
    /// wins; a NaN wins and propagates, as in PyTorch).
    public static func maxPool(_ g: WindowGeometry, x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>, argmax: UnsafeMutablePointer<Int32>) {
        let ho = g.outputHeight, wo = g.outputWidth, h = g.height, w = g.width
        if g.kernelHeight == 2 && g.kernelWidth == 2 && g.padHeight == 0 && g.padWidth == 0 {
            maxPool2x2(g, x: x, y: y, argmax: argmax)
            return
        }
        var o = 0
        for c in 0..<g.channels {
            let base = c * h * w
            for oy in 0..<ho {
                let y0 = oy * g.strideHeight - g.padHeight
                let iLo = max(0, -y0), iHi = min(g.kernelHeight, h - y0)
                for ox in 0..<wo {
                    let x0 = ox * g.strideWidth - g.padWidth
                    let jLo = max(0, -x0), jHi = min(g.kernelWidth, w - x0)
                    var best = -Float.infinity, at = -1
                    for i in iLo..<iHi {
                        let start = base + (y0 + i) * w + x0
                        for j in jLo..<jHi {
                            let v = x[start + j]
                            if at < 0 || !(v <= best) && !best.isNaN { (best, at) = (v, start + j) }
                        }
                    }
                    y[o] = best
                    argmax[o] = Int32(at)
                    o += 1
                }
            }
        }
    }

    /// `maxPool` for the common 2x2 window without padding: the same choices (first maximum in
    /// window order, NaN wins), unrolled.
    static func maxPool2x2(_ g: WindowGeometry, x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>, argmax: UnsafeMutablePointer<Int32>) {
        let ho = g.outputHeight, wo = g.outputWidth, w = g.width, sh = g.strideHeight, sw = g.strideWidth
        var o = 0
        for c in 0..<g.channels {
            let base = c * g.height * w
            for oy in 0..<ho {
                let top = base + oy * sh * w
                for ox in 0..<wo {
                    let first = top + ox * sw
                    var at = first, best = x[first]
                    @inline(__always) func consider(_ candidate: Int) {
                        let v = x[candidate]
                        if !(v <= best) && best == best { (best, at) = (v, candidate) }
                    }
                    consider(first + 1)
                    consider(first + w)
                    consider(first + w + 1)
                    y[o] = best
                    argmax[o] = Int32(truncatingIfNeeded: at)
                    o += 1
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
