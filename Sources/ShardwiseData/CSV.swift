#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Comma-separated tables of numbers with a header row: the features and the target column
/// of a data set. Quoted fields, CRLF line ends, empty lines and a UTF-8 byte-order mark are
/// accepted; every other cell must be a number. Parsing runs over independent byte ranges
/// (whole lines), so a caller may parse the ranges in parallel and join them in order.
public enum CSV {
    /// Which columns are features and which is the target, from the header.
    public struct Layout: Sendable, Equatable {
        /// Every column's name, in file order.
        public var names: [String]
        /// The target column's index (-1: none, for prediction).
        public var target: Int
        /// Feature columns, in file order (all but the target and the ignored ones).
        public var features: [Int]
        /// Byte offset where the first data line starts.
        public var dataStart: Int
        /// Lines before the data (the header and any empty lines above it), for line numbers.
        public var headerLines: Int
        /// Whether any quote character appears in the data: then it is parsed as one range,
        /// because a quoted field could hold a line break.
        public var quoted: Bool
    }

    /// A parsed range: features (rows, features.count) as floats and the target of each row.
    public struct Part: Sendable {
        public var features: [Float] = []
        public var targets: [Double] = []
        /// Lines in the range (including empty ones), for the next range's line numbers.
        public var lines = 0
        /// The first cell that is not a number, or the first ragged row: (line within the range, 1-based; message).
        public var problem: (line: Int, message: String)?

        /// An empty part.
        public init() {}
    }

    /// Reads the header of the CSV in `bytes` and resolves the target and ignored columns by name.
    /// With `featureCount`, a header of exactly that many columns besides the ignored ones has
    /// no target column (data to predict); `target` is then -1.
    public static func layout(
        _ bytes: UnsafeRawBufferPointer, path: String, labelColumn: String?, ignoredColumns: [String], featureCount: Int? = nil
    ) throws(DataError) -> Layout {
        var start = 0
        if bytes.count >= 3, bytes[0] == 0xEF, bytes[1] == 0xBB, bytes[2] == 0xBF { start = 3 }
        var lines = 0
        var header: [String] = []
        while start < bytes.count {
            let end = lineEnd(bytes, from: start)
            lines += 1
            // Bounded before anything is split: a header of millions of names is not a data set's.
            guard end - start <= maxHeaderBytes else {
                throw DataError(path: path, problem: "header line \(lines) has \(end - start) bytes, expected at most \(maxHeaderBytes) (column names separated by commas)")
            }
            let line = UnsafeRawBufferPointer(rebasing: bytes[start..<end])
            // Binary data is not echoed back as column names.
            if let nul = line.firstIndex(of: 0) {
                throw DataError(path: path, problem: "a NUL byte at offset \(start + nul) of header line \(lines): binary data, expected CSV text (a header row of column names, then rows of numbers)")
            }
            guard String(validating: line, as: UTF8.self) != nil else {
                throw DataError(path: path, problem: "header line \(lines) is not UTF-8 text: binary data, expected CSV text (a header row of column names, then rows of numbers)")
            }
            let commas = line.reduce(0) { $0 + ($1 == 0x2C ? 1 : 0) }
            guard commas < maxColumns else {
                throw DataError(path: path, problem: "header line \(lines) has \(commas + 1) columns, expected at most \(maxColumns)")
            }
            let fields = splitFields(bytes, start..<end).map { String(decoding: UnsafeRawBufferPointer(rebasing: bytes[$0]), as: UTF8.self).trimmingQuotes }
            start = min(end + 1, bytes.count)
            if fields.count == 1 && fields[0].isEmpty { continue }
            header = fields
            break
        }
        guard !header.isEmpty else { throw DataError(path: path, problem: "empty file, expected a header row of column names and data rows") }
        let withoutTarget = featureCount.map { header.count - Set(ignoredColumns).count == $0 } ?? false
        guard header.count >= 2 || withoutTarget else {
            throw DataError(path: path, problem: "header has 1 column ('\(header[0])'), expected at least a feature column and a target column")
        }
        var target: Int
        if withoutTarget {
            target = -1
        } else if let labelColumn {
            guard let found = header.firstIndex(of: labelColumn) else {
                throw DataError(path: path, problem: "no column named '\(labelColumn)' (--label-column); the header has \(header.map { "'\($0)'" }.joined(separator: ", "))")
            }
            target = found
        } else {
            target = header.count - 1
        }
        var ignored = Set<Int>()
        for name in ignoredColumns {
            guard let found = header.firstIndex(of: name) else {
                throw DataError(path: path, problem: "no column named '\(name)' (--ignore-columns); the header has \(header.map { "'\($0)'" }.joined(separator: ", "))")
            }
            guard found != target else { throw DataError(path: path, problem: "column '\(name)' is the target; it cannot also be ignored (--ignore-columns)") }
            ignored.insert(found)
        }
        let features = header.indices.filter { $0 != target && !ignored.contains($0) }
        guard !features.isEmpty else { throw DataError(path: path, problem: "no feature columns are left after the target and --ignore-columns") }
        let quoted = UnsafeRawBufferPointer(rebasing: bytes[start...]).contains(UInt8(ascii: "\""))
        return Layout(names: header, target: target, features: features, dataStart: start, headerLines: lines, quoted: quoted)
    }

