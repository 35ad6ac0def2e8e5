import CShardwiseZlib

/// An IDX file (LeCun's MNIST format) of unsigned bytes: big-endian magic
/// `0x0000 08 <dimensions>`, one big-endian UInt32 per dimension, then the data.
/// Raw and gzip-compressed files are both read (zlib reads raw files unchanged).
public struct IDXFile: Sendable {
    /// The sizes from the header, outermost first.
    public var dimensions: [Int]
    /// The data, row-major.
    public var bytes: [UInt8]

    /// Largest file accepted: guards against a corrupted header asking for terabytes.
    static let maximumBytes = 1 << 32

    /// Reads and checks an IDX file of unsigned bytes with `expectedDimensions` dimensions.
    public init(path: String, expectedDimensions: Int) throws(DataError) {
        guard let file = gzopen(path, "rb") else {
            throw DataError(path: path, problem: "cannot open (\(String(cString: strerror(errno))))")
        }
        defer { gzclose(file) }

        func read(_ count: Int, what: String) throws(DataError) -> [UInt8] {
            var buffer = [UInt8](repeating: 0, count: count)
            var filled = 0
            while filled < count {
                let chunk = Int32(min(count - filled, 1 << 30))
                let got = buffer.withUnsafeMutableBytes { gzread(file, $0.baseAddress! + filled, UInt32(chunk)) }
                if got < 0 {
                    var code: Int32 = 0
                    let message = String(cString: gzerror(file, &code))
                    throw DataError(path: path, problem: "corrupted or truncated compressed data while reading \(what) (\(message))")
                }
                if got == 0 {
                    throw DataError(path: path, problem: "truncated: \(what) needs \(count) bytes, found \(filled)")
                }
                filled += Int(got)
            }
            return buffer
        }

        let magic = try read(4, what: "the magic number")
        let expectedMagic = 0x800 | UInt32(expectedDimensions)
        let found = magic.reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
        guard found == expectedMagic else {
            throw DataError(
                path: path,
                problem: "wrong magic number 0x\(hex(found)), expected 0x\(hex(expectedMagic)) (IDX unsigned bytes, \(expectedDimensions) dimension\(expectedDimensions == 1 ? "" : "s"))")
        }
        let header = try read(4 * expectedDimensions, what: "the dimensions")
        dimensions = (0..<expectedDimensions).map { d in
            header[4 * d..<4 * d + 4].reduce(0) { $0 << 8 | Int($1) }
        }
        let total = dimensions.reduce(1, *)
        guard total <= Self.maximumBytes else {
            throw DataError(path: path, problem: "dimensions \(dimensions) describe \(total) bytes, more than the \(Self.maximumBytes) accepted")
        }
        bytes = try read(total, what: "the data for dimensions \(dimensions)")
        var extra: UInt8 = 0
        if gzread(file, &extra, 1) > 0 {
            throw DataError(path: path, problem: "more data than the dimensions \(dimensions) describe")
        }
    }
}

private func hex(_ value: UInt32) -> String {
    let digits = String(value, radix: 16)
    return String(repeating: "0", count: max(0, 8 - digits.count)) + digits
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
