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
        func fail(_ problem: String) -> CheckpointError { CheckpointError("\(path): \(problem)") }
        guard bytes.count >= 8 else { throw fail("truncated: \(bytes.count) bytes, expected at least the 8-byte header length") }
        let headerLength = (0..<8).reduce(UInt64(0)) { $0 | UInt64(bytes[$1]) << (8 * UInt64($1)) }
        guard headerLength <= UInt64(bytes.count - 8) else {
            throw fail("truncated or not safetensors: header of \(headerLength) bytes in a file of \(bytes.count)")
        }
        let dataStart = 8 + Int(headerLength)
        let dataLength = bytes.count - dataStart
        guard let object = try? JSONSerialization.jsonObject(with: Data(bytes[8..<dataStart])) as? [String: Any] else {
            throw fail("the header is not a JSON object")
        }
        var metadata: [String: String] = [:]
        if let meta = object["__metadata__"] {
            guard let strings = meta as? [String: String] else { throw fail("__metadata__ is not an object of strings") }
            metadata = strings
        }
        var spans: [(begin: Int, end: Int, name: String, shape: [Int])] = []
        for (name, value) in object where name != "__metadata__" {
            guard let info = value as? [String: Any], let dtype = info["dtype"] as? String,
                  let shape = integers(info["shape"]), let offsets = integers(info["data_offsets"]), offsets.count == 2
            else { throw fail("tensor '\(name)' has no dtype, integer shape and two integer data_offsets") }
            guard dtype == "F32" else { throw fail("tensor '\(name)' is \(dtype), expected F32") }
            guard let count = CheckedSize.product(shape), let size = CheckedSize.product([count, 4]) else {
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
            spans.append((offsets[0], offsets[1], name, shape))
        }
        spans.sort { ($0.begin, $0.end) < ($1.begin, $1.end) }
        for (a, b) in zip(spans, spans.dropFirst()) where b.begin < a.end {
            throw fail("tensors '\(a.name)' and '\(b.name)' overlap (bytes \(a.begin)..<\(a.end) and \(b.begin)..<\(b.end))")
        }
        let tensors = spans.map { span in
            var values = [Float](repeating: 0, count: (span.end - span.begin) / 4)
            values.withUnsafeMutableBytes { raw in raw.copyBytes(from: bytes[(dataStart + span.begin)..<(dataStart + span.end)]) }
            return Tensor(name: span.name, shape: span.shape, values: values)
        }
        return (tensors, metadata)
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

    static func jsonString(_ text: String) -> String {
        let data = try! JSONEncoder().encode(text)
        return String(decoding: data, as: UTF8.self)
    }
}