    /// The most columns a CSV may have, and the most bytes its header line may have.
    public static let maxColumns = 1_000_000
    public static let maxHeaderBytes = 64 << 20

    /// Splits the data into at most `count` ranges of whole lines (one range when quoted).
    public static func ranges(_ bytes: UnsafeRawBufferPointer, layout: Layout, count: Int) -> [Range<Int>] {
        let begin = layout.dataStart, total = bytes.count - begin
        let parts = layout.quoted || total < 1 << 20 ? 1 : max(1, count)
        var cuts = [begin]
        for k in 1..<parts {
            let guess = max(begin + total * k / parts, cuts.last!)
            cuts.append(min(lineEnd(bytes, from: guess) + 1, bytes.count))
        }
        cuts.append(bytes.count)
        return zip(cuts, cuts.dropFirst()).map { $0..<$1 }
    }

    /// Parses the lines in `range` (whole lines) with `layout`.
    public static func parse(_ bytes: UnsafeRawBufferPointer, range: Range<Int>, layout: Layout) -> Part {
        var part = Part()
        let width = layout.names.count
        var isFeature = [Bool](repeating: false, count: width)
        for f in layout.features { isFeature[f] = true }
        part.features.reserveCapacity(range.count / 4)
        var start = range.lowerBound
        var row = [Double](repeating: 0, count: width)
        while start < range.upperBound {
            // Quoted data: a record runs to the first line break outside quotes.
            let (recordEnd, breaks, closed) = layout.quoted ? quotedRecordEnd(bytes, from: start, to: range.upperBound) : (lineEnd(bytes, from: start), 0, true)
            let end = min(recordEnd, range.upperBound)
            part.lines += 1
            defer { start = end + 1; part.lines += breaks }
            guard closed else {
                part.problem = (part.lines, "a quoted field opened on this line is never closed, expected a closing \" (write \"\" for a quote inside a field)")
                return part
            }
            var stop = end
            if stop > start && bytes[stop - 1] == 0x0D { stop -= 1 }
            if (start..<stop).allSatisfy({ bytes[$0] == 0x20 || bytes[$0] == 0x09 }) { continue }
            let fields = layout.quoted ? splitFields(bytes, start..<stop) : splitPlain(bytes, start..<stop, expected: width)
            guard fields.count == width else {
                part.problem = (part.lines, "has \(fields.count) fields, the header has \(width); expected the same number on every row")
                return part
            }
            for (c, field) in fields.enumerated() where isFeature[c] || c == layout.target {
                guard let value = number(bytes, field), value.isFinite else {
                    let text = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[field]), as: UTF8.self)
                    let what = number(bytes, field) == nil ? (text.allSatisfy { $0 == " " } ? "an empty cell" : "not a number") : "not a finite number"
                    part.problem = (part.lines, "column \(c + 1) ('\(layout.names[c])'): '\(String(text.prefix(40)).visible)' is \(what), expected a number")
                    return part
                }
                row[c] = value
            }
            for f in layout.features { part.features.append(Float(row[f])) }
            if layout.target >= 0 { part.targets.append(row[layout.target]) }
        }
        return part
    }

    static func lineEnd(_ bytes: UnsafeRawBufferPointer, from start: Int) -> Int {
        guard start < bytes.count else { return bytes.count }
        if let p = memchr(bytes.baseAddress! + start, 0x0A, bytes.count - start) {
            return UnsafeRawPointer(p) - bytes.baseAddress!
        }
        return bytes.count
    }

    /// The end of the record at `start` when fields may be quoted: the first line break outside
    /// quotes (or `limit`), the line breaks inside its quoted fields, and whether every quote closed.
    static func quotedRecordEnd(_ bytes: UnsafeRawBufferPointer, from start: Int, to limit: Int) -> (end: Int, breaks: Int, closed: Bool) {
        var inQuotes = false, breaks = 0, i = start
        while i < limit {
            let c = bytes[i]
            if c == 0x22 { inQuotes.toggle() } else if c == 0x0A { if !inQuotes { return (i, breaks, true) }; breaks += 1 }
            i += 1
        }
        return (limit, breaks, !inQuotes)
    }

    /// Fields of a line without quotes.
    static func splitPlain(_ bytes: UnsafeRawBufferPointer, _ line: Range<Int>, expected: Int) -> [Range<Int>] {
        var fields: [Range<Int>] = []
        fields.reserveCapacity(expected)
        var s = line.lowerBound
        for i in line where bytes[i] == 0x2C {
            fields.append(s..<i)
            s = i + 1
        }
        fields.append(s..<line.upperBound)
        return fields
    }

    /// Fields of a line, a quoted field running to its closing quote (`""` inside is a quote).
    static func splitFields(_ bytes: UnsafeRawBufferPointer, _ line: Range<Int>) -> [Range<Int>] {
        var fields: [Range<Int>] = []
        var s = line.lowerBound, inQuotes = false
        var i = line.lowerBound
        var end = line.upperBound
        if end > s && bytes[end - 1] == 0x0D { end -= 1 }
        while i < end {
            let c = bytes[i]
            if c == 0x22 { inQuotes.toggle() } else if c == 0x2C && !inQuotes {
                fields.append(s..<i)
                s = i + 1
            }
            i += 1
        }
        fields.append(s..<end)
        return fields
    }

    /// The number in a cell (spaces and one pair of quotes around it allowed); nil when it is not one.
    /// Decimal numbers with at most 19 significant digits and a power of ten up to 22 are
    /// converted exactly in double precision (one correctly rounded division or product);
    /// others go through `strtod`. Either way the result is the correctly rounded double.
    @inline(__always)
    static func number(_ bytes: UnsafeRawBufferPointer, _ field: Range<Int>) -> Double? {
        var lo = field.lowerBound, hi = field.upperBound
        while lo < hi && (bytes[lo] == 0x20 || bytes[lo] == 0x09) { lo += 1 }
        while hi > lo && (bytes[hi - 1] == 0x20 || bytes[hi - 1] == 0x09) { hi -= 1 }
        if hi - lo >= 2 && bytes[lo] == 0x22 && bytes[hi - 1] == 0x22 { lo += 1; hi -= 1 }
        guard lo < hi else { return nil }
        var i = lo
        var negative = false
        if bytes[i] == 0x2D || bytes[i] == 0x2B { negative = bytes[i] == 0x2D; i += 1 }
        var mantissa: UInt64 = 0, digits = 0, scale = 0, sawDigit = false
        while i < hi, bytes[i] &- 0x30 < 10 {
            if digits < 19 { mantissa = mantissa * 10 + UInt64(bytes[i] - 0x30); if mantissa > 0 { digits += 1 } } else { scale += 1 }
            sawDigit = true
            i += 1
        }
        if i < hi && bytes[i] == 0x2E {
            i += 1
            while i < hi, bytes[i] &- 0x30 < 10 {
                if digits < 19 { mantissa = mantissa * 10 + UInt64(bytes[i] - 0x30); if mantissa > 0 { digits += 1 }; scale -= 1 }
                sawDigit = true
                i += 1
            }
        }
        let exact = digits < 19
        if sawDigit && i < hi && (bytes[i] == 0x65 || bytes[i] == 0x45) {
            i += 1
            var expNegative = false
            if i < hi && (bytes[i] == 0x2D || bytes[i] == 0x2B) { expNegative = bytes[i] == 0x2D; i += 1 }
            var e = 0, expDigits = 0
            while i < hi, bytes[i] &- 0x30 < 10 { e = min(e * 10 + Int(bytes[i] - 0x30), 100_000); expDigits += 1; i += 1 }
            if expDigits == 0 { return nil }
            scale += expNegative ? -e : e
        }
        if sawDigit && i == hi && exact && mantissa < 1 << 53 && abs(scale) <= 22 {
            let m = Double(mantissa)
            let value = scale < 0 ? m / powersOfTen[-scale] : m * powersOfTen[scale]
            return negative ? -value : value
        }
        // Everything else (long mantissas, large exponents, nan, inf): the C library, which must use
        // the whole cell; not its hexadecimal forms (0x1A, 0x1p3), which a data set's cell never means.
        if UnsafeRawBufferPointer(rebasing: bytes[lo..<hi]).contains(where: { $0 == 0x78 || $0 == 0x58 }) { return nil }
        var text = [CChar](repeating: 0, count: hi - lo + 1)
        for k in 0..<(hi - lo) { text[k] = CChar(bitPattern: bytes[lo + k]) }
        return text.withUnsafeBufferPointer { buffer -> Double? in
            var end: UnsafeMutablePointer<CChar>?
            let value = strtod(buffer.baseAddress!, &end)
            guard let end, end - UnsafeMutablePointer(mutating: buffer.baseAddress!) == hi - lo else { return nil }
            return value
        }
    }

    static let powersOfTen: [Double] = (0...22).map { (0..<$0).reduce(1.0) { a, _ in a * 10 } }
}

extension String {
    /// The text with control characters written as escapes (`\u{01}`), for echoing a cell.
    var visible: String {
        String(unicodeScalars.map { $0.value < 0x20 || $0.value == 0x7F ? $0.escaped(asASCII: true) : String($0) }.joined())
    }
}
