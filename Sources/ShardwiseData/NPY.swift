/// NumPy's `.npy` format, versions 1 to 3: the magic `\x93NUMPY`, a version, a header length
/// (2 bytes in version 1, 4 in 2 and 3), a Python dict literal giving `descr`, `fortran_order`
/// and `shape`, then the values in C order.
public enum NPY {
    /// The six magic bytes.
    public static let magic: [UInt8] = [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59]

    /// What a header says: the element type, the shape and where the values start.
    public struct Header: Equatable, Sendable {
        /// The element type.
        public var type: ElementType
        /// Dimensions, outermost first.
        public var shape: [Int]
        /// Byte offset of the first value from the start of the array.
        public var dataOffset: Int
    }

    /// Reads the header at `base[start...]` (`available` bytes), checking what it claims against
    /// the bytes there: the values must fill exactly the rest of the array.
    public static func header(_ base: UnsafeRawPointer, available: Int, path: String) throws(DataError) -> Header {
        func fail(_ problem: String) -> DataError { DataError(path: path, problem: problem) }
        guard available >= 10, (0..<6).allSatisfy({ base.load(fromByteOffset: $0, as: UInt8.self) == magic[$0] }) else {
            throw fail("not an NPY array (no \\x93NUMPY magic at its start)")
        }
        let major = base.load(fromByteOffset: 6, as: UInt8.self)
        let length: Int, start: Int
        switch major {
        case 1:
            length = Int(base.load(fromByteOffset: 8, as: UInt8.self)) | Int(base.load(fromByteOffset: 9, as: UInt8.self)) << 8
            start = 10
        case 2, 3:
            guard available >= 12 else { throw fail("truncated NPY header (\(available) bytes)") }
            length = (0..<4).reduce(0) { $0 | Int(base.load(fromByteOffset: 8 + $1, as: UInt8.self)) << (8 * $1) }
            start = 12
        default:
            throw fail("NPY format version \(major), expected 1, 2 or 3")
        }
        guard length <= available - start else { throw fail("truncated NPY header: \(length) bytes claimed, \(available - start) present") }
        let text = String(decoding: UnsafeRawBufferPointer(start: base + start, count: length), as: UTF8.self)
        let dict = try parseDict(text, path: path)
        guard let descr = dict["descr"] else { throw fail("NPY header has no 'descr' (got \(text.trimmed))") }
        guard let order = dict["fortran_order"] else { throw fail("NPY header has no 'fortran_order'") }
        guard order == "False" else {
            throw fail("array stored in Fortran (column-major) order; expected C order (save it with numpy.ascontiguousarray)")
        }
        let quoted = descr.trimmingQuotes
        let code = quoted.drop { "<|=".contains($0) }
        guard !quoted.hasPrefix(">") else { throw fail("big-endian dtype '\(quoted)', expected little-endian ('<')") }
        guard let type = ElementType(numpyCode: String(code)) else {
            throw fail("dtype '\(quoted)', expected one of u1 i1 u2 i2 u4 i4 u8 i8 f2 f4 f8 b1")
        }
        guard let shapeText = dict["shape"] else { throw fail("NPY header has no 'shape'") }
        var shape: [Int] = []
        for part in shapeText.dropFirst().dropLast().split(separator: ",") {
            let item = part.filter { $0 != " " && $0 != "L" }
            guard let n = Int(item), n >= 0 else { throw fail("shape \(shapeText): '\(part)' is not a non-negative integer") }
            shape.append(n)
        }
        let dataOffset = start + length
        guard let count = CheckedSize.product(shape), let size = CheckedSize.product([count, type.size]) else {
            throw fail("shape \(shapeText) of \(type) cannot be addressed")
        }
        guard size <= available - dataOffset else {
            throw fail("truncated: shape \(shapeText) of \(type) needs \(size) bytes of values, the array has \(available - dataOffset)")
        }
        return Header(type: type, shape: shape, dataOffset: dataOffset)
    }

    /// The keys and value texts of the header's dict literal (`{'descr': '<f4', 'shape': (3, 4), }`).
    static func parseDict(_ text: String, path: String) throws(DataError) -> [String: String] {
        var body = Substring(text.trimmed)
        guard body.hasPrefix("{"), body.hasSuffix("}") else {
            throw DataError(path: path, problem: "NPY header is not a dict literal (got \(text.trimmed.prefix(80)))")
        }
        body = body.dropFirst().dropLast()
        var result: [String: String] = [:]
        while let keyStart = body.firstIndex(where: { $0 == "'" || $0 == "\"" }) {
            let quote = body[keyStart]
            guard let keyEnd = body[body.index(after: keyStart)...].firstIndex(of: quote),
                  let colon = body[keyEnd...].firstIndex(of: ":")
            else { break }
            let key = String(body[body.index(after: keyStart)..<keyEnd])
            var rest = body[body.index(after: colon)...].drop { $0 == " " }
            let value: Substring
            if rest.first == "(" {
                guard let close = rest.firstIndex(of: ")") else { break }
                value = rest[...close]
            } else if let q = rest.first, q == "'" || q == "\"" {
                guard let close = rest.dropFirst().firstIndex(of: q) else { break }
                value = rest[...close]
            } else {
                value = rest.prefix { $0 != "," && $0 != "}" }
            }
            result[key] = String(value).trimmed
            rest = rest[value.endIndex...]
            body = rest
        }
        return result
    }

    /// An NPY version 1 header (version 2 when it does not fit) for `shape` of `type`,
    /// padded so the values start 64-byte aligned, as NumPy writes it.
    public static func encodeHeader(type: ElementType, shape: [Int]) -> [UInt8] {
        let dims = shape.count == 1 ? "(\(shape[0]),)" : "(\(shape.map(String.init).joined(separator: ", ")))"
        var dict = Array("{'descr': '<\(type.numpyCode)', 'fortran_order': False, 'shape': \(dims), }".utf8)
        let version2 = dict.count + 11 > 65_535
        let prefix = version2 ? 12 : 10
        while (prefix + dict.count + 1) % 64 != 0 { dict.append(0x20) }
        dict.append(0x0A)
        var out = magic + [version2 ? 2 : 1, 0]
        let n = dict.count
        out += version2 ? (0..<4).map { UInt8(truncatingIfNeeded: n >> (8 * $0)) } : [UInt8(n & 0xFF), UInt8(n >> 8)]
        return out + dict
    }
}

extension StringProtocol {
    var trimmed: String {
        String(drop { $0 == " " || $0 == "\n" || $0 == "\t" }.reversed().drop { $0 == " " || $0 == "\n" || $0 == "\t" }.reversed())
    }

    var trimmingQuotes: String {
        let t = trimmed
        guard t.count >= 2, let f = t.first, f == "'" || f == "\"", t.last == f else { return t }
        return String(t.dropFirst().dropLast())
    }
}
