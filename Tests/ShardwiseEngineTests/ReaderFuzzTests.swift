import Foundation
import Shardwise
import XCTest

#if canImport(Glibc)
import Glibc
#endif

/// Random mutations of valid IDX and safetensors files under a fixed seed: the readers must
/// return or throw, never trap or hang, and never allocate much more than their input holds.
/// `make test` runs a few thousand iterations; `make fuzz` runs SHARDWISE_FUZZ_ITERATIONS.
final class ReaderFuzzTests: XCTestCase {
    var iterations: Int { Int(ProcessInfo.processInfo.environment["SHARDWISE_FUZZ_ITERATIONS"] ?? "") ?? 3_000 }

    /// SplitMix64: a fixed, seedable stream of mutations.
    struct Random {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9e37_79b9_7f4a_7c15
            var z = state
            z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
            z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
            return z ^ (z >> 31)
        }
        mutating func below(_ n: Int) -> Int { Int(next() % UInt64(max(n, 1))) }
    }

    /// Size fields get the values that break unchecked arithmetic.
    static let boundaryValues: [UInt64] = [0, 1, 0x7fff_ffff, 0x8000_0000, 0xffff_ffff, 1 << 62, 1 << 63, UInt64.max]

    /// One random mutation: flipped bytes, a size field set to a boundary value, a truncation,
    /// appended garbage, or a copied region.
    static func mutate(_ input: [UInt8], _ random: inout Random, sizeFields: [(offset: Int, width: Int, bigEndian: Bool)]) -> [UInt8] {
        var bytes = input
        switch random.below(5) {
        case 0:
            for _ in 0...random.below(4) where !bytes.isEmpty { bytes[random.below(bytes.count)] ^= UInt8(truncatingIfNeeded: random.next() | 1) }
        case 1:
            let field = sizeFields[random.below(sizeFields.count)]
            let value = random.below(3) == 0 ? random.next() : boundaryValues[random.below(boundaryValues.count)]
            for i in 0..<field.width where field.offset + i < bytes.count {
                let shift = field.bigEndian ? 8 * (field.width - 1 - i) : 8 * i
                bytes[field.offset + i] = UInt8(truncatingIfNeeded: value >> UInt64(shift))
            }
        case 2:
            bytes = Array(bytes.prefix(random.below(bytes.count + 1)))
        case 3:
            bytes += (0..<random.below(64)).map { _ in UInt8(truncatingIfNeeded: random.next()) }
        default:
            guard bytes.count > 2 else { break }
            let from = random.below(bytes.count), to = random.below(bytes.count), n = random.below(min(32, bytes.count - max(from, to)) + 1)
            bytes[to..<to + n] = bytes[from..<from + n]
        }
        return bytes
    }

    /// Peak resident memory of this process so far, in bytes.
    static func peakResident() -> Int {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        return usage.ru_maxrss * 1024
    }

    func testIDXReader() throws {
        let path = NSTemporaryDirectory() + "shardwise-fuzz-\(getpid()).idx"
        defer { unlink(path) }
        let images: [UInt8] = [0, 0, 8, 3, 0, 0, 0, 20, 0, 0, 0, 4, 0, 0, 0, 4] + (0..<320).map { UInt8($0 % 256) }
        let fields = [(4, 4, true), (8, 4, true), (12, 4, true), (0, 4, true)]
        var random = Random(state: 20_261_129)
        let before = Self.peakResident()
        var accepted = 0, slowest = 0.0
        for _ in 0..<iterations {
            var bytes = images
            for _ in 0...random.below(3) { bytes = Self.mutate(bytes, &random, sizeFields: fields) }
            try Data(bytes).write(to: URL(fileURLWithPath: path))
            let start = Date()
            do {
                let file = try IDXFile(path: path, expectedDimensions: 3)
                // What it accepted is exactly what the file holds.
                XCTAssertEqual(16 + file.bytes.count, bytes.count)
                accepted += 1
            } catch {
                XCTAssertFalse(error.description.isEmpty)
            }
            slowest = max(slowest, Date().timeIntervalSince(start))
        }
        XCTAssertLessThan(slowest, 1, "a mutated file took \(slowest) s")
        // Inputs are a few hundred bytes; a reader that allocates what a header claims would
        // touch gigabytes. Bound: a 4 MiB read buffer plus slack for the test's own allocations.
        XCTAssertLessThan(Self.peakResident() - before, 64 << 20, "peak memory grew by \(Self.peakResident() - before) bytes")
        XCTAssertGreaterThan(accepted, 0, "some mutations leave a valid file")
    }

    func testSafeTensorsDecoder() throws {
        let tensors = [
            SafeTensors.Tensor(name: "layers.0.weight", shape: [3, 4], values: (0..<12).map(Float.init)),
            SafeTensors.Tensor(name: "layers.0.bias", shape: [3], values: [1, 2, 3]),
        ]
        let valid = SafeTensors.encode(tensors, metadata: ["format": "pt"])
        let headerLength = Int(valid[0]) | Int(valid[1]) << 8
        var random = Random(state: 7)
        let before = Self.peakResident()
        var accepted = 0
        let numbers = ["-1", "0", "2147483648", "4294967296", "4611686018427387904", "9223372036854775807", "18446744073709551616", "1e308", "1.5", "-9223372036854775808"]
        for _ in 0..<iterations {
            var bytes = valid
            if random.below(2) == 0 {
                // Replace one number of the JSON header with a boundary value, keeping the length field true.
                var header = String(decoding: bytes[8..<8 + headerLength], as: UTF8.self)
                let digits = header.indices.filter { header[$0].isNumber }
                if let at = digits.isEmpty ? nil : digits[random.below(digits.count)] {
                    var end = at
                    while end < header.endIndex, header[end].isNumber { end = header.index(after: end) }
                    header.replaceSubrange(at..<end, with: numbers[random.below(numbers.count)])
                }
                let h = Array(header.utf8)
                bytes = (0..<8).map { UInt8(truncatingIfNeeded: UInt64(h.count) >> (8 * UInt64($0))) } + h + bytes[(8 + headerLength)...]
            } else {
                for _ in 0...random.below(3) { bytes = Self.mutate(bytes, &random, sizeFields: [(0, 8, false)]) }
            }
            do {
                let decoded = try SafeTensors.decode(bytes, path: "fuzz")
                XCTAssertLessThanOrEqual(decoded.tensors.reduce(0) { $0 + 4 * $1.values.count }, bytes.count)
                accepted += 1
            } catch {
                XCTAssert(error.description.hasPrefix("fuzz: "), error.description)
            }
        }
        XCTAssertLessThan(Self.peakResident() - before, 64 << 20, "peak memory grew by \(Self.peakResident() - before) bytes")
        XCTAssertGreaterThan(accepted, 0)
    }
}
