/// Inverted (Bernoulli) dropout masks drawn from Philox.
///
/// Element (row n, unit u) of a mask is a pure function of the stream address
/// (seed, step, layer), the row's *global* position and the unit; never of the
/// shard or worker that computes it. Units are grouped in blocks of 32: unit
/// `u = 32 b + 8 j + i` reads word j of the Philox block with counter
/// `(8 b + i, position, step, purpose << 24 | layer)`. That layout lets one
/// 8-lane Philox evaluation produce 32 consecutive units.
///
/// A unit is kept when its 32-bit word is >= `threshold(p)`, so the keep
/// probability is 1 - p to within 2^-32; kept units are scaled by 1 / (1 - p).
public enum DropoutKernel {
    /// The word threshold under which a unit is dropped, for drop probability `p` in [0, 1).
    @inlinable
    public static func threshold(dropProbability p: Double) -> UInt32 {
        precondition(p >= 0 && p < 1, "dropout probability must be in [0, 1), got \(p)")
        return UInt32(min((p * 4_294_967_296).rounded(.down), 4_294_967_295))
    }

    /// Writes the mask multipliers (0 or 1/(1-p)) for N rows of C units.
    ///
    /// - Parameters:
    ///   - rows: N.
    ///   - columns: C.
    ///   - address: the stream; row n draws at position `firstPosition + n`, unit c from its word c.
    ///   - firstPosition: global position of row 0; row n has position `firstPosition + n`.
    ///   - p: the probability of zeroing a unit, in [0, 1).
    ///   - mask: (N, C).
    ///   - firstBlock: the block of 32 units each row starts at (0: unit 0): a row then covers
    ///     units `32 firstBlock ..< 32 firstBlock + C` of a longer one (attention's rows of keys).
    public static func fillMask(
        rows: Int, columns: Int, address: RandomAddress, firstPosition: Int,
        dropProbability p: Double, mask: UnsafeMutablePointer<Float>, firstBlock: Int = 0
    ) {
        let limit = SIMD8<UInt32>(repeating: threshold(dropProbability: p))
        let scale = SIMD8<Float>(repeating: Float(1 / (1 - p)))
        let zero = SIMD8<Float>(repeating: 0)
        let blocks = (columns + 31) / 32
        for n in 0..<rows {
            let row = mask + n * columns
            let position = UInt32(truncatingIfNeeded: firstPosition + n)
            for b in 0..<blocks {
                let words = Philox.block8(
                    first: UInt32(truncatingIfNeeded: (firstBlock + b) * 8), c1: position, c2: address.step,
                    c3: address.tag, key: address.key)
                let base = b * 32
                if base + 32 <= columns {
                    store8(zero.replacing(with: scale, where: words.0 .>= limit), row + base)
                    store8(zero.replacing(with: scale, where: words.1 .>= limit), row + base + 8)
                    store8(zero.replacing(with: scale, where: words.2 .>= limit), row + base + 16)
                    store8(zero.replacing(with: scale, where: words.3 .>= limit), row + base + 24)
                } else {
                    // The row's last, partial block (784 = 24 x 32 + 16): no array, no allocation.
                    for u in base..<columns {
                        let r = u - base
                        let word: UInt32
                        switch r / 8 {
                        case 0: word = words.0[r % 8]
                        case 1: word = words.1[r % 8]
                        case 2: word = words.2[r % 8]
                        default: word = words.3[r % 8]
                        }
                        row[u] = word >= limit[0] ? scale[0] : 0
                    }
                }
            }
        }
    }

    /// Plain-loop reference for `fillMask`, one scalar Philox block per unit.
    public static func fillMaskReference(
        rows: Int, columns: Int, address: RandomAddress, firstPosition: Int,
        dropProbability p: Double, mask: UnsafeMutablePointer<Float>, firstBlock: Int = 0
    ) {
        let limit = threshold(dropProbability: p)
        let scale = Float(1 / (1 - p))
        for n in 0..<rows {
            for u in 0..<columns {
                let b = u / 32, r = u % 32
                let counter = SIMD4<UInt32>(
                    UInt32(truncatingIfNeeded: (firstBlock + b) * 8 + r % 8), UInt32(truncatingIfNeeded: firstPosition + n), address.step, address.tag)
                let word = Philox.block(counter: counter, key: address.key)[r / 8]
                mask[n * columns + u] = word >= limit ? scale : 0
            }
        }
    }
}

extension DropoutKernel {
    /// Gaussian dropout multipliers `1 + σ z` with σ = √(p/(1-p)), z ~ N(0, 1): mean 1 and the
    /// variance of Bernoulli dropout at rate p. Unit u of a row draws a Box-Muller normal from
    /// words (2(u % 2), 2(u % 2) + 1) of the Philox block with counter (u / 2, position, step, tag).
    /// Scalar (Box-Muller needs log and cos per unit): a measured few ms per step more than Bernoulli.
    public static func fillGaussianMask(
        rows: Int, columns: Int, address: RandomAddress, firstPosition: Int,
        dropProbability p: Double, mask: UnsafeMutablePointer<Float>
    ) {
        precondition(p >= 0 && p < 1, "dropout probability must be in [0, 1), got \(p)")
        let sigma = (p / (1 - p)).squareRoot()
        for n in 0..<rows {
            let position = UInt32(truncatingIfNeeded: firstPosition + n)
            var u = 0
            while u < columns {
                let w = Philox.block(counter: SIMD4(UInt32(u / 2), position, address.step, address.tag), key: address.key)
                mask[n * columns + u] = Float(1 + sigma * boxMuller(w.x, w.y))
                if u + 1 < columns { mask[n * columns + u + 1] = Float(1 + sigma * boxMuller(w.z, w.w)) }
                u += 2
            }
        }
    }

    /// A standard normal from two 32-bit words (Box-Muller, 24 bits each).
    @inline(__always)
    static func boxMuller(_ a: UInt32, _ b: UInt32) -> Double {
        let u1 = (Double(a >> 8) + 1) * 0x1p-24  // (0, 1]: log is finite
        let u2 = Double(b >> 8) * 0x1p-24
        return (-2 * StepMath.log(u1)).squareRoot() * StepMath.cos(2 * Double.pi * u2)
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

@inline(__always)
@usableFromInline
func store8(_ v: SIMD8<Float>, _ p: UnsafeMutablePointer<Float>) {
    UnsafeMutableRawPointer(p).storeBytes(of: v, as: SIMD8<Float>.self)
}
