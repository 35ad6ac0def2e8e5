/// Philox4x32-10, the counter-based generator of Salmon, Moraes, Dror and Shaw,
/// "Parallel random numbers: as easy as 1, 2, 3" (SC'11), as in Random123.
///
/// A draw is a pure function of a 128-bit counter and a 64-bit key: there is
/// no state to advance, so any worker can compute any draw. Shardwise puts the
/// seed in the key and *what is randomized* in the counter (see `RandomAddress`).
public enum Philox {
    /// Philox4x32's round multipliers and key increments (Salmon et al. 2011).
    public static let multiplier0: UInt32 = 0xD251_1F53
    /// Philox4x32's round multipliers and key increments (Salmon et al. 2011).
    public static let multiplier1: UInt32 = 0xCD9E_8D57
    /// Philox4x32's round multipliers and key increments (Salmon et al. 2011).
    public static let weyl0: UInt32 = 0x9E37_79B9
    /// Philox4x32's round multipliers and key increments (Salmon et al. 2011).
    public static let weyl1: UInt32 = 0xBB67_AE85

    /// Ten rounds on one counter. Scalar reference and the generator for
    /// everything that is not on the training step's hot path.
    @inlinable
    public static func block(counter: SIMD4<UInt32>, key: SIMD2<UInt32>) -> SIMD4<UInt32> {
        var c = counter
        var k0 = key.x, k1 = key.y
        for round in 0..<10 {
            if round > 0 {
                k0 &+= weyl0
                k1 &+= weyl1
            }
            let p0 = UInt64(multiplier0) &* UInt64(c.x)
            let p1 = UInt64(multiplier1) &* UInt64(c.z)
            c = SIMD4(
                UInt32(truncatingIfNeeded: p1 >> 32) ^ c.y ^ k0,
                UInt32(truncatingIfNeeded: p1),
                UInt32(truncatingIfNeeded: p0 >> 32) ^ c.w ^ k1,
                UInt32(truncatingIfNeeded: p0))
        }
        return c
    }

    /// Eight counters at once that differ only in their first word
    /// (`first + 0 ..< first + 8`): the four output words, each as 8 lanes.
    ///
    /// The 32x32->64-bit products are written as 64-bit lane multiplies of
    /// zero-extended values, which compile to `pmuludq` even at baseline x86-64.
    @inlinable
    public static func block8(
        first: UInt32, c1: UInt32, c2: UInt32, c3: UInt32, key: SIMD2<UInt32>
    ) -> (SIMD8<UInt32>, SIMD8<UInt32>, SIMD8<UInt32>, SIMD8<UInt32>) {
        var x0 = SIMD8<UInt32>(repeating: first) &+ SIMD8(0, 1, 2, 3, 4, 5, 6, 7)
        var x1 = SIMD8<UInt32>(repeating: c1)
        var x2 = SIMD8<UInt32>(repeating: c2)
        var x3 = SIMD8<UInt32>(repeating: c3)
        var k0 = key.x, k1 = key.y
        let m0 = SIMD8<UInt64>(repeating: UInt64(multiplier0))
        let m1 = SIMD8<UInt64>(repeating: UInt64(multiplier1))
        for round in 0..<10 {
            if round > 0 {
                k0 &+= weyl0
                k1 &+= weyl1
            }
            let p0 = SIMD8<UInt64>(truncatingIfNeeded: x0) &* m0
            let p1 = SIMD8<UInt64>(truncatingIfNeeded: x2) &* m1
            let y0 = SIMD8<UInt32>(truncatingIfNeeded: p1 &>> 32) ^ x1 ^ SIMD8(repeating: k0)
            let y2 = SIMD8<UInt32>(truncatingIfNeeded: p0 &>> 32) ^ x3 ^ SIMD8(repeating: k1)
            x1 = SIMD8<UInt32>(truncatingIfNeeded: p1)
            x3 = SIMD8<UInt32>(truncatingIfNeeded: p0)
            x0 = y0
            x2 = y2
        }
        return (x0, x1, x2, x3)
    }
}

/// What a random draw is for: the last word of every counter holds it, so draws
/// for different purposes can never collide.
///
/// Values 1-127 are Shardwise's own; a layer written outside Shardwise takes one of
/// `RandomPurpose.user(0...127)`, so its draws never coincide with a built-in stream.
public struct RandomPurpose: RawRepresentable, Sendable, Hashable {
    /// Fits 8 bits: it shares the counter's last word with the layer index.
    public let rawValue: UInt32

    public init(rawValue: UInt32) {
        precondition(rawValue < 256, "random purpose \(rawValue) does not fit 8 bits")
        self.rawValue = rawValue
    }

