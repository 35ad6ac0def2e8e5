import CShardwiseZlib

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// An IDX file (LeCun's MNIST format) of unsigned bytes: big-endian magic
/// `0x0000 08 <dimensions>`, one big-endian UInt32 per dimension, then the data.
/// Raw and gzip-compressed files are both read (zlib reads raw files unchanged).
///
/// Nothing in the header is trusted: the sizes are multiplied with overflow checks,
/// `check` sees them before any data is read, and the data is read in pieces into a
/// buffer that grows only as bytes arrive, so a 16-byte file claiming gigabytes (or a
/// small gzip stream that expands to a bomb) fails at its first missing byte, having
/// allocated about what it really holds.
public struct IDXFile: Sendable {
    /// The sizes from the header, outermost first.
    public var dimensions: [Int]
    /// The data, row-major.
    public var bytes: [UInt8]
    /// CRC-32 (zlib's) of `bytes`: identifies the data whatever its compression.
    public var checksum: UInt32

    /// Largest data accepted: 4 GiB (MNIST's training images are 47 MB).
    public static let maximumBytes = 1 << 32
    /// Bytes read (and added to the buffer) at a time.
    static let piece = 1 << 20

    /// Reads and checks an IDX file of unsigned bytes with `expectedDimensions` dimensions.
    /// `check` sees the dimensions before the data is read; it throws to refuse them.
    public init(
        path: String, expectedDimensions: Int, check: (_ dimensions: [Int]) throws(DataError) -> Void = { _ throws(DataError) in }
    ) throws(DataError) {
        let (fd, _) = try RegularFile.open(path)
        guard let file = gzdopen(fd, "rb") else {
            close(fd)
            throw DataError(path: path, problem: "cannot read (\(String(cString: strerror(errno))))")
        }
        defer { gzclose(file) }

        // Pieces are read into this scratch buffer and appended: the data grows only as bytes arrive.
        let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: Self.piece, alignment: 16)
        defer { scratch.deallocate() }

        /// Appends `count` bytes to `buffer`, failing at the first missing one.
        func read(_ count: Int, into buffer: inout [UInt8], what: String) throws(DataError) {
            var missing = count
            while missing > 0 {
                let got = gzread(file, scratch.baseAddress!, UInt32(min(missing, Self.piece)))
                if got < 0 {
                    var code: Int32 = 0
                    let message = String(cString: gzerror(file, &code))
                    throw DataError(path: path, problem: "corrupted or truncated compressed data while reading \(what) (\(message))")
                }
                if got == 0 {
                    throw DataError(path: path, problem: "truncated: \(what) needs \(count) bytes, found \(count - missing)")
                }
                buffer.append(contentsOf: UnsafeRawBufferPointer(rebasing: scratch[0..<Int(got)]))
                missing -= Int(got)
            }
        }

        var magic: [UInt8] = []
        try read(4, into: &magic, what: "the magic number")
        let expectedMagic = 0x800 | UInt32(expectedDimensions)
        let found = magic.reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
        guard found == expectedMagic else {
            throw DataError(
                path: path,
                problem: "wrong magic number 0x\(hex(found)), expected 0x\(hex(expectedMagic)) (IDX unsigned bytes, \(expectedDimensions) dimension\(expectedDimensions == 1 ? "" : "s"))")
        }
        var header: [UInt8] = []
        try read(4 * expectedDimensions, into: &header, what: "the dimensions")
        let dimensions = (0..<expectedDimensions).map { d in
            header[4 * d..<4 * d + 4].reduce(0) { $0 << 8 | Int($1) }
        }
        guard let total = CheckedSize.product(dimensions), total <= Self.maximumBytes else {
            throw DataError(path: path, problem: "dimensions \(dimensions) describe more than the \(Self.maximumBytes) bytes accepted")
        }
        try check(dimensions)
        var bytes: [UInt8] = []
        bytes.reserveCapacity(min(total, Self.piece))
        try read(total, into: &bytes, what: "the data for dimensions \(dimensions)")
        var extra: UInt8 = 0
        if gzread(file, &extra, 1) > 0 {
            throw DataError(path: path, problem: "more data than the dimensions \(dimensions) describe")
        }
        self.dimensions = dimensions
        self.checksum = bytes.withUnsafeBufferPointer { UInt32(crc32_z(0, $0.baseAddress, $0.count)) }
        self.bytes = bytes
    }
}

private func hex(_ value: UInt32) -> String {
    let digits = String(value, radix: 16)
    return String(repeating: "0", count: max(0, 8 - digits.count)) + digits
}
