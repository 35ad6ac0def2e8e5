#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The element types a data file may hold, as NumPy and safetensors name them (little-endian).
public enum ElementType: String, Sendable, Codable, CaseIterable {
    case uint8, int8, uint16, int16, uint32, int32, uint64, int64, float16, bfloat16, float32, float64, bool

    /// Bytes per element.
    public var size: Int {
        switch self {
        case .uint8, .int8, .bool: 1
        case .uint16, .int16, .float16, .bfloat16: 2
        case .uint32, .int32, .float32: 4
        case .uint64, .int64, .float64: 8
        }
    }

    /// Whether the type holds whole numbers (labels of a classification).
    public var isInteger: Bool { ![.float16, .bfloat16, .float32, .float64].contains(self) }

    /// The NumPy type string (`descr`) without its byte-order mark: `u1`, `f4`, …
    public var numpyCode: String {
        switch self {
        case .uint8: "u1"
        case .int8: "i1"
        case .uint16: "u2"
        case .int16: "i2"
        case .uint32: "u4"
        case .int32: "i4"
        case .uint64: "u8"
        case .int64: "i8"
        case .float16: "f2"
        case .bfloat16: "bf16"
        case .float32: "f4"
        case .float64: "f8"
        case .bool: "b1"
        }
    }

    /// The type of a NumPy `descr` code without byte order (`u1`, `f8`, …); nil for others.
    public init?(numpyCode: String) {
        guard let found = ElementType.allCases.first(where: { $0.numpyCode == numpyCode && $0 != .bfloat16 }) else { return nil }
        self = found
    }

    /// The type of a safetensors dtype (`U8`, `F32`, …); nil for others.
    public init?(safetensors dtype: String) {
        let names: [String: ElementType] = [
            "U8": .uint8, "I8": .int8, "U16": .uint16, "I16": .int16, "U32": .uint32, "I32": .int32, "U64": .uint64,
            "I64": .int64, "F16": .float16, "BF16": .bfloat16, "F32": .float32, "F64": .float64, "BOOL": .bool,
        ]
        guard let type = names[dtype] else { return nil }
        self = type
    }
}

/// What tells one version of a file from another without reading it: device and inode (a file
/// replaced by a rename is another inode), size, and the modification and change times in
/// nanoseconds (the change time cannot be set back by `touch` or `cp -p`, which set the first).
public struct FileIdentity: Sendable, Codable, Equatable {
    public var device: UInt64
    public var inode: UInt64
    public var size: Int
    public var modified: Int
    public var changed: Int

    public init(_ info: stat) {
        (device, inode, size) = (UInt64(info.st_dev), UInt64(info.st_ino), Int(info.st_size))
        modified = Int(info.st_mtim.tv_sec) * 1_000_000_000 + Int(info.st_mtim.tv_nsec)
        changed = Int(info.st_ctim.tv_sec) * 1_000_000_000 + Int(info.st_ctim.tv_nsec)
    }
}

/// Memory a ``Table`` reads from: a read-only mapping of a file, or bytes it owns.
public final class TableBytes: @unchecked Sendable {
    /// The first byte.
    public let base: UnsafeRawPointer
    /// Bytes readable from `base`.
    public let count: Int
    private let mapping: (address: UnsafeMutableRawPointer, length: Int)?
    private let owned: UnsafeMutableRawPointer?
    /// For a mapping: the mapped file's identity, read from the descriptor that was mapped (so
    /// it describes these bytes even when the path is replaced meanwhile); nil for owned memory.
    public let identity: FileIdentity?

    /// `count` bytes of zeroed memory of this process's own (anonymous, resident once written).
    public init(allocating count: Int) {
        let memory = UnsafeMutableRawPointer.allocate(byteCount: max(count, 1), alignment: 64)
        memory.initializeMemory(as: UInt8.self, repeating: 0, count: max(count, 1))
        owned = memory
        mapping = nil
        identity = nil
        base = UnsafeRawPointer(memory)
        self.count = count
    }

    /// The whole of the regular file at `path`, mapped read-only: its pages are read from the
    /// file as they are touched and can be dropped again by the kernel, so they do not count
    /// as the process's anonymous memory.
    public init(mapping path: String) throws(DataError) {
        let (fd, size) = try RegularFile.open(path)
        defer { close(fd) }
        var info = stat()
        identity = fstat(fd, &info) == 0 ? FileIdentity(info) : nil
        guard size > 0 else { throw DataError(path: path, problem: "empty file (0 bytes), expected a data file") }
        guard let address = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), address != MAP_FAILED else {
            throw DataError(path: path, problem: "cannot be mapped into memory (\(String(cString: strerror(errno))))")
        }
        mapping = (address, size)
        owned = nil
        base = UnsafeRawPointer(address)
        count = size
    }

    /// The owned bytes, for filling; nil for a mapping.
    public var mutableBase: UnsafeMutableRawPointer? { owned }

    deinit {
        if let mapping { munmap(mapping.address, mapping.length) }
        owned?.deallocate()
    }
}

/// A row-major matrix of numbers of one ``ElementType``, read in place from a mapping or
/// from memory: (rows, columns), the first row at `offset` bytes into `bytes`.
/// Values are converted to `Float` row by row, when they are used.
public struct Table: Sendable {
    /// Rows (samples).
    public let rows: Int
    /// Values per row.
    public let columns: Int
    /// How each value is stored.
    public let type: ElementType
    /// Where the values live.
    public let bytes: TableBytes
    /// Byte offset of the first value in `bytes`.
    public let offset: Int
    /// Values from one row's start to the next's: `columns`, or 1 for the overlapping windows
    /// of a token stream (row i holds values i..<i + columns).
    public let rowStride: Int

