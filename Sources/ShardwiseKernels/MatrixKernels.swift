import CShardwiseBLAS

/// Which code computes the matrix products, and with them the transcendental functions the
/// training step uses.
///
/// `blas`: the BLAS library (fast; its sums' order depends on the CPU type and the library
/// build), and the C library's `exp`, `log`, `cos`. `portable`: Shardwise's own kernels, whose
/// every product element is one fused multiply-add chain in k order on any instruction set,
/// and ``PortableMath``'s fixed polynomials: the same bits on any IEEE-754 CPU.
public enum MatrixKernels: String, Sendable, Codable, CaseIterable {
    case blas, portable

    /// The kernels in force in this process (`blas` until ``select(_:isa:)``).
    public static var current: MatrixKernels { sw_portable_kernels_in_use() != 0 ? .portable : .blas }

    /// The instruction set the portable kernels run: "scalar", "avx2" or "avx512".
    public static var portableISA: String { String(cString: sw_portable_isa()) }

    /// Instruction sets this CPU runs, slowest first.
    public static var availableISAs: [String] { ["scalar", "avx2", "avx512"].filter { sw_portable_isa_available($0) != 0 } }

    /// Chooses the kernels for this process; call before training. With `isa` (or the
    /// `SHARDWISE_KERNEL_ISA` environment variable), the portable kernels run that instruction
    /// set instead of the fastest: for tests; every set gives the same bits.
    public static func select(_ kernels: MatrixKernels, isa: String? = nil) throws(KernelError) {
        let forced = isa ?? BLAS.environment("SHARDWISE_KERNEL_ISA")
        if let forced {
            guard sw_portable_select(forced) == 0 else {
                throw KernelError(description: "SHARDWISE_KERNEL_ISA=\(forced): not an instruction set of this CPU; it runs \(availableISAs.joined(separator: ", "))")
            }
        }
        if kernels == .blas {
            do { _ = try BLAS.load() } catch {
                throw KernelError(description: "the BLAS kernels need a BLAS library, and \(error.description) (the default portable kernels need none)")
            }
        }
        sw_use_portable_kernels(kernels == .portable ? 1 : 0)
    }

    /// The portable kernels when no BLAS library loads (inference on a machine without one:
    /// eval, predict, export); otherwise the kernels stay as they are.
    public static func fallBackWithoutBLAS() {
        if !BLAS.isLoaded { sw_use_portable_kernels(1) }
    }

    /// "portable (avx512)" or "blas".
    public static var description: String { current == .portable ? "portable (\(portableISA))" : "blas" }
}

/// Kernels that cannot run as asked.
public struct KernelError: Error, CustomStringConvertible {
    public var description: String
}

/// Double-precision `exp`, `log` and `cos` from fixed sequences of IEEE operations (fused
/// multiply-adds, divisions, exact scalings), so that their results are the same on every
/// machine: unlike the C library's, which change between library versions and CPUs. About an
/// ulp from the correctly rounded results, which is all the training step needs.
public enum PortableMath {
    static let ln2Hi = 6.93147180369123816490e-01, ln2Lo = 1.90821492927058770002e-10

    /// e^x.
    public static func exp(_ x: Double) -> Double {
        if x.isNaN { return x }
        if x > 709.78 { return .infinity }
        if x < -745.2 { return 0 }
        // x = k ln2 + r, |r| <= ln2 / 2, ln 2 in two parts so that r is exact to ~2^-60.
        let k = (x * 1.4426950408889634).rounded(.toNearestOrEven)
        let r = k.multipliedAdding(-ln2Lo, k.multipliedAdding(-ln2Hi, x))
        // e^r by its Taylor series to r^13/13! (|r| < 0.35: the remainder is below 2^-60).
        var p = 1.0 / 6_227_020_800
        for d in [479_001_600.0, 39_916_800, 3_628_800, 362_880, 40_320, 5_040, 720, 120, 24, 6, 2, 1, 1] {
            p = p.multipliedAdding(r, 1 / d)
        }
        return scale(p, Int(k))
    }

    /// e^x for x ≤ 0 (a softmax's shifted scores), from plain multiplies and adds (no fused
    /// multiply-add, which costs a library call on CPUs whose baseline lacks it): x = k ln 2 + r
    /// with ln 2 in two parts, e^r by Horner's rule to r^12/12!; about 1e-15 relative, the
    /// same bits on any CPU. Below -745, 0; NaN and positive x as ``exp(_:)``.
    @inline(__always)
    public static func expNonPositive(_ x: Double) -> Double {
        guard x >= -745.2 else { return x.isNaN ? x : 0 }
        guard x <= 0 else { return exp(x) }
        let k = (x * 1.4426950408889634).rounded(.toNearestOrEven)
        let r = (x - k * ln2Hi) - k * ln2Lo
        var p = 1.0 / 479_001_600
        p = p * r + 1.0 / 39_916_800
        p = p * r + 1.0 / 3_628_800
        p = p * r + 1.0 / 362_880
        p = p * r + 1.0 / 40_320
        p = p * r + 1.0 / 5_040
        p = p * r + 1.0 / 720
        p = p * r + 1.0 / 120
        p = p * r + 1.0 / 24
        p = p * r + 1.0 / 6
        p = p * r + 0.5
        p = p * r + 1
        p = p * r + 1
        return scale(p, Int(k))
    }

