import CShardwiseZlib

/// NumPy's `.npz` archives: a ZIP file (ZIP64 where large) of `.npy` members, stored or
/// deflated. Stored members are read in place from the mapping; deflated ones are inflated
/// into memory, after checking that their stated size fits the memory budget.
public struct NPZ: Sendable {
    /// A member: its name (without `.npy`), compression method and where its bytes are.
    public struct Member: Sendable {
        public var name: String
        public var method: Int
        public var compressedSize: Int
        public var size: Int
        public var dataOffset: Int
    }

    /// The mapped archive.
    public let bytes: TableBytes
    /// Its members, in archive order.
    public let members: [Member]
    /// The archive's path, for errors.
    public let path: String

    /// Whether `bytes` start as a ZIP archive does.
    public static func isArchive(_ base: UnsafeRawPointer, count: Int) -> Bool {
        count >= 4 && base.loadUnaligned(as: UInt32.self) == 0x0403_4B50
    }

    /// Reads the central directory of the archive at `path`.
    public init(path: String, bytes: TableBytes) throws(DataError) {
        self.path = path
        self.bytes = bytes
        let b = bytes.base, n = bytes.count
        func fail(_ problem: String) -> DataError { DataError(path: path, problem: problem) }
        func u16(_ at: Int) -> Int { Int(b.loadUnaligned(fromByteOffset: at, as: UInt16.self)) }
        func u32(_ at: Int) -> Int { Int(b.loadUnaligned(fromByteOffset: at, as: UInt32.self)) }
        func u64(_ at: Int) -> Int? {
            let v = b.loadUnaligned(fromByteOffset: at, as: UInt64.self)
            return v <= UInt64(Int.max) ? Int(v) : nil
        }
        // The end-of-central-directory record: within the last 64 KiB + 22 bytes.
        var eocd = -1
        var at = n - 22
        while at >= max(0, n - 22 - 65_535) {
            if u32(at) == 0x0605_4B50 { eocd = at; break }
            at -= 1
        }
        guard eocd >= 0 else { throw fail("not a complete ZIP archive (no end of central directory record; truncated?)") }
        var entries = u16(eocd + 10), directorySize = u32(eocd + 12), directoryOffset = u32(eocd + 16)
        if entries == 0xFFFF || directorySize == 0xFFFF_FFFF || directoryOffset == 0xFFFF_FFFF {
            guard eocd >= 20, u32(eocd - 20) == 0x0706_4B50, let z = u64(eocd - 12), z <= n - 56, u32(z) == 0x0606_4B50,
                  let e = u64(z + 32), let s = u64(z + 40), let o = u64(z + 48)
            else { throw fail("ZIP64 archive without a valid ZIP64 end of central directory") }
            (entries, directorySize, directoryOffset) = (e, s, o)
        }
        guard directoryOffset <= n, directorySize <= n - directoryOffset else {
            throw fail("central directory at byte \(directoryOffset) (\(directorySize) bytes) lies outside the \(n)-byte file")
        }
        var members: [Member] = []
        var p = directoryOffset
        let end = directoryOffset + directorySize
        for index in 0..<entries {
            guard p + 46 <= end, u32(p) == 0x0201_4B50 else { throw fail("central directory entry \(index) is damaged") }
            let nameLength = u16(p + 28), extraLength = u16(p + 30), commentLength = u16(p + 32)
            guard p + 46 + nameLength + extraLength + commentLength <= end else { throw fail("central directory entry \(index) is truncated") }
            let name = String(decoding: UnsafeRawBufferPointer(start: b + p + 46, count: nameLength), as: UTF8.self)
            var compressed = u32(p + 20), size = u32(p + 24), local = u32(p + 42)
            // ZIP64 extra field: the 64-bit values of those fields that are 0xFFFFFFFF, in this order.
            var e = p + 46 + nameLength
            while e + 4 <= p + 46 + nameLength + extraLength {
                let id = u16(e), length = u16(e + 2)
                if id == 0x0001 {
                    var q = e + 4
                    for field in [0, 1, 2] where [size, compressed, local][field] == 0xFFFF_FFFF && q + 8 <= e + 4 + length {
                        guard let v = u64(q) else { throw fail("member '\(name)' has a ZIP64 size beyond 2^63") }
                        if field == 0 { size = v } else if field == 1 { compressed = v } else { local = v }
                        q += 8
                    }
                }
                e += 4 + length
            }
            guard local <= n - 30, u32(local) == 0x0403_4B50 else { throw fail("member '\(name)': no local header at byte \(local)") }
            let dataOffset = local + 30 + u16(local + 26) + u16(local + 28)
            guard dataOffset <= n, compressed <= n - dataOffset else {
                throw fail("truncated: member '\(name)' needs \(compressed) bytes from byte \(dataOffset), the file has \(n)")
            }
            let method = u16(p + 10)
            guard method == 0 || method == 8 else {
                throw fail("member '\(name)' is compressed with method \(method), expected stored (0) or deflated (8)")
            }
            members.append(Member(
                name: name.hasSuffix(".npy") ? String(name.dropLast(4)) : name, method: method,
                compressedSize: compressed, size: size, dataOffset: dataOffset))
            p += 46 + nameLength + extraLength + commentLength
        }
        self.members = members
    }