    /// Parameter initialisation.
    public static let initialization = RandomPurpose(rawValue: 1)
    /// Each epoch's sample order.
    public static let shuffle = RandomPurpose(rawValue: 2)
    /// Dropout masks (Bernoulli and Gaussian).
    public static let dropout = RandomPurpose(rawValue: 3)
    /// The samples held out for validation.
    public static let validationSplit = RandomPurpose(rawValue: 4)
    /// Synthetic data for tests and benchmarks.
    public static let synthetic = RandomPurpose(rawValue: 5)
    /// DropConnect weight masks.
    public static let dropConnect = RandomPurpose(rawValue: 6)
    /// A sweep's trial seeds.
    public static let sweep = RandomPurpose(rawValue: 7)
    /// The samples of a single data file held out as its test set (`--test-fraction`).
    public static let testSplit = RandomPurpose(rawValue: 8)
    /// A training subset of a given size (a sweep's data-size axis).
    public static let trainSubset = RandomPurpose(rawValue: 9)
    /// The assignment of samples to cross-validation folds.
    public static let folds = RandomPurpose(rawValue: 10)
    /// Channel dropout masks (`Dropout2d`).
    public static let dropout2d = RandomPurpose(rawValue: 11)
    /// Attention-probability dropout masks (`CausalSelfAttention`).
    public static let attentionDropout = RandomPurpose(rawValue: 12)
    /// The tokens `shardwise generate` samples.
    public static let generation = RandomPurpose(rawValue: 13)

    /// A purpose reserved for layers and code outside Shardwise: `n` in 0...127.
    public static func user(_ n: UInt8) -> RandomPurpose {
        precondition(n < 128, "user random purpose \(n), expected 0...127")
        return RandomPurpose(rawValue: 128 + UInt32(n))
    }
}

/// The address of a stream of draws: seed (the key) and what the draws randomize.
///
/// Counter layout: `(index, position, step, purpose << 24 | layer)`, where
/// `index` runs over the elements drawn (units, weights), `position` is a sample's
/// position in the global batch or in the epoch, `step` the epoch or global step.
public struct RandomAddress: Sendable, Hashable {
    /// The Philox key: the seed.
    public var key: SIMD2<UInt32>
    /// Counter word 1: a sample's position.
    public var position: UInt32
    /// Counter word 2: the step or epoch.
    public var step: UInt32
    /// Counter word 3: purpose << 24 | layer.
    public var tag: UInt32

    /// The stream for `purpose` at `step`, `position` and `layer` (below 2^24), keyed by `seed`.
    public init(seed: UInt64, purpose: RandomPurpose, step: UInt32 = 0, position: UInt32 = 0, layer: UInt32 = 0) {
        precondition(layer < 1 << 24, "layer index \(layer) does not fit the counter")
        key = SIMD2(UInt32(truncatingIfNeeded: seed), UInt32(truncatingIfNeeded: seed >> 32))
        self.position = position
        self.step = step
        tag = purpose.rawValue << 24 | layer
    }

    /// Four 32-bit words for block `index` of this stream.
    @inlinable
    public func block(_ index: UInt32) -> SIMD4<UInt32> {
        Philox.block(counter: SIMD4(index, position, step, tag), key: key)
    }

    /// The `i`-th 32-bit word of this stream.
    @inlinable
    public func word(_ i: Int) -> UInt32 {
        block(UInt32(truncatingIfNeeded: i / 4))[i % 4]
    }

    /// A float uniform in [0, 1) with 24 bits, from word `i`.
    @inlinable
    public func uniform(_ i: Int) -> Float {
        Float(word(i) >> 8) * 0x1p-24
    }

    /// An integer uniform in `0..<bound` from the 64 bits of words 2i and 2i+1
    /// (multiply-shift; the bias is below bound / 2^64).
    @inlinable
    public func integer(_ i: Int, below bound: Int) -> Int {
        precondition(bound > 0)
        let b = block(UInt32(truncatingIfNeeded: i / 2))
        let bits = i % 2 == 0 ? UInt64(b.x) << 32 | UInt64(b.y) : UInt64(b.z) << 32 | UInt64(b.w)
        return Int(bits.multipliedFullWidth(by: UInt64(bound)).high)
    }
}

extension RandomAddress {
    /// A uniformly random permutation of `0..<count` (Fisher-Yates; swap i draws
    /// `integer(i, below: i + 1)` of this stream): the same for a stream, whatever the thread.
    public func permutation(_ count: Int) -> [Int32] {
        var order = [Int32](repeating: 0, count: count)
        shuffle(&order)
        return order
    }

    /// Overwrites `order` with a permutation of `0..<order.count`, without allocating.
    public func shuffle(_ order: inout [Int32]) {
        for i in 0..<order.count { order[i] = Int32(i) }
        for i in stride(from: order.count - 1, to: 0, by: -1) {
            order.swapAt(i, integer(i, below: i + 1))
        }
    }
}
