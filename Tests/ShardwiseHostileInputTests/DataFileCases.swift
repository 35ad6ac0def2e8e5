import Foundation
import Shardwise

/// Hostile data files of the own-data formats: sizes that lie, archives that point outside
/// themselves, compressed members that claim terabytes, files that are not files.
extension HostileInputTests {
    static func npy(_ type: ElementType, shape: [Int], body: [UInt8] = []) -> [UInt8] {
        NPY.encodeHeader(type: type, shape: shape) + body
    }

    static func write(_ bytes: [UInt8], _ path: String) throws {
        try Data(bytes).write(to: URL(fileURLWithPath: path))
    }

    static func le(_ v: Int, _ n: Int) -> [UInt8] { (0..<n).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } }

    /// A one-member ZIP: `name` with `body` (compressed bytes), the method and the sizes it claims.
    static func zip(name: String, body: [UInt8], method: Int, size: Int, directoryOffset: Int? = nil) -> [UInt8] {
        let common = le(20, 2) + le(0, 2) + le(method, 2) + le(0, 4) + le(0, 4) + le(body.count, 4) + le(size, 4) + le(name.utf8.count, 2) + le(0, 2)
        let local = [0x50, 0x4B, 0x03, 0x04] + common + Array(name.utf8) + body
        let directory = [0x50, 0x4B, 0x01, 0x02] + le(20, 2) + common + le(0, 2) + le(0, 2) + le(0, 2) + le(0, 4) + le(0, 4) + Array(name.utf8)
        let end = [0x50, 0x4B, 0x05, 0x06] + le(0, 4) + le(1, 2) + le(1, 2) + le(directory.count, 4) + le(directoryOffset ?? local.count, 4) + le(0, 2)
        return local + directory + end
    }

    static let labelsNPY = npy(.int64, shape: [4], body: (0..<4).flatMap { le($0 % 2, 8) })
    static func trainOn(_ data: String) -> [String] {
        ["train", "--data", data, "--epochs", "1", "--layers", "8", "--batch-size", "2", "--shard-size", "1", "--workers", "1"]
    }

    static var dataFileCases: [Case] {
        let pair = "x.npy,y.npy"
        func withLabels(_ features: [UInt8]) -> (String) throws -> Void {
            { folder in
                try write(features, "\(folder)/x.npy")
                try write(labelsNPY, "\(folder)/y.npy")
            }
        }
        return [
            Case(name: "NPY claiming 10^12 rows of 784 floats", arguments: trainOn(pair), mentions: ["x.npy", "truncated"],
                 prepare: withLabels(npy(.float32, shape: [1_000_000_000_000, 784], body: [1, 2, 3, 4]))),
            Case(name: "NPY claiming 2^62 x 2^62", arguments: trainOn(pair), mentions: ["x.npy", "cannot be addressed"],
                 prepare: withLabels(npy(.float32, shape: [1 << 62, 1 << 62]))),
            Case(name: "NPY whose header length runs past the file", arguments: trainOn(pair), mentions: ["x.npy", "truncated NPY header"],
                 prepare: withLabels(NPY.magic + [1, 0, 0xFF, 0xFF] + Array("{'descr'".utf8))),
            Case(name: "NPY whose header is not a dict", arguments: trainOn(pair), mentions: ["x.npy", "not a dict literal"],
                 prepare: withLabels(NPY.magic + [1, 0, 6, 0] + Array("hello\n".utf8))),
            Case(name: "NPY of a big-endian type", arguments: trainOn(pair), mentions: ["x.npy", "big-endian"],
                 prepare: withLabels(Array(String(decoding: npy(.float32, shape: [4, 1]).dropFirst(10), as: UTF8.self).replacingOccurrences(of: "<f4", with: ">f4").utf8).withHeader)),
            Case(name: "NPZ deflated member claiming 4.3 GB (under a 2 GB limit)", arguments: trainOn("a.npz") + ["--labels", "x"], mentions: ["a.npz", "inflates to", "available"]) { folder in
                try write(zip(name: "x.npy", body: [3, 0], method: 8, size: 0xFFFF_FFFF), "\(folder)/a.npz")
            },
            Case(name: "NPZ deflated member of garbage", arguments: trainOn("a.npz") + ["--labels", "x"], mentions: ["a.npz", "damaged or truncated"]) { folder in
                try write(zip(name: "x.npy", body: [0xFF, 0xFF, 0xFF, 0xFF], method: 8, size: 1000), "\(folder)/a.npz")
            },
            Case(name: "NPZ whose directory lies outside the file", arguments: trainOn("a.npz"), mentions: ["a.npz", "outside"]) { folder in
                try write(zip(name: "x.npy", body: npy(.float32, shape: [1, 1], body: [0, 0, 0, 0]), method: 0, size: 132, directoryOffset: 1 << 30), "\(folder)/a.npz")
            },
            Case(name: "NPZ cut before its end record", arguments: trainOn("a.npz"), mentions: ["a.npz", "not a complete ZIP archive"]) { folder in
                try write(Array(zip(name: "x.npy", body: npy(.float32, shape: [1, 1], body: [0, 0, 0, 0]), method: 0, size: 132).prefix(60)), "\(folder)/a.npz")
            },
            Case(name: "safetensors data file claiming 10^15 values", arguments: trainOn("d.safetensors"), mentions: ["d.safetensors", "truncated"]) { folder in
                try write(safetensors(header: #"{"x":{"dtype":"F32","shape":[1000000000000000],"data_offsets":[0,4000000000000000]},"y":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}}"#, data: [UInt8](repeating: 0, count: 8)), "\(folder)/d.safetensors")
            },
            // A wrong length read as CSV used to echo the file's bytes as column names.
            Case(name: "safetensors data file whose header length runs past its end", arguments: trainOn("d.safetensors"), mentions: ["d.safetensors", "truncated or not safetensors", "header of 4096 bytes"]) { folder in
                try write(safetensors(header: #"{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#, data: [0, 0, 0, 0], declaredLength: 4096), "\(folder)/d.safetensors")
            },
            Case(name: "binary data file of no known format", arguments: trainOn("d.bin"), mentions: ["d.bin", "a NUL byte at offset 3", "binary data, expected CSV text"]) { folder in
                try write([0x7F, 0x45, 0x4C, 0x00, 0x02, 0x01, 0x2C, 0x0A, 0x31], "\(folder)/d.bin")
            },
            Case(name: "CSV cell with a control character", arguments: trainOn("c.csv"), mentions: ["c.csv", "line 2", #"'1\u{01}x' is not a number"#]) { folder in
                try write(Array("a,b\n1\u{1}x,2\n".utf8), "\(folder)/c.csv")
            },
            Case(name: "a FIFO as --data", arguments: trainOn("fifo"), mentions: ["fifo", "expected a regular file"]) { folder in
                _ = mkfifo("\(folder)/fifo", 0o600)
            },
            Case(name: "/dev/zero as --data", arguments: trainOn("/dev/zero"), mentions: ["/dev/zero", "expected a regular file"]),
            Case(name: "CSV whose header is a million columns and no rows", arguments: trainOn("wide.csv"), mentions: ["wide.csv", "no data rows"]) { folder in
                try write(Array(((0..<1_000_000).map { "c\($0)" }.joined(separator: ",") + "\n").utf8), "\(folder)/wide.csv")
            },
        ]
    }
}

extension Array where Element == UInt8 {
    /// A version 1 NPY whose header is these bytes.
    var withHeader: [UInt8] { NPY.magic + [1, 0, UInt8(count & 0xFF), UInt8(count >> 8)] + self }
}