    /// A table over `bytes`, checking that `rows` x `columns` values of `type` fit after `offset`.
    public init(rows: Int, columns: Int, type: ElementType, bytes: TableBytes, offset: Int, path: String) throws(DataError) {
        guard rows >= 0, columns >= 0, let size = CheckedSize.product([rows, columns, type.size]),
              let end = CheckedSize.sum([offset, size]), offset >= 0
        else { throw DataError(path: path, problem: "\(rows) x \(columns) values of \(type) cannot be addressed") }
        guard end <= bytes.count else {
            throw DataError(path: path, problem: "truncated: \(rows) x \(columns) values of \(type) need \(size) bytes from byte \(offset), the file has \(bytes.count - offset)")
        }
        self.rows = rows
        self.columns = columns
        self.type = type
        self.bytes = bytes
        self.offset = offset
        rowStride = columns
    }

    /// The windows of `columns` consecutive values of a stream of `count` values of `type` at
    /// `offset` in `bytes`: row i is values `i..<i + columns`, read in place (no copy).
    public init(windowsOf count: Int, columns: Int, type: ElementType, bytes: TableBytes, offset: Int, path: String) throws(DataError) {
        guard count >= columns, columns > 0, let size = CheckedSize.product([count, type.size]), let end = CheckedSize.sum([offset, size]), offset >= 0 else {
            throw DataError(path: path, problem: "\(count) values hold no window of \(columns)")
        }
        guard end <= bytes.count else {
            throw DataError(path: path, problem: "truncated: \(count) values of \(type) need \(size) bytes from byte \(offset), the file has \(bytes.count - offset)")
        }
        rows = count - columns + 1
        self.columns = columns
        self.type = type
        self.bytes = bytes
        self.offset = offset
        rowStride = 1
    }

    /// The bytes rows `0..<rows` span: rows of `columns` values, `rowStride` apart.
    public func spanBytes(rows count: Int) -> Int { count == 0 ? 0 : ((count - 1) * rowStride + columns) * type.size }

    /// A float32 table holding `values` ((rows, columns), row-major) in memory of its own.
    public init(floats values: [Float], columns: Int) {
        precondition(columns > 0 && values.count % columns == 0, "\(values.count) values do not make rows of \(columns)")
        let storage = TableBytes(allocating: values.count * 4)
        values.withUnsafeBytes { storage.mutableBase!.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        rows = values.count / columns
        self.columns = columns
        type = .float32
        bytes = storage
        offset = 0
        rowStride = columns
    }

    /// An int32 table of one column holding `values`.
    public init(labels values: [Int32]) {
        let storage = TableBytes(allocating: values.count * 4)
        values.withUnsafeBytes { storage.mutableBase!.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        rows = values.count
        columns = 1
        type = .int32
        bytes = storage
        offset = 0
        rowStride = 1
    }

    /// Row `row` as floats, each value divided by `divisor` (1: unchanged), into `out[0..<columns]`.
    /// A float32 table with divisor 1 is a plain copy.
    @inline(__always)
    public func convert(row: Int, divisor: Float = 1, into out: UnsafeMutablePointer<Float>) {
        let p = bytes.base + offset + row * rowStride * type.size
        let n = columns
        switch type {
        case .float32 where divisor == 1:
            out.update(from: p.assumingMemoryBound(to: Float.self), count: n)
        case .uint8, .bool:
            let q = p.assumingMemoryBound(to: UInt8.self)
            for i in 0..<n { out[i] = Float(q[i]) / divisor }
        default:
            for i in 0..<n { out[i] = Float(value(at: p, index: i)) / divisor }
        }
    }

    /// The value at (row, column) as a Double (exact for every integer below 2^53 and every float).
    @inline(__always)
    public func double(row: Int, column: Int = 0) -> Double {
        value(at: bytes.base + offset + row * rowStride * type.size, index: column)
    }

    @inline(__always)
    func value(at p: UnsafeRawPointer, index i: Int) -> Double {
        switch type {
        case .uint8, .bool: Double(p.load(fromByteOffset: i, as: UInt8.self))
        case .int8: Double(p.load(fromByteOffset: i, as: Int8.self))
        case .uint16: Double(p.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))
        case .int16: Double(p.loadUnaligned(fromByteOffset: 2 * i, as: Int16.self))
        case .uint32: Double(p.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self))
        case .int32: Double(p.loadUnaligned(fromByteOffset: 4 * i, as: Int32.self))
        case .uint64: Double(p.loadUnaligned(fromByteOffset: 8 * i, as: UInt64.self))
        case .int64: Double(p.loadUnaligned(fromByteOffset: 8 * i, as: Int64.self))
        case .float16: Double(Self.half(p.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)))
        case .bfloat16: Double(Float(bitPattern: UInt32(p.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)) << 16))
        case .float32: Double(p.loadUnaligned(fromByteOffset: 4 * i, as: Float.self))
        case .float64: p.loadUnaligned(fromByteOffset: 8 * i, as: Double.self)
        }
    }

    /// IEEE half precision to single (exact).
    static func half(_ h: UInt16) -> Float {
        let sign: Float = h & 0x8000 != 0 ? -1 : 1
        let exponent = Int((h >> 10) & 0x1F), fraction = Float(h & 0x3FF)
        switch exponent {
        case 0: return sign * fraction * 0x1p-24
        case 31: return fraction == 0 ? sign * .infinity : .nan
        default: return sign * (1 + fraction / 1024) * Float(sign: .plus, exponent: exponent - 15, significand: 1)
        }
    }

    /// The number of bytes of the values.
    public var byteCount: Int { rows * columns * type.size }
}