    /// The member called `name` (with or without `.npy`) as a table of (first dimension,
    /// product of the others).
    public func table(_ name: String) throws(DataError) -> (table: Table, shape: [Int]) {
        let wanted = name.hasSuffix(".npy") ? String(name.dropLast(4)) : name
        guard let member = members.first(where: { $0.name == wanted }) else {
            throw DataError(path: path, problem: "no array named '\(wanted)'; the archive holds \(members.map { "'\($0.name)'" }.joined(separator: ", "))")
        }
        let where_ = "\(path) (array '\(wanted)')"
        var source = bytes, start = member.dataOffset, available = member.size
        if member.method == 8 {
            let budget = MemoryBudget.current()
            guard member.size <= budget.bytes else {
                throw DataError(path: where_, problem: "inflates to \(MemoryBudget.format(member.size)), more than the \(budget) available; store it uncompressed (numpy.savez, not savez_compressed) so it can be mapped")
            }
            source = try inflateMember(member, into: TableBytes(allocating: member.size), path: where_)
            start = 0
        } else {
            guard member.compressedSize == member.size else {
                throw DataError(path: where_, problem: "stored member of \(member.compressedSize) bytes claims \(member.size) uncompressed")
            }
            available = member.compressedSize
        }
        let header = try NPY.header(source.base + start, available: available, path: where_)
        return (try Table(header, bytes: source, start: start, path: where_), header.shape)
    }

    func inflateMember(_ member: Member, into out: TableBytes, path: String) throws(DataError) -> TableBytes {
        var stream = z_stream()
        guard inflateInit2_(&stream, -15, zlibVersion(), Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
            throw DataError(path: path, problem: "cannot start zlib")
        }
        defer { inflateEnd(&stream) }
        var input = member.dataOffset, remainingIn = member.compressedSize, produced = 0
        let chunk = 1 << 30
        while true {
            let inCount = min(remainingIn, chunk), outCount = min(member.size - produced, chunk)
            stream.next_in = UnsafeMutablePointer(mutating: (bytes.base + input).assumingMemoryBound(to: UInt8.self))
            stream.avail_in = UInt32(inCount)
            stream.next_out = (out.mutableBase! + produced).assumingMemoryBound(to: UInt8.self)
            stream.avail_out = UInt32(outCount)
            let status = CShardwiseZlib.inflate(&stream, Z_NO_FLUSH)
            let usedIn = inCount - Int(stream.avail_in), madeOut = outCount - Int(stream.avail_out)
            input += usedIn
            remainingIn -= usedIn
            produced += madeOut
            if status == Z_STREAM_END { break }
            guard status == Z_OK || status == Z_BUF_ERROR, usedIn + madeOut > 0 else {
                throw DataError(path: path, problem: "deflated data is damaged or truncated after \(produced) of \(member.size) bytes")
            }
        }
        guard produced == member.size else {
            throw DataError(path: path, problem: "inflates to \(produced) bytes, the archive says \(member.size)")
        }
        return out
    }
}

extension Table {
    /// The table an NPY header describes: (first dimension, product of the others); a
    /// one-dimensional array is one column.
    public init(_ header: NPY.Header, bytes: TableBytes, start: Int, path: String) throws(DataError) {
        let rows = header.shape.first ?? 1
        let columns = header.shape.count <= 1 ? 1 : CheckedSize.product(Array(header.shape.dropFirst())) ?? 0
        try self.init(rows: rows, columns: columns, type: header.type, bytes: bytes, offset: start + header.dataOffset, path: path)
    }
}
