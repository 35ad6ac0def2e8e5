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
        // Values land in TensorFlow's buckets: the first edge at or above each value.
        XCTAssertEqual(TensorBoardWriter.edges.first { $0 >= 0 }, 0)
        XCTAssertEqual(TensorBoardWriter.edges.count, 2 * 774 + 2)
    }
}
