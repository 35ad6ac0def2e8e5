#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A TensorBoard event file (`events.out.tfevents.<time>.<host>`): TFRecord framing (length,
/// masked CRC-32C of the length, data, masked CRC-32C of the data) around `Event` protocol
/// buffers carrying scalars, histograms and text summaries, as TensorFlow's `EventFileWriter`
/// writes them. Events are buffered in memory and appended to the file by `flush()`.
public final class TensorBoardWriter: @unchecked Sendable {
    /// The event file.
    public let path: String
    private var pending: [UInt8] = []
    private let descriptor: Int32

    /// Creates `folder/events.out.tfevents.<seconds>.<host>` and writes its version event.
    public init(folder: String, wallTime: Double = TensorBoardWriter.now()) throws(FileWriteError) {
        var name = [CChar](repeating: 0, count: 256)
        gethostname(&name, 255)
        let host = String(decoding: name.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        path = "\(folder)/events.out.tfevents.\(Int(wallTime)).\(host.isEmpty ? "localhost" : host)"
        descriptor = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else { throw FileWriteError(path: path, reason: "open: \(String(cString: strerror(errno)))") }
        append(Protobuf { e in
            e.double(1, wallTime)
            e.string(3, "brain.Event:2")
        }.bytes)
        try flush()
    }

    deinit { close(descriptor) }

    /// Seconds since 1970, as events record them.
    public static func now() -> Double {
        var t = timespec()
        clock_gettime(CLOCK_REALTIME, &t)
        return Double(t.tv_sec) + Double(t.tv_nsec) / 1e9
    }

    /// A scalar at `step`.
    public func scalar(_ tag: String, _ value: Double, step: Int, wallTime: Double = TensorBoardWriter.now()) {
        event(step: step, wallTime: wallTime) { v in
            v.string(1, tag)
            v.float(2, Float(value))
        }
    }

    /// A histogram of `values` at `step`: TensorFlow's default bucket edges (powers of 1.1 from
    /// 1e-12 to 1e20, mirrored for negatives, with 0 between), empty buckets left out.
    public func histogram(_ tag: String, _ values: UnsafeBufferPointer<Float>, step: Int, wallTime: Double = TensorBoardWriter.now()) {
        let h = Self.buckets(values)
        event(step: step, wallTime: wallTime) { v in
            v.string(1, tag)
            v.message(5) { m in
                m.double(1, values.isEmpty ? 0 : h.low)
                m.double(2, values.isEmpty ? 0 : h.high)
                m.double(3, Double(values.count))
                m.double(4, h.sum)
                m.double(5, h.squares)
                m.packedDoubles(6, h.limits)
                m.packedDoubles(7, h.counts)
            }
        }
    }

    /// The histogram of `values`: each value counted in the bucket (previous edge, edge] of
    /// `edges`, the non-empty buckets' upper edges and counts in edge order, and the extremes,
    /// sum and sum of squares TensorBoard shows.
    static func buckets(_ values: UnsafeBufferPointer<Float>) -> (limits: [Double], counts: [Double], low: Double, high: Double, sum: Double, squares: Double) {
        let edges = Self.edges
        var counts = [Double](repeating: 0, count: edges.count)
        var low = Double.infinity, high = -Double.infinity, sum = 0.0, squares = 0.0
        for x in values {
            let v = Double(x)
            low = min(low, v)
            high = max(high, v)
            sum += v
            squares += v * v
            // The first edge >= v (binary search).
            var lo = 0, hi = edges.count - 1
            while lo < hi {
                let mid = (lo + hi) / 2
                if edges[mid] < v { lo = mid + 1 } else { hi = mid }
            }
            counts[lo] += 1
        }
        var limits: [Double] = [], nonEmpty: [Double] = []
        for (i, c) in counts.enumerated() where c > 0 {
            limits.append(edges[i])
            nonEmpty.append(c)
        }
        return (limits, nonEmpty, low, high, sum, squares)
    }

    /// A text summary (rendered as Markdown by TensorBoard's text plugin) at `step`.
    public func text(_ tag: String, _ markdown: String, step: Int, wallTime: Double = TensorBoardWriter.now()) {
        event(step: step, wallTime: wallTime) { v in
            v.string(1, tag)
            v.message(9) { m in m.message(1) { p in p.string(1, "text") } }
            v.message(8) { t in
                t.int(1, 7)  // DT_STRING
                t.message(2) { _ in }  // a scalar: no dimensions
                t.data(8, Array(markdown.utf8))
            }
        }
    }

    /// Appends the buffered events to the file.
    public func flush() throws(FileWriteError) {
        var written = 0
        while written < pending.count {
            let n = pending.withUnsafeBytes { write(descriptor, $0.baseAddress! + written, $0.count - written) }
            if n < 0 {
                if errno == EINTR { continue }
                throw FileWriteError(path: path, reason: "write: \(String(cString: strerror(errno)))")
            }
            written += n
        }
        pending.removeAll(keepingCapacity: true)
    }

    func event(step: Int, wallTime: Double, _ value: (inout Protobuf) -> Void) {
        append(Protobuf { e in
            e.double(1, wallTime)
            e.int(2, step)
            e.message(5) { s in s.message(1, value) }
        }.bytes)
    }

    /// One TFRecord: length, masked CRC-32C of the length, data, masked CRC-32C of the data.
    func append(_ data: [UInt8]) {
        let length = withUnsafeBytes(of: UInt64(data.count).littleEndian) { Array($0) }
        pending += length
        withUnsafeBytes(of: Self.maskedCRC(length).littleEndian) { pending += $0 }
        pending += data
        withUnsafeBytes(of: Self.maskedCRC(data).littleEndian) { pending += $0 }
    }

    /// CRC-32C (Castagnoli), rotated and offset as TFRecord masks it.
    public static func maskedCRC(_ bytes: [UInt8]) -> UInt32 {
        let crc = crc32c(bytes)
        return ((crc >> 15) | (crc << 17)) &+ 0xA282_EAD8
    }

    /// CRC-32C of `bytes` (reflected polynomial 0x82F63B78).
    public static func crc32c(_ bytes: [UInt8]) -> UInt32 {
        var crc: UInt32 = 0xFFFF_FFFF
        for b in bytes { crc = table[Int((crc ^ UInt32(b)) & 0xFF)] ^ (crc >> 8) }
        return ~crc
    }

    static let table: [UInt32] = (0..<256).map { i in
        var c = UInt32(i)
        for _ in 0..<8 { c = c & 1 != 0 ? (c >> 1) ^ 0x82F6_3B78 : c >> 1 }
        return c
    }

    /// TensorFlow's default histogram bucket edges.
    static let edges: [Double] = {
        var positive: [Double] = []
        var v = 1e-12
        while v < 1e20 {
            positive.append(v)
            v *= 1.1
        }
        return positive.reversed().map { -$0 } + [0] + positive + [Double.greatestFiniteMagnitude]
    }()
}
