import Foundation

/// The header of a safetensors file (Hugging Face): an 8-byte little-endian length, then a
/// JSON object mapping each tensor name to `dtype`, `shape` and `data_offsets` (plus an
/// optional `__metadata__` of strings). Every size and offset is checked against the data
/// that follows before anything is read or allocated from it.
public struct SafeTensorsHeader: Sendable {
    /// A tensor's entry: its name, type, shape and byte range within the data.
    public struct Entry: Sendable {
        public var name: String
        public var type: ElementType
        public var shape: [Int]
        public var begin: Int
        public var end: Int
    }

    /// The tensors, ordered by where their data starts.
    public var entries: [Entry]
    /// The `__metadata__` strings.
    public var metadata: [String: String]
    /// Byte offset of the data (8 + the header's length).
    public var dataStart: Int

    /// Reads the header at the start of `base` (`count` bytes in the file).
    public init(_ base: UnsafeRawPointer, count: Int, path: String) throws(DataError) {
        func fail(_ problem: String) -> DataError { DataError(path: path, problem: problem) }
        guard count >= 8 else { throw fail("truncated: \(count) bytes, expected at least the 8-byte header length") }
        let headerLength = base.loadUnaligned(as: UInt64.self).littleEndian
        guard headerLength <= UInt64(count - 8) else {
            throw fail("truncated or not safetensors: header of \(headerLength) bytes in a file of \(count)")
        }
        dataStart = 8 + Int(headerLength)
        let dataLength = count - dataStart
        guard let object = try? JSONSerialization.jsonObject(with: Data(bytes: base + 8, count: Int(headerLength))) as? [String: Any] else {
            throw fail("the header is not a JSON object")
        }
        metadata = [:]
        if let meta = object["__metadata__"] {
            guard let strings = meta as? [String: String] else { throw fail("__metadata__ is not an object of strings") }
            metadata = strings
        }
        var entries: [Entry] = []
        for (name, value) in object where name != "__metadata__" {
            guard let info = value as? [String: Any], let dtype = info["dtype"] as? String,
                  let shape = Self.integers(info["shape"]), let offsets = Self.integers(info["data_offsets"]), offsets.count == 2
            else { throw fail("tensor '\(name)' has no dtype, integer shape and two integer data_offsets") }
            guard let type = ElementType(safetensors: dtype) else { throw fail("tensor '\(name)' has unknown dtype \(dtype)") }
            guard let elements = CheckedSize.product(shape), let size = CheckedSize.product([elements, type.size]) else {
                throw fail("tensor '\(name)' has shape \(shape), expected non-negative sizes whose product fits in memory")
            }
            guard offsets[0] >= 0, offsets[1] >= offsets[0] else {
                throw fail("tensor '\(name)' has data_offsets \(offsets), expected 0 <= begin <= end")
            }
            guard offsets[1] <= dataLength else {
                throw fail("truncated: tensor '\(name)' ends at byte \(offsets[1]) of the data, which has \(dataLength)")
            }
            guard offsets[1] - offsets[0] == size else {
                throw fail("tensor '\(name)' has data_offsets \(offsets) for shape \(shape), expected \(size) bytes")
            }
            entries.append(Entry(name: name, type: type, shape: shape, begin: offsets[0], end: offsets[1]))
        }
        entries.sort { ($0.begin, $0.end) < ($1.begin, $1.end) }
        for (a, b) in zip(entries, entries.dropFirst()) where b.begin < a.end {
            throw fail("tensors '\(a.name)' and '\(b.name)' overlap (bytes \(a.begin)..<\(a.end) and \(b.begin)..<\(b.end))")
        }
        self.entries = entries
    }

    /// A JSON array of whole numbers within `Int`'s range, or nil.
    static func integers(_ value: Any?) -> [Int]? {
        guard let items = value as? [Any] else { return nil }
        var out: [Int] = []
        for item in items {
            guard let number = item as? NSNumber, number.doubleValue.rounded() == number.doubleValue,
                  abs(number.doubleValue) < 9.2e18
            else { return nil }
            out.append(number.intValue)
        }
        return out
    }
}
