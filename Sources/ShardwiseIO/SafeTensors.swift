import Foundation
import ShardwiseData

/// A checkpoint file that cannot be used: what was found and what was expected.
public struct CheckpointError: Error, CustomStringConvertible {
    public var description: String
    /// An error with the one-line description `description`.
    public init(_ description: String) { self.description = description }
}

/// The safetensors format (Hugging Face): an 8-byte little-endian header length,
/// a JSON header mapping each tensor name to `dtype`, `shape` and `data_offsets`
/// (plus an optional `__metadata__` of string values), then the raw little-endian data.
public enum SafeTensors {
    /// A named float32 tensor.
    public struct Tensor {
        /// Its key in the header.
        public var name: String
        /// Its dimensions, outermost first.
        public var shape: [Int]
        /// Its values, row-major.
        public var values: [Float]
        /// A tensor of `shape` holding `values` (their product in count).
        public init(name: String, shape: [Int], values: [Float]) {
            self.name = name
            self.shape = shape
            self.values = values
        }
    }

    /// Encodes float32 tensors, in the given order, with string metadata.
    public static func encode(_ tensors: [Tensor], metadata: [String: String]) -> [UInt8] {
        var entries: [String] = []
        var offset = 0
        for t in tensors {
            let bytes = t.values.count * 4
            entries.append("\(jsonString(t.name)):{\"dtype\":\"F32\",\"shape\":[\(t.shape.map(String.init).joined(separator: ","))],\"data_offsets\":[\(offset),\(offset + bytes)]}")
            offset += bytes
        }
        let meta = metadata.keys.sorted().map { "\(jsonString($0)):\(jsonString(metadata[$0]!))" }.joined(separator: ",")
        var header = Array("{\"__metadata__\":{\(meta)},\(entries.joined(separator: ","))}".utf8)
        // Pad the header with spaces so the data starts 8-byte aligned, as the reference writer does.
        while header.count % 8 != 0 { header.append(0x20) }
        var out = [UInt8]()
        out.reserveCapacity(8 + header.count + offset)
        let n = UInt64(header.count)
        for i in 0..<8 { out.append(UInt8(truncatingIfNeeded: n >> (8 * UInt64(i)))) }
        out += header
        for t in tensors {
            t.values.withUnsafeBytes { raw in out += raw }  // little-endian on every platform Swift targets here
        }
        return out
    }

    /// Decodes a file written by `encode` (or any float32 safetensors file), checking every
    /// size and offset before it allocates: shapes of non-negative sizes whose product does
    /// not overflow, offsets inside the data, tensors that do not overlap. What it allocates
    /// is at most about the file's size.
    public static func decode(_ bytes: [UInt8], path: String) throws(CheckpointError) -> (tensors: [Tensor], metadata: [String: String]) {
        let parsed = bytes.withUnsafeBytes { raw -> Result<SafeTensorsHeader, DataError> in
            guard let base = raw.baseAddress else { return .failure(DataError(path: path, problem: "truncated: 0 bytes, expected at least the 8-byte header length")) }
            return Result { () throws(DataError) in try SafeTensorsHeader(base, count: raw.count, path: path) }
        }
        let header: SafeTensorsHeader
        switch parsed {
        case .success(let h): header = h
        case .failure(let error): throw CheckpointError(error.description)
        }
        var tensors: [Tensor] = []
        for entry in header.entries {
            guard entry.type == .float32 else { throw CheckpointError("\(path): tensor '\(entry.name)' is \(entry.type), expected F32") }
            var values = [Float](repeating: 0, count: (entry.end - entry.begin) / 4)
            values.withUnsafeMutableBytes { raw in raw.copyBytes(from: bytes[(header.dataStart + entry.begin)..<(header.dataStart + entry.end)]) }
            tensors.append(Tensor(name: entry.name, shape: entry.shape, values: values))
        }
        return (tensors, header.metadata)
    }

    static func jsonString(_ text: String) -> String {
        let data = try! JSONEncoder().encode(text)
        return String(decoding: data, as: UTF8.self)
    }
}
