/// A Protocol Buffers encoder for the few messages Shardwise writes (TensorBoard events,
/// ONNX models): fields are appended in the order given, each with its tag, in the wire
/// format of the protobuf encoding specification (varints, 64- and 32-bit little-endian,
/// length-delimited bytes and nested messages, packed repeated doubles and int64s).
public struct Protobuf {
    /// The encoded bytes so far.
    public private(set) var bytes: [UInt8] = []

    /// An empty message.
    public init() {}

    /// A message built by `build`.
    public init(_ build: (inout Protobuf) -> Void) {
        build(&self)
    }

    mutating func varint(_ value: UInt64) {
        var v = value
        while v >= 0x80 {
            bytes.append(UInt8(v & 0x7F) | 0x80)
            v >>= 7
        }
        bytes.append(UInt8(v))
    }

    mutating func key(_ field: Int, _ wireType: UInt64) { varint(UInt64(field) << 3 | wireType) }

    /// An int32, int64, uint64, bool or enum field (negative values as 10-byte varints, as protobuf does).
    public mutating func int(_ field: Int, _ value: Int) {
        key(field, 0)
        varint(UInt64(bitPattern: Int64(value)))
    }

    /// A double field.
    public mutating func double(_ field: Int, _ value: Double) {
        key(field, 1)
        withUnsafeBytes(of: value.bitPattern.littleEndian) { bytes += $0 }
    }

    /// A float field.
    public mutating func float(_ field: Int, _ value: Float) {
        key(field, 5)
        withUnsafeBytes(of: value.bitPattern.littleEndian) { bytes += $0 }
    }

    /// A bytes field.
    public mutating func data(_ field: Int, _ value: [UInt8]) {
        key(field, 2)
        varint(UInt64(value.count))
        bytes += value
    }

    /// A string field (UTF-8).
    public mutating func string(_ field: Int, _ value: String) { data(field, Array(value.utf8)) }

    /// A nested message field.
    public mutating func message(_ field: Int, _ build: (inout Protobuf) -> Void) { data(field, Protobuf(build).bytes) }

    /// A packed repeated double field.
    public mutating func packedDoubles(_ field: Int, _ values: [Double]) {
        key(field, 2)
        varint(UInt64(values.count * 8))
        for v in values { withUnsafeBytes(of: v.bitPattern.littleEndian) { bytes += $0 } }
    }

    /// A packed repeated int64 field.
    public mutating func packedInts(_ field: Int, _ values: [Int]) {
        let packed = Protobuf { p in for v in values { p.varint(UInt64(bitPattern: Int64(v))) } }.bytes
        data(field, packed)
    }
}
