import Foundation

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

    /// Decodes a file written by `encode` (or any float32 safetensors file), checking every offset.
    public static func decode(_ bytes: [UInt8], path: String) throws(CheckpointError) -> (tensors: [Tensor], metadata: [String: String]) {
        func fail(_ problem: String) -> CheckpointError { CheckpointError("\(path): \(problem)") }
        guard bytes.count >= 8 else { throw fail("truncated: \(bytes.count) bytes, expected at least the 8-byte header length") }
        let headerLength = (0..<8).reduce(UInt64(0)) { $0 | UInt64(bytes[$1]) << (8 * UInt64($1)) }
        guard headerLength <= UInt64(bytes.count - 8) else {
            throw fail("truncated or not safetensors: header of \(headerLength) bytes in a file of \(bytes.count)")
        }
        let dataStart = 8 + Int(headerLength)
        guard let object = try? JSONSerialization.jsonObject(with: Data(bytes[8..<dataStart])) as? [String: Any] else {
            throw fail("the header is not a JSON object")
        }
        let metadata = (object["__metadata__"] as? [String: String]) ?? [:]
        var tensors: [(Int, Tensor)] = []
        for (name, value) in object where name != "__metadata__" {
            guard let info = value as? [String: Any], let dtype = info["dtype"] as? String,
                  let shape = info["shape"] as? [Int], let offsets = info["data_offsets"] as? [Int], offsets.count == 2
            else { throw fail("tensor '\(name)' has no dtype, shape and data_offsets") }
            guard dtype == "F32" else { throw fail("tensor '\(name)' is \(dtype), expected F32") }
            let count = shape.reduce(1, *)
            guard offsets[1] - offsets[0] == 4 * count, offsets[0] >= 0 else {
                throw fail("tensor '\(name)' has offsets \(offsets) for shape \(shape), expected \(4 * count) bytes")
            }
            guard dataStart + offsets[1] <= bytes.count else {
                throw fail("truncated: tensor '\(name)' ends at byte \(dataStart + offsets[1]), the file has \(bytes.count)")
            }
            var values = [Float](repeating: 0, count: count)
            values.withUnsafeMutableBytes { raw in
                raw.copyBytes(from: bytes[(dataStart + offsets[0])..<(dataStart + offsets[1])])
            }
            tensors.append((offsets[0], Tensor(name: name, shape: shape, values: values)))
        }
        return (tensors.sorted { $0.0 < $1.0 }.map(\.1), metadata)
    }

    static func jsonString(_ text: String) -> String {
        let data = try! JSONEncoder().encode(text)
        return String(decoding: data, as: UTF8.self)
    }
}