    /// `out[j] = Float(expNonPositive(Double(row[j] * scale - maximum)))` for j < count (a
    /// softmax's shifted scores), on the portable kernels' instruction set, the same bits on each.
    /// `out` may be `row`.
    @inline(__always)
    public static func expShifted(count: Int, _ row: UnsafePointer<Float>, scale: Float, maximum: Float, into out: UnsafeMutablePointer<Float>) {
        sw_portable_exp_shifted(Int32(count), row, scale, maximum, out, expFallback)
    }

    /// `out[j] = exp(x[j])` for j < count on the portable kernels' instruction set, the same bits on each.
    @inline(__always)
    public static func exp(count: Int, _ x: UnsafePointer<Double>, into out: UnsafeMutablePointer<Double>) {
        sw_portable_exp(Int32(count), x, out, expFunction)
    }

    /// ``exp(_:)`` for C.
    static let expFunction: @convention(c) (Double) -> Double = { exp($0) }

    /// ``expNonPositive(_:)`` for C.
    static let expFallback: @convention(c) (Double) -> Double = { expNonPositive($0) }

    /// The natural logarithm (x > 0; NaN below 0, -infinity at 0).
    public static func log(_ x: Double) -> Double {
        if x.isNaN || x < 0 { return .nan }
        if x == 0 { return -.infinity }
        if x == .infinity { return x }
        var m = x.significand, e = Double(x.exponent)  // x = m 2^e, m in [1, 2)
        if m > 1.4142135623730951 { m /= 2; e += 1 }
        // log m = 2 atanh(f), f = (m - 1) / (m + 1), |f| < 0.172: the series to f^27.
        let f = (m - 1) / (m + 1), f2 = f * f
        var s = 1.0 / 27
        for odd in stride(from: 25.0, through: 1, by: -2) { s = s.multipliedAdding(f2, 1 / odd) }
        return e.multipliedAdding(ln2Lo, e.multipliedAdding(ln2Hi, 2 * f * s))
    }

    /// The cosine (|x| up to a few thousand radians keeps full accuracy).
    public static func cos(_ x: Double) -> Double {
        // x = q pi/2 + r, |r| <= pi/4, pi/2 in three parts.
        let q = (x * 0.6366197723675814).rounded(.toNearestOrEven)
        var r = q.multipliedAdding(-1.5707963267341256e+00, x)
        r = q.multipliedAdding(-6.0771005065061922e-11, r)
        r = q.multipliedAdding(-2.0222662487959506e-21, r)
        let r2 = r * r
        var c = -1.0 / 6_402_373_705_728_000  // cos r: Taylor to r^18
        var s = 1.0 / 355_687_428_096_000  // sin r / r: to r^16 (over 17!)
        for d in [20_922_789_888_000.0, 87_178_291_200, 479_001_600, 3_628_800, 40_320, 720, 24, 2, 1].enumerated() {
            c = c.multipliedAdding(r2, d.offset % 2 == 0 ? 1 / d.element : -1 / d.element)
        }
        for d in [1_307_674_368_000.0, 6_227_020_800, 39_916_800, 362_880, 5_040, 120, 6, 1].enumerated() {
            s = s.multipliedAdding(r2, d.offset % 2 == 0 ? -1 / d.element : 1 / d.element)
        }
        s *= r
        switch Int(q.truncatingRemainder(dividingBy: 4) + 4) % 4 {
        case 0: return c
        case 1: return -s
        case 2: return -c
        default: return s
        }
    }

    /// x 2^k, exactly (through subnormals).
    static func scale(_ x: Double, _ k: Int) -> Double {
        if k > 1023 { return scale(x * 0x1p1023, k - 1023) }
        if k < -1022 { return scale(x * 0x1p-1022, k + 1022) }
        return x * Double(sign: .plus, exponent: k, significand: 1)
    }
}

extension Double {
    /// `self * a + b` with one rounding (a fused multiply-add).
    @inline(__always)
    func multipliedAdding(_ a: Double, _ b: Double) -> Double { b.addingProduct(self, a) }
}

/// The transcendental functions of the training step (softmax, Gaussian noise, learning-rate
/// schedules): the C library's with the BLAS kernels, as before; ``PortableMath``'s with the
/// portable kernels, so that those runs give the same bits on any machine.
public enum StepMath {
    @inline(__always) static var portable: Bool { sw_portable_kernels_in_use() != 0 }

    public static func exp(_ x: Double) -> Double { portable ? PortableMath.exp(x) : Glibc.exp(x) }
    public static func log(_ x: Double) -> Double { portable ? PortableMath.log(x) : Glibc.log(x) }
    public static func cos(_ x: Double) -> Double { portable ? PortableMath.cos(x) : Glibc.cos(x) }
    /// x^y for x > 0 (portable: e^(y log x)).
    public static func pow(_ x: Double, _ y: Double) -> Double {
        guard portable else { return Glibc.pow(x, y) }
        return PortableMath.exp(y * PortableMath.log(x))
    }
}

#if canImport(Glibc)
import Glibc
#endif
