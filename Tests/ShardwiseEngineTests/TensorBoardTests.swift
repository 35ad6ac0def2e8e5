import Foundation
import XCTest

@testable import ShardwiseIO

/// The event file's bytes against TensorBoard's own protobuf classes and record writer
/// (the expected bytes were produced by `tensorboard.compat.proto` and `RecordWriter`).
final class TensorBoardTests: XCTestCase {
    func hex(_ bytes: [UInt8]) -> String { bytes.map { String(format: "%02x", $0) }.joined() }

    func testCRC32C() {
        XCTAssertEqual(TensorBoardWriter.crc32c(Array("123456789".utf8)), 0xE306_9283)
        XCTAssertEqual(TensorBoardWriter.crc32c([]), 0)
    }

    func testScalarRecordMatchesTensorBoardsWriter() throws {
        let folder = NSTemporaryDirectory() + "shardwise-tb-\(getpid())"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let writer = try TensorBoardWriter(folder: folder, wallTime: 1.5)
        writer.scalar("loss", 0.25, step: 3, wallTime: 1.5)
        try writer.flush()
        let bytes = Array(try Data(contentsOf: URL(fileURLWithPath: writer.path)))
        // The version event first, then the scalar record exactly as TensorBoard writes it.
        XCTAssert(hex(bytes).hasSuffix("1a00000000000000129bd82d09000000000000f83f10032a0d0a0b0a046c6f7373150000803ed054b255"), hex(bytes))
        XCTAssert(String(decoding: bytes, as: UTF8.self).contains("brain.Event:2"))
    }

    func testHistogramMessage() {
        let h = Protobuf { h in
            h.double(1, -1)
            h.double(2, 2)
            h.double(3, 3)
            h.double(4, 1.5)
            h.double(5, 5.25)
            h.packedDoubles(6, [-1, 0.5, 2])
            h.packedDoubles(7, [1, 1, 1])
        }
        XCTAssertEqual(hex(h.bytes), "09000000000000f0bf11000000000000004019000000000000084021000000000000f83f2900000000000015403218000000000000f0bf000000000000e03f00000000000000403a18000000000000f03f000000000000f03f000000000000f03f")
    }

    /// The bucketing code: each value is counted in the bucket (previous edge, edge] of
    /// TensorFlow's edges, the non-empty buckets come in edge order, and the extremes, sum and
    /// squares are those of the values.
    func testHistogramBuckets() {
        let values: [Float] = [0.5, -1, 0, 2, 0, 1e-13, .greatestFiniteMagnitude, -.greatestFiniteMagnitude, 0.5, 2.0000002]
        let h = values.withUnsafeBufferPointer { TensorBoardWriter.buckets($0) }
        XCTAssertEqual(h.counts.reduce(0, +), Double(values.count))
        XCTAssertEqual(h.limits, h.limits.sorted())
        XCTAssertEqual(Set(h.limits).count, h.limits.count, "one entry a bucket")
        func bucket(of v: Float) -> (limit: Double, count: Double)? {
            let i = h.limits.firstIndex { $0 >= Double(v) }
            return i.map { (h.limits[$0], h.counts[$0]) }
        }
        // Zero has its own edge; a value below the first positive edge (1e-12) goes there; one
        // above 1e20 goes to the last edge, DBL_MAX; the most negative to the first edge.
        XCTAssertEqual(bucket(of: 0)?.limit, 0)
        XCTAssertEqual(bucket(of: 0)?.count, 2)
        XCTAssertEqual(bucket(of: 1e-13)?.limit, 1e-12)
        XCTAssertEqual(h.limits.last, .greatestFiniteMagnitude)
        XCTAssertEqual(h.limits.first, TensorBoardWriter.edges.first)
        XCTAssertEqual(TensorBoardWriter.edges.first!, -TensorBoardWriter.edges[TensorBoardWriter.edges.count - 2])
        // Values between: the edge at or above, with the previous edge (a factor 1.1 down) below.
        for v: Float in [0.5, 2, -1] {
            let limit = bucket(of: v)!.limit
            let below = TensorBoardWriter.edges[TensorBoardWriter.edges.firstIndex(of: limit)! - 1]
            XCTAssert(below < Double(v) && Double(v) <= limit, "\(v): (\(below), \(limit)]")
            XCTAssertEqual(abs(limit) / abs(below), v > 0 ? 1.1 : 1 / 1.1, accuracy: 1e-9)
        }
        XCTAssertEqual(bucket(of: 0.5)?.count, 2)
        // 2 and the next float up share a bucket only when no edge lies between them.
        XCTAssertEqual(bucket(of: 2)!.limit == bucket(of: 2.0000002)!.limit ? 2 : 1, bucket(of: 2)!.count)
        XCTAssertEqual(h.counts.count, 7 + (bucket(of: 2)!.count == 2 ? 0 : 1))
        XCTAssertEqual(h.low, -Double(Float.greatestFiniteMagnitude))
        XCTAssertEqual(h.high, Double(Float.greatestFiniteMagnitude))
        XCTAssertEqual(h.sum, values.map(Double.init).reduce(0, +))
        XCTAssertEqual(h.squares, values.map { Double($0) * Double($0) }.reduce(0, +))
    }
}
