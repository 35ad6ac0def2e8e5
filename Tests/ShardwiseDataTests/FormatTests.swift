import Foundation
import XCTest

@testable import ShardwiseData

/// The own-data readers against known bytes: NPY headers of every version, every element type,
/// CSV quoting, line ends and numbers, NPZ members, preprocessing statistics.
final class FormatTests: XCTestCase {
    func table(_ bytes: [UInt8]) -> TableBytes {
        let storage = TableBytes(allocating: bytes.count)
        bytes.withUnsafeBytes { storage.mutableBase!.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        return storage
    }

    func testNPYHeadersOfEveryVersion() throws {
        for version: UInt8 in [1, 2, 3] {
            let dict = Array("{'descr': '<i2', 'fortran_order': False, 'shape': (3, 2, 2), }".utf8) + [0x0A]
            let length = version == 1 ? [UInt8(dict.count), 0] : [UInt8(dict.count), 0, 0, 0]
            let values: [Int16] = (0..<12).map { Int16($0) - 6 }
            let bytes = NPY.magic + [version, 0] + length + dict + values.withUnsafeBytes { Array($0) }
            let storage = table(bytes)
            let header = try NPY.header(storage.base, available: storage.count, path: "v\(version)")
            XCTAssertEqual(header.type, .int16)
            XCTAssertEqual(header.shape, [3, 2, 2])
            let t = try Table(header, bytes: storage, start: 0, path: "v\(version)")
            XCTAssertEqual(t.rows, 3)
            XCTAssertEqual(t.columns, 4)  // images of any shape flatten to rows
            XCTAssertEqual(t.double(row: 2, column: 3), 5)
        }
        // The writer's header reads back, 64-byte aligned.
        let written = NPY.encodeHeader(type: .float64, shape: [7])
        XCTAssertEqual(written.count % 64, 0)
        let storage = table(written + [UInt8](repeating: 0, count: 56))
        XCTAssertEqual(try NPY.header(storage.base, available: storage.count, path: "w").shape, [7])
    }

    func testEveryElementTypeConverts() throws {
        func convert<T>(_ values: [T], _ type: ElementType) throws -> [Float] {
            let storage = table(values.withUnsafeBytes { Array($0) })
            let t = try Table(rows: 1, columns: values.count, type: type, bytes: storage, offset: 0, path: "t")
            var out = [Float](repeating: .nan, count: values.count)
            out.withUnsafeMutableBufferPointer { t.convert(row: 0, into: $0.baseAddress!) }
            return out
        }
        XCTAssertEqual(try convert([UInt8(0), 255], .uint8), [0, 255])
        XCTAssertEqual(try convert([Int8(-128), 127], .int8), [-128, 127])
        XCTAssertEqual(try convert([UInt16(65535)], .uint16), [65535])
        XCTAssertEqual(try convert([Int32(-7), 1 << 20], .int32), [-7, 1_048_576])
        XCTAssertEqual(try convert([Int64(-3), 1 << 40], .int64), [-3, 1_099_511_627_776])
        XCTAssertEqual(try convert([0.1, -2.5e300], .float64), [Float(0.1), -.infinity])
        // float16: 1.0, -2.0, the smallest subnormal, 65504, +inf.
        XCTAssertEqual(try convert([UInt16(0x3C00), 0xC000, 0x0001, 0x7BFF, 0x7C00], .float16), [1, -2, 0x1p-24, 65504, .infinity])
        XCTAssertEqual(try convert([UInt16(0x3F80), 0xC040], .bfloat16), [1, -3])
        // Division by the preprocessing's divisor, as MNIST's images are scaled.
        let storage = table([0, 51, 255])
        let t = try Table(rows: 1, columns: 3, type: .uint8, bytes: storage, offset: 0, path: "t")
        var out = [Float](repeating: 0, count: 3)
        out.withUnsafeMutableBufferPointer { t.convert(row: 0, divisor: 255, into: $0.baseAddress!) }
        XCTAssertEqual(out, [0, Float(51) / 255, 1])
    }

    func parse(_ text: String, label: String? = nil, ignore: [String] = []) throws -> (CSV.Layout, CSV.Part) {
        let bytes = Array(text.utf8)
        return try bytes.withUnsafeBytes { raw in
            let layout = try CSV.layout(raw, path: "t.csv", labelColumn: label, ignoredColumns: ignore)
            let ranges = CSV.ranges(raw, layout: layout, count: 4)
            var part = CSV.Part()
            for range in ranges {
                let p = CSV.parse(raw, range: range, layout: layout)
                XCTAssertNil(p.problem?.message)
                part.features += p.features
                part.targets += p.targets
                part.lines += p.lines
            }
            return (layout, part)
        }
    }

    func testCSVQuotesLineEndsAndColumns() throws {
        let text = "\u{FEFF}\"id\",x,\"y, quoted\",label\r\n\r\n1,\"2.5\", 3 ,0\r\n  \r\n4,-5e-1,\"+6\",1\n"
        let (layout, part) = try parse(text, ignore: ["id"])
        XCTAssertEqual(layout.names, ["id", "x", "y, quoted", "label"])
        XCTAssertEqual(layout.features, [1, 2])
        XCTAssertTrue(layout.quoted)
        XCTAssertEqual(part.features, [2.5, 3, -0.5, 6])
        XCTAssertEqual(part.targets, [0, 1])
        // A quoted field may hold line breaks (a note column, ignored); later lines count them.
        let notes = "note,x,label\n\"two\nlines, here\",1,0\n\"one\",2,1\n"
        let (_, noted) = try parse(notes, ignore: ["note"])
        XCTAssertEqual(noted.features, [1, 2])
        XCTAssertEqual(noted.targets, [0, 1])
        XCTAssertEqual(noted.lines, 3)
        let (chosen, byName) = try parse("a,b,c\n1,2,3\n", label: "a")
        XCTAssertEqual(chosen.target, 0)
        XCTAssertEqual(byName.features, [2, 3])
        XCTAssertEqual(byName.targets, [1])
    }

    /// The fast path and strtod agree on every number: correctly rounded doubles.
    func testCSVNumbersAreCorrectlyRounded() throws {
        var state: UInt64 = 9
        var cells: [String] = []
        for i in 0..<20_000 {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            let v = Double(bitPattern: (state >> 2) | 0x3000_0000_0000_0000) * (i % 2 == 0 ? 1 : -1)
            cells.append([String(v), String(format: "%.6g", v), String(format: "%.17e", v), "\(i)", "0.\(i)"][i % 5])
        }
        let text = "v,t\n" + cells.map { "\($0),0" }.joined(separator: "\n") + "\n"
        let (_, part) = try parse(text)
        for (cell, value) in zip(cells, part.features) {
            XCTAssertEqual(value, Float(strtod(cell, nil)), cell)
        }
        XCTAssertEqual(part.features.count, cells.count)
        // Doubles, not floats, are parsed: the fast path's result is strtod's.
        for cell in ["0.1", "123456789012345678", "1e22", "1e23", "9007199254740993", "2.2250738585072014e-308"] {
            XCTAssertEqual(Array(cell.utf8).withUnsafeBytes { CSV.number($0, 0..<$0.count) }, strtod(cell, nil), cell)
        }
    }

    func testCSVRefusals() throws {
        for (text, message) in [
            ("a,b\n1,2\n3\n", "has 1 fields, the header has 2"),
            ("a,b\n1,x\n", "'x' is not a number"),
            ("a,b\n1,\n", "'' is an empty cell"),
            ("a,b\n1,inf\n", "'inf' is not a finite number"),
        ] {
            let bytes = Array(text.utf8)
            let problem = try bytes.withUnsafeBytes { raw -> (line: Int, message: String)? in
                let layout = try CSV.layout(raw, path: "t.csv", labelColumn: nil, ignoredColumns: [])
                return CSV.parse(raw, range: layout.dataStart..<raw.count, layout: layout).problem
            }
            XCTAssert(problem?.message.contains(message) == true, "\(text): \(String(describing: problem))")
        }
        // Hexadecimal is strtod's, not a data set's: refused as not a number.
        for cell in ["0x1A", "0X10", "0x1p3", "-0x2"] {
            XCTAssertNil(Array(cell.utf8).withUnsafeBytes { CSV.number($0, 0..<$0.count) }, cell)
        }
        // A quote opened and never closed is named on the line it opened, not read to the end.
        let open = Array("a,b\n1,2\n\"3,4\n5,6\n".utf8)
        let unclosed = try open.withUnsafeBytes { raw -> (line: Int, message: String)? in
            let layout = try CSV.layout(raw, path: "t.csv", labelColumn: nil, ignoredColumns: [])
            return CSV.parse(raw, range: layout.dataStart..<raw.count, layout: layout).problem
        }
        XCTAssertEqual(unclosed?.line, 2)
        XCTAssert(unclosed?.message.contains("never closed") == true, "\(String(describing: unclosed))")
        // A header wider than the bound is refused before it is split.
        let wide = "c," + String(repeating: ",", count: CSV.maxColumns) + "\n1\n"
        XCTAssertThrowsError(try parse(wide)) { XCTAssert("\($0)".contains("columns, expected at most \(CSV.maxColumns)"), "\($0)") }
        XCTAssertThrowsError(try parse("a\n1\n")) { XCTAssert("\($0)".contains("expected at least a feature column and a target column")) }
        XCTAssertThrowsError(try parse("a,b\n1,2\n", ignore: ["b"])) { XCTAssert("\($0)".contains("is the target")) }
    }

    /// Standard scores from two passes in double precision; a constant feature keeps scale 1;
    /// a regression's targets are standardized too.
    func testPreprocessingStatistics() throws {
        let values: [Float] = [1, 5, 1e6 + 1, 5, 1e6 + 3, 5]
        let data = Dataset(features: 2, inputs: values, targets: [10, 20, 30], targetWidth: 1)
        let p = try Preprocessing.fitted("standard", on: data)
        XCTAssertEqual(p.shift, [Float((1 + 1e6 + 1 + 1e6 + 3) / 3), 5])
        XCTAssertEqual(Double(p.scale![0]), (((1 - 666_668.333) * (1 - 666_668.333) + 2 * 333_333.667 * 333_333.667) / 3).squareRoot(), accuracy: 1)
        XCTAssertEqual(p.scale![1], 1)
        XCTAssertEqual(p.targetShift, [20])
        XCTAssertEqual(Double(p.targetScale![0]), (200.0 / 3).squareRoot(), accuracy: 1e-4)
        let m = try Preprocessing.fitted("minmax", on: data)
        XCTAssertEqual(m.shift, [1, 5])
        XCTAssertEqual(m.scale, [1e6 + 2, 1])
        XCTAssertEqual(try Preprocessing.fitted("scale:255", on: data).divisor, 255)
        XCTAssertThrowsError(try Preprocessing.fitted("scale:0", on: data)) {
            XCTAssert("\($0)".contains("'scale:0', expected scale:K with K a positive number"), "\($0)")
        }
        let normalized = data.preprocessed(p)
        var target: Float = 0
        normalized.copyTargets(2, into: &target)
        XCTAssertEqual(Double(target), 10 / (200.0 / 3).squareRoot(), accuracy: 1e-5)
    }
}
